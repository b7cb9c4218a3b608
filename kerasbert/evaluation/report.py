"""Per-run HTML reports, and tables and plots comparing runs.

A report is built from the run directory alone, so it can be rebuilt at any
time: the training run leaves there what exists only while it runs
(`data_summary.json` from `write_data_summary`, `baseline.json` from
`kerasbert.training.baseline.write_baseline`, `test_predictions.csv` from
`kerasbert.evaluate.evaluate_saved_model`), next to `config.yaml`,
`labels.json`, `history.csv` and `metrics.json`. Sections whose files are
absent (`lr_trace.csv`, `stages.json`, `lr_find.csv`/`lr_find.png`, ...) are
left out and listed at the end. `report.html` is self-contained (figures are
embedded as base64 PNG); the figures are also written to `plots/`.

The report opens with what needs attention: a warning when the model trails
the TF-IDF baseline on the main metric or predicts one class for every test
text (`kerasbert.evaluation.verdicts`), else the margin by which it beats the
baseline. Those warnings are also logged, one line each.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from kerasbert import rundir
from kerasbert.evaluation import metrics as metrics_lib
from kerasbert.evaluation import plots, verdicts
from kerasbert.evaluation.config_diff import config_diff
from kerasbert.evaluation.formats import (
    COUNT,
    LENGTH,
    format_count,
    format_learning_rate,
    format_metric,
    format_table,
)
from kerasbert.evaluation.predictions import PROBABILITY_PREFIX
from kerasbert.evaluation.runs import describe_fit, load_run
from kerasbert.files import write_text

log = logging.getLogger(__name__)


COMPARISON_FILES = (
    "comparison.html",
    "comparison.png",
    "comparison_loss.png",
    "comparison.csv",
    "config_diff.csv",
)


NUM_MISTAKES = 20


# The metrics shown side by side, in this order; lower is better for the last two.
HEADLINE = ("accuracy", "macro_f1", "weighted_f1", "roc_auc", "log_loss", "ece")


PLOT_NAMES = (
    "class_balance",
    "text_lengths",
    "training_curves",
    "learning_rate",
    "lr_find",
    "confusion_matrix",
    "reliability",
    "calibration",
)


def most_confident_mistakes(predictions, n=NUM_MISTAKES) -> pd.DataFrame:
    """The `n` wrong predictions with the highest confidence, most confident first."""
    wrong = predictions[predictions["label"] != predictions["predicted_label"]]
    columns = [
        c for c in ("text", "text_pair", "label", "predicted_label", "confidence") if c in wrong
    ]
    return (
        wrong.sort_values("confidence", ascending=False, kind="stable")
        .head(n)[columns]
        .reset_index(drop=True)
    )


def metrics_table(metrics) -> pd.DataFrame:
    """The scalar metrics of each split (rows) in `metrics.json`."""
    rows = {}
    for split, values in metrics.items():
        if isinstance(values, dict):
            scalars = {
                k: v
                for k, v in values.items()
                if metrics_lib.is_number(v) and k not in ("ece_bins",)
            }
            if scalars:
                rows[split] = scalars
    table = pd.DataFrame.from_dict(rows, orient="index")
    order = [c for c in ("num_examples", "loss", *HEADLINE) if c in table] + [
        c for c in table if c not in ("num_examples", "loss", *HEADLINE)
    ]
    return table[order] if len(table) else table


def baseline_comparison(metrics, baseline) -> pd.DataFrame:
    """Model against baseline for each split and headline metric.

    Returns:
        Rows are metrics, columns `"<split>: model"` and `"<split>: baseline"`;
        values a run did not record are NaN.
    """
    columns = {}
    for split in ("validation", "test"):
        if split not in (baseline or {}):
            continue
        model_values = metrics.get(split, {})
        columns[f"{split}: model"] = [_value(model_values.get(m)) for m in HEADLINE]
        columns[f"{split}: baseline"] = [_value(baseline[split].get(m)) for m in HEADLINE]
    return pd.DataFrame(columns, index=list(HEADLINE))


def _value(value):
    return float(value) if metrics_lib.is_number(value) else np.nan


def findings(run) -> tuple[list[str], str | None]:
    """What the top of a run's report says: `(warnings, verdict)`, each a sentence.

    Warnings: the model predicts one class for every test text, or does not
    beat the baseline on the main metric. The verdict is the baseline
    comparison when the model beats it (None when it is a warning, or when
    the run has no baseline).
    """
    warnings, verdict = [], None
    label = _single_class_warning(run)
    if label:
        warnings.append(label)
    comparison = verdicts.baseline_verdict(run.metrics, run.baseline)
    if comparison is not None and comparison.beats:
        verdict = comparison.sentence()
    elif comparison is not None:
        warnings.append(comparison.sentence())
    return warnings, verdict


def _single_class_warning(run) -> str | None:
    predictions = run.test_predictions
    if predictions is not None and {"label", "predicted_label"} <= set(predictions):
        predicted, true = verdicts.class_counts_from_predictions(predictions)
    else:
        test = run.metrics.get("test", {})
        matrix, labels = test.get("confusion_matrix"), test.get("labels") or run.labels
        if not matrix or not labels or len(matrix) != len(labels):
            return None
        predicted, true = verdicts.class_counts_from_matrix(matrix, labels)
    label = verdicts.single_predicted_class(predicted, true)
    if label is None:
        return None
    return verdicts.single_class_sentence(
        label, sum(predicted.values()), sum(1 for n in true.values() if n > 0)
    )


def _test_probabilities(run):
    """`(y_true, probabilities)` from test_predictions.csv, or None."""
    predictions, labels = run.test_predictions, run.labels
    if predictions is None or not labels:
        return None
    columns = [PROBABILITY_PREFIX + label for label in labels]
    if any(c not in predictions for c in columns):
        return None
    index = {label: i for i, label in enumerate(labels)}
    if not predictions["label"].isin(index).all() or predictions.empty:
        return None
    return predictions["label"].map(index).to_numpy(dtype=np.int64), predictions[columns].to_numpy(
        dtype=float
    )


def build_figures(run) -> dict:
    """The figures of a run's report, by name (only those it has data for)."""
    figures = {}
    summary = run.data_summary
    if summary:
        splits = summary["splits"]
        if summary.get("task") == "multi_label":
            counts = {split: values["label_counts"] for split, values in splits.items()}
            texts = {split: values["rows"] for split, values in splits.items()}
            figures["class_balance"] = plots.plot_class_balance(counts, summary["labels"], texts)
        elif summary.get("task", "classification") == "classification":
            counts = {split: values["class_counts"] for split, values in splits.items()}
            figures["class_balance"] = plots.plot_class_balance(counts, summary["labels"])
        figures["text_lengths"] = plots.plot_text_lengths(summary["length_histogram"])
    if run.history is not None and len(run.history):
        figures["training_curves"] = plots.plot_training_curves(run.history, run.stages)
    if run.lr_trace is not None and "learning_rate" in run.lr_trace and len(run.lr_trace):
        figures["learning_rate"] = plots.plot_learning_rate(run.lr_trace, run.stages)
    if run.lr_find_png is None and run.lr_find is not None:
        try:
            figures["lr_find"] = plots.plot_lr_find(run.lr_find)
        except ValueError as e:
            run.problems.append(f"lr_find.csv: {e}")
    matrix = run.metrics.get("test", {}).get("confusion_matrix")
    labels = run.metrics.get("test", {}).get("labels") or run.labels
    scored = _test_probabilities(run)
    if matrix is None and scored is not None:
        matrix = metrics_lib.confusion_matrix(scored[0], scored[1].argmax(axis=1), len(labels))
    if matrix is not None and labels:
        figures["confusion_matrix"] = plots.plot_confusion_matrix(matrix, labels)
    if scored is not None:
        bins = metrics_lib.calibration_bins(
            *scored,
            num_bins=run.metrics.get("test", {}).get("ece_bins", metrics_lib.DEFAULT_NUM_BINS),
        )
        figures["reliability"] = plots.plot_reliability(bins)
    calibrated = _calibration_split(run.calibration)
    if calibrated is not None:
        split, values = calibrated
        figures["calibration"] = plots.plot_calibration(
            values["bins_before"], values["bins_after"], split, run.calibration.get("temperature")
        )
    return figures


