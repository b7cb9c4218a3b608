"""A text classifier on the mean of the backbone's token vectors.

keras-hub's BERT head classifies the pooled `[CLS]` vector. Sentence-embedding
checkpoints (sentence-transformers' `all-MiniLM-L6-v2` and its kin, whose
directories carry `1_Pooling/config.json` with `pooling_mode_mean_tokens`)
were trained on the mean of the token vectors instead, and their `[CLS]`
vector and pooler were left as they came from pre-training. On those the
mean is the better start: a logistic regression on frozen MiniLM-L6
features scores 76% on fresh/rotten reviews with the mean and 70% with the
pooled `[CLS]` (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import keras
import keras_hub


@keras.saving.register_keras_serializable(package="kerasbert")
class MaskedMeanPooling(keras.layers.Layer):
    """The mean of `[batch, length, hidden]` vectors over unmasked positions.

    Example:
    >>> MaskedMeanPooling()(sequence_output, padding_mask)   # [batch, hidden]
    """

    def call(self, sequence, padding_mask):
        mask = keras.ops.expand_dims(keras.ops.cast(padding_mask, sequence.dtype), -1)
        total = keras.ops.sum(sequence * mask, axis=1)
        # A row with no real token (never produced by the encoder, which
        # always writes the start and end tokens) gives zeros, not NaN.
        count = keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)
        return total / count

    def compute_output_shape(self, sequence_shape, padding_mask_shape):
        return (sequence_shape[0], sequence_shape[2])


@keras.saving.register_keras_serializable(package="kerasbert")
class MeanPoolingClassifier(keras_hub.models.TextClassifier):
    """A BERT or RoBERTa backbone, mean pooling, dropout and a dense layer.

    The same contract as keras-hub's `BertTextClassifier` with
    `preprocessor=None`: token inputs in, logits (or `activation`'s output)
    out. BERT's pooler is not used, so it is frozen.

    Args:
        backbone: a keras-hub `BertBackbone` or `RobertaBackbone`.
        num_classes: the number of labels.
        preprocessor: None; tokenization is `kerasbert.models.classifier.TextEncoder`'s.
        activation: the output layer's activation; None gives logits.
        dropout: the dropout rate before the output layer.

    Example:
    >>> classifier = MeanPoolingClassifier(backbone, num_classes=2)
    >>> logits = classifier(encoder(tf.constant(["a fine film"])))
    """

    def __init__(
        self, backbone, num_classes, preprocessor=None, activation=None, dropout=0.1, **kwargs
    ):
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.pooling = MaskedMeanPooling(dtype=backbone.dtype_policy, name="mean_pooling")
        self.output_dropout = keras.layers.Dropout(
            dropout, dtype=backbone.dtype_policy, name="classifier_dropout"
        )
        self.output_dense = keras.layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            activation=activation,
            dtype=backbone.dtype_policy,
            name="logits",
        )

        # === Functional Model ===
        inputs = backbone.input
        sequence = backbone(inputs)
        if isinstance(sequence, dict):  # BERT's; RoBERTa's is the sequence alone
            sequence = sequence["sequence_output"]
        pooled = self.pooling(sequence, inputs["padding_mask"])
        outputs = self.output_dense(self.output_dropout(pooled))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.activation = keras.activations.get(activation)
        self.dropout = dropout

        # BERT's pooler is not on the way to the logits: frozen, it gets no
        # gradient and no optimizer slots (and `layer_groups` leaves it out).
        for layer in backbone.layers:
            if layer.name == "pooled_dense":
                layer.trainable = False

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "activation": keras.activations.serialize(self.activation),
                "dropout": self.dropout,
            }
        )
        return config
