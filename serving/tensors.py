"""TensorProtos to numpy and back, and TensorFlow's dtype names, without importing TensorFlow.

A replica that serves only model.tflite files never loads TensorFlow (830 MB and seconds of start-up
for a few MB of interpreter); so what every request needs is here, as tf.make_ndarray and
tf.make_tensor_proto do it for the dtypes numpy has. The others (bfloat16, the float8s, int4,
the quantized types) only a SavedModel can take, and a SavedModel has brought TensorFlow in: they are
read by TensorFlow when it is loaded, and refused when it is not.
"""

from __future__ import annotations

import itertools
import math
import sys
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from serving.errors import invalid_argument
from serving.limits import Limits
from tfs_api.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

MAX_RANK = 64  # numpy's most dimensions (NPY_MAXDIMS); TF Serving takes up to TensorFlow's 254
# A string element once decoded: numpy's pointer to it and an empty bytes object, before its bytes.
STRING_BYTES = np.dtype(object).itemsize + sys.getsizeof(b"")
DataType: TypeAlias = types_pb2.DataType.ValueType


@dataclass(frozen=True)
class DType:
    name: str  # TensorFlow's (tf.dtypes.as_dtype(enum).name)
    numpy: np.dtype
    values: str  # the TensorProto field that holds its values one by one


_DTYPES = {
    types_pb2.DT_FLOAT: DType("float32", np.dtype(np.float32), "float_val"),
    types_pb2.DT_DOUBLE: DType("float64", np.dtype(np.float64), "double_val"),
    types_pb2.DT_HALF: DType("float16", np.dtype(np.float16), "half_val"),
    types_pb2.DT_INT8: DType("int8", np.dtype(np.int8), "int_val"),
    types_pb2.DT_INT16: DType("int16", np.dtype(np.int16), "int_val"),
    types_pb2.DT_INT32: DType("int32", np.dtype(np.int32), "int_val"),
    types_pb2.DT_INT64: DType("int64", np.dtype(np.int64), "int64_val"),
    types_pb2.DT_UINT8: DType("uint8", np.dtype(np.uint8), "int_val"),
    types_pb2.DT_UINT16: DType("uint16", np.dtype(np.uint16), "int_val"),
    types_pb2.DT_UINT32: DType("uint32", np.dtype(np.uint32), "uint32_val"),
    types_pb2.DT_UINT64: DType("uint64", np.dtype(np.uint64), "uint64_val"),
    types_pb2.DT_BOOL: DType("bool", np.dtype(np.bool_), "bool_val"),
    types_pb2.DT_COMPLEX64: DType("complex64", np.dtype(np.complex64), "scomplex_val"),
    types_pb2.DT_COMPLEX128: DType("complex128", np.dtype(np.complex128), "dcomplex_val"),
    types_pb2.DT_STRING: DType("string", np.dtype(object), "string_val"),
}
_BY_NUMPY = {dtype.numpy: enum for enum, dtype in _DTYPES.items() if dtype.values != "string_val"}
# Handles to a process's own objects, not values: no client can send one (nor a reference to one, its
# enum plus 100, as DT_RESOURCE_REF).
HANDLES: dict[int, str] = {types_pb2.DT_RESOURCE: "resource", types_pb2.DT_VARIANT: "variant"}
REF_OFFSET = 100


def handle_name(enum: DataType) -> str | None:
    """TensorFlow's name for a handle dtype (resource, variant_ref, ...); None for any other."""
    base = enum - REF_OFFSET if enum > REF_OFFSET else enum
    return HANDLES[base] + ("_ref" if enum > REF_OFFSET else "") if base in HANDLES else None


def _tensorflow_dtype(enum: DataType) -> DType | None:
    """A dtype numpy lacks, as TensorFlow has it, if TensorFlow is loaded and knows it."""
    if "tensorflow" not in sys.modules:
        return None
    import tensorflow as tf

    try:
        dtype = tf.dtypes.as_dtype(enum)
        return DType(dtype.name, np.dtype(dtype.as_numpy_dtype), "")
    except (TypeError, KeyError):  # unknown, or known with no numpy form
        return None


def dtype_of(enum: DataType) -> DType | None:
    """The dtype a DataType enum names, if this process can hold its values (see the module's note)."""
    return _DTYPES.get(enum) or (None if handle_name(enum) else _tensorflow_dtype(enum))


def dtype_name(enum: DataType) -> str:
    """TensorFlow's name for a DataType (float32, string, bfloat16, ...), for messages."""
    known = dtype_of(enum)
    if known is not None:
        return known.name
    handle = handle_name(enum)
    if handle:
        return handle
    return types_pb2.DataType.Name(enum)[3:].lower() if enum in types_pb2.DataType.values() else str(enum)


