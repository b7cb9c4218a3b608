"""Classify and regress request bodies to serialized `tf.train.Example`s, as `json_tensor.cc` reads them.

Reference: TF Serving's `json_tensor.cc` (https://github.com/tensorflow/serving).
"""

from __future__ import annotations

from tensorflow.core.example import example_pb2, feature_pb2

from kerasbert.serving.rest.errors import invalid_argument
from kerasbert.serving.rest.json_text import debug_string, json_type
from kerasbert.serving.rest.tensors import decode_b64, is_b64_object

_FEATURE_KIND_NAMES = {
    "bytes_list": "bytes",
    "float_list": "float",
    "int64_list": "int64",
    None: "UNKNOWN",
}


def _add_feature_value(value, name: str, feature):
    """AddValueToFeature: one JSON value into a tf.train.Feature."""
    kind = feature.WhichOneof("kind")

    def check(expected):
        if kind not in (None, expected):
            raise invalid_argument(
                "Unexpected element type in feature: ",
                name,
                " expecting type: ",
                _FEATURE_KIND_NAMES[kind],
            )

    if value is None or isinstance(value, list):
        raise invalid_argument(
            "Feature: ", name, " has element with unexpected JSON type: ", json_type(value)
        )
    if isinstance(value, bool):
        check("int64_list")
        feature.int64_list.value.append(int(value))
    elif isinstance(value, dict):
        if not is_b64_object(value):
            raise invalid_argument(
                "Feature: ", name, " has element with unexpected JSON type: ", json_type(value)
            )
        check("bytes_list")
        feature.bytes_list.value.append(decode_b64(value))
    elif isinstance(value, str):
        check("bytes_list")
        try:
            feature.bytes_list.value.append(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise invalid_argument(
                "JSON Parse error: The surrogate pair in string is invalid."
            ) from None
    elif isinstance(value, float) or value >= 2**64:
        check("float_list")
        feature.float_list.value.append(float(value))
    else:
        check("int64_list")
        if value >= 2**63 or value < -(2**63):
            raise invalid_argument(
                "Feature: ", name, " has uint64_t element. Only int64_t is supported."
            )
        feature.int64_list.value.append(value)


def _example_from_json(value) -> example_pb2.Example:
    if not isinstance(value, dict):
        raise invalid_argument("Example must be JSON object but got JSON ", json_type(value))
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
        raise invalid_argument(
            "JSON Value: ",
            debug_string(document),
            " When method is ",
            method,
            ", key 'examples' is expected and was not found",
        )
    examples = document["examples"]
    if not isinstance(examples, list):
        raise invalid_argument(
            "JSON Value: ",
            debug_string(document),
            " Expecting 'examples' value to be an list/array",
        )
    if not examples:
        raise invalid_argument(
            "JSON Value: ", debug_string(document), " 'examples' value is an empty array"
        )
    return [context + _example_from_json(value).SerializeToString() for value in examples]
