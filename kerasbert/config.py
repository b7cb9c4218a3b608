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
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


# === Data ===


class SplitConfig(_Section):
    """Fractions for splitting one file; the rest goes to `train`."""

    validation: Fraction = 0.1
    test: Fraction = 0.1

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
    edges: Optional[list[float]] = None
    names: Optional[list[Annotated[str, Field(min_length=1)]]] = None

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
    validation: Optional[str] = None
    test: Optional[str] = None
    path: Optional[str] = None
    split: SplitConfig = SplitConfig()
    seed: Seed = 0
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = "auto"
    text_column: str = "text"
    text_pair_column: Optional[str] = None
    label_column: str = "label"
    binning: Optional[BinningConfig] = None
    class_weight: Union[Literal["balanced"], dict[str, PositiveFloat], None] = None

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
    num_layers: PositiveInt = 2
    num_heads: PositiveInt = 2
    hidden_dim: PositiveInt = 32
    intermediate_dim: PositiveInt = 64
    max_sequence_length: PositiveInt = 128
    vocabulary_size: Annotated[int, Field(ge=16, le=MAX_INT)] = 1000
    lowercase: bool = True

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


class ModelConfig(_Section):
    """Which backbone, and the classification head on top of it."""

    preset: Optional[str] = None
    preset_sha256: Optional[dict[str, Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]]] = None
    scratch: Optional[ScratchConfig] = None
    sequence_length: PositiveInt = 128
    pooling: Literal["cls", "mean"] = "cls"
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1

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
    initial_learning_rate: Optional[PositiveFloat] = None
    maximal_learning_rate: Optional[PositiveFloat] = None
    step_size: Optional[PositiveInt] = None
    gamma: Annotated[float, Field(gt=0, le=1)] = 1.0
    pct_start: Annotated[float, Field(gt=0, lt=1)] = 0.25
    warmup_ratio: Fraction = 0.1
    div_factor: Annotated[float, Field(ge=1)] = 25.0
    final_div_factor: Annotated[float, Field(ge=1)] = 1e4
    base_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.85
    max_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.95
    restart_each_stage: bool = True

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
    trainable_layers: Union[Count, Literal["all"]]
    maximal_learning_rate: Optional[PositiveFloat] = None


class EarlyStoppingConfig(_Section):
    monitor: str = "val_loss"
    patience: Count = 2
    mode: Literal["auto", "min", "max"] = "auto"


class TrainingConfig(_Section):
    """How the model is fitted."""

    epochs: PositiveInt = 3
    # A step budget, as Hugging Face's `TrainingArguments.max_steps`: the run
    # trains this many batches, and `epochs` is ignored.
    max_steps: Optional[PositiveInt] = None
    # Evaluate on validation every N steps too (eval_history.csv), besides
    # every epoch's end.
    eval_steps: Optional[PositiveInt] = None
    batch_size: PositiveInt = 32
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    learning_rate: PositiveFloat = 5e-5
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    layerwise_decay: Annotated[float, Field(gt=0, le=1)] = 1.0
    schedule: ScheduleConfig = ScheduleConfig()
    unfreezing: Optional[list[StageConfig]] = None
    early_stopping: Optional[EarlyStoppingConfig] = EarlyStoppingConfig()
    checkpoint_monitor: str = "val_loss"
    gradient_accumulation_steps: PositiveInt = 1
    bucket_window: Count = 50
    baseline: bool = True
    runs_dir: str = "runs"

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
    base_path: str = "saved_models"
    model_name: Optional[str] = None


# === Distribution ===


# More threads than any machine has cores is a typo; TensorFlow would try to
# start them all.
Threads = Annotated[int, Field(gt=0, le=1024)]


class RuntimeConfig(_Section):
    """How TensorFlow uses the machine; see `kerasbert.training.runtime`."""

    intra_op_threads: Union[Literal["auto"], Threads] = "auto"
    inter_op_threads: Union[Literal["auto"], Threads] = "auto"
    jit_compile: Union[Literal["auto"], bool] = "auto"
    mixed_precision: Literal["auto", "float32", "mixed_bfloat16"] = "auto"


class DistributionConfig(_Section):
    """Which `tf.distribute` strategy runs the model; see `kerasbert.training.distribute`.

    `auto` is one device, or every local GPU when there are several.
    `multi_worker_mirrored` reads the cluster from `TF_CONFIG`. The
    configured batch size is the global batch, split across replicas.
    """

    strategy: Literal["auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu"] = "auto"


class Config(_Section):
    """A whole run."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    seed: Seed = 0
    data: DataConfig
    model: ModelConfig
    training: TrainingConfig = TrainingConfig()
    export: ExportConfig = ExportConfig()
    distribution: DistributionConfig = DistributionConfig()
    runtime: RuntimeConfig = RuntimeConfig()

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

    @property
    def model_name(self) -> str:
        return self.export.model_name or self.name


# === Loading ===
