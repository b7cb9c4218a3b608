"""kerasbert.serve over HTTP, in this process: versions changing under load,
batching, concurrency, time and size limits.

The server runs in a background thread (`background_server`) over a copy of
the session's exported tiny BERT; the REST API itself is checked from a
separate process by tests/conformance.
"""

import logging
import shutil
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from tensorflow.core.framework import tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from kerasbert.serving.app import create_app
from kerasbert.serving.model_config import ServedModelConfig
from kerasbert.serving.model_manager import ModelManager
from kerasbert.serving.servables import Servable
from tests.support.servers import background_server

TIMEOUT = httpx.Timeout(60.0)
TEXTS = [
    "the film was great and lovely",
    "the film was dull and boring",
    "the film was tickets and runtime",
    "the film was superb and fun",
    "the film was awful and flat",
    "the film was cast and credits",
    "the film was brilliant and great",
    "the film was terrible and dull",
]


@pytest.fixture
def model_base(exported_model, tmp_path):
    """A base path holding version 1 of the exported tiny model."""
    base = tmp_path / "tiny"
    shutil.copytree(exported_model, base / "1")
    return base


def predict(client, url, texts, version=None):
    path = f"{url}/v1/models/tiny" + (f"/versions/{version}" if version else "") + ":predict"
    response = client.post(path, json={"instances": texts})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def served_version(client, url) -> int:
    return int(client.get(f"{url}/v1/models/tiny/metadata").json()["model_spec"]["version"])


def wait_for(condition, seconds, step=0.05):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


# How long a test waits for something the server will do: generous, since a
# load takes from seconds to minutes on a busy machine. Tests wait for the
# event itself, never for a time.
DEADLINE = 600.0


