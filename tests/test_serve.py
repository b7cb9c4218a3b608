"""Unit tests of kerasbert's server (`kerasbert.serve`, `rest_json`, `model_manager`,
`batching`): TF Serving's JSON rules, versions, batching, flags.

No server and no trained model here: the JSON conversions are checked
against the texts TF Serving's json_tensor.cc writes, and the version logic
runs on a fake loader.
"""

import ast
import asyncio
import base64
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from kerasbert import serve
from kerasbert.exporting.exporter import export_run_dir
from kerasbert.serving.app import create_app
from kerasbert.serving.batching import BatchScheduler
from kerasbert.serving.model_config import ServedModelConfig, VersionPolicy, read_model_config_file
from kerasbert.serving.model_manager import ModelManager, list_versions
from kerasbert.serving.rest.errors import RestError
from kerasbert.serving.rest.examples import examples_from_json
from kerasbert.serving.rest.json_text import (
    debug_string,
    decimal_text,
    error_json,
    rapidjson_double,
)
from kerasbert.serving.rest.requests import (
    check_input_shapes,
    parse_json_object,
    predict_inputs_from_json,
)
from kerasbert.serving.rest.responses import classify_response_json, predict_response_json
from kerasbert.serving.servables import Servable
from tests.support.servers import background_server

REPO = Path(__file__).resolve().parents[1]


def tensor_info(dtype, *dims):
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )
    return meta_graph_pb2.TensorInfo(dtype=dtype, tensor_shape=shape)


TEXT = {"text": tensor_info(types_pb2.DT_STRING, -1)}
TWO_INPUTS = {"a": tensor_info(types_pb2.DT_INT32, -1), "b": tensor_info(types_pb2.DT_STRING, -1)}


def error_of(function, *args):
    with pytest.raises(RestError) as info:
        function(*args)
    return info.value.message


# === The serving side stays apart from training ===

TRAINING_MODULES = [
    "kerasbert." + m
    for m in ("config", "data", "models", "training", "exporting", "evaluation", "train", "export")
]
# What the server and its client may import of kerasbert: the serving
# package and the shared plumbing of the command lines.
SERVING_SIDE = ("kerasbert.serving", "kerasbert.serve", "kerasbert.client", "kerasbert.cli")
SERVING_FILES = [
    REPO / "kerasbert" / "serve.py",
    REPO / "kerasbert" / "client.py",
    *sorted((REPO / "kerasbert" / "serving").rglob("*.py")),
]


