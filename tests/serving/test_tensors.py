"""TensorProtos read and written without TensorFlow give what TensorFlow's own functions give."""

from __future__ import annotations

import subprocess
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf

from serving import tensors
from serving.errors import ServingError
from tfs_api.tensorflow.core.framework import tensor_pb2, types_pb2

NUMPY_DTYPES = [
    np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64, np.bool_, np.complex64, np.complex128,
]  # fmt: skip
LIMIT = 1 << 20


def as_ours(proto: tf.make_tensor_proto) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto.FromString(proto.SerializeToString())


def typed_fields(array: np.ndarray) -> tensor_pb2.TensorProto:
    """`array` in the typed *_val field a client may fill instead of tensor_content."""
    proto = tf.make_tensor_proto(array)
    dtype = tensors.dtype_of(proto.dtype)
    assert dtype is not None
    proto.ClearField("tensor_content")
    proto.ClearField(dtype.values)
    field = getattr(proto, dtype.values)
    if dtype.values == "half_val":
        field.extend(int(v) for v in array.ravel().view(np.uint16))
    elif array.dtype.kind == "c":
        field.extend(float(p) for v in array.ravel() for p in (v.real, v.imag))
    else:
        field.extend(array.ravel().tolist())
    return as_ours(proto)


@pytest.mark.fast
@pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=lambda d: np.dtype(d).name)
def test_numbers_read_and_write_as_tensorflow_does(dtype: type) -> None:
    rng = np.random.default_rng(0)
    array: np.ndarray = (rng.random((2, 3)) * 100).astype(dtype)
    packed = as_ours(tf.make_tensor_proto(array))
    assert np.array_equal(tensors.to_array("x", packed, LIMIT), tf.make_ndarray(packed))
    written = tensors.to_tensor(array)  # value by value, as TF Serving's AsProtoField writes them
    assert written == typed_fields(array) and not written.tensor_content
    assert written.dtype == packed.dtype and tensors.dtype_name(written.dtype) == tf.as_dtype(dtype).name
    assert np.array_equal(tf.make_ndarray(written), array)
    written_packed = tensors.to_tensor(array, packed=True)
    assert written_packed.tensor_content and np.array_equal(tf.make_ndarray(written_packed), array)

    one_by_one = typed_fields(array)
    assert np.array_equal(tensors.to_array("x", one_by_one, LIMIT), tf.make_ndarray(one_by_one))
    del one_by_one.tensor_shape.dim[:]
    one_by_one.tensor_shape.dim.add(size=8)  # fewer values than elements: the last one repeats
    assert np.array_equal(tensors.to_array("x", one_by_one, LIMIT), tf.make_ndarray(one_by_one))
    empty = as_ours(tf.make_tensor_proto(np.zeros((2, 2), dtype)))
    empty.ClearField("tensor_content")
    assert np.array_equal(tensors.to_array("x", empty, LIMIT), tf.make_ndarray(empty))


@pytest.mark.fast
def test_strings_read_and_write_as_tensorflow_does() -> None:
    array = np.array([[b"a", b"bc"], [b"", "\u00e9".encode()]], dtype=object)
    proto = as_ours(tf.make_tensor_proto(array))
    assert np.array_equal(tensors.to_array("x", proto, LIMIT), tf.make_ndarray(proto))
    written = tensors.to_tensor(array)
    assert written == proto


@pytest.mark.fast
def test_packed_strings_are_tensorflows_string_list() -> None:
    """A string tensor in tensor_content is EncodeStringList's format (lengths as varints, then the
    bytes): what TensorFlow's own C++ (tf.io.parse_tensor, Tensor::FromProto) reads from ours, ours
    reads; content that is not that many strings is refused, as TensorFlow refuses it."""
    array = np.array([[b"a", b"bc"], [b"", b"x" * 300]], dtype=object)
    packed = tensors.to_tensor(array, packed=True)
    assert packed.tensor_content and not packed.string_val
    assert np.array_equal(tf.io.parse_tensor(packed.SerializeToString(), tf.string).numpy(), array)
    assert np.array_equal(tensors.to_array("x", packed, LIMIT), array)
    for content in (packed.tensor_content[:-1], packed.tensor_content + b"x", b"\xff" * 4):
        packed.tensor_content = content
        with pytest.raises(tf.errors.InvalidArgumentError):
            tf.io.parse_tensor(packed.SerializeToString(), tf.string)
        with pytest.raises(ServingError, match="tensor_content is not 4 strings"):
            tensors.to_array("x", packed, LIMIT)


@pytest.mark.fast
@pytest.mark.parametrize(
    "content",
    [b"\x81\x00x", b"\x80\x80\x80\x80\x00", b"\x81\x80\x80\x80\x10x", b"\x81\x80\x80\x80\x80\x01x", b"\x80"],
    ids=["padded-length", "five-byte-zero", "bits-past-32-dropped", "six-bytes", "unfinished"],
)
def test_packed_string_lengths_are_varint32s_as_tensorflow_reads_them(content: bytes) -> None:
    """Lengths as GetVarint32 reads them: padded with continuation bytes, at most 5 bytes, the bits
    past 32 dropped; what TensorFlow's C++ refuses, ours refuses."""
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_content=content)
    tensor.tensor_shape.dim.add(size=1)
    try:
        expected = tf.io.parse_tensor(tensor.SerializeToString(), tf.string).numpy()
    except tf.errors.InvalidArgumentError:
        with pytest.raises(ServingError, match="tensor_content is not 1 strings"):
            tensors.to_array("x", tensor, LIMIT)
    else:
        assert np.array_equal(tensors.to_array("x", tensor, LIMIT), expected)


