"""A TF Serving-compatible REST server, for development.

`python -m kerasbert.serve` serves SavedModels over the REST API of
`tensorflow_model_server`, with its flags and their meanings: the same URLs,
JSON request and response shapes, status codes and error messages, so a
client written against it works unchanged against TF Serving. It is a
development server, for trying a model on a laptop and for tests;
production stays TF Serving.

Models load with plain TensorFlow (`tf.saved_model.load`, and
`tensorflow_text` for the tokenizer's ops in kerasbert's exports). This
module never imports kerasbert's training side (config, data, models,
training) nor keras-hub.

Example:

```sh
python -m kerasbert.serve --model_name quickstart --model_base_path saved_models/quickstart
curl -s -d '{"instances": ["What a superb film."]}' localhost:8501/v1/models/quickstart:predict
```

Reference: TF Serving's `http_rest_api_handler.cc`, `json_tensor.cc`,
`get_model_status_impl.cc` and `g3doc/api_rest.md`
(https://github.com/tensorflow/serving).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import dataclasses
import decimal
import importlib.resources
import importlib.util
import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops of kerasbert's tokenizers)
import uvicorn
from google.protobuf import json_format, text_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

__all__ = [
    "ModelConfig",
    "ModelManager",
    "RestError",
    "Servable",
    "ServerProcess",
    "VersionPolicy",
    "VersionState",
    "background_server",
    "create_app",
    "load_servable",
    "main",
    "read_model_config_file",
]

log = logging.getLogger("kerasbert.serve")

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
WARMUP_FILE = "tf_serving_warmup_requests"
# TF Serving replays at most this many warm-up records.
MAX_WARMUP_RECORDS = 1000
READY_MESSAGE = "Exporting HTTP/REST API at:"


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


def _clean_tf_message(message: str) -> str:
    """A TensorFlow error message without the Python stack that eager mode adds."""
    lines = message.splitlines()
    if not lines or not lines[0].startswith("Graph execution error"):
        return message.strip()
    kept, skipping = [], False
    for line in lines[1:]:
        if line.startswith("Detected at node"):
            skipping = True
            continue
        stripped = line.strip()
        if skipping and (
            stripped == "<stack traces unavailable>"
            or stripped.startswith('File "')
            or line.startswith("    ")
        ):
            continue
        skipping = False
        if stripped:
            kept.append(line)
    return "\n".join(kept).strip() or message.strip()


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


# === Servables ===


@dataclasses.dataclass(eq=False)
class Servable:
    """One loaded version of a model.

    A request keeps a reference to its `Servable` for its whole life, so a
    version unloaded meanwhile stays usable until the request is answered.

    Attributes:
        name: the model's name.
        version: the version number (the directory's name).
        path: the version directory.
        signature_defs: `{key: SignatureDef}` of the MetaGraphDef tagged `serve`.
        functions: `{key: callable}` taking the signature's inputs as keyword
            tensors and returning `{output name: tensor}`.
        module: the loaded SavedModel, kept alive with its resources.
    """

    name: str
    version: int
    path: Path
    signature_defs: dict
    functions: dict
    module: object = None

    @property
    def id(self) -> str:
        return f"{{name: {self.name} version: {self.version}}}"


def _read_meta_graph(path: Path) -> meta_graph_pb2.MetaGraphDef:
    saved_model = saved_model_pb2.SavedModel()
    if (path / "saved_model.pb").is_file():
        saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    elif (path / "saved_model.pbtxt").is_file():
        text_format.Parse((path / "saved_model.pbtxt").read_text(encoding="utf-8"), saved_model)
    else:
        raise FileNotFoundError(f"No saved_model.pb or saved_model.pbtxt in {path}")
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return meta_graph
    raise ValueError(f"The SavedModel in {path} has no MetaGraphDef tagged `serve`")


def load_servable(name: str, version: int, path) -> Servable:
    """Loads a SavedModel version directory, then warms it up.

    Warm-up replays `assets.extra/tf_serving_warmup_requests` when the
    export has one (as TF Serving does, and a failing record fails the load);
    otherwise it calls each signature once on placeholder inputs, so that
    the first real request doesn't pay for TensorFlow's graph set-up.

    Args:
        name: the model's name.
        version: its version number.
        path: the version directory.

    Returns:
        The loaded `Servable`.
    """
    path = Path(path)
    meta_graph = _read_meta_graph(path)
    module = tf.saved_model.load(str(path), tags=["serve"])
    servable = Servable(
        name=name,
        version=int(version),
        path=path,
        signature_defs=dict(meta_graph.signature_def),
        functions=dict(module.signatures),
        module=module,
    )
    _warm_up(servable)
    return servable


def _warm_up(servable: Servable):
    records_path = servable.path / "assets.extra" / WARMUP_FILE
    if not records_path.is_file():
        for key in servable.functions:
            with contextlib.suppress(Exception):
                call_signature(servable, key, _placeholder_inputs(servable.signature_defs[key]))
        return
    count = 0
    for record in tf.data.TFRecordDataset(str(records_path)).take(MAX_WARMUP_RECORDS):
        log_entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        kind = log_entry.WhichOneof("log_type")
        try:
            if kind == "predict_log":
                request = log_entry.predict_log.request
                inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
                call_signature(servable, request.model_spec.signature_name or DEFAULT_SIGNATURE, inputs)
            elif kind in ("classify_log", "regress_log"):
                request = getattr(log_entry, kind).request
                examples = np.array(_serialized_examples(request.input), dtype=object)
                call_signature(
                    servable, request.model_spec.signature_name or DEFAULT_SIGNATURE, {"inputs": examples}
                )
            else:
                log.warning("Skipping a warm-up record of kind %s for %s", kind, servable.id)
                continue
        except RestError as error:
            raise RuntimeError(f"Model warm-up failed: record {count}: {error.message}") from None
        count += 1
    log.info(
        "Finished reading warmup data for model at %s. Number of warmup records read: %d.",
        records_path,
        count,
    )


def _serialized_examples(request_input) -> list[bytes]:
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in request_input.example_list.examples]
    if kind == "example_list_with_context":
        context = request_input.example_list_with_context.context.SerializeToString()
        return [context + e.SerializeToString() for e in request_input.example_list_with_context.examples]
    raise _invalid("Input is empty.")


def _placeholder_inputs(signature) -> dict:
    inputs = {}
    for name, info in signature.inputs.items():
        shape = [1] if info.tensor_shape.unknown_rank else [max(d.size, 1) for d in info.tensor_shape.dim]
        if info.dtype == types_pb2.DT_STRING:
            inputs[name] = np.full(shape, b"", dtype=object)
        else:
            inputs[name] = np.zeros(shape, dtype=tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
    return inputs


def call_signature(servable: Servable, key: str, inputs: Mapping[str, np.ndarray]) -> dict:
    """Runs one signature on numpy inputs; TensorFlow's errors become `RestError`s."""
    function = servable.functions.get(key)
    if function is None:
        raise _invalid(f'Serving signature key "{key}" not found.')
    infos = servable.signature_defs[key].inputs
    try:
        tensors = {
            name: tf.constant(value, dtype=tf.dtypes.as_dtype(infos[name].dtype))
            for name, value in inputs.items()
        }
        outputs = function(**tensors)
    except tf.errors.OpError as error:
        code = _TF_ERROR_CODES.get(error.error_code, "UNKNOWN")
        raise RestError(_clean_tf_message(error.message), code) from None
    except (TypeError, ValueError) as error:
        raise _invalid(
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        ) from None
    return {name: value.numpy() for name, value in outputs.items()}


_TF_ERROR_CODES = {
    tf.errors.CANCELLED: "CANCELLED",
    tf.errors.UNKNOWN: "UNKNOWN",
    tf.errors.INVALID_ARGUMENT: "INVALID_ARGUMENT",
    tf.errors.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
    tf.errors.NOT_FOUND: "NOT_FOUND",
    tf.errors.ALREADY_EXISTS: "ALREADY_EXISTS",
    tf.errors.PERMISSION_DENIED: "PERMISSION_DENIED",
    tf.errors.RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED",
    tf.errors.FAILED_PRECONDITION: "FAILED_PRECONDITION",
    tf.errors.ABORTED: "ABORTED",
    tf.errors.OUT_OF_RANGE: "OUT_OF_RANGE",
    tf.errors.UNIMPLEMENTED: "UNIMPLEMENTED",
    tf.errors.INTERNAL: "INTERNAL",
    tf.errors.UNAVAILABLE: "UNAVAILABLE",
    tf.errors.DATA_LOSS: "DATA_LOSS",
    tf.errors.UNAUTHENTICATED: "UNAUTHENTICATED",
}


# === Models, versions and the file-system poll ===


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk to serve: TF Serving's `model_version_policy`.

    Attributes:
        kind: `latest` (the `num_versions` highest), `all`, or `specific`
            (those in `versions` that exist).
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple = ()

    def __post_init__(self):
        if self.kind not in ("latest", "all", "specific"):
            raise ValueError(
                "Invalid value for argument `kind`. Expected one of latest, all, specific. "
                f"Received: kind={self.kind!r}"
            )
        if self.kind == "latest" and self.num_versions < 1:
            raise ValueError(
                "Invalid value for argument `num_versions`. Expected an integer >= 1. "
                f"Received: num_versions={self.num_versions}"
            )
        if self.kind == "specific" and not self.versions:
            raise ValueError("A `specific` version policy needs at least one version in `versions`.")

    def select(self, available) -> list[int]:
        """The versions to serve among `available`, highest first."""
        available = sorted(set(available), reverse=True)
        if self.kind == "latest":
            return available[: self.num_versions]
        if self.kind == "all":
            return available
        return [v for v in available if v in self.versions]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One served model: TF Serving's `ModelConfig`.

    Attributes:
        name: the name in request URLs, `/v1/models/<name>`.
        base_path: the directory holding one integer-named directory per version.
        version_policy: which versions to serve.
        version_labels: `{label: version}`, for `/v1/models/<name>/labels/<label>`.
    """

    name: str
    base_path: Path
    version_policy: VersionPolicy = VersionPolicy()
    version_labels: Mapping[str, int] = dataclasses.field(default_factory=dict)


def read_model_config_file(path) -> list[ModelConfig]:
    """The models of a `--model_config_file`: a `ModelServerConfig` in text format.

    Example file:

    ```
    model_config_list {
      config {
        name: "quickstart"
        base_path: "saved_models/quickstart"
        model_platform: "tensorflow"
        model_version_policy { all {} }
        version_labels { key: "stable" value: 1 }
      }
    }
    ```

    Relative base paths are relative to the directory you run from.

    Raises:
        ValueError: the file is not a valid config; the message names the file.
        OSError: the file can't be read.
    """
    path = Path(path)
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), config)
    except text_format.ParseError as error:
        raise ValueError(f"{path}: {error}") from None
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError(
            f"{path}: expected a `model_config_list {{ config {{ ... }} }}`; custom_model_config is not supported"
        )
    configs = []
    for index, entry in enumerate(config.model_config_list.config):
        where = f"{path}: model_config_list.config[{index}]"
        if not entry.name:
            raise ValueError(f"{where}: `name` is missing")
        if not entry.base_path:
            raise ValueError(f"{where} ({entry.name}): `base_path` is missing")
        if entry.model_platform not in ("", "tensorflow"):
            raise ValueError(
                f"{where} ({entry.name}): model_platform {entry.model_platform!r} is not supported; "
                "this server serves TensorFlow SavedModels (`tensorflow`)"
            )
        if any(c.name == entry.name for c in configs):
            raise ValueError(f"{where}: model name {entry.name!r} appears more than once")
        choice = entry.model_version_policy.WhichOneof("policy_choice")
        try:
            if choice == "all":
                policy = VersionPolicy("all")
            elif choice == "specific":
                policy = VersionPolicy(
                    "specific", versions=tuple(entry.model_version_policy.specific.versions)
                )
            else:
                policy = VersionPolicy(
                    "latest", num_versions=entry.model_version_policy.latest.num_versions or 1
                )
        except ValueError as error:
            raise ValueError(f"{where} ({entry.name}): model_version_policy: {error}") from None
        configs.append(
            ModelConfig(
                name=entry.name,
                base_path=Path(entry.base_path).expanduser().absolute(),
                version_policy=policy,
                version_labels=dict(entry.version_labels),
            )
        )
    if not configs:
        raise ValueError(f"{path}: model_config_list has no `config`")
    return configs


_VERSION_NAME = re.compile(r"[0-9]+")


def list_versions(base_path) -> dict[int, Path]:
    """`{version: directory}` for the integer-named directories under `base_path`.

    Hidden and non-integer directories (an exporter's `.tmp-*` staging
    directories among them) are not versions.
    """
    versions = {}
    try:
        entries = sorted(os.scandir(base_path), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return versions
    for entry in entries:
        if _VERSION_NAME.fullmatch(entry.name) and entry.is_dir():
            versions.setdefault(int(entry.name), Path(entry.path))
    return versions


def _fingerprint(path: Path) -> tuple:
    """Changes when a version directory's files do, to retry a failed load."""
    parts = []
    for relative in (".", "saved_model.pb", "variables/variables.index", "variables"):
        with contextlib.suppress(OSError):
            stat = (path / relative).stat()
            parts.append((relative, stat.st_mtime_ns, stat.st_size))
    return tuple(parts)


@dataclasses.dataclass(frozen=True)
class VersionState:
    """A version's state, as TF Serving's `ModelVersionStatus` reports it."""

    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING or END
    error_code: str = "OK"
    error_message: str = ""


class ModelManager:
    """Loads the versions each model's policy asks for, and keeps them current.

    `poll()` looks at every base path once: it loads versions that appeared
    (newest first) and unloads those no longer wanted, but never unloads a
    model's last serving version before a wanted one is available, so
    requests never go unanswered during a change. `start()` polls every
    `poll_wait_seconds` in a background thread.

    Args:
        configs: the models to serve.
        poll_wait_seconds: seconds between polls; 0 polls only when
            `poll()` is called.
        max_load_attempts: tries for a version that fails to load (it may
            still be being copied); it is tried again when its files change.
        load: `load(name, version, path) -> Servable`; `load_servable` by
            default.

    Example:

    >>> manager = ModelManager([ModelConfig("quickstart", Path("saved_models/quickstart"))])
    >>> manager.poll()
    >>> manager.servable("quickstart").version
    1
    """

    def __init__(self, configs, poll_wait_seconds=1.0, max_load_attempts=5, load=load_servable):
        configs = list(configs)
        if not configs:
            raise ValueError(
                "Invalid value for argument `configs`. Expected at least one ModelConfig. Received: []"
            )
        if poll_wait_seconds < 0:
            raise ValueError(
                "Invalid value for argument `poll_wait_seconds`. Expected a number >= 0. "
                f"Received: poll_wait_seconds={poll_wait_seconds}"
            )
        self.configs = {config.name: config for config in configs}
        self.poll_wait_seconds = poll_wait_seconds
        self.max_load_attempts = max_load_attempts
        self._load = load
        # {name: {version: Servable}}, replaced whole under the lock, read without it.
        self._servables: dict[str, dict[int, Servable]] = {name: {} for name in self.configs}
        self._states: dict[str, dict[int, VersionState]] = {name: {} for name in self.configs}
        self._failures: dict[tuple[str, int], tuple[int, tuple]] = {}
        self._missing_reported: set[str] = set()
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    @property
    def model_names(self) -> list[str]:
        return list(self.configs)

    # --- Lookups, from request handlers ---

    def servable(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request asks for: the highest loaded version by default.

        Raises:
            RestError: NOT_FOUND for an unknown model or a version not loaded,
                INVALID_ARGUMENT for an unknown label; TF Serving's messages.
        """
        if label is not None:
            version = self._version_for_label(name, label)
        versions = self._servables.get(name) or {}
        if version is None:
            if not versions:
                raise _not_found(f"Servable not found for request: Latest({name})")
            return versions[max(versions)]
        servable = versions.get(version)
        if servable is None:
            raise _not_found(f"Servable not found for request: Specific({name}, {version})")
        return servable

    def _version_for_label(self, name, label) -> int:
        config = self.configs.get(name)
        if config is None or label not in config.version_labels:
            raise _invalid(f"Unrecognized servable version label: {label}")
        return config.version_labels[label]

    def version_states(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionState]:
        """The states of a model's versions, highest first (GetModelStatus).

        Raises:
            RestError: NOT_FOUND when the model or version has no state yet.
        """
        if label is not None:
            version = self._version_for_label(name, label)
        states = self._states.get(name) or {}
        if version is not None:
            if version not in states:
                raise _not_found(f"Could not find version {version} of model {name}")
            return [states[version]]
        if not states:
            raise _not_found(f"Could not find any versions of model {name}")
        return [states[v] for v in sorted(states, reverse=True)]

    # --- The poll ---

    def poll(self):
        """Brings every model's loaded versions in line with its base path, once."""
        with self._poll_lock:
            for config in self.configs.values():
                try:
                    self._reconcile(config)
                except Exception:  # noqa: BLE001  (one model's trouble must not stop the others)
                    log.exception("Polling the base path of model %s failed", config.name)

    def _reconcile(self, config: ModelConfig):
        on_disk = list_versions(config.base_path)
        if not on_disk and config.name not in self._missing_reported:
            log.warning("No versions of servable %s found under base path %s", config.name, config.base_path)
            self._missing_reported.add(config.name)
        elif on_disk:
            self._missing_reported.discard(config.name)
        wanted = config.version_policy.select(on_disk)
        loaded = self._servables[config.name]
        for version in wanted:
            if version not in loaded and self._should_try(config.name, version, on_disk[version]):
                self._load_version(config, version, on_disk[version])
        loaded = self._servables[config.name]
        if not wanted or any(v in loaded for v in wanted):
            for version in sorted(set(loaded) - set(wanted)):
                self._unload_version(config.name, version)
        for key in [k for k in self._failures if k[0] == config.name and k[1] not in on_disk]:
            del self._failures[key]

    def _should_try(self, name, version, path) -> bool:
        attempts, fingerprint = self._failures.get((name, version), (0, None))
        if attempts < self.max_load_attempts:
            return True
        if fingerprint != _fingerprint(path):
            self._failures[(name, version)] = (0, None)
            return True
        return False

    def _set_state(self, name, state: VersionState):
        with self._lock:
            states = dict(self._states[name])
            states[state.version] = state
            self._states[name] = states

    def _load_version(self, config: ModelConfig, version: int, path: Path):
        servable_id = f"{{name: {config.name} version: {version}}}"
        self._set_state(config.name, VersionState(version, "LOADING"))
        log.info("Loading servable version %s from %s", servable_id, path)
        started = time.monotonic()
        try:
            servable = self._load(config.name, version, path)
        except Exception as error:  # noqa: BLE001  (any failure leaves the version unserved, retried later)
            attempts, _ = self._failures.get((config.name, version), (0, None))
            self._failures[(config.name, version)] = (attempts + 1, _fingerprint(path))
            message = f"{type(error).__name__}: {error}"
            log.error(
                "Loading servable version %s failed (attempt %d): %s", servable_id, attempts + 1, message
            )
            self._set_state(config.name, VersionState(version, "END", "UNKNOWN", message))
            return
        self._failures.pop((config.name, version), None)
        with self._lock:
            servables = dict(self._servables[config.name])
            servables[version] = servable
            self._servables[config.name] = servables
        self._set_state(config.name, VersionState(version, "AVAILABLE"))
        log.info("Successfully loaded servable version %s in %.1f s", servable_id, time.monotonic() - started)

    def _unload_version(self, name: str, version: int):
        self._set_state(name, VersionState(version, "UNLOADING"))
        with self._lock:
            servables = dict(self._servables[name])
            servables.pop(version, None)
            self._servables[name] = servables
        # Requests that hold the servable finish with it; it is freed after them.
        self._set_state(name, VersionState(version, "END"))
        log.info("Unloaded servable version {name: %s version: %d}", name, version)

    def start(self):
        """Polls every `poll_wait_seconds` in a daemon thread, until `stop()`."""
        if self.poll_wait_seconds <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll_loop, name="kerasbert-serve-poll", daemon=True)
        self._thread.start()

    def _poll_loop(self):
        while not self._stop.wait(self.poll_wait_seconds):
            self.poll()

    def stop(self, timeout=None):
        """Stops the poll thread (after the poll under way, if any)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


# === Batching ===


class _Batch:
    def __init__(self, run, opened):
        self.run = run
        self.opened = opened
        self.items = []  # (inputs, rows, future)
        self.rows = 0
        self.timed_out = False
        self.timer = None


class BatchScheduler:
    """Merges concurrent calls of one signature into one model call.

    Requests with the same key (servable, signature and input shapes) join
    an open batch. A batch is run when it holds `max_batch_size` rows, or
    once `batch_timeout_micros` have passed since it opened, as soon as one
    of `num_batch_threads` is free: while all are busy the open batch keeps
    filling, so batches grow with the load, as in TF Serving's shared batch
    scheduler. Inputs are concatenated along the first axis, run once, and
    the outputs split back. A request of `max_batch_size` rows or more runs
    alone. If a merged call fails, each request is run on its own so one bad
    input can't fail its neighbours.

    Args:
        max_batch_size: the most rows in one model call.
        batch_timeout_micros: how long an open batch waits for more requests.
        num_batch_threads: batches run at the same time; the CPU count by
            default.
    """

    def __init__(self, max_batch_size=32, batch_timeout_micros=1000, num_batch_threads=None):
        if max_batch_size < 1:
            raise ValueError(
                "Invalid value for argument `max_batch_size`. Expected an integer >= 1. "
                f"Received: max_batch_size={max_batch_size}"
            )
        if batch_timeout_micros < 0:
            raise ValueError(
                "Invalid value for argument `batch_timeout_micros`. Expected an integer >= 0. "
                f"Received: batch_timeout_micros={batch_timeout_micros}"
            )
        num_batch_threads = num_batch_threads or os.cpu_count() or 1
        if num_batch_threads < 1:
            raise ValueError(
                "Invalid value for argument `num_batch_threads`. Expected an integer >= 1. "
                f"Received: num_batch_threads={num_batch_threads}"
            )
        self.max_batch_size = max_batch_size
        self.batch_timeout_micros = batch_timeout_micros
        self.num_batch_threads = num_batch_threads
        self._open: dict[tuple, _Batch] = {}
        self._full: list[_Batch] = []  # closed, waiting for a free thread
        self._active = 0
        self._tasks: set[asyncio.Task] = set()
        self.calls = 0  # model calls made, for tests and curiosity

    async def submit(self, key, inputs: Mapping[str, np.ndarray], run) -> dict:
        """Runs `await run(inputs)` as part of a batch; returns this request's outputs.

        Args:
            key: what must match for requests to share a call (e.g. the
                servable and the signature); input shapes are added to it.
            inputs: `{name: array}` with the batch on the first axis.
            run: `async run(inputs) -> {name: array}`.
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        rows = _batch_rows(inputs)
        if rows is None or rows >= self.max_batch_size:
            batch = _Batch(run, loop.time())
            batch.items.append((inputs, rows, future))
            self._full.append(batch)
            self._dispatch()
            return await future
        key = (key, tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(inputs.items())))
        batch = self._open.get(key)
        if batch is not None and batch.rows + rows > self.max_batch_size:
            self._close(key, batch)
            batch = None
        if batch is None:
            batch = _Batch(run, loop.time())
            self._open[key] = batch
            batch.timer = loop.call_later(self.batch_timeout_micros / 1e6, self._time_out, batch)
        batch.items.append((inputs, rows, future))
        batch.rows += rows
        if batch.rows >= self.max_batch_size:
            self._close(key, batch)
        self._dispatch()
        return await future

    def _close(self, key, batch: _Batch):
        del self._open[key]
        if batch.timer is not None:
            batch.timer.cancel()
        self._full.append(batch)

    def _time_out(self, batch: _Batch):
        batch.timed_out = True
        self._dispatch()

    def _dispatch(self):
        """Starts ready batches while threads are free: full ones first, then
        the oldest open batch past its timeout."""
        while self._active < self.num_batch_threads:
            if self._full:
                batch = self._full.pop(0)
            else:
                ready = [(b.opened, k) for k, b in self._open.items() if b.timed_out]
                if not ready:
                    return
                key = min(ready)[1]
                batch = self._open[key]
                self._close(key, batch)
                self._full.remove(batch)
            self._active += 1
            task = asyncio.ensure_future(self._execute(batch))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task):
        self._tasks.discard(task)
        self._active -= 1
        self._dispatch()

    async def _execute(self, batch: _Batch):
        items = [item for item in batch.items if not item[2].done()]
        if not items:
            return
        self.calls += 1
        if len(items) == 1:
            await self._run_alone(batch.run, items[0])
            return
        names = list(items[0][0])
        merged = {name: np.concatenate([inputs[name] for inputs, _, _ in items]) for name in names}
        try:
            outputs = await batch.run(merged)
            total = sum(rows for _, rows, _ in items)
            if any(np.ndim(v) == 0 or np.shape(v)[0] != total for v in outputs.values()):
                raise ValueError("an output's first axis is not the batch")
        except Exception:  # noqa: BLE001  (retried one by one below, where each gets its own error)
            for item in items:
                self.calls += 1
                await self._run_alone(batch.run, item)
            return
        start = 0
        for _, rows, future in items:
            if not future.done():
                future.set_result({name: value[start : start + rows] for name, value in outputs.items()})
            start += rows

    @staticmethod
    async def _run_alone(run, item):
        inputs, _, future = item
        try:
            result = await run(inputs)
        except Exception as error:  # noqa: BLE001  (handed to the request that caused it)
            if not future.done():
                future.set_exception(error)
            return
        if not future.done():
            future.set_result(result)


