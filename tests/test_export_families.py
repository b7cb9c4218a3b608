"""Export of the other model shapes: a RoBERTa model on sentence pairs.

One run covers both (training is the slow part): a tiny RoBERTa trained for
one epoch on (text, text_pair) rows with training's own export turned off,
then exported from its run directory by the command line.
"""

import contextlib
import io
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
PAIRS = ["is it worth the ticket?", "", "what about the cast?", "🍿", "runtime?", "runtime?"]


@pytest.fixture(scope="module")
def pair_export(tmp_path_factory):
    """`(run_dir, version_dir, what the CLI printed, the loaded SavedModel)`."""
    from kerasbert.config import config_from_dict
    from kerasbert.training import train

    tmp = tmp_path_factory.mktemp("roberta_pair")
    frame = make_reviews()
    frame["text_pair"] = [PAIRS[i % len(PAIRS)] or "why?" for i in range(len(frame))]
    frame.to_csv(tmp / "pairs.csv", index=False)
    config = tiny_config_dict(
        tmp / "pairs.csv",
        tmp,
        family="roberta",
        data={"text_pair_column": "text_pair"},
        training={"epochs": 1},
        export={"enabled": False},
    )
    result = train(config_from_dict(config))
    assert result.export_dir is None

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = export.main(["--run", str(result.run_dir), "--version", "3"])
    assert status == 0
    version_dir = tmp / "saved_models" / "tiny" / "3"
    return result.run_dir, version_dir, printed.getvalue(), tf.saved_model.load(str(version_dir))


def keras_probabilities(run_dir, texts, pairs, sequence_length=16):
    import keras

    from kerasbert.models import TextEncoder

    classifier = keras.saving.load_model(run_dir / "model.keras", compile=False)
    tokenizer = export._load_tokenizer(run_dir / "tokenizer")
    encoder = TextEncoder(tokenizer, sequence_length)
    inputs = encoder(tf.constant(texts), tf.constant(pairs))
    return tf.nn.softmax(classifier.predict(inputs, verbose=0)).numpy(), inputs


def test_cli_exports_the_run_with_byte_pair_assets_and_text_ops(pair_export):
    _, version_dir, printed, _ = pair_export
    assert printed.strip() == f"exported: {version_dir}"
    assets = version_dir / "assets"
    vocabulary = json.loads((assets / "vocabulary.json").read_text(encoding="utf-8"))
    assert {"<s>", "<pad>", "</s>", "<unk>", "<mask>"} <= set(vocabulary)
    assert sorted(vocabulary.values()) == list(range(len(vocabulary)))
    assert (assets / "merges.txt").read_text(encoding="utf-8").strip()
    assert not (assets / "vocabulary.txt").exists()
    ops = export.check_ops(version_dir)
    assert {"RegexSplitWithOffsets", "TFText>RoundRobinTrim"} <= set(ops["text"])


def test_pair_signatures_take_text_and_text_pair(pair_export):
    _, version_dir, _, _ = pair_export
    summary = export.signature_summary(version_dir)
    assert summary["serving_default"]["inputs"] == {
        "text": ("string", (-1,)),
        "text_pair": ("string", (-1,)),
    }
    assert summary["predict_tokens"]["inputs"] == {
        "token_ids": ("int32", (-1, -1)),
        "padding_mask": ("bool", (-1, -1)),
    }
    assert summary["classify"]["inputs"] == {"inputs": ("string", (-1,))}


def test_roberta_pair_model_serves_raw_text_like_keras(pair_export):
    run_dir, _, _, loaded = pair_export
    out = loaded.signatures["serving_default"](text=tf.constant(TEXTS), text_pair=tf.constant(PAIRS))
    probabilities, tokens = keras_probabilities(run_dir, TEXTS, PAIRS)
    np.testing.assert_allclose(out["probabilities"].numpy(), probabilities, atol=1e-5)
    assert out["label"].shape == (len(TEXTS),)
    # The last two texts differ only far past the sequence length.
    np.testing.assert_array_equal(out["probabilities"][-1], out["probabilities"][-2])
    from_tokens = loaded.signatures["predict_tokens"](**tokens)
    np.testing.assert_array_equal(from_tokens["probabilities"], out["probabilities"])


def test_classify_reads_text_and_text_pair_features(pair_export):
    _, _, _, loaded = pair_export
    serve = loaded.signatures["serving_default"]
    classify = loaded.signatures["classify"]
    examples = [
        export.make_example({"text": text, "text_pair": pair}).SerializeToString()
        for text, pair in zip(TEXTS, PAIRS)
    ]
    classified = classify(inputs=tf.constant(examples))
    expected = serve(text=tf.constant(TEXTS), text_pair=tf.constant(PAIRS))["probabilities"]
    np.testing.assert_array_equal(classified["scores"], expected)
    assert classified["classes"].shape == (len(TEXTS), 3)
    # An example without its pair feature is classified with an empty pair.
    lone = export.make_example({"text": TEXTS[0]}).SerializeToString()
    np.testing.assert_array_equal(
        classify(inputs=tf.constant([lone]))["scores"],
        serve(text=tf.constant(TEXTS[:1]), text_pair=tf.constant([""]))["probabilities"],
    )


def test_pair_warmup_requests_run_against_their_signatures(pair_export):
    from tensorflow_serving.apis import prediction_log_pb2

    _, version_dir, _, loaded = pair_export
    signatures = []
    for raw in tf.data.TFRecordDataset(str(version_dir / "assets.extra" / export.WARMUP_FILE)):
        record = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
        if record.HasField("predict_log"):
            request = record.predict_log.request
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        else:
            request = record.classify_log.request
            examples = request.input.example_list.examples
            assert all("text_pair" in e.features.feature for e in examples)
            inputs = {"inputs": tf.constant([e.SerializeToString() for e in examples])}
        batch = len(next(iter(inputs.values())).numpy())
        outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
        assert all(value.shape[0] == batch for value in outputs.values())
        signatures.append(request.model_spec.signature_name)
    assert sorted(set(signatures)) == ["classify", "predict_tokens", "serving_default"]
