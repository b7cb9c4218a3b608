"""Tokenized splits as `tf.data` pipelines.

Texts are tokenized once per run into padded arrays; each batch is then cut
to its own longest sequence (rounded up to a multiple of 8, so the train
function sees few distinct shapes) instead of always carrying
`sequence_length` tokens: short review snippets train several times faster.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

PAD_MULTIPLE = 8


def encode_texts(encoder, texts, text_pairs=None, batch_size=1024) -> dict[str, np.ndarray]:
    """Tokenizes a list of strings once, into padded numpy arrays.

    Args:
        encoder: a `kerasbert.models.TextEncoder`.
        texts: strings.
        text_pairs: optional second segments, as long as `texts`.
        batch_size: strings tokenized per call.

    Returns:
        `{"token_ids", "padding_mask"[, "segment_ids"]}`, each `[N, sequence_length]`.
    """
    chunks = []
    for start in range(0, len(texts), batch_size):
        text = tf.constant(list(texts[start : start + batch_size]), dtype=tf.string)
        pair = None
        if text_pairs is not None:
            pair = tf.constant(list(text_pairs[start : start + batch_size]), dtype=tf.string)
        chunks.append({k: v.numpy() for k, v in encoder(text, pair).items()})
    if not chunks:
        width = encoder.sequence_length
        return {name: np.zeros((0, width), "bool" if name == "padding_mask" else "int32") for name in encoder.input_names}
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def make_dataset(features, labels=None, batch_size=32, shuffle=False, seed=0, sample_weights=None):
    """Batches encoded features into a prefetched `tf.data.Dataset`.

    Args:
        features: the dict from `encode_texts`.
        labels: int class ids, or None for prediction.
        batch_size: examples per batch.
        shuffle: reshuffle every epoch, from `seed`.
        seed: the shuffle seed.
        sample_weights: optional per-example weights.

    Returns:
        A dataset of `(inputs, labels[, weights])`, each batch trimmed to its
        longest sequence.
    """
    parts = [features]
    if labels is not None:
        parts.append(np.asarray(labels, dtype="int64"))
        if sample_weights is not None:
            parts.append(np.asarray(sample_weights, dtype="float32"))
    ds = tf.data.Dataset.from_tensor_slices(tuple(parts) if len(parts) > 1 else parts[0])
    if shuffle:
        ds = ds.shuffle(len(features["token_ids"]), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(_trim_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _trim_batch(features, *rest):
    lengths = tf.reduce_sum(tf.cast(features["padding_mask"], tf.int32), axis=1)
    longest = tf.reduce_max(lengths)
    width = tf.shape(features["token_ids"])[1]
    keep = tf.minimum(width, (longest + PAD_MULTIPLE - 1) // PAD_MULTIPLE * PAD_MULTIPLE)
    trimmed = {name: value[:, :keep] for name, value in features.items()}
    return (trimmed, *rest) if rest else trimmed
