"""TF Serving's JSON dialect: its errors, its JSON text, its tensors.

The REST server (`kerasbert.serve`) reads and writes exactly what
`tensorflow_model_server` does: errors as `{"error": message}` with TF
Serving's status codes; JSON laid out as rapidjson's `PrettyWriter`; request
bodies turned into tensors, and classify and regress examples into
`tf.train.Example`s, by `json_tensor.cc`'s rules and with its messages; and
tensors turned back into `predictions`, `outputs` and `results`.

Example:

>>> print(error_json("Servable not found for request: Latest(quickstart)"))
{
    "error": "Servable not found for request: Latest(quickstart)"
}

Reference: TF Serving's `json_tensor.cc` and `http_server.cc`
(https://github.com/tensorflow/serving).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import decimal
import json
import math
import re
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2

__all__ = [
    "RestError",
    "classify_response_json",
    "error_json",
    "examples_from_json",
    "predict_inputs_from_json",
    "predict_response_json",
    "regress_response_json",
]


# === Errors ===

# HTTP statuses for TF Serving's status codes (http_server.cc, ToHTTPStatusCode).
_HTTP_STATUS = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class RestError(Exception):
    """An error that the server answers as `{"error": message}`.

    Args:
        message: the text of the answer's `error` field.
        code: TF Serving's status code name, which sets the HTTP status
            (`INVALID_ARGUMENT` is 400, `NOT_FOUND` is 404, ...).
    """

    def __init__(self, message, code="INVALID_ARGUMENT"):
        super().__init__(message)
        self.message = message
        self.code = code

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self.code, 500)

    def __str__(self):
        # absl::Status::ToString(), which TF Serving nests in some messages.
        return f"{self.code}: {self.message}"


def _invalid(*parts) -> RestError:
    return RestError("".join(str(p) for p in parts), "INVALID_ARGUMENT")


def _not_found(*parts) -> RestError:
    return RestError("".join(str(p) for p in parts), "NOT_FOUND")


# === JSON text as TF Serving writes it ===


class _LimitReached(Exception):
    pass


class _PrettyWriter:
    """Writes JSON laid out as rapidjson's `PrettyWriter`, which TF Serving uses.

    `single_line_arrays` is rapidjson's `kFormatSingleLineArray`, which TF
    Serving switches on and off mid-document; `limit` stops writing once the
    text has reached that many characters, as TF Serving's debug strings do.
    """

    _INDENT = "    "

    def __init__(self, limit=None):
        self._parts = []
        self._size = 0
        self._levels = []  # [in_array, value_count] per open container
        self._limit = limit
        self.single_line_arrays = False

    def text(self) -> str:
        return "".join(self._parts)

    def _write(self, text):
        self._parts.append(text)
        self._size += len(text)

    def _check_limit(self):
        if self._limit is not None and self._size >= self._limit:
            raise _LimitReached

    def _prefix(self) -> str:
        if not self._levels:
            return ""
        level = self._levels[-1]
        prefix = ""
        if level[0]:
            if level[1]:
                prefix += ", " if self.single_line_arrays else ","
            if not self.single_line_arrays:
                prefix += "\n" + self._INDENT * len(self._levels)
        else:
            if level[1]:
                prefix += ",\n" if level[1] % 2 == 0 else ": "
            else:
                prefix += "\n"
            if level[1] % 2 == 0:
                prefix += self._INDENT * len(self._levels)
        level[1] += 1
        return prefix

    def raw(self, token: str):
        self._check_limit()
        self._write(self._prefix() + token)

    def string(self, value: str):
        self.raw(_quote(value))

    key = string

    def start_object(self):
        self._check_limit()
        self._write(self._prefix() + "{")
        self._levels.append([False, 0])

    def end_object(self):
        self._check_limit()
        level = self._levels.pop()
        self._write(("\n" + self._INDENT * len(self._levels) if level[1] else "") + "}")

    def start_array(self):
        self._check_limit()
        self._write(self._prefix() + "[")
        self._levels.append([True, 0])

    def end_array(self):
        self._check_limit()
        level = self._levels.pop()
        newline = level[1] and not self.single_line_arrays
        self._write(("\n" + self._INDENT * len(self._levels) if newline else "") + "]")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')


def _quote(value: str) -> str:
    """A JSON string literal escaped as rapidjson does (UTF-8 kept, not \\u-escaped)."""
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _ESCAPES.get(m.group(), "\\u%04X" % ord(m.group())), value) + '"'


def _rapidjson_double(value: float) -> str:
    """A double as rapidjson's `Writer::Double` writes it (shortest digits)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    digits_tuple = decimal.Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(str(d) for d in digits_tuple.digits)
    k = digits_tuple.exponent
    kk = len(digits) + k  # 10^(kk-1) <= value < 10^kk
    if 0 <= k and kk <= 21:
        text = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        text = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        text = "0." + "0" * -kk + digits
    elif len(digits) == 1:
        text = f"{digits}e{kk - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + text


