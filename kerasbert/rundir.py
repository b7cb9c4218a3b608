"""The run directory, `runs/<name>/<timestamp>/`: the one place its file names live.

It is the contract between training (which writes it), export, the report,
evaluation and resume (which read it). Every module names its files through
these constants.

```
config.yaml         the resolved config          labels.json      labels, bin edges, text_pair
history.csv         per-epoch metrics            tensorboard/     TensorBoard logs
eval_history.csv    validation every eval_steps steps
lr_trace.csv        rate and momentum per step   stages.json      unfreezing stages
metrics.json        final metrics                best.weights.h5  the best epoch's weights
calibration.json    the temperature, and log loss and ECE before and after it
fit_summary.json    epochs run, early stop, the epoch kept
model.keras         the model                    tokenizer/       its tokenizer (a preset dir)
data_summary.json   the splits, described        baseline.json    TF-IDF + LR baseline
test_predictions.csv                             report.html, plots/
predictions.csv     data.predict, predicted by the export
lr_find.csv, lr_find.png, lr_find.json           the LR range test
status.json         running / finished           resume/          state to resume from
distillation.json   a distilled run: its teacher, layers, and both models compared
```
"""

from __future__ import annotations

import json
import time
from pathlib import Path

CONFIG = "config.yaml"
LABELS = "labels.json"
HISTORY = "history.csv"
EVAL_HISTORY = "eval_history.csv"
TENSORBOARD = "tensorboard"
LR_TRACE = "lr_trace.csv"
STAGES = "stages.json"
FIT_SUMMARY = "fit_summary.json"
METRICS = "metrics.json"
CALIBRATION = "calibration.json"
BEST_WEIGHTS = "best.weights.h5"
MODEL = "model.keras"
TOKENIZER = "tokenizer"
DATA_SUMMARY = "data_summary.json"
BASELINE = "baseline.json"
TEST_PREDICTIONS = "test_predictions.csv"
PREDICTIONS = "predictions.csv"
REPORT = "report.html"
PLOTS = "plots"
LR_FIND_TABLE = "lr_find.csv"
LR_FIND_PLOT = "lr_find.png"
LR_FIND_SUGGESTION = "lr_find.json"
# The config a range test swept, in its own `lr_find-<timestamp>` directory.
LR_FIND_CONFIG = "lr_find_config.yaml"
STATUS = "status.json"
DISTILLATION = "distillation.json"
STATE_DIR = "resume"
# Inside STATE_DIR.
STATE = "state.json"
STATE_VARIABLES = "variables.npz"

# What `kerasbert.export --run` needs of a finished run.
EXPORT_INPUTS = (CONFIG, LABELS, MODEL, TOKENIZER)
# Files that make a directory a run, for the report.
MARKERS = (CONFIG, HISTORY, METRICS)


def make_run_dir(runs_dir, name, prefix="") -> Path:
    """A fresh `runs/<name>/<prefix><timestamp>` directory."""
    parent = Path(runs_dir) / name
    parent.mkdir(parents=True, exist_ok=True)
    stamp = prefix + time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(100):
        run_dir = parent / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a new run directory under {parent}")


def resolve_run_dir(path) -> Path:
    """A run directory: `path`, or the latest run under `runs/<name>` that did not fail.

    Raises:
        FileNotFoundError: `path` is missing or holds no run.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run directory")
    if any((path / marker).is_file() for marker in MARKERS):
        return path
    runs = sorted(
        p
        for p in path.iterdir()
        if p.is_dir() and any((p / m).is_file() for m in MARKERS) and not _failed(p)
    )
    if not runs:
        raise FileNotFoundError(
            f"{path}: not a run directory (no {', '.join(MARKERS)}) and no runs in it"
        )
    return runs[-1]


def finished_run_dir(path) -> Path:
    """`resolve_run_dir(path)`, checked to be a run that finished with its model saved.

    Raises:
        FileNotFoundError: `path` is missing or holds no run.
        ValueError: the run is still running, failed, or lacks a file of
            `EXPORT_INPUTS`.
    """
    run_dir = resolve_run_dir(path)
    status = read_status(run_dir)
    if status != "finished":
        raise ValueError(
            f"{run_dir}: the run has not finished (status {status or 'unknown'}); "
            "give a run whose status.json says finished"
        )
    missing = missing_export_inputs(run_dir)
    if missing:
        raise ValueError(f"{run_dir}: the finished run lacks {', '.join(missing)}")
    return run_dir


def missing_export_inputs(run_dir) -> list[str]:
    """The files of `EXPORT_INPUTS` that `run_dir` lacks, in that order."""
    return [name for name in EXPORT_INPUTS if not (Path(run_dir) / name).exists()]


def read_status(run_dir) -> str | None:
    """`running`, `finished` or `failed`, from the run's `status.json`; None without one."""
    return status_record(run_dir).get("status")


def status_record(run_dir) -> dict:
    """The run's `status.json`: its `status`, and a finished run's `export`; {} without one."""
    path = Path(run_dir) / STATUS
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _failed(run_dir) -> bool:
    return read_status(run_dir) == "failed"
