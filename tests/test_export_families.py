"""Export of the other model shapes: a RoBERTa run and a sentence-pair run.

Each is trained for one epoch with training's own export turned off, then
exported from its run directory: RoBERTa through `export_run_dir`, the pair
model through the command line.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the ops of loaded exports)
from conftest import make_reviews, tiny_config_dict

from kerasbert import export

TEXTS = [
    "the film was superb and lovely",
    "the credits were dull",
    "",
    "naïve café 日本語 🎬🍿",
    " ".join(["brilliant"] * 200) + " awful",
    " ".join(["brilliant"] * 200) + " boring and flat",
]
PAIRS = ["is it worth the ticket?", "", "what about the cast?", "🍿", "runtime?", "release date"]


def train_run(tmp_path_factory, name, data_frame, **sections):
    from kerasbert.config import config_from_dict
    from kerasbert.training import train

    tmp = tmp_path_factory.mktemp(name)
    data_frame.to_csv(tmp / "data.csv", index=False)
    config = tiny_config_dict(tmp / "data.csv", tmp, export={"enabled": False}, **sections)
    result = train(config_from_dict(config))
    assert result.export_dir is None
    return result.run_dir, tmp / "saved_models"


def keras_probabilities(run_dir, texts, pairs=None, sequence_length=16):
    import keras

    from kerasbert.models import TextEncoder

    classifier = keras.saving.load_model(run_dir / "model.keras", compile=False)
    tokenizer = export._load_tokenizer(run_dir / "tokenizer")
    encoder = TextEncoder(tokenizer, sequence_length)
    inputs = encoder(tf.constant(texts), None if pairs is None else tf.constant(pairs))
    return tf.nn.softmax(classifier.predict(inputs, verbose=0)).numpy(), encoder


def replay_warmup(version_dir, loaded):
    """Runs each warm-up request against its signature; returns the signature names."""
    from tensorflow_serving.apis import prediction_log_pb2

    names = []
    for raw in tf.data.TFRecordDataset(str(version_dir / "assets.extra" / export.WARMUP_FILE)):
        record = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
        if record.HasField("predict_log"):
            request = record.predict_log.request
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        else:
            request = record.classify_log.request
            examples = [e.SerializeToString() for e in request.input.example_list.examples]
            inputs = {"inputs": tf.constant(examples)}
        batch = len(next(iter(inputs.values())).numpy())
        outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
        assert all(value.shape[0] == batch for value in outputs.values())
        names.append(request.model_spec.signature_name)
    return names


@pytest.fixture(scope="module")
def roberta_run(tmp_path_factory):
    return train_run(
        tmp_path_factory, "roberta", make_reviews(), family="roberta", training={"epochs": 1}
    )


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory):
    frame = make_reviews()
    frame["text_pair"] = [PAIRS[i % len(PAIRS)] or "why?" for i in range(len(frame))]
    return train_run(
        tmp_path_factory,
        "pair",
        frame,
        data={"text_pair_column": "text_pair"},
        training={"epochs": 1},
    )


def test_roberta_export_serves_raw_text_like_keras(roberta_run):
    run_dir, base_path = roberta_run
    version_dir = export.export_run_dir(run_dir, model_name="roberta")
    assert version_dir == base_path / "roberta" / "1"

    ops = export.check_ops(version_dir)
    assert {"RegexSplitWithOffsets", "TFText>RoundRobinTrim"} <= set(ops["text"])
    assets = version_dir / "assets"
    vocabulary = json.loads((assets / "vocabulary.json").read_text(encoding="utf-8"))
    assert {"<s>", "<pad>", "</s>", "<unk>", "<mask>"} <= set(vocabulary)
    assert sorted(vocabulary.values()) == list(range(len(vocabulary)))
    assert (assets / "merges.txt").read_text(encoding="utf-8").strip()
    assert not (assets / "vocabulary.txt").exists()
    summary = export.signature_summary(version_dir)
    assert summary["predict_tokens"]["inputs"] == {
        "token_ids": ("int32", (-1, -1)),
        "padding_mask": ("bool", (-1, -1)),
    }

    loaded = tf.saved_model.load(str(version_dir))
    out = loaded.signatures["serving_default"](text=tf.constant(TEXTS))
    probabilities, encoder = keras_probabilities(run_dir, TEXTS)
    np.testing.assert_allclose(out["probabilities"].numpy(), probabilities, atol=1e-5)
    assert out["label"].shape == (len(TEXTS),)
    np.testing.assert_array_equal(out["probabilities"][-1], out["probabilities"][-2])
    tokens = loaded.signatures["predict_tokens"](**encoder(tf.constant(TEXTS)))
    np.testing.assert_array_equal(tokens["probabilities"], out["probabilities"])
    assert sorted(set(replay_warmup(version_dir, loaded))) == [
        "classify",
        "predict_tokens",
        "serving_default",
    ]


def test_pair_export_takes_text_and_text_pair(pair_run, capsys):
    run_dir, base_path = pair_run
    assert export.main(["--run", str(run_dir), "--version", "3"]) == 0
    version_dir = base_path / "tiny" / "3"
    assert capsys.readouterr().out.strip() == f"exported: {version_dir}"

    summary = export.signature_summary(version_dir)
    assert summary["serving_default"]["inputs"] == {
        "text": ("string", (-1,)),
        "text_pair": ("string", (-1,)),
    }
    assert summary["classify"]["inputs"] == {"inputs": ("string", (-1,))}
    loaded = tf.saved_model.load(str(version_dir))
    serve = loaded.signatures["serving_default"]
    out = serve(text=tf.constant(TEXTS), text_pair=tf.constant(PAIRS))
    probabilities, _ = keras_probabilities(run_dir, TEXTS, PAIRS)
    np.testing.assert_allclose(out["probabilities"].numpy(), probabilities, atol=1e-5)

    examples = [
        export.make_example({"text": text, "text_pair": pair}).SerializeToString()
        for text, pair in zip(TEXTS, PAIRS)
    ]
    classified = loaded.signatures["classify"](inputs=tf.constant(examples))
    np.testing.assert_array_equal(classified["scores"], out["probabilities"])
    # Without its pair feature an example is classified with an empty pair.
    lone_example = export.make_example({"text": TEXTS[0]}).SerializeToString()
    lone = loaded.signatures["classify"](inputs=tf.constant([lone_example]))
    empty_pair = serve(text=tf.constant(TEXTS[:1]), text_pair=tf.constant([""]))
    np.testing.assert_array_equal(lone["scores"], empty_pair["probabilities"])
    assert "serving_default" in replay_warmup(version_dir, loaded)
