"""The report's figures, drawn with matplotlib's Agg renderer (no display needed).

Figures are built as `matplotlib.figure.Figure` objects rather than through
`pyplot`, so drawing a report neither needs a display nor switches the
backend of a notebook or program that imports kerasbert. Each `plot_*`
function takes plain data and returns a figure; `png_bytes` renders one.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kerasbert.files import atomic_output

DPI = 100
# Columns of history.csv that are not per-epoch metrics (the schedule and
# unfreezing callbacks log these too).
NOT_METRICS = {"epoch", "learning_rate", "lr", "momentum", "stage", "trainable_params"}


def png_bytes(figure, path=None) -> bytes:
    """Renders a figure as PNG bytes (and writes them to `path` if given)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    data = buffer.getvalue()
    if path is not None:
        with atomic_output(path) as tmp:
            Path(tmp).write_bytes(data)
    return data


def _figure(width, height):
    return Figure(figsize=(width, height), layout="constrained")


def metric_names(history: pd.DataFrame) -> list[str]:
    """The metrics logged for training, e.g. `["loss", "accuracy"]` (loss first)."""
    names = [c for c in history.columns if c not in NOT_METRICS and not c.startswith("val_")]
    names += [c[4:] for c in history.columns if c.startswith("val_") and c[4:] not in names]
    return sorted(names, key=lambda name: (name != "loss", name))


def _epochs(history):
    """1-based epoch numbers, as Keras prints them (`CSVLogger` writes 0-based)."""
    if (
        "epoch" in history
        and history["epoch"].is_monotonic_increasing
        and history["epoch"].is_unique
    ):
        return history["epoch"].to_numpy() + 1
    return np.arange(1, len(history) + 1)


def plot_training_curves(history: pd.DataFrame, stages=None) -> Figure:
    """Loss and each metric per epoch, training and validation.

    Args:
        history: Keras `CSVLogger` output: `epoch` (0-based) and
            `<metric>` / `val_<metric>` columns.
        stages: optional unfreezing stages in order, `[{"first_epoch",
            "trainable_layers", ...}]` (`epoch` is read when `first_epoch`
            is absent), the first epoch 0-based as Keras passes it to
            callbacks; a dotted line marks where each stage after the first
            begins.
    """
    names = metric_names(history)[:4] or ["loss"]
    figure = _figure(5 * len(names), 3.6)
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    epochs = _epochs(history)
    for ax, name in zip(axes, names):
        for column, style in ((name, "o-"), ("val_" + name, "s--")):
            if column in history:
                ax.plot(
                    epochs, history[column].to_numpy(dtype=float), style, label=column, markersize=4
                )
        _mark_stages(ax, stages)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return figure