def enum_of(dtype: np.dtype) -> DataType:
    """The DataType of a numpy dtype: object arrays hold strings."""
    if dtype == np.dtype(object) or dtype.kind in "SU":
        return types_pb2.DT_STRING
    if dtype in _BY_NUMPY:
        return _BY_NUMPY[dtype]
    import tensorflow as tf  # only a SavedModel's outputs have other dtypes, and it loaded TensorFlow

    return DataType(tf.dtypes.as_dtype(dtype).as_datatype_enum)


def _itemsize(dtype: np.dtype) -> int:
    """Bytes an element takes once decoded: a string at least its pointer and its bytes object."""
    return STRING_BYTES if dtype.kind == "O" else max(1, dtype.itemsize)


def decoded_bytes(tensor: tensor_pb2.TensorProto) -> int:
    """What a request tensor takes once decoded, as its shape claims it (0 for a shape or dtype that
    to_array refuses): a few bytes on the wire may claim a whole filled shape. Packed numbers
    (tensor_content) fill nothing: they are what they decode to, or to_array refuses them when their
    shape claims more, as TensorFlow's parse does (`tensor parsing error`). Packed strings are
    Python objects once decoded, tens of bytes each for one or two on the wire: sized by the shape."""
    dims = [d.size for d in tensor.tensor_shape.dim]
    dtype = dtype_of(tensor.dtype)
    if dtype is None or any(d < 0 for d in dims):
        return 0
    if tensor.tensor_content and dtype.values != "string_val":
        return len(tensor.tensor_content)
    return math.prod(dims) * _itemsize(dtype.numpy)


def to_array(
    name: str,
    tensor: tensor_pb2.TensorProto,
    max_bytes: int,
    max_filled_bytes: int = Limits.filled_tensor_bytes,
) -> np.ndarray:
    """A request's TensorProto as numpy, as TensorFlow reads it, its claimed size checked against
    `max_bytes` before anything is allocated, and against `max_filled_bytes` when fewer values than
    the shape holds are sent (TensorFlow fills a whole shape from a single value)."""
    dims = [d.size for d in tensor.tensor_shape.dim]
    if len(dims) > MAX_RANK:
        raise invalid_argument(f"tensor parsing error: {name}: {len(dims)} dimensions, at most {MAX_RANK}")
    handle = handle_name(tensor.dtype)
    if handle:
        raise invalid_argument(f"tensor parsing error: {name}: a {handle} tensor cannot be sent")
    dtype = dtype_of(tensor.dtype)
    if dtype is None:
        raise invalid_argument(
            f"tensor parsing error: {name}: dtype {dtype_name(tensor.dtype)} is not one this server's "
            "models take"
        )
    itemsize = _itemsize(dtype.numpy)
    count = math.prod(dims)
    if any(d < 0 for d in dims) or count * itemsize > max_bytes:
        raise invalid_argument(f"tensor parsing error: {name}: shape {dims} is negative or too large")
    if tensor.tensor_content and dtype.values == "string_val":
        return np.array(_string_list(name, tensor.tensor_content, count), dtype=object).reshape(dims)
    if tensor.tensor_content:
        if len(tensor.tensor_content) != count * itemsize:
            raise invalid_argument(
                f"tensor parsing error: {name}: {len(tensor.tensor_content)} bytes for shape {dims}"
            )
        return np.frombuffer(tensor.tensor_content, dtype=dtype.numpy).reshape(dims)
    given = max((len(v) for f, v in tensor.ListFields() if f.name.endswith("_val")), default=0)
    if given < count and count * itemsize > max_filled_bytes:
        raise invalid_argument(
            f"tensor parsing error: {name}: shape {dims} from {given} values; send every value "
            "(or tensor_content) for tensors this large"
        )
    if not dtype.values:  # a dtype only TensorFlow has: TensorFlow, loaded for a SavedModel, reads it
        import tensorflow as tf

        try:
            return np.asarray(tf.make_ndarray(tensor))
        except (ValueError, TypeError, OverflowError) as err:  # OverflowError: 70000 as a bfloat16's bits
            raise invalid_argument(f"tensor parsing error: {name}: {err}") from None
    values = _values(tensor, dtype)
    if values.size == 0:
        return np.zeros(dims, dtype.numpy) if dtype.values != "string_val" else np.full(dims, b"", object)
    # As TensorFlow's Tensor::FromProto (FromProtoField, core/framework/tensor.cc): values past the
    # shape's are ignored, and a shape past the values is filled with the last one.
    return np.pad(values[:count], (0, max(0, count - values.size)), "edge").reshape(dims)


