"""Metrics of multi-label and regression models, and per-label decision thresholds.

The counterparts of `kerasbert.evaluation.metrics.classification_metrics`
for `model.task: multi_label` and `model.task: regression`: plain NumPy
(and scikit-learn's ROC-AUC), JSON-ready, numbers as Python floats.
"""

from __future__ import annotations

import numpy as np

DEFAULT_THRESHOLD = 0.5


# === Multi-label ===


def f1_scores(y_true, decisions):
    """Per-label `(precision, recall, f1, support)` arrays of 0/1 matrices `[N, labels]`.

    A ratio with nothing to divide by is 0, as scikit-learn's `zero_division=0`.
    """
    y_true = np.asarray(y_true, dtype=bool)
    decisions = np.asarray(decisions, dtype=bool)
    tp = (y_true & decisions).sum(axis=0).astype("float64")
    predicted = decisions.sum(axis=0).astype("float64")
    support = y_true.sum(axis=0).astype("float64")
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(tp), where=total > 0)
    return precision, recall, f1, support


def tune_thresholds(y_true, probabilities, floor=0.05) -> list[float]:
    """Each label's decision threshold with the best F1 on held-out data, raised to `floor`.

    The candidates are the label's own probabilities (deciding "on" at or
    above one) and `DEFAULT_THRESHOLD`; of equally good thresholds, the one
    nearest `DEFAULT_THRESHOLD` is kept, and a label never given on the
    held-out data keeps `DEFAULT_THRESHOLD`. A threshold sits halfway between
    the probability it was tuned at and the next lower one, so the decision
    is not balanced on one example's score.

    Args:
        y_true: `[N, labels]` 0/1.
        probabilities: `[N, labels]` sigmoid outputs.
        floor: the lowest threshold allowed, in `[0, 1)`.

    Returns:
        One threshold per label.

    Example:
    >>> tune_thresholds([[1], [0], [1]], [[0.3], [0.1], [0.4]])
    [0.2]
    """
    y_true = np.asarray(y_true, dtype=bool)
    probabilities = np.asarray(probabilities, dtype="float64")
    if not 0 <= floor < 1:
        raise ValueError(f"Invalid value for argument `floor`. Expected [0, 1). Received: {floor}")
    thresholds = []
    for j in range(y_true.shape[1]):
        truth, scores = y_true[:, j], probabilities[:, j]
        if not truth.any():
            thresholds.append(DEFAULT_THRESHOLD)
            continue
        distinct = np.unique(scores)
        # Halfway below each distinct score, so that score and those above are "on".
        lower = np.concatenate([[0.0], distinct[:-1]])
        candidates = np.concatenate([(distinct + lower) / 2, [DEFAULT_THRESHOLD]])
        best, best_threshold = -1.0, DEFAULT_THRESHOLD
        for threshold in candidates:
            f1 = f1_scores(truth[:, None], (scores >= threshold)[:, None])[2][0]
            closer = abs(threshold - DEFAULT_THRESHOLD) < abs(best_threshold - DEFAULT_THRESHOLD)
            if f1 > best + 1e-12 or (abs(f1 - best) <= 1e-12 and closer):
                best, best_threshold = f1, float(threshold)
        # The floor bounds the tuned value: a label tuned very low would be
        # called on for nearly every text.
        thresholds.append(max(best_threshold, float(floor)))
    return thresholds


def multi_label_metrics(y_true, probabilities, labels, thresholds=None, decisions=None) -> dict:
    """Micro and macro F1, subset accuracy, Hamming loss and per-label scores.

    Args:
        y_true: `[N, labels]` 0/1.
        probabilities: `[N, labels]` sigmoid outputs.
        labels: label names.
        thresholds: one decision threshold per label; 0.5 for each when None.
        decisions: `[N, labels]` 0/1 decisions a model made (an export's
            `labels_on`); `probabilities >= thresholds` when None.

    Returns:
        `{"num_examples", "micro_f1", "macro_f1", "micro_precision",
        "micro_recall", "subset_accuracy", "hamming_loss", "roc_auc" (mean of
        the per-label ones that exist), "per_label": {label: {"precision",
        "recall", "f1", "roc_auc", "support", "threshold"}}, "labels"}`.
    """
    y_true = np.asarray(y_true, dtype=bool)
    probabilities = np.asarray(probabilities, dtype="float64")
    if y_true.shape != probabilities.shape or y_true.ndim != 2:
        raise ValueError(
            f"y_true {y_true.shape} and probabilities {probabilities.shape} must both be "
            "[examples, labels]"
        )
    thresholds = np.asarray(
        [DEFAULT_THRESHOLD] * len(labels) if thresholds is None else thresholds, dtype="float64"
    )
    if decisions is None:
        decisions = probabilities >= thresholds[None, :]
    decisions = np.asarray(decisions, dtype=bool)
    precision, recall, f1, support = f1_scores(y_true, decisions)
    tp = float((y_true & decisions).sum())
    predicted, actual = float(decisions.sum()), float(y_true.sum())
    micro_precision = tp / predicted if predicted else 0.0
    micro_recall = tp / actual if actual else 0.0
    denominator = micro_precision + micro_recall
    aucs = [_roc_auc(y_true[:, j], probabilities[:, j]) for j in range(len(labels))]
    known = [a for a in aucs if a is not None]
    return {
        "num_examples": int(len(y_true)),
        "micro_f1": 2 * micro_precision * micro_recall / denominator if denominator else 0.0,
        "macro_f1": float(f1.mean()),
        "micro_precision": micro_precision,
        "micro_recall": micro_recall,
        "subset_accuracy": float((decisions == y_true).all(axis=1).mean()),
        "hamming_loss": float((decisions != y_true).mean()),
        "roc_auc": float(np.mean(known)) if known else None,
        "per_label": {
            str(label): {
                "precision": float(precision[j]),
                "recall": float(recall[j]),
                "f1": float(f1[j]),
                "roc_auc": aucs[j],
                "support": int(support[j]),
                "threshold": float(thresholds[j]),
            }
            for j, label in enumerate(labels)
        },
        "labels": [str(label) for label in labels],
    }


def _roc_auc(truth, scores):
    """ROC-AUC of one label, or None when the data has only one of its values."""
    if truth.all() or not truth.any():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, scores))


# === Regression ===


def regression_metrics(y_true, y_pred) -> dict:
    """MAE, RMSE, R² and Spearman's rank correlation, in the target's own unit.

    Returns:
        `{"num_examples", "mae", "rmse", "r2", "spearman"}`; `r2` and
        `spearman` are None when the true values (or, for `spearman`, the
        predictions) are all equal.
    """
    y_true = np.asarray(y_true, dtype="float64").reshape(-1)
    y_pred = np.asarray(y_pred, dtype="float64").reshape(-1)
    if y_true.shape != y_pred.shape or not len(y_true):
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must match, not empty")
    errors = y_pred - y_true
    variance = float(((y_true - y_true.mean()) ** 2).sum())
    spearman = None
    if np.ptp(y_true) > 0 and np.ptp(y_pred) > 0:
        from scipy.stats import spearmanr

        spearman = float(spearmanr(y_true, y_pred).statistic)
    return {
        "num_examples": int(len(y_true)),
        "mae": float(np.abs(errors).mean()),
        "rmse": float(np.sqrt((errors**2).mean())),
        "r2": 1 - float((errors**2).sum()) / variance if variance else None,
        "spearman": spearman,
    }
