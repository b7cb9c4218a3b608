"""TF Serving's REST API, case by case, against `target` (see conftest.py).

Messages are TF Serving's own, from http_rest_api_handler.cc, json_tensor.cc
and the servables' code; the cases hold for any kerasbert export. Every
error is `{"error": ...}` with no traceback, and the next good request
still succeeds.
"""

import base64
import gzip
import json
import math

import pytest


@pytest.fixture(scope="session")
def model(target):
    return f"/v1/models/{target.model}"


@pytest.fixture(scope="session")
def labels(http, model):
    response = http.post(
        f"{model}:classify", json={"signature_name": "classify", "examples": [{"text": "a"}]}
    )
    assert response.status_code == 200, response.text
    return [label for label, _ in response.json()["results"][0]]


def post(http, path, body):
    """POSTs `body`: bytes as they are, anything else as JSON."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    return http.post(path, content=content, headers={"Content-Type": "application/json"})


def assert_error(response, status, message=None):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    if message is not None:
        assert body["error"] == message
    return body["error"]


def assert_still_serving(http, model):
    response = post(http, f"{model}:predict", {"instances": ["the film was great"]})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


# === Status and metadata ===


def test_status_lists_the_served_version(http, model, target):
    for path in (model, f"{model}/versions/{target.version}"):
        response = http.get(path)
        assert response.status_code == 200
        statuses = response.json()["model_version_status"]
        assert {
            "version": str(target.version),
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        } in statuses


def test_metadata_gives_the_model_spec_and_signature_defs(http, model, target):
    for path in (f"{model}/metadata", f"{model}/versions/{target.version}/metadata"):
        response = http.get(path)
        assert response.status_code == 200
        body = response.json()
        assert body["model_spec"] == {
            "name": target.model,
            "signature_name": "",
            "version": str(target.version),
        }
        signatures = body["metadata"]["signature_def"]["signature_def"]
        default = signatures["serving_default"]
        assert default["method_name"] == "tensorflow/serving/predict"
        assert default["inputs"]["text"]["dtype"] == "DT_STRING"
        assert default["inputs"]["text"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
        assert {"probabilities", "logits", "label", "label_id"} <= set(default["outputs"])
        assert signatures["classify"]["method_name"] == "tensorflow/serving/classify"
        assert set(signatures["classify"]["outputs"]) == {"classes", "scores"}


# === Predict ===

TEXTS = ["the film was great and lovely", "the film was dull and boring"]


def check_predictions(predictions, labels, count):
    assert len(predictions) == count
    for prediction in predictions:
        assert set(prediction) == {"probabilities", "logits", "label", "label_id"}
        assert prediction["label"] == labels[prediction["label_id"]]
        assert len(prediction["probabilities"]) == len(prediction["logits"]) == len(labels)
        assert math.isclose(sum(prediction["probabilities"]), 1.0, abs_tol=1e-4)
        assert (
            prediction["probabilities"].index(max(prediction["probabilities"]))
            == prediction["label_id"]
        )


def test_row_format_gives_a_list_of_objects(http, model, labels):
    plain = post(http, f"{model}:predict", {"instances": TEXTS})
    named = post(
        http,
        f"{model}:predict",
        {"signature_name": "serving_default", "instances": [{"text": t} for t in TEXTS]},
    )
    assert plain.status_code == named.status_code == 200
    check_predictions(plain.json()["predictions"], labels, 2)
    assert named.json() == plain.json()


def test_columnar_format_gives_an_object_of_outputs(http, model, labels):
    plain = post(http, f"{model}:predict", {"inputs": TEXTS})
    named = post(http, f"{model}:predict", {"inputs": {"text": TEXTS}})
    rows = post(http, f"{model}:predict", {"instances": TEXTS}).json()["predictions"]
    assert plain.status_code == named.status_code == 200
    outputs = plain.json()["outputs"]
    assert named.json()["outputs"] == outputs
    assert outputs["label"] == [r["label"] for r in rows]
    assert outputs["label_id"] == [r["label_id"] for r in rows]
    for column, row in zip(outputs["probabilities"], rows):
        assert column == pytest.approx(row["probabilities"], abs=1e-6)


def test_a_version_can_be_named(http, model, target):
    response = post(http, f"{model}/versions/{target.version}:predict", {"instances": TEXTS[:1]})
    assert response.status_code == 200 and len(response.json()["predictions"]) == 1


def test_b64_values_are_decoded_before_the_model_sees_them(http, model):
    encoded = {"b64": base64.b64encode(TEXTS[0].encode("utf-8")).decode("ascii")}
    plain = post(http, f"{model}:predict", {"instances": TEXTS[:1]}).json()
    assert post(http, f"{model}:predict", {"instances": [encoded]}).json() == plain
    assert post(http, f"{model}:predict", {"instances": [{"text": encoded}]}).json() == plain
    assert post(http, f"{model}:predict", {"inputs": [encoded]}).json()["outputs"]["label"] == [
        plain["predictions"][0]["label"]
    ]


def test_several_typed_inputs_in_rows(http, model, labels):
    signature = http.get(f"{model}/metadata").json()["metadata"]["signature_def"]["signature_def"][
        "predict_tokens"
    ]
    values = {"DT_INT32": [2, 5, 3, 0], "DT_BOOL": [True, True, True, False]}
    instance = {name: values[info["dtype"]] for name, info in signature["inputs"].items()}
    if "segment_ids" in instance:
        instance["segment_ids"] = [0, 0, 0, 0]
    response = post(
        http,
        f"{model}:predict",
        {"signature_name": "predict_tokens", "instances": [instance, instance]},
    )
    assert response.status_code == 200, response.text
    check_predictions(response.json()["predictions"], labels, 2)


# === Classify and regress ===


def test_classify_gives_every_label_with_its_score(http, model, labels):
    predictions = post(http, f"{model}:predict", {"instances": TEXTS}).json()["predictions"]
    response = post(
        http,
        f"{model}:classify",
        {"signature_name": "classify", "examples": [{"text": t} for t in TEXTS]},
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 2
    for classes, prediction in zip(results, predictions):
        assert [label for label, _ in classes] == labels
        assert [score for _, score in classes] == pytest.approx(
            prediction["probabilities"], abs=1e-5
        )


def test_classify_merges_the_context_into_each_example(http, model):
    merged = post(
        http,
        f"{model}:classify",
        {"signature_name": "classify", "context": {"text": TEXTS[0]}, "examples": [{}]},
    )
    direct = post(
        http, f"{model}:classify", {"signature_name": "classify", "examples": [{"text": TEXTS[0]}]}
    )
    overridden = post(
        http,
        f"{model}:classify",
        {
            "signature_name": "classify",
            "context": {"text": TEXTS[1]},
            "examples": [{"text": TEXTS[0]}],
        },
    )
    encoded = post(
        http,
        f"{model}:classify",
        {
            "signature_name": "classify",
            "examples": [{"text": {"b64": base64.b64encode(TEXTS[0].encode()).decode()}}],
        },
    )
    assert merged.status_code == 200
    assert merged.json() == direct.json() == overridden.json() == encoded.json()


def test_classify_needs_a_classification_signature(http, model):
    response = post(http, f"{model}:classify", {"examples": [{"text": "a"}]})
    assert_error(response, 400, "Expected one or two output Tensors, found 4")
    assert_still_serving(http, model)


def test_regress_on_a_classifier_is_refused(http, model):
    assert_error(
        post(http, f"{model}:regress", {"examples": [{"text": "a"}]}),
        400,
        "Expected one output Tensor.",
    )
    assert_error(
        post(http, f"{model}:regress", {"signature_name": "nope", "examples": [{"text": "a"}]}),
        400,
        "No signature was found with the name: nope",
    )
    assert_still_serving(http, model)


# === Bad requests ===

BAD_PREDICT_BODIES = {
    "malformed JSON": (b'{"instances": ["a",}', "JSON Parse error: Invalid value. at offset: 19"),
    "empty body": (b"", "JSON Parse error: The document is empty"),
    "not an object": (b"[1, 2]", "JSON Value: [1, 2] Is not object"),
    "instances and inputs": (
        {"instances": ["a"], "inputs": ["a"]},
        'JSON Value: {\n    "instances": ["a"],\n    "inputs": ["a"]\n} Not formatted correctly expecting '
        "only one of 'inputs' or 'instances' keys to exist ",
    ),
    "neither": ({"signature_name": "serving_default"}, "Missing 'inputs' or 'instances' key"),
    "wrong input name in a row": (
        {"instances": [{"txt": "a"}]},
        "Failed to process element: 0 key: txt of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON object: does not have named input: txt",
    ),
    "wrong input name in columns": (
        {"inputs": {"txt": ["a"]}},
        "Missing named input: text in 'inputs' object.",
    ),
    "a number for text": (
        {"instances": [1]},
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON Value: 1 Type: Number is not of expected type: string",
    ),
    "a number for text in columns": (
        {"inputs": [1.5]},
        "JSON Value: 1.5 Type: Number is not of expected type: string",
    ),
    "empty instances": (
        {"instances": []},
        "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array",
    ),
    "instances not a list": (
        {"instances": "a"},
        'JSON Value: {\n    "instances": "a"\n} Expecting \'instances\' to be an list/array',
    ),
    "bad base64": (
        {"instances": [{"b64": "not base64!"}]},
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: Unable to base64 decode",
    ),
    "unknown signature": (
        {"signature_name": "nope", "instances": ["a"]},
        'Serving signature name: "nope" not found in signature def',
    ),
    "an integer of 5000 digits": (
        b'{"instances": ["a"], "n": 1' + b"0" * 5_000 + b"}",
        "JSON Parse error: Number too big to be stored in double. at offset: 26",
    ),
    "an integer of 400 digits": (
        b'{"instances": [1' + b"0" * 400 + b"]}",
        "JSON Parse error: Number too big to be stored in double. at offset: 15",
    ),
    "1e400": (
        b'{"instances": ["a"], "n": -1e400}',
        "JSON Parse error: Number too big to be stored in double. at offset: 26",
    ),
    "a tensor of 255 dimensions in rows": (
        b'{"instances": [' + b"[" * 254 + b'"a"' + b"]" * 254 + b"]}",
        "tensor parsing error: text",
    ),
    "a tensor of 300 dimensions in columns": (
        b'{"inputs": ' + b"[" * 300 + b'"a"' + b"]" * 300 + b"}",
        "tensor parsing error: text",
    ),
    "signature name not a string": (
        {"signature_name": 3, "instances": ["a"]},
        'JSON Value: {\n    "signature_name": 3,\n    "instances": ["a"]\n} not formatted correctly. '
        "'signature_name' key must be a string value.",
    ),
}


@pytest.mark.parametrize("case", list(BAD_PREDICT_BODIES))
def test_bad_predict_requests_get_400_and_tf_serving_messages(http, model, case):
    body, message = BAD_PREDICT_BODIES[case]
    assert_error(post(http, f"{model}:predict", body), 400, message)
    assert_still_serving(http, model)


def test_a_tensor_of_the_wrong_rank_is_refused(http, model):
    assert_error(post(http, f"{model}:predict", {"inputs": [["a"]]}), 400)
    assert_still_serving(http, model)


@pytest.mark.parametrize("key", ["instances", "inputs"])
@pytest.mark.parametrize("depth", [65, 200, 971, 972, 5_000])
def test_deeply_nested_lists_are_refused(http, model, target, key, depth):
    # TF Serving parses any depth and refuses the tensor (its message depends
    # on the model up to 254 dimensions, "tensor parsing error" beyond);
    # kerasbert.serve refuses documents nested more than 512 deep as it parses.
    body = f'{{"{key}": {"[" * depth}"a"{"]" * depth}}}'.encode()
    message = assert_error(post(http, f"{model}:predict", body), 400)
    if depth > 254 and (depth <= 511 or not target.local):
        assert message == "tensor parsing error: text"
    elif depth > 511:
        assert message == (
            "JSON Parse error: Arrays and objects nested more than 512 deep. "
            f"at offset: {len(key) + 5 + 511}"
        )
    assert_still_serving(http, model)


def test_the_first_of_repeated_keys_counts(http, model, labels):
    body = (
        b'{"signature_name": "serving_default", "instances": ["the film was great"], '
        b'"signature_name": "nope", "instances": 3}'
    )
    response = post(http, f"{model}:predict", body)
    assert response.status_code == 200, response.text
    check_predictions(response.json()["predictions"], labels, 1)


def test_a_gzip_body_is_answered_as_the_plain_one(http, model):
    for path, body in (
        (f"{model}:predict", {"instances": TEXTS}),
        (f"{model}:predict", {"instances": 3}),
        (f"{model}:classify", {"signature_name": "classify", "examples": [{"text": TEXTS[0]}]}),
    ):
        plain = post(http, path, body)
        zipped = http.post(
            path,
            content=gzip.compress(json.dumps(body).encode("utf-8")),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        assert (zipped.status_code, zipped.json()) == (plain.status_code, plain.json())


@pytest.mark.parametrize(
    "body",
    [b'{"instances": ["a"]}', gzip.compress(b'{"instances": ["a"]}')[:-9], b"\x1f\x8b junk"],
    ids=["not gzip", "truncated", "bad header"],
)
def test_a_body_that_does_not_gunzip_is_read_as_empty(http, model, body):
    # TF Serving's HTTP server drops a body it can't inflate (evhttp_request.cc).
    response = http.post(
        f"{model}:predict",
        content=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert_error(response, 400, "JSON Parse error: The document is empty")
    assert_still_serving(http, model)


BAD_CLASSIFY_BODIES = {
    "no examples": (
        {"signature_name": "classify"},
        'JSON Value: {\n    "signature_name": "classify"\n} When method is classify, key \'examples\' '
        "is expected and was not found",
    ),
    "empty examples": (
        {"examples": []},
        "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array",
    ),
    "example not an object": (
        {"examples": ["a"]},
        "Example must be JSON object but got JSON String",
    ),
    "null feature": (
        {"examples": [{"text": None}]},
        "Feature: text has element with unexpected JSON type: Null",
    ),
    "unknown signature": (
        {"signature_name": "nope", "examples": [{"text": "a"}]},
        "No signature was found with the name: nope",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CLASSIFY_BODIES))
def test_bad_classify_requests_get_400_and_tf_serving_messages(http, model, case):
    body, message = BAD_CLASSIFY_BODIES[case]
    assert_error(post(http, f"{model}:classify", body), 400, message)
    assert_still_serving(http, model)


def test_a_feature_of_the_wrong_type_is_refused_by_the_model(http, model):
    response = post(
        http, f"{model}:classify", {"signature_name": "classify", "examples": [{"text": 3}]}
    )
    message = assert_error(response, 400)
    assert "Data types don't match" in message
    assert_still_serving(http, model)


def test_bytes_that_are_not_utf8(http, model, target):
    body = b'{"instances": ["caf\xe9"]}'
    response = post(http, f"{model}:predict", body)
    if target.local:
        assert_error(response, 400, "JSON Parse error: Invalid encoding in string. at offset: 19")
    else:
        # TF Serving's rapidjson passes the raw bytes to the model unchecked:
        # an answer either way, never a crash.
        assert response.status_code in (200, 400), response.text
        assert "Traceback" not in response.text
    assert_still_serving(http, model)


def test_a_body_over_the_size_limit_gets_413(http, model, target):
    if target.max_body_bytes is None:
        pytest.skip(
            "TF Serving has no request size limit; set KERASBERT_TFSERVING_MAX_BODY_BYTES if yours has one"
        )
    text = "a" * (target.max_body_bytes + 1)
    assert_error(post(http, f"{model}:predict", {"instances": [text]}), 413)
    assert_still_serving(http, model)


# === Bad URLs ===


@pytest.mark.parametrize(
    "method, path, status, message",
    [
        ("POST", "{model}:explain", 400, "Malformed request: POST {model}:explain"),
        ("GET", "{model}:predict", 400, "Malformed request: GET {model}:predict"),
        ("GET", "{model}/versions/abc", 400, "Malformed request: GET {model}/versions/abc"),
        ("GET", "/v1/models", 400, "Missing model name in request."),
        # TF Serving matches the path with its query (evhttp's path_and_query).
        ("POST", "{model}:predict?x=1", 400, "Malformed request: POST {model}:predict?x=1"),
        # ... and a model name, [^/:]+, takes the query in.
        ("GET", "{model}?x=1", 404, "Could not find any versions of model {name}?x=1"),
        ("POST", "/v1/models/nope:predict", 404, "Servable not found for request: Latest(nope)"),
        ("POST", "/v1/models/nope:classify", 404, "Servable not found for request: Latest(nope)"),
        ("GET", "/v1/models/nope", 404, "Could not find any versions of model nope"),
        ("GET", "/v1/models/nope/metadata", 404, "Servable not found for request: Latest(nope)"),
        (
            "POST",
            "{model}/versions/999:predict",
            404,
            "Servable not found for request: Specific({name}, 999)",
        ),
        ("GET", "{model}/versions/999", 404, "Could not find version 999 of model {name}"),
        (
            "GET",
            "{model}/versions/999/metadata",
            404,
            "Servable not found for request: Specific({name}, 999)",
        ),
    ],
)
def test_unknown_verbs_models_and_versions(http, model, target, method, path, status, message):
    path = path.format(model=model)
    body = (
        {"signature_name": "classify", "examples": [{"text": "a"}]}
        if ":classify" in path
        else {"instances": ["a"]}
    )
    response = http.request(method, path, json=body if method == "POST" else None)
    assert_error(response, status, message.format(model=model, name=target.model))
    assert_still_serving(http, model)
