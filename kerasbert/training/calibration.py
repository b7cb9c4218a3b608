"""Temperature scaling: one temperature (or one per label) fitted on the validation split.

Dividing a classifier's logits by a temperature `T > 0` before the softmax
leaves its decisions alone (the most probable class of `softmax(z / T)` is
that of `z`) but moves its confidence: `T > 1` softens overconfident
probabilities, `T < 1` sharpens underconfident ones. `T` is fitted to
minimise the negative log-likelihood (log loss) of the validation split. A
multi-label model gets one temperature per label, each fitted on that
label's binary log loss; the order of a label's probabilities is kept.

The log loss is convex in `1 / T` (a log-sum-exp of a linear function), so
it has one minimum along `log T`, which a bounded 1-D search finds. `T = 1`,
the model as trained, is kept unless the fitted one scores lower, so the
validation log loss never rises.

Pure numpy and scipy, no TensorFlow.

Reference:
    Guo et al., On Calibration of Modern Neural Networks, 2017
    (arXiv:1706.04599).
"""

from __future__ import annotations

import numpy as np

from kerasbert.evaluation import metrics as metrics_lib

# The search's bounds: a temperature outside them means the logits carry
# no usable confidence (or a validation split too small to tell).
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0


def softmax_log_loss(logits, labels, temperature=1.0) -> float:
    """Mean negative log-likelihood of `softmax(logits / temperature)` for class ids `labels`."""
    from scipy.special import log_softmax

    logits, labels = _check_logits(logits, labels, multi_label=False)
    scaled = log_softmax(logits / temperature, axis=1)
    return float(-scaled[np.arange(len(labels)), labels].mean())


def binary_log_loss(logits, targets, temperature=1.0) -> float:
    """Mean binary negative log-likelihood of `sigmoid(logits / temperature)` for 0/1 `targets`.

    Averaged over every entry: a `[N, labels]` array is `N * labels` binary
    predictions.
    """
    from scipy.special import log_expit

    logits = np.asarray(logits, dtype=np.float64) / temperature
    targets = np.asarray(targets, dtype=np.float64)
    return float(-(targets * log_expit(logits) + (1 - targets) * log_expit(-logits)).mean())


def fit_temperature(logits, labels) -> float:
    """The temperature that minimises the log loss of `softmax(logits / T)`.

    Args:
        logits: `[N, num_classes]`, the model's outputs before the softmax.
        labels: the true class ids, `[N]`.

    Returns:
        `T` in `[MIN_TEMPERATURE, MAX_TEMPERATURE]`; exactly 1.0 when no
        other temperature lowers the log loss.

    Raises:
        ValueError: mismatched shapes, no examples, or ids out of range.

    Example:
    >>> logits = [[4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 0.0]]
    >>> round(fit_temperature(logits, [0, 1, 1, 0]), 4)  # 3 of 4 right: sigmoid(4 / T) = 0.75
    3.641
    """
    logits, labels = _check_logits(logits, labels, multi_label=False)
    return _minimise(lambda t: softmax_log_loss(logits, labels, t))


def fit_label_temperatures(logits, targets) -> list[float]:
    """One temperature per label: each minimises that label's binary log loss.

    Args:
        logits: `[N, labels]`, the model's outputs before the sigmoid.
        targets: 0/1 `[N, labels]` (multi-hot rows).

    Returns:
        A temperature per label, as `fit_temperature` gives it.

    Raises:
        ValueError: mismatched shapes, no examples, or targets other than 0 and 1.
    """
    logits, targets = _check_logits(logits, targets, multi_label=True)
    return [
        _minimise(lambda t, j=j: binary_log_loss(logits[:, j], targets[:, j], t))
        for j in range(logits.shape[1])
    ]


