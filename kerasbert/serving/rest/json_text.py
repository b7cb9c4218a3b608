"""JSON text exactly as TF Serving writes it: rapidjson's `PrettyWriter`, its doubles, its escapes.

Example:

>>> print(error_json("Servable not found for request: Latest(quickstart)"))
{
    "error": "Servable not found for request: Latest(quickstart)"
}

Reference: TF Serving's `json_tensor.cc` (https://github.com/tensorflow/serving).
"""

from __future__ import annotations

import contextlib
import decimal
import json
import math
import re

import numpy as np
from google.protobuf import json_format


class LimitReached(Exception):
    pass


class PrettyWriter:
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
            raise LimitReached

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
        self.raw(quote(value))

    key = string

    def start_object(self):
        self._open("{", is_array=False)

    def end_object(self):
        self._close("}")

    def start_array(self):
        self._open("[", is_array=True)

    def end_array(self):
        self._close("]")

    def _open(self, bracket, is_array):
        self._check_limit()
        self._write(self._prefix() + bracket)
        self._levels.append([is_array, 0])

    def _close(self, bracket):
        self._check_limit()
        is_array, count = self._levels.pop()
        newline = count and not (is_array and self.single_line_arrays)
        self._write(("\n" + self._INDENT * len(self._levels) if newline else "") + bracket)


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')


def quote(value: str) -> str:
    """A JSON string literal escaped as rapidjson does (UTF-8 kept, not \\u-escaped)."""
    return (
        '"'
        + _NEEDS_ESCAPE.sub(lambda m: _ESCAPES.get(m.group(), "\\u%04X" % ord(m.group())), value)
        + '"'
    )


def rapidjson_double(value: float) -> str:
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


def write_json_value(writer: PrettyWriter, value):
    if isinstance(value, dict):
        writer.start_object()
        for key, item in value.items():
            writer.key(str(key))
            write_json_value(writer, item)
        writer.end_object()
    elif isinstance(value, list):
        writer.start_array()
        for item in value:
            write_json_value(writer, item)
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
        writer.raw(rapidjson_double(float(value)))


def debug_string(value) -> str:
    """A JSON value as TF Serving quotes it in errors: at most ~256 characters."""
    writer = PrettyWriter(limit=256)
    writer.single_line_arrays = True
    with contextlib.suppress(LimitReached):
        write_json_value(writer, value)
    return writer.text()


def json_type(value) -> str:
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


def decimal_text(value: float, single_precision: bool) -> str:
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
    writer = PrettyWriter()
    writer.start_object()
    writer.key("error")
    writer.string(message)
    writer.end_object()
    return writer.text()


def proto_json(message) -> str:
    """A message as protobuf's JSON printer writes it for TF Serving (add_whitespace)."""
    as_dict = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return json.dumps(as_dict, indent=1, ensure_ascii=False) + "\n"
