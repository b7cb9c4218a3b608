"""A run directory read back, for reports: its files as one `Run`, and the data summary training leaves there."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kerasbert import rundir
from kerasbert.evaluation.predictions import PROBABILITY_PREFIX
from kerasbert.files import write_json

log = logging.getLogger(__name__)


def summarize_splits(splits, num_bins=30) -> dict:
    """Rows, labels or target, and text lengths of each split.

    Args:
        splits: a `kerasbert.data.splits.Splits`.
        num_bins: bins of the word-count histogram, shared by all splits.

    Returns:
        `{"task", "labels", "splits": {split: {"rows", ..., "words",
        "characters"}}, "length_histogram": {"edges", "counts": {split:
        [...]}}, "dropped_rows"}`. A split's labels are as
        `summarize_labels` gives them. Lengths count a sentence pair's two
        texts together; `words` and `characters` hold `min`, `median`,
        `mean`, `p95` and `max`.
    """
    words, summary = {}, {}
    for name, frame in splits.items():
        texts = frame["text"].astype(str)
        if "text_pair" in frame:
            texts = texts + " " + frame["text_pair"].astype(str)
        words[name] = texts.str.split().str.len().to_numpy(dtype=float)
        summary[name] = {
            "rows": int(len(frame)),
            **summarize_labels(frame["label"], splits.labels, splits.task),
            "words": _describe(words[name]),
            "characters": _describe(texts.str.len().to_numpy(dtype=float)),
        }
    everything = np.concatenate(list(words.values()))
    edges = np.histogram_bin_edges(
        everything, bins=min(num_bins, max(1, int(everything.max() - everything.min()) + 1))
    )
    return {
        "task": splits.task,
        "labels": list(splits.labels),
        "splits": summary,
        "length_histogram": {
            "edges": edges.tolist(),
            "counts": {
                name: np.histogram(values, edges)[0].tolist() for name, values in words.items()
            },
        },
        "dropped_rows": dict(splits.dropped),
    }


def summarize_labels(labels, names, task="classification") -> dict:
    """One split's labels, as its task has them.

    Args:
        labels: the split's `label` column (a tuple of names per text for
            `multi_label`, a number for `regression`).
        names: the label vocabulary (`Splits.labels`).
        task: `classification`, `multi_label` or `regression`.

    Returns:
        `{"class_counts": {label: texts}}`; for `multi_label`,
        `{"label_counts": {label: texts with it}, "no_label": texts with
        none}`; for `regression`, `{"target": {"count", "min", "median",
        "mean", "p95", "max"}}`.

    Example:
    >>> summarize_labels(pd.Series([("a",), ("a", "b"), ()]), ["a", "b"], "multi_label")
    {'label_counts': {'a': 2, 'b': 1}, 'no_label': 1}
    """
    if task == "regression":
        values = labels.to_numpy(dtype=float)
        return {"target": {"count": int(len(values)), **_describe(values)}}
    if task == "multi_label":
        counts = Counter(label for label_set in labels for label in label_set)
        return {
            "label_counts": {label: int(counts[label]) for label in names},
            "no_label": int(sum(len(label_set) == 0 for label_set in labels)),
        }
    counts = labels.value_counts()
    return {"class_counts": {label: int(counts.get(label, 0)) for label in names}}


def _describe(values) -> dict:
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "mean": float(values.mean()),
        "p95": float(np.percentile(values, 95)),
        "max": float(values.max()),
    }


def write_data_summary(splits, run_dir) -> dict:
    """Writes `summarize_splits(splits)` to `<run_dir>/data_summary.json`."""
    summary = summarize_splits(splits)
    write_json(Path(run_dir) / rundir.DATA_SUMMARY, summary)
    return summary


@dataclass
class Run:
    """What a run directory holds; None for what it lacks."""

    path: Path
    name: str
    config_text: str | None = None
    label_map: dict | None = None
    history: pd.DataFrame | None = None
    metrics: dict = field(default_factory=dict)
    baseline: dict | None = None
    data_summary: dict | None = None
    stages: list | None = None
    fit_summary: dict | None = None
    lr_trace: pd.DataFrame | None = None
    lr_find: pd.DataFrame | None = None
    lr_find_png: bytes | None = None
    lr_find_summary: dict | None = None
    test_predictions: pd.DataFrame | None = None
    distillation: dict | None = None
    calibration: dict | None = None
    missing: list = field(default_factory=list)
    problems: list = field(default_factory=list)

    @property
    def labels(self) -> list[str] | None:
        for source in (self.label_map or {}, self.metrics.get("test", {}), self.data_summary or {}):
            if source.get("labels"):
                return list(source["labels"])
        return None


def describe_fit(summary, format_value="{:.4g}".format) -> str:
    """One sentence of a run's `fit_summary.json`, for the log and the report.

    Args:
        summary: `fit_summary.json`.
        format_value: writes the kept epoch's monitored value (the report
            writes it as it writes every metric).
    """
    run, planned = summary["epochs_run"], summary["epochs_planned"]
    text = f"trained {run} of {planned} epochs"
    if summary["stopped_early"] and summary["early_stopping"]:
        stop = summary["early_stopping"]
        text += (
            f": early stopping ended the run ({stop['monitor']} did not improve for "
            f"{stop['patience']} epochs)"
        )
    if summary["kept_epoch"] is not None:
        text += (
            f"; kept epoch {summary['kept_epoch']}, the best by {summary['checkpoint_monitor']} "
            f"({format_value(summary['kept_value'])})"
        )
    return text


def load_run(path) -> Run:
    """Reads every artefact a run directory has.

    An optional file that cannot be read is reported in `Run.problems` and
    its section left out, rather than failing the whole report.

    Raises:
        FileNotFoundError: not a run directory.
    """
    path = rundir.resolve_run_dir(path)
    run = Run(path=path, name=f"{path.parent.name}/{path.name}")
    readers = {
        rundir.CONFIG: ("config_text", lambda p: p.read_text(encoding="utf-8")),
        rundir.LABELS: ("label_map", _read_json),
        rundir.HISTORY: ("history", pd.read_csv),
        rundir.METRICS: ("metrics", _read_json),
        rundir.BASELINE: ("baseline", _read_json),
        rundir.DATA_SUMMARY: ("data_summary", _read_json),
        rundir.STAGES: ("stages", _read_stages),
        rundir.FIT_SUMMARY: ("fit_summary", _read_json),
        rundir.LR_TRACE: ("lr_trace", pd.read_csv),
        rundir.LR_FIND_TABLE: ("lr_find", pd.read_csv),
        rundir.LR_FIND_PLOT: ("lr_find_png", lambda p: p.read_bytes()),
        rundir.LR_FIND_SUGGESTION: ("lr_find_summary", _read_json),
        rundir.TEST_PREDICTIONS: ("test_predictions", _read_predictions),
        rundir.CALIBRATION: ("calibration", _read_json),
    }
    for filename, (attribute, reader) in readers.items():
        file = path / filename
        if not file.is_file():
            run.missing.append(filename)
            continue
        try:
            setattr(run, attribute, reader(file))
        except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
            run.problems.append(f"{filename}: {' '.join(str(e).split()) or type(e).__name__}")
            log.warning("%s: cannot read %s: %s", path, filename, e)
    # Only a distilled run has one: its absence is no gap worth listing.
    if (path / rundir.DISTILLATION).is_file():
        try:
            run.distillation = _read_json(path / rundir.DISTILLATION)
        except (ValueError, OSError, UnicodeDecodeError) as e:
            run.problems.append(f"{rundir.DISTILLATION}: {' '.join(str(e).split())}")
    if run.stages is None and run.history is not None:
        run.stages = stages_from_history(run.history)
    return run


def stages_from_history(history) -> list | None:
    """Unfreezing stages from history.csv's `stage` column, when there is one.

    `ProgressiveUnfreezing` logs the stage of every epoch; a stage begins
    where that value changes. Used when a run has no `stages.json`.
    """
    if "stage" not in history or history["stage"].isna().all() or "epoch" not in history:
        return None
    changes = history["stage"].ne(history["stage"].shift())
    stages = []
    for _, row in history[changes].iterrows():
        stage = {"stage": row["stage"], "first_epoch": int(row["epoch"])}
        if "trainable_params" in row:
            stage["trainable_params"] = row["trainable_params"]
        stages.append(stage)
    return stages


def _read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _read_stages(path) -> list:
    stages = _read_json(path)
    if isinstance(stages, dict):
        stages = stages.get("stages")
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        raise ValueError(
            "expected a list of {stage, first_epoch, epochs, trainable_layers, trainable_params}"
        )
    return stages


def _read_predictions(path) -> pd.DataFrame:
    # Texts and labels stay strings ("NA", "1", "" are texts and labels here).
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in frame.columns:
        if column == "confidence" or column.startswith(PROBABILITY_PREFIX):
            frame[column] = pd.to_numeric(frame[column])
    return frame