def _minimise(log_loss) -> float:
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(
        lambda log_t: log_loss(np.exp(log_t)),
        bounds=(np.log(MIN_TEMPERATURE), np.log(MAX_TEMPERATURE)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    temperature = float(np.exp(found.x))
    # The model as trained stays unless the fit does better on validation.
    return temperature if log_loss(temperature) < log_loss(1.0) else 1.0


def scaled_probabilities(logits, temperature=1.0, multi_label=False) -> np.ndarray:
    """`softmax(logits / T)`, or `sigmoid(logits / T)` per label, as float64.

    `temperature` is a number, or one per label (a multi-label head's).
    """
    from scipy.special import expit, softmax

    scaled = np.asarray(logits, dtype=np.float64) / np.asarray(temperature, dtype=np.float64)
    return expit(scaled) if multi_label else softmax(scaled, axis=1)


def calibration_scores(y_true, probabilities, multi_label=False, num_bins=None) -> dict:
    """Log loss, expected calibration error and its bins, of probabilities.

    A multi-label model's `[N, labels]` probabilities count as `N * labels`
    binary predictions, each label's probability against whether it is on.

    Args:
        y_true: class ids `[N]`, or 0/1 `[N, labels]` for a multi-label model.
        probabilities: `[N, num_classes]`, or `[N, labels]`.
        multi_label: whether each column is a label of its own.
        num_bins: confidence bins; default `metrics.DEFAULT_NUM_BINS`.

    Returns:
        `{"log_loss", "ece", "bins"}`, `bins` as
        `kerasbert.evaluation.metrics.calibration_bins` gives them, in lists
        (an empty bin's confidence and accuracy as None).
    """
    num_bins = num_bins or metrics_lib.DEFAULT_NUM_BINS
    if multi_label:
        on = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        probabilities = np.stack([1 - on, on], axis=1)
        y_true = np.asarray(y_true).reshape(-1).astype(np.int64)
    bins = metrics_lib.calibration_bins(y_true, probabilities, num_bins)
    return {
        "log_loss": metrics_lib.log_loss(y_true, probabilities),
        "ece": metrics_lib.expected_calibration_error(y_true, probabilities, num_bins),
        "bins": {
            name: [None if np.isnan(v) else float(v) for v in np.asarray(values, dtype=float)]
            for name, values in bins.items()
        },
    }


def _check_logits(logits, labels, multi_label):
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or len(logits) == 0:
        raise ValueError(
            "Invalid value for argument `logits`. Expected shape [N, classes] with N > 0. "
            f"Received: logits.shape={logits.shape}"
        )
    expected = logits.shape if multi_label else logits.shape[:1]
    if labels.shape != expected:
        raise ValueError(
            f"Invalid value for argument `labels`. Expected shape {list(expected)} to match "
            f"logits. Received: labels.shape={labels.shape}"
        )
    if multi_label:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(
                "Invalid value for argument `targets`. Expected 0/1 multi-hot rows. "
                f"Received values {sorted(set(np.unique(labels).tolist()) - {0, 1})[:5]}"
            )
        return logits, labels.astype(np.float64)
    if (
        not np.issubdtype(labels.dtype, np.integer)
        or ((labels < 0) | (labels >= logits.shape[1])).any()
    ):
        raise ValueError(
            f"Invalid value for argument `labels`. Expected class ids in [0, {logits.shape[1]}). "
            f"Received: {labels[:10].tolist()}"
        )
    return logits, labels.astype(np.int64)


def calibration_report(splits, temperature, multi_label=False, num_bins=None) -> dict:
    """Log loss and expected calibration error of each split, before and after scaling.

    Args:
        splits: `{split name: (logits, y_true)}`, `y_true` as
            `calibration_scores` takes it.
        temperature: the fitted temperature, or one per label.
        multi_label: sigmoids per label rather than a softmax.
        num_bins: confidence bins; default `metrics.DEFAULT_NUM_BINS`.

    Returns:
        `{"method": "temperature", "temperature", "num_bins", "splits":
        {split: {"log_loss_before", "log_loss_after", "ece_before",
        "ece_after", "bins_before", "bins_after"}}}`: what `calibration.json`
        holds and the report shows.
    """
    num_bins = num_bins or metrics_lib.DEFAULT_NUM_BINS
    report = {
        "method": "temperature",
        "temperature": temperature,
        "num_bins": num_bins,
        "splits": {},
    }
    for name, (logits, y_true) in splits.items():
        values = {}
        for when, scale in (("before", 1.0), ("after", temperature)):
            probabilities = scaled_probabilities(logits, scale, multi_label)
            scores = calibration_scores(y_true, probabilities, multi_label, num_bins)
            values[f"log_loss_{when}"] = scores["log_loss"]
            values[f"ece_{when}"] = scores["ece"]
            values[f"bins_{when}"] = scores["bins"]
        report["splits"][name] = values
    return report


def describe_calibration(report) -> str:
    """One line of a `calibration_report`, for the log."""
    temperature = report["temperature"]
    if isinstance(temperature, list):
        fitted = "temperatures " + ", ".join(f"{t:.3f}" for t in temperature)
    else:
        fitted = f"temperature {temperature:.3f}"
    parts = [
        f"{name}: log loss {v['log_loss_before']:.4f} -> {v['log_loss_after']:.4f}, "
        f"ECE {v['ece_before']:.4f} -> {v['ece_after']:.4f}"
        for name, v in report["splits"].items()
    ]
    return f"{fitted} fitted on validation; " + "; ".join(parts)
