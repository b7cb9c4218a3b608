"""Typed, validated run configuration, loaded from YAML.

One YAML file describes a run in sections (`data`, `model`, `training`,
`export`, and `distribution` and `runtime` for the machine). It is validated against the schema below before any data or model
is touched; every problem is reported as one line that names the file, the
dotted key, what was given and what is allowed.

This module imports no TensorFlow, so validating a config is instant.
"""

from __future__ import annotations

import difflib
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

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
# Longest rendering of a received value in an error message.
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxset = 6
_SHORT.maxlevel = 2


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
    """Turns a numeric target into classes, by quantiles or by edges."""

    num_bins: Optional[Annotated[int, Field(ge=2, le=MAX_INT)]] = None
    edges: Optional[list[float]] = None

    @model_validator(mode="after")
    def _one_way(self):
        if (self.num_bins is None) == (self.edges is None):
            raise ValueError("give exactly one of `num_bins` or `edges`")
        if self.edges is not None:
            if len(self.edges) < 1:
                raise ValueError("`edges` needs at least one value")
            if any(b <= a for a, b in zip(self.edges, self.edges[1:])):
                raise ValueError(
                    f"`edges` must increase strictly; received {_SHORT.repr(self.edges)}"
                )
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
            raise ValueError(
                "`validation`/`test` files go with `train`, not with `path`"
            )
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
                        f"{_SHORT.repr(column)}; each must name a different column"
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
                f"hidden_dim ({self.hidden_dim}) must be divisible by "
                f"num_heads ({self.num_heads})"
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
    """Learning-rate schedule; see `kerasbert.schedules`.

    `one_cycle` rises from `maximal_learning_rate / div_factor` to
    `maximal_learning_rate` over `pct_start` of the steps, then anneals to
    `maximal_learning_rate / (div_factor * final_div_factor)`, with momentum
    moving the other way between `max_momentum` and `base_momentum`. The cyclic
    modes go between `initial_learning_rate` and `maximal_learning_rate` with a
    half cycle of `step_size` batches.
    """

    mode: Literal["constant", "triangular", "triangular2", "exp_range", "one_cycle"] = (
        "constant"
    )
    initial_learning_rate: Optional[PositiveFloat] = None
    maximal_learning_rate: Optional[PositiveFloat] = None
    step_size: Optional[PositiveInt] = None
    gamma: Annotated[float, Field(gt=0, le=1)] = 1.0
    pct_start: Annotated[float, Field(gt=0, lt=1)] = 0.25
    div_factor: Annotated[float, Field(ge=1)] = 25.0
    final_div_factor: Annotated[float, Field(ge=1)] = 1e4
    base_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.85
    max_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.95
    restart_each_stage: bool = True

    @model_validator(mode="after")
    def _consistent(self):
        cyclic = self.mode in ("triangular", "triangular2", "exp_range")
        if cyclic:
            for key in ("initial_learning_rate", "maximal_learning_rate", "step_size"):
                if getattr(self, key) is None:
                    raise ValueError(f"mode {self.mode!r} needs `{key}`")
        if self.mode == "one_cycle" and self.maximal_learning_rate is None:
            raise ValueError("mode 'one_cycle' needs `maximal_learning_rate`")
        if (
            self.initial_learning_rate is not None
            and self.maximal_learning_rate is not None
            and self.maximal_learning_rate < self.initial_learning_rate
        ):
            raise ValueError(
                "maximal_learning_rate must be >= initial_learning_rate; "
                f"received maximal_learning_rate={self.maximal_learning_rate}, "
                f"initial_learning_rate={self.initial_learning_rate}"
            )
        if self.base_momentum > self.max_momentum:
            raise ValueError(
                "base_momentum must be <= max_momentum; received "
                f"{self.base_momentum} > {self.max_momentum}"
            )
        return self


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
        if self.unfreezing:
            total = sum(stage.epochs for stage in self.unfreezing)
            if total != self.epochs:
                raise ValueError(
                    f"unfreezing stages sum to {total} epochs but epochs is "
                    f"{self.epochs}; make them equal"
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
    """How TensorFlow uses the machine; see `kerasbert.runtime`."""

    intra_op_threads: Union[Literal["auto"], Threads] = "auto"
    inter_op_threads: Union[Literal["auto"], Threads] = "auto"
    jit_compile: Union[Literal["auto"], bool] = "auto"
    mixed_precision: Literal["auto", "float32", "mixed_bfloat16"] = "auto"


class DistributionConfig(_Section):
    """Which `tf.distribute` strategy runs the model; see `kerasbert.distribute`.

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


def load_config(path, overrides=()) -> Config:
    """Reads, overrides and validates a YAML config.

    Args:
        path: the YAML file.
        overrides: `"dotted.key=value"` strings; the value is parsed as YAML,
            so `training.epochs=2` gives an int and `model.preset=null` None.

    Returns:
        The validated `Config`.

    Raises:
        ConfigError: with one line naming the file and the offending key.

    Example:
    >>> cfg = load_config("configs/quickstart.yaml", ["training.epochs=1"])
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config: {e}") from None
    raw = _parse_yaml(text, path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections at the top, "
            f"received {type(raw).__name__}"
        )
    for override in overrides:
        _apply_override(raw, override, path)
    return config_from_dict(raw, source=str(path))


def config_from_dict(raw: dict, source: str = "<config>") -> Config:
    """Validates a plain dict; errors name `source` and the dotted key."""
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{source}: {_describe(e, raw)}") from None


def config_to_dict(config: Config) -> dict:
    """The fully resolved config, defaults included, as plain data."""
    return config.model_dump(mode="json")


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping.

    PyYAML keeps the last of duplicated keys without a word, so a config
    that sets `epochs` twice would silently train with the second. Keys
    merged in with `<<` may still be overridden, as YAML intends.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue  # unhashable: the base class says so
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {_SHORT.repr(key)}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, source):
    """`yaml.safe_load` with duplicate keys refused and every failure a ConfigError."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or getattr(e, "reason", None)
        why = f": {problem}" if problem else ""
        raise ConfigError(f"{source}: not valid YAML{where}{why}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None
    except ValueError as e:
        # e.g. "Exceeds the limit (4300 digits) for integer string conversion".
        reason = str(e).split(":")[0][:200]
        raise ConfigError(f"{source}: not valid YAML: {reason}") from None


def _apply_override(raw: dict, override: str, path: Path) -> None:
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"--set expects key.path=value; received {_SHORT.repr(override)}"
        )
    try:
        parsed = _parse_yaml(value, f"--set {key.strip()}")
    except ConfigError:
        # Not YAML: take the text as it is, as a string value.
        parsed = value
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"{path}: --set {key}: `{part}` is not a section"
            )
        node = child
    node[parts[-1]] = parsed


def _describe(error: ValidationError, raw: dict) -> str:
    """One line for the first problem pydantic found."""
    problems = error.errors()
    first = problems[0]
    loc = _clean_loc(first["loc"])
    # A union (e.g. an int or "all") fails once per member: say them together.
    same = [p for p in problems if _clean_loc(p["loc"]) == loc]
    more = len(problems) - len(same)
    suffix = f" ({more} more problem{'s' if more > 1 else ''})" if more else ""
    dotted = _dotted(loc)
    kind = first["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        did_you_mean = f"; did you mean `{hint[0]}`?" if hint else ""
        return (
            f"{dotted}: unknown key{did_you_mean} "
            f"(allowed: {', '.join(allowed)}){suffix}"
        )
    if kind == "missing":
        return f"{dotted}: required key is missing{suffix}"
    message = " or ".join(dict.fromkeys(_message(p) for p in same))
    given = first.get("input")
    if kind != "value_error" and not isinstance(given, (dict, list)):
        return f"{dotted}: {message}; received {_SHORT.repr(given)}{suffix}"
    return f"{dotted or '(top level)'}: {message}{suffix}"


def _message(problem) -> str:
    message = problem["msg"]
    return message[len("Value error, ") :] if message.startswith("Value error, ") else message


def _clean_loc(loc) -> list:
    return [p for p in loc if not _is_union_tag(p)]


def _is_union_tag(part) -> bool:
    # pydantic names the union member it tried ("int", "constrained-int",
    # "literal['all']", "function-after[...]"); those are not keys the user wrote.
    return isinstance(part, str) and (
        "[" in part
        or part.startswith(("constrained-", "function-", "json-or-python", "lax-"))
        or part in ("int", "str", "float", "bool", "dict", "list")
    )


def _dotted(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_keys(loc) -> list[str]:
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) else None
        if field is None:
            return []
        model = _section_type(field.annotation)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _section_type(annotation):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _section_type(arg)
        if found is not None:
            return found
    return None
