"""Training batches: the same examples each epoch, grouped by length, trimmed."""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"

import numpy as np
import pytest
import tensorflow as tf

from kerasbert.data.pipeline import make_training_dataset, sortish_order, trim_to_longest

WIDTH = 40


def features_of_lengths(lengths):
    """Encoder-like features: ids 1..length then padding, per row."""
    positions = np.arange(WIDTH)[None, :]
    mask = positions < np.asarray(lengths)[:, None]
    return {"token_ids": np.where(mask, positions + 1, 0).astype("int32"), "padding_mask": mask}


def test_docstring_example():
    order = sortish_order(
        np.arange(8), np.array([5, 1, 6, 2, 7, 3, 8, 4]), 2, 4, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(order, [0, 2, 1, 3, 5, 7, 4, 6])


def test_sortish_order_keeps_every_example_and_groups_similar_lengths():
    rng = np.random.default_rng(1)
    lengths = rng.integers(3, WIDTH, size=1003)
    order = rng.permutation(1003)
    batch_size, window = 16, 10
    sortish = sortish_order(order, lengths, batch_size, window, np.random.default_rng(2))

    assert sorted(sortish) == list(range(1003))
    full = 1003 // batch_size * batch_size
    # The short last batch stays last, as it was.
    np.testing.assert_array_equal(sortish[full:], order[full:])
    # Each full batch is a run of one sorted window: its lengths are in order.
    batches = lengths[sortish[:full]].reshape(-1, batch_size)
    assert all(np.all(np.diff(batch) >= 0) for batch in batches)

    # Padding to each batch's longest falls well below random batching.
    def padded(indices):
        return sum(
            lengths[b].max() * len(b)
            for b in np.split(indices, range(batch_size, len(indices), batch_size))
        )

    assert padded(sortish) < 0.8 * padded(order)


def test_batches_are_shuffled_across_the_epoch_not_rising_in_length():
    lengths = np.arange(3200) % 37 + 3
    order = np.random.default_rng(0).permutation(3200)
    sortish = sortish_order(order, lengths, 32, 5, np.random.default_rng(0))
    widths = lengths[sortish].reshape(-1, 32).max(axis=1)
    assert not np.all(np.diff(widths) >= 0)
    assert not np.all(np.diff(widths) <= 0)


@pytest.mark.parametrize("bucket_window", [0, 4])
def test_every_epoch_has_every_example_once_in_trimmed_batches(bucket_window):
    lengths = np.random.default_rng(0).integers(2, WIDTH, size=100)
    features = features_of_lengths(lengths)
    labels = np.arange(100)  # the label is the example's index
    data = make_training_dataset(features, labels, 8, seed=3, epochs=2, bucket_window=bucket_window)
    batches = list(data)
    assert len(batches) == 2 * 13
    for epoch in range(2):
        seen = np.concatenate([b[1].numpy() for b in batches[epoch * 13 : (epoch + 1) * 13]])
        assert sorted(seen) == list(range(100))
    for inputs, index in batches:
        longest = lengths[index.numpy()].max()
        assert inputs["token_ids"].shape[1] == min(WIDTH, -(-longest // 8) * 8)


@pytest.mark.parametrize("pad_multiple", [1, 8])
def test_training_batches_are_cut_to_their_longest_text_rounded_up_to_pad_multiple(pad_multiple):
    lengths = np.random.default_rng(1).integers(2, WIDTH, size=100)
    features = features_of_lengths(lengths)
    data = make_training_dataset(
        features, np.arange(100), 8, seed=0, epochs=1, pad_multiple=pad_multiple
    )
    widths = []
    for inputs, index in data:
        longest = lengths[index.numpy()].max()
        widths.append(inputs["token_ids"].shape[1])
        assert widths[-1] == min(WIDTH, -(-longest // pad_multiple) * pad_multiple)
    assert any(width % 8 for width in widths) is (pad_multiple == 1)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_a_run_trains_on_exact_widths_without_xla_and_rounded_widths_with_it(tmp_path, jit_compile):
    from kerasbert.config_loading import config_from_dict
    from kerasbert.training.fit import prepare
    from tests.support.tiny import QUICKSTART_CSV, tiny_config_dict

    config = config_from_dict(
        tiny_config_dict(
            QUICKSTART_CSV,
            tmp_path,
            model={"sequence_length": 32},
            runtime={"jit_compile": jit_compile, "mixed_precision": "float32"},
        )
    )
    prepared = prepare(config)
    assert prepared.runtime.pad_multiple == (8 if jit_compile else 1)
    widths = []
    for inputs, _ in prepared.training_dataset(8, seed=0, epochs=1):
        longest = int(np.max(np.sum(inputs["padding_mask"], axis=1)))
        widths.append(inputs["token_ids"].shape[1])
        assert widths[-1] == (-(-longest // 8) * 8 if jit_compile else longest)
    # The texts' lengths are not all multiples of 8, so the two differ.
    assert any(width % 8 for width in widths) is not jit_compile


def test_bucketing_cuts_the_padded_tokens_of_an_epoch():
    lengths = np.random.default_rng(0).integers(2, WIDTH, size=800)
    features = features_of_lengths(lengths)

    def tokens(bucket_window):
        data = make_training_dataset(
            features, np.zeros(800, "int64"), 16, seed=0, epochs=1, bucket_window=bucket_window
        )
        return sum(int(np.prod(inputs["token_ids"].shape)) for inputs, _ in data)

    assert tokens(50) < 0.8 * tokens(0)


def test_trim_to_longest_rounds_up_to_the_multiple_and_never_widens():
    inputs = {name: tf.constant(value) for name, value in features_of_lengths([3, 9]).items()}
    trimmed = trim_to_longest(inputs)
    assert trimmed["token_ids"].shape == (2, 16)
    np.testing.assert_array_equal(trimmed["token_ids"], inputs["token_ids"][:, :16])
    assert trim_to_longest(inputs, multiple=64)["token_ids"].shape == (2, WIDTH)
    assert trim_to_longest(inputs, multiple=1)["padding_mask"].shape == (2, 9)
