"""kerasbert.serve's gRPC API, with TF Serving's official stubs, against its REST API over
the exported tiny BERT: same answers, TF Serving's status codes, ServingClient over gRPC,
the Prometheus metrics, and the tensorflow_model_server command line in a subprocess."""

import re
import shutil

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from kerasbert.client import ServingClient, ServingError
from kerasbert.serving.metrics import DEFAULT_PROMETHEUS_PATH
from kerasbert.serving.model_api import ModelApi
from kerasbert.serving.model_config import ServedModelConfig
from kerasbert.serving.model_manager import ModelManager
from tests.support.servers import ServerProcess, background_servers

TEXTS = ["the film was great and lovely", "the film was dull and boring", "tickets on friday"]


@pytest.fixture(scope="module")
def base(exported_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("grpc")
    shutil.copytree(exported_model, base / "tiny" / "3")
    return base


@pytest.fixture(scope="module")
def servers(base):
    manager = ModelManager([ServedModelConfig("tiny", base / "tiny")], poll_wait_seconds=0)
    manager.poll()
    model_api = ModelApi(manager)
    with background_servers(model_api, prometheus_path=DEFAULT_PROMETHEUS_PATH) as (url, target):
        channel = grpc.insecure_channel(target)
        yield url, target, channel
        channel.close()


def prediction_stub(servers):
    return prediction_service_pb2_grpc.PredictionServiceStub(servers[2])


def model_stub(servers):
    return model_service_pb2_grpc.ModelServiceStub(servers[2])


def predict_request(texts, name="tiny"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(texts, dtype=tf.string))
    return request


def classify_request(texts, signature_name="classify"):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "tiny"
    request.model_spec.signature_name = signature_name
    for text in texts:
        example = request.input.example_list.examples.add()
        example.features.feature["text"].bytes_list.value.append(text.encode())
    return request


def rpc_error(call, request):
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=60)
    return info.value.code(), info.value.details()


# === The official stubs get what REST answers ===


def test_grpc_predict_answers_as_rest_predict(servers):
    url = servers[0]
    response = prediction_stub(servers).Predict(predict_request(TEXTS), timeout=60)
    rest = httpx.post(f"{url}/v1/models/tiny:predict", json={"inputs": TEXTS}, timeout=60).json()
    assert (response.model_spec.name, response.model_spec.version.value) == ("tiny", 3)
    assert response.model_spec.signature_name == "serving_default"
    assert set(response.outputs) == set(rest["outputs"])
    for name, proto in response.outputs.items():
        value = tf.make_ndarray(proto)
        if value.dtype == object:
            assert [v.decode() for v in value] == rest["outputs"][name]
        else:
            # REST writes floats with 9 significant digits.
            np.testing.assert_allclose(value, rest["outputs"][name], rtol=1e-6)
    # Outputs arrive in the typed fields, as TF Serving writes them.
    assert len(response.outputs["probabilities"].float_val) == 3 * len(TEXTS)


def test_grpc_output_filter_and_classify_answer_as_rest(servers):
    url = servers[0]
    request = predict_request(TEXTS)
    request.output_filter.append("label")
    response = prediction_stub(servers).Predict(request, timeout=60)
    assert list(response.outputs) == ["label"]

    classified = prediction_stub(servers).Classify(classify_request(TEXTS), timeout=60)
    rest = httpx.post(
        f"{url}/v1/models/tiny:classify",
        json={"signature_name": "classify", "examples": [{"text": t} for t in TEXTS]},
        timeout=60,
    ).json()
    assert classified.model_spec.signature_name == "classify"
    got = [[(c.label, c.score) for c in row.classes] for row in classified.result.classifications]
    assert [[label for label, _ in row] for row in got] == [
        [label for label, _ in row] for row in rest["results"]
    ]
    for row, rest_row in zip(got, rest["results"]):
        assert [s for _, s in row] == pytest.approx([s for _, s in rest_row], abs=1e-6)

    multi = inference_pb2.MultiInferenceRequest()
    task = multi.tasks.add(method_name="tensorflow/serving/classify")
    task.model_spec.name, task.model_spec.signature_name = "tiny", "classify"
    multi.input.CopyFrom(classify_request(TEXTS).input)
    (result,) = prediction_stub(servers).MultiInference(multi, timeout=60).results
    assert result.classification_result == classified.result


def test_grpc_metadata_and_status_match_rest(servers):
    url = servers[0]
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "tiny"
    response = prediction_stub(servers).GetModelMetadata(request, timeout=60)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert set(signatures.signature_def) == {"serving_default", "predict_tokens", "classify"}
    assert (response.model_spec.name, response.model_spec.version.value) == ("tiny", 3)

    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "tiny"
    (status,) = model_stub(servers).GetModelStatus(status_request, timeout=60).model_version_status
    assert (status.version, status.state) == (3, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    assert status.status.error_code == 0

    grpc_client = ServingClient(f"grpc://{servers[1]}", "tiny")
    rest_client = ServingClient(url, "tiny")
    assert grpc_client.metadata() == rest_client.metadata()
    assert grpc_client.status() == rest_client.status()


def test_grpc_errors_carry_tf_serving_codes_and_messages(servers):
    stub = prediction_stub(servers)
    assert rpc_error(stub.Predict, predict_request(TEXTS, name="nope")) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    )
    bad = predict_pb2.PredictRequest()
    bad.model_spec.name = "tiny"
    bad.inputs["text"].CopyFrom(tf.make_tensor_proto([1, 2]))
    code, _ = rpc_error(stub.Predict, bad)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    bad = predict_request(TEXTS)
    bad.inputs["extra"].CopyFrom(tf.make_tensor_proto(["x"]))
    code, details = rpc_error(stub.Predict, bad)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("input size does not match signature: 2!=1 len({extra,text})")
    unknown = predict_request(TEXTS)
    unknown.model_spec.signature_name = "nope"
    assert rpc_error(stub.Predict, unknown) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
    )
    assert rpc_error(stub.Classify, classify_request([])) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Input is empty.",
    )
    no_field = get_model_metadata_pb2.GetModelMetadataRequest()
    no_field.model_spec.name = "tiny"
    assert rpc_error(stub.GetModelMetadata, no_field) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "GetModelMetadataRequest must specify at least one metadata_field",
    )
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "tiny"
    status_request.model_spec.version.value = 9
    assert rpc_error(model_stub(servers).GetModelStatus, status_request) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find version 9 of model tiny",
    )


