"""A whole fine-tuning run: data, model, `fit`, run directory, export.

`train(config)` is what `python -m kerasbert.train` calls; each step is a
function of its own so tests and other commands (`lr_find`) reuse them.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras

from kerasbert import baseline as baseline_lib
from kerasbert import data as data_lib
from kerasbert import evaluate as evaluate_lib
from kerasbert import report as report_lib
from kerasbert.callbacks import (
    CyclicalLearningRate,
    ProgressiveUnfreezing,
    build_optimizer_variables,
    set_trainable_layers,
)
from kerasbert import export as export_lib
from kerasbert.config import dump_config
from kerasbert.distribute import is_chief, make_strategy
from kerasbert.models import TextEncoder, build_classifier, layer_groups
from kerasbert.optimizers import build_optimizer
from kerasbert.pipeline import encode_texts, make_dataset, make_training_dataset, steps_per_epoch
from kerasbert.runtime import Runtime, apply_runtime, resolve_runtime
from kerasbert.resume import (
    STATE_DIR,
    ResumableEarlyStopping,
    ResumableModelCheckpoint,
    TrainingState,
    load_state,
    read_status,
    restore_state,
    write_status,
)

log = logging.getLogger(__name__)

BEST_WEIGHTS = "best.weights.h5"


@dataclass
class Prepared:
    """Everything `fit` needs, built from a config."""

    splits: data_lib.Splits
    classifier: keras.Model
    tokenizer: object
    encoder: TextEncoder
    features: dict  # split name -> encoded features
    class_weight: dict | None
    strategy: object  # the tf.distribute.Strategy the model lives in
    runtime: Runtime

    def labels(self, split):
        return self.splits.label_ids(split)

    def dataset(self, split, batch_size, shuffle=False, seed=0):
        return make_dataset(
            self.features[split], self.labels(split), batch_size, shuffle=shuffle, seed=seed
        )


def prepare(config) -> Prepared:
    """Reads the data and builds the model and tokenized splits of a config."""
    # First: thread pools and a multi-worker strategy's collective ops must
    # be configured before TensorFlow runs anything.
    runtime = resolve_runtime(config.runtime)
    apply_runtime(runtime)
    strategy = make_strategy(config.distribution.strategy)
    keras.utils.set_random_seed(config.seed)
    splits = data_lib.load_splits(config.data)
    for name, frame in splits.items():
        counts = frame["label"].value_counts().to_dict()
        log.info("%s: %d rows, classes %s", name, len(frame), counts)
    with strategy.scope():
        classifier, tokenizer = build_classifier(
            config.model,
            len(splits.labels),
            texts=_texts_for_vocabulary(splits),
            dtype=runtime.dtype_policy,
        )
    encoder = TextEncoder(tokenizer, config.model.sequence_length)
    features = {
        name: encode_texts(
            encoder,
            frame["text"].tolist(),
            frame["text_pair"].tolist() if "text_pair" in frame else None,
        )
        for name, frame in splits.items()
    }
    class_weight = data_lib.class_weights(config.data.class_weight, splits.labels, splits.train["label"])
    return Prepared(splits, classifier, tokenizer, encoder, features, class_weight, strategy, runtime)


def _texts_for_vocabulary(splits):
    texts = splits.train["text"].tolist()
    if "text_pair" in splits.train:
        texts += splits.train["text_pair"].tolist()
    return texts


def make_run_dir(runs_dir, name, prefix="") -> Path:
    """A fresh `runs/<name>/<prefix><timestamp>` directory."""
    parent = Path(runs_dir) / name
    parent.mkdir(parents=True, exist_ok=True)
    stamp = prefix + time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(100):
        run_dir = parent / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a new run directory under {parent}")


def compile_classifier(classifier, optimizer, jit_compile="auto"):
    """Compiles for sparse labels, logits out, with accuracy."""
    classifier.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )
    return classifier


def compile_for_stage(prepared, training_config, trainable_layers="all"):
    """Compiles with the configured optimizer, built on every variable.

    The optimizer is built while every layer is trainable, so that later
    unfreezing stages can hand it layers that start frozen; then the top
    `trainable_layers` (and the head) are left trainable.

    Returns:
        The classifier's `LayerGroups`.
    """
    cfg = training_config
    model = prepared.classifier
    groups = layer_groups(model)
    set_trainable_layers(groups, "all")
    with prepared.strategy.scope():
        optimizer = build_optimizer(
            cfg.optimizer,
            cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            momentum=cfg.momentum,
            layerwise_decay=cfg.layerwise_decay,
            groups=groups,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        )
        compile_classifier(model, optimizer, jit_compile=prepared.runtime.jit_compile)
        build_optimizer_variables(model, groups)
    set_trainable_layers(groups, trainable_layers)
    return groups


def make_schedule(schedule_config, steps):
    """The `CyclicalLearningRate` for a schedule config, or None if constant.

    Args:
        schedule_config: a `kerasbert.config.ScheduleConfig`.
        steps: batches in one cycle of `one_cycle`.
    """
    cfg = schedule_config
    if cfg.mode == "constant":
        return None
    if cfg.mode == "one_cycle":
        return CyclicalLearningRate.one_cycle(
            cfg.maximal_learning_rate,
            total_steps=steps,
            pct_start=cfg.pct_start,
            div_factor=cfg.div_factor,
            final_div_factor=cfg.final_div_factor,
            base_momentum=cfg.base_momentum,
            max_momentum=cfg.max_momentum,
        )
    return CyclicalLearningRate(
        cfg.initial_learning_rate,
        cfg.maximal_learning_rate,
        cfg.step_size,
        mode=cfg.mode,
        gamma=cfg.gamma,
    )


def fit(prepared, config, run_dir, resume=False):
    """Runs the whole schedule in one `model.fit`, with logs and checkpoints.

    With `training.unfreezing`, `ProgressiveUnfreezing` walks the stages
    (restarting the learning-rate cycle at each when
    `schedule.restart_each_stage`); without it, every layer trains
    throughout. The learning rate and momentum of every step go to
    `lr_trace.csv`, the stages to `stages.json`, and the state needed to
    resume to `resume/` at every epoch end.

    Args:
        prepared: what `prepare` built.
        config: the run's `Config`.
        run_dir: the run directory.
        resume: continue from the state saved in `run_dir/resume`.
    """
    cfg = config.training
    model = prepared.classifier
    stages = [(s.epochs, s.trainable_layers) for s in cfg.unfreezing or []]
    groups = compile_for_stage(prepared, cfg, stages[0][1] if stages else "all")
    steps = steps_per_epoch(len(prepared.splits.train), cfg.batch_size)
    restart = bool(stages) and cfg.schedule.restart_each_stage
    schedule = make_schedule(cfg.schedule, (stages[0][0] if restart else cfg.epochs) * steps)
    stateful = {}
    callbacks = []
    unfreezing = None
    if stages:
        unfreezing = stateful["unfreezing"] = ProgressiveUnfreezing(
            stages,
            groups,
            schedule=schedule if restart else None,
            steps_per_epoch=steps,
            # A stage without a peak of its own takes the schedule's.
            maximal_learning_rates=[stage.maximal_learning_rate for stage in cfg.unfreezing] if restart else None,
        )
    if schedule is not None:
        stateful["schedule"] = schedule
    stateful["checkpoint"] = ResumableModelCheckpoint(
        str(run_dir / BEST_WEIGHTS),
        monitor=cfg.checkpoint_monitor,
        save_best_only=True,
        save_weights_only=True,
    )
    if cfg.early_stopping is not None:
        stateful["early_stopping"] = ResumableEarlyStopping(
            monitor=cfg.early_stopping.monitor,
            patience=cfg.early_stopping.patience,
            mode=cfg.early_stopping.mode,
            # Earlier stages train a frozen network by design; only the last
            # stage may stop the run.
            start_from_epoch=cfg.epochs - stages[-1][0] if stages else 0,
        )
    initial_epoch = 0
    if resume:
        saved = load_state(run_dir / STATE_DIR)
        if saved is not None:
            initial_epoch = restore_state(model, *saved, stateful)
            log.info("resuming at epoch %d of %d", initial_epoch + 1, cfg.epochs)
    callbacks = [
        *stateful.values(),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=initial_epoch > 0),
        keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False),
        TrainingState(run_dir / STATE_DIR, stateful),
    ]
    train_data = make_training_dataset(
        prepared.features["train"],
        prepared.labels("train"),
        cfg.batch_size,
        seed=config.seed,
        epochs=cfg.epochs,
        initial_epoch=initial_epoch,
        bucket_window=cfg.bucket_window,
    )
    history = model.fit(
        train_data,
        validation_data=prepared.dataset("validation", cfg.batch_size),
        epochs=cfg.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps,
        class_weight=prepared.class_weight,
        shuffle=False,  # each epoch's order comes from the seed and the epoch
        callbacks=callbacks,
        verbose=2 if not _interactive() else "auto",
    )
    if schedule is not None:
        schedule.write_trace(run_dir)
    if unfreezing is not None:
        (run_dir / "stages.json").write_text(export_lib.json_text(unfreezing.stage_log), encoding="utf-8")
    if (run_dir / BEST_WEIGHTS).exists():
        model.load_weights(str(run_dir / BEST_WEIGHTS))
    set_trainable_layers(groups, "all")
    return history


def _interactive():
    import sys

    return sys.stdout.isatty()


def evaluate_splits(prepared, batch_size) -> dict:
    """Loss and accuracy of the (restored best) model on validation and test."""
    metrics = {}
    for split in ("validation", "test"):
        if split in prepared.features:
            values = prepared.classifier.evaluate(
                prepared.dataset(split, batch_size), verbose=0, return_dict=True
            )
            metrics[split] = {k: float(v) for k, v in values.items()}
    return metrics


def save_run(prepared, config, run_dir, metrics):
    """Writes the resolved config, label map, metrics and model to the run."""
    (run_dir / "metrics.json").write_text(export_lib.json_text(metrics), encoding="utf-8")
    prepared.classifier.save(str(run_dir / "model.keras"))
    prepared.tokenizer.save_to_preset(str(run_dir / "tokenizer"))


def write_run_header(prepared, config, run_dir):
    (run_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    label_map = {
        "labels": prepared.splits.labels,
        "bin_edges": prepared.splits.bin_edges,
        "text_pair": "text_pair" in prepared.splits.train,
        "dropped_rows": prepared.splits.dropped,
    }
    (run_dir / "labels.json").write_text(export_lib.json_text(label_map), encoding="utf-8")


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
    batches = steps_per_epoch(train_rows, cfg.batch_size) * cfg.epochs
    if cfg.gradient_accumulation_steps > batches:
        raise ValueError(
            f"training.gradient_accumulation_steps ({cfg.gradient_accumulation_steps}) exceeds "
            f"the run's {batches} batches, so the weights would never be updated"
        )


def train(config, resume_dir=None) -> RunResult:
    """Fine-tunes, evaluates, saves and exports the run a config describes.

    Args:
        config: a validated `kerasbert.config.Config`.
        resume_dir: a run directory to continue from its last epoch; its
            saved config must equal `config`.

    Returns:
        The run directory, the final metrics and the export directory.

    Raises:
        ValueError: the run to resume finished already, or was made with
            another config.
    """
    if resume_dir is not None:
        check_resumable(resume_dir, config)
    prepared = prepare(config)
    check_fits_the_data(config.training, len(prepared.splits.train))
    # In a cluster only the chief writes the run and the export; the other
    # workers take part in every step but keep their files in a scratch dir.
    chief = is_chief()
    if resume_dir is not None:
        run_dir = Path(resume_dir)
    elif chief:
        run_dir = make_run_dir(config.training.runs_dir, config.name)
        write_run_header(prepared, config, run_dir)
    else:
        run_dir = Path(tempfile.mkdtemp(prefix="kerasbert-worker-"))
    log.info("run directory: %s", run_dir)
    write_status(run_dir, "running")
    if chief:
        report_lib.write_data_summary(prepared.splits, run_dir)
        if config.training.baseline:
            baseline_lib.write_baseline(prepared.splits, run_dir, seed=config.seed)
    fit(prepared, config, run_dir, resume=resume_dir is not None)
    metrics = evaluate_splits(prepared, config.training.batch_size)
    export_dir = None
    if chief:
        save_run(prepared, config, run_dir, metrics)
        if config.export.enabled:
            # From the run directory alone: what ships is what the run holds.
            export_dir = export_lib.export_run_dir(run_dir)
            metrics = evaluate_export(prepared.splits, export_dir, run_dir, metrics, config.training.batch_size)
        write_report_safely(run_dir)
    write_status(run_dir, "finished", export=str(export_dir) if export_dir else None)
    # A finished run is never resumed; its saved state would only double
    # the run's size on disk.
    shutil.rmtree(run_dir / STATE_DIR, ignore_errors=True)
    return RunResult(run_dir, metrics, export_dir)


def evaluate_export(splits, export_dir, run_dir, metrics, batch_size) -> dict:
    """Scores the exported SavedModel on validation and test, into metrics.json.

    The export is what ships, so its metrics (through the serving signature,
    tokenizer in the graph) are the run's final ones; the test split's
    per-example predictions go to `test_predictions.csv` for the report.

    Returns:
        `metrics` with each split's entry updated by
        `kerasbert.evaluate.evaluate_saved_model`.
    """
    model = evaluate_lib.SavedModelClassifier(export_dir)
    for split, frame in splits.items():
        if split == "train":
            continue
        predictions = run_dir / report_lib.TEST_PREDICTIONS_FILE if split == "test" else None
        metrics.setdefault(split, {}).update(
            evaluate_lib.evaluate_saved_model(
                model,
                frame["text"].tolist(),
                frame["label"].tolist(),
                frame["text_pair"].tolist() if "text_pair" in frame else None,
                batch_size=batch_size,
                predictions_path=predictions,
            )
        )
    evaluate_lib.write_metrics(metrics, run_dir / "metrics.json")
    return metrics


def write_report_safely(run_dir):
    """Writes report.html; a failure is logged, not raised.

    The run itself has succeeded by now and the report can be rebuilt from
    the run directory with `python -m kerasbert.report <run_dir>`.
    """
    try:
        report_lib.write_report(run_dir)
    except Exception:
        log.exception("could not write %s/report.html; rebuild it with python -m kerasbert.report %s", run_dir, run_dir)


def check_resumable(run_dir, config):
    """Refuses a missing, finished or differently configured run."""
    run_dir = Path(run_dir)
    saved_config = run_dir / "config.yaml"
    if not saved_config.is_file():
        raise ValueError(f"--resume {run_dir}: not a run directory (no config.yaml)")
    status = read_status(run_dir)
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
        parts.append(f"{split}: " + ", ".join(f"{k}={v:.4f}" for k, v in values.items() if isinstance(v, float)))
    return "; ".join(parts)

