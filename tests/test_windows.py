"""Sliding windows (`model.long_text`): splitting, encoding, pooling, saving, freezing, config.

The end-to-end checks (a verdict past `sequence_length` decides a windowed
export through the TF2 loader, a TF1 Session and the local server; pipeline,
`evaluate` and the SavedModel agree) are in `tests/test_truncation.py`.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbert.data.pipeline import encode_texts, make_dataset, trim_to_longest
from kerasbert.models.tokenizers import TextEncoder, split_into_windows
from kerasbert.models.windows import POOLINGS, WindowedClassifier
from tests.support.tiny import tiny_classifier, tiny_config_dict

WORDS = "the film was good the plot was bad the cast was dull the music was great and then some"


# === Splitting ===


@pytest.mark.parametrize(
    "length, stride, windows, expected",
    [
        # Windows start every `stride` ids; the last ends at the row's end.
        (3, 2, 4, [[[1, 2, 3], [3, 4, 5], [5, 6, 7]], [[8]], [[]]]),
        # As few windows as cover the row.
        (4, 3, 4, [[[1, 2, 3, 4], [4, 5, 6, 7]], [[8]], [[]]]),
        # No overlap.
        (3, 3, 4, [[[1, 2, 3], [4, 5, 6], [7]], [[8]], [[]]]),
        # Out of windows: the ids past the last one are dropped.
        (3, 2, 2, [[[1, 2, 3], [3, 4, 5]], [[8]], [[]]]),
    ],
)
def test_split_into_windows(length, stride, windows, expected):
    ids = tf.ragged.constant([[1, 2, 3, 4, 5, 6, 7], [8], []], dtype=tf.int32)
    assert split_into_windows(ids, length, stride, windows).to_list() == expected
    graph = tf.function(
        lambda x: split_into_windows(x, length, stride, windows),
        input_signature=[tf.RaggedTensorSpec([None, None], tf.int32)],
    )
    assert graph(ids).to_list() == expected


@pytest.fixture(scope="module", params=["bert", "roberta"])
def tiny(request):
    """`(classifier, tokenizer)`: a tiny untrained model of each family."""
    return tiny_classifier(family=request.param, num_layers=1)


def test_encoder_packs_each_window_with_its_own_special_tokens(tiny):
    _, tokenizer = tiny
    (ids,) = tokenizer(tf.constant([WORDS]))
    ids = list(ids)
    encoder = TextEncoder(tokenizer, 8, windows=5, stride=4)
    plain = TextEncoder(tokenizer, 8)
    start, end = (
        (tokenizer.cls_token_id, tokenizer.sep_token_id)
        if plain.family == "bert"
        else (tokenizer.start_token_id, tokenizer.end_token_id)
    )
    encoded = encoder(tf.constant([WORDS, "the plot"]))
    token_ids = encoded["token_ids"].numpy()
    assert token_ids.shape == (2, 5, 8)
    needed = min(5, 1 + -(-(len(ids) - 6) // 4))
    for k in range(needed):
        window = ids[4 * k : 4 * k + 6]
        row = token_ids[0, k].tolist()
        assert row[: len(window) + 2] == [start, *window, end], k
    mask = encoded["padding_mask"].numpy()
    # Unneeded windows are all padding; the short text has one window, as plain encoding gives it.
    assert mask[0, needed:].sum() == 0 and mask[1, 1:].sum() == 0
    np.testing.assert_array_equal(
        token_ids[1, 0], plain(tf.constant(["the plot"]))["token_ids"].numpy()[0]
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"truncation": "tail", "windows": 2}, "Expected truncation='head'"),
        ({"windows": 2, "stride": 7}, "0 < stride <= sequence_length - 2 = 6"),
        ({"windows": 0}, "windows >= 1"),
    ],
)
def test_encoder_refuses_windows_it_cannot_read(tiny, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TextEncoder(tiny[1], 8, **kwargs)


def test_encoder_refuses_windows_of_sentence_pairs(tiny):
    encoder = TextEncoder(tiny[1], 8, windows=2)
    with pytest.raises(ValueError, match="sliding windows are for single texts"):
        encoder(tf.constant(["a"]), tf.constant(["b"]))


def test_batches_are_cut_to_their_windows_and_longest_window():
    encoded = {
        "token_ids": tf.constant([[[2, 5, 3, 0], [0, 0, 0, 0]], [[2, 3, 0, 0], [0, 0, 0, 0]]]),
    }
    encoded["padding_mask"] = encoded["token_ids"] != 0
    trimmed = trim_to_longest(encoded, multiple=1)
    assert trimmed["token_ids"].shape == (2, 1, 3)
    encoded["token_ids"] = tf.constant([[[2, 5, 3, 0], [2, 3, 0, 0]], [[2, 3, 0, 0], [0] * 4]])
    encoded["padding_mask"] = encoded["token_ids"] != 0
    assert trim_to_longest(encoded, multiple=4)["token_ids"].shape == (2, 2, 4)


# === Pooling ===


def windowed(tiny, pooling):
    classifier, _ = tiny
    keras.utils.set_random_seed(1)
    return WindowedClassifier(classifier, pooling=pooling)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_pooling_uses_only_real_windows(tiny, pooling):
    model = windowed(tiny, pooling)
    encoder = TextEncoder(tiny[1], 8, windows=6, stride=4)
    texts = [WORDS, "the plot", WORDS[:40]]
    inputs = trim_to_longest(encoder(tf.constant(texts)), multiple=1)
    pooled = model.run_all_windows(inputs).numpy()
    # `infer` (inference's, the serving graph's) runs only the real windows, to the same answer.
    np.testing.assert_allclose(model.infer(inputs).numpy(), pooled, atol=1e-5)
    np.testing.assert_allclose(model(inputs).numpy(), pooled, atol=1e-5)
    # Each text alone, with no padding windows: the same logits.
    for i, text in enumerate(texts):
        alone = trim_to_longest(encoder(tf.constant([text])), multiple=1)
        np.testing.assert_allclose(model(alone).numpy()[0], pooled[i], atol=1e-5)
    # A text of one window is that window's logits, as `predict_tokens`' one-window inputs give.
    one = TextEncoder(tiny[1], 8)(tf.constant(["the plot"]))
    np.testing.assert_allclose(model(one).numpy()[0], pooled[1], atol=1e-5)


def test_each_pooling_is_what_it_says(tiny):
    # Three classes, as the tiny classifier has; the third window is padding.
    logits = tf.constant([[[1.0, -2.0, 0.0], [3.0, -4.0, -1.0], [100.0, 100.0, 100.0]]])
    mask = tf.constant([[True, True, False]])
    np.testing.assert_allclose(windowed(tiny, "mean").pool(logits, mask), [[2.0, -3.0, -0.5]])
    np.testing.assert_allclose(windowed(tiny, "max").pool(logits, mask), [[3.0, -2.0, 0.0]])
    attention = windowed(tiny, "attention")
    pooled = attention.pool(logits, mask).numpy()
    scores = attention.scorer(attention.scorer_hidden(logits[0, :2])).numpy()[:, 0]
    weights = np.exp(scores) / np.exp(scores).sum()
    np.testing.assert_allclose(pooled[0], weights @ logits.numpy()[0, :2], rtol=1e-5)


@pytest.mark.parametrize("pooling", ["max", "attention"])
def test_a_windowed_classifier_saves_loads_and_changes_dtype(tiny, pooling, tmp_path):
    from kerasbert.models.precision import with_compute_dtype

    model = windowed(tiny, pooling)
    inputs = TextEncoder(tiny[1], 8, windows=4)(tf.constant([WORDS, "the plot"]))
    expected = model(inputs).numpy()
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert isinstance(loaded, WindowedClassifier) and loaded.pooling == pooling
    np.testing.assert_allclose(loaded(inputs).numpy(), expected, atol=1e-6)
    served = with_compute_dtype(model, "bfloat16")
    assert served.classifier.dtype_policy.compute_dtype == "bfloat16"
    np.testing.assert_allclose(served(inputs).numpy(), expected, atol=0.1)


def test_unfreezing_sees_through_the_windows():
    from kerasbert.models.layer_groups import layer_groups, set_trainable_layers

    # Its own model: freezing changes it.
    model = windowed(tiny_classifier(num_layers=1), "attention")
    groups = layer_groups(model)
    inner = layer_groups(model.classifier)
    assert groups.transformer == inner.transformer and groups.embeddings == inner.embeddings
    assert groups.head == inner.head + [model.scorer_hidden, model.scorer]
    set_trainable_layers(groups, 0)
    trainable = {id(v) for v in model.trainable_weights}
    assert {id(v) for v in model.scorer.weights} <= trainable
    assert not {id(v) for v in groups.transformer[0].weights} & trainable


def test_a_windowed_model_trains_on_the_pipeline():
    # Its own model: training changes it.
    classifier, tokenizer = tiny_classifier(num_layers=1)
    model = WindowedClassifier(classifier, pooling="mean")
    encoder = TextEncoder(tokenizer, 8, windows=4)
    features = encode_texts(encoder, [WORDS, "the plot", "", WORDS[:30]])
    assert features["token_ids"].shape == (4, 4, 8)
    assert encode_texts(encoder, [])["token_ids"].shape == (0, 4, 8)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = [w.numpy().copy() for w in model.classifier.backbone.transformer_layers[0].weights]
    model.fit(make_dataset(features, [0, 1, 0, 1], batch_size=2), epochs=1, verbose=0)
    after = model.classifier.backbone.transformer_layers[0].weights
    assert any(not np.array_equal(b, a.numpy()) for b, a in zip(before, after))


# === Config ===


@pytest.mark.parametrize(
    "model, data, message",
    [
        (
            {"truncation": "tail", "long_text": {"windows": 2}},
            {},
            r"model: `long_text` reads the whole text in windows; `truncation` 'tail'",
        ),
        (
            {"long_text": {"windows": 2, "stride": 15}},
            {},
            r"model: long_text.stride \(15\) must be at most sequence_length - 2 \(14",
        ),
        ({"long_text": {"windows": 0}}, {}, r"model.long_text.windows: "),
        ({"long_text": {"windows": 2, "pooling": "sum"}}, {}, r"model.long_text.pooling: "),
        (
            {"long_text": {"windows": 2}},
            {"text_pair_column": "pair"},
            r"model.long_text reads single texts in windows; sentence pairs",
        ),
    ],
)
def test_config_refuses_windows_it_cannot_read(tmp_path, model, data, message):
    from kerasbert.config import ConfigError
    from kerasbert.config_loading import config_from_dict

    config = tiny_config_dict(tmp_path / "x.csv", tmp_path, model=model, data=data)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(config)
