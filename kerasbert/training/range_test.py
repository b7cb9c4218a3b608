"""The learning-rate range test (Smith 2017, section 3.3; fast.ai's `lr_find`).

The learning rate grows exponentially from `min_learning_rate` to
`max_learning_rate`, one batch per value; the loss of each batch is smoothed
with a bias-corrected exponential moving average, and the sweep stops early
once the smoothed loss exceeds `divergence` times its minimum. The model's
weights are restored afterwards.

Suggested maximal learning rate: the learning rate at the minimum of the
smoothed loss divided by 10, the rule of thumb of fast.ai's `lr_find`
(`lr_min`): the minimum itself is already on the edge of divergence, a tenth
of it is still fast and safely stable.

Reference:
    Smith, "Cyclical Learning Rates for Training Neural Networks", 2017,
    arXiv:1506.01186.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from kerasbert import rundir


@dataclass
class RangeTestResult:
    """What one sweep saw.

    Attributes:
        learning_rates: the learning rate of each step taken.
        losses: the raw loss of each step's batch.
        smoothed: the bias-corrected moving average of the losses.
        suggestion: the suggested maximal learning rate (see module doc).
        diverged: whether the sweep stopped early on divergence.
    """

    learning_rates: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    diverged: bool


def sweep_learning_rate(step, num_steps, min_learning_rate, max_learning_rate) -> float:
    """The exponential sweep's learning rate at `step` of `num_steps`."""
    if num_steps == 1:
        return min_learning_rate
    ratio = max_learning_rate / min_learning_rate
    return min_learning_rate * ratio ** (step / (num_steps - 1))


def smooth_losses(losses, beta=0.98) -> list[float]:
    """Bias-corrected exponential moving average, as fast.ai smooths losses."""
    average, out = 0.0, []
    for i, loss in enumerate(losses):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta ** (i + 1)))
    return out


def suggest_learning_rate(learning_rates, smoothed) -> float:
    """A tenth of the learning rate where the smoothed loss is lowest."""
    finite = [(loss, lr) for lr, loss in zip(learning_rates, smoothed) if math.isfinite(loss)]
    if not finite:
        raise ValueError("the loss was never finite during the sweep; check the data and model")
    return min(finite)[1] / 10


def unclear_minimum(result: RangeTestResult) -> str | None:
    """Why the suggestion is not to be trusted, or None.

    The smoothed loss should fall, bottom out and rise: a lowest point at
    either end of the sweep means the minimum lies outside the range tried.
    """
    finite = [i for i, loss in enumerate(result.smoothed) if math.isfinite(loss)]
    lowest = min(finite, key=lambda i: result.smoothed[i])
    if lowest == 0:
        return (
            "the smoothed loss was lowest at the first learning rate of the sweep, so it shows "
            "no minimum; lower --min-lr"
        )
    if lowest == len(result.smoothed) - 1 and not result.diverged:
        return (
            "the smoothed loss was still falling at the last learning rate of the sweep, so it "
            "shows no minimum; raise --max-lr or --steps"
        )
    return None


