"""Run reports and run comparisons, checked down to the images a browser shows."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from kerasbert import report
from kerasbert.config_loading import load_config
from kerasbert.data.splits import Splits, load_splits
from kerasbert.evaluation import plots
from kerasbert.evaluation.report import most_confident_mistakes, write_report
from kerasbert.evaluation.runs import (
    load_run,
    stages_from_history,
    summarize_splits,
    write_data_summary,
)
from kerasbert.evaluation.saved_model_classifier import SavedModelClassifier
from kerasbert.evaluation.scoring import evaluate_saved_model
from kerasbert.files import write_json
from kerasbert.rundir import resolve_run_dir
from kerasbert.training.baseline import write_baseline
from tests.support.browser import launch, needs_chromium

ALL_PLOTS = {
    "class_balance",
    "text_lengths",
    "training_curves",
    "learning_rate",
    "lr_find",
    "confusion_matrix",
    "reliability",
    "calibration",
}


def add_training_artefacts(run_dir, export_dir):
    """What `train()` leaves in a run: data summary, baseline, export metrics, test predictions."""
    model = SavedModelClassifier(export_dir)
    splits = load_splits(load_config(run_dir / "config.yaml").data)
    write_data_summary(splits, run_dir)
    write_baseline(splits, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("validation", "test"):
        frame = getattr(splits, split)
        predictions = run_dir / "test_predictions.csv" if split == "test" else None
        metrics[split].update(
            evaluate_saved_model(model, frame["text"], frame["label"], predictions_path=predictions)
        )
    write_json(run_dir / "metrics.json", metrics)


def add_schedule_artefacts(run_dir):
    """The files the one-cycle, unfreezing and LR range test code writes."""
    steps = np.arange(30)
    pd.DataFrame(
        {
            "step": steps,
            "epoch": steps // 10,
            "learning_rate": 1e-3 * np.sin(np.pi * steps / 30) + 1e-5,
            "momentum": 0.95 - 0.1 * np.sin(np.pi * steps / 30),
        }
    ).to_csv(run_dir / "lr_trace.csv", index=False)
    stages = [
        {"stage": 0, "epoch": 0, "epochs": 1, "trainable_layers": 0, "trainable_params": 51},
        {"stage": 1, "epoch": 1, "epochs": 2, "trainable_layers": 2, "trainable_params": 9000},
    ]
    (run_dir / "stages.json").write_text(json.dumps(stages))
    rates = np.geomspace(1e-6, 1, 40)
    loss = 1.1 - 0.5 * np.exp(-((np.log10(rates) + 2) ** 2)) + np.where(rates > 0.1, 2.0, 0)
    pd.DataFrame(
        {"step": range(40), "learning_rate": rates, "loss": loss, "smoothed_loss": loss}
    ).to_csv(run_dir / "lr_find.csv", index=False)
    (run_dir / "lr_find.json").write_text(
        json.dumps({"suggested_maximal_learning_rate": 1e-3, "rule": "minimum / 10"})
    )


@pytest.fixture(scope="module")
def full_run(trained_run, tmp_path_factory):
    """A copy of the trained run with every artefact a report can use."""
    run_dir = tmp_path_factory.mktemp("report") / "tiny" / trained_run.run_dir.name
    shutil.copytree(
        trained_run.run_dir,
        run_dir,
        ignore=shutil.ignore_patterns("tensorboard", "*.keras", "*.h5"),
    )
    add_training_artefacts(run_dir, trained_run.export_dir)
    add_schedule_artefacts(run_dir)
    write_report(run_dir)
    return run_dir


def test_report_and_every_plot_are_written(full_run):
    html = (full_run / "report.html").read_text()

    assert {p.stem for p in (full_run / "plots").glob("*.png")} == ALL_PLOTS
    for png in (full_run / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert html.count("<img ") == len(ALL_PLOTS)
    assert html.count("src='data:image/png;base64,") == len(ALL_PLOTS)
    assert "http://" not in html and "https://" not in html  # self-contained
    for heading in (
        "Metrics",
        "Baseline comparison",
        "Data",
        "Training curves",
        "Learning rate and momentum per step",
        "LR range test",
        "Test set",
        "Calibration",
        "most confident test mistakes",
        "Resolved configuration",
        "Unfreezing stages",
    ):
        assert heading in html, heading
    assert "Suggested maximal learning rate: 1.00e-03" in html
    assert "TF-IDF" in html


@needs_chromium
def test_report_images_all_load_in_headless_chromium(full_run, tmp_path):
    from playwright import sync_api

    screenshot = tmp_path / "report.png"

    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((full_run / "report.html").as_uri())
            widths = page.evaluate(
                "Array.from(document.images).map(img => img.complete ? img.naturalWidth : 0)"
            )
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()

    assert len(widths) == len(ALL_PLOTS)
    assert all(width > 0 for width in widths), widths
    assert screenshot.stat().st_size > 10_000


def test_mistakes_table_lists_the_most_confident_wrong_predictions(full_run):
    predictions = pd.read_csv(full_run / "test_predictions.csv", keep_default_na=False)
    wrong = predictions[predictions["label"] != predictions["predicted_label"]]

    mistakes = most_confident_mistakes(load_run(full_run).test_predictions)

    assert len(mistakes) == min(20, len(wrong)) > 0
    assert mistakes["confidence"].is_monotonic_decreasing
    assert mistakes["confidence"].iloc[0] == pytest.approx(wrong["confidence"].max())
    assert (mistakes["label"] != mistakes["predicted_label"]).all()


def test_most_confident_mistakes_by_hand():
    predictions = pd.DataFrame(
        {
            "text": ["a", "b", "c", "d"],
            "label": ["x", "x", "y", "y"],
            "predicted_label": ["y", "x", "x", "x"],
            "confidence": [0.6, 0.99, 0.9, 0.7],
        }
    )

    mistakes = most_confident_mistakes(predictions, n=2)

    assert mistakes["text"].tolist() == ["c", "d"]


def test_a_run_without_optional_files_still_gets_a_report(trained_run, tmp_path):
    run_dir = tmp_path / "bare"
    run_dir.mkdir()
    for name in ("config.yaml", "history.csv"):
        shutil.copy(trained_run.run_dir / name, run_dir / name)
    write_keras_metrics_only(trained_run.run_dir, run_dir)

    html = write_report(run_dir).read_text()

    assert {p.stem for p in (run_dir / "plots").glob("*.png")} == {"training_curves"}
    assert html.count("<img ") == 1
    assert "Baseline comparison" not in html and "LR range test" not in html
    assert "lr_trace.csv" in html and "baseline.json" in html  # listed as absent


def test_a_rebuilt_report_drops_plots_whose_data_is_gone(full_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(full_run, run_dir)
    (run_dir / "lr_trace.csv").unlink()

    write_report(run_dir)

    assert not (run_dir / "plots" / "learning_rate.png").exists()
    assert (run_dir / "plots" / "training_curves.png").exists()


def test_stage_boundaries_are_drawn_between_epochs():
    history = pd.DataFrame(
        {"epoch": [0, 1, 2, 3], "loss": [1.0, 0.8, 0.7, 0.6], "val_loss": [1.1, 0.9, 0.8, 0.75]}
    )
    stages = [
        {"stage": 0, "epoch": 0, "trainable_layers": 0},
        {"stage": 1, "first_epoch": 2, "trainable_layers": "all"},
    ]

    figure = plots.plot_training_curves(history, stages)

    # Epochs are drawn 1-based; the stage starting at 0-based epoch 2 begins
    # between drawn epochs 2 and 3.
    vertical = [
        line.get_xdata()[0] for line in figure.axes[0].get_lines() if line.get_linestyle() == ":"
    ]
    assert vertical == [2.5]
    assert any("stage 2: all layers" in text.get_text() for text in figure.axes[0].texts)


def test_stages_fall_back_to_the_history_stage_column():
    history = pd.DataFrame({"epoch": [0, 1, 2], "loss": [1, 1, 1], "stage": [0, 1, 1]})

    assert [s["first_epoch"] for s in stages_from_history(history)] == [0, 1]


def test_data_summary_counts_classes_and_words():
    train = pd.DataFrame({"text": ["one two", "one two three", "x"], "label": ["a", "b", "a"]})
    test = pd.DataFrame({"text": ["four words are here"], "label": ["b"]})
    splits = Splits(train, test.copy(), test, labels=["a", "b"], dropped={"all": 2})

    summary = summarize_splits(splits)

    assert summary["splits"]["train"]["class_counts"] == {"a": 2, "b": 1}
    assert summary["splits"]["train"]["words"] == {
        "min": 1.0,
        "median": 2.0,
        "mean": 2.0,
        "p95": pytest.approx(2.9),
        "max": 3.0,
    }
    assert summary["splits"]["test"]["rows"] == 1
    assert sum(summary["length_histogram"]["counts"]["train"]) == 3
    assert summary["dropped_rows"] == {"all": 2}


def test_data_summary_counts_each_label_and_the_texts_without_one():
    train = pd.DataFrame({"text": ["w"] * 4, "label": [("a",), ("a", "b"), (), ("b", "c")]})
    validation = pd.DataFrame({"text": ["w", "w"], "label": [(), ()]})
    splits = Splits(train, validation, None, labels=["a", "b", "c"], task="multi_label")

    summary = summarize_splits(splits)

    assert summary["task"] == "multi_label"
    assert summary["splits"]["train"]["label_counts"] == {"a": 2, "b": 2, "c": 1}
    assert summary["splits"]["train"]["no_label"] == 1
    assert summary["splits"]["validation"]["label_counts"] == {"a": 0, "b": 0, "c": 0}
    assert summary["splits"]["validation"]["no_label"] == 2


def test_data_summary_describes_a_regression_target():
    train = pd.DataFrame({"text": ["w"] * 4, "label": [10.0, 2.0, 4.0, 1000.0]})
    validation = pd.DataFrame({"text": ["w"], "label": [-3.5]})
    splits = Splits(train, validation, None, labels=["amount"], task="regression")

    summary = summarize_splits(splits)

    target = summary["splits"]["train"]["target"]
    assert (target["count"], target["min"], target["median"]) == (4, 2.0, 7.0)
    assert (target["mean"], target["max"]) == (254.0, 1000.0)
    assert summary["splits"]["validation"]["target"]["median"] == -3.5
    assert "class_counts" not in summary["splits"]["train"]


def test_cli_rebuilds_one_run_report(full_run, tmp_path, capsys):
    run_dir = tmp_path / "one"
    shutil.copytree(full_run, run_dir)
    (run_dir / "report.html").unlink()

    status = report.main([str(run_dir)])

    assert status == 0
    assert (run_dir / "report.html").exists()
    assert "report.html" in capsys.readouterr().out


def write_keras_metrics_only(source_run, run_dir):
    """metrics.json as a run without an export evaluation has it: loss and accuracy."""
    metrics = json.loads((source_run / "metrics.json").read_text())
    plain = {
        split: {k: values[k] for k in ("loss", "accuracy")} for split, values in metrics.items()
    }
    (run_dir / "metrics.json").write_text(json.dumps(plain))


def test_cli_compares_runs_in_one_table_and_plot(full_run, trained_run, tmp_path, capsys):
    output = tmp_path / "cmp"
    plain = tmp_path / "plain" / "tiny" / trained_run.run_dir.name
    shutil.copytree(
        trained_run.run_dir, plain, ignore=shutil.ignore_patterns("tensorboard", "*.keras", "*.h5")
    )
    write_keras_metrics_only(trained_run.run_dir, plain)

    status = report.main([str(full_run), str(plain), "--output", str(output)])

    stdout = capsys.readouterr().out
    assert status == 0
    assert {p.name for p in output.iterdir()} == {
        "comparison.html",
        "comparison.png",
        "comparison_loss.png",
        "comparison.csv",
        "config_diff.csv",
    }
    table = pd.read_csv(output / "comparison.csv", index_col=0)
    assert len(table) == 2
    history = pd.read_csv(full_run / "history.csv")
    assert table["best val_accuracy"].iloc[0] == pytest.approx(history["val_accuracy"].max())
    test_metrics = json.loads((full_run / "metrics.json").read_text())["test"]
    assert table["test macro_f1"].iloc[0] == pytest.approx(test_metrics["macro_f1"])
    assert np.isnan(table["test macro_f1"].iloc[1])  # the plain run has no export evaluation
    assert "best val_accuracy" in stdout and "(2)" in stdout  # same run name, told apart
    assert (output / "comparison.html").read_text().count("data:image/png;base64,") == 2


def test_cli_wrong_run_path_exits_2_and_writes_nothing(full_run, tmp_path, capsys):
    output = tmp_path / "cmp"

    status = report.main([str(full_run), str(tmp_path / "no-such-run"), "--output", str(output)])

    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err == f"error: {tmp_path / 'no-such-run'}: no such run directory"
    assert not output.exists()


def test_a_run_name_directory_means_its_latest_run(full_run):
    assert resolve_run_dir(full_run.parent) == full_run


def test_cli_directory_that_is_not_a_run_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()

    status = report.main([str(tmp_path / "empty")])

    assert status == 2
    assert "not a run directory" in capsys.readouterr().err
    assert list((tmp_path / "empty").iterdir()) == []


def test_report_says_how_long_the_run_trained_and_which_epoch_it_kept(trained_run):
    from kerasbert.evaluation.report import write_report

    html = write_report(trained_run.run_dir).read_text(encoding="utf-8")
    summary = json.loads((trained_run.run_dir / "fit_summary.json").read_text())
    assert (
        f"Trained 3 of 3 epochs; kept epoch {summary['kept_epoch']}, the best by val_loss" in html
    )
