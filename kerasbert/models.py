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

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras_hub
import tensorflow as tf

from kerasbert.checksums import verify_checksums
from kerasbert.mean_pooling_classifier import MeanPoolingClassifier

FAMILIES = {
    "bert": (keras_hub.models.BertBackbone, keras_hub.models.BertTextClassifier),
    "roberta": (keras_hub.models.RobertaBackbone, keras_hub.models.RobertaTextClassifier),
}

BERT_RESERVED_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ROBERTA_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


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


# === Tokenizers ===


def learn_tokenizer(family, texts, vocabulary_size, lowercase=True):
    """Learns a vocabulary from `texts` and returns a keras-hub tokenizer.

    BERT gets WordPiece (keras-hub's vocabulary tool); RoBERTa gets byte-level
    BPE (the `tokenizers` library), as their pretrained tokenizers are.

    Args:
        family: `"bert"` or `"roberta"`.
        texts: a list of training strings.
        vocabulary_size: the largest vocabulary to learn.
        lowercase: BERT only: fold case before splitting.

    Returns:
        A `keras_hub.models.BertTokenizer` or `RobertaTokenizer`.
    """
    texts = [str(t) for t in texts]
    if family == "bert":
        vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
            tf.data.Dataset.from_tensor_slices(texts).batch(1024),
            vocabulary_size,
            lowercase=lowercase,
            reserved_tokens=BERT_RESERVED_TOKENS,
        )
        return keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=lowercase)
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts,
        vocab_size=vocabulary_size,
        min_frequency=1,
        special_tokens=ROBERTA_SPECIAL_TOKENS,
        show_progress=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        bpe.save_model(tmp)
        vocabulary = json.loads(Path(tmp, "vocab.json").read_text(encoding="utf-8"))
        merges = [
            line
            for line in Path(tmp, "merges.txt").read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#version")
        ]
    if not merges:
        raise ValueError(
            f"the training texts gave no BPE merges within vocabulary_size="
            f"{vocabulary_size}; raise vocabulary_size or add training data"
        )
    return keras_hub.models.RobertaTokenizer(vocabulary=vocabulary, merges=merges)


def preset_tokenizer(preset, family):
    """The preset's tokenizer, stripping accents where BERT's own does.

    Google's BERT and Hugging Face's `BertTokenizer` strip accents from
    uncased text (their uncased vocabularies were built from stripped text),
    unless the checkpoint's `tokenizer_config.json` sets `strip_accents`;
    keras-hub's `BertTokenizer` never strips them, so "clichéd" would become
    `[UNK]`. Cased vocabularies and RoBERTa's byte-level BPE keep accents.
    """
    tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(preset)
    if family == "bert" and tokenizer.lowercase and not tokenizer.strip_accents:
        if _declared_strip_accents(preset) is not False:
            tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(preset, strip_accents=True)
    return tokenizer


def _declared_strip_accents(preset):
    """`strip_accents` from a local Hugging Face directory's tokenizer config, or None."""
    path = Path(preset) / "tokenizer_config.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("strip_accents")


class TextEncoder:
    """Raw strings to the backbone's inputs, in TensorFlow ops only.

    Args:
        tokenizer: a keras-hub BERT or RoBERTa tokenizer.
        sequence_length: the longest packed sequence; longer texts are
            truncated (for pairs, the longer segment first).

    Example:
    >>> encoder = TextEncoder(tokenizer, sequence_length=64)
    >>> inputs = encoder(tf.constant(["a fine film"]))
    """

    def __init__(self, tokenizer, sequence_length):
        self.tokenizer = tokenizer
        self.sequence_length = sequence_length
        self.family = "bert" if isinstance(tokenizer, keras_hub.models.BertTokenizer) else "roberta"
        if self.family == "bert":
            start, end, sep = tokenizer.cls_token_id, tokenizer.sep_token_id, None
        else:
            start, end = tokenizer.start_token_id, tokenizer.end_token_id
            sep = [end, end]
        self.pad_token_id = tokenizer.pad_token_id
        self.packer = keras_hub.layers.MultiSegmentPacker(
            sequence_length=sequence_length,
            start_value=start,
            end_value=end,
            sep_value=sep,
            pad_value=self.pad_token_id,
            truncate="waterfall" if self.family == "bert" else "round_robin",
        )

    @property
    def input_names(self) -> list[str]:
        names = ["token_ids", "padding_mask"]
        return names + ["segment_ids"] if self.family == "bert" else names

    def __call__(self, text, text_pair=None):
        """Encodes a `[batch]` string tensor (and its pair) to padded ids."""
        segments = [self.tokenizer(text)]
        if text_pair is not None:
            segments.append(self.tokenizer(text_pair))
        token_ids, segment_ids = self.packer(tuple(segments))
        inputs = {
            "token_ids": token_ids,
            "padding_mask": token_ids != self.pad_token_id,
        }
        if self.family == "bert":
            inputs["segment_ids"] = segment_ids
        return inputs


