"""JSON values to typed numpy tensors, by `json_tensor.cc`'s rules: dtypes, ranges, base64 bytes, dense shapes.

Reference: TF Serving's `json_tensor.cc` (https://github.com/tensorflow/serving).
"""

from __future__ import annotations

import base64
import binascii

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from kerasbert.serving.rest.errors import RestError, invalid_argument
from kerasbert.serving.rest.json_text import debug_string, json_type

# === Errors ===


# === JSON text as TF Serving writes it ===


# === JSON requests to tensors (json_tensor.cc) ===


_DTYPE_NAMES = {
    types_pb2.DT_FLOAT: "float",
    types_pb2.DT_DOUBLE: "double",
    types_pb2.DT_INT32: "int32",
    types_pb2.DT_UINT8: "uint8",
    types_pb2.DT_INT16: "int16",
    types_pb2.DT_INT8: "int8",
    types_pb2.DT_STRING: "string",
    types_pb2.DT_INT64: "int64",
    types_pb2.DT_BOOL: "bool",
    types_pb2.DT_UINT32: "uint32",
    types_pb2.DT_UINT64: "uint64",
    types_pb2.DT_HALF: "half",
    types_pb2.DT_BFLOAT16: "bfloat16",
}


_INT_RANGES = {
    types_pb2.DT_INT32: (-(2**31), 2**31),
    types_pb2.DT_INT16: (-(2**31), 2**31),
    types_pb2.DT_INT8: (-(2**31), 2**31),
    types_pb2.DT_UINT8: (-(2**31), 2**31),
    types_pb2.DT_INT64: (-(2**63), 2**63),
    types_pb2.DT_UINT32: (0, 2**32),
    types_pb2.DT_UINT64: (0, 2**64),
}


def dtype_name(dtype: int) -> str:
    return _DTYPE_NAMES.get(dtype) or tf.dtypes.as_dtype(dtype).name


def is_b64_object(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def decode_b64(value) -> bytes:
    if not is_b64_object(value):
        raise invalid_argument(
            "JSON Value: ", debug_string(value), " not formatted correctly for base64 data"
        )
    text = value["b64"]
    try:
        # absl::Base64Unescape accepts missing padding.
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _type_error(value, dtype) -> RestError:
    return invalid_argument(
        "JSON Value: ",
        debug_string(value),
        " Type: ",
        json_type(value),
        " is not of expected type: ",
        dtype_name(dtype),
    )


def _leaf_value(value, dtype):
    """One JSON value as an element of a tensor of `dtype` (AddValueToTensor)."""
    if isinstance(value, dict):
        if dtype == types_pb2.DT_STRING:
            return decode_b64(value)
        raise _type_error(value, dtype)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
        if not is_number:
            raise _type_error(value, dtype)
        return float(value)
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if not (is_number and isinstance(value, int) and low <= value < high):
            raise _type_error(value, dtype)
        return value
    if dtype == types_pb2.DT_STRING:
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise invalid_argument(
                "JSON Parse error: The surrogate pair in string is invalid."
            ) from None
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    raise RestError(
        f"Conversion of JSON Value: {debug_string(value)} to type: {dtype_name(dtype)}",
        "UNIMPLEMENTED",
    )


def dense_shape(value) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def fill_values(value, level, shape, dtype, out):
    """Appends `value`'s leaves to `out`, checking the nesting (FillTensorProto)."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                "JSON Value: ",
                debug_string(value),
                " found at incorrect level: ",
                level + 1,
                " in the JSON DOM. Expected at level: ",
                rank,
            )
        out.append(_leaf_value(value, dtype))
        return
    if level >= rank:
        raise invalid_argument(
            "Encountered list at unexpected level: ", level, " expected < ", rank
        )
    if len(value) != shape[level]:
        raise invalid_argument(
            "Encountered list at unexpected size: ",
            len(value),
            " at level: ",
            level,
            " expected size: ",
            shape[level],
        )
    for item in value:
        fill_values(item, level + 1, shape, dtype, out)


def typed_array(values, shape, dtype) -> np.ndarray:
    if dtype == types_pb2.DT_STRING:
        # An object array: a fixed-width bytes array would drop trailing NULs.
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    numpy_dtype = tf.dtypes.as_dtype(dtype).as_numpy_dtype
    if dtype in (types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_UINT8):
        # TF Serving stores these as int32 and narrows them, wrapping around.
        return np.asarray(values, dtype=np.int64).astype(numpy_dtype).reshape(shape)
    return np.asarray(values, dtype=numpy_dtype).reshape(shape)


def dense_values(value, dtype) -> tuple[list, list[int]]:
    """A JSON value's leaves as elements of `dtype`, and its dense shape."""
    shape = dense_shape(value)
    values = []
    fill_values(value, 0, shape, dtype, values)
    return values, shape
