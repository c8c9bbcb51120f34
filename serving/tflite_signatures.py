"""The SignatureDefs of a `model.tflite`, by TF Serving's rules, and how a trainer writes them.

TF Serving's TFLite path (`--prefer_tflite_model`) never reads saved_model.pb: the signatures it serves
come from the .tflite file's metadata entry `signature_defs_metadata`, a FlexBuffer map from signature
key to a serialized SignatureDef, as TensorFlow Lite's `signature_def_util` writes and reads it. A file
without that entry is served under a mock `serving_default` built from the interpreter's raw tensors.
The TFLite converter's own signature table (what LiteRT's signature runners use) plays no part.
docs/tf-serving-compat.md cites the source lines each rule below follows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import flatbuffers
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers

from serving import DEFAULT_SIGNATURE
from tfs_api.tensorflow.core.framework import types_pb2
from tfs_api.tensorflow.core.protobuf import meta_graph_pb2

METADATA_NAME = "signature_defs_metadata"  # tflite::kSignatureDefsMetadataName
PREDICT_METHOD = "tensorflow/serving/predict"
_FILE_IDENTIFIER = b"TFL3"  # what FinishModelBuffer stamps on every .tflite file

# TfLiteTypeToTfType: the TFLite tensor types TF Serving can map, by their schema number.
_TFLITE_TO_TF = {
    schema.TensorType.FLOAT32: types_pb2.DT_FLOAT,
    schema.TensorType.INT32: types_pb2.DT_INT32,
    schema.TensorType.UINT8: types_pb2.DT_UINT8,
    schema.TensorType.INT64: types_pb2.DT_INT64,
    schema.TensorType.STRING: types_pb2.DT_STRING,
    schema.TensorType.BOOL: types_pb2.DT_BOOL,
    schema.TensorType.INT16: types_pb2.DT_INT16,
    schema.TensorType.COMPLEX64: types_pb2.DT_COMPLEX64,
    schema.TensorType.INT8: types_pb2.DT_INT8,
}


class TfliteSignatureError(ValueError):
    """A model.tflite whose signatures TF Serving would refuse: the version fails to load."""


@dataclass(frozen=True)
class Tensor:
    """One input or output tensor of the file's first subgraph, the one TF Serving's session runs."""

    name: str
    index: int
    tflite_type: int  # schema.TensorType
    shape: tuple[int, ...]  # the static dims, as the interpreter holds them before any resize


def subgraph_tensors(content: bytes) -> tuple[list[Tensor], list[Tensor]]:
    """The inputs and outputs of the first subgraph, in the file's order."""
    model = schema.Model.GetRootAs(content, 0)
    graph = model.Subgraphs(0)

    def tensor(index: int) -> Tensor:
        found = graph.Tensors(index)
        name = found.Name()
        if name is None:
            raise TfliteSignatureError(f"name missing for tensor index: {index}")
        shape = tuple(int(d) for d in found.ShapeAsNumpy()) if found.ShapeLength() else ()
        return Tensor(name.decode("utf-8", "replace"), index, found.Type(), shape)

    inputs = [tensor(int(i)) for i in graph.InputsAsNumpy()]
    outputs = [tensor(int(i)) for i in graph.OutputsAsNumpy()]
    return inputs, outputs


def read_signature_defs(content: bytes) -> dict[str, meta_graph_pb2.SignatureDef]:
    """`tflite::GetSignatureDefMap`: the signatures in the metadata entry; empty when there is none.

    Its reader takes each value with `AsString().c_str()`, so a serialized SignatureDef holding a zero
    byte is cut short there; a value that is not a FlexBuffer string reads as empty."""
    try:
        model = schema.Model.GetRootAs(content, 0)
        entries = [model.Metadata(i) for i in range(model.MetadataLength())]
        found = [e for e in entries if e.Name() == METADATA_NAME.encode()]
        if not found:
            return {}
        data = model.Buffers(found[0].Buffer()).DataAsNumpy()
        table = flexbuffers.GetRoot(data.tobytes() if not isinstance(data, int) else b"").AsMap
        signatures = {}
        for key in table.Keys:
            value = table[key.AsKey]
            text = value.AsStringBytes if value.IsString else b""
            signatures[key.AsKey] = meta_graph_pb2.SignatureDef.FromString(text.split(b"\0", 1)[0])
    except Exception as err:  # a flatbuffer, FlexBuffer or protobuf that does not parse
        raise TfliteSignatureError(f"Invalid SignatureDefs found in TfLite model: {err!r}") from None
    return signatures


def _legacy_name(name: str) -> str:
    """TfToTfLiteLegacyTensorName: early converters dropped TensorFlow's `:0` suffix."""
    return name.split(":", 1)[0]


