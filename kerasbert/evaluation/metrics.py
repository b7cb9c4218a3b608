"""Classification metrics from true class ids and predicted probabilities.

Pure numpy (and scikit-learn for ROC-AUC): no TensorFlow, so the baseline,
the evaluation of a SavedModel and the report all score predictions the same
way. Every function takes integer class ids `y_true` of shape `[N]` and
probabilities of shape `[N, num_classes]` whose columns are the classes in
label-list order.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_NUM_BINS = 15
# log(0) is undefined: a probability of exactly 0 for the true class counts
# as this much, as in scikit-learn's `log_loss` for float64 inputs.
LOG_LOSS_EPSILON = np.finfo(np.float64).eps


def classification_metrics(y_true, probabilities, labels, num_bins=DEFAULT_NUM_BINS) -> dict:
    """All the metrics kerasbert reports, as one JSON-ready dict.

    Args:
        y_true: int class ids, shape `[N]`.
        probabilities: predicted probabilities, shape `[N, num_classes]`.
        labels: the class names, by class id (`len(labels) == num_classes`).
        num_bins: equal-width confidence bins for the expected calibration
            error.

    Returns:
        `{"num_examples", "accuracy", "macro_f1", "weighted_f1", "roc_auc",
        "log_loss", "ece", "ece_bins", "per_class", "labels",
        "confusion_matrix"}`. `per_class` maps each label to its
        `precision`, `recall`, `f1` and `support`; `confusion_matrix[i][j]`
        counts examples of true class `i` predicted as class `j`. `roc_auc`
        is None when it is undefined (a single class present).

    Raises:
        ValueError: mismatched shapes, an empty set, or class ids out of range.

    Example:

    >>> m = classification_metrics([0, 1], [[0.9, 0.1], [0.2, 0.8]], ["neg", "pos"])
    >>> m["accuracy"], m["confusion_matrix"]
    (1.0, [[1, 0], [0, 1]])
    """
    y_true, probabilities = check_predictions(y_true, probabilities, num_classes=len(labels))
    y_pred = probabilities.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, len(labels))
    scores = per_class_scores(matrix)
    present = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0
    support = scores["support"]
    return {
        "num_examples": int(len(y_true)),
        "accuracy": float(np.trace(matrix) / matrix.sum()),
        # Like scikit-learn's default: classes neither in the data nor
        # predicted are left out of the average rather than counted as 0.
        "macro_f1": float(scores["f1"][present].mean()),
        "weighted_f1": float((scores["f1"] * support).sum() / support.sum()),
        "roc_auc": roc_auc(y_true, probabilities),
        "log_loss": log_loss(y_true, probabilities),
        "ece": expected_calibration_error(y_true, probabilities, num_bins),
        "ece_bins": int(num_bins),
        "per_class": {
            str(label): {
                "precision": float(scores["precision"][i]),
                "recall": float(scores["recall"][i]),
                "f1": float(scores["f1"][i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "labels": [str(label) for label in labels],
        "confusion_matrix": matrix.tolist(),
    }


def check_predictions(y_true, probabilities, num_classes=None):
    """Validated `(int64 [N], float64 [N, C])` arrays.

    Raises:
        ValueError: wrong shapes, no examples, or ids outside `[0, C)`.
    """
    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2:
        raise ValueError(
            f"Invalid value for argument `probabilities`. Expected shape [N, num_classes]. "
            f"Received: probabilities.shape={probabilities.shape}"
        )
    if y_true.ndim != 1 or len(y_true) != len(probabilities):
        raise ValueError(
            f"Invalid value for argument `y_true`. Expected shape [{len(probabilities)}] to match "
            f"probabilities. Received: y_true.shape={y_true.shape}"
        )
    if len(y_true) == 0:
        raise ValueError(
            "Invalid value for argument `y_true`. Expected at least one example. Received: 0"
        )
    if num_classes is not None and probabilities.shape[1] != num_classes:
        raise ValueError(
            f"Invalid value for argument `probabilities`. Expected {num_classes} columns, one per "
            f"label. Received: {probabilities.shape[1]}"
        )
    if not np.issubdtype(y_true.dtype, np.integer):
        raise TypeError(f"`y_true` must hold int class ids. Received dtype {y_true.dtype}")
    out_of_range = (y_true < 0) | (y_true >= probabilities.shape[1])
    if out_of_range.any():
        raise ValueError(
            f"Invalid value for argument `y_true`. Expected class ids in [0, {probabilities.shape[1]}). "
            f"Received: {sorted(set(y_true[out_of_range].tolist()))[:10]}"
        )
    return y_true.astype(np.int64), probabilities


def confusion_matrix(y_true, y_pred, num_classes) -> np.ndarray:
    """Counts `[num_classes, num_classes]`: row = true class, column = predicted."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def per_class_scores(matrix) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix.

    An undefined ratio (no predictions of a class, no examples of it) is 0,
    scikit-learn's `zero_division=0`.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    true_positives = np.diag(matrix)
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    precision = _divide(true_positives, predicted)
    recall = _divide(true_positives, support)
    f1 = _divide(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def _divide(numerator, denominator):
    out = np.zeros_like(numerator, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def roc_auc(y_true, probabilities) -> float | None:
    """ROC-AUC: binary, or the macro average of one-vs-rest AUCs.

    With two classes this is the AUC of class 1's probability. With more,
    each class present in `y_true` (and not the only one present) is scored
    one-vs-rest and the AUCs averaged; classes absent from the data have no
    positives, so their AUC is undefined and they are left out.

    Returns:
        The AUC, or None when fewer than two classes occur in `y_true`.
    """
    from sklearn.metrics import roc_auc_score

    y_true, probabilities = check_predictions(y_true, probabilities)
    present = np.unique(y_true)
    if len(present) < 2:
        return None
    if probabilities.shape[1] == 2:
        return float(roc_auc_score(y_true == 1, probabilities[:, 1]))
    scores = [roc_auc_score(y_true == c, probabilities[:, c]) for c in present]
    return float(np.mean(scores))


def log_loss(y_true, probabilities) -> float:
    """Mean negative log probability of the true class (natural log).

    Probabilities are used as given (not renormalized); a probability below
    `LOG_LOSS_EPSILON` counts as `LOG_LOSS_EPSILON`.
    """
    y_true, probabilities = check_predictions(y_true, probabilities)
    true_class = probabilities[np.arange(len(y_true)), y_true]
    return float(-np.log(np.clip(true_class, LOG_LOSS_EPSILON, 1.0)).mean())


def calibration_bins(y_true, probabilities, num_bins=DEFAULT_NUM_BINS) -> dict[str, np.ndarray]:
    """Counts, mean confidence and accuracy per equal-width confidence bin.

    The confidence of a prediction is its largest probability. Bin `m`
    (0-based) holds confidences in `(m / M, (m + 1) / M]`, and the first bin
    also holds 0, as in Guo et al. (2017).

    Returns:
        `{"edges" [M + 1], "count" [M], "confidence" [M], "accuracy" [M]}`;
        the mean confidence and accuracy of an empty bin are NaN.

    Raises:
        ValueError: `num_bins` is not a positive int.
    """
    if not isinstance(num_bins, (int, np.integer)) or isinstance(num_bins, bool) or num_bins < 1:
        raise ValueError(
            f"Invalid value for argument `num_bins`. Expected a positive int. Received: num_bins={num_bins!r}"
        )
    y_true, probabilities = check_predictions(y_true, probabilities)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    # right=True: a confidence equal to an inner edge belongs to the lower bin.
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, num_bins - 1)
    count = np.bincount(index, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=num_bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=num_bins) / count
    return {"edges": edges, "count": count, "confidence": mean_confidence, "accuracy": accuracy}


def expected_calibration_error(y_true, probabilities, num_bins=DEFAULT_NUM_BINS) -> float:
    """Expected calibration error over equal-width confidence bins.

    `ECE = sum_m |B_m| / N * |accuracy(B_m) - confidence(B_m)|`, where `B_m`
    are the predictions whose confidence (largest probability) falls in bin
    `m` of `calibration_bins`. 0 is perfectly calibrated.

    Args:
        y_true: int class ids `[N]`.
        probabilities: `[N, num_classes]`.
        num_bins: the number of equal-width bins on `[0, 1]` (default 15,
            as in Guo et al.).

    Example:

    >>> round(expected_calibration_error([0, 1], [[0.9, 0.1], [0.7, 0.3]], 10), 6)
    0.4

    Reference:
        Guo et al., On Calibration of Modern Neural Networks, 2017
        (arXiv:1706.04599).
    """
    bins = calibration_bins(y_true, probabilities, num_bins)
    count = bins["count"]
    filled = count > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float((count[filled] * gaps).sum() / count.sum())


def is_number(value) -> bool:
    """True for a finite int or float (not a bool): what tables can format."""
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )
