"""Evaluating an exported SavedModel: metrics, files written, bad input."""

import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  the exported tokenizer's ops
from sklearn import metrics as sk

from kerasbert import evaluate
from kerasbert.config_loading import load_config
from kerasbert.data.splits import load_splits
from kerasbert.evaluation.saved_model_classifier import SavedModelClassifier
from kerasbert.evaluation.scoring import evaluate_saved_model, format_metrics, load_labelled
from tests.support.tiny import QUICKSTART_CSV

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def labelled_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("evaluate") / "labelled.csv"
    pd.read_csv(QUICKSTART_CSV).iloc[::4].to_csv(path, index=False)  # 90 rows
    return path


@pytest.fixture(scope="module")
def model(exported_model):
    return SavedModelClassifier(exported_model)


def signature_probabilities(exported_model, texts):
    """The export's own signature, loaded independently of kerasbert."""
    loaded = tf.saved_model.load(str(exported_model))
    return loaded.signatures["serving_default"](text=tf.constant(texts))["probabilities"].numpy()


def test_cli_metrics_match_scikit_learn_on_the_signature_outputs(
    exported_model, labelled_csv, tmp_path, capsys
):
    output = tmp_path / "eval"

    status = evaluate.main(
        [
            "--model",
            str(exported_model),
            "--data",
            str(labelled_csv),
            "--output",
            str(output),
            "--no-progress",
        ]
    )

    stdout = capsys.readouterr().out
    assert status == 0
    m = json.loads((output / "metrics.json").read_text())
    frame = pd.read_csv(labelled_csv)
    y_true = frame["label"].map(LABELS.index).to_numpy()
    probabilities = signature_probabilities(exported_model, frame["text"].tolist())
    y_pred = probabilities.argmax(axis=1)
    assert m["num_examples"] == 90
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="weighted"))
    assert m["confusion_matrix"] == sk.confusion_matrix(y_true, y_pred, labels=[0, 1, 2]).tolist()
    assert m["log_loss"] == pytest.approx(
        sk.log_loss(y_true, probabilities, labels=[0, 1, 2]), rel=1e-5
    )
    assert m["roc_auc"] == pytest.approx(
        sk.roc_auc_score(y_true, probabilities, multi_class="ovr"), rel=1e-5
    )
    recall = sk.recall_score(y_true, y_pred, average=None, labels=[0, 1, 2])
    assert [m["per_class"][label]["recall"] for label in LABELS] == pytest.approx(recall)
    assert m["model"] == str(exported_model) and m["dropped_rows"] == 0
    assert (
        "accuracy" in stdout and "confusion matrix" in stdout and f"{m['accuracy']:.4f}" in stdout
    )
    predictions = pd.read_csv(output / "predictions.csv")
    assert predictions["text"].tolist() == frame["text"].tolist()
    np.testing.assert_allclose(predictions["confidence"], probabilities.max(axis=1), atol=1e-6)


def test_evaluating_the_export_reproduces_the_training_test_metrics(trained_run, model):
    # The SavedModel (tokenizer in the graph) scores the test split as Keras did.
    splits = load_splits(load_config(trained_run.run_dir / "config.yaml").data)

    m = evaluate_saved_model(model, splits.test["text"], splits.test["label"])

    assert m["accuracy"] == pytest.approx(trained_run.metrics["test"]["accuracy"], abs=1e-6)
    # Keras' test loss is the uncalibrated model's; the export divides the
    # logits by the temperature the run fitted, whose log loss the run wrote.
    calibration = json.loads((trained_run.run_dir / "calibration.json").read_text())
    assert m["log_loss"] == pytest.approx(calibration["splits"]["test"]["log_loss_after"], rel=1e-4)


def test_predictions_file_lists_each_example(model, tmp_path):
    texts, labels = ["a superb film", "", "映画"], ["positive", "neutral", "negative"]

    m = evaluate_saved_model(model, texts, labels, predictions_path=tmp_path / "p.csv")

    table = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert table["text"].tolist() == texts and table["label"].tolist() == labels
    assert (table["predicted_label"] == table["label"]).mean() == pytest.approx(m["accuracy"])
    assert {
        "confidence",
        "probability_negative",
        "probability_neutral",
        "probability_positive",
    } <= set(table)


def test_labels_unknown_to_the_model_exit_2_and_write_nothing(exported_model, tmp_path, capsys):
    data = tmp_path / "odd.csv"
    pd.DataFrame(
        {"text": ["fine", "meh", "bad"], "label": ["positive", "sarcastic", "ironic"]}
    ).to_csv(data, index=False)
    output = tmp_path / "eval"

    status = evaluate.main(
        ["--model", str(exported_model), "--data", str(data), "--output", str(output)]
    )

    err = capsys.readouterr().err.strip()
    assert status == 2
    assert "\n" not in err
    assert "2 label(s) not in the model's label list: ['ironic', 'sarcastic']" in err
    assert not output.exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--model": "nowhere"}, "no such SavedModel directory"),
        ({"--data": "nowhere.csv"}, "no such data file"),
        ({"--label-column": "sentiment"}, "missing column(s) ['sentiment']"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    change, message, exported_model, labelled_csv, tmp_path, capsys
):
    args = {
        "--model": str(exported_model),
        "--data": str(labelled_csv),
        "--output": str(tmp_path / "eval"),
    }
    args.update({k: str(tmp_path / v) if k != "--label-column" else v for k, v in change.items()})

    status = evaluate.main([part for item in args.items() for part in item])

    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "eval").exists()


def test_an_existing_metrics_file_is_untouched_when_evaluation_fails(exported_model, tmp_path):
    output = tmp_path / "eval"
    output.mkdir()
    (output / "metrics.json").write_text("{}\n")

    status = evaluate.main(
        [
            "--model",
            str(exported_model),
            "--data",
            str(tmp_path / "missing.csv"),
            "--output",
            str(output),
        ]
    )

    assert status == 2
    assert (output / "metrics.json").read_text() == "{}\n"
    assert sorted(p.name for p in output.iterdir()) == ["metrics.json"]


def test_load_labelled_keeps_empty_texts_and_drops_rows_without_a_label(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"text": "ok", "label": 1.0}\n{"text": null, "label": 2}\n{"text": "no label", "label": null}\n'
    )

    frame, dropped = load_labelled(path)

    assert frame["text"].tolist() == ["ok", ""]
    assert frame["label"].tolist() == ["1", "2"]
    assert dropped == 1


def test_format_metrics_shows_undefined_values_as_na():
    text = format_metrics(
        {"num_examples": 2, "accuracy": 0.5, "roc_auc": None, "ece": 0.25, "ece_bins": 10}
    )

    assert "ROC-AUC        n/a" in text
    assert "ECE (10 bins)  0.2500" in text


def test_load_labelled_bins_a_numeric_target_as_training_did(tmp_path):
    path = tmp_path / "prices.csv"
    pd.DataFrame({"text": ["cheap", "dear"], "label": [3, 12.5]}).to_csv(path, index=False)

    frame, _ = load_labelled(path, bin_edges=[10.0])

    assert frame["label"].tolist() == ["[-inf, 10)", "[10, inf)"]
