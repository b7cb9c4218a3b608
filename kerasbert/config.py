"""Typed, validated run configuration: the schema of a run's YAML file.

One YAML file describes a run in sections (`data`, `model`, `training`,
`export`, and `distribution` and `runtime` for the machine). It is validated against the schema below before any data or model
is touched; every problem is reported as one line that names the file, the
dotted key, what was given and what is allowed.

`kerasbert.config_loading` reads the file into it. Neither imports
TensorFlow, so validating a config is instant.
"""

from __future__ import annotations

import reprlib
from typing import Annotated, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from kerasbert.training import schedules

# Counts and sizes end up in TensorFlow as int32; a larger one is a typo that
# would otherwise surface as an overflow deep inside training.
MAX_INT = 2**31 - 1
PositiveInt = Annotated[int, Field(gt=0, le=MAX_INT)]
Count = Annotated[int, Field(ge=0, le=MAX_INT)]
# NumPy, scikit-learn and Keras all take seeds in [0, 2**32).
Seed = Annotated[int, Field(ge=0, lt=2**32)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
ROBERTA_MIN_VOCABULARY = 300
# A multi-label run's `model.threshold_floor` when the config leaves it out.
DEFAULT_THRESHOLD_FLOOR = 0.05
# Renders a received value in an error message, cut short.
SHORT = reprlib.Repr()
SHORT.maxstring = SHORT.maxother = 60
SHORT.maxlist = SHORT.maxdict = SHORT.maxset = 6
SHORT.maxlevel = 2


class ConfigError(ValueError):
    """A config that cannot be used, with a one-line explanation."""


class _Section(BaseModel):
    # No inf or nan: every float here is a rate, a fraction or an edge, and a
    # non-finite one would only fail (or silently diverge) once training runs.
    # A field's docstring, the string under it, is its description: the
    # configuration reference (`kerasbert.config_reference`) is built from them.
    model_config = ConfigDict(
        extra="forbid",
        validate_default=True,
        allow_inf_nan=False,
        use_attribute_docstrings=True,
    )


# === Data ===


class SplitConfig(_Section):
    """Fractions for splitting one file (`data.path`); the rest goes to `train`.

    With `data.train` and no `data.validation` file, `validation` is the
    fraction of `train` held out for validation, and `test` is unused.
    `validation + test` must stay below 1.
    """

    validation: Fraction = 0.1
    """Fraction held out for validation, stratified by label. With `data.train` and no
    `data.validation` file, the fraction of `train` held out (0 there means 0.1).
    """
    test: Fraction = 0.1
    """Fraction of `data.path` held out for the final test metrics; unused with `data.train`."""

    @model_validator(mode="after")
    def _leaves_training_data(self):
        if self.validation + self.test >= 1:
            raise ValueError(
                "validation + test must be below 1 so that rows remain "
                f"for training; received {self.validation} + {self.test}"
            )
        return self


class BinningConfig(_Section):
    """Turns a numeric target into classes, by quantiles or by edges.

    `names` names the classes, lowest bin first; without them a class is
    named by its bounds, e.g. `[1000, 10000)`.
    """

    num_bins: Optional[Annotated[int, Field(ge=2, le=MAX_INT)]] = None
    """Bins of equal count, cut at the quantiles of the training split's target. Give `num_bins` or
    `edges`.
    """
    edges: Optional[list[float]] = None
    """Increasing bin edges: `[1000, 10000]` makes the classes `[-inf, 1000)`, `[1000, 10000)` and
    `[10000, inf)`. Give `num_bins` or `edges`; the edges are saved with the model.
    """
    names: Optional[list[Annotated[str, Field(min_length=1)]]] = None
    """Class names, lowest bin first, one per bin and all different; without them a class is named
    by its bounds, e.g. `[1000, 10000)`.
    """

    @model_validator(mode="after")
    def _one_way(self):
        if (self.num_bins is None) == (self.edges is None):
            raise ValueError("give exactly one of `num_bins` or `edges`")
        if self.edges is not None:
            if len(self.edges) < 1:
                raise ValueError("`edges` needs at least one value")
            if any(b <= a for a, b in zip(self.edges, self.edges[1:])):
                raise ValueError(
                    f"`edges` must increase strictly; received {SHORT.repr(self.edges)}"
                )
        if self.names is not None:
            bins = self.num_bins if self.edges is None else len(self.edges) + 1
            if len(self.names) != bins:
                raise ValueError(
                    f"`names` names {len(self.names)} classes but there are {bins} bins"
                )
            if len(set(self.names)) != len(self.names):
                raise ValueError(f"`names` repeats a name: {SHORT.repr(self.names)}")
        return self


class DataConfig(_Section):
    """Where the labelled text is and how to read it."""

    train: Optional[str] = None
    """The training file. Given alone, validation is held out from it as a stratified
    `split.validation` slice (0.1 by default, seeded by `seed`), and the run has no test split, so
    no test metrics. Give either `train` or `path`.
    """
    validation: Optional[str] = None
    """The validation file, with `train`: scored at every epoch's end (checkpoints, early stopping)
    and at the end of the run. Without it, validation is a stratified slice of `train`.
    """
    test: Optional[str] = None
    """The test file, with `train`: scored once at the end (`metrics.json`, `test_predictions.csv`).
    Without it the run has no test split.
    """
    predict: Optional[str] = None
    """An unlabelled file to predict once the model is exported: its rows, with the predicted
    label and every class's probability, go to `predictions.csv` in the run directory. It needs
    `text_column` (and `text_pair_column`), is read before training starts, and needs
    `export.enabled`: the export is what predicts it.
    """
    path: Optional[str] = None
    """One labelled file, split into stratified train, validation and test parts by the `split`
    fractions (seeded by `seed`). Give either `path` or `train`.
    """
    split: SplitConfig = SplitConfig()
    """Fractions held out of `path`; with `train` alone, only `split.validation` is used."""
    seed: Seed = 0
    """Seeds the stratified splits."""
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = "auto"
    """How to read the files. `auto` goes by the extension: `.csv`, `.tsv` or `.tab`, `.jsonl` or
    `.ndjson`, `.parquet` or `.pq`, optionally followed by `.gz`, `.bz2`, `.zip` or `.xz` for a
    compressed file. A format name reads every file as that format, whatever its extension.
    """
    text_column: str = "text"
    """The column with the text to classify."""
    text_pair_column: Optional[str] = None
    """For sentence pairs: the column with the second text (an empty second text is kept)."""
    label_column: str = "label"
    """The column with the labels: strings or integers, or numbers to bin with `binning`. Rows with
    an empty text or a missing label are dropped and counted in the log.
    """
    binning: Optional[BinningConfig] = None
    """Turns a numeric target into classes; `null` takes the labels as they are."""
    class_weight: Union[Literal["balanced"], dict[str, PositiveFloat], None] = None
    """Weighs each class's examples in the loss: `balanced` (inversely to the class's frequency in
    training) or a mapping `{label: weight}`; `null` weighs every example the same.
    """
    label_delimiter: Optional[Annotated[str, Field(min_length=1)]] = None
    """`model.task: multi_label` only: `label_column` holds each text's labels joined by this string,
    e.g. `"|"` for `sports|politics`; an empty cell is a text with no label. Give this or
    `label_columns`.
    """
    label_columns: Optional[list[Annotated[str, Field(min_length=1)]]] = None
    """`model.task: multi_label` only: one 0/1 column per label, named for the label; a row of zeros
    is a text with no label, and `label_column` is unused. Give this or `label_delimiter`.
    """
    pos_weight: Optional[dict[str, PositiveFloat]] = None
    """`model.task: multi_label` only: `{label: weight}` multiplies the loss of a label's positive
    examples, for rare labels (PyTorch's `BCEWithLogitsLoss(pos_weight=...)`); labels left out
    weigh 1.
    """

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.train is None):
            raise ValueError(
                "give either `path` (one file, split by `split` fractions) "
                "or `train` (with optional `validation` and `test` files)"
            )
        if self.path is not None and (self.validation or self.test):
            raise ValueError("`validation`/`test` files go with `train`, not with `path`")
        columns = {
            "text_column": self.text_column,
            "text_pair_column": self.text_pair_column,
            "label_column": self.label_column,
        }
        given = [(key, column) for key, column in columns.items() if column is not None]
        if self.label_columns is not None:
            # The label is read from these columns instead of `label_column`.
            given = [(key, column) for key, column in given if key != "label_column"]
            given += [(f"label_columns[{i}]", c) for i, c in enumerate(self.label_columns)]
        if self.label_delimiter is not None and self.label_columns is not None:
            raise ValueError(
                "give `label_delimiter` (one column of delimited labels) or `label_columns` "
                "(one 0/1 column per label), not both"
            )
        if self.label_columns is not None and len(self.label_columns) < 2:
            raise ValueError(
                f"`label_columns` needs at least two columns; received {SHORT.repr(self.label_columns)}"
            )
        for i, (key, column) in enumerate(given):
            for other, other_column in given[i + 1 :]:
                if column == other_column:
                    raise ValueError(
                        f"`{key}` and `{other}` both name the column "
                        f"{SHORT.repr(column)}; each must name a different column"
                    )
        return self


