"""`CyclicalLearningRate`: the learning rate (and the 1cycle policy's momentum) of every batch.

The callback applies a schedule of `kerasbert.training.schedules`; the math
lives there.
"""

from __future__ import annotations

import csv
from pathlib import Path

import keras
from keras import ops

from kerasbert import rundir
from kerasbert.arguments import is_real
from kerasbert.training import schedules


class CyclicalLearningRate(keras.callbacks.Callback):
    """Sets the learning rate (and momentum) before every batch from a schedule.

    The callback only applies a schedule, as Keras' `LearningRateScheduler`
    does: the schedule is a `CyclicalSchedule`, `OneCycleSchedule` or `LinearSchedule` of
    `kerasbert.training.schedules` (anything with `__call__(step)`,
    `momentum(step)`, `restarted(...)` and `get_config()`). Its step counts
    batches across epochs (and `fit` calls) until `restart()` starts a new
    cycle. Before each batch it assigns the rate to
    `model.optimizer.learning_rate`, which must therefore be a plain float
    (a variable), not a `LearningRateSchedule`: two things setting the rate
    would fight. A schedule that moves the momentum needs an optimizer whose
    momentum is a variable, as `kerasbert.training.optimizers` provides.
    Every step is recorded in `trace`; `logs["learning_rate"]` (and
    `logs["momentum"]` when it is cycled) are written after each batch and
    epoch, so `History` and the progress bar show them. With
    `steps_per_execution > 1` the rate changes once per execution.

    Args:
        schedule: the schedule to apply.

    Raises:
        TypeError: when training begins, if the optimizer's learning rate is
            a `LearningRateSchedule`, or the schedule moves a momentum that
            the optimizer keeps as a Python float.

    Example:
    >>> callback = CyclicalLearningRate(OneCycleSchedule(1e-4, total_steps=1000))
    >>> model.fit(train, epochs=4, callbacks=[callback])
    >>> callback.write_trace("runs/demo")   # runs/demo/lr_trace.csv

    Reference:
        Smith 2017, arXiv:1506.01186; Smith 2018, arXiv:1803.09820.
    """

    def __init__(self, schedule):
        super().__init__()
        for method in ("momentum", "restarted", "get_config"):
            if not callable(schedule) or not callable(getattr(schedule, method, None)):
                raise TypeError(
                    "Invalid type for argument `schedule`. Expected a schedule of "
                    "kerasbert.training.schedules (CyclicalSchedule, OneCycleSchedule, LinearSchedule). "
                    f"Received: schedule={schedule!r} of type {type(schedule).__name__}"
                )
        self.schedule = schedule
        self.trace = []
        self.epoch = 0
        self._step = 0
        self._batch_begin = 0
        self._learning_rate = None
        self._momentum = None

    @property
    def step(self) -> int:
        """The step the next batch will use."""
        return self._step

    @property
    def cycle_momentum(self) -> bool:
        """Whether the schedule moves the momentum."""
        return self.schedule.momentum(0) is not None

    def rates(self, step):
        """`(learning_rate, momentum)` at `step`; momentum is None unless cycled."""
        return self.schedule(step), self.schedule.momentum(step)

    def restart(self, total_steps=None, maximal_learning_rate=None):
        """Starts a new cycle at step 0, e.g. at an unfreezing stage.

        Args:
            total_steps: a one-cycle schedule's new length in batches; None
                keeps the current one. Cyclical schedules keep theirs,
                `2 * step_size`.
            maximal_learning_rate: the new cycle's peak; None keeps the
                current one.

        Raises:
            ValueError: the schedule refuses the values; it is left as it was.
        """
        self.schedule = self.schedule.restarted(total_steps, maximal_learning_rate)
        self._step = 0

    # === Keras hooks ===

    def on_train_begin(self, logs=None):
        optimizer = self.model.optimizer
        if not isinstance(optimizer.learning_rate, keras.Variable):
            raise TypeError(
                "CyclicalLearningRate sets the learning rate itself before every "
                "batch, but this optimizer computes it from a "
                f"{type(optimizer.learning_rate).__name__} (a LearningRateSchedule?). "
                "Give the optimizer a float `learning_rate` instead."
            )
        if self.cycle_momentum and _momentum_variable(optimizer) is None:
            raise TypeError(
                f"This {type(self.schedule).__name__} moves the momentum, but "
                f"this {type(optimizer).__name__} keeps it (`beta_1` or "
                "`momentum`) as a Python float, which the compiled train step "
                "reads only once, when it is traced. Build the optimizer with "
                "`kerasbert.training.optimizers.build_optimizer` (its momentum is a "
                "variable), or build the schedule with `cycle_momentum=False`."
            )

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        learning_rate, momentum = self.rates(self._step)
        optimizer = self.model.optimizer
        optimizer.learning_rate = learning_rate
        if momentum is not None:
            _momentum_variable(optimizer).assign(momentum)
        else:
            momentum = _read_momentum(optimizer)
        self._learning_rate, self._momentum = learning_rate, momentum
        self._batch_begin = batch
        self.trace.append(
            {
                "step": self._step,
                "epoch": self.epoch,
                "learning_rate": learning_rate,
                "momentum": momentum,
            }
        )

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the last step of the execution, so this also counts
        # right with `steps_per_execution > 1`.
        self._step += max(1, batch - self._batch_begin + 1)
        self._write_logs(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._write_logs(logs)

    def _write_logs(self, logs):
        if logs is None or self._learning_rate is None:
            return
        logs["learning_rate"] = self._learning_rate
        if self.cycle_momentum:
            logs["momentum"] = self._momentum

    # === Resuming ===

    def get_state(self) -> dict:
        """The position in the schedule, for resuming a killed run."""
        return {
            "step": self._step,
            "schedule": self.schedule.get_config(),
            "trace": list(self.trace),
        }

    def set_state(self, state):
        """Continues from a `get_state()` of an earlier process."""
        self._step = int(state["step"])
        self.schedule = schedules.schedule_from_config(state["schedule"])
        self.trace = list(state["trace"])

    # === Output ===

    def write_trace(self, path) -> Path:
        """Writes `trace` as CSV: step, epoch, learning_rate, momentum.

        Args:
            path: a file, or an existing directory to write `lr_trace.csv`
                in.

        Returns:
            The path of the file written.
        """
        path = Path(path)
        if path.is_dir():
            path = path / rundir.LR_TRACE
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["step", "epoch", "learning_rate", "momentum"])
            writer.writeheader()
            writer.writerows(
                {**row, "momentum": "" if row["momentum"] is None else row["momentum"]}
                for row in self.trace
            )
        return path


def _momentum_variable(optimizer):
    """The variable holding `optimizer`'s momentum, or None if it is a float."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    for name in ("beta_1", "momentum"):
        value = getattr(optimizer, name, None)
        if isinstance(value, keras.Variable):
            return value
    return None


def _read_momentum(optimizer):
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    for name in ("beta_1", "momentum"):
        value = getattr(optimizer, name, None)
        if isinstance(value, keras.Variable) or is_real(value):
            return float(ops.convert_to_numpy(value))
    return None