def test_serve_and_client_import_no_training_code():
    """TF 2.21 itself imports parts of Keras when it is installed (tensorflow/
    __init__.py eagerly imports keras.src.optimizers, and tensorflow_text
    defines tf.keras layers), so `keras` can't be absent from sys.modules;
    what kerasbert controls is that the server's modules and client.py never
    import keras, keras-hub or kerasbert's training modules themselves."""
    assert len(SERVING_FILES) > 10
    for path in SERVING_FILES:
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
        forbidden = {m for m in imported if m.split(".")[0] in ("keras", "keras_hub", "tf_keras")}
        forbidden |= {
            m for m in imported if m.startswith("kerasbert.") and not m.startswith(SERVING_SIDE)
        }
        assert not forbidden, f"{path.name} imports {sorted(forbidden)}"

    probe = (
        "import sys, kerasbert.serve, kerasbert.client\n"
        f"bad = [m for m in {TRAINING_MODULES!r} + ['keras_hub'] if m in sys.modules]\n"
        "print(bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_client_imports_without_tensorflow():
    probe = (
        "import sys, kerasbert.client; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "False"]


# === JSON text as TF Serving writes it ===


@pytest.mark.parametrize(
    "value, single, text",
    [
        (0.5, True, "0.5"),
        (np.float32(0.1), True, "0.1"),
        (np.float32(1 / 3), True, "0.333333343"),
        (3.0, True, "3.0"),
        (np.float32(1e-5), True, "1e-05"),
        (1 / 3, False, "0.33333333333333331"),
        (float("nan"), True, "NaN"),
        (float("-inf"), True, "-Infinity"),
    ],
)
def test_floats_are_written_like_tf_serving_write_decimal(value, single, text):
    assert decimal_text(float(value), single_precision=single) == text


@pytest.mark.parametrize(
    "value, text",
    [
        (1.0, "1.0"),
        (1e21, "1e21"),
        (1e20, "100000000000000000000.0"),
        (1.5e-7, "1.5e-7"),
        (1e-6, "0.000001"),
        (123.456, "123.456"),
        (-2.5, "-2.5"),
    ],
)
def test_doubles_in_messages_are_written_like_rapidjson(value, text):
    assert rapidjson_double(value) == text


def test_debug_strings_are_laid_out_like_rapidjson_pretty_writer():
    assert debug_string({"instances": []}) == '{\n    "instances": []\n}'
    assert debug_string({"a": [1, [2, 3]], "b": {"c": "x\n"}}) == (
        '{\n    "a": [1, [2, 3]],\n    "b": {\n        "c": "x\\n"\n    }\n}'
    )
    long = debug_string(list(range(200)))
    assert 256 <= len(long) < 270 and long.startswith("[0, 1, 2") and not long.endswith("]")


def test_single_output_row_response_is_a_list_of_values_laid_out_like_tf_serving():
    text = predict_response_json({"y": np.array([2.5, 3.0], np.float32)}, row_format=True)
    assert text == '{\n    "predictions": [2.5, 3.0\n    ]\n}'


def test_several_outputs_give_objects_in_rows_and_a_map_in_columns():
    outputs = {
        "label": np.array([b"good", b"bad"], dtype=object),
        "probabilities": np.array([[0.25, 0.75], [1.0, 0.0]], np.float32),
    }
    rows = json.loads(predict_response_json(outputs, row_format=True))
    assert rows == {
        "predictions": [
            {"label": "good", "probabilities": [0.25, 0.75]},
            {"label": "bad", "probabilities": [1.0, 0.0]},
        ]
    }
    columns = json.loads(predict_response_json(outputs, row_format=False))
    assert columns == {
        "outputs": {"label": ["good", "bad"], "probabilities": [[0.25, 0.75], [1.0, 0.0]]}
    }
    single_column = predict_response_json({"y": np.array([1, 2], np.int64)}, row_format=False)
    assert single_column == '{\n    "outputs": [\n        1,\n        2\n    ]\n}'


def test_bytes_outputs_and_non_utf8_strings_are_base64_objects():
    outputs = {
        "echo_bytes": np.array([b"caf\xc3\xa9"], dtype=object),
        "raw": np.array([b"\xff\x00"], dtype=object),
    }
    response = json.loads(predict_response_json(outputs, row_format=True))
    [row] = response["predictions"]
    assert row["echo_bytes"] == {"b64": base64.b64encode("café".encode()).decode()}
    assert row["raw"] == {"b64": "/wA="}


def test_row_response_refuses_outputs_of_different_batch_sizes():
    outputs = {"a": np.zeros([2], np.float32), "b": np.zeros([3], np.float32)}
    assert (
        error_of(predict_response_json, outputs, True)
        == "Tensor name: b has inconsistent batch size: 3 expecting: 2"
    )


def test_classify_response_uses_results_key_and_tf_serving_layout():
    text = classify_response_json([[("neg", 0.25), ("pos", 0.75)]])
    assert text == '{\n    "results": [[["neg", 0.25], ["pos", 0.75]]\n    ]\n}'


def test_error_body_is_a_single_error_field():
    assert error_json('bad "x"') == '{\n    "error": "bad \\"x\\""\n}'


# === JSON requests to tensors ===


def test_parse_errors_use_rapidjson_messages_and_byte_offsets():
    parse = parse_json_object
    assert error_of(parse, b"") == "JSON Parse error: The document is empty"
    assert (
        error_of(parse, b'{"instances": ["a",}') == "JSON Parse error: Invalid value. at offset: 19"
    )
    assert (
        error_of(parse, b'{"a": 1 "b": 2}')
        == "JSON Parse error: Missing a comma or '}' after an object member. at offset: 8"
    )
    assert (
        error_of(parse, b'["\xc3\xa9" 1]')
        == "JSON Parse error: Missing a comma or ']' after an array element. at offset: 6"
    )
    assert (
        error_of(parse, b'{"a": "caf\xe9"}')
        == "JSON Parse error: Invalid encoding in string. at offset: 10"
    )
    assert error_of(parse, b"[1, 2]") == "JSON Value: [1, 2] Is not object"
    # Like rapidjson with kParseStopWhenDoneFlag, text after the document is ignored.
    assert parse(b' {"a": 1} trailing') == {"a": 1}


@pytest.mark.parametrize(
    "number, offset",
    [
        (b"1" + b"0" * 5_000, 6),  # beyond Python's 4300-digit int conversion
        (b"1" + b"0" * 400, 6),
        (b"-1" + b"0" * 400, 6),
        (b"1e400", 6),
        (b"-1e400", 6),
        (b"2e308", 6),
        (b"0e400", 6),  # rapidjson refuses the exponent whatever the value
        (b"1.0e310", 6),
    ],
)
def test_numbers_too_big_for_a_double_are_refused_as_rapidjson_refuses_them(number, offset):
    body = b'{"a": ' + number + b', "b": 1e400}'
    assert (
        error_of(parse_json_object, body)
        == f"JSON Parse error: Number too big to be stored in double. at offset: {offset}"
    )


def test_big_numbers_are_read_as_rapidjson_reads_them():
    document = parse_json_object(
        b'{"u": 18446744073709551615, "u_over": 18446744073709551616, '
        b'"i": -9223372036854775808, "i_under": -9223372036854775809, '
        b'"e": 1e308, "tiny": 1e-400, "s": "1e400", "long": 1' + b"0" * 300 + b"}"
    )
    assert document["u"] == 2**64 - 1 and isinstance(document["u"], int)
    assert document["u_over"] == 2.0**64 and isinstance(document["u_over"], float)
    assert document["i"] == -(2**63) and isinstance(document["i"], int)
    assert document["i_under"] == -(2.0**63) and isinstance(document["i_under"], float)
    assert document["e"] == 1e308 and document["tiny"] == 0.0 and document["s"] == "1e400"
    assert isinstance(document["long"], float) and document["long"] == pytest.approx(1e300)
    # A number after a multi-byte character: the offset counts bytes.
    assert error_of(parse_json_object, '{"é": 1e999}'.encode()) == (
        "JSON Parse error: Number too big to be stored in double. at offset: 7"
    )


def test_the_first_of_repeated_keys_counts_as_in_rapidjson():
    document = parse_json_object(
        b'{"instances": ["a"], "signature_name": "x", "instances": 3, "signature_name": "y", '
        b'"nested": {"k": 1, "k": 2}}'
    )
    assert document == {"instances": ["a"], "signature_name": "x", "nested": {"k": 1}}


def test_nesting_deeper_than_a_tensor_can_be_is_refused_without_recursing():
    deep = 10_000
    body = b'{"instances": ' + b"[" * deep + b"]" * deep + b"}"
    assert error_of(parse_json_object, body) == (
        "JSON Parse error: Arrays and objects nested more than 512 deep. at offset: 525"
    )
    # Brackets inside strings don't count.
    assert parse_json_object(b'{"a": "' + b"[" * 1_000 + b'"}') == {"a": "[" * 1_000}


@pytest.mark.parametrize("key", ["instances", "inputs"])
@pytest.mark.parametrize("rank", [65, 254, 255, 509])
def test_tensors_of_more_dimensions_than_numpy_takes_are_refused(key, rank):
    depth = rank - 1 if key == "instances" else rank
    document = parse_json_object(
        ('{"%s": %s"a"%s}' % (key, "[" * depth, "]" * depth)).encode()
        if key == "inputs"
        else ('{"%s": [%s"a"%s]}' % (key, "[" * depth, "]" * depth)).encode()
    )
    message = error_of(predict_inputs_from_json, document, TEXT)
    if rank > 254:
        assert message == "tensor parsing error: text"  # TensorShape's 254 dimensions
    else:
        assert message == (
            "Input `text` of signature `serving_default` has shape "
            f"[{','.join(['1'] * rank)}], expected [-1] (-1 is any size)."
        )
    unknown_rank = {
        "text": meta_graph_pb2.TensorInfo(
            dtype=types_pb2.DT_STRING,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(unknown_rank=True),
        )
    }
    message = error_of(predict_inputs_from_json, document, unknown_rank, "sig")
    if rank > 254:
        assert message == "tensor parsing error: text"
    else:
        assert message == (
            f"Input `text` of signature `sig` has {rank} dimensions; this server takes at most 64."
        )


def test_row_format_with_one_input_batches_the_list():
    inputs, row_format = predict_inputs_from_json({"instances": ["a", {"b64": "Yg=="}]}, TEXT)
    assert row_format
    assert inputs["text"].dtype == object and inputs["text"].tolist() == [b"a", b"b"]


def test_row_format_with_named_inputs_and_columnar_format():
    inputs, row_format = predict_inputs_from_json(
        {"instances": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]}, TWO_INPUTS
    )
    assert row_format and inputs["a"].dtype == np.int32 and inputs["a"].tolist() == [1, 2]
    assert inputs["b"].tolist() == [b"x", b"y"]
    inputs, row_format = predict_inputs_from_json(
        {"inputs": {"a": [1, 2, 3], "b": ["x"], "ignored": 1}}, TWO_INPUTS
    )
    assert not row_format and inputs["a"].tolist() == [1, 2, 3] and inputs["b"].tolist() == [b"x"]


@pytest.mark.parametrize(
    "document, infos, message",
    [
        (
            {"instances": [1]},
            TEXT,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON Value: 1 Type: Number is not of expected type: string",
        ),
        (
            {"instances": []},
            TEXT,
            "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array",
        ),
        (
            {"instances": "a"},
            TEXT,
            'JSON Value: {\n    "instances": "a"\n} Expecting \'instances\' to be an list/array',
        ),
        (
            {"instances": ["a"], "inputs": ["a"]},
            TEXT,
            'JSON Value: {\n    "instances": ["a"],\n    "inputs": ["a"]\n} Not formatted correctly expecting '
            "only one of 'inputs' or 'instances' keys to exist ",
        ),
        ({}, TEXT, "Missing 'inputs' or 'instances' key"),
        (
            {"instances": [{"txt": "a"}]},
            TEXT,
            "Failed to process element: 0 key: txt of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON object: does not have named input: txt",
        ),
        ({"inputs": {"txt": ["a"]}}, TEXT, "Missing named input: text in 'inputs' object."),
        (
            {"instances": [1, 2]},
            TWO_INPUTS,
            "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
            "tensorinfo_map",
        ),
        (
            {"inputs": [1]},
            TWO_INPUTS,
            "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
            "tensorinfo_map",
        ),
        (
            {"instances": [{"a": 1}]},
            TWO_INPUTS,
            "Failed to process element: 0 of 'instances' list. JSON object: {\n    \"a\": 1\n} keys must be equal to: a,b",
        ),
        (
            {"instances": [{"a": 1, "b": "x"}, [1]]},
            TWO_INPUTS,
            "Expecting object but got list at item 1 of input list",
        ),
        (
            {"instances": [{"a": 2**31, "b": "x"}]},
            TWO_INPUTS,
            "Failed to process element: 0 key: a of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON Value: 2147483648 Type: Number is not of expected type: int32",
        ),
        (
            {"instances": [{"a": True, "b": "x"}]},
            TWO_INPUTS,
            "Failed to process element: 0 key: a of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON Value: true Type: True is not of expected type: int32",
        ),
        (
            {"instances": [{"b64": "!!"}]},
            TEXT,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: Unable to base64 decode",
        ),
        (
            {"instances": [{"b64": "YQ==", "x": 1}]},
            TEXT,
            "Failed to process element: 0 key: b64 of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON object: does not have named input: b64",
        ),
    ],
)
def test_bad_predict_requests_get_tf_serving_messages(document, infos, message):
    assert error_of(predict_inputs_from_json, document, infos) == message


def test_nested_lists_must_be_dense_and_consistent():
    info = {"x": tensor_info(types_pb2.DT_FLOAT, -1, -1)}
    inputs, _ = predict_inputs_from_json({"instances": [[1, 2.5], [3, 4]]}, info)
    assert inputs["x"].shape == (2, 2) and inputs["x"].dtype == np.float32
    assert error_of(predict_inputs_from_json, {"instances": [[1, 2], [1]]}, info) == (
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but got: 1"
    )
    assert error_of(predict_inputs_from_json, {"inputs": [[1, 2], [1]]}, info) == (
        "Encountered list at unexpected size: 1 at level: 1 expected size: 2"
    )
    assert error_of(predict_inputs_from_json, {"inputs": [1, [2]]}, info) == (
        "Encountered list at unexpected level: 1 expected < 1"
    )
    assert error_of(predict_inputs_from_json, {"inputs": [[1], 2]}, info) == (
        "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"
    )


def test_input_shapes_are_checked_against_the_signature():
    message = error_of(predict_inputs_from_json, {"inputs": [["a"]]}, TEXT)
    assert (
        message
        == "Input `text` of signature `serving_default` has shape [1,1], expected [-1] (-1 is any size)."
    )
    assert error_of(check_input_shapes, {"text": [2, 3]}, TEXT, "sig") == (
        "Input `text` of signature `sig` has shape [2,3], expected [-1] (-1 is any size)."
    )


# === Examples for classify and regress ===


def test_examples_merge_the_context_with_the_example_winning():
    serialized = examples_from_json(
        {
            "context": {"text": "from context", "lang": "en"},
            "examples": [{"text": "own"}, {"score": [1, 2]}],
        }
    )
    first, second = (example_pb2.Example.FromString(s) for s in serialized)
    assert first.features.feature["text"].bytes_list.value == [b"own"]
    assert first.features.feature["lang"].bytes_list.value == [b"en"]
    assert second.features.feature["text"].bytes_list.value == [b"from context"]
    assert second.features.feature["score"].int64_list.value == [1, 2]


def test_example_values_follow_tf_serving_feature_kinds():
    [serialized] = examples_from_json({"examples": [{"f": 1.5, "b": True, "raw": {"b64": "/wA="}}]})
    feature = example_pb2.Example.FromString(serialized).features.feature
    assert list(feature["f"].float_list.value) == [1.5]
    assert list(feature["b"].int64_list.value) == [1]
    assert list(feature["raw"].bytes_list.value) == [b"\xff\x00"]


@pytest.mark.parametrize(
    "document, message",
    [
        (
            {},
            "JSON Value: {} When method is classify, key 'examples' is expected and was not found",
        ),
        (
            {"examples": []},
            "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array",
        ),
        (
            {"examples": "x"},
            'JSON Value: {\n    "examples": "x"\n} Expecting \'examples\' value to be an list/array',
        ),
        ({"examples": ["x"]}, "Example must be JSON object but got JSON String"),
        ({"examples": [{"f": None}]}, "Feature: f has element with unexpected JSON type: Null"),
        ({"examples": [{"f": [[1]]}]}, "Feature: f has element with unexpected JSON type: Array"),
        (
            {"examples": [{"f": ["x", 1]}]},
            "Unexpected element type in feature: f expecting type: bytes",
        ),
        (
            {"examples": [{"f": 2**63}]},
            "Feature: f has uint64_t element. Only int64_t is supported.",
        ),
    ],
)
def test_bad_examples_get_tf_serving_messages(document, message):
    assert error_of(examples_from_json, document) == message


# === Model configs and versions ===


def test_version_policies_select_like_tf_serving():
    available = [3, 1, 7, 5]
    assert VersionPolicy().select(available) == [7]
    assert VersionPolicy("latest", num_versions=2).select(available) == [7, 5]
    assert VersionPolicy("all").select(available) == [7, 5, 3, 1]
    assert VersionPolicy("specific", versions=(1, 5, 9)).select(available) == [5, 1]
    with pytest.raises(ValueError, match="Expected one of latest, all, specific"):
        VersionPolicy("newest")


def test_model_config_file_reads_models_policies_and_labels(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "models.config"
    path.write_text("""model_config_list {
          config { name: "a" base_path: "saved_models/a" model_platform: "tensorflow" }
          config {
            name: "b" base_path: "/abs/b"
            model_version_policy { specific { versions: 1 versions: 3 } }
            version_labels { key: "stable" value: 1 }
          }
          config { name: "c" base_path: "/abs/c" model_version_policy { latest { num_versions: 2 } } }
          config { name: "d" base_path: "/abs/d" model_version_policy { all {} } }
        }""")
    a, b, c, d = read_model_config_file(path)
    assert a == ServedModelConfig("a", tmp_path / "saved_models" / "a")
    assert b.version_policy == VersionPolicy("specific", versions=(1, 3))
    assert b.version_labels == {"stable": 1}
    assert c.version_policy == VersionPolicy("latest", num_versions=2)
    assert d.version_policy.kind == "all"


@pytest.mark.parametrize(
    "text, message",
    [
        ("model_config_list { config { name: 'a' } ", r"models.config: .*"),
        (
            "model_config_list { config { name: 'a' } }",
            r"models.config: model_config_list.config\[0\] \(a\): `base_path` is missing",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/x' } config { name: 'a' base_path: '/y' } }",
            "model name 'a' appears more than once",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/x' model_platform: 'onnx' } }",
            "model_platform 'onnx' is not supported",
        ),
        ("", "expected a `model_config_list"),
    ],
)
def test_bad_model_config_files_name_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "models.config"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_model_config_file(path)


def test_only_integer_directories_are_versions(tmp_path):
    for name in ("1", "12", ".tmp-export-3-abcd1234", "abc", "2.5"):
        (tmp_path / name).mkdir()
    (tmp_path / "4").write_text("a file, not a version")
    assert sorted(list_versions(tmp_path)) == [1, 12]
    assert list_versions(tmp_path / "missing") == {}


class FakeLoader:
    """A `load` for ModelManager that records calls and fails on request."""

    def __init__(self):
        self.calls = []
        self.failing = set()
        self.on_load = None

    def __call__(self, name, version, path):
        self.calls.append(version)
        if self.on_load:
            self.on_load(version)
        if version in self.failing:
            raise OSError(f"cannot read {path}")
        return Servable(name, version, Path(path), bundle=EmptyBundle())


class EmptyBundle:
    """A loaded model without signatures, for tests of versions alone."""

    signature_defs = {}

    def run(self, key, inputs):
        raise KeyError(key)


def make_versions(base, *versions):
    for version in versions:
        (base / str(version)).mkdir(parents=True, exist_ok=True)


def test_manager_serves_the_latest_and_swaps_without_a_gap(tmp_path):
    base = tmp_path / "m"
    make_versions(base, 1)
    loader = FakeLoader()
    manager = ModelManager([ServedModelConfig("m", base)], poll_wait_seconds=0, load=loader)
    manager.poll()
    assert manager.servable("m").version == 1

    # While version 2 loads, version 1 still answers.
    loader.on_load = lambda version: manager.servable("m")
    make_versions(base, 2)
    manager.poll()
    assert manager.servable("m").version == 2
    assert [(s.version, s.state) for s in manager.version_states("m")] == [
        (2, "AVAILABLE"),
        (1, "END"),
    ]
    with pytest.raises(
        RestError, match=r"Servable not found for request: Specific\(m, 1\)"
    ) as info:
        manager.servable("m", version=1)
    assert info.value.http_status == 404

    # Removing version 2 falls back to version 1, loaded before 2 goes.
    loader.on_load = lambda version: assert_served(manager, 2)
    (base / "2").rmdir()
    manager.poll()
    assert manager.servable("m").version == 1
    assert loader.calls == [1, 2, 1]


def assert_served(manager, version):
    assert manager.servable("m").version == version


def test_a_failing_version_keeps_the_old_one_and_is_retried_until_attempts_run_out(tmp_path):
    base = tmp_path / "m"
    make_versions(base, 1, 2)
    loader = FakeLoader()
    loader.failing.add(2)
    manager = ModelManager(
        [ServedModelConfig("m", base)], poll_wait_seconds=0, max_load_attempts=2, load=loader
    )
    manager.poll()
    # 2 is wanted but broken: nothing is served yet, and the state says why.
    [state] = manager.version_states("m")
    assert (state.version, state.state, state.error_code) == (2, "END", "UNKNOWN")
    assert "cannot read" in state.error_message
    manager.poll()
    manager.poll()
    assert loader.calls == [2, 2]
    loader.failing.clear()
    (base / "2" / "saved_model.pb").write_bytes(b"new")  # the files changed: try again
    manager.poll()
    assert manager.servable("m").version == 2


def test_missing_model_and_labels_get_tf_serving_errors(tmp_path):
    base = tmp_path / "m"
    make_versions(base, 1, 2)
    config = ServedModelConfig("m", base, VersionPolicy("all"), {"stable": 1})
    manager = ModelManager([config], poll_wait_seconds=0, load=FakeLoader())
    manager.poll()
    assert manager.servable("m", label="stable").version == 1
    assert manager.servable("m").version == 2
    messages = {
        "Latest": lambda: manager.servable("other"),
        "status": lambda: manager.version_states("other"),
        "version": lambda: manager.version_states("m", 9),
        "label": lambda: manager.servable("m", label="canary"),
    }
    texts = {}
    for key, call in messages.items():
        with pytest.raises(RestError) as info:
            call()
        texts[key] = (info.value.http_status, info.value.message)
    assert texts == {
        "Latest": (404, "Servable not found for request: Latest(other)"),
        "status": (404, "Could not find any versions of model other"),
        "version": (404, "Could not find version 9 of model m"),
        "label": (400, "Unrecognized servable version label: canary"),
    }


def test_poll_thread_picks_up_new_versions(tmp_path):
    base = tmp_path / "m"
    make_versions(base, 1)
    loaded = threading.Event()
    loader = FakeLoader()
    loader.on_load = lambda version: version == 2 and loaded.set()
    manager = ModelManager([ServedModelConfig("m", base)], poll_wait_seconds=0.05, load=loader)
    manager.poll()
    manager.start()
    try:
        make_versions(base, 2)
        assert loaded.wait(10)
    finally:
        manager.stop(10)
    assert manager.servable("m").version == 2


# === Batching ===


def run_batched(scheduler, requests, fail_on=None, seconds=0.01, gap=0.0):
    calls = []

    async def run(inputs):
        calls.append(len(inputs["x"]))
        await asyncio.sleep(seconds)
        if fail_on is not None and fail_on in inputs["x"]:
            raise RestError("bad input")
        return {"y": inputs["x"] * 10}

    async def main():
        tasks = []
        for request in requests:
            tasks.append(
                asyncio.ensure_future(scheduler.submit("model", {"x": np.array(request)}, run))
            )
            if gap:
                await asyncio.sleep(gap)
        return await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(main()), calls


def test_batching_merges_concurrent_requests_and_splits_the_answers():
    results, calls = run_batched(
        BatchScheduler(max_batch_size=6, batch_timeout_micros=5_000_000), [[1], [2, 3], [4], [5, 6]]
    )
    assert calls == [6]
    assert [r["y"].tolist() for r in results] == [[10], [20, 30], [40], [50, 60]]


def test_a_batch_closes_at_its_timeout_and_large_requests_run_alone():
    results, calls = run_batched(
        BatchScheduler(max_batch_size=4, batch_timeout_micros=20_000), [[1], [2], [3, 4, 5, 6]]
    )
    assert sorted(calls) == [2, 4]
    assert [r["y"].tolist() for r in results] == [[10], [20], [30, 40, 50, 60]]


def test_a_full_batch_runs_and_the_next_request_opens_another():
    _, calls = run_batched(
        BatchScheduler(max_batch_size=2, batch_timeout_micros=20_000), [[1], [2], [3]]
    )
    assert calls == [2, 1]


def test_while_every_batch_thread_is_busy_the_open_batch_keeps_filling():
    scheduler = BatchScheduler(max_batch_size=32, batch_timeout_micros=1000, num_batch_threads=1)
    # Requests 10 ms apart, each batch timing out after 1 ms: the first runs
    # alone; the others arrive while it runs and share the next call.
    results, calls = run_batched(scheduler, [[0], [1], [2], [3], [4], [5]], seconds=0.3, gap=0.01)
    assert calls == [1, 5]
    assert [r["y"].tolist() for r in results] == [[0], [10], [20], [30], [40], [50]]


def test_one_bad_request_in_a_batch_fails_alone():
    results, calls = run_batched(
        BatchScheduler(max_batch_size=3, batch_timeout_micros=5_000_000), [[1], [2], [3]], fail_on=2
    )
    assert calls == [3, 1, 1, 1]
    assert results[0]["y"].tolist() == [10] and results[2]["y"].tolist() == [30]
    assert isinstance(results[1], RestError)


def test_batch_scheduler_checks_its_arguments():
    with pytest.raises(ValueError, match="Expected an integer >= 1. Received: max_batch_size=0"):
        BatchScheduler(max_batch_size=0)
    with pytest.raises(
        ValueError,
        match="Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 8",
    ):
        BatchScheduler(max_batch_size=8, allowed_batch_sizes=[2, 4])


def test_allowed_batch_sizes_pad_each_call_and_drop_the_padding():
    scheduler = BatchScheduler(
        max_batch_size=4, batch_timeout_micros=5_000_000, allowed_batch_sizes=[2, 4]
    )
    results, calls = run_batched(scheduler, [[1], [2, 3], [7, 8, 9, 10, 11]])
    assert calls == [5, 4]  # the large request alone; 3 rows padded to 4
    assert [r["y"].tolist() for r in results] == [[10], [20, 30], [70, 80, 90, 100, 110]]


def test_a_full_queue_answers_unavailable_as_tf_serving():
    scheduler = BatchScheduler(
        max_batch_size=1, batch_timeout_micros=0, num_batch_threads=1, max_enqueued_batches=1
    )
    results, calls = run_batched(scheduler, [[1], [2], [3]], seconds=0.2)
    assert results[0]["y"].tolist() == [10]
    errors = [r for r in results if isinstance(r, RestError)]
    assert errors and errors[0].code == "UNAVAILABLE"
    assert (
        errors[0].message == "The batch scheduling queue to which this task was submitted is full"
    )


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_batching_parameters_file_in_tf_serving_format_sets_the_batching(tmp_path):
    file = write(
        tmp_path / "batching.txt",
        "max_batch_size { value: 2 }\nbatch_timeout_micros { value: 5000000 }\n"
        "num_batch_threads { value: 3 }\nmax_enqueued_batches { value: 7 }\n"
        'thread_pool_name { value: "model_server_batch_threads" }\n'
        "allowed_batch_sizes: 1\nallowed_batch_sizes: 2\npad_variable_length_inputs: true\n",
    )
    args = serve.parse_args(
        ["--model_base_path=x", "--enable_batching=true", f"--batching_parameters_file={file}"]
    )
    scheduler = serve.batch_scheduler(args)
    assert (
        scheduler.max_batch_size,
        scheduler.batch_timeout_micros,
        scheduler.num_batch_threads,
        scheduler.max_enqueued_batches,
        scheduler.allowed_batch_sizes,
    ) == (2, 5_000_000, 3, 7, (1, 2))
    # Four concurrent one-row requests: two calls of two with the file,
    # one call of four with TF Serving's defaults and a long timeout.
    _, calls = run_batched(scheduler, [[1], [2], [3], [4]])
    assert calls == [2, 2]
    defaults = serve.batch_scheduler(
        serve.parse_args(["--enable_batching", "--batch_timeout_micros", "5000000"])
    )
    assert (defaults.max_batch_size, defaults.max_enqueued_batches) == (1000, 10)
    assert run_batched(defaults, [[1], [2], [3], [4]])[1] == [4]
    assert serve.batch_scheduler(serve.parse_args([])) is None


def test_tf_serving_flags_have_its_defaults_and_take_both_forms():
    args = serve.parse_args([])
    assert (args.port, args.rest_api_port, args.model_name, args.enable_batching) == (
        8500,
        0,
        "default",
        False,
    )
    spaced = serve.parse_args(["--port", "9000", "--rest_api_port", "9001", "--model_name", "m"])
    joined = serve.parse_args(["--port=9000", "--rest_api_port=9001", "--model_name=m"])
    assert spaced == joined
    assert (joined.port, joined.rest_api_port, joined.model_name) == (9000, 9001, "m")


# === Command line ===


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "Give --model_base_path"),
        (
            ["--model_base_path", "x", "--max_batch_size", "0"],
            "Invalid value for flag `--max_batch_size`. Expected an integer >= 1. Received: --max_batch_size=0",
        ),
        (
            ["--model_base_path", "x", "--rest_api_port", "70000"],
            "Expected an integer from 0 to 65535",
        ),
        (["--model_config_file", "/nonexistent/models.config"], "No such file"),
        (
            ["--model_base_path=x", "--port=8501", "--rest_api_port=8501"],
            "--rest_api_port cannot be the same as --port (8501)",
        ),
        (["--model_base_path=x", "--port=0"], "At least one of --port or --grpc_socket_path"),
        (
            ["--model_base_path=x", "--batching_parameters_file=b.txt"],
            "--batching_parameters_file is set without setting --enable_batching to true.",
        ),
        (
            [
                "--model_base_path=x",
                "--enable_batching",
                "--batching_parameters_file=/nonexistent/b.txt",
            ],
            "No such file",
        ),
        (
            ["--model_base_path=x", "--max_batch_size=4"],
            "--max_batch_size need --enable_batching.",
        ),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, message, capsys):
    assert serve.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


