"""JSON request bodies to tensors and `tf.train.Example`s, by `json_tensor.cc`'s rules and with its messages.

Reference: TF Serving's `json_tensor.cc` and `http_rest_api_handler.cc` (https://github.com/tensorflow/serving).
"""

from __future__ import annotations

import json
import re
from typing import Mapping

from kerasbert.serving.rest.errors import RestError, invalid_argument
from kerasbert.serving.rest.json_text import debug_string
from kerasbert.serving.rest.tensors import (
    dense_shape,
    dense_values,
    fill_values,
    is_b64_object,
    typed_array,
)

# === Errors ===


# === JSON text as TF Serving writes it ===


# === JSON requests to tensors (json_tensor.cc) ===


def parse_json_object(body: bytes) -> dict:
    """The request body as a JSON object, or TF Serving's parse error.

    Parsed as TF Serving's rapidjson parses it: the first of repeated keys
    counts (`FindMember`), integers beyond 64 bits are doubles, and a number
    too big for a double is refused. rapidjson itself has no nesting limit;
    this server refuses documents nested deeper than `MAX_JSON_DEPTH`, which
    no request can need (a tensor has at most 254 dimensions).
    """
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        # RFC 8259 JSON is UTF-8; TF Serving's rapidjson passes other bytes
        # through unchecked, this server refuses them with rapidjson's text.
        raise invalid_argument(
            f"JSON Parse error: Invalid encoding in string. at offset: {error.start}"
        ) from None
    start = len(text) - len(text.lstrip(" \t\n\r"))
    if start == len(text):
        raise invalid_argument(f"JSON Parse error: The document is empty. at offset: {len(body)}")
    too_deep = _too_deep_offset(text, start)
    decoder = json.JSONDecoder(
        object_pairs_hook=_first_member_wins,
        parse_int=_rapidjson_integer,
        parse_float=_rapidjson_double,
    )
    try:
        # raw_decode stops after the first value, as TF Serving's parser does
        # (kParseStopWhenDoneFlag): trailing text is ignored.
        document, _ = decoder.raw_decode(text[:too_deep], start)
    except json.JSONDecodeError as error:
        if too_deep is not None and error.pos >= too_deep:
            raise invalid_argument(
                f"JSON Parse error: Arrays and objects nested more than {MAX_JSON_DEPTH} deep. "
                f"at offset: {_byte_offset(text, too_deep)}"
            ) from None
        raise invalid_argument(
            f"JSON Parse error: {_rapidjson_parse_error(error, text)} "
            f"at offset: {_byte_offset(text, error.pos)}"
        ) from None
    except _NumberTooBig as error:
        raise invalid_argument(
            "JSON Parse error: Number too big to be stored in double. "
            f"at offset: {_byte_offset(text, _number_offset(text, error.args[0]))}"
        ) from None
    if not isinstance(document, dict):
        raise invalid_argument("JSON Value: ", debug_string(document), " Is not object")
    return document


# The deepest nesting this server parses. Python's JSON scanner and the tensor
# conversion recurse, rapidjson (kParseIterativeFlag) does not; well below
# Python's recursion limit, and well above TensorShape's 254 dimensions.
MAX_JSON_DEPTH = 512

_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)

_STRING_OR_NUMBER = re.compile(
    r'"(?:[^"\\]|\\.)*"|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?', re.DOTALL
)


