"""Temperature scaling: the fit, the head that carries it, the export that applies it, the run.

The fits are checked against closed forms and brute force; the export
against its Keras model; the session's `trained_run` (calibrated, as every
classification run is by default) against its own uncalibrated model.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the ops of loaded exports)
from scipy.special import softmax

from kerasbert.config_loading import ConfigError, config_from_dict
from kerasbert.exporting.heads import Head
from kerasbert.training.calibration import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    binary_log_loss,
    calibration_report,
    describe_calibration,
    fit_label_temperatures,
    fit_temperature,
    scaled_probabilities,
    softmax_log_loss,
)
from tests.support.tiny import tiny_config_dict

# === Fitting ===


def equal_margins(num_classes, margin, right, wrong):
    """Logits `margin` on one class, 0 elsewhere: `right` examples of that class, `wrong` not."""
    logits = np.zeros((right + wrong, num_classes))
    logits[:, 0] = margin
    labels = np.array([0] * right + [1] * wrong)
    return logits, labels


@pytest.mark.parametrize(
    "num_classes, margin, right, wrong", [(2, 4.0, 3, 1), (4, 6.0, 9, 1), (3, 1.0, 19, 1)]
)
def test_fit_temperature_matches_the_closed_form_of_equal_margins(
    num_classes, margin, right, wrong
):
    # With one margin m everywhere and accuracy a, the log loss is least where
    # exp(m / T) = a (K - 1) / (1 - a).
    logits, labels = equal_margins(num_classes, margin, right, wrong)
    accuracy = right / (right + wrong)
    expected = margin / np.log(accuracy * (num_classes - 1) / (1 - accuracy))
    assert fit_temperature(logits, labels) == pytest.approx(expected, rel=1e-5)


def test_fit_temperature_is_the_brute_force_minimum_and_recovers_the_true_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=4.0, size=(20000, 5))
    # Labels drawn from softmax(logits / 2.5): the model is overconfident by 2.5.
    probabilities = softmax(logits / 2.5, axis=1)
    labels = (probabilities.cumsum(axis=1) > rng.random((20000, 1))).argmax(axis=1)
    fitted = fit_temperature(logits, labels)
    grid = np.geomspace(MIN_TEMPERATURE, MAX_TEMPERATURE, 2001)
    losses = [softmax_log_loss(logits, labels, t) for t in grid]
    assert softmax_log_loss(logits, labels, fitted) <= min(losses) + 1e-9
    assert fitted == pytest.approx(grid[int(np.argmin(losses))], rel=5e-3)
    assert fitted == pytest.approx(2.5, rel=0.03)


@pytest.mark.parametrize("seed", range(4))
def test_the_fitted_log_loss_is_never_above_the_trained_one_and_decisions_stay(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=rng.uniform(0.1, 8), size=(200, 3))
    labels = rng.integers(0, 3, size=200)
    temperature = fit_temperature(logits, labels)
    assert MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE
    assert softmax_log_loss(logits, labels, temperature) <= softmax_log_loss(logits, labels)
    np.testing.assert_array_equal(
        scaled_probabilities(logits, temperature).argmax(axis=1), logits.argmax(axis=1)
    )


def test_logits_that_carry_no_confidence_keep_the_temperature_of_one():
    # Every temperature gives the same log loss: nothing to gain, so T stays 1.
    assert fit_temperature(np.zeros((6, 3)), [0, 1, 2, 0, 1, 2]) == 1.0


def test_label_temperatures_are_each_labels_own_binary_fit():
    # sigmoid(m / T) = a: label 0 has margin 4 and 8 of 10 right, label 1 margin 2 and 9 of 10.
    logits = np.tile([4.0, 2.0], (10, 1))
    targets = np.ones((10, 2), dtype=int)
    targets[[1, 5], 0] = 0
    targets[7, 1] = 0
    temperatures = fit_label_temperatures(logits, targets)
    assert temperatures == pytest.approx([4 / np.log(4), 2 / np.log(9)], rel=1e-5)
    for j, temperature in enumerate(temperatures):
        assert binary_log_loss(logits[:, j], targets[:, j], temperature) <= binary_log_loss(
            logits[:, j], targets[:, j]
        )
    probabilities = scaled_probabilities(logits, temperatures, multi_label=True)
    np.testing.assert_allclose(probabilities[0], [0.8, 0.9])


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: fit_temperature(np.zeros((0, 2)), []),
            r"Expected shape \[N, classes\] with N > 0",
        ),
        (lambda: fit_temperature(np.zeros((3, 2)), [0, 1]), r"Expected shape \[3\] to match"),
        (lambda: fit_temperature(np.zeros((2, 2)), [0, 2]), r"class ids in \[0, 2\)"),
        (lambda: fit_label_temperatures(np.zeros((2, 2)), [[0, 1], [2, 0]]), r"0/1 multi-hot"),
    ],
    ids=["empty", "lengths", "class id", "targets"],
)
def test_bad_inputs_are_refused_with_what_was_expected(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_the_report_scores_each_split_before_and_after():
    logits, labels = equal_margins(2, 4.0, 3, 1)
    temperature = fit_temperature(logits, labels)
    report = calibration_report({"validation": (logits, labels)}, temperature)
    values = report["splits"]["validation"]
    # Every prediction is 0.982 sure and 75% right; at T = 4 / ln 3, 75% sure.
    assert values["ece_before"] == pytest.approx(1 / (1 + np.exp(-4)) - 0.75)
    assert values["ece_after"] == pytest.approx(0.0, abs=1e-6)
    assert values["log_loss_before"] == pytest.approx(softmax_log_loss(logits, labels))
    assert values["log_loss_after"] < values["log_loss_before"]
    assert sum(values["bins_after"]["count"]) == 4 and None in values["bins_after"]["accuracy"]
    json.dumps(report)  # what calibration.json holds
    assert describe_calibration(report).startswith(f"temperature {temperature:.3f} fitted")


# === The head ===


def test_head_round_trips_its_temperature_and_reads_heads_saved_without_one():
    for head in (
        Head(temperature=1.7),
        Head("multi_label", thresholds=[0.5, 0.3], temperature=[1.5, 0.8]),
    ):
        assert Head.from_dict(json.loads(json.dumps(head.to_dict()))) == head
    assert Head.from_dict({"task": "classification"}).temperature == 1.0
    assert Head.from_dict({"task": "multi_label", "thresholds": [0.5]}).temperatures(1) == [1.0]
    assert "temperature" not in Head("regression").to_dict()


@pytest.mark.parametrize(
    "values, match",
    [
        ({"temperature": 0.0}, "Expected finite values > 0"),
        ({"temperature": float("nan")}, "Expected finite values > 0"),
        ({"temperature": [1.0, 2.0]}, "Expected one number for a classification head"),
        ({"task": "regression", "temperature": 2.0}, "no probabilities to calibrate"),
    ],
)
def test_head_refuses_temperatures_it_cannot_apply(values, match):
    with pytest.raises(ValueError, match=match):
        Head(**values)


def test_a_multi_label_head_needs_a_temperature_per_label():
    head = Head("multi_label", thresholds=[0.5, 0.5], temperature=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="one temperature per label: 3 temperatures for 2 labels"):
        head.check_labels(["a", "b"])


# === The config ===


def test_calibration_defaults_to_temperature_except_for_regression(tmp_path):
    raw = tiny_config_dict("x.csv", tmp_path)
    config = config_from_dict(raw)
    assert config.training.calibration is None and config.calibration == "temperature"
    raw["training"]["calibration"] = "none"
    assert config_from_dict(raw).calibration == "none"
    raw["training"]["calibration"] = "platt"
    with pytest.raises(ConfigError, match=r"training\.calibration: .*received 'platt'"):
        config_from_dict(raw)
    raw["model"]["task"] = "regression"
    raw["training"]["calibration"] = None
    assert config_from_dict(raw).calibration == "none"
    raw["training"]["calibration"] = "temperature"
    with pytest.raises(ConfigError, match=r"training\.calibration temperature .* regression"):
        config_from_dict(raw)


# === The export ===


LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def raw_logits(trained_run):
    """`(texts, logits)` of the run's Keras model, uncalibrated, on its test texts and odd ones."""
    import keras
    import pandas as pd

    from kerasbert.models.tokenizers import TextEncoder, load_tokenizer

    run_dir = trained_run.run_dir
    predictions = pd.read_csv(run_dir / "test_predictions.csv", keep_default_na=False)
    texts = [*predictions["text"], "", "naïve café 🎬"]
    classifier = keras.saving.load_model(run_dir / "model.keras", compile=False)
    encoder = TextEncoder(load_tokenizer(run_dir / "tokenizer"), 16)
    return texts, classifier.predict(encoder(tf.constant(texts)), verbose=0)


