"""Multi-label and regression metrics, threshold tuning, target scaling, label sets and the loss."""

import math

import numpy as np
import pandas as pd
import pytest

from kerasbert.data.tables import DataError
from kerasbert.data.targets import (
    TargetScaling,
    indicator_label_sets,
    multi_hot,
    numeric_targets,
    split_label_cells,
)
from kerasbert.evaluation.target_metrics import (
    multi_label_metrics,
    regression_metrics,
    tune_thresholds,
)

# === Thresholds ===


def test_tuned_threshold_sits_halfway_below_the_lowest_score_that_gives_the_best_f1():
    assert tune_thresholds([[1], [0], [1]], [[0.3], [0.1], [0.4]]) == [pytest.approx(0.2)]


def test_tuned_threshold_never_goes_below_the_floor():
    # Best F1 calls both positives on (threshold 0.05); the floor raises it to 0.25.
    assert tune_thresholds([[1], [1], [0]], [[0.1], [0.2], [0.0]], floor=0.25) == [0.25]


def test_a_label_never_on_in_validation_keeps_one_half():
    assert tune_thresholds([[0, 1], [0, 0]], [[0.9, 0.4], [0.7, 0.1]]) == [0.5, pytest.approx(0.25)]


def test_of_equally_good_thresholds_the_one_nearest_one_half_is_kept():
    # Both 0.25 and 0.5 separate the examples perfectly.
    assert tune_thresholds([[1], [0]], [[0.9], [0.2]]) == [0.5]


# === Multi-label metrics ===


def test_multi_label_metrics_match_their_formulas():
    y_true = [[1, 0], [1, 1], [0, 0], [0, 1]]
    probabilities = [[0.9, 0.2], [0.6, 0.4], [0.7, 0.1], [0.2, 0.8]]
    metrics = multi_label_metrics(y_true, probabilities, ["a", "b"], thresholds=[0.5, 0.3])
    # a: on for rows 0, 1, 2 (tp 2, fp 1); b: on for rows 1, 3 (tp 2).
    a, b = metrics["per_label"]["a"], metrics["per_label"]["b"]
    assert (a["precision"], a["recall"], a["f1"]) == pytest.approx((2 / 3, 1.0, 0.8))
    assert (b["precision"], b["recall"], b["f1"]) == pytest.approx((1.0, 1.0, 1.0))
    assert metrics["micro_f1"] == pytest.approx(2 * 0.8 * 1.0 / 1.8)
    assert metrics["macro_f1"] == pytest.approx(0.9)
    assert metrics["subset_accuracy"] == pytest.approx(0.75)
    assert metrics["hamming_loss"] == pytest.approx(1 / 8)
    assert a["roc_auc"] == pytest.approx(0.75) and b["roc_auc"] == pytest.approx(1.0)
    assert metrics["roc_auc"] == pytest.approx(0.875)
    assert (a["support"], a["threshold"]) == (2, 0.5)


def test_roc_auc_of_a_label_with_one_value_only_is_none():
    metrics = multi_label_metrics([[1, 0], [1, 1]], [[0.9, 0.2], [0.6, 0.4]], ["a", "b"])
    assert metrics["per_label"]["a"]["roc_auc"] is None
    assert metrics["roc_auc"] == pytest.approx(1.0)


# === Regression metrics ===


def test_regression_metrics_match_their_formulas():
    metrics = regression_metrics([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 3.0, 3.0])
    assert metrics["mae"] == pytest.approx(0.5)
    assert metrics["rmse"] == pytest.approx(math.sqrt(0.5))
    assert metrics["r2"] == pytest.approx(1 - 2 / 5)
    assert metrics["spearman"] == pytest.approx(
        np.corrcoef([1, 2, 3, 4], [1.5, 1.5, 3.5, 3.5])[0, 1]
    )


def test_r2_and_spearman_of_a_constant_target_are_none():
    metrics = regression_metrics([2.0, 2.0], [1.0, 3.0])
    assert metrics["r2"] is None and metrics["spearman"] is None


# === Target scaling ===


def test_log1p_scaling_standardises_and_inverts_to_the_original_unit():
    amounts = np.array([0.0, 9.0, 99.0, 999.0])
    scaling = TargetScaling.fit(amounts, "log1p")
    scaled = scaling.scale(amounts)
    assert scaled.shape == (4, 1)
    assert scaled.mean() == pytest.approx(0, abs=1e-6) and scaled.std() == pytest.approx(1)
    assert scaling.mean == pytest.approx(np.log([1, 10, 100, 1000]).mean())
    np.testing.assert_allclose(scaling.inverse(scaled), amounts, rtol=1e-5, atol=1e-4)


