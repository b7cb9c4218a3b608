"""What a report says first (baseline verdict, single-class warning), how it writes numbers,
how runs' configs and losses are compared, and that a browser shows all of it.

The run directories here are written by hand, file by file, so every number
in them is known and nothing needs training.
"""

import itertools
import json
import logging

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg

from kerasbert import report
from kerasbert.evaluation import plots
from kerasbert.evaluation.config_diff import config_diff, flatten_config
from kerasbert.evaluation.formats import column_kind, format_number, format_table
from kerasbert.evaluation.report import findings, write_comparison, write_report
from kerasbert.evaluation.runs import load_run
from kerasbert.evaluation.verdicts import baseline_verdict, single_predicted_class
from tests.support.browser import launch, needs_chromium

LABELS = ["negative", "positive"]
CONFIG = {
    "name": "hand",
    "seed": 0,
    "model": {"preset": "bert_tiny_en_uncased", "sequence_length": 128},
    "training": {"epochs": 4, "learning_rate": 3e-4, "batch_size": 16, "early_stopping": None},
}
TRUE = ["negative"] * 3 + ["positive"] * 3


def write_run(run_dir, predicted, model_f1, baseline_f1, config=CONFIG, losses=(0.7, 0.6, 0.5)):
    """A run directory whose test predictions and main metrics are `predicted` and the F1s."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    epochs = len(losses)
    pd.DataFrame(
        {
            "epoch": range(epochs),
            "accuracy": np.linspace(0.5, 1.0, epochs),
            "loss": losses,
            "val_accuracy": np.linspace(0.5, 0.9, epochs),
            "val_loss": [loss + 0.1 for loss in losses],
        }
    ).to_csv(run_dir / "history.csv", index=False)
    confidence = [0.9, 0.8, 0.7, 0.6, 0.9, 1.0]
    positive = [c if p == "positive" else 1 - c for p, c in zip(predicted, confidence)]
    pd.DataFrame(
        {
            "text": [f"text {i}" for i in range(len(TRUE))],
            "label": TRUE,
            "predicted_label": predicted,
            "confidence": confidence,
            "probability_negative": [1 - p for p in positive],
            "probability_positive": positive,
        }
    ).to_csv(run_dir / "test_predictions.csv", index=False)
    matrix = [
        [sum(t == a and p == b for t, p in zip(TRUE, predicted)) for b in LABELS] for a in LABELS
    ]
    test = {"num_examples": 6, "loss": 0.5, "accuracy": 1.0, "macro_f1": model_f1}
    (run_dir / "metrics.json").write_text(
        json.dumps(
            {
                "validation": {"num_examples": 6.0, "loss": 0.25, "accuracy": 0.9444},
                "test": {**test, "labels": LABELS, "confusion_matrix": matrix},
            }
        )
    )
    (run_dir / "baseline.json").write_text(
        json.dumps(
            {
                "model": "TF-IDF + logistic regression",
                "C": 10.0,
                "train_rows": 40,
                "seconds": 0.123,
                "test": {"accuracy": 0.9, "macro_f1": baseline_f1},
            }
        )
    )
    (run_dir / "fit_summary.json").write_text(
        json.dumps(
            {
                "epochs_planned": 10,
                "epochs_run": epochs,
                "stopped_early": True,
                "early_stopping": {"monitor": "val_loss", "patience": 1},
                "checkpoint_monitor": "val_loss",
                "kept_epoch": 2,
                "kept_value": 0.7,
            }
        )
    )
    return run_dir


def many_short_stages(num_stages=12, steps_per_epoch=3):
    """An LR trace and one-epoch unfreezing stages, as `ProgressiveUnfreezing` writes them."""
    steps = np.arange(num_stages * steps_per_epoch)
    trace = pd.DataFrame(
        {
            "step": steps % steps_per_epoch,
            "epoch": steps // steps_per_epoch,
            "learning_rate": 1e-4 * (1 + (steps % steps_per_epoch)),
            "momentum": 0.9 - 0.01 * (steps % steps_per_epoch),
        }
    )
    stages = [
        {"stage": k, "epoch": k, "epochs": 1, "trainable_layers": k} for k in range(num_stages)
    ]
    return trace, stages


@pytest.fixture
def trailing_run(tmp_path):
    """A model that says "positive" to everything and trails the baseline: 0.51 against 0.94."""
    run_dir = write_run(tmp_path / "trailing" / "20260101-000000", ["positive"] * 6, 0.51, 0.94)
    trace, stages = many_short_stages()
    trace.to_csv(run_dir / "lr_trace.csv", index=False)
    (run_dir / "stages.json").write_text(json.dumps(stages))
    return run_dir


@pytest.fixture
def good_run(tmp_path):
    """A model that gets every test text right and beats the baseline."""
    config = {**CONFIG, "training": {**CONFIG["training"], "learning_rate": 5e-5, "epochs": 6}}
    return write_run(
        tmp_path / "good" / "20260101-000000", TRUE, 0.9444, 0.7333, config, (0.6, 0.3, 0.2)
    )


# === The baseline verdict ===


def test_verdict_says_the_model_trails_the_baseline_and_by_how_much():
    verdict = baseline_verdict({"test": {"macro_f1": 0.51}}, {"test": {"macro_f1": 0.94}})

    assert verdict.trails and not verdict.beats
    assert verdict.difference == pytest.approx(-0.43)
    assert verdict.sentence() == (
        "The model trails the baseline on test macro_f1: 0.5100 against 0.9400 (-0.4300)."
    )


def test_verdict_says_the_model_beats_the_baseline_and_by_how_much():
    verdict = baseline_verdict(
        {"test": {"macro_f1": 0.9444, "accuracy": 0.1}}, {"test": {"macro_f1": 0.7333}}
    )

    assert verdict.beats
    assert verdict.sentence() == (
        "The model beats the baseline on test macro_f1: 0.9444 against 0.7333 (+0.2111)."
    )


def test_verdict_falls_back_to_accuracy_and_to_validation():
    metrics = {"validation": {"accuracy": 0.8}, "test": {"loss": 0.3}}
    baseline = {"validation": {"accuracy": 0.7, "macro_f1": 0.6}}

    verdict = baseline_verdict(metrics, baseline)

    assert (verdict.split, verdict.metric, verdict.model, verdict.baseline) == (
        "validation",
        "accuracy",
        0.8,
        0.7,
    )


def test_no_verdict_without_a_baseline_or_a_shared_metric():
    assert baseline_verdict({"test": {"macro_f1": 0.5}}, None) is None
    assert baseline_verdict({"test": {"loss": 0.5}}, {"test": {"macro_f1": 0.5}}) is None


# === The single-class warning ===


def test_one_class_predicted_for_every_text_of_several_classes_is_flagged():
    assert single_predicted_class({"pos": 6, "neg": 0}, {"pos": 3, "neg": 3}) == "pos"
    assert single_predicted_class({"pos": 6}, {"pos": 3, "neg": 3}) == "pos"


def test_two_classes_predicted_or_one_class_present_is_not_flagged():
    assert single_predicted_class({"pos": 5, "neg": 1}, {"pos": 3, "neg": 3}) is None
    assert single_predicted_class({"pos": 6, "neg": 0}, {"pos": 6, "neg": 0}) is None


def test_findings_of_a_run_come_from_its_predictions_or_its_confusion_matrix(trailing_run):
    run = load_run(trailing_run)
    warnings, verdict = findings(run)
    run.test_predictions = None  # a run evaluated without writing predictions
    from_matrix, _ = findings(run)

    assert warnings == from_matrix
    assert warnings == [
        "The model predicts the same class, 'positive', for all 6 test texts, which hold 2 "
        "classes: it does not tell the classes apart.",
        "The model trails the baseline on test macro_f1: 0.5100 against 0.9400 (-0.4300).",
    ]
    assert verdict is None


def test_report_opens_with_the_warnings_and_the_cli_logs_each_in_one_line(
    trailing_run, caplog, capsys
):
    with caplog.at_level(logging.WARNING, logger="kerasbert.evaluation.report"):
        status = report.main([str(trailing_run)])

    assert status == 0
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert "predicts the same class, 'positive', for all 6 test texts" in lines[0]
    assert "trails the baseline on test macro_f1: 0.5100 against 0.9400" in lines[1]
    html = (trailing_run / "report.html").read_text()
    first_section = html.index("<section>")
    assert html.index("predicts the same class") < first_section
    assert html.index("trails the baseline") < first_section
    assert "class='warning'" in html and "class='verdict'" not in html


def test_report_of_a_model_that_beats_the_baseline_says_so_without_warnings(good_run, caplog):
    with caplog.at_level(logging.WARNING, logger="kerasbert.evaluation.report"):
        html = write_report(good_run).read_text()

    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "class='warning'" not in html
    verdict = "The model beats the baseline on test macro_f1: 0.9444 against 0.7333 (+0.2111)."
    assert html.index(verdict) < html.index("<section>")


# === Number formats ===


def test_each_kind_of_number_has_one_format():
    assert column_kind("num_examples") == column_kind("n(positive)") == "count"
    assert column_kind("learning_rate") == column_kind("max_lr") == "learning rate"
    assert column_kind("macro_f1") == column_kind("test: model") == "metric"
    assert [format_number(v) for v in (1, 1.0, 0.94444, np.nan)] == [
        "1.0000",
        "1.0000",
        "0.9444",
        "n/a",
    ]
    assert [format_number(v, "count") for v in (30, 30.0)] == ["30", "30"]
    assert format_number(3e-4, "learning rate") == "3.00e-04"
    assert format_number("all", "count") == "all"


def test_tables_format_each_column_by_its_kind():
    frame = pd.DataFrame(
        {"num_examples": [30.0, np.nan], "accuracy": [1.0, 0.94444], "support": [3, 4]},
        index=["validation", "test"],
    )

    assert format_table(frame).to_dict("list") == {
        "num_examples": ["30", "n/a"],
        "accuracy": ["1.0000", "0.9444"],
        "support": ["3", "4"],
    }


def test_report_writes_metrics_with_four_decimals_and_counts_as_integers(good_run):
    html = write_report(good_run).read_text()

    # metrics.json holds accuracy 1.0 and num_examples 6.0 and 6.
    assert "<td>1.0000</td>" in html and "<td>0.9444</td>" in html
    assert "<td>1</td>" not in html and "<td>6.0</td>" not in html
    assert html.count("<td>6</td>") == 2
    assert "trained on 40 rows in 0.1 s" in html
    # The kept epoch and the early stop, with the kept value written as a metric.
    assert (
        "Trained 3 of 10 epochs: early stopping ended the run (val_loss did not improve for 1 "
        "epochs); kept epoch 2, the best by val_loss (0.7000)." in html
    )


# === Stage labels on the learning-rate plot ===


def test_stage_labels_do_not_overlap_when_stages_are_short_and_many(tmp_path):
    trace, stages = many_short_stages()
    figure = plots.plot_learning_rate(trace, stages)
    png = plots.png_bytes(figure, tmp_path / "learning_rate.png")

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in figure.axes:
        boxes = [text.get_window_extent(renderer) for text in ax.texts]
        assert len(boxes) == len(stages) - 1
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b), (a, b)
        assert all(ax.bbox.contains(box.x0, box.y0) for box in boxes)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


# === Comparisons ===


def test_config_diff_keeps_only_the_keys_that_differ_one_column_per_run():
    a = {"training": {"epochs": 3, "learning_rate": 1e-3, "schedule": {"name": "one_cycle"}}}
    b = {"training": {"epochs": 3, "learning_rate": 5e-5}, "model": {"pooling": "mean"}}

    diff = config_diff({"a": a, "b": b})

    assert list(diff.columns) == ["a", "b"]
    assert diff.to_dict("index") == {
        "model.pooling": {"a": "(absent)", "b": "mean"},
        "training.learning_rate": {"a": "1.00e-03", "b": "5.00e-05"},
        "training.schedule.name": {"a": "one_cycle", "b": "(absent)"},
    }
    assert config_diff({"a": a, "b": a}).empty
    assert config_diff({"a": {"dropout": 0.1, "lr": True}, "b": {"dropout": 0.2, "lr": 1}}).to_dict(
        "list"
    ) == {"a": ["0.1", "true"], "b": ["0.2", "1.00e+00"]}


def test_flatten_config_uses_dotted_keys_and_keeps_lists_and_nulls_whole():
    assert flatten_config({"data": {"columns": ["a", "b"], "test": None}, "seed": 1}) == {
        "data.columns": ["a", "b"],
        "data.test": None,
        "seed": 1,
    }


def test_loss_curves_draw_training_and_validation_loss_one_line_per_run():
    histories = {
        "a": pd.DataFrame({"epoch": [0, 1], "loss": [0.7, 0.5], "val_loss": [0.8, 0.6]}),
        "b": pd.DataFrame(
            {"epoch": [0, 1, 2], "loss": [0.6, 0.4, 0.3], "val_loss": [0.7, 0.6, 0.5]}
        ),
    }

    figure = plots.plot_loss_curves(histories)

    train, validation = figure.axes[:2]
    assert [line.get_label() for line in train.get_lines()] == ["a", "b"]
    assert [line.get_label() for line in validation.get_lines()] == ["a", "b"]
    assert list(validation.get_lines()[1].get_ydata()) == [0.7, 0.6, 0.5]
    assert list(train.get_lines()[0].get_xdata()) == [1, 2]  # epochs counted from 1
    assert train.get_lines()[1].get_color() == validation.get_lines()[1].get_color()


def test_comparison_has_the_config_diff_and_the_loss_curves(trailing_run, good_run, tmp_path):
    output = tmp_path / "cmp"

    status = report.main([str(trailing_run), str(good_run), "--output", str(output)])

    assert status == 0
    diff = pd.read_csv(output / "config_diff.csv", index_col=0)
    assert diff.to_dict("index") == {
        "training.epochs": {"trailing/20260101-000000": 4, "good/20260101-000000": 6},
        "training.learning_rate": {
            "trailing/20260101-000000": 0.0003,
            "good/20260101-000000": 5e-05,
        },
    }
    html = (output / "comparison.html").read_text()
    assert "<th>training.learning_rate</th>" in html
    assert "Training and validation loss" in html and "alt='comparison_loss'" in html
    assert (output / "comparison_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# === In a browser ===


def open_page(browser, path):
    """A page showing `path`, and the console errors and page errors it raised."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    return page, errors


