"""Long texts (`model.truncation`, `model.long_text`): the same in training, evaluation and the export.

Two tiny models are trained on texts whose label is only their last word,
far past `sequence_length`: one with `head_tail` truncation, one with
sliding windows. Their exports read that word, while a `head` export (the
shared tiny run's) answers the same whatever the word.
"""

import json
import random
import re

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from kerasbert.models.classifier import text_encoder
from kerasbert.models.tokenizers import TextEncoder, keep_head_and_tail
from tests.support.tiny import tiny_classifier, tiny_config_dict

SEQUENCE_LENGTH = 16
FILLER = ["the", "film", "plot", "cast", "music", "scene", "story", "actor", "set", "light"]
VERDICTS = {"positive": "superb", "negative": "awful"}
# `export.max_characters` of the trained run: its long reviews are about 250 characters.
MAX_CHARACTERS = 1000


def long_review(rng, verdict, words=30) -> str:
    """`words` neutral words, then the verdict: well past `SEQUENCE_LENGTH` tokens."""
    return " ".join(rng.choice(FILLER) for _ in range(words)) + f" overall {verdict}"


def make_long_reviews(n=160, seed=0) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(VERDICTS)[i % 2]
        rows.append(
            {"text": long_review(rng, VERDICTS[label], rng.randint(20, 40)), "label": label}
        )
    return pd.DataFrame(rows)


# === Ragged truncation ===


@pytest.mark.parametrize(
    "head, tail, expected",
    [
        (5, 0, [[1, 2, 3, 4, 5], [6, 7], []]),
        (0, 3, [[5, 6, 7], [6, 7], []]),
        (2, 3, [[1, 2, 5, 6, 7], [6, 7], []]),
        (1, 1, [[1, 7], [6, 7], []]),
    ],
)
def test_keep_head_and_tail_keeps_the_first_and_last_ids_of_long_rows(head, tail, expected):
    ids = tf.ragged.constant([[1, 2, 3, 4, 5, 6, 7], [6, 7], []], dtype=tf.int32)
    assert keep_head_and_tail(ids, head, tail).to_list() == expected


@pytest.fixture(scope="module", params=["bert", "roberta"])
def tokenizer(request):
    return tiny_classifier(family=request.param, num_layers=1)[1]


LONG = "the film was good the plot was bad the cast was dull the music was great"


def test_each_truncation_keeps_its_tokens_in_a_graph_as_eagerly(tokenizer):
    text = tf.constant([LONG, "the plot"])
    ids, short = tokenizer(text)
    assert len(ids) > 6 and len(short) <= 6
    family = TextEncoder(tokenizer, 8).family
    start, end = (
        (tokenizer.cls_token_id, tokenizer.sep_token_id)
        if family == "bert"
        else (tokenizer.start_token_id, tokenizer.end_token_id)
    )
    # 8 tokens: two special ones and 6 of the text; head_tail's default head is 8 // 4.
    expected = {"head": ids[:6], "tail": ids[-6:], "head_tail": ids[:2] + ids[-4:]}
    for truncation, kept in expected.items():
        encoder = TextEncoder(tokenizer, 8, truncation=truncation)
        encodings = [encoder(text)]
        if truncation == "head_tail":
            # One traced graph (as in tf.data and the export) suffices: tracing a
            # tokenizer takes seconds, and every truncation runs the same ops.
            graph = tf.function(encoder, input_signature=[tf.TensorSpec([None], tf.string)])
            encodings.append(graph(text))
        for encoded in encodings:
            token_ids = encoded["token_ids"].numpy().tolist()
            assert token_ids[0] == [start, *kept, end], truncation
            # A text that fits is kept whole.
            assert token_ids[1][: len(short) + 2] == [start, *short, end], truncation


