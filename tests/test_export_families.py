"""Export of the other model shapes: RoBERTa, and a BERT on sentence pairs.

The RoBERTa model is built but not trained (`build_classifier`, then
`export_model`): parity and the op check don't need trained weights, and a
RoBERTa run's tokenization alone takes half a minute. The pair model is a
real one-epoch run, exported from its run directory by the command line.
"""

import contextlib
import io
import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the ops of loaded exports)

from kerasbert import export
from kerasbert.exporting.exporter import export_model, tokenizer_assets
from kerasbert.exporting.inspection import signature_summary
from kerasbert.exporting.op_check import check_ops
from kerasbert.exporting.warmup import make_example
from kerasbert.models.tokenizers import load_tokenizer
from kerasbert.serving.saved_model_bundle import WARMUP_FILE
from tests.support.exports import assert_session_answers_like_tf2_load
from tests.support.tiny import make_reviews, tiny_config_dict

LABELS = ["bad", "good", "info"]
TEXTS = [
    "the film was superb and lovely",
    "the credits were dull",
    "",
    "   ",
    "naïve café 日本語 🎬🍿",
    " ".join(["brilliant"] * 200) + " awful",
    " ".join(["brilliant"] * 200) + " boring and flat",
]
PAIRS = ["is it worth the ticket?", "", "the cast?", "🍿", "é", "runtime?", "runtime?"]


def replay_warmup(version_dir, loaded):
    """Runs each warm-up request against the signature it names."""
    from tensorflow_serving.apis import prediction_log_pb2

    signatures = []
    for raw in tf.data.TFRecordDataset(str(version_dir / "assets.extra" / WARMUP_FILE)):
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
        signatures.append(request.model_spec.signature_name)
    return sorted(set(signatures))


# === RoBERTa ===


@pytest.fixture(scope="module")
def roberta(tmp_path_factory):
    """`(classifier, tokenizer, version_dir, loaded SavedModel)`, untrained."""
    from kerasbert.config_loading import config_from_dict
    from kerasbert.models.classifier import build_classifier

    tmp = tmp_path_factory.mktemp("roberta")
    texts = make_reviews()["text"].tolist()
    config = config_from_dict(tiny_config_dict(tmp / "unused.csv", tmp, family="roberta"))
    classifier, tokenizer = build_classifier(config.model, len(LABELS), texts=texts)
    version_dir = export_model(
        classifier,
        tokenizer,
        config.model.sequence_length,
        LABELS,
        tmp / "saved_models",
        "roberta",
        assets=tokenizer_assets(tokenizer),
    )
    return classifier, tokenizer, version_dir, tf.saved_model.load(str(version_dir))


