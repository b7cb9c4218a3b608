"""Scoring a multi-label or regression model: its metrics and its per-example predictions.

The counterpart of `kerasbert.evaluation.scoring` for `model.task:
multi_label` and `model.task: regression`, from an export
(`SavedModelClassifier`, whose graph applies the thresholds and the target
scaling) or from arrays a model in memory gave.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kerasbert.data.tables import write_table
from kerasbert.data.targets import multi_hot
from kerasbert.evaluation import target_metrics
from kerasbert.evaluation.predictions import PROBABILITY_PREFIX, predict_in_batches

# Joins the label names of a text in a predictions table.
LABEL_DELIMITER = "|"
PREDICTED_LABELS = "predicted_labels"
PREDICTED_VALUE = "predicted_value"


def join_labels(names, delimiter=LABEL_DELIMITER) -> str:
    """`("a", "b")` as `"a|b"`; no label is `""`."""
    return delimiter.join(names)


def multi_label_table(texts, true_sets, decided, probabilities, labels, text_pairs=None):
    """One row per text: text, labels, `predicted_labels` (delimited) and each label's probability."""
    probabilities = np.asarray(probabilities)
    columns = {"text": list(texts)}
    if text_pairs is not None:
        columns["text_pair"] = list(text_pairs)
    if true_sets is not None:
        columns["label"] = [join_labels(names) for names in true_sets]
    columns[PREDICTED_LABELS] = [join_labels(names) for names in decided]
    for j, label in enumerate(labels):
        columns[PROBABILITY_PREFIX + str(label)] = probabilities[:, j]
    return pd.DataFrame(columns)


def regression_table(texts, true_values, values, text_pairs=None):
    """One row per text: text, label (the true value) and `predicted_value`."""
    columns = {"text": list(texts)}
    if text_pairs is not None:
        columns["text_pair"] = list(text_pairs)
    if true_values is not None:
        columns["label"] = list(true_values)
    columns[PREDICTED_VALUE] = np.asarray(values, dtype="float64").reshape(-1)
    return pd.DataFrame(columns)


def score_targets(task, labels, true_targets, answers, scores, thresholds=None):
    """The metrics of one split.

    Args:
        task: `multi_label` or `regression`.
        labels: the label names.
        true_targets: label-name tuples, or numbers.
        answers: what the model decided: label-name tuples, or values.
        scores: probabilities `[N, labels]` (multi-label only).
        thresholds: the thresholds the decisions were made with.
    """
    if task == "regression":
        return target_metrics.regression_metrics(true_targets, answers)
    y_true = multi_hot(true_targets, labels)
    metrics = target_metrics.multi_label_metrics(y_true, scores, labels, thresholds)
    # The graph's own decisions, rather than re-thresholding here.
    decisions = multi_hot(answers, labels).astype(bool)
    metrics["subset_accuracy"] = float((decisions == y_true.astype(bool)).all(axis=1).mean())
    metrics["hamming_loss"] = float((decisions != y_true.astype(bool)).mean())
    return metrics


def evaluate_saved_targets(
    model, texts, true_targets, text_pairs=None, batch_size=64, predictions_path=None
):
    """`evaluate_saved_model` for a multi-label or regression export.

    Args:
        model: a loaded `SavedModelClassifier` of a multi-label or regression export.
        texts: the texts.
        true_targets: label-name tuples (multi-label) or numbers (regression).
        text_pairs: second segments, for sentence-pair models.
        batch_size: texts per call.
        predictions_path: where to write the per-example predictions, if given.

    Returns:
        `multi_label_metrics` or `regression_metrics`.

    Raises:
        ValueError: a multi-label target names a label the model does not know.
    """
    texts, true_targets = list(texts), list(true_targets)
    if len(texts) != len(true_targets):
        raise ValueError(f"{len(texts)} texts but {len(true_targets)} targets")
    if model.task == "multi_label":
        unknown = sorted({n for names in true_targets for n in names} - set(model.labels))
        if unknown:
            raise ValueError(
                f"{len(unknown)} label(s) not in the model's label list: {unknown[:10]}; "
                f"the model knows {list(model.labels)[:20]}"
            )
    pairs = text_pairs if model.text_pair else None
    answers, scores = predict_in_batches(
        model, texts, pairs, batch_size, progress=False, description="evaluating"
    )
    metrics = score_targets(
        model.task, model.labels, true_targets, answers, scores, model.head.get("thresholds")
    )
    if predictions_path is not None:
        if model.task == "regression":
            table = regression_table(texts, true_targets, answers, pairs)
        else:
            table = multi_label_table(texts, true_targets, answers, scores, model.labels, pairs)
        write_table(table, predictions_path)
    return metrics
