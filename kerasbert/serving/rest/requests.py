"""JSON request bodies to tensors and `tf.train.Example`s, by `json_tensor.cc`'s rules and with its messages.

Reference: TF Serving's `json_tensor.cc` and `http_rest_api_handler.cc` (https://github.com/tensorflow/serving).
"""

from __future__ import annotations

import json
from typing import Mapping

from kerasbert.serving.rest.errors import RestError, invalid_argument
from kerasbert.serving.rest.json_text import debug_string
from kerasbert.serving.rest.tensors import (
    dense_shape,
    fill_values,
    is_b64_object,
    tensor_from_json,
    typed_array,
)

# === Errors ===


# === JSON text as TF Serving writes it ===


# === JSON requests to tensors (json_tensor.cc) ===


def parse_json_object(body: bytes) -> dict:
    """The request body as a JSON object, or TF Serving's parse error."""
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
    try:
        # raw_decode stops after the first value, as TF Serving's parser does
        # (kParseStopWhenDoneFlag): trailing text is ignored.
        document, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as error:
        offset = len(text[: error.pos].encode("utf-8"))
        raise invalid_argument(
            f"JSON Parse error: {_rapidjson_parse_error(error, text)} at offset: {offset}"
        ) from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: the document is nested too deeply") from None
    if not isinstance(document, dict):
        raise invalid_argument("JSON Value: ", debug_string(document), " Is not object")
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
        return _inputs_from_instances(instances, input_infos), True
    if has_inputs:
        return _inputs_from_columns(document["inputs"], input_infos), False
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _inputs_from_instances(instances: list, input_infos: Mapping) -> dict:
    """FillTensorMapFromInstancesList."""
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
        name: typed_array(columns[name], [len(instances), *shapes[name]], input_infos[name].dtype)
        for name in columns
        if name in shapes
    }


def _inputs_from_columns(value, input_infos: Mapping) -> dict:
    """FillTensorMapFromInputsMap."""
    if not isinstance(value, dict) or is_b64_object(value):
        if len(input_infos) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple "
                "input tensors required as per tensorinfo_map"
            )
        name = next(iter(input_infos))
        return {name: tensor_from_json(value, input_infos[name].dtype)}
    inputs = {}
    for name in sorted(input_infos):
        if name not in value:
            raise invalid_argument("Missing named input: ", name, " in 'inputs' object.")
        inputs[name] = tensor_from_json(value[name], input_infos[name].dtype)
    return inputs


def shape_text(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def check_input_shapes(inputs: Mapping, input_infos: Mapping, signature_key: str):
    """Refuses tensors whose shape the signature can't take, before running it."""
    for name, array in inputs.items():
        shape_proto = input_infos[name].tensor_shape
        if shape_proto.unknown_rank:
            continue
        expected = [d.size for d in shape_proto.dim]
        if len(expected) != array.ndim or any(
            e >= 0 and e != s for e, s in zip(expected, array.shape)
        ):
            raise invalid_argument(
                f"Input `{name}` of signature `{signature_key}` has shape "
                f"{shape_text(array.shape)}, expected {shape_text(expected)} (-1 is any size)."
            )


# === Examples for classify and regress ===


# === Tensors to JSON responses ===