def _too_deep_offset(text: str, start: int) -> int | None:
    """Where the text opens an array or object deeper than MAX_JSON_DEPTH, if it does."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return None
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text, start):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return match.start()
        elif token in "]}":
            depth -= 1
            if depth <= 0:
                return None  # the document ends here (kParseStopWhenDoneFlag)
    return None


def _byte_offset(text: str, position: int) -> int:
    return len(text[:position].encode("utf-8", "surrogatepass"))


def _first_member_wins(pairs: list) -> dict:
    """An object's members; of repeated names the first, as rapidjson's FindMember finds."""
    members = dict(pairs)
    if len(members) < len(pairs):
        members = {}
        for name, value in pairs:
            members.setdefault(name, value)
    return members


class _NumberTooBig(Exception):
    pass


_UINT64_MAX = 2**64 - 1
_DOUBLE_MAX_OVER_10 = 1.7976931348623157e307
_DOUBLE_MAX = 1.7976931348623157e308


def _integer_part(digits: str, negative: bool):
    """rapidjson's ParseNumber on an integer part: an int while it fits in 64
    bits, then a double, refused once it nears the largest double."""
    if len(digits) < 19:
        return int(digits)
    limit = 2**63 if negative else _UINT64_MAX
    value = 0
    for index, digit in enumerate(digits):
        if value * 10 + int(digit) > limit:
            double = float(value)
            for digit in digits[index:]:
                if double >= _DOUBLE_MAX_OVER_10:
                    raise _NumberTooBig(None)
                double = double * 10 + int(digit)
            return double
        value = value * 10 + int(digit)
    return value


def _rapidjson_integer(text: str):
    """A JSON integer as rapidjson reads it: int64 or uint64, else a double."""
    negative = text.startswith("-")
    try:
        value = _integer_part(text[1:] if negative else text, negative)
    except _NumberTooBig:
        raise _NumberTooBig(text) from None
    return -value if negative else value


def _rapidjson_double(text: str) -> float:
    """A JSON number with a fraction or an exponent, refused as rapidjson
    refuses it: an integer part too big, a positive exponent above 308 plus
    the fraction digits it keeps, or a value above the largest double."""
    mantissa, _, exponent = text.lower().partition("e")
    negative = mantissa.startswith("-")
    whole, _, fraction = mantissa.lstrip("-").partition(".")
    try:
        value = _integer_part(whole, negative)
    except _NumberTooBig:
        raise _NumberTooBig(text) from None
    if exponent and not exponent.startswith("-"):
        # Fraction digits kept in the significand (2^53 - 1, then 17 digits).
        kept = 0
        if isinstance(value, int):
            significant = max(len(whole) - 1, 0)
            significand = value
            for digit in fraction:
                if significand > 2**53 - 1 and significant >= 17:
                    break
                if significand <= 2**53 - 1:
                    significand = significand * 10 + int(digit)
                    significant += significand != 0
                else:
                    significant += 1
                kept += 1
        digits = exponent.lstrip("+").lstrip("0")
        if len(digits) > 9 or int(digits or "0") > 308 + kept:
            raise _NumberTooBig(text)
    value = float(text)
    if abs(value) > _DOUBLE_MAX:
        raise _NumberTooBig(text)
    return value


def _number_offset(text: str, number: str) -> int:
    """Where the first number written as `number` starts, outside strings."""
    for match in _STRING_OR_NUMBER.finditer(text):
        if match.group() == number:
            return match.start()
    return 0


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


def requested_signature_name(document: dict) -> str:
    """The request's optional `signature_name` (FillSignature)."""
    name = document.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(
            "JSON Value: ",
            debug_string(document),
            " not formatted correctly. 'signature_name' key must be a string value.",
        )
    return name