def trim_to_longest(inputs, multiple=8):
    """Cuts padded encoder outputs to the batch's longest sequence.

    The width is rounded up to a multiple of `multiple`, so a compiled
    function sees few distinct shapes. The mask hides padding from
    attention and pooling, so the logits do not change, while the work
    shrinks with the padding (benchmarks/RESULTS.md).

    Args:
        inputs: a dict of `[batch, width]` tensors with a `padding_mask`.
        multiple: round the width up to a multiple of this.

    Returns:
        The same dict, every tensor cut to the new width.

    Example:
    >>> inputs = trim_to_longest(encoder(tf.constant(["short", "texts"])))
    """
    lengths = tf.reduce_sum(tf.cast(inputs["padding_mask"], tf.int32), axis=1)
    longest = tf.reduce_max(lengths)
    width = tf.shape(inputs["token_ids"])[1]
    keep = tf.minimum(width, (longest + multiple - 1) // multiple * multiple)
    return {name: value[:, :keep] for name, value in inputs.items()}


# === Classifier ===


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
        and its tokenizer.

    Raises:
        ValueError: when the preset is neither BERT nor RoBERTa, a file of a
            local preset fails its `preset_sha256` check, or a from-scratch
            backbone is asked for without texts.
    """
    if model_config.preset is not None:
        if model_config.preset_sha256:
            verify_checksums(model_config.preset, model_config.preset_sha256)
        backbone = keras_hub.models.Backbone.from_preset(model_config.preset, dtype=dtype)
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
    classifier_class = MeanPoolingClassifier if model_config.pooling == "mean" else FAMILIES[family][1]
    classifier = classifier_class(
        backbone,
        num_classes=num_classes,
        preprocessor=None,
        activation=None,
        dropout=model_config.dropout,
    )
    return classifier, tokenizer


@dataclass
class LayerGroups:
    """A classifier's layers by role, for freezing and per-layer learning rates.

    Attributes:
        embeddings: token/position/segment embeddings and their layer norm.
        transformer: the transformer layers, bottom (index 0) to top.
        head: everything above the last transformer layer (BERT's pooler,
            RoBERTa's head dense, the output layer); always trainable.
            Under mean pooling BERT's pooler is in no group: it is unused
            and stays frozen.
    """

    embeddings: list
    transformer: list
    head: list


def layer_groups(classifier) -> LayerGroups:
    """Splits a classifier's weighted layers into embeddings, transformer, head.

    Under mean pooling it also freezes BERT's pooler, which then gets no
    gradient and belongs to no group.
    """
    backbone = classifier.backbone
    transformer = list(backbone.transformer_layers)
    pooler = [backbone.get_layer("pooled_dense")] if family_of(backbone) == "bert" else []
    mean_pooling = isinstance(classifier, MeanPoolingClassifier)
    for layer in pooler:
        layer.trainable = not mean_pooling
    head_in_backbone = [] if mean_pooling else pooler
    skip = {id(layer) for layer in transformer + pooler}
    embeddings = [
        layer
        for layer in backbone.layers
        if layer.weights and id(layer) not in skip
    ]
    head = head_in_backbone + [
        layer for layer in classifier.layers if layer is not backbone and layer.weights
    ]
    return LayerGroups(embeddings=embeddings, transformer=transformer, head=head)
