"""A whole fine-tuning run: data, model, `fit`, run directory, export.

`train(config)` is what `python -m kerasbert.train` calls; each step is a
function of its own so tests and other commands (`lr_find`) reuse them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
import pandas as pd

from kerasbert import rundir
from kerasbert.data import splits as data_lib
from kerasbert.data.pipeline import (
    BUCKET_WINDOW,
    encode_texts,
    make_dataset,
    make_training_dataset,
)
from kerasbert.evaluation.runs import describe_fit
from kerasbert.files import write_json
from kerasbert.models.classifier import build_classifier, text_encoder
from kerasbert.models.layer_groups import (
    build_optimizer_variables,
    layer_groups,
    set_trainable_layers,
)
from kerasbert.models.tokenizers import TextEncoder
from kerasbert.training.cyclical_learning_rate import CyclicalLearningRate
from kerasbert.training.distribute import make_strategy
from kerasbert.training.optimizers import build_optimizer
from kerasbert.training.progressive_unfreezing import ProgressiveUnfreezing
from kerasbert.training.resume import (
    ResumableEarlyStopping,
    ResumableModelCheckpoint,
    TrainingState,
    load_state,
    restore_state,
)
from kerasbert.training.runtime import Runtime, apply_runtime, resolve_runtime
from kerasbert.training.steps import StepBudget, StepwiseEvaluation, plan

log = logging.getLogger(__name__)


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
    pos_weight: dict | None = None  # multi-label: weights of positive examples by label
    regression_loss: str = "mse"

    def labels(self, split):
        return self.splits.label_ids(split)

    def training_model(self):
        """The model `fit` compiles and trains: the classifier, or a model sharing its weights."""
        return self.classifier

    def training_labels(self):
        """What the training split's batches carry as `y`: its labels."""
        return self.labels("train")

    def loss_and_metrics(self):
        """The compiled loss and metrics; `(None, None)` for `compile_classifier`'s own."""
        return task_loss_and_metrics(
            self.splits.task, self.splits.labels, self.pos_weight, self.regression_loss
        )

    def dataset(self, split, batch_size, shuffle=False, seed=0):
        return make_dataset(
            self.features[split],
            self.labels(split),
            batch_size,
            shuffle=shuffle,
            seed=seed,
            pad_multiple=self.runtime.pad_multiple,
        )

    def training_dataset(
        self, batch_size, seed, epochs, initial_epoch=0, bucket_window=BUCKET_WINDOW
    ):
        """The training split's batches for `fit`, as wide as the runtime wants them.

        See `kerasbert.data.pipeline.make_training_dataset`; each batch is
        cut to its longest text, rounded up only for a compiled step
        (`Runtime.pad_multiple`).
        """
        return make_training_dataset(
            self.features["train"],
            self.training_labels(),
            batch_size,
            seed=seed,
            epochs=epochs,
            initial_epoch=initial_epoch,
            bucket_window=bucket_window,
            pad_multiple=self.runtime.pad_multiple,
        )


def prepare(config, build_model=None) -> Prepared:
    """Reads the data and builds the model and tokenized splits of a config.

    Args:
        config: the run's `Config`.
        build_model: `build_model(splits, dtype) -> (classifier, tokenizer)`,
            called in the strategy's scope, instead of building the
            classifier `config.model` describes (a distillation's student).
    """
    # First: thread pools and a multi-worker strategy's collective ops must
    # be configured before TensorFlow runs anything.
    runtime = resolve_runtime(config.runtime, tpu=config.distribution.strategy == "tpu")
    apply_runtime(runtime)
    strategy = make_strategy(config.distribution.strategy)
    keras.utils.set_random_seed(config.seed)
    splits = data_lib.load_splits(config.data, config.model.task, config.model.target_transform)
    for name, frame in splits.items():
        log.info("%s: %d rows, %s", name, len(frame), _describe_labels(frame["label"], splits.task))
    with strategy.scope():
        if build_model is not None:
            classifier, tokenizer = build_model(splits, runtime.dtype_policy)
        else:
            classifier, tokenizer = build_classifier(
                config.model,
                # One output unit per class or label; one for a regression target.
                len(splits.labels),
                texts=_texts_for_vocabulary(splits),
                dtype=runtime.dtype_policy,
            )
    encoder = text_encoder(config.model, tokenizer)
    features = {
        name: encode_texts(
            encoder,
            frame["text"].tolist(),
            frame["text_pair"].tolist() if "text_pair" in frame else None,
        )
        for name, frame in splits.items()
    }
    class_weight = (
        data_lib.class_weights(config.data.class_weight, splits.labels, splits.train["label"])
        if splits.task == "classification"
        else None
    )
    return Prepared(
        splits,
        classifier,
        tokenizer,
        encoder,
        features,
        class_weight,
        strategy,
        runtime,
        pos_weight=config.data.pos_weight,
        regression_loss=config.model.loss or "mse",
    )


def _describe_labels(labels, task) -> str:
    if task == "regression":
        return f"target mean {labels.mean():.4g}, median {labels.median():.4g}"
    if task == "multi_label":
        counts = pd.Series([name for names in labels for name in names]).value_counts()
        return f"labels {counts.to_dict()}, {int((labels.map(len) == 0).sum())} with none"
    return f"classes {labels.value_counts().to_dict()}"


def _texts_for_vocabulary(splits):
    texts = splits.train["text"].tolist()
    if "text_pair" in splits.train:
        texts += splits.train["text_pair"].tolist()
    return texts


def compile_classifier(classifier, optimizer, jit_compile="auto", loss=None, metrics=None):
    """Compiles for sparse labels, logits out, with accuracy.

    `loss` and `metrics`, when given, replace those: `task_loss_and_metrics`
    gives a multi-label or regression model's.
    """
    classifier.compile(
        optimizer=optimizer,
        loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=metrics or [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )
    return classifier


def task_loss_and_metrics(task, labels=(), pos_weight=None, loss="mse"):
    """The loss and metrics of a `model.task`, or `(None, None)` for classification.

    Args:
        task: `classification`, `multi_label` or `regression`.
        labels: `multi_label`: the label names, in output order.
        pos_weight: `multi_label`: `{label: weight}` for positive examples.
        loss: `regression`: `mse` or `huber` (on the standardised target).
    """
    from kerasbert.training.losses import WeightedBinaryCrossentropy

    if task == "multi_label":
        weights = [float((pos_weight or {}).get(label, 1.0)) for label in labels]
        return WeightedBinaryCrossentropy(weights), [
            keras.metrics.BinaryAccuracy(name="binary_accuracy", threshold=0.0)
        ]
    if task == "regression":
        regression_loss = (
            keras.losses.Huber() if loss == "huber" else keras.losses.MeanSquaredError()
        )
        # On the transformed, standardised target the model learns; `mae` in
        # metrics.json is in the target's own unit, from the export.
        return regression_loss, [keras.metrics.MeanAbsoluteError(name="scaled_mae")]
    return None, None


def compile_for_stage(prepared, training_config, trainable_layers="all"):
    """Compiles with the configured optimizer, built on every variable.

    The optimizer is built while every layer is trainable, so that later
    unfreezing stages can hand it layers that start frozen; then the top
    `trainable_layers` (and the head) are left trainable.

    Returns:
        The classifier's `LayerGroups`.
    """
    cfg = training_config
    model = prepared.training_model()
    groups = layer_groups(prepared.classifier)
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
        loss, metrics = prepared.loss_and_metrics()
        compile_classifier(
            model, optimizer, jit_compile=prepared.runtime.jit_compile, loss=loss, metrics=metrics
        )
        build_optimizer_variables(model, groups)
    set_trainable_layers(groups, trainable_layers)
    return groups


def make_schedule(schedule_config, steps):
    """The `CyclicalLearningRate` for a schedule config, or None if constant.

    Args:
        schedule_config: a `kerasbert.config.ScheduleConfig`.
        steps: batches in one cycle of `one_cycle`.
    """
    schedule = schedule_config.build(total_steps=steps)
    return None if schedule is None else CyclicalLearningRate(schedule)


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
    model = prepared.training_model()
    stages = [(s.epochs, s.trainable_layers) for s in cfg.unfreezing or []]
    groups = compile_for_stage(prepared, cfg, stages[0][1] if stages else "all")
    length = plan(cfg, len(prepared.splits.train))
    steps, epochs = length.steps_per_epoch, length.epochs
    # Each stage restarts the cycle, when there is a cycle to restart.
    restart = bool(stages) and cfg.schedule.mode != "constant" and cfg.schedule.restart_each_stage
    schedule = make_schedule(cfg.schedule, stages[0][0] * steps if restart else length.total_steps)
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
            maximal_learning_rates=[stage.maximal_learning_rate for stage in cfg.unfreezing]
            if restart
            else None,
        )
    if schedule is not None:
        stateful["schedule"] = schedule
    stateful["checkpoint"] = ResumableModelCheckpoint(
        str(run_dir / rundir.BEST_WEIGHTS),
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
            start_from_epoch=epochs - stages[-1][0] if stages else 0,
        )
    initial_epoch = 0
    if resume:
        saved = load_state(run_dir / rundir.STATE_DIR)
        if saved is not None:
            initial_epoch = restore_state(model, *saved, stateful)
            log.info("resuming at epoch %d of %d", initial_epoch + 1, epochs)
    callbacks = [
        *stateful.values(),
        *_step_callbacks(prepared, cfg, length, run_dir, initial_epoch),
        keras.callbacks.CSVLogger(str(run_dir / rundir.HISTORY), append=initial_epoch > 0),
        keras.callbacks.TensorBoard(str(run_dir / rundir.TENSORBOARD), write_graph=False),
        TrainingState(run_dir / rundir.STATE_DIR, stateful),
    ]
    train_data = prepared.training_dataset(
        cfg.batch_size,
        seed=config.seed,
        epochs=epochs,
        initial_epoch=initial_epoch,
        bucket_window=cfg.bucket_window,
    )
    history = model.fit(
        train_data,
        validation_data=prepared.dataset("validation", cfg.batch_size),
        epochs=epochs,
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
        write_json(run_dir / rundir.STAGES, unfreezing.stage_log)
    summary = fit_summary(
        pd.read_csv(run_dir / rundir.HISTORY),
        epochs,
        stateful["checkpoint"],
        stateful.get("early_stopping"),
    )
    write_json(run_dir / rundir.FIT_SUMMARY, summary)
    log.info(describe_fit(summary))
    if (run_dir / rundir.BEST_WEIGHTS).exists():
        model.load_weights(str(run_dir / rundir.BEST_WEIGHTS))
    set_trainable_layers(groups, "all")
    return history


def _step_callbacks(prepared, training_config, length, run_dir, initial_epoch) -> list:
    """`max_steps`' `StepBudget` and `eval_steps`' `StepwiseEvaluation`, when configured."""
    cfg = training_config
    callbacks = []
    if cfg.max_steps is not None:
        callbacks.append(StepBudget(cfg.max_steps, length.steps_per_epoch))
    if cfg.eval_steps is not None:
        callbacks.append(
            StepwiseEvaluation(
                prepared.dataset("validation", cfg.batch_size),
                prepared.labels("validation"),
                cfg.eval_steps,
                length.steps_per_epoch,
                run_dir / rundir.EVAL_HISTORY,
                initial_step=initial_epoch * length.steps_per_epoch,
            )
        )
    return callbacks


def fit_summary(history, planned_epochs, checkpoint, early_stopping=None) -> dict:
    """How long the run trained, whether it stopped early, and which epoch it kept.

    Args:
        history: `history.csv` as a frame, every epoch run (resumed ones too).
        planned_epochs: the epochs the run was to train (`training.epochs`,
            or those `training.max_steps` reaches into).
        checkpoint: the `ModelCheckpoint` that kept the best epoch's weights.
        early_stopping: the `EarlyStopping` callback, if any.

    Returns:
        `{"epochs_planned", "epochs_run", "stopped_early", "early_stopping",
        "checkpoint_monitor", "kept_epoch", "kept_value"}`, epochs counted
        from 1 as the training log prints them.
    """
    monitor = checkpoint.monitor
    kept_epoch = kept_value = None
    if monitor in history and checkpoint.monitor_op is not None:
        for epoch, value in zip(history["epoch"], history[monitor]):
            if kept_value is None or bool(checkpoint.monitor_op(value, kept_value)):
                kept_epoch, kept_value = int(epoch) + 1, float(value)
    epochs_run = len(history)
    return {
        "epochs_planned": planned_epochs,
        "epochs_run": epochs_run,
        "stopped_early": epochs_run < planned_epochs,
        "early_stopping": None
        if early_stopping is None
        else {"monitor": early_stopping.monitor, "patience": early_stopping.patience},
        "checkpoint_monitor": monitor,
        "kept_epoch": kept_epoch,
        "kept_value": kept_value,
    }


def _interactive():
    import sys

    return sys.stdout.isatty()


def evaluate_splits(prepared, batch_size) -> dict:
    """Loss and accuracy of the (restored best) model on validation and test."""
    metrics = {}
    for split in ("validation", "test"):
        if split in prepared.features:
            values = prepared.training_model().evaluate(
                prepared.dataset(split, batch_size), verbose=0, return_dict=True
            )
            metrics[split] = {k: float(v) for k, v in values.items()}
    return metrics
