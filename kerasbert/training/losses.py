"""Losses beyond Keras' own: binary cross-entropy with a weight per label's positives."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="kerasbert")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy on logits, each label's positive examples weighed by `pos_weight`.

    PyTorch's `BCEWithLogitsLoss(pos_weight=...)`: for label `j`, the loss is
    `-(pos_weight[j] * y * log(sigmoid(x)) + (1 - y) * log(1 - sigmoid(x)))`,
    averaged over labels and examples. A weight above 1 makes missing a rare
    label cost more; all ones is plain binary cross-entropy.

    Args:
        pos_weight: one positive weight per label, each > 0.

    Example:
    >>> loss = WeightedBinaryCrossentropy([1.0, 4.0])
    >>> float(loss([[1.0, 0.0]], [[0.0, 0.0]]))  # log 2, on both labels
    0.6931...
    """

    def __init__(self, pos_weight, name="weighted_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        pos_weight = [float(w) for w in pos_weight]
        if not pos_weight or any(not w > 0 for w in pos_weight):
            raise ValueError(
                "Invalid value for argument `pos_weight`. Expected one weight > 0 per label. "
                f"Received: pos_weight={pos_weight}"
            )
        self.pos_weight = pos_weight

    def call(self, y_true, y_pred):
        logits = tf.cast(y_pred, tf.float32)
        labels = tf.cast(y_true, tf.float32)
        losses = tf.nn.weighted_cross_entropy_with_logits(
            labels, logits, tf.constant(self.pos_weight, tf.float32)
        )
        return tf.reduce_mean(losses, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"pos_weight": self.pos_weight})
        return config