def _batch_rows(inputs: Mapping[str, np.ndarray]) -> int | None:
    sizes = {a.shape[0] if a.ndim else None for a in inputs.values()}
    if len(sizes) != 1 or None in sizes:
        return None
    return sizes.pop()


# === The REST API ===

# TF Serving's URL patterns (http_rest_api_util.cc), matched case-insensitively.
_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)


class _RestApi:
    """TF Serving's HttpRestApiHandler over a ModelManager."""

    def __init__(self, manager, num_threads, batcher, max_body_bytes, timeout_seconds, enable_cors):
        self.manager = manager
        self.num_threads = num_threads
        self._executor = None
        self.batcher = batcher
        self.max_body_bytes = max_body_bytes
        self.timeout_seconds = timeout_seconds
        self.enable_cors = enable_cors

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        # Made on first use and shut down with the app, so an app can be
        # served more than once.
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.num_threads, thread_name_prefix="kerasbert-serve"
            )
        return self._executor

    def shutdown(self):
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _headers(self) -> dict:
        if not self.enable_cors:
            return {}
        return {
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": "POST, GET",
            "Access-Control-Allow-Headers": "Content-Type",
        }

    def _json(self, text: str, status=200) -> Response:
        return Response(
            text.encode("utf-8"), status_code=status, media_type="application/json", headers=self._headers()
        )

    def _error(self, error: RestError) -> Response:
        return self._json(error_json(error.message), error.http_status)

    async def handle(self, request: Request) -> Response:
        raw_path = request.scope.get("raw_path") or request.url.path.encode("utf-8")
        path = raw_path.decode("latin-1").split("?", 1)[0]
        method = request.method
        if not _API_PATH.fullmatch(path):
            return self._error(_not_found(f"Not found: {method} {path}. The REST API is under /v1/."))
        if method == "OPTIONS":
            if re.search(r"https?://", request.headers.get("origin", "")):
                return Response(b"", status_code=200, headers=self._headers())
            return self._error(RestError("Origin header is missing in CORS preflight", "FAILED_PRECONDITION"))
        try:
            body = await self._read_body(request)
            return self._json(await self._process(method, path, body))
        except RestError as error:
            return self._error(error)
        except Exception as error:  # noqa: BLE001  (answered without a traceback; logged in full)
            log.exception("Internal error answering %s %s", method, path)
            return self._error(RestError(f"Internal error: {type(error).__name__}: {error}", "INTERNAL"))

    async def _read_body(self, request: Request) -> bytes:
        limit = self.max_body_bytes
        declared = request.headers.get("content-length", "")
        declared = int(declared) if declared.isdigit() else None
        too_large = declared is not None and declared > limit
        chunks, size = [], 0
        if not too_large or declared <= 4 * limit:
            # Read (and drop) an oversized body so the client, still sending
            # it, gets the 413 rather than a reset connection.
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    too_large = True
                    chunks = []
                elif not too_large:
                    chunks.append(chunk)
        if too_large:
            received = declared if declared is not None else size
            raise _PayloadTooLarge(received, limit)
        return b"".join(chunks)

    async def _process(self, method: str, path: str, body: bytes) -> str:
        if method == "POST":
            match = _PREDICTION_PATH.fullmatch(path)
            if match:
                name, version, label = _model_info(match)
                verb = match.group(4)
                # The verb matches case-insensitively but dispatches exactly, as in TF Serving.
                if verb == "predict":
                    return await self._predict(name, version, label, body)
                if verb == "classify":
                    return await self._classify(name, version, label, body)
                if verb == "regress":
                    return await self._regress(name, version, label, body)
        elif method == "GET":
            match = _STATUS_PATH.fullmatch(path)
            if match:
                name, version, label = _model_info(match)
                if not name:
                    raise _invalid("Missing model name in request.")
                if match.group(4) == "metadata":
                    return self._metadata(name, version, label)
                return self._status(name, version, label)
        raise _invalid(f"Malformed request: {method} {path}")

    def _status(self, name, version, label) -> str:
        states = self.manager.version_states(name, version, label)
        response = {
            "model_version_status": [
                {
                    "version": str(s.version),
                    "state": s.state,
                    "status": {"error_code": s.error_code, "error_message": s.error_message},
                }
                for s in states
            ]
        }
        # Laid out as protobuf's JSON printer does for TF Serving.
        return json.dumps(response, indent=1, ensure_ascii=False) + "\n"

    def _metadata(self, name, version, label) -> str:
        servable = self.manager.servable(name, version, label)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key in sorted(servable.signature_defs):
            signature_map.signature_def[key].CopyFrom(servable.signature_defs[key])
        model_spec = {"name": servable.name, "signature_name": "", "version": str(servable.version)}
        # TF Serving concatenates two protobuf JSON texts (http_rest_api_util.cc).
        return (
            "{\n"
            f'"model_spec":{json.dumps(model_spec, indent=1, ensure_ascii=False)}\n,\n'
            f'"metadata": {{"signature_def": {_proto_json(signature_map)}}}\n'
            "}\n"
        )

    async def _run(self, servable: Servable, key: str, inputs: dict) -> dict:
        loop = asyncio.get_running_loop()

        async def run(batch_inputs):
            return await loop.run_in_executor(self.executor, call_signature, servable, key, batch_inputs)

        if self.batcher is not None:
            call = self.batcher.submit((id(servable), key), inputs, run)
        else:
            call = run(inputs)
        try:
            return await asyncio.wait_for(call, self.timeout_seconds)
        except asyncio.TimeoutError:
            raise RestError(
                f"Deadline exceeded: the model took longer than {self.timeout_seconds * 1000:.0f} ms "
                "(--rest_api_timeout_in_ms)",
                "DEADLINE_EXCEEDED",
            ) from None

    async def _predict(self, name, version, label, body) -> str:
        document = _parse_json_object(body)
        signature_name = _signature_name(document)
        servable = self.manager.servable(name, version, label)
        key = signature_name or DEFAULT_SIGNATURE
        signature = servable.signature_defs.get(key)
        if signature is None:
            raise _invalid(f'Serving signature name: "{key}" not found in signature def')
        if not signature.inputs:
            raise _invalid("Failed to get input map for signature: ", signature_name or "DEFAULT")
        inputs, row_format = predict_inputs_from_json(document, signature.inputs)
        _check_input_shapes(inputs, signature.inputs, key)
        outputs = await self._run(servable, key, inputs)
        return predict_response_json(outputs, row_format)

    def _examples_signature(self, servable: Servable, signature_name: str, method: str):
        """GetClassificationSignatureDef / GetRegressionSignatureDef, without
        the method-name check (off by default in TF Serving)."""
        key = signature_name or DEFAULT_SIGNATURE
        signature = servable.signature_defs.get(key)
        if signature is None:
            raise _invalid(f"No signature was found with the name: {key}")
        if len(signature.inputs) != 1:
            raise _invalid("Expected one input Tensor.")
        if method == "classify":
            if len(signature.outputs) not in (1, 2):
                raise _invalid(f"Expected one or two output Tensors, found {len(signature.outputs)}")
            if "inputs" not in signature.inputs:
                raise _invalid(
                    f"No classification inputs found in SignatureDef: {text_format.MessageToString(signature)}"
                )
            if "classes" not in signature.outputs and "scores" not in signature.outputs:
                raise _invalid(
                    'Expected classification signature outputs to contain at least one of "classes" or '
                    f'"scores". Signature was: {text_format.MessageToString(signature)}'
                )
        else:
            if len(signature.outputs) != 1:
                raise _invalid("Expected one output Tensor.")
            if "inputs" not in signature.inputs:
                raise _invalid(
                    f"No regression inputs found in SignatureDef: {text_format.MessageToString(signature)}"
                )
            if "outputs" not in signature.outputs:
                raise _invalid(
                    f"No regression outputs found in SignatureDef: {text_format.MessageToString(signature)}"
                )
        return key

    async def _classify(self, name, version, label, body) -> str:
        document = _parse_json_object(body)
        signature_name = _signature_name(document)
        examples = examples_from_json(document, "classify")
        servable = self.manager.servable(name, version, label)
        key = self._examples_signature(servable, signature_name, "classify")
        outputs = await self._run(
            servable, key, {"inputs": _array(examples, [len(examples)], types_pb2.DT_STRING)}
        )
        classes, scores = outputs.get("classes"), outputs.get("scores")
        for output, dtype_ok, dtype_name in (
            (classes, lambda a: a.dtype == object, "DT_STRING"),
            (scores, lambda a: a.dtype == np.float32, "DT_FLOAT"),
        ):
            if output is None:
                continue
            if output.ndim != 2:
                raise _invalid(
                    f"Expected Tensor shape: [batch_size num_classes] but got {_shape_text(output.shape)}"
                )
            if not dtype_ok(output):
                kind = "classes" if output is classes else "scores"
                raise _invalid(f"Expected {kind} Tensor of {dtype_name}. Got: {output.dtype}")
            if output.shape[0] != len(examples):
                kind = "classes" if output is classes else "scores"
                raise _invalid(
                    f"Expected {kind} output batch size of {len(examples)}. Got: {output.shape[0]}"
                )
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise _invalid(
                f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
            )
        num_classes = (classes if classes is not None else scores).shape[1]
        results = []
        for i in range(len(examples)):
            row = []
            for c in range(num_classes):
                text = classes[i, c].decode("utf-8", "replace") if classes is not None else ""
                row.append((text, float(scores[i, c]) if scores is not None else 0.0))
            results.append(row)
        return classify_response_json(results)

    async def _regress(self, name, version, label, body) -> str:
        document = _parse_json_object(body)
        signature_name = _signature_name(document)
        examples = examples_from_json(document, "regress")
        servable = self.manager.servable(name, version, label)
        key = self._examples_signature(servable, signature_name, "regress")
        outputs = await self._run(
            servable, key, {"inputs": _array(examples, [len(examples)], types_pb2.DT_STRING)}
        )
        values = outputs["outputs"]
        if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
            raise _invalid(
                f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {_shape_text(values.shape)}"
            )
        if values.shape[0] != len(examples):
            raise _invalid(
                f"Input batch size did not match output batch size: {len(examples)} vs. {values.shape[0]}"
            )
        return regress_response_json([float(v) for v in values.reshape(-1)])