def test_roberta_export_passes_the_op_check_with_byte_pair_assets(roberta):
    _, tokenizer, version_dir, _ = roberta
    ops = check_ops(version_dir)
    assert {"RegexSplitWithOffsets", "TFText>RoundRobinTrim"} <= set(ops["text"])
    assets = version_dir / "assets"
    vocabulary = json.loads((assets / "vocabulary.json").read_text(encoding="utf-8"))
    assert vocabulary == tokenizer.vocabulary
    merges = (assets / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges == list(tokenizer.merges)
    assert not (assets / "vocabulary.txt").exists()
    assert signature_summary(version_dir)["predict_tokens"]["inputs"] == {
        "token_ids": ("int32", (-1, -1)),
        "padding_mask": ("bool", (-1, -1)),
    }


def test_roberta_export_serves_raw_text_like_keras(roberta):
    from kerasbert.models.tokenizers import TextEncoder

    classifier, tokenizer, version_dir, loaded = roberta
    tokens = TextEncoder(tokenizer, 16)(tf.constant(TEXTS))
    probabilities = tf.nn.softmax(classifier.predict(tokens, verbose=0)).numpy()
    out = loaded.signatures["serving_default"](text=tf.constant(TEXTS))
    np.testing.assert_allclose(out["probabilities"].numpy(), probabilities, atol=1e-5)
    assert out["label"].shape == (len(TEXTS),)
    # The last two texts differ only far past the sequence length.
    np.testing.assert_array_equal(out["probabilities"][-1], out["probabilities"][-2])
    from_tokens = loaded.signatures["predict_tokens"](**tokens)
    np.testing.assert_array_equal(from_tokens["probabilities"], out["probabilities"])
    assert replay_warmup(version_dir, loaded) == ["classify", "predict_tokens", "serving_default"]


def test_roberta_tokenizer_reloads_from_a_run_directory(roberta, tmp_path):
    _, tokenizer, _, _ = roberta
    tokenizer.save_to_preset(str(tmp_path / "tokenizer"))
    reloaded = load_tokenizer(tmp_path / "tokenizer")
    assert type(reloaded) is type(tokenizer)
    # keras-hub hands ragged eager results back as lists of ids.
    ids = tokenizer(tf.constant(TEXTS))
    assert isinstance(ids, list) and len(ids) == len(TEXTS) and len(ids[0]) > 1
    assert reloaded(tf.constant(TEXTS)) == ids


# === Sentence pairs ===


@pytest.fixture(scope="module")
def pair_export(tmp_path_factory):
    """`(run_dir, version_dir, what the CLI printed, loaded SavedModel)` of a BERT pair run."""
    from kerasbert.config_loading import config_from_dict
    from kerasbert.training.run import train

    tmp = tmp_path_factory.mktemp("pair")
    frame = make_reviews()
    frame["text_pair"] = [PAIRS[i % len(PAIRS)] or "why?" for i in range(len(frame))]
    frame.to_csv(tmp / "pairs.csv", index=False)
    config = tiny_config_dict(
        tmp / "pairs.csv",
        tmp,
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


def test_roberta_export_answers_in_a_session_like_tf2_load(roberta):
    assert_session_answers_like_tf2_load(roberta[2])


def test_pair_export_answers_in_a_session_like_tf2_load(pair_export):
    assert_session_answers_like_tf2_load(pair_export[1])


def test_cli_exports_a_pair_run_whose_signatures_take_text_and_text_pair(pair_export):
    _, version_dir, printed, _ = pair_export
    assert printed.strip() == f"exported: {version_dir}"
    summary = signature_summary(version_dir)
    assert summary["serving_default"]["inputs"] == {
        "text": ("string", (-1,)),
        "text_pair": ("string", (-1,)),
    }
    assert summary["predict_tokens"]["inputs"] == {
        "token_ids": ("int32", (-1, -1)),
        "padding_mask": ("bool", (-1, -1)),
        "segment_ids": ("int32", (-1, -1)),
    }
    assert summary["classify"]["inputs"] == {"inputs": ("string", (-1,))}


def test_pair_model_serves_like_keras_and_classifies_pair_examples(pair_export):
    import keras

    from kerasbert.models.tokenizers import TextEncoder

    run_dir, version_dir, _, loaded = pair_export
    classifier = keras.saving.load_model(run_dir / "model.keras", compile=False)
    encoder = TextEncoder(load_tokenizer(run_dir / "tokenizer"), 16)
    tokens = encoder(tf.constant(TEXTS), tf.constant(PAIRS))
    # The export divides the logits by the temperature the run fitted.
    temperature = json.loads((run_dir / "labels.json").read_text())["head"]["temperature"]
    probabilities = tf.nn.softmax(classifier.predict(tokens, verbose=0) / temperature).numpy()

    serve = loaded.signatures["serving_default"]
    out = serve(text=tf.constant(TEXTS), text_pair=tf.constant(PAIRS))
    np.testing.assert_allclose(out["probabilities"].numpy(), probabilities, atol=1e-5)
    np.testing.assert_array_equal(out["probabilities"][-1], out["probabilities"][-2])

    classify = loaded.signatures["classify"]
    examples = [
        make_example({"text": text, "text_pair": pair}).SerializeToString()
        for text, pair in zip(TEXTS, PAIRS)
    ]
    scores = classify(inputs=tf.constant(examples))["scores"]
    np.testing.assert_array_equal(scores, out["probabilities"])
    # An example without its pair feature is classified with an empty pair.
    lone = make_example({"text": TEXTS[0]}).SerializeToString()
    np.testing.assert_array_equal(
        classify(inputs=tf.constant([lone]))["scores"],
        serve(text=tf.constant(TEXTS[:1]), text_pair=tf.constant([""]))["probabilities"],
    )
    assert replay_warmup(version_dir, loaded) == ["classify", "predict_tokens", "serving_default"]