def _write_json_value(writer: _PrettyWriter, value):
    if isinstance(value, dict):
        writer.start_object()
        for key, item in value.items():
            writer.key(str(key))
            _write_json_value(writer, item)
        writer.end_object()
    elif isinstance(value, list):
        writer.start_array()
        for item in value:
            _write_json_value(writer, item)
        writer.end_array()
    elif isinstance(value, str):
        writer.string(value)
    elif value is True:
        writer.raw("true")
    elif value is False:
        writer.raw("false")
    elif value is None:
        writer.raw("null")
    elif isinstance(value, int):
        writer.raw(str(value))
    else:
        writer.raw(_rapidjson_double(float(value)))


def _debug_string(value) -> str:
    """A JSON value as TF Serving quotes it in errors: at most ~256 characters."""
    writer = _PrettyWriter(limit=256)
    writer.single_line_arrays = True
    with contextlib.suppress(_LimitReached):
        _write_json_value(writer, value)
    return writer.text()


def _json_type(value) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _decimal_text(value: float, single_precision: bool) -> str:
    """A float as TF Serving's `WriteDecimal`: `%g`, or full precision when
    `%g` does not round-trip, with `.0` added to whole numbers."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = "%g" % value
    if single_precision:
        if np.float32(float(text)) != np.float32(value):
            text = "%.9g" % value
    elif float(text) != value:
        text = "%.17g" % value
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def error_json(message: str) -> str:
    """The body TF Serving answers an error with."""
    writer = _PrettyWriter()
    writer.start_object()
    writer.key("error")
    writer.string(message)
    writer.end_object()
    return writer.text()


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


def _dtype_name(dtype: int) -> str:
    return _DTYPE_NAMES.get(dtype) or tf.dtypes.as_dtype(dtype).name


def _is_b64_object(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _decode_b64(value) -> bytes:
    if not _is_b64_object(value):
        raise _invalid("JSON Value: ", _debug_string(value), " not formatted correctly for base64 data")
    text = value["b64"]
    try:
        # absl::Base64Unescape accepts missing padding.
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("Unable to base64 decode") from None


def _type_error(value, dtype) -> RestError:
    return _invalid(
        "JSON Value: ",
        _debug_string(value),
        " Type: ",
        _json_type(value),
        " is not of expected type: ",
        _dtype_name(dtype),
    )


def _leaf_value(value, dtype):
    """One JSON value as an element of a tensor of `dtype` (AddValueToTensor)."""
    if isinstance(value, dict):
        if dtype == types_pb2.DT_STRING:
            return _decode_b64(value)
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
            raise _invalid("JSON Parse error: The surrogate pair in string is invalid.") from None
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    raise RestError(
        f"Conversion of JSON Value: {_debug_string(value)} to type: {_dtype_name(dtype)}",
        "UNIMPLEMENTED",
    )


def _dense_shape(value) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill_values(value, level, shape, dtype, out):
    """Appends `value`'s leaves to `out`, checking the nesting (FillTensorProto)."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise _invalid(
                "JSON Value: ",
                _debug_string(value),
                " found at incorrect level: ",
                level + 1,
                " in the JSON DOM. Expected at level: ",
                rank,
            )
        out.append(_leaf_value(value, dtype))
        return
    if level >= rank:
        raise _invalid("Encountered list at unexpected level: ", level, " expected < ", rank)
    if len(value) != shape[level]:
        raise _invalid(
            "Encountered list at unexpected size: ",
            len(value),
            " at level: ",
            level,
            " expected size: ",
            shape[level],
        )
    for item in value:
        _fill_values(item, level + 1, shape, dtype, out)