class _PayloadTooLarge(RestError):
    def __init__(self, received, limit):
        super().__init__(
            f"Request body of {received} bytes is larger than this server's limit of {limit} bytes; "
            "start it with a larger --max_body_bytes to accept it.",
            "RESOURCE_EXHAUSTED",
        )

    @property
    def http_status(self) -> int:
        return 413


def _model_info(match) -> tuple[str, int | None, str | None]:
    name = urllib.parse.unquote(match.group(1) or "")
    version = match.group(2)
    if version is not None:
        if int(version) >= 2**63:
            raise _invalid(f"Failed to convert version: {version} to numeric.")
        version = int(version)
    label = urllib.parse.unquote(match.group(3)) if match.group(3) else None
    return name, version, label


def _page_html(model_names: Sequence[str]) -> str:
    template = (
        importlib.resources.files("kerasbert").joinpath("static/index.html").read_text(encoding="utf-8")
    )
    names = json.dumps(list(model_names)).replace("<", "\\u003c")
    return template.replace("__KERASBERT_MODELS__", names)


def create_app(
    manager: ModelManager,
    *,
    enable_batching=False,
    max_batch_size=32,
    batch_timeout_micros=1000,
    num_batch_threads=None,
    max_body_bytes=32 * 1024 * 1024,
    rest_api_timeout_in_ms=30000,
    num_threads=None,
    enable_cors=False,
) -> Starlette:
    """The ASGI app: TF Serving's REST API under `/v1/`, a try-it page at `/`.

    Model calls run in a thread pool, so requests are served concurrently.

    Args:
        manager: the models to serve; the app doesn't start or stop it.
        enable_batching: merge concurrent calls of a signature (see
            `BatchScheduler`).
        max_batch_size: with batching, the most rows in one model call.
        batch_timeout_micros: with batching, how long a batch waits for more.
        num_batch_threads: with batching, batches run at once; CPU count by default.
        max_body_bytes: larger request bodies get 413.
        rest_api_timeout_in_ms: a model call taking longer gets 504; 0 or
            less waits forever.
        num_threads: threads for model calls; 4 per CPU by default, like
            TF Serving's REST threads.
        enable_cors: add CORS headers to API answers.

    Example:

    >>> app = create_app(manager)
    >>> uvicorn.run(app, port=8501)
    """
    if max_body_bytes < 1:
        raise ValueError(
            "Invalid value for argument `max_body_bytes`. Expected an integer >= 1. "
            f"Received: max_body_bytes={max_body_bytes}"
        )
    num_threads = num_threads or 4 * (os.cpu_count() or 1)
    batcher = (
        BatchScheduler(max_batch_size, batch_timeout_micros, num_batch_threads) if enable_batching else None
    )
    api = _RestApi(
        manager,
        num_threads,
        batcher,
        max_body_bytes,
        rest_api_timeout_in_ms / 1000 if rest_api_timeout_in_ms > 0 else None,
        enable_cors,
    )

    async def page(request: Request) -> Response:
        return HTMLResponse(_page_html(manager.model_names))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        api.shutdown()

    app = Starlette(
        routes=[
            Route("/", page, methods=["GET"]),
            Route("/{path:path}", api.handle, methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
        ],
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    return app


# === Running the server ===


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _uvicorn_server(app) -> uvicorn.Server:
    # log_config=None: uvicorn's own dictConfig would close every logging
    # handler of the host process (a notebook's, pytest's); its loggers go
    # through whatever logging the process has instead.
    config = uvicorn.Config(
        app, log_config=None, log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=30
    )
    return uvicorn.Server(config)


@contextlib.contextmanager
def background_server(app, host="127.0.0.1", port=0) -> Iterator[str]:
    """Serves `app` from a thread of this process (tests, notebooks); yields its URL.

    Example:

    >>> with background_server(create_app(manager)) as url:
    ...     httpx.get(f"{url}/v1/models/quickstart").json()
    """
    sock = _listening_socket(host, port)
    server = _uvicorn_server(app)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="kerasbert-serve", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server.started:
            raise RuntimeError("The background server did not start")
        bound_host, bound_port = sock.getsockname()[:2]
        yield f"http://{_url_host(bound_host)}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class ServerProcess:
    """`python -m kerasbert.serve ARGS` in a subprocess, on a free loopback port.

    It waits until the server answers (its models loaded), and `stop()` (or
    leaving the `with` block) terminates it. The server's output goes to
    `log_path` (a temporary file by default).

    Args:
        args: flags for `kerasbert.serve`, e.g. `["--model_name", "tiny",
            "--model_base_path", "/tmp/tiny"]`.
        startup_timeout: seconds to wait for it to serve.
        env: the subprocess's environment; this one by default.
        log_path: where its output goes.

    Example:

    >>> with ServerProcess(["--model_name", "quickstart", "--model_base_path", "saved_models/quickstart"]) as server:
    ...     ServingClient(server.url, "quickstart").predict(["What a superb film."])
    """

    def __init__(self, args: Sequence[str], *, startup_timeout=300.0, env=None, log_path=None):
        self.args = [str(a) for a in args]
        self.startup_timeout = startup_timeout
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.env["PYTHONUNBUFFERED"] = "1"
        self.log_path = Path(log_path) if log_path else None
        self.url = None
        self._process = None
        self._log_file = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def start(self) -> "ServerProcess":
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="kerasbert-serve-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        self._log_file = open(self.log_path, "wb")
        command = [
            sys.executable,
            "-m",
            "kerasbert.serve",
            "--host",
            "127.0.0.1",
            "--rest_api_port",
            "0",
            *self.args,
        ]
        self._process = subprocess.Popen(
            command, stdout=self._log_file, stderr=subprocess.STDOUT, env=self.env
        )
        deadline = time.monotonic() + self.startup_timeout
        pattern = re.compile(re.escape(READY_MESSAGE) + r"(\S+):(\d+)")
        while True:
            match = pattern.search(self.log_text())
            if match:
                host = match.group(1).strip("[]")
                self.url = f"http://{_url_host(host)}:{match.group(2)}"
                return self
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise RuntimeError(
                    f"kerasbert.serve exited with status {code} before serving:\n{self.log_text()[-4000:]}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"kerasbert.serve did not serve within {self.startup_timeout:.0f} s:\n{self.log_text()[-4000:]}"
                )
            time.sleep(0.1)

    def stop(self, timeout=20.0):
        """Terminates the server (SIGTERM, then SIGKILL after `timeout` seconds)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


# === Command line ===


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, received {text!r}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kerasbert.serve",
        description=(
            "A development server for SavedModels with TF Serving's REST API and flags "
            "(tensorflow_model_server). Production stays TF Serving."
        ),
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("--rest_api_port", type=int, default=8501, help="port of the REST API (0: any free port) [8501]")
    add("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface [127.0.0.1]")
    add(
        "--model_name",
        default="default",
        help="name of the model in URLs (ignored with --model_config_file) [default]",
    )
    add(
        "--model_base_path",
        help="directory of the model's version directories (ignored with --model_config_file)",
    )
    add("--model_config_file", help="a ModelServerConfig in text format, for several models")
    add(
        "--file_system_poll_wait_seconds",
        type=int,
        default=1,
        help="seconds between looks for new or removed versions; 0 looks once, at start [1]",
    )
    add(
        "--rest_api_timeout_in_ms",
        type=int,
        default=30000,
        help="answer 504 when a model call takes longer [30000]",
    )
    add("--rest_api_num_threads", type=int, default=0, help="threads for model calls; 0: 4 per CPU [0]")
    add(
        "--rest_api_enable_cors_support",
        type=_parse_bool,
        nargs="?",
        const=True,
        default=False,
        help="add CORS headers",
    )
    add(
        "--enable_batching",
        type=_parse_bool,
        nargs="?",
        const=True,
        default=False,
        help="merge concurrent requests",
    )
    add("--max_batch_size", type=int, default=32, help="with batching, the most rows in one model call [32]")
    add(
        "--batch_timeout_micros",
        type=int,
        default=1000,
        help="with batching, how long a batch waits for more [1000]",
    )
    add(
        "--num_batch_threads",
        type=int,
        default=0,
        help="with batching, batches run at once; 0: the CPU count [0]",
    )
    add(
        "--max_body_bytes",
        type=int,
        default=32 * 1024 * 1024,
        help="answer 413 to larger request bodies [32 MiB]",
    )
    return parser


def _model_configs(args) -> list[ModelConfig]:
    if args.model_config_file:
        return read_model_config_file(args.model_config_file)
    if not args.model_base_path:
        raise ValueError(
            "Give --model_base_path (with --model_name), or --model_config_file. "
            "Example: --model_name quickstart --model_base_path saved_models/quickstart"
        )
    return [ModelConfig(args.model_name, Path(args.model_base_path).expanduser().absolute())]


def _check_flags(args):
    checks = [
        ("rest_api_port", 0 <= args.rest_api_port <= 65535, "an integer from 0 to 65535"),
        ("file_system_poll_wait_seconds", args.file_system_poll_wait_seconds >= 0, "an integer >= 0"),
        ("rest_api_num_threads", args.rest_api_num_threads >= 0, "an integer >= 0"),
        ("max_batch_size", args.max_batch_size >= 1, "an integer >= 1"),
        ("batch_timeout_micros", args.batch_timeout_micros >= 0, "an integer >= 0"),
        ("num_batch_threads", args.num_batch_threads >= 0, "an integer >= 0"),
        ("max_body_bytes", args.max_body_bytes >= 1, "an integer >= 1"),
    ]
    for flag, ok, expected in checks:
        if not ok:
            raise ValueError(
                f"Invalid value for flag `--{flag}`. Expected {expected}. Received: --{flag}={getattr(args, flag)}"
            )


def main(argv=None) -> int:
    """Runs the server until interrupted; 2 for bad flags or config."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        _check_flags(args)
        configs = _model_configs(args)
        manager = ModelManager(configs, poll_wait_seconds=args.file_system_poll_wait_seconds)
        app = create_app(
            manager,
            enable_batching=args.enable_batching,
            max_batch_size=args.max_batch_size,
            batch_timeout_micros=args.batch_timeout_micros,
            num_batch_threads=args.num_batch_threads or None,
            max_body_bytes=args.max_body_bytes,
            rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
            num_threads=args.rest_api_num_threads or None,
            enable_cors=args.rest_api_enable_cors_support,
        )
        sock = _listening_socket(args.host, args.rest_api_port)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    manager.poll()
    manager.start()
    host, port = sock.getsockname()[:2]
    log.info("%s%s:%d ...", READY_MESSAGE, _url_host(host), port)
    log.info(
        "Development server: production stays TF Serving. Try the models at http://%s:%d/",
        _url_host(host),
        port,
    )
    if importlib.util.find_spec("httptools") is None or importlib.util.find_spec("uvloop") is None:
        log.info(
            "Serving with uvicorn's pure-Python HTTP stack; `pip install httptools uvloop` roughly doubles throughput"
        )
    try:
        _uvicorn_server(app).run(sockets=[sock])
    finally:
        manager.stop()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