def lr_range_test(
    model,
    dataset,
    min_learning_rate=1e-7,
    max_learning_rate=1.0,
    num_steps=100,
    beta=0.98,
    divergence=4.0,
) -> RangeTestResult:
    """Runs the range test on a compiled model and restores its weights.

    Args:
        model: a compiled Keras model with a float learning rate.
        dataset: batches of `(inputs, labels)`; repeated as needed.
        min_learning_rate: the first learning rate.
        max_learning_rate: the last learning rate.
        num_steps: the most steps taken.
        beta: the smoothing factor of the moving average.
        divergence: stop once the smoothed loss passes this multiple of its
            minimum.

    Returns:
        A `RangeTestResult`.

    Raises:
        ValueError: for a non-positive or inverted learning-rate range, or
            fewer than 2 steps.

    Example:
    >>> result = lr_range_test(model, train_ds, num_steps=50)
    >>> result.suggestion
    """
    if not 0 < min_learning_rate < max_learning_rate:
        raise ValueError(
            "Invalid values for `min_learning_rate`/`max_learning_rate`. Expected "
            f"0 < min < max. Received: min_learning_rate={min_learning_rate}, "
            f"max_learning_rate={max_learning_rate}"
        )
    if num_steps < 2:
        raise ValueError(
            f"Invalid value for argument `num_steps`. Expected >= 2. Received: num_steps={num_steps}"
        )
    weights = [w.numpy().copy() for w in model.weights]
    optimizer_state = (
        [v.numpy().copy() for v in model.optimizer.variables] if model.optimizer.built else None
    )
    starting_learning_rate = float(model.optimizer.learning_rate.numpy())
    learning_rates, losses, smoothed = [], [], []
    average, best = 0.0, math.inf
    diverged = False
    batches = iter(dataset.repeat())
    try:
        for step in range(num_steps):
            learning_rate = sweep_learning_rate(
                step, num_steps, min_learning_rate, max_learning_rate
            )
            model.optimizer.learning_rate.assign(learning_rate)
            x, y = next(batches)[:2]
            loss = float(model.train_on_batch(x, y, return_dict=True)["loss"])
            learning_rates.append(learning_rate)
            losses.append(loss)
            average = beta * average + (1 - beta) * loss
            smoothed.append(average / (1 - beta ** (step + 1)))
            best = min(best, smoothed[-1])
            if not math.isfinite(smoothed[-1]) or smoothed[-1] > divergence * best:
                diverged = True
                break
    finally:
        for variable, value in zip(model.weights, weights):
            variable.assign(value)
        if optimizer_state is not None:
            for variable, value in zip(model.optimizer.variables, optimizer_state):
                variable.assign(value)
        model.optimizer.learning_rate.assign(starting_learning_rate)
    return RangeTestResult(
        learning_rates, losses, smoothed, suggest_learning_rate(learning_rates, smoothed), diverged
    )


def write_range_test(result: RangeTestResult, directory) -> tuple[Path, Path]:
    """Writes `lr_find.csv` and `lr_find.png` into `directory`."""
    import pandas as pd

    from kerasbert.data.tables import write_table
    from kerasbert.evaluation import plots

    directory = Path(directory)
    table = pd.DataFrame(
        {
            "step": range(len(result.learning_rates)),
            "learning_rate": result.learning_rates,
            "loss": result.losses,
            "smoothed_loss": result.smoothed,
        }
    )
    csv_path = directory / rundir.LR_FIND_TABLE
    write_table(table, csv_path)
    png_path = directory / rundir.LR_FIND_PLOT
    plots.png_bytes(plots.plot_lr_find(table, suggestion=result.suggestion), png_path)
    return csv_path, png_path


# === Carried into the run it informed ===

RANGE_TEST_FILES = (rundir.LR_FIND_TABLE, rundir.LR_FIND_PLOT, rundir.LR_FIND_SUGGESTION)
# What a range test's answer depends on: a run that differs in any of these
# was not informed by it.
SAME_FOR_RANGE_TEST = (("data",), ("model",), ("training", "batch_size"), ("training", "optimizer"))


def latest_range_test(config) -> Path | None:
    """The newest `lr_find` of `config`'s data, model, batch size and optimizer, or None.

    `python -m kerasbert.lr_find` writes to `<runs_dir>/<name>/lr_find-<timestamp>/`,
    with the config it swept.
    """
    import yaml

    from kerasbert.config_loading import config_to_dict

    ours = config_to_dict(config)
    parent = Path(config.training.runs_dir) / config.name
    for directory in sorted(parent.glob("lr_find-*"), reverse=True):
        saved = directory / rundir.LR_FIND_CONFIG
        if not saved.is_file() or not all((directory / f).is_file() for f in RANGE_TEST_FILES):
            continue
        try:
            theirs = yaml.safe_load(saved.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if all(_at(theirs, keys) == _at(ours, keys) for keys in SAME_FOR_RANGE_TEST):
            return directory
    return None


def copy_range_test(source, run_dir) -> None:
    """Copies a range test's files into a run directory, for its report."""
    import shutil

    for name in RANGE_TEST_FILES:
        shutil.copyfile(Path(source) / name, Path(run_dir) / name)


def _at(tree, keys):
    for key in keys:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree
