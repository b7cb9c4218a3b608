"""How the report writes numbers: one format per kind of number, in tables and in text.

Metrics (accuracy, F1, losses, calibration error) get 4 decimals, so `1.0000`
stands beside `0.9444`; counts (examples, rows, epochs, parameters) are
integers; learning rates are in scientific notation (`3.00e-04`); text
lengths in words get one decimal. A table's column is formatted by what its
name says it holds (`column_kind`).
"""

from __future__ import annotations

import math
import re

import pandas as pd

METRIC, COUNT, LEARNING_RATE, LENGTH = "metric", "count", "learning rate", "length"
MISSING = "n/a"

COUNT_COLUMNS = {
    "num_examples",
    "support",
    "rows",
    "epochs",
    "epoch",
    "first_epoch",
    "stage",
    "trainable_layers",
    "trainable_params",
    "train_rows",
}
# `max_lr`, `learning_rate`, `initial_learning_rate`, `lr`, `base_lr`, ...
LEARNING_RATE_PATTERN = re.compile(r"(^|_)(lr|learning_rate)($|_)")


def column_kind(name) -> str:
    """The kind of number a table column named `name` holds.

    Example:

    >>> column_kind("num_examples"), column_kind("max_lr"), column_kind("macro_f1")
    ('count', 'learning rate', 'metric')
    """
    name = str(name)
    if name in COUNT_COLUMNS or name.startswith("n("):
        return COUNT
    if LEARNING_RATE_PATTERN.search(name):
        return LEARNING_RATE
    if name.startswith(("words ", "characters ")):
        return LENGTH
    return METRIC


def format_number(value, kind=METRIC) -> str:
    """`value` written as numbers of its `kind` are written; `"n/a"` for a missing one.

    Non-numbers (a layer count of `"all"`, a label) are written as they are.

    Example:

    >>> format_number(1.0), format_number(30.0, "count"), format_number(3e-4, "learning rate")
    ('1.0000', '30', '3.00e-04')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if math.isinf(value):
        return str(value)
    if kind == COUNT:
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    if kind == LEARNING_RATE:
        return f"{value:.2e}"
    if kind == LENGTH:
        return f"{value:.1f}"
    return f"{value:.4f}"


def format_metric(value) -> str:
    """A metric with 4 decimals (`0.9444`)."""
    return format_number(value, METRIC)


def format_count(value) -> str:
    """A count as an integer (`30`)."""
    return format_number(value, COUNT)


def format_learning_rate(value) -> str:
    """A learning rate in scientific notation (`3.00e-04`)."""
    return format_number(value, LEARNING_RATE)


def format_table(frame: pd.DataFrame, kinds=None) -> pd.DataFrame:
    """`frame` with every cell written as a string, each column as its kind says.

    Args:
        frame: a table of numbers (and perhaps some text).
        kinds: `{column: kind}` overriding `column_kind`; a column absent from
            it gets `column_kind(column)`.
    """
    kinds = kinds or {}
    return pd.DataFrame(
        {
            column: [
                format_number(_plain(v), kinds.get(column, column_kind(column)))
                for v in frame[column]
            ]
            for column in frame.columns
        },
        index=frame.index,
        columns=frame.columns,
    )


def _plain(value):
    """numpy scalars as Python numbers, so `format_number` sees ints and floats."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value