def _calibration_split(calibration):
    """`(split, values)` of `calibration.json` to draw: test, else validation; None if neither."""
    splits = (calibration or {}).get("splits") or {}
    for split in ("test", "validation"):
        values = splits.get(split)
        if isinstance(values, dict) and {"bins_before", "bins_after"} <= set(values):
            return split, values
    return None


def calibration_table(calibration) -> pd.DataFrame:
    """Log loss and ECE of each split (rows) before and after temperature scaling."""
    columns = ("log_loss_before", "log_loss_after", "ece_before", "ece_after")
    rows = {
        split: {column: _value(values.get(column)) for column in columns}
        for split, values in ((calibration or {}).get("splits") or {}).items()
        if isinstance(values, dict)
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(columns))


def _calibration_section(run, pngs) -> str | None:
    calibration = run.calibration
    if not isinstance(calibration, dict):
        return None
    temperature = calibration.get("temperature")
    if isinstance(temperature, list):
        fitted = "Temperatures, one per label, " + ", ".join(
            f"{label} {t:.3g}" for label, t in zip(run.labels or [], temperature)
        )
    elif metrics_lib.is_number(temperature):
        fitted = f"Temperature {temperature:.4g}"
    else:
        return None
    note = (
        f"<p>{_e(fitted)}, fitted on the validation split to minimise its log loss and "
        "applied in the export: the logits are divided by it before the "
        f"{'sigmoids' if isinstance(temperature, list) else 'softmax'}. The predicted labels "
        "are the same; lower is better for log loss and ECE "
        f"({_e(calibration.get('num_bins', metrics_lib.DEFAULT_NUM_BINS))} bins).</p>"
    )
    return _section(
        "Calibration", note + _table(calibration_table(calibration)) + _images(pngs, "calibration")
    )


