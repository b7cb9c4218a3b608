"""The configuration reference: every key of a run's YAML file, generated from the schema.

Walks the pydantic models of `kerasbert.config` and writes Markdown, one
section per config section, each key with its type (read from the field's
annotation and constraints), its default and its description (the docstring
under the field). `docs/configuration.md` is its output, and a test checks
that it is current. Like `kerasbert.config`, it imports no TensorFlow.

Example:
```sh
python -m kerasbert.config_reference --output docs/configuration.md   # regenerate
python -m kerasbert.config_reference --check docs/configuration.md    # exit 1 if stale
```
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from kerasbert.config import MAX_INT, Config

COMMAND = "python -m kerasbert.config_reference --output docs/configuration.md"

INTRO = f"""\
# Configuration reference

<!-- Generated from kerasbert/config.py; do not edit. Regenerate with:
     {COMMAND} -->

A run is one YAML file in sections. This page lists every key the schema
(`kerasbert/config.py`) allows, section by section, with its type, its default
and what it does; it is generated from the schema itself. A key left out takes
its default; a `required` key has none. `null` is YAML's empty value: for a
section that may be `null`, it turns the section off. Integers are at most
{MAX_INT} (TensorFlow's int32). Any key can be overridden from the command
line with `--set dotted.key=value`, the value read as YAML (see the README).
"""


@dataclass(frozen=True)
class Key:
    """One row of the reference.

    Attributes:
        key: the dotted key, e.g. `training.early_stopping.patience`; a list
            of sections is written `training.unfreezing[]`.
        type: the readable type, e.g. `int > 0` or `"auto" | "csv"`.
        default: the default as YAML, `required`, or how a section is on.
        description: the field's docstring, on one line.
    """

    key: str
    type: str
    default: str
    description: str


@dataclass(frozen=True)
class Section:
    """One table of the reference: a model of the schema at a dotted key (`""` at the top)."""

    key: str
    model: type[BaseModel]
    keys: list[Key]


def config_sections(model: type[BaseModel] = Config, prefix: str = "") -> list[Section]:
    """Every section of `model`, itself first, then each nested section after its parent's keys.

    Args:
        model: a pydantic model of the schema.
        prefix: the dotted key of `model` in the config (`""` for the whole config).

    Raises:
        ValueError: a field without a description, or a section without a docstring.
        TypeError: a field of a type the reference cannot describe yet.
    """
    if not (model.__doc__ or "").strip():
        raise ValueError(
            f"section `{prefix or model.__name__}` ({model.__name__}) has no docstring; "
            "give the class one in kerasbert/config.py"
        )
    keys, nested = [], []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if not (field.description or "").strip():
            raise ValueError(
                f"`{key}` has no description; write a docstring under the field "
                f"`{model.__name__}.{name}` in kerasbert/config.py"
            )
        annotation = _annotated(field.annotation, field.metadata)
        keys.append(
            Key(key, describe_type(annotation), describe_default(field, key), field.description)
        )
        section = _section_of(field.annotation)
        if section is not None:
            submodel, is_list = section
            nested.append((f"{key}[]" if is_list else key, submodel))
    sections = [Section(prefix, model, keys)]
    for key, submodel in nested:
        sections += config_sections(submodel, key)
    return sections


def describe_type(annotation) -> str:
    """A readable type: `int > 0`, `float in [0, 1)`, `"auto" | "csv"`, `list of stage`, ...

    Raises:
        TypeError: a type this function does not know; teach it rather than
            let the reference say something vague.
    """
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *extras = get_args(annotation)
        constraints = {}
        for extra in extras:
            for item in extra.metadata if isinstance(extra, FieldInfo) else [extra]:
                constraints.update(_constraint(item))
        return _constrained(describe_type(base), base, constraints)
    if origin in (Union, types.UnionType):
        members = get_args(annotation)
        parts = [describe_type(member) for member in members if member is not type(None)]
        if type(None) in members:
            parts.append("null")
        return " | ".join(parts)
    if origin is Literal:
        return " | ".join(json.dumps(value) for value in get_args(annotation))
    if origin is list:
        (item,) = get_args(annotation)
        if _is_model(item):
            return f"list of {_noun(item)}"
        return f"list of {describe_type(item)}"
    if origin is dict:
        key, value = get_args(annotation)
        return f"map of {describe_type(key)} to {describe_type(value)}"
    if _is_model(annotation):
        return "section"
    if annotation in (int, float, str, bool):
        return annotation.__name__
    raise TypeError(
        f"the reference cannot describe the type {annotation!r}; add it to describe_type"
    )


def describe_default(field: FieldInfo, key: str) -> str:
    """The default of a field as the reference shows it (Markdown)."""
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        if type(None) in get_args(field.annotation):
            return f"on, as in `{key}` below; `null` turns it off"
        return f"as in `{key}` below"
    return f"`{_yaml(default)}`"


def render_reference(model: type[BaseModel] = Config) -> str:
    """The Markdown page: an introduction, then a table per section."""
    out = [INTRO]
    for section in config_sections(model):
        depth = section.key.count(".") + 1 if section.key else 0
        title = f"`{section.key}`" if section.key else "Top level"
        out.append(f"\n{'#' * min(2 + max(depth - 1, 0), 4)} {title}\n")
        out.append(f"\n{inspect.cleandoc(section.model.__doc__)}\n")
        out.append("\n| key | type | default | description |\n| --- | --- | --- | --- |\n")
        for key in section.keys:
            if "`" in key.type:
                raise ValueError(
                    f"`{key.key}`: a type with a backtick breaks the table: {key.type}"
                )
            cells = [f"`{key.key}`", f"`{key.type}`", key.default, key.description]
            out.append("| " + " | ".join(_cell(cell) for cell in cells) + " |\n")
    return "".join(out)


# === Helpers ===


def _annotated(annotation, metadata):
    """A field's annotation with the constraints pydantic moved into `metadata` put back."""
    return Annotated[(annotation, *metadata)] if metadata else annotation


def _constraint(item) -> dict:
    if dataclasses.is_dataclass(item):  # annotated_types: Gt, Ge, Lt, Le, MinLen, ...
        values = {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
    else:  # pydantic's own, e.g. Field(pattern=...)
        values = dict(vars(item))
    unknown = set(values) - {"gt", "ge", "lt", "le", "min_length", "pattern"}
    if unknown:
        raise TypeError(
            f"the reference cannot describe the constraint {item!r}; add it to _constrained"
        )
    return values


def _constrained(text: str, base, constraints: dict) -> str:
    if "pattern" in constraints:
        text = f"{text} matching {constraints['pattern']}"
    if "min_length" in constraints:
        n = constraints["min_length"]
        text = f"non-empty {text}" if n == 1 else f"{text} of length >= {n}"
    low = [(f"({_number(v)}", f"> {_number(v)}") for k, v in constraints.items() if k == "gt"]
    low += [(f"[{_number(v)}", f">= {_number(v)}") for k, v in constraints.items() if k == "ge"]
    high = [(f"{_number(v)})", f"< {_number(v)}") for k, v in constraints.items() if k == "lt"]
    high += [
        (f"{_number(v)}]", f"<= {_number(v)}")
        for k, v in constraints.items()
        # The int32 ceiling of every count is said once, in the introduction.
        if k == "le" and not (base is int and v == MAX_INT)
    ]
    if low and high:
        return f"{text} in {low[0][0]}, {high[0][0]}"
    if low:
        return f"{text} {low[0][1]}"
    if high:
        return f"{text} {high[0][1]}"
    return text


def _number(value) -> str:
    if isinstance(value, int) and value >= 2**16 and value & (value - 1) == 0:
        return f"2**{value.bit_length() - 1}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _section_of(annotation):
    """`(model, is_list)` when a field holds a section or a list of them, else None."""
    if _is_model(annotation):
        return annotation, False
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        return (item, True) if _is_model(item) else None
    for member in (
        get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ()
    ):
        found = _section_of(member)
        if found is not None:
            return found
    return None


def _is_model(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _noun(model: type[BaseModel]) -> str:
    """`StageConfig` is a `stage`, `EarlyStoppingConfig` an `early_stopping`."""
    name = model.__name__.removesuffix("Config")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _yaml(value) -> str:
    """A default as one would write it in the YAML file."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    return text.removesuffix("\n").removesuffix("\n...")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# === Command line ===


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kerasbert.config_reference",
        description="Write the configuration reference (Markdown), generated from the schema.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--output", type=Path, help="write it to this file (default: stdout)")
    where.add_argument(
        "--check", type=Path, help="exit 1 if this file differs from the generated reference"
    )
    args = parser.parse_args(argv)
    text = render_reference()
    if args.check is not None:
        try:
            current = args.check.read_text(encoding="utf-8")
        except OSError as e:
            print(f"error: {args.check}: cannot read it: {e.strerror or e}", file=sys.stderr)
            return 1
        if current != text:
            print(
                f"error: {args.check} is out of date; regenerate it with: {COMMAND}",
                file=sys.stderr,
            )
            return 1
        return 0
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8", newline="\n")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
