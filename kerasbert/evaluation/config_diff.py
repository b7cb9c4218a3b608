"""Where runs' resolved configs differ: dotted keys, one column per run."""

from __future__ import annotations

import json

import pandas as pd

from kerasbert.evaluation.formats import LEARNING_RATE, column_kind, format_learning_rate

# Shown where a run's config lacks a key another run's has.
ABSENT = "(absent)"


def flatten_config(config, prefix="") -> dict:
    """A nested config as `{dotted key: value}`; lists are values, not flattened.

    Example:

    >>> flatten_config({"training": {"epochs": 3, "schedule": {"name": "one_cycle"}}})
    {'training.epochs': 3, 'training.schedule.name': 'one_cycle'}
    """
    flat = {}
    for key, value in (config or {}).items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def config_diff(configs) -> pd.DataFrame:
    """The keys whose values differ between configs, one column per run.

    Args:
        configs: `{run name: config dict}` (as `yaml.safe_load` reads
            `config.yaml`).

    Returns:
        Rows are dotted keys in sorted order, columns the run names, cells
        the values as YAML writes scalars (`null`, `true`, `0.1`, lists
        as `[1, 2]`) but learning rates as the report writes them
        (`3.00e-04`), `(absent)` where a run lacks the key. Empty (no rows)
        when the configs agree.

    Example:

    >>> config_diff({"a": {"training": {"epochs": 3}}, "b": {"training": {"epochs": 5}}})
                     a  b
    key
    training.epochs  3  5
    """
    flat = {name: flatten_config(config) for name, config in configs.items()}
    keys = sorted(set().union(*flat.values())) if flat else []
    missing = object()
    differing = [
        key
        for key in keys
        if len({_value_text(values.get(key, missing), missing) for values in flat.values()}) > 1
    ]
    return pd.DataFrame(
        {
            name: [_cell(key, values.get(key, missing), missing) for key in differing]
            for name, values in flat.items()
        },
        index=pd.Index(differing, name="key"),
        columns=list(flat),
    )


def _cell(key, value, missing) -> str:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and column_kind(key.rsplit(".", 1)[-1]) == LEARNING_RATE:
        return format_learning_rate(value)
    return _value_text(value, missing)


def _value_text(value, missing) -> str:
    if value is missing:
        return ABSENT
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)