def write_report(run_dir, num_mistakes=NUM_MISTAKES) -> Path:
    """Writes `report.html` and `plots/*.png` for a run, from its directory alone.

    Args:
        run_dir: the run directory (or `runs/<name>` for its latest run).
        num_mistakes: how many of the most confident test mistakes to list.

    Returns:
        The path of `report.html`.

    Raises:
        FileNotFoundError: not a run directory.

    Example:

    >>> write_report("runs/quickstart/20261125-144351")
    PosixPath('runs/quickstart/20261125-144351/report.html')
    """
    run = load_run(run_dir)
    for warning in findings(run)[0]:
        log.warning("%s: %s", run.path, warning)
    figures = build_figures(run)
    plots_dir = run.path / rundir.PLOTS
    for name in PLOT_NAMES:
        stale = plots_dir / f"{name}.png"
        if name not in figures and stale.exists():
            stale.unlink()
    pngs = {
        name: plots.png_bytes(figure, plots_dir / f"{name}.png") for name, figure in figures.items()
    }
    if run.lr_find_png is not None:
        pngs["lr_find"] = run.lr_find_png
    path = run.path / rundir.REPORT
    write_text(path, render_report(run, pngs, num_mistakes))
    return path


def render_report(run, pngs, num_mistakes=NUM_MISTAKES) -> str:
    """The report's HTML, with `pngs` (`{name: bytes}`) embedded."""
    sections = [
        f"<h1>kerasbert run {_e(run.name)}</h1>",
        f"<p class='meta'>{_e(str(run.path))} &middot; report built {_e(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>",
    ]
    warnings, verdict = findings(run)
    sections += [
        f"<p class='warning' role='alert'><strong>Warning:</strong> {_e(w)}</p>" for w in warnings
    ]
    if verdict:
        sections.append(f"<p class='verdict'>{_e(verdict)}</p>")

    table = metrics_table(run.metrics)
    if len(table):
        sections.append(_section("Metrics", _table(table)))
    if isinstance(run.distillation, dict):
        sections.append(_section("Distillation", _distillation_html(run.distillation)))
    if run.baseline:
        comparison = baseline_comparison(run.metrics, run.baseline)
        # C is a hyperparameter picked from 0.1, 1, 10, 100, written as chosen.
        chosen = (
            f" (C = {run.baseline['C']:g})" if metrics_lib.is_number(run.baseline.get("C")) else ""
        )
        seconds = run.baseline.get("seconds")
        took = f"{seconds:.1f}" if metrics_lib.is_number(seconds) else "?"
        rows = format_count(run.baseline.get("train_rows", "?"))
        note = f"<p>Baseline: {_e(run.baseline.get('model', 'baseline'))}{chosen}, trained on {_e(rows)} rows in {took} s. Lower is better for log_loss and ece.</p>"
        sections.append(_section("Baseline comparison", note + _table(comparison)))

    if run.data_summary:
        summary = run.data_summary
        rows = {}
        # A regression run's one label is its target's column.
        target = summary["labels"][0] if summary["labels"] else "target"
        for split, values in summary["splits"].items():
            row = {"rows": values["rows"]}
            row.update({f"words {k}": v for k, v in values["words"].items()})
            counts = values.get("class_counts", values.get("label_counts", {}))
            row.update({f"n({label})": n for label, n in counts.items()})
            if "no_label" in values:
                row["no label"] = values["no_label"]
            row.update({f"{target} {k}": v for k, v in values.get("target", {}).items()})
            rows[split] = row
        counts = {"no label": COUNT, f"{target} count": COUNT}
        body = _table(pd.DataFrame.from_dict(rows, orient="index"), kinds=counts)
        if summary.get("task") == "multi_label":
            body += "<p>A text counts once under each of its labels; <em>no label</em> counts the texts with none.</p>"
        dropped = {k: v for k, v in summary.get("dropped_rows", {}).items() if v}
        if dropped:
            body += f"<p>Rows dropped for an empty text or a missing label: {_e(json.dumps(dropped))}</p>"
        body += _images(pngs, "class_balance", "text_lengths")
        sections.append(_section("Data", body))

    training = _images(pngs, "training_curves")
    if run.fit_summary:
        sentence = describe_fit(run.fit_summary, format_metric)
        training = f"<p>{_e(sentence[:1].upper() + sentence[1:])}.</p>" + training
    if run.stages:
        training += "<h3>Unfreezing stages</h3>" + _table(pd.DataFrame(run.stages))
    if training:
        sections.append(_section("Training curves", training))
    if "learning_rate" in pngs:
        sections.append(
            _section("Learning rate and momentum per step", _images(pngs, "learning_rate"))
        )
    if "lr_find" in pngs:
        body = _images(pngs, "lr_find")
        suggestion = (run.lr_find_summary or {}).get("suggested_maximal_learning_rate")
        if metrics_lib.is_number(suggestion):
            rule = run.lr_find_summary.get("rule", "")
            body = (
                f"<p>Suggested maximal learning rate: {format_learning_rate(suggestion)} ({_e(rule)})</p>"
                + body
            )
        sections.append(_section("LR range test", body))

    calibration = _calibration_section(run, pngs)
    if calibration:
        sections.append(calibration)

    test = run.metrics.get("test", {})
    test_body = _images(pngs, "confusion_matrix", "reliability")
    if isinstance(test.get("per_class"), dict):
        test_body += "<h3>Per class</h3>" + _table(
            pd.DataFrame.from_dict(test["per_class"], orient="index")
        )
    if isinstance(test.get("per_label"), dict):
        # A multi-label model: each label's scores at its tuned threshold.
        test_body += "<h3>Per label</h3>" + _table(
            pd.DataFrame.from_dict(test["per_label"], orient="index")
        )
    if test_body:
        sections.append(_section("Test set", test_body))
    if run.test_predictions is not None and {"label", "predicted_label", "confidence"} <= set(
        run.test_predictions
    ):
        mistakes = most_confident_mistakes(run.test_predictions, num_mistakes)
        mistakes.index = np.arange(1, len(mistakes) + 1)
        body = _table(mistakes, "text") if len(mistakes) else "<p>No mistakes on the test set.</p>"
        sections.append(_section(f"The {num_mistakes} most confident test mistakes", body))

    if run.config_text:
        sections.append(_section("Resolved configuration", f"<pre>{_e(run.config_text)}</pre>"))
    notes = []
    if run.missing:
        notes.append(
            f"<p>Not in this run directory (sections left out): {_e(', '.join(run.missing))}</p>"
        )
    if run.problems:
        notes.append(
            "<p>Could not use:</p><ul>"
            + "".join(f"<li>{_e(p)}</li>" for p in run.problems)
            + "</ul>"
        )
    if notes:
        sections.append(_section("Notes", "".join(notes)))
    return _page(f"kerasbert run {run.name}", "\n".join(sections))