def test_a_constant_target_scales_by_one():
    assert TargetScaling.fit([5.0, 5.0]).std == 1.0


@pytest.mark.parametrize(
    "values, transform, message",
    [
        (["1", "x"], "none", "must be a number"),
        ([1.0, -math.inf], "none", "must be finite"),
        ([1.0, -0.5], "log1p", "needs targets of 0 or more"),
    ],
)
def test_bad_numeric_targets_are_refused(values, transform, message):
    with pytest.raises(DataError, match=message):
        numeric_targets(pd.Series(values), "data.csv", transform)


# === Label sets ===


def test_delimited_cells_become_label_sets_and_an_empty_cell_none():
    sets = split_label_cells(pd.Series(["b| a", "", None, "a|a"]), "|", "data.csv")
    assert sets.tolist() == [("b", "a"), (), (), ("a",)]
    np.testing.assert_array_equal(multi_hot(sets, ["a", "b"]), [[1, 1], [0, 0], [0, 0], [1, 0]])


def test_indicator_columns_become_label_sets():
    frame = pd.DataFrame({"x": [1, 0, "true"], "y": [1, 0, "false"]})
    assert indicator_label_sets(frame, ["x", "y"], "f").tolist() == [("x", "y"), (), ("x",)]


def test_an_indicator_column_with_another_value_is_refused():
    with pytest.raises(DataError, match="'y' must hold 0 or 1"):
        indicator_label_sets(pd.DataFrame({"x": [1, 0], "y": [2, 0]}), ["x", "y"], "f")


# === Loss ===


def test_weighted_binary_crossentropy_weighs_positives_of_each_label():
    from kerasbert.training.losses import WeightedBinaryCrossentropy

    logits, labels = np.array([[0.5, -1.0]]), np.array([[1.0, 1.0]])
    loss_object = WeightedBinaryCrossentropy([1.0, 3.0])
    loss = loss_object(labels, logits)
    softplus = np.log1p(np.exp(-logits[0]))  # -log(sigmoid(x))
    assert float(loss) == pytest.approx((softplus[0] + 3 * softplus[1]) / 2, rel=1e-5)
    restored = WeightedBinaryCrossentropy.from_config(loss_object.get_config())
    assert restored.pos_weight == [1.0, 3.0]


def test_weighted_binary_crossentropy_refuses_a_weight_that_is_not_positive():
    from kerasbert.training.losses import WeightedBinaryCrossentropy

    with pytest.raises(ValueError, match="Invalid value for argument `pos_weight`"):
        WeightedBinaryCrossentropy([1.0, 0.0])


# === Splits of label sets ===


def _data_config(path, **values):
    from kerasbert.config import DataConfig

    return DataConfig(path=str(path), split={"validation": 0.25, "test": 0.25}, **values)


def test_label_columns_give_label_sets_in_column_order_and_count_texts_without_labels(tmp_path):
    from kerasbert.data.splits import load_splits

    rows = [{"text": f"text {i}", "z": i % 2, "a": int(i % 3 == 0)} for i in range(40)]
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    splits = load_splits(_data_config(tmp_path / "d.csv", label_columns=["z", "a"]), "multi_label")
    assert splits.labels == ["z", "a"]
    assert sum(splits.unlabelled.values()) == sum(1 for i in range(40) if i % 2 == 0 and i % 3)
    ids = splits.label_ids("train")
    assert ids.dtype == np.float32 and ids.shape == (len(splits.train), 2)


def test_a_label_column_never_on_in_training_is_refused(tmp_path):
    from kerasbert.data.splits import load_splits

    rows = [{"text": f"text {i}", "z": i % 2, "a": 0} for i in range(40)]
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"label\(s\) \['a'\] are never given in the training"):
        load_splits(_data_config(tmp_path / "d.csv", label_columns=["z", "a"]), "multi_label")


def test_multi_label_metrics_score_the_decisions_given_rather_than_the_thresholds():
    metrics = multi_label_metrics(
        [[1, 0]], [[0.2, 0.9]], ["a", "b"], thresholds=[0.5, 0.5], decisions=[[1, 0]]
    )
    assert metrics["subset_accuracy"] == 1.0 and metrics["micro_f1"] == 1.0
