"""Tokenized splits as `tf.data` pipelines.

Texts are tokenized once per run into padded arrays; each batch is then cut
to its own longest sequence instead of always carrying `sequence_length`
tokens: short review snippets train several times faster. Where the step is
compiled for each shape (XLA, GPU, TPU), the width is rounded up to a
multiple of `PAD_MULTIPLE` so that few shapes are compiled; elsewhere a new
width costs nothing and the batch is cut exactly (`pad_multiple=1`).
Training batches are also drawn length-bucketed (`sortish_order`), so that
the texts sharing a batch have similar lengths and little is left to pad.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Width rounding for compiled steps (`kerasbert.training.runtime.Runtime.pad_multiple`).
PAD_MULTIPLE = 8
# Batches per length-sorted window in training; 50 as fast.ai's SortishSampler.
BUCKET_WINDOW = 50


def encode_texts(encoder, texts, text_pairs=None, batch_size=1024) -> dict[str, np.ndarray]:
    """Tokenizes a list of strings once, into padded numpy arrays.

    Args:
        encoder: a `kerasbert.models.classifier.TextEncoder`.
        texts: strings.
        text_pairs: optional second segments, as long as `texts`.
        batch_size: strings tokenized per call.

    Returns:
        `{"token_ids", "padding_mask"[, "segment_ids"]}`, each `[N, sequence_length]`
        (`[N, windows, sequence_length]` for an encoder with sliding windows).
    """
    # Traced once, not run op by op: keras-hub's tokenizers run about ten
    # times faster in a graph than eagerly, tracing included
    # (benchmarks/RESULTS.md).
    spec = tf.TensorSpec([None], tf.string)
    if text_pairs is None:
        encode = tf.function(lambda text: encoder(text), input_signature=[spec])
    else:
        encode = tf.function(lambda text, pair: encoder(text, pair), input_signature=[spec, spec])
    chunks = []
    for start in range(0, len(texts), batch_size):
        args = [tf.constant(list(texts[start : start + batch_size]), dtype=tf.string)]
        if text_pairs is not None:
            args.append(tf.constant(list(text_pairs[start : start + batch_size]), dtype=tf.string))
        # int32 throughout, the dtype the backbones declare for all three
        # inputs (a bool mask also trips MirroredStrategy's first-batch build).
        chunks.append({k: v.numpy().astype("int32") for k, v in encode(*args).items()})
    if not chunks:
        shape = (0, encoder.sequence_length)
        if encoder.windows is not None:
            shape = (0, encoder.windows, encoder.sequence_length)
        return {name: np.zeros(shape, "int32") for name in encoder.input_names}
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def make_dataset(
    features,
    labels=None,
    batch_size=32,
    shuffle=False,
    seed=0,
    sample_weights=None,
    pad_multiple=PAD_MULTIPLE,
):
    """Batches encoded features into a prefetched `tf.data.Dataset`.

    Args:
        features: the dict from `encode_texts`.
        labels: int class ids, or None for prediction.
        batch_size: examples per batch.
        shuffle: reshuffle every epoch, from `seed`.
        seed: the shuffle seed.
        sample_weights: optional per-example weights.
        pad_multiple: round each batch's width up to a multiple of this; 1
            cuts it to exactly its longest sequence.

    Returns:
        A dataset of `(inputs, labels[, weights])`, each batch trimmed to its
        longest sequence.
    """
    parts = [features]
    if labels is not None:
        parts.append(label_array(labels))
        if sample_weights is not None:
            parts.append(np.asarray(sample_weights, dtype="float32"))
    ds = tf.data.Dataset.from_tensor_slices(tuple(parts) if len(parts) > 1 else parts[0])
    if shuffle:
        ds = ds.shuffle(len(features["token_ids"]), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(_batch_trimmer(pad_multiple), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def label_array(labels) -> np.ndarray:
    """Class ids as int64; multi-hot rows or regression targets as float32."""
    labels = np.asarray(labels)
    return labels.astype("float32") if labels.dtype.kind == "f" else labels.astype("int64")


def _batch_trimmer(pad_multiple):
    def trim_batch(features, *rest):
        trimmed = trim_to_longest(features, pad_multiple)
        return (trimmed, *rest) if rest else trimmed

    return trim_batch


def make_training_dataset(
    features,
    labels,
    batch_size,
    seed,
    epochs,
    initial_epoch=0,
    sample_weights=None,
    bucket_window=BUCKET_WINDOW,
    pad_multiple=PAD_MULTIPLE,
):
    """Shuffled training batches for epochs `initial_epoch` to `epochs - 1`.

    Epoch `e` visits the examples in an order drawn from `(seed, e)` alone,
    so a run resumed at epoch `e` sees exactly the batches an uninterrupted
    run would have. Batches never straddle two epochs; use
    `steps_per_epoch(len(labels), batch_size)` with `fit`. With
    `bucket_window`, each batch holds texts of similar length (see
    `sortish_order`), so trimming leaves little padding.

    Args:
        features: the dict from `encode_texts`.
        labels: int class ids.
        batch_size: examples per batch.
        seed: the shuffle seed.
        epochs: the run's total epochs.
        initial_epoch: the first epoch to produce.
        sample_weights: optional per-example weights.
        bucket_window: batches per length-sorting window (see
            `sortish_order`); 0 or None for plain random batches.
        pad_multiple: round each batch's width up to a multiple of this; 1
            cuts it to exactly its longest sequence.

    Returns:
        A dataset of `(inputs, labels[, weights])` batches.
    """
    count = len(labels)
    mask = np.asarray(features["padding_mask"])
    # Tokens per example, its windows' added up: what a batch's work grows with.
    lengths = mask.reshape(len(mask), -1).sum(axis=1) if bucket_window else None

    def epoch_order(epoch):
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(count)
        return (
            sortish_order(order, lengths, batch_size, bucket_window, rng)
            if bucket_window
            else order
        )

    orders = (
        np.stack([epoch_order(epoch) for epoch in range(initial_epoch, epochs)])
        if epochs > initial_epoch
        else np.zeros((0, count), "int64")
    )
    tensors = {name: tf.constant(value) for name, value in features.items()}
    label_tensor = tf.constant(label_array(labels))
    weight_tensor = (
        None if sample_weights is None else tf.constant(np.asarray(sample_weights, dtype="float32"))
    )

    def gather(index):
        batch = (
            {name: tf.gather(value, index) for name, value in tensors.items()},
            tf.gather(label_tensor, index),
        )
        return batch if weight_tensor is None else (*batch, tf.gather(weight_tensor, index))

    ds = tf.data.Dataset.from_tensor_slices(orders.astype("int64"))
    ds = ds.flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.map(
        _batch_trimmer(pad_multiple), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    ).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(count, batch_size) -> int:
    return -(-count // batch_size)


def sortish_order(order, lengths, batch_size, window, rng) -> np.ndarray:
    """Reorders a random permutation so that each batch holds similar lengths.

    The full batches of `order` are taken `window` batches at a time; each
    window is sorted by length (stably, so equal lengths keep their random
    order) and cut into batches, and the batches of the whole epoch are then
    shuffled, so the model never sees lengths rising through an epoch. The
    short last batch, if any, stays last and unsorted. The number of batches
    and the examples in the epoch are unchanged; only who shares a batch is.
    As fast.ai's `SortishSampler` and Hugging Face's `group_by_length`: on
    Rotten Tomatoes snippets at batch 32 it cuts the tokens of an epoch,
    padding included, by 44% (benchmarks/RESULTS.md).

    Args:
        order: a permutation of example indices.
        lengths: each example's token count, indexed like the examples.
        batch_size: examples per batch.
        window: batches per sorted window; larger windows sort more finely.
        rng: a `numpy.random.Generator` for the batch order.

    Returns:
        The reordered indices, as many as `order`.

    Example:
    >>> sortish_order(np.arange(8), np.array([5, 1, 6, 2, 7, 3, 8, 4]), 2, 4, np.random.default_rng(0))
    array([0, 2, 1, 3, 5, 7, 4, 6])
    """
    order = np.asarray(order)
    full = len(order) // batch_size * batch_size
    span = window * batch_size
    windows = np.split(order[:full], range(span, full, span))
    batches = np.concatenate([w[np.argsort(lengths[w], kind="stable")] for w in windows]).reshape(
        -1, batch_size
    )
    return np.concatenate([batches[rng.permutation(len(batches))].reshape(-1), order[full:]])


def trim_to_longest(inputs, multiple=PAD_MULTIPLE):
    """Cuts padded encoder outputs to the batch's longest sequence.

    The width is rounded up to a multiple of `multiple`, so a compiled
    function sees few distinct shapes; `multiple=1` cuts it exactly. The mask hides padding from
    attention and pooling, so the logits do not change, while the work
    shrinks with the padding (benchmarks/RESULTS.md). Sliding windows'
    `[batch, windows, width]` inputs are also cut to the most windows a
    text of the batch has.

    Args:
        inputs: a dict of `[batch, width]` or `[batch, windows, width]`
            tensors with a `padding_mask`.
        multiple: round the width up to a multiple of this.

    Returns:
        The same dict, every tensor cut to the new width.

    Example:
    >>> inputs = trim_to_longest(encoder(tf.constant(["short", "texts"])))
    """
    mask = tf.cast(inputs["padding_mask"], tf.int32)
    longest = tf.reduce_max(tf.reduce_sum(mask, axis=-1))
    width = tf.shape(mask)[-1]
    keep = tf.minimum(width, (longest + multiple - 1) // multiple * multiple)
    if mask.shape.rank == 2:
        return {name: value[:, :keep] for name, value in inputs.items()}
    # A window is real when its first token is (see `kerasbert.models.windows`).
    windows = tf.reduce_max(tf.reduce_sum(mask[:, :, 0], axis=1))
    return {name: value[:, :windows, :keep] for name, value in inputs.items()}