# === Model ===


class ScratchConfig(_Section):
    """A randomly initialised backbone with a vocabulary learned from the data."""

    family: Literal["bert", "roberta"] = "bert"
    """`bert` (a WordPiece vocabulary) or `roberta` (byte-level BPE; `vocabulary_size` at least
    300).
    """
    num_layers: PositiveInt = 2
    """Transformer layers."""
    num_heads: PositiveInt = 2
    """Attention heads per layer; must divide `hidden_dim`."""
    hidden_dim: PositiveInt = 32
    """Width of the token representations."""
    intermediate_dim: PositiveInt = 64
    """Width of each layer's feed-forward block."""
    max_sequence_length: PositiveInt = 128
    """Position embeddings available: the longest `model.sequence_length` this backbone takes."""
    vocabulary_size: Annotated[int, Field(ge=16, le=MAX_INT)] = 1000
    """The largest vocabulary learned from the training texts."""
    lowercase: bool = True
    """BERT only: fold the texts to lower case, both when learning the WordPiece vocabulary and when
    tokenizing (in training and in the export), so that `Great` and `great` are one token. RoBERTa's
    byte-level BPE keeps case and ignores it.
    """

    @model_validator(mode="after")
    def _heads_divide_hidden(self):
        if self.family == "roberta" and self.vocabulary_size < ROBERTA_MIN_VOCABULARY:
            raise ValueError(
                "a byte-level BPE vocabulary holds 256 bytes and 5 special "
                f"tokens before any merge: vocabulary_size must be at least "
                f"{ROBERTA_MIN_VOCABULARY} for roberta; received {self.vocabulary_size}"
            )
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim ({self.hidden_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        return self


class LongTextConfig(_Section):
    """Sliding windows: a long text read as several overlapping windows, their answers pooled."""

    windows: Annotated[int, Field(ge=1, le=MAX_INT)]
    """The most windows a text is read as, each of `sequence_length - 2` tokens with its own special
    tokens. A text gets as few as cover it; past the last window, its tokens are dropped. The work
    per text grows with its windows: training and serving a text of `windows` windows costs as much
    as `windows` short texts.
    """
    stride: Optional[PositiveInt] = None
    """Tokens from one window's start to the next's, at most `sequence_length - 2`; default three
    quarters of a window, so that neighbours share a quarter and a sentence cut by one window's
    edge is whole in the next.
    """
    pooling: Literal["mean", "max", "attention"] = "mean"
    """How a text's windows' logits become its own: `mean` averages them (as Hugging Face's usual
    recipe averages its windows' predictions), `max` takes each class's largest (a verdict in any
    one window carries the text), `attention` weights them by a softmax of a score learned from
    each window's logits.
    """


class ModelConfig(_Section):
    """Which backbone, and the classification head on top of it."""

    preset: Optional[str] = None
    """A keras-hub preset name (`bert_base_en_uncased`, `roberta_base_en`, ...; these download) or a
    local directory in Keras preset or Hugging Face Transformers format. Give either `preset` or
    `scratch`.
    """
    preset_sha256: Optional[dict[str, Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]]] = None
    """SHA-256 digests of files in a local `preset` directory, `{file name: digest}`, checked before
    anything is loaded; a mismatch stops the run.
    """
    scratch: Optional[ScratchConfig] = None
    """A randomly initialised backbone with a vocabulary learned from the training texts. Give
    either `preset` or `scratch`.
    """
    sequence_length: PositiveInt = 128
    """Tokens kept per text, its special tokens included; longer texts are truncated as
    `truncation` says. With `scratch`, at most
    `scratch.max_sequence_length`.
    """
    truncation: Literal["head", "tail", "head_tail"] = "head"
    """Which tokens of a longer text are kept: `head` the first, `tail` the last, `head_tail` the
    first `head_tokens` and the rest from the end (Sun et al. 2019's best on IMDb: reviews often
    give their verdict last). Done in the tokenizing graph, so training, evaluation and the export
    truncate alike. Sentence pairs (`data.text_pair_column`) take only `head`: the two segments
    share the tokens, each kept from its start (BERT fills the first segment first, RoBERTa takes
    from each in turn).
    """
    head_tokens: Optional[Count] = None
    """`head_tail` only: the tokens kept from the start of a text, below `sequence_length - 2` (the
    rest of the `sequence_length - 2` come from its end); default a quarter of `sequence_length`,
    as 128 of 512.
    """
    long_text: Optional[LongTextConfig] = None
    """Sliding windows instead of truncation: a text longer than `sequence_length` is read as up to
    `long_text.windows` overlapping windows, in training, evaluation and the exported graph alike,
    and the model pools their logits. Needs `truncation: head`, and single texts. `predict_tokens`
    still takes one window.
    """
    pooling: Literal["cls", "mean"] = "cls"
    """`cls` is keras-hub's own head (BERT's pooled `[CLS]` vector, RoBERTa's `<s>` vector through a
    dense layer); `mean` averages the token vectors under the padding mask, as sentence encoders
    were trained.
    """
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """Dropout rate before the classification layer."""
    task: Literal["classification", "multi_label", "regression"] = "classification"
    """`classification`: one label per text, a softmax head. `multi_label`: any number of labels per
    text (`data.label_delimiter` or `data.label_columns`), a sigmoid per label with binary
    cross-entropy, and per-label thresholds tuned on validation. `regression`: a numeric
    `data.label_column`, one output unit, `loss` MSE or Huber. Never inferred from the data: give it.
    """
    loss: Optional[Literal["mse", "huber"]] = None
    """`regression` only: `mse` (the default) or `huber` (less swayed by outliers, on the
    standardised target)."""
    target_transform: Literal["none", "log1p"] = "none"
    """`regression` only: `log1p` fits `log(1 + y)`, for heavy-tailed non-negative targets such as
    amounts of money. The transform and the target's standardisation live in the exported graph, so
    answers come back in the target's own unit.
    """
    threshold_floor: Optional[Annotated[float, Field(ge=0, lt=1)]] = None
    """`multi_label` only: the lowest decision threshold a label may be given when thresholds are
    tuned for best F1 on the validation split; `null` is 0.05 there.
    """

    @model_validator(mode="after")
    def _one_backbone(self):
        if (self.preset is None) == (self.scratch is None):
            raise ValueError(
                "give exactly one of `preset` (a keras-hub preset name or a "
                "local directory) or `scratch` (a from-scratch spec)"
            )
        if self.preset_sha256 and self.preset is None:
            raise ValueError("`preset_sha256` checks files of a local `preset` directory")
        if self.scratch and self.sequence_length > self.scratch.max_sequence_length:
            raise ValueError(
                f"sequence_length ({self.sequence_length}) exceeds "
                f"scratch.max_sequence_length ({self.scratch.max_sequence_length})"
            )
        if self.head_tokens is not None:
            if self.truncation != "head_tail":
                raise ValueError(
                    f"`head_tokens` is for `truncation: head_tail`; received truncation "
                    f"{self.truncation!r}"
                )
            if self.head_tokens >= self.sequence_length - 2:
                raise ValueError(
                    f"head_tokens ({self.head_tokens}) must be below sequence_length - 2 "
                    f"({self.sequence_length - 2}, the tokens a text keeps besides its two "
                    "special tokens), so that its end is kept too"
                )
        if self.long_text is not None:
            if self.truncation != "head":
                raise ValueError(
                    f"`long_text` reads the whole text in windows; `truncation` "
                    f"{self.truncation!r} would cut it first: use `truncation: head`"
                )
            if (
                self.long_text.stride is not None
                and self.long_text.stride > self.sequence_length - 2
            ):
                raise ValueError(
                    f"long_text.stride ({self.long_text.stride}) must be at most sequence_length - 2 "
                    f"({self.sequence_length - 2}, the text tokens of a window), or tokens between "
                    "windows are skipped"
                )
        if self.task != "regression":
            for key, off in (("loss", None), ("target_transform", "none")):
                if getattr(self, key) != off:
                    raise ValueError(
                        f"`{key}` is for `task: regression`; received task {self.task!r}"
                    )
        # A run's saved config holds every key, so a set floor must mean a
        # multi-label run: only there is the default filled in.
        if self.task != "multi_label" and self.threshold_floor is not None:
            raise ValueError(
                f"`threshold_floor` is for `task: multi_label`; received task {self.task!r}: "
                "leave it out, or set `task: multi_label`"
            )
        if self.task == "multi_label" and self.threshold_floor is None:
            self.threshold_floor = DEFAULT_THRESHOLD_FLOOR
        return self

    @property
    def num_layers(self) -> Optional[int]:
        """Transformer layers, when known without loading the backbone."""
        return self.scratch.num_layers if self.scratch else None


# === Training ===


class ScheduleConfig(_Section):
    """Learning-rate schedule; see `kerasbert.training.schedules`.

    `one_cycle` rises from `maximal_learning_rate / div_factor` to
    `maximal_learning_rate` over `pct_start` of the steps, then anneals to
    `maximal_learning_rate / (div_factor * final_div_factor)`, with momentum
    moving the other way between `max_momentum` and `base_momentum`. The cyclic
    modes go between `initial_learning_rate` and `maximal_learning_rate` with a
    half cycle of `step_size` batches. `linear` (BERT's recipe) warms up from 0
    to `maximal_learning_rate` over `warmup_ratio` of the steps, then decays
    linearly to 0.
    """

    mode: Literal[("constant",) + schedules.MODES] = "constant"
    """`constant` keeps `training.learning_rate`; `triangular`, `triangular2` and `exp_range` (Smith
    2017) cycle between `initial_learning_rate` and `maximal_learning_rate`; `one_cycle` (Smith
    2018) warms up, then anneals; `linear` (BERT's recipe, as Hugging Face's
    `get_linear_schedule_with_warmup`) warms up from 0 to `maximal_learning_rate` over
    `warmup_ratio` of the steps, then decays linearly to 0.
    """
    initial_learning_rate: Optional[PositiveFloat] = None
    """The low end of a cyclic mode's cycle; the cyclic modes need it."""
    maximal_learning_rate: Optional[PositiveFloat] = None
    """The peak rate; every mode but `constant` needs it (`python -m kerasbert.lr_find` suggests
    one).
    """
    step_size: Optional[PositiveInt] = None
    """Batches in half a cycle; the cyclic modes need it."""
    gamma: Annotated[float, Field(gt=0, le=1)] = 1.0
    """`exp_range` only: the amplitude's decay per step."""
    pct_start: Annotated[float, Field(gt=0, lt=1)] = 0.25
    """`one_cycle` only: the fraction of the cycle spent warming up."""
    warmup_ratio: Fraction = 0.1
    """`linear` only: the fraction of the steps spent warming up from 0 to `maximal_learning_rate`;
    the rest decay linearly to 0.
    """
    div_factor: Annotated[float, Field(ge=1)] = 25.0
    """`one_cycle` only: the cycle starts at `maximal_learning_rate / div_factor`."""
    final_div_factor: Annotated[float, Field(ge=1)] = 1e4
    """`one_cycle` only: the cycle ends at `maximal_learning_rate / (div_factor *
    final_div_factor)`.
    """
    base_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.85
    """`one_cycle` only: the momentum (Adam's `beta_1`, SGD's momentum) at the peak rate."""
    max_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.95
    """`one_cycle` only: the momentum at the start and the end of the cycle."""
    restart_each_stage: bool = True
    """With `training.unfreezing`: each stage starts a new cycle over its own epochs; `false` runs
    one schedule over the whole run.
    """

    @model_validator(mode="after")
    def _consistent(self):
        if self.mode in schedules.CYCLIC_MODES:
            for key in ("initial_learning_rate", "maximal_learning_rate", "step_size"):
                if getattr(self, key) is None:
                    raise ValueError(f"mode {self.mode!r} needs `{key}`")
        if self.mode in ("one_cycle", "linear") and self.maximal_learning_rate is None:
            raise ValueError(f"mode {self.mode!r} needs `maximal_learning_rate`")
        # The schedule's constructor checks the rest: one set of rules for
        # the config and for code that builds a schedule. A one-cycle length
        # comes from the data; any length checks the other values.
        self.build(total_steps=1)
        return self

    def build(self, total_steps):
        """The schedule object (`kerasbert.training.schedules`), or None for `constant`.

        Args:
            total_steps: batches in a one-cycle or linear schedule.
        """
        if self.mode == "constant":
            return None
        if self.mode == "linear":
            return schedules.LinearSchedule(
                self.maximal_learning_rate, total_steps, self.warmup_ratio
            )
        if self.mode == "one_cycle":
            return schedules.OneCycleSchedule(
                self.maximal_learning_rate,
                total_steps,
                self.pct_start,
                self.div_factor,
                self.final_div_factor,
                self.base_momentum,
                self.max_momentum,
            )
        return schedules.CyclicalSchedule(
            self.initial_learning_rate,
            self.maximal_learning_rate,
            self.step_size,
            self.mode,
            self.gamma,
        )


class StageConfig(_Section):
    """One unfreezing stage: train for `epochs` with the top layers trainable.

    `maximal_learning_rate`, when given, is this stage's peak instead of the
    schedule's: fast.ai's ULMFiT recipe gives the head alone a higher rate
    than the stages that unfreeze the layers below.
    """

    epochs: PositiveInt
    """Epochs of this stage."""
    trainable_layers: Union[Count, Literal["all"]]
    """Transformer layers that train in this stage, counted from the top; the head always trains,
    and `all` trains the embeddings too.
    """
    maximal_learning_rate: Optional[PositiveFloat] = None
    """This stage's peak instead of `schedule.maximal_learning_rate`; needs a schedule with
    `restart_each_stage: true`.
    """


class EarlyStoppingConfig(_Section):
    """Stops the run once `monitor` has not improved for `patience` epochs.

    On by default, watching `val_loss` with patience 2;
    `training.early_stopping: null` turns it off. With `training.unfreezing`,
    only the last stage may stop the run: the earlier ones train a partly
    frozen network by design. Either way the best epoch by
    `training.checkpoint_monitor` is the one kept.
    """

    monitor: str = "val_loss"
    """The metric to watch, as Keras logs it (`val_loss`, `val_accuracy`, ...)."""
    patience: Count = 2
    """Epochs without improvement before the run stops."""
    mode: Literal["auto", "min", "max"] = "auto"
    """Whether `monitor` should fall (`min`) or rise (`max`); `auto` tells from its name, as Keras'
    `EarlyStopping` does.
    """


class TrainingConfig(_Section):
    """How the model is fitted."""

    epochs: PositiveInt = 3
    """Passes over the training split; `unfreezing` stages add up to it. Ignored when `max_steps` is
    given.
    """
    max_steps: Optional[PositiveInt] = None
    """A step budget, as Hugging Face's `TrainingArguments.max_steps`: the run trains this many
    batches, stopping within an epoch if need be, `epochs` is ignored, and a schedule spans these
    steps. Cannot be combined with `unfreezing`, whose stages count epochs.
    """
    eval_steps: Optional[PositiveInt] = None
    """Also evaluates on the validation split every this many steps, besides each epoch's end:
    each evaluation is logged and appended to `eval_history.csv` (step, epoch, val_loss,
    val_accuracy). Checkpoints and early stopping still go by the epoch-end evaluations.
    """
    batch_size: PositiveInt = 32
    """Examples per step; under a several-device `distribution.strategy`, the global batch, split
    across replicas.
    """
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    """The optimizer; `weight_decay` and `momentum` apply to each."""
    learning_rate: PositiveFloat = 5e-5
    """The rate of a `constant` schedule; other schedule modes set the rate every step."""
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    """Decoupled weight decay."""
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    """SGD's momentum, or Adam's and AdamW's `beta_1`; a `one_cycle` schedule moves it instead."""
    layerwise_decay: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Discriminative fine-tuning: layer *i* learns at `lr * layerwise_decay ** (top - i)`, the
    embeddings lowest, the head at `lr`; 1 turns it off.
    """
    schedule: ScheduleConfig = ScheduleConfig()
    """The learning-rate schedule."""
    unfreezing: Optional[list[StageConfig]] = None
    """ULMFiT's gradual unfreezing: stages run in order in one `fit`, their epochs adding up to
    `epochs`; `null` trains every layer from the start.
    """
    early_stopping: Optional[EarlyStoppingConfig] = EarlyStoppingConfig()
    """On by default, watching `val_loss` with patience 2; `null` turns it off. With `unfreezing`,
    only the last stage may stop the run.
    """
    checkpoint_monitor: str = "val_loss"
    """The best epoch by this metric (`best.weights.h5`) is the one kept, evaluated and exported."""
    gradient_accumulation_steps: PositiveInt = 1
    """Applies the mean gradient of this many batches at once, for an effective batch of
    `gradient_accumulation_steps * batch_size`.
    """
    bucket_window: Count = 50
    """Groups texts of similar length into the same batch within windows of this many batches, as
    fast.ai's `SortishSampler`, so that batches pad less; 0 turns it off.
    """
    baseline: bool = True
    """Also fits a TF-IDF and logistic regression baseline on the same splits (`baseline.json`), to
    compare with in the report.
    """
    runs_dir: str = "runs"
    """Run directories go to `<runs_dir>/<name>/<timestamp>/`."""
    calibration: Optional[Literal["temperature", "none"]] = None
    """`temperature`: after training, fit a temperature that the logits are divided by (one per
    label for `multi_label`) to minimise the validation split's log loss, and apply it inside the
    export, so that its probabilities are calibrated; the predicted labels do not change.
    `none` exports the probabilities as trained. `null` is `temperature` for `classification` and
    `multi_label` and `none` for `regression`, which has no probabilities.
    """

    @field_validator("unfreezing")
    @classmethod
    def _not_empty(cls, stages):
        if stages is not None and not stages:
            raise ValueError("give at least one stage, or leave `unfreezing` out")
        return stages

    @model_validator(mode="after")
    def _stages_sum_to_epochs(self):
        if self.unfreezing and self.max_steps is not None:
            raise ValueError(
                "`max_steps` sets the run's length in steps, while `unfreezing` stages "
                "count epochs; give `epochs` with the stages, or leave `unfreezing` out"
            )
        if self.unfreezing:
            total = sum(stage.epochs for stage in self.unfreezing)
            if total != self.epochs:
                raise ValueError(
                    f"unfreezing stages sum to {total} epochs but epochs is "
                    f"{self.epochs}; make them equal (overriding epochs, override "
                    "`training.unfreezing` too)"
                )
        return self

    @model_validator(mode="after")
    def _stage_rates_need_restarts(self):
        schedule = self.schedule
        for i, stage in enumerate(self.unfreezing or []):
            peak = stage.maximal_learning_rate
            if peak is None:
                continue
            if schedule.mode == "constant" or not schedule.restart_each_stage:
                raise ValueError(
                    f"unfreezing[{i}].maximal_learning_rate needs a cyclical or "
                    "one_cycle schedule with restart_each_stage: true; received "
                    f"mode {schedule.mode!r}, restart_each_stage "
                    f"{schedule.restart_each_stage}"
                )
            if schedule.initial_learning_rate is not None and peak < schedule.initial_learning_rate:
                raise ValueError(
                    f"unfreezing[{i}].maximal_learning_rate ({peak}) is below "
                    f"schedule.initial_learning_rate ({schedule.initial_learning_rate})"
                )
        return self


# === Export ===


class ExportConfig(_Section):
    """Where the SavedModel goes, in TF Serving's `<base>/<name>/<version>`."""

    enabled: bool = True
    """Exports the best model as a SavedModel that takes raw text, at the end of the run, and takes
    the final validation and test metrics from the export itself. `false` exports nothing and scores
    the Keras model in memory instead; `python -m kerasbert.export --run <run directory>` can still
    export the run later.
    """
    base_path: str = "saved_models"
    """TF Serving's base path: an export goes to `<base_path>/<model name>/<version>/`, version 1 +
    the highest existing one; an existing version is never overwritten.
    """
    model_name: Optional[str] = None
    """The exported model's name; `null` takes the run's `name`."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """What the exported graph computes in, whatever the training precision: `bfloat16` runs the
    model under Keras' `mixed_bfloat16` policy (float32 weights, cast at each use), for CPUs and
    accelerators with native bfloat16; the export answers in float32 either way.
    """
    max_characters: Optional[PositiveInt] = None
    """The longest text (and `text_pair`), in characters, that the export's `serving_default` and
    `classify` take: a longer one fails the request with INVALID_ARGUMENT (HTTP 400 from a server)
    and `predict` and `evaluate` stop with an error, instead of tokenizing a text of any size only
    to truncate it. `null` takes texts of any length.
    """


# === Distillation ===


class DistillationConfig(_Section):
    """Trains a student with fewer transformer layers on a finished run's soft labels.

    `python -m kerasbert.distill` reads it. The student starts from the teacher's own
    weights: its embeddings, pooler and head, and the teacher's transformer layers picked by
    `layers`. It learns from the teacher's logits on each training text, softened by
    `temperature` (Hinton et al. 2015, arXiv:1503.02531), mixed with the true labels. `data` and
    `model` default to the teacher's own sections; of `model`, only `dropout` and
    `sequence_length` may differ.
    """

    teacher: str
    """The teacher: a finished classification run directory, `runs/<name>/<timestamp>`, or
    `runs/<name>` for its latest run that did not fail.
    """
    layers: Union[Literal["every_other"], list[Count]] = "every_other"
    """The teacher's transformer layers the student starts from, counted from 0 at the bottom, in
    increasing order: `every_other` takes the top layer and every other one below it (1, 3, ..., 11
    of 12 layers; 0 and 2 of 3), or a list such as `[0, 5, 11]`. The student has one layer per
    entry.
    """
    temperature: PositiveFloat = 2.0
    """Softens both models' logits before they are compared; the soft loss is scaled by
    `temperature ** 2`, so that its gradients keep their size as the temperature changes.
    """
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Weight of the soft loss, KL(teacher || student) at `temperature`; the true labels'
    cross-entropy weighs `1 - alpha`. 1 learns from the teacher alone.
    """
    hidden_state_weight: Annotated[float, Field(ge=0)] = 0.0
    """Weight of a third loss, on hidden states: the mean squared difference, over real tokens,
    between each student layer's output and that of the teacher layer it was copied from (as
    TinyBERT, arXiv:1909.10351), added to the soft and hard losses. It costs a forward pass of the
    teacher in every training step. 0 leaves it out.
    """

    @field_validator("layers")
    @classmethod
    def _increasing(cls, layers):
        if isinstance(layers, list):
            if not layers:
                raise ValueError("give at least one teacher layer, or `every_other`")
            if any(b <= a for a, b in zip(layers, layers[1:])):
                raise ValueError(
                    "teacher layers must be listed in increasing order, each once; "
                    f"received {SHORT.repr(layers)}"
                )
        return layers

    def teacher_layers(self, num_layers) -> list[int]:
        """The teacher's layers the student starts from, bottom first.

        Args:
            num_layers: the teacher's transformer layers.

        Raises:
            ValueError: `layers` lists more layers than the teacher has, or
                one it does not have.

        Example:
        >>> DistillationConfig(teacher="runs/quickstart").teacher_layers(12)
        [1, 3, 5, 7, 9, 11]
        """
        if self.layers == "every_other":
            return list(range(num_layers - 1, -1, -2))[::-1]
        if len(self.layers) > num_layers:
            raise ValueError(
                f"distillation.layers lists {len(self.layers)} layers but the teacher has "
                f"{num_layers}; a student has at most its teacher's layers"
            )
        if self.layers[-1] >= num_layers:
            raise ValueError(
                f"distillation.layers: the teacher has layers 0 to {num_layers - 1}; received "
                f"{SHORT.repr(self.layers)}"
            )
        return list(self.layers)


# === Distribution ===


# More threads than any machine has cores is a typo; TensorFlow would try to
# start them all.
Threads = Annotated[int, Field(gt=0, le=1024)]


class RuntimeConfig(_Section):
    """How TensorFlow uses the machine; see `kerasbert.training.runtime`."""

    intra_op_threads: Union[Literal["auto"], Threads] = "auto"
    """Threads within one op; `auto` is the CPUs this process may use, counting a container's CPU
    quota.
    """
    inter_op_threads: Union[Literal["auto"], Threads] = "auto"
    """Ops run side by side; `auto` as for `intra_op_threads`."""
    jit_compile: Union[Literal["auto"], bool] = "auto"
    """XLA compilation; `auto` is on for GPU and TPU, off on CPU. Each batch is cut to its longest
    text, rounded up to a multiple of 8 only where the step is compiled (XLA, GPU, TPU).
    """
    mixed_precision: Literal["auto", "float32", "mixed_bfloat16"] = "auto"
    """`auto` is `mixed_bfloat16` on GPUs of compute capability 8.0 and up and on CPUs with native
    bfloat16 (`avx512_bf16` or `amx_bf16` flags), `float32` elsewhere. Variables stay float32;
    exports answer in float32 (`export.dtype`).
    """


class DistributionConfig(_Section):
    """Which `tf.distribute` strategy runs the model; see `kerasbert.training.distribute`.

    `auto` is one device, or every local GPU when there are several.
    `multi_worker_mirrored` reads the cluster from `TF_CONFIG`. The
    configured batch size is the global batch, split across replicas.
    """

    strategy: Literal["auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu"] = "auto"
    """The `tf.distribute` strategy; `auto` is one device, or every local GPU when there are
    several. Under `multi_worker_mirrored` only the chief writes the run and the export.
    """


class Config(_Section):
    """A whole run."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    """The run's name: runs go to `<training.runs_dir>/<name>/<timestamp>/`, exports to
    `<export.base_path>/<name>/<version>/` unless `export.model_name` is given.
    """
    seed: Seed = 0
    """Seeds the weights, each epoch's order of the training examples and the baseline; `data.seed`
    seeds the splits.
    """
    data: DataConfig
    """The labelled text."""
    model: ModelConfig
    """The backbone and its head."""
    training: TrainingConfig = TrainingConfig()
    """How the model is fitted."""
    export: ExportConfig = ExportConfig()
    """The SavedModel for TF Serving."""
    distribution: DistributionConfig = DistributionConfig()
    """Devices and machines."""
    runtime: RuntimeConfig = RuntimeConfig()
    """How TensorFlow uses the machine."""
    distillation: Optional[DistillationConfig] = None
    """`python -m kerasbert.distill` only: the teacher run and how the student learns from it."""

    @model_validator(mode="after")
    def _predicted_by_the_export(self):
        if self.data.predict is not None and not self.export.enabled:
            raise ValueError("data.predict is predicted by the export, but export.enabled is false")
        return self

    @model_validator(mode="after")
    def _pairs_truncate_head(self):
        if self.data.text_pair_column is not None and self.model.long_text is not None:
            raise ValueError(
                "model.long_text reads single texts in windows; sentence pairs "
                "(data.text_pair_column) share one window between their segments"
            )
        if self.data.text_pair_column is not None and self.model.truncation != "head":
            raise ValueError(
                f"model.truncation {self.model.truncation!r} is for single texts; sentence pairs "
                "(data.text_pair_column) share the tokens between their segments, each kept from "
                "its start: use `truncation: head`"
            )
        return self

    @model_validator(mode="after")
    def _stages_fit_backbone(self):
        num_layers = self.model.num_layers
        for i, stage in enumerate(self.training.unfreezing or []):
            if (
                num_layers is not None
                and stage.trainable_layers != "all"
                and stage.trainable_layers > num_layers
            ):
                raise ValueError(
                    f"training.unfreezing[{i}].trainable_layers is "
                    f"{stage.trainable_layers} but the backbone has "
                    f"{num_layers} layers"
                )
        return self

    @model_validator(mode="after")
    def _task_fits_data(self):
        task, data, training = self.model.task, self.data, self.training
        multi_label_keys = [
            key for key in ("label_delimiter", "label_columns", "pos_weight") if getattr(data, key)
        ]
        if task != "multi_label" and multi_label_keys:
            raise ValueError(
                f"data.{multi_label_keys[0]} is for multi-label data; set `model.task: multi_label`"
                f" (received task {task!r})"
            )
        if task == "multi_label" and data.label_delimiter is None and data.label_columns is None:
            raise ValueError(
                "model.task multi_label needs `data.label_delimiter` (one column of delimited "
                "labels) or `data.label_columns` (one 0/1 column per label)"
            )
        if data.label_columns is not None and data.pos_weight:
            unknown = sorted(set(data.pos_weight) - set(data.label_columns))
            if unknown:
                raise ValueError(
                    f"data.pos_weight names {SHORT.repr(unknown)}, not among data.label_columns"
                )
        if task != "classification":
            for key in ("binning", "class_weight"):
                if getattr(data, key) is not None:
                    raise ValueError(
                        f"data.{key} is for `model.task: classification`; received task {task!r}"
                    )
            if training.eval_steps is not None:
                raise ValueError(
                    "training.eval_steps logs classification loss and accuracy; leave it out "
                    f"for `model.task: {task}`"
                )
        if task == "regression" and training.calibration == "temperature":
            raise ValueError(
                "training.calibration temperature scales probabilities, and a regression model "
                "has none; leave it out or set it to `none`"
            )
        # Keras only warns about a monitor that is never logged, and then
        # neither keeps the best epoch nor stops early.
        for key, monitor in (
            ("checkpoint_monitor", training.checkpoint_monitor),
            (
                "early_stopping.monitor",
                training.early_stopping.monitor if training.early_stopping else None,
            ),
        ):
            if monitor is None or "accuracy" not in monitor:
                continue
            if task == "regression":
                raise ValueError(
                    f"training.{key} is {monitor!r}, but a regression run logs no accuracy; "
                    "use `val_loss` or `val_scaled_mae`"
                )
            if task == "multi_label" and "binary_accuracy" not in monitor:
                raise ValueError(
                    f"training.{key} is {monitor!r}, but a multi-label run logs "
                    "`binary_accuracy` (every label at 0.5), not `accuracy`; use `val_loss` or "
                    "`val_binary_accuracy`"
                )
        return self

    @model_validator(mode="after")
    def _distils_a_classifier(self):
        if self.distillation is None:
            return self
        if self.model.task != "classification":
            raise ValueError(
                "distillation learns from a teacher's softmax over classes; received "
                f"model.task {self.model.task!r}. Distil a `classification` run"
            )
        if self.data.class_weight is not None:
            raise ValueError(
                "data.class_weight is not applied to the teacher's soft labels; set "
                "`data.class_weight: null` for distillation"
            )
        return self

    @property
    def model_name(self) -> str:
        return self.export.model_name or self.name

    @property
    def calibration(self) -> str:
        """`training.calibration`, resolved for the task: `temperature` or `none`."""
        if self.training.calibration is not None:
            return self.training.calibration
        return "none" if self.model.task == "regression" else "temperature"


# === Loading ===