def predict_inputs_from_json(
    document: dict, input_infos: Mapping, signature_key: str = "serving_default"
) -> tuple[dict, bool]:
    """A predict request's tensors, by TF Serving's row and columnar rules.

    Their shapes are checked (`check_input_shapes`) before any array is made.

    Args:
        document: the request, parsed.
        input_infos: the signature's inputs, `{name: TensorInfo}`.
        signature_key: the signature's name, for messages.

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
        raise invalid_argument(
            "JSON Value: ",
            debug_string(document),
            " Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
        )
    if has_instances:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise invalid_argument(
                "JSON Value: ", debug_string(document), " Expecting 'instances' to be an list/array"
            )
        if not instances:
            raise invalid_argument(
                "JSON Value: ", debug_string(document), " No values in 'instances' array"
            )
        tensors, row_format = _inputs_from_instances(instances, input_infos), True
    elif has_inputs:
        tensors, row_format = _inputs_from_columns(document["inputs"], input_infos), False
    else:
        raise invalid_argument("Missing 'inputs' or 'instances' key")
    check_input_shapes(
        {name: shape for name, (_, shape) in tensors.items()}, input_infos, signature_key
    )
    arrays = {
        name: typed_array(values, shape, input_infos[name].dtype)
        for name, (values, shape) in tensors.items()
    }
    return arrays, row_format


def _inputs_from_instances(instances: list, input_infos: Mapping) -> dict:
    """FillTensorMapFromInstancesList: `{name: (values, shape)}`."""
    if not isinstance(instances[0], dict) and len(input_infos) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple "
            "input tensors required as per tensorinfo_map"
        )

    def is_element_object(value):
        return isinstance(value, dict) and not is_b64_object(value)

    elements_are_objects = is_element_object(instances[0])
    input_names = sorted(input_infos)
    shapes, sizes, columns = {}, {}, {name: [] for name in input_names}

    def add_item(item, name):
        if name not in input_infos:
            raise invalid_argument("JSON object: does not have named input: ", name)
        dtype = input_infos[name].dtype
        shape = dense_shape(item)
        values = []
        fill_values(item, 0, shape, dtype, values)
        if name not in sizes:
            sizes[name], shapes[name] = len(values), shape
        elif sizes[name] != len(values):
            raise invalid_argument(
                "Expecting tensor size: ", sizes[name], " but got: ", len(values)
            )
        elif shapes[name] != shape:
            raise invalid_argument(
                "Expecting shape ", shape_text(shapes[name]), " but got: ", shape_text(shape)
            )
        columns[name].extend(values)

    for index, element in enumerate(instances):
        if elements_are_objects:
            if not is_element_object(element):
                raise invalid_argument(
                    "Expecting object but got list at item ", index, " of input list"
                )
            for name, item in element.items():
                try:
                    add_item(item, name)
                except RestError as error:
                    raise invalid_argument(
                        "Failed to process element: ",
                        index,
                        " key: ",
                        name,
                        " of 'instances' list. Error: ",
                        error,
                    ) from None
            if set(element) != set(input_names):
                raise invalid_argument(
                    "Failed to process element: ",
                    index,
                    " of 'instances' list. JSON object: ",
                    debug_string(element),
                    " keys must be equal to: ",
                    ",".join(input_names),
                )
        else:
            if is_element_object(element):
                raise invalid_argument(
                    "Expecting value/list but got object at item ", index, " of input list"
                )
            try:
                add_item(element, input_names[0])
            except RestError as error:
                raise invalid_argument(
                    "Failed to process element: ", index, " of 'instances' list. Error: ", error
                ) from None
    return {
        name: (columns[name], [len(instances), *shapes[name]]) for name in columns if name in shapes
    }


def _inputs_from_columns(value, input_infos: Mapping) -> dict:
    """FillTensorMapFromInputsMap: `{name: (values, shape)}`."""
    if not isinstance(value, dict) or is_b64_object(value):
        if len(input_infos) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple "
                "input tensors required as per tensorinfo_map"
            )
        name = next(iter(input_infos))
        return {name: dense_values(value, input_infos[name].dtype)}
    inputs = {}
    for name in sorted(input_infos):
        if name not in value:
            raise invalid_argument("Missing named input: ", name, " in 'inputs' object.")
        inputs[name] = dense_values(value[name], input_infos[name].dtype)
    return inputs


def shape_text(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


# TensorShape::kMaxDimensions: TF Serving can't make a tensor of more.
MAX_TENSOR_RANK = 254

# numpy's NPY_MAXDIMS: this server can't make an array of more.
MAX_ARRAY_RANK = 64


def check_input_shapes(shapes: Mapping, input_infos: Mapping, signature_key: str):
    """Refuses tensor shapes the signature can't take, before running it.

    Args:
        shapes: `{input name: shape}`, a shape being a sequence of sizes.
        input_infos: the signature's inputs, `{name: TensorInfo}`.
        signature_key: the signature's name, for messages.

    Raises:
        RestError: a shape of more dimensions than a tensor can have (TF
            Serving's "tensor parsing error"), or one the signature doesn't take.
    """
    for name in sorted(shapes):
        if len(shapes[name]) > MAX_TENSOR_RANK:
            raise invalid_argument("tensor parsing error: ", name)
    for name, shape in shapes.items():
        shape_proto = input_infos[name].tensor_shape
        if shape_proto.unknown_rank:
            if len(shape) > MAX_ARRAY_RANK:
                raise invalid_argument(
                    f"Input `{name}` of signature `{signature_key}` has {len(shape)} dimensions; "
                    f"this server takes at most {MAX_ARRAY_RANK}."
                )
            continue
        expected = [d.size for d in shape_proto.dim]
        if len(expected) != len(shape) or any(e >= 0 and e != s for e, s in zip(expected, shape)):
            raise invalid_argument(
                f"Input `{name}` of signature `{signature_key}` has shape "
                f"{shape_text(shape)}, expected {shape_text(expected)} (-1 is any size)."
            )


# === Examples for classify and regress ===


# === Tensors to JSON responses ===
