"""`pooling: mean`: the pooled vector, padding, freezing, saving, export."""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbert.config_loading import config_from_dict
from kerasbert.data.pipeline import trim_to_longest
from kerasbert.models.layer_groups import layer_groups
from kerasbert.models.mean_pooling import MaskedMeanPooling, MeanPoolingClassifier
from kerasbert.models.tokenizers import TextEncoder
from tests.support.exports import assert_session_answers_like_tf2_load
from tests.support.tiny import QUICKSTART_CSV, tiny_classifier, tiny_config_dict

TEXTS = ["a fine film", "the plot was dull and the cast was flat", "great"]


def tiny(family):
    texts = TEXTS * 10 + [f"word{i} film plot cast" for i in range(40)]
    classifier, tokenizer = tiny_classifier(family, num_layers=2, pooling="mean", texts=texts)
    return classifier, TextEncoder(tokenizer, 32)


def test_masked_mean_is_the_mean_of_the_unmasked_vectors():
    sequence = np.arange(2 * 4 * 3, dtype="float32").reshape(2, 4, 3)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    pooled = MaskedMeanPooling()(sequence, mask)
    np.testing.assert_allclose(pooled, [sequence[0, :2].mean(0), sequence[1].mean(0)], rtol=1e-6)


def test_a_row_without_tokens_pools_to_zeros_not_nan():
    pooled = MaskedMeanPooling()(np.ones((1, 3, 2), "float32"), np.zeros((1, 3), bool))
    np.testing.assert_array_equal(pooled, [[0.0, 0.0]])


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_build_classifier_gives_mean_pooling_and_padding_does_not_change_the_logits(family):
    classifier, encoder = tiny(family)
    assert isinstance(classifier, MeanPoolingClassifier)
    inputs = encoder(tf.constant(TEXTS))
    trimmed = trim_to_longest(inputs)
    assert trimmed["token_ids"].shape[1] < inputs["token_ids"].shape[1]
    np.testing.assert_allclose(classifier(trimmed), classifier(inputs), atol=1e-5)
    # Each text alone gives what it gives in the batch.
    for index, text in enumerate(TEXTS):
        alone = classifier(trim_to_longest(encoder(tf.constant([text]))))
        np.testing.assert_allclose(alone[0], classifier(inputs)[index], atol=1e-5)


def test_bert_pooler_is_frozen_and_left_out_of_the_groups_and_of_training():
    classifier, encoder = tiny("bert")
    pooler = classifier.backbone.get_layer("pooled_dense")
    assert not pooler.trainable  # the classifier's doing; grouping the layers changes nothing
    groups = layer_groups(classifier)
    grouped = {id(layer) for layer in groups.embeddings + groups.transformer + groups.head}
    assert id(pooler) not in grouped
    assert not pooler.trainable
    assert [layer.name for layer in groups.head] == ["logits"]

    from kerasbert.models.layer_groups import build_optimizer_variables
    from kerasbert.training.optimizers import build_optimizer

    classifier.compile(
        optimizer=build_optimizer("adamw", 1e-2, layerwise_decay=0.8, groups=groups),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    build_optimizer_variables(classifier, groups)
    before = [v.numpy().copy() for v in pooler.weights]
    logits_layer = classifier.get_layer("logits")
    head_before = logits_layer.kernel.numpy().copy()
    inputs = {k: v.numpy() for k, v in encoder(tf.constant(TEXTS)).items()}
    classifier.fit(inputs, np.array([0, 1, 2]), epochs=2, verbose=0, shuffle=False)
    for old, variable in zip(before, pooler.weights):
        np.testing.assert_array_equal(variable.numpy(), old)
    assert not np.allclose(logits_layer.kernel.numpy(), head_before)


def test_saved_model_keras_reloads_in_a_fresh_process_with_the_same_logits(tmp_path):
    classifier, encoder = tiny("bert")
    inputs = {k: v.numpy() for k, v in encoder(tf.constant(TEXTS)).items()}
    np.savez(tmp_path / "inputs.npz", **inputs)
    np.save(tmp_path / "expected.npy", classifier.predict(inputs, verbose=0))
    classifier.save(tmp_path / "model.keras")
    # A new process has not imported the class yet: loading must register it.
    script = (
        "import os, sys, numpy as np; os.environ['KERAS_BACKEND'] = 'tensorflow'\n"
        "import keras, keras_hub\n"
        "import kerasbert.models.mean_pooling\n"
        "d = sys.argv[1]\n"
        "model = keras.saving.load_model(d + '/model.keras', compile=False)\n"
        "assert type(model).__name__ == 'MeanPoolingClassifier', type(model)\n"
        "inputs = dict(np.load(d + '/inputs.npz'))\n"
        "np.testing.assert_allclose(model.predict(inputs, verbose=0), np.load(d + '/expected.npy'), atol=1e-5)\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        check=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )


def test_a_mean_pooling_run_exports_from_its_run_directory_in_a_new_process(tmp_path):
    from kerasbert.training.run import train

    config = config_from_dict(
        tiny_config_dict(
            QUICKSTART_CSV,
            tmp_path,
            model={"pooling": "mean"},
            export={"enabled": False, "base_path": str(tmp_path / "sm")},
        )
    )
    result = train(config)
    done = subprocess.run(
        [sys.executable, "-m", "kerasbert.export", "--run", str(result.run_dir)],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = tf.saved_model.load(str(tmp_path / "sm" / "tiny" / "1"))
    out = loaded.signatures["serving_default"](text=tf.constant(["a superb film", "dull"]))
    np.testing.assert_allclose(tf.reduce_sum(out["probabilities"], -1), [1.0, 1.0], rtol=1e-5)
    assert_session_answers_like_tf2_load(tmp_path / "sm" / "tiny" / "1")