@pytest.mark.parametrize(
    "name, text, message",
    [
        (
            "batching",
            "max_batch_size: 4\n",
            "not a valid BatchingParameters in text format: 1:17 : 'max_batch_size: 4': Expected \"{\".",
        ),
        (
            "batching",
            "max_batch_size { value: 4 }\nnum_threads { value: 2 }\n",
            "2:1 : Message type",
        ),
        (
            "batching",
            "max_batch_size { value: 4 }\nallowed_batch_sizes: 2\n",
            "Last entry in allowed_batch_sizes must match max_batch_size",
        ),
        ("batching", "max_batch_size { value: 0 }\n", "Expected an integer >= 1"),
        ("monitoring", "prometheus_config { enable: yes }\n", "not a valid MonitoringConfig"),
    ],
)
def test_malformed_batching_or_monitoring_files_exit_2_with_one_line(
    tmp_path, capsys, name, text, message
):
    file = write(tmp_path / f"{name}.txt", text)
    flags = (
        ["--enable_batching", f"--batching_parameters_file={file}"]
        if name == "batching"
        else [f"--monitoring_config_file={file}"]
    )
    assert serve.main(["--model_base_path", str(tmp_path / "none"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {file}: ") and message in err and "\n" not in err


def test_tf_serving_style_boolean_flags_are_accepted():
    args = serve._parser().parse_args(["--enable_batching=true", "--rest_api_enable_cors_support"])
    assert args.enable_batching is True and args.rest_api_enable_cors_support is True
    assert serve._parser().parse_args(["--enable_batching=false"]).enable_batching is False


def test_an_export_that_only_tf2_load_can_run_is_refused_at_load_with_its_error(
    trained_run, tmp_path, monkeypatch, capsys
):
    """An export whose signatures read variables the restore op never fills
    (what Keras 3 models saved in a tf.Module gave before their variables
    were tracked) loads with `tf.saved_model.load` but not in TF Serving;
    the server, `predict` and `evaluate` must refuse it the same way and
    say why."""
    import httpx
    import tensorflow as tf

    from kerasbert.exporting import exporter, serving_module

    monkeypatch.setattr(serving_module, "backend_variables", lambda classifier: [])
    monkeypatch.setattr(exporter, "check_export", lambda *args: 0)
    version_dir = export_run_dir(trained_run.run_dir, base_path=tmp_path)
    tf2 = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    assert tf2(text=tf.constant(["a superb film"]))["label"].shape == (1,)

    manager = ModelManager([ServedModelConfig("tiny", version_dir.parent)], poll_wait_seconds=0)
    manager.poll()
    with background_server(create_app(manager)) as url:
        status = httpx.get(f"{url}/v1/models/tiny", timeout=60)
        predict = httpx.post(f"{url}/v1/models/tiny:predict", json={"instances": ["a"]}, timeout=60)
    assert status.status_code == 200
    (version,) = status.json()["model_version_status"]
    assert (version["version"], version["state"]) == ("1", "END")
    assert version["status"]["error_code"] == "FAILED_PRECONDITION"
    assert version["status"]["error_message"].startswith("Could not find variable ")
    assert predict.status_code == 404

    from kerasbert import evaluate
    from kerasbert import predict as predict_cli

    data = tmp_path / "reviews.csv"
    data.write_text("text,label\na superb film,positive\n", encoding="utf-8")
    capsys.readouterr()
    for command, argv in (
        (
            predict_cli,
            [
                "--model",
                str(version_dir),
                "--input",
                str(data),
                "--output",
                str(tmp_path / "p.csv"),
            ],
        ),
        (
            evaluate,
            ["--model", str(version_dir), "--data", str(data), "--output", str(tmp_path / "eval")],
        ),
    ):
        assert command.main(argv) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(
            f"error: {version_dir}: TF Serving would not load this export: warm-up record 0"
        )
        assert "FailedPreconditionError: Could not find variable " in line
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "eval").exists()
