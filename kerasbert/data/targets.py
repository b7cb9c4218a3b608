"""Targets other than one class per text: label sets (multi-label) and numbers (regression).

Reading a label column into label sets, checking a numeric target, and the
target's transform and standardisation (`TargetScaling`), whose inverse the
exported graph applies so that a served value is in the target's own unit.
Everything here is NumPy and pandas.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from kerasbert.data.tables import DataError

TASKS = ("classification", "multi_label", "regression")


# === Multi-label ===


def split_label_cells(values: pd.Series, delimiter: str, source) -> pd.Series:
    """Label sets from cells of delimited label names, e.g. `"sports|politics"`.

    An empty or missing cell is a text with no label. Names are stripped of
    surrounding spaces; a repeated name counts once.

    Args:
        values: the label column as read.
        delimiter: the string between two label names.
        source: the file, for messages.

    Returns:
        A Series of tuples of label names, in the order first given.

    Raises:
        DataError: the column holds numbers (with no delimited cell, or
            mixed with delimited ones), or a delimiter leaves an empty name.
    """
    cells = ["" if _missing(value) else str(value).strip() for value in values.tolist()]
    delimited = [cell for cell in cells if delimiter in cell]
    numeric = [cell for cell in cells if cell and _is_number(cell)]
    if numeric and len(numeric) == sum(1 for cell in cells if cell):
        raise DataError(
            f"{source}: the label column holds numbers (e.g. {numeric[0]!r}), not label names "
            f"joined by {delimiter!r}; for one 0/1 column per label use data.label_columns"
        )
    if delimited and numeric:
        raise DataError(
            f"{source}: the label column mixes delimited label names (e.g. {delimited[0]!r}) "
            f"with numbers (e.g. {numeric[0]!r}); give label names joined by {delimiter!r}, "
            "or one 0/1 column per label with data.label_columns"
        )
    sets = []
    for row, cell in enumerate(cells):
        if not cell:
            sets.append(())
            continue
        names = [name.strip() for name in cell.split(delimiter)]
        if any(not name for name in names):
            raise DataError(
                f"{source}: row {row + 1} has an empty label name in {cell!r} (delimiter "
                f"{delimiter!r} at its start or end, or twice in a row); leave the cell empty "
                "for a text with no label"
            )
        sets.append(tuple(dict.fromkeys(names)))
    return pd.Series(sets, index=values.index, dtype=object)


def indicator_label_sets(frame: pd.DataFrame, columns, source) -> pd.Series:
    """Label sets from one 0/1 column per label, each column named for its label.

    Raises:
        DataError: a cell is neither 0 nor 1 (`true`/`false` are read as 1/0).
    """
    matrix = {}
    for column in columns:
        values = frame[column]
        numbers = pd.to_numeric(values.map(_boolean_as_number), errors="coerce")
        bad = values[~numbers.isin([0, 1])]
        if len(bad):
            raise DataError(
                f"{source}: label column {column!r} must hold 0 or 1; it has "
                f"{len(bad)} other value(s), e.g. {list(bad.astype(str).unique()[:3])}"
            )
        matrix[column] = numbers.to_numpy() == 1
    return pd.Series(
        [tuple(c for c in columns if matrix[c][i]) for i in range(len(frame))],
        index=frame.index,
        dtype=object,
    )


def label_set_vocabulary(label_sets: pd.Series) -> list[str]:
    """The sorted distinct label names of a Series of label sets."""
    return sorted({name for names in label_sets for name in names})


def multi_hot(label_sets, labels) -> np.ndarray:
    """`float32 [N, len(labels)]`: 1 where the text has the label.

    Raises:
        KeyError: a label set names a label not in `labels`.
    """
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(label_sets), len(labels)), dtype="float32")
    for row, names in enumerate(label_sets):
        for name in names:
            matrix[row, index[name]] = 1.0
    return matrix


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _boolean_as_number(value):
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return 1 if value.strip().lower() == "true" else 0
    return value


# === Regression ===


def as_numbers(values: pd.Series, problem) -> np.ndarray:
    """`values` as float64 numbers.

    Args:
        values: a column.
        problem: `problem(count, examples) -> str`, the error's message when
            `count` values are not numbers (`examples`: up to 3 of them).

    Raises:
        DataError: some values are not numbers.
    """
    numbers = pd.to_numeric(values, errors="coerce")
    bad = values[numbers.isna()]
    if len(bad):
        raise DataError(problem(len(bad), list(bad.astype(str).unique()[:3])))
    return numbers.to_numpy(dtype="float64")


def numeric_targets(values: pd.Series, source, transform="none") -> np.ndarray:
    """A regression target column as finite float64 numbers.

    Raises:
        DataError: a value that is not a number or not finite, or a
            negative one under `transform="log1p"`.
    """
    numbers = as_numbers(
        values,
        lambda count, examples: (
            f"{source}: a regression target must be a number; the label "
            f"column has {count} non-numeric value(s), e.g. {examples}"
        ),
    )
    infinite = numbers[~np.isfinite(numbers)]
    if len(infinite):
        raise DataError(
            f"{source}: a regression target must be finite; the label column has "
            f"{len(infinite)} infinite value(s); drop those rows or cap them"
        )
    if transform == "log1p" and (numbers < 0).any():
        negative = numbers[numbers < 0]
        raise DataError(
            f"{source}: model.target_transform log1p needs targets of 0 or more; the label "
            f"column has {len(negative)} negative value(s), e.g. {negative[0]:g}; use "
            "target_transform: none, or shift the target"
        )
    return numbers


@dataclass(frozen=True)
class TargetScaling:
    """A regression target's transform and standardisation, fitted on training.

    The model learns `(transform(y) - mean) / std`; `inverse` undoes that,
    in NumPy here and in the serving graph (`kerasbert.exporting.serving_module`).

    Attributes:
        transform: `"none"` or `"log1p"`.
        mean, std: of the transformed training targets (`std` 1 when they
            are all equal).
    """

    transform: str
    mean: float
    std: float

    @classmethod
    def fit(cls, values, transform="none") -> TargetScaling:
        """The scaling of training targets `values` (already checked)."""
        transformed = _forward(np.asarray(values, dtype="float64"), transform)
        std = float(transformed.std())
        return cls(transform, float(transformed.mean()), std if std > 0 else 1.0)

    def scale(self, values) -> np.ndarray:
        """`float32 [N, 1]`: the targets the model learns."""
        transformed = _forward(np.asarray(values, dtype="float64"), self.transform)
        return ((transformed - self.mean) / self.std).astype("float32").reshape(-1, 1)

    def inverse(self, outputs) -> np.ndarray:
        """Model outputs back in the target's unit, `float64 [N]`."""
        values = np.asarray(outputs, dtype="float64").reshape(-1) * self.std + self.mean
        return np.expm1(values) if self.transform == "log1p" else values

    def to_dict(self) -> dict:
        return asdict(self)


def _forward(values, transform):
    return np.log1p(values) if transform == "log1p" else values
