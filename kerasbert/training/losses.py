"""Losses beyond Keras' own: binary cross-entropy with a weight per label's positives, and
knowledge distillation's mix of soft and hard targets."""

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


@keras.saving.register_keras_serializable(package="kerasbert")
class DistillationLoss(keras.losses.Loss):
    """Knowledge distillation: the teacher's softened logits, mixed with the true labels.

    `y_true` holds, per example, the true class id followed by the teacher's
    logits (`[class_id, logit_0, ..., logit_k]`, as `soft_targets` writes
    it). The loss is

    `alpha * T**2 * KL(softmax(teacher / T) || softmax(student / T))
    + (1 - alpha) * cross_entropy(class_id, student)`,

    the `T**2` keeping the soft gradients' size as `T` changes. Given class
    ids alone (validation and test, which have no teacher logits), it is the
    cross-entropy, so `val_loss` measures the student on the true labels.

    Args:
        temperature: `T`, > 0.
        alpha: the soft loss' weight, in [0, 1].

    Reference:
        Hinton, Vinyals & Dean 2015, arXiv:1503.02531.

    Example:
    >>> loss = DistillationLoss(temperature=2.0, alpha=1.0)
    >>> float(loss([[0.0, 1.0, 1.0]], [[5.0, 5.0]]))  # the same softmax: nothing to learn
    0.0
    """

    def __init__(self, temperature=2.0, alpha=0.5, name="distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        if not temperature > 0:
            raise ValueError(
                "Invalid value for argument `temperature`. Expected a number > 0. "
                f"Received: temperature={temperature}"
            )
        if not 0 <= alpha <= 1:
            raise ValueError(
                "Invalid value for argument `alpha`. Expected a number in [0, 1]. "
                f"Received: alpha={alpha}"
            )
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def call(self, y_true, y_pred):
        logits = tf.cast(y_pred, tf.float32)
        if y_true.shape.rank == 1 or y_true.shape[-1] == 1:
            return hard_cross_entropy(y_true, logits)
        y_true = tf.cast(y_true, tf.float32)
        hard = hard_cross_entropy(y_true[:, 0], logits)
        temperature = self.temperature
        teacher = tf.nn.log_softmax(y_true[:, 1:] / temperature)
        student = tf.nn.log_softmax(logits / temperature)
        soft = tf.reduce_sum(tf.exp(teacher) * (teacher - student), axis=-1)
        return self.alpha * temperature**2 * soft + (1 - self.alpha) * hard

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature, "alpha": self.alpha})
        return config


def hard_cross_entropy(class_ids, logits):
    """Cross-entropy of class ids (any float or int dtype, shape `[n]` or `[n, 1]`)."""
    class_ids = tf.cast(tf.reshape(class_ids, [-1]), tf.int64)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(class_ids, logits)
