"""Backbones (preset, local directory, from scratch) and the classifier on top.

A classifier is keras-hub's own task class with `preprocessor=None`, so the
head is exactly keras-hub's: BERT's takes `pooled_output` (its pooler is a
dense layer on the [CLS] vector), RoBERTa's takes the `<s>` vector through its
own dense layer. With `pooling: mean` it is `MeanPoolingClassifier` instead,
for checkpoints trained as sentence encoders. Tokenization lives in
`TextEncoder`, which is made of TensorFlow and TensorFlow Text ops only, so
the same object feeds `tf.data` and the exported serving graph.
"""

from __future__ import annotations

from pathlib import Path

import keras_hub

from kerasbert.models.checksums import verify_checksums
from kerasbert.models.mean_pooling import MeanPoolingClassifier
from kerasbert.models.tokenizers import TextEncoder, learn_tokenizer, preset_tokenizer
from kerasbert.models.windows import WindowedClassifier

FAMILIES = {
    "bert": (keras_hub.models.BertBackbone, keras_hub.models.BertTextClassifier),
    "roberta": (keras_hub.models.RobertaBackbone, keras_hub.models.RobertaTextClassifier),
}


def family_of(backbone) -> str:
    """`"bert"` or `"roberta"` for a keras-hub backbone.

    Raises:
        ValueError: for any other architecture.
    """
    for family, (backbone_class, _) in FAMILIES.items():
        if isinstance(backbone, backbone_class):
            return family
    raise ValueError(
        "kerasbert fine-tunes BERT and RoBERTa backbones; received a "
        f"{type(backbone).__name__}. Use a BERT or RoBERTa preset."
    )


# === Classifier ===


def _backbone_from_preset(preset, dtype):
    """keras-hub's `Backbone.from_preset`, with a download that fails said in one line."""
    try:
        return keras_hub.models.Backbone.from_preset(preset, dtype=dtype)
    except Exception as error:  # noqa: BLE001  (requests, kagglehub and urllib raise their own)
        if Path(preset).expanduser().exists() or not _is_download_error(error):
            raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OSError(
            f"model.preset {preset!r}: could not download it ({type(error).__name__}: "
            f"{first[:300]}). Without network, give a local directory instead, in Keras "
            "preset or Hugging Face format (config.json, model.safetensors, vocab.txt)."
        ) from None


def _is_download_error(error) -> bool:
    """Whether `error` (or what caused it) is a network failure."""
    while error is not None:
        module = type(error).__module__.split(".")[0]
        if module in ("requests", "urllib3", "urllib", "kagglehub", "socket", "http") or isinstance(
            error, (ConnectionError, TimeoutError)
        ):
            return True
        error = error.__cause__ or error.__context__
    return False


def build_classifier(model_config, num_classes, texts=None, dtype=None):
    """Builds the backbone, its tokenizer and a classification head.

    Args:
        model_config: a `kerasbert.config.ModelConfig`.
        num_classes: the number of labels.
        texts: the training texts; needed to learn a from-scratch vocabulary.
        dtype: the Keras dtype policy of the backbone and head, such as
            `"mixed_bfloat16"`; None takes Keras's global policy.

    Returns:
        `(classifier, tokenizer)`: a keras-hub `BertTextClassifier` or
        `RobertaTextClassifier` (a `MeanPoolingClassifier` with
        `model_config.pooling == "mean"`) that outputs logits from token ids,
        wrapped in a `WindowedClassifier` with `model_config.long_text`,
        and its tokenizer.

    Raises:
        ValueError: when the preset is neither BERT nor RoBERTa, a file of a
            local preset fails its `preset_sha256` check, or a from-scratch
            backbone is asked for without texts.
    """
    if model_config.preset is not None:
        if model_config.preset_sha256:
            verify_checksums(model_config.preset, model_config.preset_sha256)
        backbone = _backbone_from_preset(model_config.preset, dtype)
        family = family_of(backbone)
        tokenizer = preset_tokenizer(model_config.preset, family)
    else:
        spec = model_config.scratch
        if texts is None:
            raise ValueError("a from-scratch backbone needs the training texts")
        family = spec.family
        tokenizer = learn_tokenizer(family, texts, spec.vocabulary_size, spec.lowercase)
        backbone_class = FAMILIES[family][0]
        backbone = backbone_class(
            vocabulary_size=tokenizer.vocabulary_size(),
            num_layers=spec.num_layers,
            num_heads=spec.num_heads,
            hidden_dim=spec.hidden_dim,
            intermediate_dim=spec.intermediate_dim,
            max_sequence_length=spec.max_sequence_length,
            dropout=0.1,
            dtype=dtype,
        )
    if model_config.sequence_length > backbone.max_sequence_length:
        raise ValueError(
            f"model.sequence_length ({model_config.sequence_length}) exceeds "
            f"the backbone's max_sequence_length ({backbone.max_sequence_length})"
        )
    classifier_class = (
        MeanPoolingClassifier if model_config.pooling == "mean" else FAMILIES[family][1]
    )
    classifier = classifier_class(
        backbone,
        num_classes=num_classes,
        preprocessor=None,
        activation=None,
        dropout=model_config.dropout,
    )
    if model_config.long_text is not None:
        classifier = WindowedClassifier(classifier, pooling=model_config.long_text.pooling)
    return classifier, tokenizer


def text_encoder(model_config, tokenizer) -> TextEncoder:
    """The `TextEncoder` that `model_config` describes: its length, truncation and windows."""
    long_text = model_config.long_text
    return TextEncoder(
        tokenizer,
        model_config.sequence_length,
        truncation=model_config.truncation,
        head_tokens=model_config.head_tokens,
        windows=None if long_text is None else long_text.windows,
        stride=None if long_text is None else long_text.stride,
    )


def load_run_model(run_dir):
    """A run directory's saved classifier (`model.keras`) and tokenizer (`tokenizer/`).

    Returns:
        `(classifier, tokenizer)`, the classifier loaded without its
        optimizer (`compile=False`).
    """
    import warnings

    import keras

    import kerasbert.models.mean_pooling  # noqa: F401  (registers `pooling: mean`'s classes)
    from kerasbert import rundir
    from kerasbert.models.tokenizers import load_tokenizer

    run_dir = Path(run_dir)
    with warnings.catch_warnings():
        # A model saved after `fit` carries optimizer variables that a model
        # loaded with compile=False has no use for; Keras warns about that.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        classifier = keras.saving.load_model(run_dir / rundir.MODEL, compile=False)
    return classifier, load_tokenizer(run_dir / rundir.TOKENIZER)