def distillation_table(record) -> pd.DataFrame:
    """Student and teacher side by side, from `distillation.json`'s `comparison`.

    Returns:
        Rows `student` and `teacher`; columns accuracy, parameters, export
        size in MB and texts per second. Empty without a comparison.
    """
    comparison = record.get("comparison") or {}
    rows = {}
    for name in ("student", "teacher"):
        values = comparison.get(name)
        if not isinstance(values, dict):
            continue
        size = values.get("export_bytes")
        rows[name] = {
            "layers": record.get(f"{name}_layers"),
            "accuracy": values.get("accuracy"),
            "parameters": values.get("parameters"),
            "export MB": size / 1e6 if metrics_lib.is_number(size) else None,
            "texts/s": values.get("texts_per_second"),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _distillation_html(record) -> str:
    layers = ", ".join(str(layer) for layer in record.get("layers") or [])
    body = (
        f"<p>Distilled from {_e(str(record.get('teacher')))}: the teacher's layers {_e(layers)}, "
        f"temperature {_e(str(record.get('temperature')))}, alpha {_e(str(record.get('alpha')))}"
    )
    if record.get("hidden_state_weight"):
        body += f", hidden states matched at weight {_e(str(record['hidden_state_weight']))}"
    body += "."
    table = distillation_table(record)
    if not len(table):
        return body + " There are no exports to compare.</p>"
    split = (record.get("comparison") or {}).get("split", "test")
    body += f" Both exports, on the {_e(str(split))} split:</p>"
    kinds = {"layers": COUNT, "parameters": COUNT, "export MB": LENGTH, "texts/s": COUNT}
    return body + _table(table, kinds=kinds)


def compare_runs(runs) -> pd.DataFrame:
    """One row per run: training length, best validation and final test metrics.

    Args:
        runs: `Run` objects (see `load_run`).
    """
    rows = {}
    for run in runs:
        history = run.history if run.history is not None else pd.DataFrame()
        test = run.metrics.get("test", {})
        baseline_test = (run.baseline or {}).get("test", {})
        rows[run.name] = {
            "epochs": len(history),
            "best val_accuracy": _column_max(history, "val_accuracy"),
            "final val_loss": _last(history, "val_loss"),
            **{f"test {m}": _value(test.get(m)) for m in HEADLINE},
            "baseline test accuracy": _value(baseline_test.get("accuracy")),
            "baseline test macro_f1": _value(baseline_test.get("macro_f1")),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("run")


def _column_max(frame, column):
    return float(frame[column].max()) if column in frame and len(frame) else np.nan


def _last(frame, column):
    return float(frame[column].iloc[-1]) if column in frame and len(frame) else np.nan


def _unique_names(runs):
    seen = {}
    for run in runs:
        if run.name in seen:
            seen[run.name] += 1
            run.name = f"{run.name} ({seen[run.name]})"
        else:
            seen[run.name] = 1
    return runs


def run_configs(runs) -> dict:
    """`{run name: config dict}` of the runs whose `config.yaml` parses as a mapping.

    A run whose config cannot be read gets a line in its `problems`.
    """
    configs = {}
    for run in runs:
        if run.config_text is None:
            continue
        try:
            config = yaml.safe_load(run.config_text)
        except yaml.YAMLError as e:
            run.problems.append(f"{rundir.CONFIG}: {' '.join(str(e).split())}")
            continue
        if isinstance(config, dict):
            configs[run.name] = config
        else:
            run.problems.append(f"{rundir.CONFIG}: not a mapping of keys to values")
    return configs


def write_comparison(run_dirs, output_dir) -> tuple[pd.DataFrame, Path]:
    """Writes `comparison.html`, `comparison.png`, `comparison_loss.png`,
    `comparison.csv` and `config_diff.csv` for several runs.

    The page lists the runs with their metrics, the config keys whose values
    differ (dotted, one column per run), validation accuracy and test metrics,
    and training and validation loss per epoch.

    Args:
        run_dirs: run directories.
        output_dir: where to write (created if needed).

    Returns:
        `(table, html path)`.

    Raises:
        FileNotFoundError: one of `run_dirs` is not a run (checked before
            anything is written).
    """
    runs = _unique_names([load_run(path) for path in run_dirs])
    table = compare_runs(runs)
    histories = {run.name: run.history for run in runs if run.history is not None}
    figure = plots.plot_comparison(
        histories, {run.name: run.metrics.get("test", {}) for run in runs}
    )
    output_dir = Path(output_dir)
    png = plots.png_bytes(figure, output_dir / "comparison.png")
    loss_png = plots.png_bytes(
        plots.plot_loss_curves(histories), output_dir / "comparison_loss.png"
    )
    write_text(output_dir / "comparison.csv", table.to_csv())
    configs = run_configs(runs)
    diff = config_diff(configs)
    write_text(output_dir / "config_diff.csv", diff.to_csv())
    listing = (
        "<ul>" + "".join(f"<li>{_e(run.name)}: {_e(str(run.path))}</li>" for run in runs) + "</ul>"
    )
    body = "".join(
        [
            _section("Runs", listing + _table(table)),
            _section("Config differences", _config_diff_html(diff, configs, runs)),
            _section("Validation accuracy and test metrics", _img(png, "comparison")),
            _section("Training and validation loss", _img(loss_png, "comparison_loss")),
        ]
    )
    problems = [f"{run.name}: {problem}" for run in runs for problem in run.problems]
    if problems:
        body += _section(
            "Notes",
            "<p>Could not use:</p><ul>" + "".join(f"<li>{_e(p)}</li>" for p in problems) + "</ul>",
        )
    path = output_dir / "comparison.html"
    write_text(path, _page("kerasbert run comparison", "<h1>kerasbert run comparison</h1>" + body))
    return table, path


def _config_diff_html(diff, configs, runs) -> str:
    unread = [run.name for run in runs if run.name not in configs]
    note = (
        f"<p>Without a readable config.yaml (left out): {_e(', '.join(unread))}</p>"
        if unread
        else ""
    )
    if len(configs) < 2:
        return note + "<p>Fewer than two runs have a readable config.yaml: nothing to compare.</p>"
    if not len(diff):
        return note + "<p>The runs' resolved configs are the same.</p>"
    return note + diff.rename_axis(None).to_html(escape=True, border=0, classes="config-diff")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; vertical-align: top; }
td:first-child, th:first-child, table.text td { text-align: left; } th { background: #f4f4f4; }
td { max-width: 40em; overflow-wrap: anywhere; }
img { max-width: 100%; display: block; margin: .6em 0; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: .85em; }
.meta { color: #666; font-size: .9em; }
.warning { background: #fdecea; border-left: 4px solid #c62828; padding: .6em 1em; color: #7f1d1d; }
.verdict { background: #e8f5e9; border-left: 4px solid #2e7d32; padding: .6em 1em; }
table.config-diff td { text-align: left; font-family: ui-monospace, monospace; }
"""


def _page(title, body) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _section(title, body) -> str:
    return f"<section>\n<h2>{_e(title)}</h2>\n{body}\n</section>"


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _table(frame, classes=None, kinds=None) -> str:
    """`frame` as HTML, each column's numbers in the format of their kind (`formats`)."""
    return format_table(frame, kinds).to_html(escape=True, border=0, classes=classes)


def _img(data, name) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f"<img alt='{_e(name)}' src='data:image/png;base64,{encoded}'>"


def _images(pngs, *names) -> str:
    return "".join(_img(pngs[name], name) for name in names if name in pngs)
