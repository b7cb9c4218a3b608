"""ServingClient against kerasbert.serve (in a background thread) over the
exported tiny BERT, and a small sentence-pair SavedModel made here."""

import shutil

import pytest
import tensorflow as tf

from kerasbert.client import ServingClient, ServingError
from kerasbert.serving.app import create_app
from kerasbert.serving.model_config import ServedModelConfig
from kerasbert.serving.model_manager import ModelManager
from tests.support.servers import background_server

TEXTS = [
    "the film was great and lovely",
    "the film was dull and boring",
    "the film was tickets and runtime",
    "the film was superb and fun",
    "the film was awful and flat",
]


class PairModel(tf.Module):
    """Says whether the two texts of a pair are the same, kerasbert-shaped."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="text"),
            tf.TensorSpec([None], tf.string, name="text_pair"),
        ]
    )
    def serving_default(self, text, text_pair):
        same = tf.cast(tf.equal(text, text_pair), tf.float32)
        probabilities = tf.stack([1.0 - same, same], axis=1)
        label_id = tf.cast(same, tf.int64)
        return {
            "probabilities": probabilities,
            "logits": probabilities,
            "label": tf.gather(tf.constant(["different", "same"]), label_id),
            "label_id": label_id,
        }


@pytest.fixture(scope="module")
def url(exported_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("client")
    shutil.copytree(exported_model, base / "tiny" / "3")
    module = PairModel()
    tf.saved_model.save(
        module, str(base / "pairs" / "1"), signatures={"serving_default": module.serving_default}
    )
    manager = ModelManager(
        [ServedModelConfig("tiny", base / "tiny"), ServedModelConfig("pairs", base / "pairs")],
        poll_wait_seconds=0,
    )
    manager.poll()
    with background_server(create_app(manager)) as server_url:
        yield server_url


def test_predict_keeps_order_across_batches(url):
    with ServingClient(url, "tiny") as client:
        one_by_one = [client.predict([text])[0] for text in TEXTS]
        batched = client.predict(TEXTS, batch_size=2)
    assert [label for label, _ in batched] == [label for label, _ in one_by_one]
    for (_, probabilities), (_, single) in zip(batched, one_by_one):
        assert probabilities == pytest.approx(single, abs=1e-5)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    assert {label for label, _ in batched} <= {"negative", "neutral", "positive"}


def test_predict_sends_sentence_pairs(url):
    with ServingClient(url, "pairs") as client:
        assert client.predict(["a", "b"], text_pairs=["a", "c"]) == [
            ("same", [0.0, 1.0]),
            ("different", [1.0, 0.0]),
        ]


def test_classify_gives_every_label_with_its_score(url):
    with ServingClient(url, "tiny") as client:
        [predicted] = client.predict(TEXTS[:1])
        [classes] = client.classify(TEXTS[:1])
    assert [label for label, _ in classes] == ["negative", "neutral", "positive"]
    assert [score for _, score in classes] == pytest.approx(predicted[1], abs=1e-5)


def test_status_metadata_and_a_named_version(url):
    client = ServingClient(url, "tiny", version=3)
    assert client.status()["model_version_status"][0]["version"] == "3"
    assert client.metadata()["model_spec"] == {"name": "tiny", "signature_name": "", "version": "3"}
    assert len(client.predict(TEXTS[:1])) == 1
    client.close()


def test_server_errors_raise_serving_error_with_the_server_message(url):
    with pytest.raises(
        ServingError, match=r"HTTP 404: Servable not found for request: Latest\(nope\)"
    ) as info:
        ServingClient(url, "nope").predict(["a"])
    assert isinstance(info.value, ValueError)
    assert info.value.status_code == 404
    assert info.value.server_message == "Servable not found for request: Latest(nope)"
    with pytest.raises(ServingError, match=r"Specific\(tiny, 9\)"):
        ServingClient(url, "tiny", version=9).predict(["a"])
    with pytest.raises(ServingError, match="expecting list of objects"):
        ServingClient(url, "pairs").predict(["a"])  # a pair model without pairs


def test_an_unreachable_server_raises_serving_error():
    with pytest.raises(ServingError, match="could not reach the server"):
        ServingClient("http://127.0.0.1:9", "tiny", timeout=5).predict(["a"])


def test_empty_input_sends_nothing():
    assert ServingClient("http://127.0.0.1:9", "tiny").predict([]) == []


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda c: c.predict("one text"),
            TypeError,
            "Expected a list of strings. Received: texts='one text'",
        ),
        (lambda c: c.predict(["a", 3]), TypeError, r"Received: texts\[1\]=3 \(int\)"),
        (
            lambda c: c.predict(["a"], text_pairs=["b", "c"]),
            ValueError,
            "Expected one pair per text",
        ),
        (
            lambda c: c.predict(["a"], batch_size=0),
            ValueError,
            "Expected an integer >= 1. Received: batch_size=0",
        ),
    ],
)
def test_bad_arguments_are_refused_before_any_request(call, error, message):
    with pytest.raises(error, match=message):
        call(ServingClient("http://127.0.0.1:9", "tiny"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"url": "localhost:8501", "model_name": "m"},
            "Expected the server's http://, https:// or grpc:// address",
        ),
        ({"url": "http://x", "model_name": ""}, "Expected a non-empty string"),
        ({"url": "http://x", "model_name": "m", "version": -1}, "Expected None or an integer >= 0"),
        ({"url": "http://x", "model_name": "m", "timeout": 0}, "Expected a number > 0"),
    ],
)
def test_constructor_checks_its_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ServingClient(**kwargs)