def test_the_export_divides_the_logits_by_its_temperature_in_the_graph(trained_run, raw_logits):
    from kerasbert.serving.saved_model_bundle import SavedModelBundle

    texts, raw = raw_logits
    head = json.loads((trained_run.export_dir / "assets" / "head.json").read_text())
    temperature = head["temperature"]
    assert head == {"task": "classification", "temperature": temperature} and temperature != 1.0
    bundle = SavedModelBundle(trained_run.export_dir)  # as TF Serving loads it
    try:
        out = bundle.run("serving_default", {"text": np.array(texts, dtype=object)})
    finally:
        bundle.close()
    np.testing.assert_allclose(out["logits"], raw / temperature, atol=1e-5)
    np.testing.assert_allclose(out["probabilities"], softmax(raw / temperature, axis=1), atol=1e-5)
    np.testing.assert_array_equal(out["label_id"], raw.argmax(axis=1))


# === The run ===


def test_a_run_fits_a_temperature_that_lowers_validation_log_loss_and_keeps_every_label(
    trained_run, raw_logits
):
    import pandas as pd

    run_dir = trained_run.run_dir
    calibration = json.loads((run_dir / "calibration.json").read_text())
    assert json.loads((run_dir / "labels.json").read_text())["head"] == {
        "task": "classification",
        "temperature": calibration["temperature"],
    }
    assert set(calibration["splits"]) == {"validation", "test"}
    validation = calibration["splits"]["validation"]
    assert validation["log_loss_after"] <= validation["log_loss_before"]
    # The export's own validation log loss, against the model as trained.
    assert trained_run.metrics["validation"]["log_loss"] <= validation["log_loss_before"] + 1e-5
    # Its decisions on every test text are the uncalibrated model's.
    predictions = pd.read_csv(run_dir / "test_predictions.csv", keep_default_na=False)
    _, raw = raw_logits
    expected = [LABELS[i] for i in raw[: len(predictions)].argmax(axis=1)]
    assert predictions["predicted_label"].tolist() == expected


def test_the_report_shows_calibration_before_and_after(trained_run):
    from kerasbert.evaluation.report import write_report

    html = write_report(trained_run.run_dir).read_text()
    assert "<h2>Calibration</h2>" in html and "fitted on the validation split" in html
    assert "log_loss_before" in html and "ece_after" in html
    assert (trained_run.run_dir / "plots" / "calibration.png").stat().st_size > 0


def test_calibration_none_exports_the_probabilities_as_trained(reviews_csv, tmp_path):
    from kerasbert.training.run import train

    raw = tiny_config_dict(reviews_csv, tmp_path, export={"enabled": False})
    raw["training"]["calibration"] = "none"
    result = train(config_from_dict(raw))
    assert json.loads((result.run_dir / "labels.json").read_text())["head"]["temperature"] == 1.0
    assert not (result.run_dir / "calibration.json").exists()