def _values(tensor: tensor_pb2.TensorProto, dtype: DType) -> np.ndarray:
    """The values of a TensorProto's typed field, in its dtype. int_val's int32s are narrowed to the
    smaller integers as C++ narrows them (300 is 44 as a uint8, -1 is 65535 as a uint16), as
    TensorFlow's FromProtoField copies them; half_val's to float16's 16 bits the same way."""
    field = getattr(tensor, dtype.values)
    if dtype.values == "string_val":
        return np.array(list(field), dtype=object)
    if dtype.values == "half_val":  # float16's bits, each in an int32
        return np.fromiter(field, dtype=np.int32, count=len(field)).astype(np.uint16).view(np.float16)
    if dtype.values in ("scomplex_val", "dcomplex_val"):  # real and imaginary parts, alternating
        parts = np.fromiter(field, dtype=dtype.numpy.type(0).real.dtype, count=len(field))
        return parts[: len(parts) // 2 * 2].view(dtype.numpy)
    if dtype.values == "int_val":
        return np.fromiter(field, dtype=np.int32, count=len(field)).astype(dtype.numpy)
    return np.fromiter(field, dtype=dtype.numpy, count=len(field))


def _string_list(name: str, content: bytes, count: int) -> list[bytes]:
    """`count` strings from a string tensor's tensor_content, as TensorFlow's DecodeStringList reads
    them (core/platform/tensor_coding.cc): each one's length as a varint32 (GetVarint32: at most 5
    bytes, bits past 32 dropped), then their bytes, end to end, filling the content exactly. Read with
    numpy, not byte by byte: a request may pack millions of empty strings, and this runs on the loop."""
    refused = invalid_argument(f"tensor parsing error: {name}: tensor_content is not {count} strings")
    data = np.frombuffer(content, np.uint8)
    lasts = np.flatnonzero(data[: 5 * count] < 0x80)[:count]  # each length's last byte
    if lasts.size < count:
        raise refused
    sizes = np.diff(lasts, prepend=-1)  # each length's bytes
    if count and int(sizes.max()) > 5:
        raise refused
    head = int(lasts[-1]) + 1 if count else 0
    lengths = data[:head].astype(np.uint64)
    if head > count:  # some length takes more than a byte: 7 bits a byte, the lowest first
        places = np.arange(head) - np.repeat(lasts - sizes + 1, sizes)
        lengths = np.add.reduceat((lengths & 0x7F) << (places.astype(np.uint64) * 7), lasts - sizes + 1)
        lengths &= 0xFFFFFFFF
    offsets = np.zeros(count + 1, np.uint64)
    np.cumsum(lengths, out=offsets[1:])
    bounds = (offsets + head).tolist()
    if bounds[-1] != len(content):
        raise refused
    return [content[begin:end] for begin, end in itertools.pairwise(bounds)]


def _packed_strings(strings: list[bytes]) -> bytes:
    """The reverse of _string_list: EncodeStringList's format, for packed string outputs."""
    lengths = bytearray()
    for string in strings:
        length = len(string)
        while length >= 0x80:
            lengths.append(length & 0x7F | 0x80)
            length >>= 7
        lengths.append(length)
    return bytes(lengths) + b"".join(strings)


def to_tensor(array: np.ndarray, packed: bool = False) -> tensor_pb2.TensorProto:
    """An output as TF Serving writes it: by default each value in the dtype's typed field
    (`Tensor::AsProtoField`), so that clients reading `float_val` find them; `packed` writes numbers as
    tensor_content instead (`AsProtoTensorContent`, TF Serving's --enable_serialization_as_tensor_content).
    Strings packed are EncodeStringList's format (`Helper<tstring>::Encode`); a dtype only TensorFlow has
    is packed always (it has no typed field here)."""
    enum = enum_of(array.dtype)
    tensor = tensor_pb2.TensorProto(dtype=enum)
    tensor.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in array.shape)
    dtype = _DTYPES.get(enum)
    if enum == types_pb2.DT_STRING:
        strings = [value if isinstance(value, bytes) else str(value).encode() for value in array.ravel()]
        if packed:
            tensor.tensor_content = _packed_strings(strings)
        else:
            tensor.string_val.extend(strings)
    elif packed or dtype is None:
        tensor.tensor_content = np.ascontiguousarray(array).tobytes()
    else:
        getattr(tensor, dtype.values).extend(_typed_values(array).tolist())
    return tensor


def _typed_values(array: np.ndarray) -> np.ndarray:
    """The values as their typed field holds them: float16 as its bits, a complex number as its real
    and imaginary parts, one after the other (the reverse of _values)."""
    flat = np.ascontiguousarray(array).ravel()
    if flat.dtype == np.float16:
        return flat.view(np.uint16)
    if flat.dtype.kind == "c":
        return flat.view(flat.real.dtype)
    return flat
