"""Tokenizers: learned from texts, read from a preset, and `TextEncoder`, which runs them in TensorFlow.

`TextEncoder` is made of TensorFlow and TensorFlow Text ops only, so the
same object feeds `tf.data` in training and runs inside the exported
serving graph.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import keras_hub
import tensorflow as tf

BERT_RESERVED_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


ROBERTA_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


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
            truncated as `truncation` says.
        truncation: which tokens of a longer single text are kept: `"head"`
            (the first), `"tail"` (the last) or `"head_tail"` (the first
            `head_tokens` and the rest from the end). Pairs are always
            `"head"`: their segments share the tokens, each kept from its
            start (BERT fills the first segment first, RoBERTa takes from
            each in turn).
        head_tokens: `"head_tail"` only: the tokens kept from the start;
            default a quarter of `sequence_length`, as Sun et al. kept 128
            of 512.
        windows: sliding windows: read a single text as up to this many
            windows of `sequence_length - 2` tokens, each packed with its
            own special tokens (see `split_into_windows`); the encoding is
            then `[batch, windows, sequence_length]`, and a window that a
            text does not need is all padding. None reads one window,
            truncated as `truncation` says.
        stride: with `windows`: the tokens from one window's start to the
            next's; default three quarters of a window, so that
            neighbours share a quarter.

    Raises:
        ValueError: for an unknown `truncation`, `head_tokens` that leave
            no room for the tail, or windows with another truncation than
            `"head"` or a stride that skips tokens.

    Reference:
        Sun et al. 2019, "How to Fine-Tune BERT for Text Classification?",
        arXiv:1905.05583 (head+tail truncation is best on IMDb).

    Example:
    >>> encoder = TextEncoder(tokenizer, sequence_length=64, truncation="head_tail")
    >>> inputs = encoder(tf.constant(["a fine film"]))
    """

    def __init__(
        self,
        tokenizer,
        sequence_length,
        truncation="head",
        head_tokens=None,
        windows=None,
        stride=None,
    ):
        if truncation not in TRUNCATIONS:
            raise ValueError(
                f"Invalid value for argument `truncation`. Expected one of {TRUNCATIONS}. "
                f"Received: truncation={truncation!r}"
            )
        # [CLS] ... [SEP] or <s> ... </s>: two special tokens around one text.
        budget = sequence_length - 2
        if head_tokens is not None and not 0 <= head_tokens < budget:
            raise ValueError(
                "Invalid value for argument `head_tokens`. Expected 0 <= head_tokens < "
                f"sequence_length - 2 = {budget}, so that the tail keeps a token. "
                f"Received: head_tokens={head_tokens}"
            )
        if windows is not None:
            stride = default_stride(sequence_length) if stride is None else stride
            if truncation != "head" or windows < 1 or not 0 < stride <= budget:
                raise ValueError(
                    "Invalid sliding windows. Expected truncation='head' (windows read the "
                    f"whole text), windows >= 1 and 0 < stride <= sequence_length - 2 = "
                    f"{budget}, so that no token is skipped. Received: truncation="
                    f"{truncation!r}, windows={windows}, stride={stride}"
                )
        self.tokenizer = tokenizer
        self.sequence_length = sequence_length
        self.truncation = truncation
        self.windows = windows
        self.stride = stride
        self.head_tokens = (
            default_head_tokens(sequence_length) if head_tokens is None else head_tokens
        )
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
            if self.truncation != "head":
                raise ValueError(
                    f"truncation={self.truncation!r} is for single texts; sentence pairs share "
                    "the tokens between their segments, each kept from its start. Use "
                    "truncation='head'."
                )
            if self.windows is not None:
                raise ValueError("sliding windows are for single texts, not sentence pairs")
            segments.append(self.tokenizer(text_pair))
        elif self.windows is not None:
            return self._encode_windows(segments[0])
        elif self.truncation != "head":
            segments = [self.truncate(segments[0])]
        token_ids, segment_ids = self.packer(tuple(segments))
        return self._inputs(token_ids, segment_ids)

    def _encode_windows(self, token_ids):
        """`[batch, windows, sequence_length]` inputs: each text's windows, packed."""
        nested = split_into_windows(
            _ragged(token_ids), self.sequence_length - 2, self.stride, self.windows
        )
        token_ids, segment_ids = self.packer((nested.values,))
        shape = [None, self.windows, self.sequence_length]
        token_ids, segment_ids = (
            tf.RaggedTensor.from_row_lengths(value, nested.row_lengths()).to_tensor(
                default_value=default, shape=shape
            )
            for value, default in ((token_ids, self.pad_token_id), (segment_ids, 0))
        )
        return self._inputs(token_ids, segment_ids)

    def _inputs(self, token_ids, segment_ids):
        inputs = {
            "token_ids": token_ids,
            "padding_mask": token_ids != self.pad_token_id,
        }
        if self.family == "bert":
            inputs["segment_ids"] = segment_ids
        return inputs

    def truncate(self, token_ids):
        """Keeps the tokens `truncation` keeps of each row of ragged `token_ids`.

        Rows that fit are kept whole; the packer then only adds the
        special tokens. (`"head"` is the packer's own truncation.)
        """
        budget = self.sequence_length - 2
        head = {"head": budget, "tail": 0, "head_tail": self.head_tokens}[self.truncation]
        return keep_head_and_tail(_ragged(token_ids), head, budget - head)


