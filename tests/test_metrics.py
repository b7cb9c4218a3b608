"""kerasbert.evaluation.metrics against scikit-learn and against values worked out by hand."""

import numpy as np
import pytest
from sklearn import metrics as sk

from kerasbert.evaluation.metrics import (
    calibration_bins,
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    log_loss,
    roc_auc,
)


def random_predictions(n=300, num_classes=4, seed=0, skew=1.5):
    """Noisy but informative probabilities for `num_classes` classes."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, num_classes, size=n)
    logits = rng.normal(size=(n, num_classes))
    logits[np.arange(n), y_true] += skew
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y_true, probabilities


def test_metrics_match_scikit_learn():
    y_true, probabilities = random_predictions()
    labels = ["a", "b", "c", "d"]
    y_pred = probabilities.argmax(axis=1)

    m = classification_metrics(y_true, probabilities, labels)

    assert m["num_examples"] == 300
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="weighted"))
    precision, recall, f1, support = sk.precision_recall_fscore_support(
        y_true, y_pred, labels=[0, 1, 2, 3]
    )
    for i, label in enumerate(labels):
        assert m["per_class"][label]["precision"] == pytest.approx(precision[i])
        assert m["per_class"][label]["recall"] == pytest.approx(recall[i])
        assert m["per_class"][label]["f1"] == pytest.approx(f1[i])
        assert m["per_class"][label]["support"] == support[i]
    assert (
        m["confusion_matrix"] == sk.confusion_matrix(y_true, y_pred, labels=[0, 1, 2, 3]).tolist()
    )
    assert m["log_loss"] == pytest.approx(sk.log_loss(y_true, probabilities, labels=[0, 1, 2, 3]))
    assert m["roc_auc"] == pytest.approx(
        sk.roc_auc_score(
            y_true, probabilities, multi_class="ovr", average="macro", labels=[0, 1, 2, 3]
        )
    )
    assert m["labels"] == labels and m["ece_bins"] == 15


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    # true:      0  0  1  1  1  2
    # predicted: 0  1  1  1  2  0
    y_true = [0, 0, 1, 1, 1, 2]
    probabilities = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.7 + 0.1

    m = classification_metrics(y_true, probabilities, ["x", "y", "z"])

    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 1], [1, 0, 0]]
    assert confusion_matrix(y_true, [0, 1, 1, 1, 2, 0], 3).sum() == 6
    # z: never right, so precision = recall = F1 = 0 rather than NaN.
    assert m["per_class"]["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_class"]["y"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["y"]["recall"] == pytest.approx(2 / 3)


def test_macro_f1_leaves_out_classes_neither_present_nor_predicted():
    y_true, probabilities = random_predictions(num_classes=3, seed=1)
    # A fourth class that never occurs and is never predicted.
    padded = np.hstack([probabilities, np.zeros((len(probabilities), 1))])
    y_pred = probabilities.argmax(axis=1)

    m = classification_metrics(y_true, padded, ["a", "b", "c", "unused"])

    assert m["macro_f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="macro"))
    assert m["per_class"]["unused"]["support"] == 0


def test_binary_roc_auc_scores_the_second_class():
    y_true, probabilities = random_predictions(num_classes=2, seed=2)

    assert roc_auc(y_true, probabilities) == pytest.approx(
        sk.roc_auc_score(y_true, probabilities[:, 1])
    )


def test_roc_auc_averages_only_the_classes_in_the_data():
    y_true, probabilities = random_predictions(num_classes=4, seed=3)
    keep = y_true != 2  # class 2 absent from the data
    y_true, probabilities = y_true[keep], probabilities[keep]
    expected = np.mean([sk.roc_auc_score(y_true == c, probabilities[:, c]) for c in (0, 1, 3)])

    assert roc_auc(y_true, probabilities) == pytest.approx(expected)
    assert classification_metrics(y_true, probabilities, list("abcd"))["roc_auc"] == pytest.approx(
        expected
    )


def test_roc_auc_is_undefined_for_one_class():
    assert roc_auc([1, 1], [[0.2, 0.8], [0.6, 0.4]]) is None


def test_log_loss_matches_hand_value():
    # -(ln 0.8 + ln 0.25) / 2
    expected = -(np.log(0.8) + np.log(0.25)) / 2
    assert log_loss([0, 1], [[0.8, 0.2], [0.75, 0.25]]) == pytest.approx(expected)
    assert np.isfinite(log_loss([1], [[1.0, 0.0]]))


def test_expected_calibration_error_on_a_hand_made_example():
    # Five bins of width 0.2.
    # bin (0.8, 1]:   conf 0.95 right, 0.85 wrong -> accuracy 0.5, confidence 0.90
    # bin (0.6, 0.8]: conf 0.70 right            -> accuracy 1.0, confidence 0.70
    # bin (0.4, 0.6]: conf 0.55 right, 0.55 wrong -> accuracy 0.5, confidence 0.55
    # ECE = 2/5 * 0.40 + 1/5 * 0.30 + 2/5 * 0.05 = 0.16 + 0.06 + 0.02 = 0.24
    y_true = [0, 1, 1, 0, 0]
    probabilities = [[0.95, 0.05], [0.85, 0.15], [0.30, 0.70], [0.55, 0.45], [0.45, 0.55]]

    assert expected_calibration_error(y_true, probabilities, num_bins=5) == pytest.approx(0.24)
    bins = calibration_bins(y_true, probabilities, num_bins=5)
    assert bins["count"].tolist() == [0, 0, 2, 1, 2]
    assert bins["accuracy"][4] == pytest.approx(0.5)
    assert bins["confidence"][4] == pytest.approx(0.9)


def test_calibration_bins_put_an_edge_in_the_lower_bin():
    # Four bins: (0, .25], (.25, .5], (.5, .75], (.75, 1]; 0.5 and 1.0 are edges.
    bins = calibration_bins([0, 0], [[0.5, 0.5], [1.0, 0.0]], num_bins=4)

    assert bins["count"].tolist() == [0, 1, 0, 1]


def test_expected_calibration_error_is_zero_when_confidence_equals_accuracy():
    # Four predictions at confidence 0.75, three of them right.
    y_true = [0, 0, 0, 1]
    probabilities = [[0.75, 0.25]] * 4

    assert expected_calibration_error(y_true, probabilities) == pytest.approx(0.0)


def test_bad_inputs_are_rejected_with_a_message():
    with pytest.raises(ValueError, match="Expected 3 columns"):
        classification_metrics([0], [[0.5, 0.5]], ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"Received: \[5\]"):
        classification_metrics([5], [[0.5, 0.5]], ["a", "b"])
    with pytest.raises(ValueError, match="at least one example"):
        classification_metrics([], np.zeros((0, 2)), ["a", "b"])
    with pytest.raises(ValueError, match="num_bins"):
        expected_calibration_error([0], [[0.6, 0.4]], num_bins=0)
