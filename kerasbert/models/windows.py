"""Sliding windows: one classifier read over each window of a long text, its answers pooled.

`TextEncoder(..., windows=N, stride=S)` encodes a text as up to `N`
overlapping windows, each with its own `[CLS]`/`<s>` (`[batch, N, length]`
inputs, unused windows all padding). `WindowedClassifier` runs the
classifier it wraps over every window at once (`[batch * N, length]`) and
pools the windows' logits per text, under the window mask that padding
leaves (a window is real when its first token is). Training sees the same
windows, so the attention pooling's weights are learned.

Pooling (`model.long_text.pooling`):

- `mean`: the mean of the windows' logits, as Hugging Face's usual recipe
  averages its windows (`stride` + `return_overflowing_tokens`);
- `max`: each class's (or label's) largest logit over the windows: a verdict
  in any one window carries the text;
- `attention`: a softmax over the windows of a score learned from each
  window's logits (a small tanh layer), weighting their logits.
"""

from __future__ import annotations

import keras
import tensorflow as tf

POOLINGS = ("mean", "max", "attention")
# Units of the attention pooling's scoring layer.
SCORER_UNITS = 16


@keras.saving.register_keras_serializable(package="kerasbert")
class WindowedClassifier(keras.Model):
    """A classifier over `[batch, windows, length]` inputs, its windows' logits pooled per text.

    `[batch, length]` inputs are one window per text: every pooling of one
    window is that window's logits, so `predict_tokens` stays the
    classifier's own one-window signature.

    Args:
        classifier: a Keras classifier from token inputs to logits (the
            `build_classifier` kind).
        pooling: `"mean"`, `"max"` or `"attention"`.

    Example:
    >>> model = WindowedClassifier(classifier, pooling="max")
    >>> logits = model(TextEncoder(tokenizer, 128, windows=8)(tf.constant([long_text])))
    """

    def __init__(self, classifier, pooling="mean", **kwargs):
        if pooling not in POOLINGS:
            raise ValueError(
                f"Invalid value for argument `pooling`. Expected one of {POOLINGS}. "
                f"Received: pooling={pooling!r}"
            )
        kwargs.setdefault("dtype", classifier.dtype_policy)
        super().__init__(**kwargs)
        self.classifier = classifier
        self.pooling = pooling
        self.scorer_hidden = self.scorer = None
        if pooling == "attention":
            outputs = classifier.output_shape[-1]
            self.scorer_hidden = keras.layers.Dense(
                SCORER_UNITS,
                activation="tanh",
                dtype=classifier.dtype_policy,
                name="window_scorer_hidden",
            )
            self.scorer = keras.layers.Dense(1, dtype=classifier.dtype_policy, name="window_scorer")
            # Built here, so that a saved model's weights load into a new one.
            self.scorer_hidden.build((None, outputs))
            self.scorer.build((None, SCORER_UNITS))
        self.built = True

    @property
    def backbone(self):
        return self.classifier.backbone

    @property
    def pooling_layers(self) -> list:
        """The layers pooling adds to the classifier's: the head's, for freezing."""
        return [layer for layer in (self.scorer_hidden, self.scorer) if layer is not None]

    def call(self, inputs, training=False):
        if inputs["token_ids"].shape.rank == 2:
            return self.classifier(inputs, training=training)
        if not training and not self.jit_compile:
            return self.infer(inputs)
        return self.run_all_windows(inputs, training=training)

    def run_all_windows(self, inputs, training=False):
        """The pooled logits of `[batch, windows, length]` inputs, padding windows run too.

        Static shapes, as a compiled (XLA) step wants them; `call` takes
        this path in training, and in inference only when compiled.
        """
        shape = tf.shape(inputs["token_ids"])
        flat = {name: tf.reshape(value, [-1, shape[2]]) for name, value in inputs.items()}
        logits = self.classifier(flat, training=training)
        logits = tf.reshape(logits, [shape[0], shape[1], -1])
        return self.pool(logits, window_mask(inputs))

    def infer(self, inputs):
        """The same logits as `run_all_windows(inputs)`, running only the windows that hold text.

        A batch of texts of unequal length leaves padding windows in the
        shorter ones; this skips them, which a compiled (XLA) step cannot
        (the count of real windows is known only at run time). `call` takes
        this path in inference when not compiled; the serving graph, never
        compiled, always does.
        """
        if inputs["token_ids"].shape.rank == 2:
            return self.classifier(inputs, training=False)
        mask = window_mask(inputs)
        real = {name: tf.boolean_mask(value, mask) for name, value in inputs.items()}
        logits = self.classifier(real, training=False)
        shape = tf.shape(mask, out_type=tf.int64)
        outputs = tf.shape(logits, out_type=tf.int64)[-1:]
        logits = tf.scatter_nd(tf.where(mask), logits, tf.concat([shape, outputs], axis=0))
        return self.pool(logits, mask)

    def pool(self, logits, mask):
        """Pools `[batch, windows, outputs]` logits over the windows `mask` (`[batch, windows]`) keeps."""
        weights = tf.cast(mask, logits.dtype)[:, :, tf.newaxis]
        if self.pooling == "max":
            lowest = tf.constant(logits.dtype.min, logits.dtype)
            return tf.reduce_max(tf.where(weights > 0, logits, lowest), axis=1)
        if self.pooling == "attention":
            scores = self.scorer(self.scorer_hidden(logits))
            # Padding windows get no weight; every text has a real first window.
            scores = tf.where(weights > 0, scores, tf.constant(-1e4, scores.dtype))
            weights = tf.nn.softmax(scores, axis=1)
        else:
            weights = weights / tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1)
        return tf.reduce_sum(weights * logits, axis=1)

    def get_config(self):
        return {
            **super().get_config(),
            "classifier": _without_compile_config(
                keras.saving.serialize_keras_object(self.classifier)
            ),
            "pooling": self.pooling,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)


def _without_compile_config(config):
    # keras-hub's classifiers compile themselves when built; the wrapper is
    # what training compiles, and a restored inner compile would only warn.
    return {key: value for key, value in config.items() if key != "compile_config"}


def window_mask(inputs):
    """`[batch, windows]`: which windows of `[batch, windows, length]` inputs hold text.

    A real window starts with its `[CLS]`/`<s>`; one a text doesn't need is all padding.
    """
    return tf.cast(inputs["padding_mask"][:, :, 0], tf.bool)