def first_epoch(stage):
    """A stage's 0-based first epoch (`first_epoch`, or `epoch` as the callback logs it)."""
    value = stage.get("first_epoch", stage.get("epoch"))
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _mark_stages(ax, stages, x_of=None):
    for number, stage in enumerate(stages or [], start=1):
        first = first_epoch(stage)
        if number == 1 or first is None:
            continue
        # Plotted epochs are 1-based: the stage starting at 0-based epoch
        # `first` begins between plotted epochs `first` and `first + 1`.
        x = first + 0.5 if x_of is None else x_of(first)
        if x is None:
            continue
        ax.axvline(x, color="grey", linestyle=":", linewidth=1)
        # Written up along the line rather than across: stages a few steps or
        # epochs long sit closer together than a label is wide, but further
        # apart than it is high.
        ax.annotate(
            _stage_name(number, stage),
            xy=(x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(1, -3),
            textcoords="offset points",
            rotation=90,
            ha="left",
            va="top",
            fontsize="x-small",
            color="dimgrey",
            # Readable where it crosses a curve.
            bbox={
                "boxstyle": "square,pad=0.1",
                "facecolor": "white",
                "edgecolor": "none",
                "alpha": 0.7,
            },
        )


def _stage_name(number, stage) -> str:
    layers = stage.get("trainable_layers")
    return f"stage {number}: {layers} layers" if layers is not None else f"stage {number}"


def _legend_if_labelled(ax):
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def plot_learning_rate(trace: pd.DataFrame, stages=None) -> Figure:
    """Learning rate (and momentum, when logged) per optimizer step.

    Args:
        trace: `lr_trace.csv`: `step`, `epoch`, `learning_rate` and
            optionally `momentum`.
        stages: optional unfreezing stages, marked at their first step.
    """
    has_momentum = "momentum" in trace and trace["momentum"].notna().any()
    figure = _figure(10, 3.4)
    axes = figure.subplots(1, 2 if has_momentum else 1, squeeze=False)[0]
    # One row per training step, in order; the `step` column is the position
    # in the current cycle, which restarts at every unfreezing stage.
    steps = np.arange(len(trace))

    def first_step(epoch):
        if "epoch" not in trace:
            return None
        rows = steps[trace["epoch"].to_numpy() >= epoch]
        return rows[0] if len(rows) else None

    columns = [("learning_rate", "learning rate")] + (
        [("momentum", "momentum")] if has_momentum else []
    )
    for ax, (column, title) in zip(axes, columns):
        ax.plot(steps, trace[column].to_numpy(dtype=float), linewidth=1.5)
        _mark_stages(ax, stages, first_step)
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return figure


def lr_find_columns(frame: pd.DataFrame) -> tuple[str, list[str]]:
    """The learning-rate column and the loss columns of an LR range test table.

    Raises:
        ValueError: no learning-rate or no loss column.
    """
    rate = next((c for c in ("learning_rate", "lr") if c in frame), None)
    losses = [c for c in frame.columns if "loss" in c]
    if rate is None or not losses:
        raise ValueError(
            f"an LR range test table needs `learning_rate` and a loss column; found {list(frame.columns)}"
        )
    return rate, losses


def plot_lr_find(frame: pd.DataFrame, suggestion=None) -> Figure:
    """Loss against learning rate (log scale) from an LR range test.

    Args:
        frame: the test's table (`lr_find.csv`).
        suggestion: the suggested maximal learning rate, marked when given.

    Reference:
        Smith, Cyclical Learning Rates for Training Neural Networks, 2017
        (arXiv:1506.01186).
    """
    rate, losses = lr_find_columns(frame)
    figure = _figure(6, 3.6)
    ax = figure.subplots()
    for column in losses:
        ax.plot(
            frame[rate].to_numpy(dtype=float), frame[column].to_numpy(dtype=float), label=column
        )
    if suggestion is not None:
        ax.axvline(
            suggestion, color="C3", linestyle="--", label=f"suggested max_lr {suggestion:.2e}"
        )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title("LR range test")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return figure


def plot_confusion_matrix(matrix, labels) -> Figure:
    """Counts, coloured by the share of each true class (row)."""
    matrix = np.asarray(matrix)
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    size = max(3.5, 0.6 * len(labels) + 2)
    figure = _figure(size + 1, size)
    ax = figure.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, [str(label) for label in labels], rotation=45, ha="right")
    ax.set_yticks(ticks, [str(label) for label in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(labels) <= 30:
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize="small",
                    color="white" if shares[i, j] > 0.6 else "black",
                )
    figure.colorbar(image, ax=ax, label="share of true class")
    ax.set_title("confusion matrix")
    return figure


def plot_class_balance(class_counts: dict[str, dict[str, int]], labels, texts=None) -> Figure:
    """Grouped bars: the share of each class in each split.

    Args:
        class_counts: `{split: {label: count}}`.
        labels: class names, in order.
        texts: multi-label: `{split: texts}`, for the share of a split's
            texts that have each label (a text may have several, or none).
    """
    figure = _figure(max(5, 0.8 * len(labels) * max(1, len(class_counts)) + 2), 3.4)
    ax = figure.subplots()
    width = 0.8 / max(1, len(class_counts))
    x = np.arange(len(labels))
    for k, (split, counts) in enumerate(class_counts.items()):
        values = np.array([counts.get(label, 0) for label in labels], dtype=float)
        total = texts[split] if texts is not None else values.sum()
        ax.bar(
            x + k * width - 0.4 + width / 2,
            values / (total or 1.0),
            width,
            label=f"{split} ({int(total)})",
        )
    ax.set_xticks(
        x,
        [str(label) for label in labels],
        rotation=30 if len(labels) > 5 else 0,
        ha="right" if len(labels) > 5 else "center",
    )
    ax.set_ylabel("share of split")
    ax.set_title("class balance" if texts is None else "texts with each label")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    return figure


def plot_text_lengths(histogram: dict) -> Figure:
    """Text length (words) distribution per split, from shared bin edges.

    Args:
        histogram: `{"edges": [...], "counts": {split: [...]}}`.
    """
    edges = np.asarray(histogram["edges"], dtype=float)
    figure = _figure(6, 3.4)
    ax = figure.subplots()
    for split, counts in histogram["counts"].items():
        counts = np.asarray(counts, dtype=float)
        total = counts.sum() or 1.0
        ax.stairs(counts / total, edges, label=split, linewidth=1.5)
    ax.set_xlabel("words per text")
    ax.set_ylabel("share of split")
    ax.set_title("text length")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return figure


def plot_reliability(bins: dict) -> Figure:
    """Reliability diagram: accuracy against mean confidence per confidence bin.

    Args:
        bins: `kerasbert.evaluation.metrics.calibration_bins` output.
    """
    figure = _figure(4.5, 4)
    _draw_reliability(figure.subplots(), bins, "reliability (test)")
    return figure


def plot_calibration(before: dict, after: dict, split="test", temperature=None) -> Figure:
    """Reliability diagrams of the same predictions before and after temperature scaling.

    Args:
        before, after: `calibration_bins` of each (lists, an empty bin's
            values None or NaN, as `calibration.json` holds them).
        split: the split they are of, for the titles.
        temperature: the fitted temperature (a number, or one per label),
            for the second title.
    """
    figure = _figure(9, 4)
    left, right = figure.subplots(1, 2, sharey=True)
    _draw_reliability(left, before, f"{split}: before calibration")
    fitted = ""
    if isinstance(temperature, (int, float)):
        fitted = f" (T = {temperature:.3g})"
    elif temperature:
        fitted = f" ({len(temperature)} temperatures)"
    _draw_reliability(right, after, f"{split}: after calibration{fitted}")
    return figure


def _draw_reliability(ax, bins, title):
    edges = np.asarray(bins["edges"], dtype=float)
    count = np.asarray(bins["count"], dtype=float)
    accuracy = np.asarray(bins["accuracy"], dtype=float)
    confidence = np.asarray(bins["confidence"], dtype=float)
    filled = count > 0
    centers = (edges[:-1] + edges[1:]) / 2
    ax.bar(
        centers[filled],
        accuracy[filled],
        width=np.diff(edges)[filled],
        edgecolor="black",
        alpha=0.7,
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    ax.plot(confidence[filled], accuracy[filled], "ro", markersize=3, label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left")


def plot_comparison(
    histories: dict[str, pd.DataFrame], test_metrics: dict[str, dict], metric="val_accuracy"
) -> Figure:
    """Several runs: `metric` per epoch, and their test accuracy and macro F1.

    Args:
        histories: `{run name: history frame}`.
        test_metrics: `{run name: test metrics}` (missing values are skipped).
        metric: the history column to draw per epoch.
    """
    figure = _figure(12, 4)
    left, right = figure.subplots(1, 2)
    for name, history in histories.items():
        if metric in history:
            left.plot(
                _epochs(history),
                history[metric].to_numpy(dtype=float),
                "o-",
                markersize=3,
                label=name,
            )
    left.set_title(f"{metric} per epoch")
    left.set_xlabel("epoch")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.grid(alpha=0.3)
    if left.get_legend_handles_labels()[0]:
        left.legend(fontsize="small")
    names = list(test_metrics)
    x = np.arange(len(names))
    for k, key in enumerate(("accuracy", "macro_f1")):
        values = [test_metrics[n].get(key) for n in names]
        values = [v if isinstance(v, (int, float)) else np.nan for v in values]
        right.bar(x + (k - 0.5) * 0.4, values, 0.4, label=key)
    right.set_xticks(x, names, rotation=30, ha="right", fontsize="small")
    right.set_ylim(0, 1)
    right.set_title("test metrics")
    right.grid(alpha=0.3, axis="y")
    right.legend(fontsize="small")
    return figure


def plot_loss_curves(histories: dict[str, pd.DataFrame]) -> Figure:
    """Several runs' training and validation loss per epoch: one line per run in each panel.

    A run keeps its colour in both panels, so its two curves are read together.

    Args:
        histories: `{run name: history frame}` (`loss` and `val_loss`
            columns; a run lacking one is left out of that panel).
    """
    figure = _figure(12, 4)
    axes = figure.subplots(1, 2, sharey=True)
    for colour, (name, history) in enumerate(histories.items()):
        for ax, column in zip(axes, ("loss", "val_loss")):
            if column in history:
                ax.plot(
                    _epochs(history),
                    history[column].to_numpy(dtype=float),
                    "o-" if column == "loss" else "s--",
                    color=f"C{colour % 10}",
                    markersize=3,
                    label=name,
                )
    for ax, title in zip(axes, ("training loss per epoch", "validation loss per epoch")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        _legend_if_labelled(ax)
    axes[0].set_ylabel("loss")
    return figure
