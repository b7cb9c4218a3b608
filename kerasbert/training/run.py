"""A whole run from its config: the run directory, `fit`, the export, its evaluation and the report.

`train(config)` is what `python -m kerasbert.train` calls.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kerasbert import rundir
from kerasbert.config_loading import dump_config
from kerasbert.data.tables import write_table
from kerasbert.evaluation import metrics as metrics_lib
from kerasbert.evaluation import target_scoring
from kerasbert.evaluation.predictions import predict_frame, read_input
from kerasbert.evaluation.report import write_report
from kerasbert.evaluation.runs import write_data_summary
from kerasbert.evaluation.saved_model_classifier import SavedModelClassifier
from kerasbert.evaluation.scoring import evaluate_saved_model, predictions_table
from kerasbert.exporting.exporter import export_run_dir
from kerasbert.exporting.heads import Head
from kerasbert.files import write_json
from kerasbert.training import baseline as baseline_lib
from kerasbert.training.distribute import is_chief, wait_for_workers
from kerasbert.training.fit import evaluate_splits, fit, prepare
from kerasbert.training.range_test import copy_range_test, latest_range_test
from kerasbert.training.resume import write_status
from kerasbert.training.steps import plan

log = logging.getLogger(__name__)


def save_run(prepared, config, run_dir, metrics, head=None):
    """Writes the resolved config, label map, metrics and model to the run."""
    if head is not None:
        # The label map gains what was learned after its first writing:
        # the temperature and the thresholds.
        write_run_header(prepared, config, run_dir, head)
    write_json(run_dir / rundir.METRICS, metrics)
    prepared.classifier.save(str(run_dir / rundir.MODEL))
    prepared.tokenizer.save_to_preset(str(run_dir / rundir.TOKENIZER))


def write_run_header(prepared, config, run_dir, head=None):
    (run_dir / rundir.CONFIG).write_text(dump_config(config), encoding="utf-8")
    label_map = {
        "labels": prepared.splits.labels,
        "bin_edges": prepared.splits.bin_edges,
        "text_pair": "text_pair" in prepared.splits.train,
        "dropped_rows": prepared.splits.dropped,
    }
    splits = prepared.splits
    label_map["head"] = (head or initial_head(splits)).to_dict()
    if splits.task != "classification":
        if splits.task == "multi_label":
            label_map["texts_without_labels"] = splits.unlabelled
    write_json(run_dir / rundir.LABELS, label_map)


def initial_head(splits) -> Head:
    """The head a run starts with: thresholds of 0.5, or the target's scaling."""
    if splits.task == "multi_label":
        return Head("multi_label", thresholds=[0.5] * len(splits.labels))
    if splits.task == "regression":
        scaling = splits.scaling
        return Head("regression", transform=scaling.transform, mean=scaling.mean, std=scaling.std)
    return Head()


def tune_head(prepared, batch_size, threshold_floor=0.05, calibration="none"):
    """The trained model's head: its temperature and, for multi-label, its thresholds.

    With `calibration: temperature`, the temperature (one per label for
    multi-label) is fitted on the validation split's logits
    (`kerasbert.training.calibration`); a multi-label model's thresholds are
    then tuned for best F1 on the calibrated probabilities, since those are
    what the export's graph compares with them.

    Returns:
        `(head, report)`: a `Head` (`initial_head` for regression), and the
        `calibration_report` of validation and test, or None without
        calibration.
    """
    from kerasbert.evaluation.target_metrics import tune_thresholds
    from kerasbert.training import calibration as calibration_lib

    splits = prepared.splits
    multi_label = splits.task == "multi_label"
    scaled = calibration == "temperature" and splits.task != "regression"
    if not scaled and not multi_label:
        return initial_head(splits), None
    logits = {"validation": _logits(prepared, "validation", batch_size)}
    temperature = 1.0
    if scaled:
        fit = (
            calibration_lib.fit_label_temperatures
            if multi_label
            else calibration_lib.fit_temperature
        )
        temperature = fit(logits["validation"], prepared.labels("validation"))
    if not multi_label:
        head = Head(temperature=temperature)
    else:
        probabilities = calibration_lib.scaled_probabilities(
            logits["validation"], temperature, multi_label=True
        )
        thresholds = tune_thresholds(prepared.labels("validation"), probabilities, threshold_floor)
        log.info(
            "thresholds tuned on validation: %s",
            ", ".join(f"{label} {t:.3f}" for label, t in zip(splits.labels, thresholds)),
        )
        head = Head("multi_label", thresholds=thresholds, temperature=temperature)
    if not scaled:
        return head, None
    if splits.test is not None:
        logits["test"] = _logits(prepared, "test", batch_size)
    report = calibration_lib.calibration_report(
        {name: (values, prepared.labels(name)) for name, values in logits.items()},
        temperature,
        multi_label,
    )
    log.info(calibration_lib.describe_calibration(report))
    return head, report


def _logits(prepared, split, batch_size):
    import numpy as np

    return np.asarray(
        prepared.classifier.predict(prepared.dataset(split, batch_size), verbose=0),
        dtype=np.float64,
    )


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    export_dir: Path | None