class RecordingManager(ModelManager):
    """A ModelManager that records, after each poll, the versions of "tiny" it serves."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.served_after_poll = []

    def poll(self):
        super().poll()
        states = self.version_states("tiny")
        self.served_after_poll.append({s.version for s in states if s.state == "AVAILABLE"})


def test_new_version_is_served_within_two_polls_and_removal_falls_back(model_base):
    # Polls are counted, not timed: the first poll that ends after a change
    # may have begun before it (and seen half a copy), the second must have
    # acted on it. The interval is short so the test doesn't idle.
    manager = RecordingManager([ServedModelConfig("tiny", model_base)], poll_wait_seconds=0)
    manager.poll()
    manager.poll_wait_seconds = 0.5
    manager.start()
    failures, answered = [], []
    stop = threading.Event()

    def request_loop(url):
        with httpx.Client(timeout=TIMEOUT) as client:
            while not stop.is_set():
                try:
                    response = client.post(
                        f"{url}/v1/models/tiny:predict", json={"instances": TEXTS[:2]}
                    )
                    (answered if response.status_code == 200 else failures).append(
                        response.status_code
                    )
                    time.sleep(0.02)  # a steady stream, leaving the CPU to the loads under test
                except httpx.HTTPError as error:
                    failures.append(repr(error))

    def served_within_two_polls(polls_before, versions):
        assert wait_for(lambda: len(manager.served_after_poll) >= polls_before + 2, DEADLINE)
        assert manager.served_after_poll[polls_before + 1] == versions

    try:
        with background_server(create_app(manager)) as url, httpx.Client(timeout=TIMEOUT) as client:
            loop = threading.Thread(target=request_loop, args=(url,))
            loop.start()
            try:
                assert served_version(client, url) == 1
                shutil.copytree(model_base / "1", model_base / "2")  # like `cp -r`: not atomic
                polls, count = len(manager.served_after_poll), len(answered)
                served_within_two_polls(polls, {2})
                assert wait_for(
                    lambda: served_version(client, url) == 2 and len(answered) >= count + 3,
                    DEADLINE,
                ), "version 2 not served"
                assert len(predict(client, url, TEXTS[:1], version=2)) == 1

                shutil.rmtree(model_base / "2")
                polls, count = len(manager.served_after_poll), len(answered)
                served_within_two_polls(polls, {1})
                assert wait_for(
                    lambda: served_version(client, url) == 1 and len(answered) >= count + 3,
                    DEADLINE,
                ), "no fallback to version 1"
            finally:
                stop.set()
                loop.join(120)
            status = client.get(f"{url}/v1/models/tiny").json()["model_version_status"]
    finally:
        manager.stop(60)
    assert failures == []
    assert [(s["version"], s["state"]) for s in status] == [("2", "END"), ("1", "AVAILABLE")]


@pytest.fixture(scope="module")
def manager(exported_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("http") / "tiny"
    shutil.copytree(exported_model, base / "1")
    manager = ModelManager([ServedModelConfig("tiny", base)], poll_wait_seconds=0)
    manager.poll()
    return manager


def test_batching_merges_concurrent_requests_and_keeps_each_answer(manager):
    with background_server(create_app(manager)) as url, httpx.Client(timeout=TIMEOUT) as client:
        expected = [predict(client, url, [text])[0] for text in TEXTS]

    app = create_app(
        manager, enable_batching=True, max_batch_size=len(TEXTS), batch_timeout_micros=2_000_000
    )
    answers = [None] * len(TEXTS)
    barrier = threading.Barrier(len(TEXTS))

    def send(index, url):
        with httpx.Client(timeout=TIMEOUT) as client:
            barrier.wait(30)
            answers[index] = predict(client, url, [TEXTS[index]])[0]

    with background_server(app) as url:
        threads = [threading.Thread(target=send, args=(i, url)) for i in range(len(TEXTS))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    # All eight arrive well within the 2 s window and fill the batch: one call.
    assert app.state.batcher.calls == 1
    for answer, single in zip(answers, expected):
        assert answer["label"] == single["label"]
        np.testing.assert_allclose(answer["probabilities"], single["probabilities"], atol=1e-5)


def tensor_info(dtype, *dims):
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )
    return meta_graph_pb2.TensorInfo(dtype=dtype, tensor_shape=shape)


def slow_manager(seconds, tmp_path, versions=(1,)):
    """A model whose `serving_default` sleeps `seconds` for the text "slow"
    and answers the length of each text plus its version."""

    class SlowBundle:
        def __init__(self, offset):
            self.offset = offset
            self.signature_defs = {"serving_default": signature}

        def run(self, key, inputs):
            text = inputs["text"].tolist()
            if b"slow" in text:
                time.sleep(seconds)
            return {"length": np.array([len(t) + self.offset for t in text], dtype=np.int32)}

    signature = meta_graph_pb2.SignatureDef(
        inputs={"text": tensor_info(types_pb2.DT_STRING, -1)},
        outputs={"length": tensor_info(types_pb2.DT_INT32, -1)},
        method_name="tensorflow/serving/predict",
    )

    def load(name, version, path):
        return Servable(name, version, path, SlowBundle(10 * (version - 1)))

    for version in versions:
        (tmp_path / "slow" / str(version)).mkdir(parents=True)
    manager = ModelManager(
        [ServedModelConfig("slow", tmp_path / "slow")], poll_wait_seconds=0, load=load
    )
    manager.poll()
    return manager


def test_model_calls_run_concurrently_in_a_thread_pool(tmp_path):
    app = create_app(slow_manager(1.0, tmp_path), num_threads=4)
    with background_server(app) as url:
        results = []

        def send():
            with httpx.Client(timeout=TIMEOUT) as client:
                results.append(
                    client.post(
                        f"{url}/v1/models/slow:predict", json={"instances": ["slow"]}
                    ).json()
                )

        started = time.monotonic()
        threads = [threading.Thread(target=send) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        elapsed = time.monotonic() - started
    assert results == [{"predictions": [4]}] * 4
    assert elapsed < 3.0, f"4 one-second calls took {elapsed:.1f} s: not concurrent"


def test_a_call_over_the_timeout_gets_504_and_the_server_goes_on(tmp_path):
    app = create_app(slow_manager(2.0, tmp_path), rest_api_timeout_in_ms=200)
    with background_server(app) as url, httpx.Client(timeout=TIMEOUT) as client:
        slow = client.post(f"{url}/v1/models/slow:predict", json={"instances": ["slow"]})
        fast = client.post(f"{url}/v1/models/slow:predict", json={"instances": ["fast"]})
    assert slow.status_code == 504
    assert slow.json() == {
        "error": "Deadline exceeded: the model took longer than 200 ms (--rest_api_timeout_in_ms)"
    }
    assert fast.json() == {"predictions": [4]}


def test_bodies_over_the_limit_get_413_chunked_or_not(manager):
    app = create_app(manager, max_body_bytes=1000)
    body = b'{"instances": ["' + b"a" * 2000 + b'"]}'

    def chunks():
        yield body[:500]
        yield body[500:]

    with background_server(app) as url, httpx.Client(timeout=TIMEOUT) as client:
        sized = client.post(f"{url}/v1/models/tiny:predict", content=body)
        chunked = client.post(f"{url}/v1/models/tiny:predict", content=chunks())
        fine = client.post(f"{url}/v1/models/tiny:predict", json={"instances": ["a"]})
    assert sized.status_code == chunked.status_code == 413
    assert sized.json()["error"].startswith(
        "Request body of 2019 bytes is larger than this server's limit of 1000 bytes"
    )
    assert "--max_body_bytes" in chunked.json()["error"]
    assert fine.status_code == 200


def test_cors_headers_and_preflight_when_enabled(manager):
    with (
        background_server(create_app(manager, enable_cors=True)) as url,
        httpx.Client(timeout=TIMEOUT) as client,
    ):
        answer = client.get(f"{url}/v1/models/tiny")
        preflight = client.options(
            f"{url}/v1/models/tiny:predict", headers={"Origin": "http://localhost:3000"}
        )
        no_origin = client.options(f"{url}/v1/models/tiny:predict")
    assert answer.headers["access-control-allow-origin"] == "*"
    assert (
        preflight.status_code == 200
        and preflight.headers["access-control-allow-methods"] == "POST, GET"
    )
    assert no_origin.status_code == 400
    assert no_origin.json() == {"error": "Origin header is missing in CORS preflight"}


def test_a_request_in_flight_finishes_on_the_version_unloaded_under_it(tmp_path):
    manager = slow_manager(2.0, tmp_path)
    answers = []
    with background_server(create_app(manager)) as url:

        def send():
            with httpx.Client(timeout=TIMEOUT) as client:
                answers.append(
                    client.post(f"{url}/v1/models/slow:predict", json={"instances": ["slow"]})
                )

        in_flight = threading.Thread(target=send)
        in_flight.start()
        time.sleep(0.5)  # the request is inside version 1's model call
        (tmp_path / "slow" / "2").mkdir()
        manager.poll()  # loads version 2, unloads version 1
        assert [(s.version, s.state) for s in manager.version_states("slow")] == [
            (2, "AVAILABLE"),
            (1, "END"),
        ]
        in_flight.join(60)
        with httpx.Client(timeout=TIMEOUT) as client:
            after = client.post(
                f"{url}/v1/models/slow:predict", json={"instances": ["fast"]}
            ).json()
    assert answers[0].status_code == 200
    assert answers[0].json() == {"predictions": [4]}  # version 1's answer
    assert after == {"predictions": [14]}  # version 2's


def test_a_client_that_leaves_mid_body_costs_one_log_line(manager, caplog):
    caplog.set_level(logging.INFO, logger="kerasbert.serve")
    with background_server(create_app(manager)) as url, httpx.Client(timeout=TIMEOUT) as client:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            sock.sendall(
                b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: tiny\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                b'{"instances": ["the film'
            )
        assert wait_for(
            lambda: any(r.name == "kerasbert.serve" for r in caplog.records), DEADLINE
        ), "the server did not notice"
        assert len(predict(client, url, TEXTS[:1])) == 1
    ours = [r for r in caplog.records if r.name == "kerasbert.serve"]
    assert len(ours) == 1 and "disconnected" in ours[0].getMessage()
    assert [r for r in caplog.records if r.exc_info] == []