@pytest.mark.fast
@pytest.mark.parametrize(
    ("tensor", "dtype"),
    [
        (tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8, int_val=[300, -1]), tf.uint8),
        (tensor_pb2.TensorProto(dtype=types_pb2.DT_INT16, int_val=[-70000]), tf.int16),
        (tensor_pb2.TensorProto(dtype=types_pb2.DT_HALF, half_val=[70000]), tf.float16),
        (tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1, 2, 3]), tf.float32),
    ],
    ids=["int32s-narrowed-to-uint8", "to-int16", "half-bits-narrowed", "more-values-than-the-shape"],
)
def test_typed_values_are_read_as_tensorflows_cpp_reads_them(
    tensor: tensor_pb2.TensorProto, dtype: tf.DType
) -> None:
    """Tensor::FromProto narrows int_val's int32s as C++ does and ignores values past the shape's (here
    a scalar's one): TF Serving takes such a request, so ours does."""
    expected = tf.io.parse_tensor(tensor.SerializeToString(), dtype).numpy()
    assert np.array_equal(tensors.to_array("x", tensor, LIMIT), expected)


@pytest.mark.fast
@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (tensor_pb2.TensorProto(dtype=types_pb2.DT_RESOURCE), "a resource tensor cannot be sent"),
        (
            tensor_pb2.TensorProto(dtype=types_pb2.DT_BFLOAT16, half_val=[70000]),
            "70000",
        ),  # read by TensorFlow
        (tensor_pb2.TensorProto(dtype=999), "dtype 999 is not one"),  # type: ignore[arg-type]
    ],
)
def test_values_that_do_not_fit_are_invalid_arguments(tensor: tensor_pb2.TensorProto, message: str) -> None:
    with pytest.raises(ServingError) as refused:
        tensors.to_array("x", tensor, LIMIT)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and message in refused.value.message


def shaped(tensor: tensor_pb2.TensorProto, *dims: int) -> tensor_pb2.TensorProto:
    for size in dims:
        tensor.tensor_shape.dim.add(size=size)
    return tensor


@pytest.mark.fast
def test_a_string_element_counts_a_pointer_and_a_bytes_object() -> None:
    """numpy holds a string tensor as pointers to bytes objects, some 40 bytes an empty one: 2^22
    strings filled from one value claim 164 MiB, past the filling limit, where a byte an element would
    claim 4 MiB; a million empty strings packed in a megabyte claim 39 MiB of the tensor limit."""
    filled = shaped(tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"x"]), 1 << 22)
    assert tensors.decoded_bytes(filled) == tensors.STRING_BYTES << 22
    with pytest.raises(ServingError) as refused:
        tensors.to_array("x", filled, 1 << 30)
    assert "from 1 values" in refused.value.message
    packed = shaped(tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_content=bytes(10**6)), 10**6)
    with pytest.raises(ServingError, match="too large"):
        tensors.to_array("x", packed, 32 << 20)
    assert tensors.to_array("x", packed, 64 << 20).size == 10**6


@pytest.mark.fast
def test_the_filling_limit_is_the_callers() -> None:
    """--max_filled_tensor_bytes: a tensor of fewer values than its shape holds, up to that size."""
    filled = shaped(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[0.5, 1.5]), 256)
    assert tensors.to_array("x", filled, LIMIT, max_filled_bytes=1024)[-1] == 1.5
    with pytest.raises(ServingError, match="from 2 values"):
        tensors.to_array("x", filled, LIMIT, max_filled_bytes=1023)
    filled.float_val.extend([2.5] * 254)  # every value sent: the limit is not the filling one's
    assert tensors.to_array("x", filled, LIMIT, max_filled_bytes=4)[-1] == 2.5


@pytest.mark.fast
def test_the_decoded_size_is_what_the_shape_claims() -> None:
    one_value = shaped(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[0.5]), 5000, 28, 28, 1)
    assert tensors.decoded_bytes(one_value) == 5000 * 28 * 28 * 4
    negative = shaped(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT), 3, -1)
    assert tensors.decoded_bytes(negative) == 0  # refused by to_array, before anything is held
    # Packed numbers fill nothing: a shape they fall short of is to_array's parse error, not a size.
    short = shaped(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=bytes(3136)), 2**40, 784)
    assert tensors.decoded_bytes(short) == 3136
    # Packed strings are objects once decoded: a byte or two each on the wire, tens in memory.
    strings = shaped(tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_content=b"\x02ab" * 1000), 1000)
    assert tensors.decoded_bytes(strings) == 1000 * tensors.STRING_BYTES


@pytest.mark.fast
def test_without_tensorflow_the_dtypes_only_it_has_are_refused() -> None:
    """In a process that never imported TensorFlow (a TFLite-only replica), reading a request imports
    none, and a bfloat16 tensor, which no TFLite signature takes, is refused rather than read."""
    script = (
        "import sys\n"
        "from serving import tensors\n"
        "from serving.errors import ServingError\n"
        "from tfs_api.tensorflow.core.framework import tensor_pb2, types_pb2\n"
        "ok = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.5])\n"
        "assert tensors.to_array('x', ok, 1 << 20) == 1.5\n"
        "bfloat16 = tensor_pb2.TensorProto(dtype=types_pb2.DT_BFLOAT16, half_val=[1])\n"
        "try:\n"
        "    tensors.to_array('x', bfloat16, 1 << 20)\n"
        "except ServingError as err:\n"
        "    print(err.message)\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dtype bfloat16 is not one this server's models take" in result.stdout