def _array(values, shape, dtype) -> np.ndarray:
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


def _tensor_from_json(value, dtype) -> np.ndarray:
    shape = _dense_shape(value)
    values = []
    try:
        _fill_values(value, 0, shape, dtype, values)
    except RecursionError:
        raise _invalid("JSON Value: ", _debug_string(value), " is nested too deeply") from None
    return _array(values, shape, dtype)


def _parse_json_object(body: bytes) -> dict:
    """The request body as a JSON object, or TF Serving's parse error."""
    if not body:
        raise _invalid("JSON Parse error: The document is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        # RFC 8259 JSON is UTF-8; TF Serving's rapidjson passes other bytes
        # through unchecked, this server refuses them with rapidjson's text.
        raise _invalid(f"JSON Parse error: Invalid encoding in string. at offset: {error.start}") from None
    start = len(text) - len(text.lstrip(" \t\n\r"))
    if start == len(text):
        raise _invalid(f"JSON Parse error: The document is empty. at offset: {len(body)}")
    try:
        # raw_decode stops after the first value, as TF Serving's parser does
        # (kParseStopWhenDoneFlag): trailing text is ignored.
        document, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as error:
        offset = len(text[: error.pos].encode("utf-8"))
        raise _invalid(
            f"JSON Parse error: {_rapidjson_parse_error(error, text)} at offset: {offset}"
        ) from None
    except RecursionError:
        raise _invalid("JSON Parse error: the document is nested too deeply") from None
    if not isinstance(document, dict):
        raise _invalid("JSON Value: ", _debug_string(document), " Is not object")
    return document


def _rapidjson_parse_error(error: json.JSONDecodeError, text: str) -> str:
    """rapidjson's wording (GetParseError_En) for Python's JSON parse error."""
    message = error.msg
    if message.startswith("Expecting property name"):
        return "Missing a name for object member."
    if message.startswith("Expecting ':'"):
        return "Missing a colon after a name of object member."
    if message.startswith("Expecting ','"):
        if _innermost_container(text, error.pos) == "{":
            return "Missing a comma or '}' after an object member."
        return "Missing a comma or ']' after an array element."
    if message.startswith("Unterminated string"):
        return "Missing a closing quotation mark in string."
    if message.startswith("Invalid control character"):
        return "Invalid encoding in string."
    if message.startswith("Invalid \\escape"):
        return "Invalid escape character in string."
    if message.startswith("Invalid \\u"):
        return "Incorrect hex digit after \\u escape in string."
    return "Invalid value."


def _innermost_container(text: str, end: int) -> str | None:
    stack, in_string, escaped = [], False, False
    for char in text[:end]:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else None


def _signature_name(document: dict) -> str:
    """The request's optional `signature_name` (FillSignature)."""
    name = document.get("signature_name", "")
    if not isinstance(name, str):
        raise _invalid(
            "JSON Value: ",
            _debug_string(document),
            " not formatted correctly. 'signature_name' key must be a string value.",
        )
    return name


def predict_inputs_from_json(document: dict, input_infos: Mapping) -> tuple[dict, bool]:
    """A predict request's tensors, by TF Serving's row and columnar rules.

    Args:
        document: the request, parsed.
        input_infos: the signature's inputs, `{name: TensorInfo}`.

    Returns:
        `({input name: numpy array}, row_format)`; `row_format` is True for
        `instances` (answered with `predictions`), False for `inputs`
        (answered with `outputs`).

    Raises:
        RestError: the request does not fit the signature; the message is
            TF Serving's.
    """
    has_instances = "instances" in document
    has_inputs = "inputs" in document
    if has_instances and has_inputs:
        raise _invalid(
            "JSON Value: ",
            _debug_string(document),
            " Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
        )
    if has_instances:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise _invalid(
                "JSON Value: ", _debug_string(document), " Expecting 'instances' to be an list/array"
            )
        if not instances:
            raise _invalid("JSON Value: ", _debug_string(document), " No values in 'instances' array")
        return _inputs_from_instances(instances, input_infos), True
    if has_inputs:
        return _inputs_from_columns(document["inputs"], input_infos), False
    raise _invalid("Missing 'inputs' or 'instances' key")


def _inputs_from_instances(instances: list, input_infos: Mapping) -> dict:
    """FillTensorMapFromInstancesList."""
    if not isinstance(instances[0], dict) and len(input_infos) > 1:
        raise _invalid(
            "instances is a plain list, but expecting list of objects as multiple "
            "input tensors required as per tensorinfo_map"
        )

    def is_element_object(value):
        return isinstance(value, dict) and not _is_b64_object(value)

    elements_are_objects = is_element_object(instances[0])
    input_names = sorted(input_infos)
    shapes, sizes, columns = {}, {}, {name: [] for name in input_names}

    def add_item(item, name):
        if name not in input_infos:
            raise _invalid("JSON object: does not have named input: ", name)
        dtype = input_infos[name].dtype
        shape = _dense_shape(item)
        values = []
        _fill_values(item, 0, shape, dtype, values)
        if name not in sizes:
            sizes[name], shapes[name] = len(values), shape
        elif sizes[name] != len(values):
            raise _invalid("Expecting tensor size: ", sizes[name], " but got: ", len(values))
        elif shapes[name] != shape:
            raise _invalid("Expecting shape ", _shape_text(shapes[name]), " but got: ", _shape_text(shape))
        columns[name].extend(values)

    for index, element in enumerate(instances):
        if elements_are_objects:
            if not is_element_object(element):
                raise _invalid("Expecting object but got list at item ", index, " of input list")
            for name, item in element.items():
                try:
                    add_item(item, name)
                except RestError as error:
                    raise _invalid(
                        "Failed to process element: ",
                        index,
                        " key: ",
                        name,
                        " of 'instances' list. Error: ",
                        error,
                    ) from None
            if set(element) != set(input_names):
                raise _invalid(
                    "Failed to process element: ",
                    index,
                    " of 'instances' list. JSON object: ",
                    _debug_string(element),
                    " keys must be equal to: ",
                    ",".join(input_names),
                )
        else:
            if is_element_object(element):
                raise _invalid("Expecting value/list but got object at item ", index, " of input list")
            try:
                add_item(element, input_names[0])
            except RestError as error:
                raise _invalid(
                    "Failed to process element: ", index, " of 'instances' list. Error: ", error
                ) from None
    return {
        name: _array(columns[name], [len(instances), *shapes[name]], input_infos[name].dtype)
        for name in columns
        if name in shapes
    }


def _inputs_from_columns(value, input_infos: Mapping) -> dict:
    """FillTensorMapFromInputsMap."""
    if not isinstance(value, dict) or _is_b64_object(value):
        if len(input_infos) > 1:
            raise _invalid(
                "inputs is a plain value/list, but expecting an object as multiple "
                "input tensors required as per tensorinfo_map"
            )
        name = next(iter(input_infos))
        return {name: _tensor_from_json(value, input_infos[name].dtype)}
    inputs = {}
    for name in sorted(input_infos):
        if name not in value:
            raise _invalid("Missing named input: ", name, " in 'inputs' object.")
        inputs[name] = _tensor_from_json(value[name], input_infos[name].dtype)
    return inputs


def _shape_text(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _check_input_shapes(inputs: Mapping, input_infos: Mapping, signature_key: str):
    """Refuses tensors whose shape the signature can't take, before running it."""
    for name, array in inputs.items():
        shape_proto = input_infos[name].tensor_shape
        if shape_proto.unknown_rank:
            continue
        expected = [d.size for d in shape_proto.dim]
        if len(expected) != array.ndim or any(e >= 0 and e != s for e, s in zip(expected, array.shape)):
            raise _invalid(
                f"Input `{name}` of signature `{signature_key}` has shape "
                f"{_shape_text(array.shape)}, expected {_shape_text(expected)} (-1 is any size)."
            )


# === Examples for classify and regress ===

_FEATURE_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"}


def _add_feature_value(value, name: str, feature):
    """AddValueToFeature: one JSON value into a tf.train.Feature."""
    kind = feature.WhichOneof("kind")

    def check(expected):
        if kind not in (None, expected):
            raise _invalid(
                "Unexpected element type in feature: ", name, " expecting type: ", _FEATURE_KIND_NAMES[kind]
            )

    if value is None or isinstance(value, list):
        raise _invalid("Feature: ", name, " has element with unexpected JSON type: ", _json_type(value))
    if isinstance(value, bool):
        check("int64_list")
        feature.int64_list.value.append(int(value))
    elif isinstance(value, dict):
        if not _is_b64_object(value):
            raise _invalid("Feature: ", name, " has element with unexpected JSON type: ", _json_type(value))
        check("bytes_list")
        feature.bytes_list.value.append(_decode_b64(value))
    elif isinstance(value, str):
        check("bytes_list")
        try:
            feature.bytes_list.value.append(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise _invalid("JSON Parse error: The surrogate pair in string is invalid.") from None
    elif isinstance(value, float) or value >= 2**64:
        check("float_list")
        feature.float_list.value.append(float(value))
    else:
        check("int64_list")
        if value >= 2**63 or value < -(2**63):
            raise _invalid("Feature: ", name, " has uint64_t element. Only int64_t is supported.")
        feature.int64_list.value.append(value)


def _example_from_json(value) -> example_pb2.Example:
    if not isinstance(value, dict):
        raise _invalid("Example must be JSON object but got JSON ", _json_type(value))
    example = example_pb2.Example()
    for name, content in value.items():
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)
        example.features.feature[name].CopyFrom(feature)
    return example


def examples_from_json(document: dict, method: str = "classify") -> list[bytes]:
    """A classify or regress request's examples, serialized, context merged in.

    TF Serving feeds the signature each example's bytes after the context's,
    so a feature in both takes the example's value.

    Raises:
        RestError: TF Serving's message for a malformed request.
    """
    context = b""
    if "context" in document:
        context = _example_from_json(document["context"]).SerializeToString()
    if "examples" not in document:
        raise _invalid(
            "JSON Value: ",
            _debug_string(document),
            " When method is ",
            method,
            ", key 'examples' is expected and was not found",
        )
    examples = document["examples"]
    if not isinstance(examples, list):
        raise _invalid(
            "JSON Value: ", _debug_string(document), " Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise _invalid("JSON Value: ", _debug_string(document), " 'examples' value is an empty array")
    return [context + _example_from_json(value).SerializeToString() for value in examples]


# === Tensors to JSON responses ===


def _write_leaf(writer: _PrettyWriter, value, dtype, as_bytes: bool):
    if dtype == np.float32:
        writer.raw(_decimal_text(float(value), single_precision=True))
    elif dtype.kind == "f":
        writer.raw(_decimal_text(float(value), single_precision=False))
    elif dtype == np.bool_:
        writer.raw("true" if value else "false")
    elif dtype.kind in "iu":
        writer.raw(str(int(value)))
    else:
        data = value if isinstance(value, bytes) else str(value).encode("utf-8")
        text = None
        if not as_bytes:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                # TF Serving writes such bytes raw, which is not JSON; this
                # server writes them as base64 instead, like `_bytes` outputs.
                pass
        if text is None:
            writer.start_object()
            writer.key("b64")
            writer.string(base64.b64encode(data).decode("ascii"))
            writer.end_object()
        else:
            writer.string(text)


def _write_tensor(writer: _PrettyWriter, array: np.ndarray, as_bytes: bool):
    """AddTensorValues: a tensor as (nested) JSON arrays."""
    if array.ndim == 0:
        _write_leaf(writer, array.item() if array.dtype != object else array[()], array.dtype, as_bytes)
        return
    writer.start_array()
    for item in array:
        if array.ndim == 1:
            _write_leaf(writer, item, array.dtype, as_bytes)
        else:
            _write_tensor(writer, item, as_bytes)
    writer.end_array()


def _is_bytes_output(name: str, array: np.ndarray) -> bool:
    return array.dtype == object and name.endswith("_bytes")


def predict_response_json(outputs: Mapping[str, np.ndarray], row_format: bool) -> str:
    """A predict response as TF Serving writes it (MakeJsonFromTensors).

    Row format gives `predictions`: a list of values for one output, a list
    of `{name: value}` objects for several. Columnar format gives `outputs`:
    the value itself for one output, `{name: value}` for several.
    """
    if not outputs:
        raise _invalid("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    writer = _PrettyWriter()
    writer.start_object()
    several = len(names) > 1
    if row_format:
        batch_size = -1
        for name in names:
            array = outputs[name]
            if array.ndim == 0:
                raise _invalid("Tensor name: ", name, " has no shape information ")
            if batch_size >= 0 and array.shape[0] != batch_size:
                raise _invalid(
                    "Tensor name: ",
                    name,
                    " has inconsistent batch size: ",
                    array.shape[0],
                    " expecting: ",
                    batch_size,
                )
            batch_size = array.shape[0]
        writer.key("predictions")
        writer.start_array()
        for index in range(batch_size):
            if several:
                writer.start_object()
            writer.single_line_arrays = True
            for name in names:
                if several:
                    writer.key(name)
                array = outputs[name]
                if array.ndim == 1:
                    _write_leaf(writer, array[index], array.dtype, _is_bytes_output(name, array))
                else:
                    _write_tensor(writer, array[index], _is_bytes_output(name, array))
            writer.single_line_arrays = False
            if several:
                writer.end_object()
        writer.end_array()
    else:
        writer.key("outputs")
        if several:
            writer.start_object()
        for name in names:
            if several:
                writer.key(name)
            _write_tensor(writer, outputs[name], _is_bytes_output(name, outputs[name]))
        if several:
            writer.end_object()
    writer.end_object()
    return writer.text()


def classify_response_json(results: Sequence[Sequence[tuple[str, float]]]) -> str:
    """A classify response as TF Serving writes it: `{"results": [[[label, score], ...], ...]}`.

    TF Serving's REST API guide calls the key `result`; the server has
    always written `results` (json_tensor.cc), and so does this one.
    """
    if not results:
        raise _invalid("Cannot convert empty ClassificationResults to JSON")
    writer = _PrettyWriter()
    writer.start_object()
    writer.key("results")
    writer.start_array()
    for classes in results:
        writer.single_line_arrays = True
        writer.start_array()
        for label, score in classes:
            writer.start_array()
            writer.string(label)
            writer.raw(_decimal_text(score, single_precision=True))
            writer.end_array()
        writer.end_array()
        writer.single_line_arrays = False
    writer.end_array()
    writer.end_object()
    return writer.text()


def regress_response_json(values: Sequence[float]) -> str:
    """A regress response as TF Serving writes it: `{"results": [value, ...]}`."""
    if not values:
        raise _invalid("Cannot convert empty RegressionResults to JSON")
    writer = _PrettyWriter()
    writer.start_object()
    writer.key("results")
    writer.single_line_arrays = True
    writer.start_array()
    for value in values:
        writer.raw(_decimal_text(value, single_precision=True))
    writer.end_array()
    writer.end_object()
    return writer.text()


def _proto_json(message) -> str:
    """A message as protobuf's JSON printer writes it for TF Serving (add_whitespace)."""
    as_dict = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return json.dumps(as_dict, indent=1, ensure_ascii=False) + "\n"