TRUNCATIONS = ("head", "tail", "head_tail")


def _ragged(token_ids):
    if isinstance(token_ids, tf.RaggedTensor):
        return token_ids
    # keras-hub tokenizers answer Python lists when run eagerly.
    return tf.ragged.constant(token_ids, dtype=tf.int32, ragged_rank=1)


def default_head_tokens(sequence_length) -> int:
    """A quarter of `sequence_length`: Sun et al. kept the first 128 of 512 tokens."""
    return sequence_length // 4


def default_stride(sequence_length) -> int:
    """Three quarters of a window of `sequence_length - 2` tokens: neighbours share a quarter."""
    return max(1, (sequence_length - 2) * 3 // 4)


def split_into_windows(token_ids, length, stride, windows):
    """Each row's windows: `length` ids starting every `stride` ids, at most `windows` of them.

    A row gets as few windows as cover it (one if it fits in `length`, an
    empty row included), the last one ending at the row's end, unless
    `windows` runs out first: the ids past the last window are then
    dropped, as head truncation drops them. Made of core ragged ops, so it
    runs in `tf.data` and in the serving graph alike.

    Args:
        token_ids: a ragged `[batch, None]` tensor.
        length: ids per window.
        stride: ids from one window's start to the next's, at most `length`.
        windows: the most windows a row gets.

    Returns:
        A ragged `[batch, None (windows), None (ids)]` tensor.

    Example:
    >>> split_into_windows(tf.ragged.constant([[1, 2, 3, 4, 5], [6]]), 3, 2, 4)
    <tf.RaggedTensor [[[1, 2, 3], [3, 4, 5]], [[6]]]>
    """
    lengths = token_ids.row_lengths()
    beyond = tf.maximum(lengths - length, 0)
    counts = tf.minimum(1 + (beyond + stride - 1) // stride, windows)
    rows = tf.repeat(tf.range(tf.size(lengths, out_type=lengths.dtype)), counts)
    starts = tf.ragged.range(counts).flat_values * stride
    ends = tf.minimum(starts + length, tf.gather(lengths, rows))
    positions = tf.ragged.range(starts, ends)
    offsets = tf.gather(token_ids.row_starts(), rows)
    flat = positions + tf.expand_dims(offsets, axis=1)
    return tf.RaggedTensor.from_row_lengths(tf.gather(token_ids.flat_values, flat), counts)


def keep_head_and_tail(token_ids, head, tail):
    """The first `head` and the last `tail` ids of each row of a ragged `[batch, None]` tensor.

    A row of at most `head + tail` ids is kept whole. Made of core ragged
    ops, so it runs in `tf.data` and in the serving graph alike.

    Example:
    >>> keep_head_and_tail(tf.ragged.constant([[1, 2, 3, 4, 5], [6, 7]]), 1, 2)
    <tf.RaggedTensor [[1, 4, 5], [6, 7]]>
    """
    lengths = token_ids.row_lengths()
    positions = tf.ragged.range(lengths)
    # A row no longer than head + tail has every position in one of the two
    # ranges, so it needs no case of its own.
    starts = tf.expand_dims(lengths - tail, axis=1)
    keep = (positions < head) | (positions >= starts)
    return tf.ragged.boolean_mask(token_ids, keep)


def load_tokenizer(preset_dir):
    """The tokenizer `tokenizer.save_to_preset(preset_dir)` wrote.

    `Tokenizer.from_preset` wants the backbone's `config.json` too, which a
    run's `tokenizer/` lacks; this is the tokenizer half of it.
    """
    import keras
    import keras_hub  # noqa: F401  (registers the tokenizer classes)

    config = json.loads((Path(preset_dir) / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer = keras.saving.deserialize_keras_object(config)
    tokenizer.load_preset_assets(str(preset_dir))
    return tokenizer