def image_widths(page):
    return page.evaluate(
        "Array.from(document.images).map(img => img.complete ? img.naturalWidth : 0)"
    )


@needs_chromium
def test_a_browser_shows_the_warnings_the_verdict_the_config_diff_and_every_image(
    trailing_run, good_run, tmp_path
):
    from playwright import sync_api

    write_report(trailing_run)
    write_report(good_run)
    write_comparison([trailing_run, good_run], tmp_path / "cmp")

    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page, errors = open_page(browser, trailing_run / "report.html")
            warnings = page.locator("p.warning")
            assert warnings.count() == 2
            assert all(warnings.nth(i).is_visible() for i in range(2))
            assert "predicts the same class" in warnings.nth(0).inner_text()
            assert "trails the baseline" in warnings.nth(1).inner_text()
            # The warnings are on screen when the page opens, above everything else.
            assert (
                warnings.nth(1).bounding_box()["y"] < page.locator("h2").first.bounding_box()["y"]
            )
            assert warnings.nth(1).bounding_box()["y"] < 900
            single = image_widths(page)
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)

            page, good_errors = open_page(browser, good_run / "report.html")
            assert page.locator("p.verdict").is_visible()
            assert page.locator("p.verdict").inner_text().startswith("The model beats the baseline")
            errors += good_errors

            page, comparison_errors = open_page(browser, tmp_path / "cmp" / "comparison.html")
            diff = page.locator("table.config-diff")
            assert diff.is_visible()
            assert diff.locator("tbody th").all_inner_texts() == [
                "training.epochs",
                "training.learning_rate",
            ]
            compared = image_widths(page)
            errors += comparison_errors
        finally:
            browser.close()

    # training curves, learning rate, confusion matrix, reliability
    assert len(single) == 4 and all(width > 0 for width in single), single
    assert len(compared) == 2 and all(width > 0 for width in compared), compared
    assert errors == []
