"""The TF Serving config messages that tensorflow-serving-api does not ship, defined here.

`BatchingParameters` (tensorflow_serving/servables/tensorflow/session_bundle_config.proto) and
`MonitoringConfig` (tensorflow_serving/config/monitoring_config.proto) keep TF Serving's package, names and
field numbers, so the same text-proto files configure both servers. They are built from descriptors at
import time rather than generated, so no protoc run or generated code has to match the protobuf runtime.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as Field

_INT64 = ".google.protobuf.Int64Value"
_STRING = ".google.protobuf.StringValue"
_BOOL = ".google.protobuf.BoolValue"

# (name, number, wrapper type or scalar, repeated)
_BATCHING_FIELDS = [
    ("max_batch_size", 1, _INT64, False),
    ("batch_timeout_micros", 2, _INT64, False),
    ("max_enqueued_batches", 3, _INT64, False),
    ("num_batch_threads", 4, _INT64, False),
    ("thread_pool_name", 5, _STRING, False),
    ("allowed_batch_sizes", 6, Field.TYPE_INT64, True),
    ("pad_variable_length_inputs", 7, Field.TYPE_BOOL, False),
    ("enable_large_batch_splitting", 8, _BOOL, False),
    ("max_execution_batch_size", 9, _INT64, False),
]


def _add_fields(message: descriptor_pb2.DescriptorProto, specs: list[tuple[str, int, object, bool]]) -> None:
    for name, number, kind, repeated in specs:
        field = message.field.add(name=name, number=number, json_name=name)
        field.label = Field.LABEL_REPEATED if repeated else Field.LABEL_OPTIONAL
        if isinstance(kind, str):
            field.type, field.type_name = Field.TYPE_MESSAGE, kind
        else:
            field.type = kind


def _build() -> tuple[type, type]:
    pool = descriptor_pool.Default()
    pool.FindFileByName(wrappers_pb2.DESCRIPTOR.name)  # the wrappers are already in the default pool

    batching = descriptor_pb2.FileDescriptorProto(
        name="mnist_platform/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=[wrappers_pb2.DESCRIPTOR.name],
    )
    _add_fields(batching.message_type.add(name="BatchingParameters"), _BATCHING_FIELDS)

    monitoring = descriptor_pb2.FileDescriptorProto(
        name="mnist_platform/monitoring_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    _add_fields(
        monitoring.message_type.add(name="PrometheusConfig"),
        [("enable", 1, Field.TYPE_BOOL, False), ("path", 2, Field.TYPE_STRING, False)],
    )
    _add_fields(
        monitoring.message_type.add(name="MonitoringConfig"),
        [("prometheus_config", 1, ".tensorflow.serving.PrometheusConfig", False)],
    )

    for file_proto in (batching, monitoring):
        try:
            pool.FindFileByName(file_proto.name)
        except KeyError:
            pool.Add(file_proto)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")),
    )


BatchingParameters, MonitoringConfig = _build()