def test_serving_client_answers_the_same_over_grpc_and_rest(servers):
    url, target, _ = servers
    with ServingClient(f"grpc://{target}", "tiny") as over_grpc, ServingClient(url, "tiny") as rest:
        for (label, probabilities), (rest_label, rest_probabilities) in zip(
            over_grpc.predict(TEXTS, batch_size=2), rest.predict(TEXTS)
        ):
            assert label == rest_label
            assert probabilities == pytest.approx(rest_probabilities, abs=1e-6)
        classes = over_grpc.classify(TEXTS)
        assert [[label for label, _ in row] for row in classes] == [
            [label for label, _ in row] for row in rest.classify(TEXTS)
        ]
    with pytest.raises(ServingError, match=r"gRPC NOT_FOUND: .*Latest\(nope\)") as info:
        ServingClient(f"grpc://{target}", "nope").predict(["a"])
    assert info.value.grpc_code == "NOT_FOUND"
    assert info.value.server_message == "Servable not found for request: Latest(nope)"


# === Monitoring ===


def request_counts(url) -> dict:
    text = httpx.get(f"{url}{DEFAULT_PROMETHEUS_PATH}", timeout=60).text
    pattern = r':tensorflow:serving:request_count\{model_name="([^"]*)",status="([A-Z_]+)"\} (\S+)'
    return {(m, s): float(v) for m, s, v in re.findall(pattern, text)}


def test_prometheus_counts_the_rest_and_grpc_requests_sent(servers):
    url = servers[0]
    before = request_counts(url)
    stub = prediction_stub(servers)
    for _ in range(3):
        httpx.post(f"{url}/v1/models/tiny:predict", json={"instances": TEXTS[:1]}, timeout=60)
    for _ in range(2):
        stub.Predict(predict_request(TEXTS[:1]), timeout=60)
    stub.Classify(classify_request(TEXTS[:1]), timeout=60)
    httpx.post(f"{url}/v1/models/gone:predict", json={"instances": ["a"]}, timeout=60)
    rpc_error(stub.Predict, predict_request(TEXTS, name="gone"))
    after = request_counts(url)
    assert after[("tiny", "OK")] - before.get(("tiny", "OK"), 0) == 6
    assert after[("gone", "NOT_FOUND")] - before.get(("gone", "NOT_FOUND"), 0) == 2
    text = httpx.get(f"{url}{DEFAULT_PROMETHEUS_PATH}", timeout=60).text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    assert re.search(
        r':tensorflow:serving:request_latency_count\{API="Predict",entrypoint="GRPC",model_name="tiny"\} [1-9]',
        text,
    )


# === ReloadConfig ===


def test_reload_config_serves_the_new_model_list(base, tmp_path):
    shutil.copytree(base / "tiny", tmp_path / "other")
    manager = ModelManager([ServedModelConfig("tiny", base / "tiny")], poll_wait_seconds=0)
    manager.poll()
    with background_servers(ModelApi(manager)) as (url, target):
        with grpc.insecure_channel(target) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            request = model_management_pb2.ReloadConfigRequest()
            config = request.config.model_config_list.config.add()
            config.name, config.base_path = "other", str(tmp_path / "other")
            config.model_platform = "tensorflow"
            assert stub.HandleReloadConfigRequest(request, timeout=120).status.error_code == 0
            assert rpc_error(
                stub.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest()
            )[0] == (grpc.StatusCode.INVALID_ARGUMENT)
        assert httpx.get(f"{url}/v1/models/other", timeout=60).json()["model_version_status"][0][
            "state"
        ] == ("AVAILABLE")
        assert httpx.get(f"{url}/v1/models/tiny", timeout=60).status_code == 404


# === The tensorflow_model_server command line ===


def test_tf_serving_command_line_serves_both_apis_with_batching_and_monitoring(base, tmp_path):
    batching = tmp_path / "batching.txt"
    batching.write_text("max_batch_size { value: 4 }\nbatch_timeout_micros { value: 2000 }\n")
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    args = [
        "--model_name=tiny",
        f"--model_base_path={base / 'tiny'}",
        "--enable_batching",
        "--batching_parameters_file",
        str(batching),
        "--monitoring_config_file",
        str(monitoring),
    ]
    with ServerProcess(args) as server:
        assert server.grpc_target is not None
        with ServingClient(f"grpc://{server.grpc_target}", "tiny") as over_grpc:
            grpc_answer = over_grpc.predict(TEXTS)
        rest_answer = ServingClient(server.url, "tiny").predict(TEXTS)
        metrics = httpx.get(f"{server.url}/metrics", timeout=60).text
    assert [label for label, _ in grpc_answer] == [label for label, _ in rest_answer]
    assert ':tensorflow:serving:request_count{model_name="tiny",status="OK"} 2.0' in metrics
    assert "Running gRPC ModelServer at 127.0.0.1:" in server.log_text()