def _fixed_name(name: str, tensors: Mapping[str, Tensor], role: str, alias: str) -> str:
    """FixTfLiteTensorName: the name as given if a tensor has it, else its legacy form, else an error."""
    for candidate in (name, _legacy_name(name)):
        if candidate in tensors:
            return candidate
    raise TfliteSignatureError(
        f"Signature {role} {alias} references an unknown tensor: Unknown tensor '{name}'."
    )


def _tensor_map(tensors: list[Tensor], role: str) -> dict[str, Tensor]:
    """GetTensorInfoMap, which TF Serving runs on every input and output whatever the metadata says: a
    type it cannot map, or two tensors of one name, fail the load."""
    found: dict[str, Tensor] = {}
    for tensor in tensors:
        _tensor_info(tensor)
        if tensor.name in found:
            raise TfliteSignatureError(f"{role} tensor name: {tensor.name} has multiple indices")
        found[tensor.name] = tensor
    return found


def _tensor_info(tensor: Tensor) -> meta_graph_pb2.TensorInfo:
    if tensor.tflite_type not in _TFLITE_TO_TF:
        raise TfliteSignatureError(f"Unknown TfLite type: {tensor.tflite_type}")
    info = meta_graph_pb2.TensorInfo(name=tensor.name, dtype=_TFLITE_TO_TF[tensor.tflite_type])
    for size in tensor.shape:
        info.tensor_shape.dim.add(size=size)
    return info


@dataclass(frozen=True)
class SessionSignatures:
    """What TF Serving's TfLiteSession serves for a file: its SignatureDefs, and whether they are the
    mock it makes up when the file has no `signature_defs_metadata`."""

    signature_defs: dict[str, meta_graph_pb2.SignatureDef]
    mock: bool


def session_signatures(content: bytes) -> SessionSignatures:
    """`TfLiteSession::Create`'s signatures: the metadata's, each tensor name checked against the first
    subgraph's inputs and outputs; or, without metadata, one `serving_default` whose keys are the raw
    tensor names without `:N` (so outputs that differ only in N collapse onto one key, the last)."""
    inputs, outputs = subgraph_tensors(content)
    by_name_in, by_name_out = _tensor_map(inputs, "Input"), _tensor_map(outputs, "Output")
    signature_defs = read_signature_defs(content)
    for signature in signature_defs.values():
        for role, infos, tensors in (
            ("input", signature.inputs, by_name_in),
            ("output", signature.outputs, by_name_out),
        ):
            for alias, info in infos.items():
                info.name = _fixed_name(info.name, tensors, role, alias)
    if signature_defs:
        return SessionSignatures(signature_defs, mock=False)
    mock = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
    for infos, found in ((mock.inputs, inputs), (mock.outputs, outputs)):
        for tensor in sorted(found, key=lambda t: t.name):  # TF Serving walks a std::map by name
            infos[_legacy_name(tensor.name)].CopyFrom(_tensor_info(tensor))
    return SessionSignatures({DEFAULT_SIGNATURE: mock}, mock=True)


def write_signature_defs(content: bytes, signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]) -> bytes:
    """`tflite::SetSignatureDefMap`: the file with its `signature_defs_metadata` entry set (added, or
    its buffer replaced), everything else as it was.

    Refuses a SignatureDef whose serialization holds a zero byte: TF Serving's reader would cut it
    short there (see read_signature_defs)."""
    if not signature_defs:
        raise TfliteSignatureError("signature_def_map should not be empty")
    table = flexbuffers.Builder()
    with table.Map():
        for key, signature in sorted(signature_defs.items()):
            serialized = signature.SerializeToString(deterministic=True)
            if b"\0" in serialized or "\0" in key:
                raise TfliteSignatureError(
                    f"signature {key!r} serializes with a zero byte: TF Serving would cut it"
                )
            table.Key(key)
            # A FlexBuffer *string* of raw bytes, as the C++ builder's fbb.String(key, bytes) writes
            # (the reader ignores any other type); the Python builder's String() takes text only.
            table._WriteBlob(serialized, append_zero=True, type_=flexbuffers.Type.STRING)
    metadata_bytes = bytes(table.Finish())
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    model.metadata = model.metadata or []
    existing = [m for m in model.metadata if m.name == METADATA_NAME.encode()]
    if existing:
        buffer_index = existing[0].buffer
    else:
        buffer_index = len(model.buffers)
        model.buffers.append(schema.BufferT())
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME.encode(), buffer_index
        model.metadata.append(entry)
    model.buffers[buffer_index].data = list(metadata_bytes)
    builder = flatbuffers.Builder(len(content) + len(metadata_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
    return bytes(builder.Output())
