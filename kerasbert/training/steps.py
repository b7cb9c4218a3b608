"""Training counted in steps: a step budget, and evaluation every N steps.

Keras counts an epoch's batches from 0; here a step is a batch counted from
the start of the run, `epoch * steps_per_epoch + batch + 1` after it, so both
callbacks keep counting right in a resumed run.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from kerasbert.arguments import is_integer
from kerasbert.data.pipeline import steps_per_epoch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """How long a run trains: whole epochs, or `max_steps` batches."""

    steps_per_epoch: int
    epochs: int  # the epochs `fit` runs, the last one cut short by a budget
    total_steps: int


def plan(training_config, train_rows) -> Plan:
    """The run's length: `training.max_steps` when given (as Hugging Face's
    `TrainingArguments`, it overrides `training.epochs`), else `epochs`.

    Args:
        training_config: a `kerasbert.config.TrainingConfig`.
        train_rows: rows in the training split.
    """
    steps = steps_per_epoch(train_rows, training_config.batch_size)
    if training_config.max_steps is None:
        return Plan(steps, training_config.epochs, steps * training_config.epochs)
    max_steps = training_config.max_steps
    return Plan(steps, math.ceil(max_steps / steps), max_steps)


class _StepCounter(keras.callbacks.Callback):
    def __init__(self, steps_per_epoch):
        super().__init__()
        _check_positive_int("steps_per_epoch", steps_per_epoch)
        self.steps_per_epoch = steps_per_epoch
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def step_after(self, batch) -> int:
        """The run's step count once `batch` of the current epoch is done."""
        return self.epoch * self.steps_per_epoch + batch + 1


class StepBudget(_StepCounter):
    """Stops training after `max_steps` batches, even in the middle of an epoch.

    Keras then still evaluates that last, shorter epoch and calls the epoch
    end hooks (checkpoints, early stopping, the CSV log) for it.

    Args:
        max_steps: batches to train in the whole run.
        steps_per_epoch: batches in a full epoch.
    """

    def __init__(self, max_steps, steps_per_epoch):
        super().__init__(steps_per_epoch)
        _check_positive_int("max_steps", max_steps)
        self.max_steps = max_steps

    def on_train_batch_end(self, batch, logs=None):
        if self.step_after(batch) >= self.max_steps:
            self.model.stop_training = True


class StepwiseEvaluation(_StepCounter):
    """Evaluates on the validation split every `every` steps, for long epochs.

    The model predicts the split (`model.evaluate` would reset the running
    training metrics of the epoch); loss and accuracy are computed from its
    logits as Keras computes `val_loss` and `val_accuracy`. Each evaluation
    is logged and appended to a CSV file: step, epoch (from 1), val_loss,
    val_accuracy. The epoch-end evaluation, checkpoints and early stopping
    stay as they are.

    Args:
        data: the validation `tf.data.Dataset` of `(features, label)` batches.
        labels: the validation labels, as integer class ids.
        every: steps between two evaluations.
        steps_per_epoch: batches in an epoch.
        path: the CSV file; rows of steps after `initial_step` are dropped
            from it when training begins (a resumed run redoes them).
        initial_step: the step a resumed run starts from.
    """

    FIELDS = ("step", "epoch", "val_loss", "val_accuracy")

    def __init__(self, data, labels, every, steps_per_epoch, path, initial_step=0):
        super().__init__(steps_per_epoch)
        _check_positive_int("every", every)
        self.data = data
        self.labels = np.asarray(labels, dtype=np.int64)
        self.every = every
        self.path = Path(path)
        self.initial_step = initial_step
        self.rows = []

    def on_train_begin(self, logs=None):
        self.rows = [row for row in _read_rows(self.path) if row["step"] <= self.initial_step]
        self._write()

    def on_train_batch_end(self, batch, logs=None):
        step = self.step_after(batch)
        if step % self.every:
            return
        logits = np.asarray(self.model.predict(self.data, verbose=0), dtype=np.float64)
        loss, accuracy = sparse_loss_and_accuracy(logits, self.labels)
        self.rows.append(
            {"step": step, "epoch": self.epoch + 1, "val_loss": loss, "val_accuracy": accuracy}
        )
        self._write()
        log.info("step %d: val_loss %.4f, val_accuracy %.4f", step, loss, accuracy)

    def _write(self):
        with self.path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self.FIELDS)
            writer.writeheader()
            writer.writerows(self.rows)


def sparse_loss_and_accuracy(logits, labels) -> tuple[float, float]:
    """Mean softmax cross-entropy of `logits` [n, classes] for integer `labels`, and accuracy."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    picked = log_probabilities[np.arange(len(labels)), labels]
    return float(-picked.mean()), float((logits.argmax(axis=1) == labels).mean())


def _read_rows(path) -> list:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return [
            {
                "step": int(row["step"]),
                "epoch": int(row["epoch"]),
                "val_loss": float(row["val_loss"]),
                "val_accuracy": float(row["val_accuracy"]),
            }
            for row in csv.DictReader(f)
        ]


def _check_positive_int(name, value):
    if not is_integer(value) or value < 1:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a positive integer. "
            f"Received: {name}={value!r}"
        )
