"""Reading a run's YAML file into its `Config`, with `--set` overrides and one-line errors.

Every problem is reported as one `ConfigError` line that names the file,
the dotted key, what was given and what is allowed, e.g.

```
configs/quickstart.yaml: training.lerning_rate: unknown key; did you mean `learning_rate`? (allowed: ...)
```
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from kerasbert import rundir
from kerasbert.config import SHORT, Config, ConfigError


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
    return config_from_dict(read_config_dict(path, overrides), source=str(path))


# The keys of `model` a student may set; the rest are its teacher's.
STUDENT_MODEL_KEYS = ("sequence_length", "dropout")


def load_distillation_config(path, overrides=()) -> Config:
    """Reads a distillation's config, its `data` and `model` defaulting to the teacher's.

    The teacher run (`distillation.teacher`) must have finished. A `data`
    section replaces the teacher's; of `model`, only `STUDENT_MODEL_KEYS`
    may be given, the rest is the teacher's own. `distillation.teacher` is
    resolved to the run directory itself, and a from-scratch teacher's
    `model.scratch.num_layers` becomes the student's, so that the saved
    config describes the student.

    Args:
        path: the YAML file.
        overrides: `"dotted.key=value"` strings, as for `load_config`.

    Returns:
        The validated `Config`, with its `distillation` section.

    Raises:
        ConfigError: with one line naming the file and the offending key:
            no teacher, a teacher run that is missing or unfinished or
            that reads sliding windows, a `model` key the student cannot change, or layers the teacher
            does not have.

    Example:
    >>> cfg = load_distillation_config("configs/distill_quickstart.yaml")
    """
    raw = read_config_dict(path, overrides)
    section = raw.get("distillation")
    teacher = section.get("teacher") if isinstance(section, dict) else None
    if not isinstance(teacher, str):
        raise ConfigError(
            f"{path}: distillation.teacher: required: the teacher's run directory "
            "(runs/<name>/<timestamp>, or runs/<name> for its latest run)"
        )
    try:
        teacher_dir = rundir.finished_run_dir(teacher)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: distillation.teacher: {e}") from None
    teacher_raw = read_config_dict(teacher_dir / rundir.CONFIG)
    if (teacher_raw.get("model") or {}).get("long_text") is not None:
        raise ConfigError(
            f"{path}: distillation.teacher: {teacher_dir} reads long texts in sliding windows "
            "(model.long_text); distilling such a teacher is not supported"
        )
    model = raw.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"{path}: model: expected a mapping of {', '.join(STUDENT_MODEL_KEYS)}")
    for key in model:
        if key not in STUDENT_MODEL_KEYS:
            raise ConfigError(
                f"{path}: model.{key}: a student keeps its teacher's backbone, tokenizer and "
                f"head; of `model` it may set only {', '.join(STUDENT_MODEL_KEYS)}"
            )
    raw["distillation"] = {**section, "teacher": str(teacher_dir)}
    if raw.get("data") is None:
        raw["data"] = teacher_raw.get("data")
    raw["model"] = {**teacher_raw.get("model", {}), **model}
    config = config_from_dict(raw, source=str(path))
    num_layers = config.model.num_layers
    if num_layers is None:
        return config  # a preset's layers are counted when it is loaded
    try:
        layers = config.distillation.teacher_layers(num_layers)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    raw["model"]["scratch"] = {**raw["model"]["scratch"], "num_layers": len(layers)}
    return config_from_dict(raw, source=str(path))


def read_config_dict(path, overrides=()) -> dict:
    """A YAML config as plain data, `overrides` applied, not yet validated.

    Raises:
        ConfigError: the file cannot be read, is not YAML, or is not a
            mapping, or an override is malformed.
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
            f"{path}: expected a mapping of sections at the top, received {type(raw).__name__}"
        )
    for override in overrides:
        _apply_override(raw, override, path)
    return raw


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
                        f"found duplicate key {SHORT.repr(key)}",
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
        raise ConfigError(f"--set expects key.path=value; received {SHORT.repr(override)}")
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
            raise ConfigError(f"{path}: --set {key}: `{part}` is not a section")
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
        return f"{dotted}: unknown key{did_you_mean} (allowed: {', '.join(allowed)}){suffix}"
    if kind == "missing":
        return f"{dotted}: required key is missing{suffix}"
    message = " or ".join(dict.fromkeys(_message(p) for p in same))
    given = first.get("input")
    if kind != "value_error" and not isinstance(given, (dict, list)):
        return f"{dotted}: {message}; received {SHORT.repr(given)}{suffix}"
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
    return (
        list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []
    )


def _section_type(annotation):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _section_type(arg)
        if found is not None:
            return found
    return None