def test_head_tokens_sets_the_head_of_head_tail(tokenizer):
    text = tf.constant([LONG])
    (ids,) = tokenizer(text)
    encoder = TextEncoder(tokenizer, 8, truncation="head_tail", head_tokens=4)
    assert encoder(text)["token_ids"].numpy()[0, 1:-1].tolist() == ids[:4] + ids[-2:]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"truncation": "middle"}, "Invalid value for argument `truncation`"),
        ({"truncation": "head_tail", "head_tokens": 14}, r"head_tokens < sequence_length - 2"),
    ],
)
def test_text_encoder_refuses_bad_truncation(tokenizer, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TextEncoder(tokenizer, SEQUENCE_LENGTH, **kwargs)


def test_sentence_pairs_refuse_tail_truncation(tokenizer):
    encoder = TextEncoder(tokenizer, SEQUENCE_LENGTH, truncation="tail")
    with pytest.raises(ValueError, match="for single texts; sentence pairs"):
        encoder(tf.constant(["a"]), tf.constant(["b"]))


@pytest.mark.parametrize(
    "model, data, message",
    [
        ({"head_tokens": 3}, {}, r"model: `head_tokens` is for `truncation: head_tail`"),
        (
            {"truncation": "head_tail", "head_tokens": 14},
            {},
            r"model: head_tokens \(14\) must be below sequence_length - 2 \(14",
        ),
        (
            {"truncation": "tail"},
            {"text_pair_column": "pair"},
            r"model.truncation 'tail' is for single texts; sentence pairs",
        ),
    ],
)
def test_config_refuses_truncation_it_cannot_apply(tmp_path, model, data, message):
    from kerasbert.config import ConfigError
    from kerasbert.config_loading import config_from_dict

    config = tiny_config_dict(tmp_path / "x.csv", tmp_path, model=model, data=data)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(config)


# === A verdict past `sequence_length` ===


def train_on_long_reviews(tmp_path_factory, name, **sections):
    """A tiny BERT trained on long reviews whose label is their last word."""
    from kerasbert.config_loading import config_from_dict
    from kerasbert.training.run import train

    tmp = tmp_path_factory.mktemp(name)
    data = tmp / "long_reviews.csv"
    make_long_reviews().to_csv(data, index=False)
    return train(config_from_dict(tiny_config_dict(data, tmp, **sections)))


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    """Trained with `head_tail`."""
    return train_on_long_reviews(
        tmp_path_factory,
        "long_reviews",
        # Mean pooling learns the one decisive word in a few steps; [CLS] takes longer.
        model={"truncation": "head_tail", "pooling": "mean"},
        training={"epochs": 6, "learning_rate": 1e-2},
        export={"max_characters": MAX_CHARACTERS},
    )


@pytest.fixture(scope="module")
def windows_run(tmp_path_factory):
    """Trained with sliding windows, attention-pooled."""
    return train_on_long_reviews(
        tmp_path_factory,
        "long_reviews_windows",
        # Reviews of up to 45 tokens: 5 windows of 14 tokens, 10 apart, cover them.
        model={"pooling": "mean", "long_text": {"windows": 6, "pooling": "attention"}},
        # Which window holds the verdict is learned too: slower than head_tail's.
        training={"epochs": 20, "learning_rate": 1e-2},
    )


LONG_RUNS = ["long_run", "windows_run"]


def verdict_pair(seed=1):
    """Two long reviews that differ only in their last word, a verdict past `sequence_length`."""
    rng = random.Random(seed)
    start = " ".join(rng.choice(FILLER) for _ in range(40))
    return [f"{start} overall {VERDICTS['positive']}", f"{start} overall {VERDICTS['negative']}"]


def served_by_tf2_and_tf1(version_dir, texts):
    """`(labels, probabilities)` from `tf.saved_model.load`, checked equal to a TF1 Session's."""
    from kerasbert.serving.saved_model_bundle import SavedModelBundle

    loaded = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    outputs = loaded(text=tf.constant(texts))
    bundle = SavedModelBundle(version_dir)
    session = bundle.run("serving_default", {"text": np.array(texts, dtype=object)})
    bundle.close()
    np.testing.assert_allclose(session["probabilities"], outputs["probabilities"], atol=1e-6)
    np.testing.assert_array_equal(session["label"], outputs["label"].numpy())
    return [label.decode() for label in session["label"]], session["probabilities"]


@pytest.mark.parametrize("run", LONG_RUNS)
def test_the_verdict_past_sequence_length_decides_head_tail_and_windows_exports(request, run):
    run = request.getfixturevalue(run)
    texts = verdict_pair()
    from kerasbert import rundir
    from kerasbert.models.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(run.run_dir / rundir.TOKENIZER)
    assert len(tokenizer(tf.constant(texts[:1]))[0]) > 2 * SEQUENCE_LENGTH
    labels, _ = served_by_tf2_and_tf1(run.export_dir, texts)
    assert labels == ["positive", "negative"]


def test_the_verdict_past_sequence_length_is_lost_to_a_head_export(exported_model):
    # The shared tiny run's export truncates as `model.truncation` does by default.
    labels, probabilities = served_by_tf2_and_tf1(exported_model, verdict_pair())
    assert labels[0] == labels[1]
    np.testing.assert_array_equal(probabilities[0], probabilities[1])
    # Within its tokens, the verdict does move this model.
    _, seen = served_by_tf2_and_tf1(exported_model, [f"overall {v}" for v in VERDICTS.values()])
    assert np.abs(seen[0] - seen[1]).max() > 1e-5


def test_the_local_server_answers_as_the_exports(long_run, windows_run, exported_model):
    from kerasbert.client import ServingClient
    from kerasbert.serving.app import create_app
    from kerasbert.serving.model_config import ServedModelConfig
    from kerasbert.serving.model_manager import ModelManager
    from tests.support.servers import background_server

    texts = verdict_pair()
    manager = ModelManager(
        [
            ServedModelConfig("head_tail", long_run.export_dir.parent),
            ServedModelConfig("windows", windows_run.export_dir.parent),
            ServedModelConfig("head", exported_model.parent),
        ],
        poll_wait_seconds=0,
    )
    manager.poll()
    answers = {}
    with background_server(create_app(manager)) as url:
        for name in ("head_tail", "windows", "head"):
            with ServingClient(url, name) as client:
                answers[name] = client.predict(texts), client.classify(texts)
    for name in ("head_tail", "windows"):
        predicted, classified = answers[name]
        assert [label for label, _ in predicted] == ["positive", "negative"], name
        assert [max(scores, key=lambda pair: pair[1])[0] for scores in classified] == [
            "positive",
            "negative",
        ], name
    head, _ = answers["head"]
    assert head[0] == head[1]


@pytest.mark.parametrize("run", LONG_RUNS)
def test_pipeline_evaluate_and_saved_model_agree_on_long_texts(request, run):
    import keras

    from kerasbert import rundir
    from kerasbert.config_loading import load_config
    from kerasbert.data.pipeline import encode_texts, make_dataset
    from kerasbert.evaluation.saved_model_classifier import SavedModelClassifier
    from kerasbert.models.tokenizers import load_tokenizer

    run = request.getfixturevalue(run)
    # Long and short texts in one batch: the short ones' windows are padding.
    texts = [*verdict_pair(), *make_long_reviews(6, seed=3)["text"], "overall superb"]
    # The encoder training used, from the run's config.
    model_config = load_config(run.run_dir / rundir.CONFIG).model
    encoder = text_encoder(model_config, load_tokenizer(run.run_dir / rundir.TOKENIZER))
    assert encoder.truncation == "head_tail" or encoder.windows == 6
    classifier = keras.saving.load_model(run.run_dir / rundir.MODEL, compile=False)
    logits = classifier.predict(make_dataset(encode_texts(encoder, texts), batch_size=4), verbose=0)
    # The export divides the logits by the temperature the run fitted.
    head = json.loads((run.run_dir / "labels.json").read_text())["head"]
    pipeline = tf.nn.softmax(logits / head["temperature"]).numpy()
    _, evaluated = SavedModelClassifier(run.export_dir)(texts)
    loaded = tf.saved_model.load(str(run.export_dir)).signatures["serving_default"]
    saved_model = loaded(text=tf.constant(texts))["probabilities"].numpy()
    np.testing.assert_allclose(evaluated, pipeline, rtol=0, atol=1e-5)
    np.testing.assert_allclose(saved_model, pipeline, rtol=0, atol=1e-5)


# === export.max_characters ===


def test_a_text_over_max_characters_is_refused_everywhere_the_export_runs(
    long_run, tmp_path, capsys
):
    import httpx

    from kerasbert import predict
    from kerasbert.serving.app import create_app
    from kerasbert.serving.model_config import ServedModelConfig
    from kerasbert.serving.model_manager import ModelManager
    from kerasbert.serving.saved_model_bundle import SavedModelBundle
    from tests.support.servers import background_server

    version_dir = long_run.export_dir
    # Characters, not bytes: 1000 two-byte characters are within the limit.
    at_limit, over = "é" * MAX_CHARACTERS, "superb " * 200
    message = f"a text has] [{len(over)}] [characters, more than the {MAX_CHARACTERS} this model"
    loaded = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    assert loaded(text=tf.constant([at_limit]))["label"].shape == (1,)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        loaded(text=tf.constant([at_limit, over]))
    bundle = SavedModelBundle(version_dir)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        bundle.run("serving_default", {"text": np.array([over], dtype=object)})
    bundle.close()

    manager = ModelManager([ServedModelConfig("long", version_dir.parent)], poll_wait_seconds=0)
    manager.poll()
    with background_server(create_app(manager)) as url:
        model_url = f"{url}/v1/models/long"
        fits = httpx.post(f"{model_url}:predict", json={"instances": [at_limit]}, timeout=60)
        refused = httpx.post(f"{model_url}:predict", json={"instances": [over]}, timeout=60)
        classify = httpx.post(
            f"{model_url}:classify",
            json={"signature_name": "classify", "examples": [{"text": over}]},
            timeout=60,
        )
    assert fits.status_code == 200
    for response in (refused, classify):
        assert response.status_code == 400, response.text
        assert message in response.json()["error"]

    data = tmp_path / "long.csv"
    pd.DataFrame({"text": ["overall superb", over]}).to_csv(data, index=False)
    argv = ["--model", str(version_dir), "--input", str(data), "--output", str(tmp_path / "p.csv")]
    argv.append("--no-progress")
    capsys.readouterr()
    assert predict.main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {version_dir}: ") and message in line
    assert not (tmp_path / "p.csv").exists()
