"""Scoring an export on labelled texts, through its serving signature.

`evaluate_saved_model` is what `python -m kerasbert.evaluate` and a
training run's test-split evaluation both call: the export runs as TF
Serving runs it (`SavedModelClassifier`), so what is measured is what is
shipped.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from kerasbert import rundir
from kerasbert.data.splits import bin_labels
from kerasbert.data.tables import (
    check_columns,
    label_text,
    read_table,
    text_values,
    write_table,
)
from kerasbert.evaluation import metrics as metrics_lib
from kerasbert.evaluation.predictions import PROBABILITY_PREFIX, predict_in_batches
from kerasbert.evaluation.saved_model_classifier import SavedModelClassifier

log = logging.getLogger(__name__)

# The files of an evaluation's output directory.
METRICS_FILE = rundir.METRICS
PREDICTIONS_FILE = "predictions.csv"


def label_ids(true_labels, labels) -> np.ndarray:
    """Class ids of label strings.

    Raises:
        ValueError: some labels are not in `labels`; names them.
    """
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({label for label in true_labels if label not in index})
    if unknown:
        raise ValueError(
            f"{len(unknown)} label(s) not in the model's label list: {unknown[:10]}; "
            f"the model knows {list(labels)[:20]}"
        )
    return np.asarray([index[label] for label in true_labels], dtype=np.int64)


def evaluate_predictions(
    true_labels, probabilities, labels, num_bins=metrics_lib.DEFAULT_NUM_BINS
) -> dict:
    """`kerasbert.evaluation.metrics.classification_metrics` for label strings.

    Args:
        true_labels: one label string per example.
        probabilities: `[N, len(labels)]`.
        labels: class names by class id.
        num_bins: confidence bins for the calibration error.

    Raises:
        ValueError: a label is not in `labels`.
    """
    return metrics_lib.classification_metrics(
        label_ids(true_labels, labels), probabilities, labels, num_bins
    )


def predictions_table(texts, true_labels, probabilities, labels, text_pairs=None) -> pd.DataFrame:
    """One row per example: text, label, predicted label, confidence, probabilities.

    The predicted label is the most probable class, as in the metrics.
    """
    probabilities = np.asarray(probabilities)
    columns = {"text": list(texts)}
    if text_pairs is not None:
        columns["text_pair"] = list(text_pairs)
    columns["label"] = list(true_labels)
    columns["predicted_label"] = [labels[i] for i in probabilities.argmax(axis=1)]
    columns["confidence"] = probabilities.max(axis=1)
    for i, label in enumerate(labels):
        columns[PROBABILITY_PREFIX + str(label)] = probabilities[:, i]
    return pd.DataFrame(columns)


def evaluate_saved_model(
    model_dir,
    texts,
    labels,
    text_pairs=None,
    batch_size=64,
    num_bins=metrics_lib.DEFAULT_NUM_BINS,
    progress=False,
    predictions_path=None,
) -> dict:
    """Evaluates an exported model on labelled texts through its serving signature.

    Args:
        model_dir: a SavedModel version directory, or a loaded
            `kerasbert.evaluation.saved_model_classifier.SavedModelClassifier`.
        texts: the strings to classify.
        labels: their true label strings.
        text_pairs: second segments, for sentence-pair models.
        batch_size: texts per call.
        num_bins: confidence bins for the expected calibration error.
        progress: show a progress bar.
        predictions_path: if given, also write the per-example predictions
            there (see `predictions_table`).

    Returns:
        The metrics of `kerasbert.evaluation.metrics.classification_metrics`.

    Raises:
        ValueError: a label the model does not know (checked before
            predicting), or lengths that differ.
        FileNotFoundError: no SavedModel at `model_dir`.

    Example:

    >>> metrics = evaluate_saved_model("saved_models/quickstart/1", ["A superb film."], ["positive"])
    >>> metrics["accuracy"]
    """
    model = (
        model_dir
        if isinstance(model_dir, SavedModelClassifier)
        else SavedModelClassifier(model_dir)
    )
    texts, labels = list(texts), list(labels)
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels; give one label per text")
    if not texts:
        raise ValueError("nothing to evaluate: no texts")
    y_true = label_ids(labels, model.labels)
    if model.text_pair and text_pairs is None:
        raise ValueError(f"{model.model_dir} takes sentence pairs; give the text pairs")
    _, probabilities = predict_in_batches(
        model,
        texts,
        text_pairs if model.text_pair else None,
        batch_size,
        progress,
        description="evaluating",
    )
    result = metrics_lib.classification_metrics(y_true, probabilities, model.labels, num_bins)
    if predictions_path is not None:
        table = predictions_table(
            texts, labels, probabilities, model.labels, text_pairs if model.text_pair else None
        )
        write_table(table, predictions_path)
    return result


def format_metrics(metrics) -> str:
    """A human-readable table of `classification_metrics` output."""
    ece_name = f"ECE ({metrics.get('ece_bins', metrics_lib.DEFAULT_NUM_BINS)} bins)"
    rows = [
        ("examples", metrics.get("num_examples")),
        ("accuracy", metrics.get("accuracy")),
        ("macro F1", metrics.get("macro_f1")),
        ("weighted F1", metrics.get("weighted_f1")),
        ("ROC-AUC", metrics.get("roc_auc")),
        ("log loss", metrics.get("log_loss")),
        (ece_name, metrics.get("ece")),
    ]
    lines = metric_lines(rows)
    per_class = metrics.get("per_class")
    if per_class:
        table = pd.DataFrame.from_dict(per_class, orient="index")[
            ["precision", "recall", "f1", "support"]
        ]
        lines += ["", table.to_string(float_format=lambda x: f"{x:.4f}")]
    matrix = metrics.get("confusion_matrix")
    if matrix:
        labels = metrics["labels"]
        frame = pd.DataFrame(matrix, index=labels, columns=labels)
        lines += ["", "confusion matrix (rows: true label, columns: predicted)", frame.to_string()]
    return "\n".join(lines)


def metric_lines(rows) -> list[str]:
    """`(name, value)` rows as aligned lines: integers as they are, other
    numbers with 4 decimals, None as `n/a`."""
    width = max(len(name) for name, _ in rows)
    return [f"{name:<{width}}  {_number(value)}" for name, value in rows]


def _number(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(value)
    return f"{value:.4f}"


def load_labelled(
    path,
    text_column="text",
    label_column="label",
    text_pair_column=None,
    bin_edges=None,
    bin_names=None,
):
    """Reads a labelled file into `text`, `label` (and `text_pair`) columns.

    Missing texts become `""` and are evaluated; rows without a label are
    dropped. Numeric labels are written as a CSV would (3.0 is "3"); with
    `bin_edges` a numeric target is binned as in training, into classes
    named `bin_names` (the model's labels) or by their bounds.

    Returns:
        `(frame, dropped)`: the frame and the number of rows dropped.

    Raises:
        kerasbert.data.tables.DataError: the file is missing or unreadable.
        ValueError: a missing column.
    """
    frame = read_table(path)
    check_columns(frame, [text_column, label_column, text_pair_column], path)
    label = frame[label_column]
    keep = label.notna() & (label.astype(str).str.strip() != "")
    frame = frame[keep].reset_index(drop=True)
    out = pd.DataFrame({"text": text_values(frame[text_column])})
    if text_pair_column:
        out["text_pair"] = text_values(frame[text_pair_column])
    if bin_edges is not None:
        out["label"] = bin_labels(
            frame[label_column], bin_edges, bin_names, source=str(path)
        ).to_numpy()
    else:
        out["label"] = [label_text(v) for v in frame[label_column].tolist()]
    return out, int((~keep).sum())
