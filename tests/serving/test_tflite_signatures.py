"""serving/tflite_signatures.py in process: TensorFlow Lite's `signature_defs_metadata`, written and read
back by the rules TF Serving's TfLiteSession applies, on a small .tflite converted here."""

from __future__ import annotations

import pytest
from flatbuffers import flexbuffers

from serving import tflite_signatures
from serving.tflite_signatures import (
    TfliteSignatureError,
    read_signature_defs,
    session_signatures,
    subgraph_tensors,
    write_signature_defs,
)
from tfquiet import import_tensorflow

import_tensorflow()
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2  # noqa: E402

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def two_outputs() -> bytes:
    """A .tflite with one float input [-1, 3] and two outputs, as the converter writes it (no metadata)."""

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"doubled": x * 2.0, "total": tf.reduce_sum(x, axis=1)}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], serve)
    return bytes(converter.convert())


def signature_for(content: bytes) -> meta_graph_pb2.SignatureDef:
    """The SignatureDef a trainer would write: aliases of its own, the file's tensor names."""
    inputs, outputs = subgraph_tensors(content)
    signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    signature.inputs["values"].name = inputs[0].name
    signature.inputs["values"].dtype = tf.float32.as_datatype_enum
    for dim in (-1, 3):
        signature.inputs["values"].tensor_shape.dim.add(size=dim)
    for alias, tensor in zip(("first", "second"), outputs, strict=True):
        signature.outputs[alias].name = tensor.name
        signature.outputs[alias].dtype = tf.float32.as_datatype_enum
    return signature


def test_without_metadata_tf_serving_makes_up_a_signature_from_the_tensors(two_outputs: bytes) -> None:
    assert read_signature_defs(two_outputs) == {}
    served = session_signatures(two_outputs)
    assert served.mock and set(served.signature_defs) == {"serving_default"}
    mock = served.signature_defs["serving_default"]
    inputs, outputs = subgraph_tensors(two_outputs)
    # Keys are the tensor names without `:N`; outputs that differ only in N share one key.
    assert set(mock.inputs) == {inputs[0].name.split(":")[0]}
    assert set(mock.outputs) == {t.name.split(":")[0] for t in outputs}
    assert [d.size for d in mock.inputs[inputs[0].name.split(":")[0]].tensor_shape.dim] == [1, 3]  # static
    assert mock.method_name == "tensorflow/serving/predict"


def test_written_signatures_read_back_as_tf_serving_reads_them(two_outputs: bytes) -> None:
    signature = signature_for(two_outputs)
    content = write_signature_defs(two_outputs, {"serving_default": signature})
    assert read_signature_defs(content) == {"serving_default": signature}
    served = session_signatures(content)
    assert not served.mock and served.signature_defs == {"serving_default": signature}
    # Written again, the entry is replaced, not added twice; the model itself is untouched.
    assert write_signature_defs(content, {"serving_default": signature}) == content
    assert subgraph_tensors(content) == subgraph_tensors(two_outputs)
    # The values are FlexBuffer strings (TF Serving's reader takes nothing else).
    entry = flexbuffers.GetRoot(metadata_buffer(content)).AsMap["serving_default"]
    assert entry.IsString


def metadata_buffer(content: bytes) -> bytes:
    model = tflite_signatures.schema.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Name() == tflite_signatures.METADATA_NAME.encode():
            return model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy().tobytes()
    raise AssertionError("no signature_defs_metadata")


def test_a_name_is_fixed_to_its_legacy_form_and_an_unknown_one_fails_the_load(two_outputs: bytes) -> None:
    """FixTfLiteTensorName: `x:0` names tensor `x` when only the latter exists (early converters dropped
    the suffix, as in TF Serving's own test models); a name that matches neither fails the version."""
    legacy = tflite_signatures.Tensor("tflite_input", 0, 0, (1, 1))
    assert (
        tflite_signatures._fixed_name("tflite_input:0", {"tflite_input": legacy}, "input", "x")
        == "tflite_input"
    )
    signature = signature_for(two_outputs)
    signature.outputs["first"].name = "no_such_tensor:0"
    with pytest.raises(TfliteSignatureError, match="Signature output first references an unknown tensor"):
        session_signatures(write_signature_defs(two_outputs, {"serving_default": signature}))


def test_a_signature_that_would_be_cut_at_a_zero_byte_is_refused(two_outputs: bytes) -> None:
    """TF Serving reads each value with c_str(): a zero byte (an empty dim, say) would cut it short."""
    signature = signature_for(two_outputs)
    signature.outputs["second"].tensor_shape.dim.add()  # `dim {}` serializes as a zero length
    with pytest.raises(TfliteSignatureError, match="zero byte"):
        write_signature_defs(two_outputs, {"serving_default": signature})


def test_metadata_that_does_not_parse_fails_the_load(two_outputs: bytes) -> None:
    content = bytearray(write_signature_defs(two_outputs, {"serving_default": signature_for(two_outputs)}))
    table = bytes(metadata_buffer(bytes(content)))
    start = bytes(content).index(table)
    content[start : start + len(table)] = b"\xff" * len(table)
    with pytest.raises(TfliteSignatureError, match="Invalid SignatureDefs found in TfLite model"):
        read_signature_defs(bytes(content))


def test_every_tensor_needs_a_type_tf_serving_maps_and_a_name_of_its_own(two_outputs: bytes) -> None:
    """GetTensorInfoMap runs on every input and output, metadata or not."""
    float16 = tflite_signatures.schema.TensorType.FLOAT16
    with pytest.raises(TfliteSignatureError, match="Unknown TfLite type"):
        tflite_signatures._tensor_map([tflite_signatures.Tensor("x", 0, float16, (1,))], "Input")
    twice = [tflite_signatures.Tensor("x", i, 0, (1,)) for i in (0, 1)]
    with pytest.raises(TfliteSignatureError, match="Input tensor name: x has multiple indices"):
        tflite_signatures._tensor_map(twice, "Input")