def check_fits_the_data(training_config, train_rows):
    """Refuses settings that the training split is too small for.

    Raises:
        ValueError: `gradient_accumulation_steps` exceeds the run's batches,
            so the weights would never change.
    """
    cfg = training_config
    batches = plan(cfg, train_rows).total_steps
    if cfg.gradient_accumulation_steps > batches:
        raise ValueError(
            f"training.gradient_accumulation_steps ({cfg.gradient_accumulation_steps}) exceeds "
            f"the run's {batches} batches, so the weights would never be updated"
        )


def train(config, resume_dir=None, prepared=None) -> RunResult:
    """Fine-tunes, evaluates, saves and exports the run a config describes.

    Args:
        config: a validated `kerasbert.config.Config`.
        resume_dir: a run directory to continue from its last epoch; its
            saved config must equal `config`.
        prepared: what `prepare(config)` would build, when the caller built
            it instead (a distillation's student); None prepares it here.

    Returns:
        The run directory, the final metrics and the export directory.

    Raises:
        ValueError: the run to resume finished already, or was made with
            another config.
    """
    if resume_dir is not None:
        check_resumable(resume_dir, config)
    # Read first: a missing file or column fails before any training.
    to_predict = read_to_predict(config.data)
    if prepared is None:
        prepared = prepare(config)
    check_fits_the_data(config.training, len(prepared.splits.train))
    # In a cluster only the chief writes the run and the export; the other
    # workers take part in every step but keep their files in a scratch dir,
    # removed when they are done.
    chief = is_chief()
    scratch = False
    if resume_dir is not None:
        run_dir = Path(resume_dir)
    elif chief:
        run_dir = rundir.make_run_dir(config.training.runs_dir, config.name)
        write_run_header(prepared, config, run_dir)
        range_test = latest_range_test(config)
        if range_test is not None:
            copy_range_test(range_test, run_dir)
            log.info("learning-rate range test: %s, copied into the run", range_test)
    else:
        run_dir, scratch = Path(tempfile.mkdtemp(prefix="kerasbert-worker-")), True
    log.info("run directory: %s", run_dir)
    write_status(run_dir, "running")
    try:
        metrics, export_dir = _run(
            prepared, config, run_dir, chief, resume_dir is not None, to_predict
        )
        wait_for_workers(prepared.strategy)
        write_status(run_dir, "finished", export=str(export_dir) if export_dir else None)
    except BaseException:
        # Still resumable from its last epoch; never taken for the latest run.
        write_status(run_dir, "failed")
        raise
    finally:
        if scratch:
            shutil.rmtree(run_dir, ignore_errors=True)
    # A finished run is never resumed; its saved state would only double
    # the run's size on disk.
    shutil.rmtree(run_dir / rundir.STATE_DIR, ignore_errors=True)
    return RunResult(run_dir, metrics, export_dir)


def _run(prepared, config, run_dir, chief, resume, to_predict=None):
    task = prepared.splits.task
    if chief:
        write_data_summary(prepared.splits, run_dir)
        if config.training.baseline and task != "classification":
            baseline_lib.write_target_baseline(prepared.splits, run_dir, seed=config.seed)
        elif config.training.baseline:
            baseline_lib.write_baseline(prepared.splits, run_dir, seed=config.seed)
    fit(prepared, config, run_dir, resume=resume)
    metrics = evaluate_splits(prepared, config.training.batch_size)
    head, calibration = tune_head(
        prepared, config.training.batch_size, config.model.threshold_floor, config.calibration
    )
    export_dir = None
    if chief:
        save_run(prepared, config, run_dir, metrics, head)
        if calibration is not None:
            write_json(run_dir / rundir.CALIBRATION, calibration)
        if config.export.enabled:
            # From the run directory alone: what ships is what the run holds.
            export_dir = export_run_dir(run_dir)
            model = SavedModelClassifier(export_dir)
            metrics = evaluate_export(
                prepared.splits, model, run_dir, metrics, config.training.batch_size
            )
            if to_predict is not None:
                predict_with_export(to_predict, config, model, run_dir)
        else:
            # No export to score: the same metrics, from the model in memory.
            metrics = evaluate_in_process(
                prepared, run_dir, metrics, config.training.batch_size, head
            )
        write_report_safely(run_dir)
    return metrics, export_dir


def read_to_predict(data_config):
    """The `data.predict` file, its columns checked; None without one."""
    cfg = data_config
    if cfg.predict is None:
        return None
    return read_input(cfg.predict, cfg.text_column, cfg.text_pair_column)


def predict_with_export(frame, config, model, run_dir):
    """Predicts the `data.predict` rows with the export (a `SavedModelClassifier`),
    into `predictions.csv`."""
    table = predict_frame(
        frame,
        model,
        model.labels,
        config.data.text_column,
        config.data.text_pair_column,
        config.training.batch_size,
        progress=False,
        task=model.task,
    )
    write_table(table, run_dir / rundir.PREDICTIONS)
    log.info("predicted %d rows of %s: %s", len(table), config.data.predict, rundir.PREDICTIONS)


def evaluate_export(splits, model, run_dir, metrics, batch_size) -> dict:
    """Scores the exported SavedModel on validation and test, into metrics.json.

    The export is what ships, so its metrics (through the serving signature,
    tokenizer in the graph) are the run's final ones; the test split's
    per-example predictions go to `test_predictions.csv` for the report.

    Args:
        model: the export, a `SavedModelClassifier`.

    Returns:
        `metrics` with each split's entry updated by
        `kerasbert.evaluate.evaluate_saved_model` (or, for multi-label and
        regression models, `target_scoring.evaluate_saved_targets`).
    """
    score = (
        evaluate_saved_model
        if model.task == "classification"
        else target_scoring.evaluate_saved_targets
    )
    for split, frame in splits.items():
        if split == "train":
            continue
        predictions = run_dir / rundir.TEST_PREDICTIONS if split == "test" else None
        metrics.setdefault(split, {}).update(
            score(
                model,
                frame["text"].tolist(),
                frame["label"].tolist(),
                frame["text_pair"].tolist() if "text_pair" in frame else None,
                batch_size=batch_size,
                predictions_path=predictions,
            )
        )
    write_json(run_dir / rundir.METRICS, metrics)
    return metrics


def evaluate_in_process(prepared, run_dir, metrics, batch_size, head=None) -> dict:
    """`evaluate_export`'s metrics and test predictions, from the Keras model itself.

    For runs that export nothing: the same `classification_metrics` on
    validation and test, and `test_predictions.csv` for the report.
    """
    from kerasbert.training.calibration import scaled_probabilities

    labels = prepared.splits.labels
    head = head or initial_head(prepared.splits)
    for split, frame in prepared.splits.items():
        if split == "train":
            continue
        logits = _logits(prepared, split, batch_size)
        if prepared.splits.task != "classification":
            values = _in_process_targets(prepared.splits, head, split, frame, logits, run_dir)
            metrics.setdefault(split, {}).update(values)
            continue
        # As the export would answer: its graph divides by the temperature.
        probabilities = scaled_probabilities(logits, head.temperature)
        metrics.setdefault(split, {}).update(
            metrics_lib.classification_metrics(prepared.labels(split), probabilities, labels)
        )
        if split == "test":
            table = predictions_table(
                frame["text"].tolist(),
                frame["label"].tolist(),
                probabilities,
                labels,
                frame["text_pair"].tolist() if "text_pair" in frame else None,
            )
            write_table(table, run_dir / rundir.TEST_PREDICTIONS)
    write_json(run_dir / rundir.METRICS, metrics)
    return metrics


def _in_process_targets(splits, head, split, frame, logits, run_dir) -> dict:
    """A multi-label or regression split's metrics from logits (and its test predictions)."""
    import numpy as np
    from scipy.special import expit

    logits = np.asarray(logits, dtype=np.float32)
    pairs = frame["text_pair"].tolist() if "text_pair" in frame else None
    if splits.task == "regression":
        values = splits.scaling.inverse(logits)
        metrics = target_scoring.score_targets(
            "regression", splits.labels, frame["label"], values, None
        )
        table = target_scoring.regression_table(frame["text"], frame["label"], values, pairs)
    else:
        probabilities = expit(
            logits / np.asarray(head.temperatures(len(splits.labels)), np.float32)
        )
        on = probabilities >= np.asarray(head.thresholds, dtype=np.float32)
        decided = [tuple(splits.labels[j] for j in np.flatnonzero(row)) for row in on]
        metrics = target_scoring.score_targets(
            "multi_label", splits.labels, frame["label"], decided, probabilities, head.thresholds
        )
        table = target_scoring.multi_label_table(
            frame["text"], frame["label"], decided, probabilities, splits.labels, pairs
        )
    if split == "test":
        write_table(table, run_dir / rundir.TEST_PREDICTIONS)
    return metrics


def write_report_safely(run_dir):
    """Writes report.html; a failure is logged, not raised.

    The run itself has succeeded by now and the report can be rebuilt from
    the run directory with `python -m kerasbert.report <run_dir>`.
    """
    try:
        write_report(run_dir)
    except Exception:
        log.exception(
            "could not write %s/report.html; rebuild it with python -m kerasbert.report %s",
            run_dir,
            run_dir,
        )


def check_resumable(run_dir, config):
    """Refuses a missing, finished or differently configured run."""
    run_dir = Path(run_dir)
    saved_config = run_dir / rundir.CONFIG
    if not saved_config.is_file():
        raise ValueError(f"--resume {run_dir}: not a run directory (no config.yaml)")
    status = rundir.read_status(run_dir)
    if status == "finished":
        raise ValueError(f"--resume {run_dir}: the run finished already; start a new run instead")
    if saved_config.read_text(encoding="utf-8") != dump_config(config):
        raise ValueError(
            f"--resume {run_dir}: the config differs from the one the run was started "
            f"with ({saved_config}); resume with that config"
        )


def summarize(metrics) -> str:
    parts = []
    for split, values in metrics.items():
        parts.append(
            f"{split}: "
            + ", ".join(f"{k}={v:.4f}" for k, v in values.items() if isinstance(v, float))
        )
    return "; ".join(parts)
