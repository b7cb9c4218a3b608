"""Keras callbacks for ULMFiT-style fine-tuning.

`CyclicalLearningRate` drives the optimizer's learning rate (and, for the
1cycle policy, its momentum) batch by batch from `kerasbert.schedules`.
`ProgressiveUnfreezing` trains the top of the network first and unfreezes
downwards stage by stage, all inside one `model.fit`.

Both are thin: the math lives in `kerasbert.schedules`, the per-layer rates
in `kerasbert.optimizers`.
"""

from __future__ import annotations

import csv
import math
import numbers
from pathlib import Path

import keras
from keras import ops

from kerasbert import schedules

MODES = schedules.CYCLIC_MODES + ("one_cycle",)
TRACE_FILENAME = "lr_trace.csv"


class CyclicalLearningRate(keras.callbacks.Callback):
    """Sets the learning rate before every batch from a cyclical schedule.

    The schedule is a function of a step that counts batches across epochs
    (and across `fit` calls) until `restart()` sets it back to 0. Before each
    batch the callback assigns the rate to `model.optimizer.learning_rate`,
    which must therefore be a plain float (a variable), not a
    `LearningRateSchedule`: two things setting the rate would fight. Every
    step is recorded in `trace`; `logs["learning_rate"]` (and
    `logs["momentum"]` when it is cycled) are written after each batch and
    epoch, so `History` and the progress bar show them.

    Modes `"triangular"`, `"triangular2"` and `"exp_range"` go between
    `initial_learning_rate` and `maximal_learning_rate` with a half cycle of
    `step_size` batches (Smith 2017). Mode `"one_cycle"` (see the
    `one_cycle` constructor) warms up to `maximal_learning_rate` and anneals
    over `total_steps` batches while moving the optimizer's momentum the
    other way (Smith 2018); that needs an optimizer whose momentum is a
    variable, as `kerasbert.optimizers` provides.

    With `steps_per_execution > 1` the rate changes once per execution.

    Args:
        initial_learning_rate: cyclic modes: the lower bound.
        maximal_learning_rate: the upper bound, or one_cycle's peak.
        step_size: cyclic modes: batches in half a cycle.
        mode: `"triangular"`, `"triangular2"`, `"exp_range"` or
            `"one_cycle"`.
        gamma: `"exp_range"`: the amplitude's decay per step, in (0, 1].
        total_steps: `"one_cycle"`: batches in the cycle.
        pct_start: `"one_cycle"`: the warm-up fraction of the cycle.
        div_factor: `"one_cycle"`: the start is the peak over this.
        final_div_factor: `"one_cycle"`: the end is the start over this.
        base_momentum: `"one_cycle"`: the momentum at the peak rate.
        max_momentum: `"one_cycle"`: the momentum at the start and the end.
        cycle_momentum: `"one_cycle"`: whether to move the momentum too.

    Raises:
        ValueError: for an unknown mode, arguments the mode does not use,
            or values `kerasbert.schedules` rejects.
        TypeError: when training begins, if the optimizer's learning rate is
            a `LearningRateSchedule`, or `"one_cycle"` should move a momentum
            that the optimizer keeps as a Python float.

    Example:
    >>> schedule = CyclicalLearningRate(1e-5, 1e-4, step_size=200)
    >>> model.fit(train, epochs=4, callbacks=[schedule])
    >>> schedule.write_trace("runs/demo")   # runs/demo/lr_trace.csv

    Reference:
        Smith 2017, arXiv:1506.01186; Smith 2018, arXiv:1803.09820.
    """

    def __init__(
        self,
        initial_learning_rate=None,
        maximal_learning_rate=None,
        step_size=None,
        mode="triangular",
        gamma=1.0,
        *,
        total_steps=None,
        pct_start=0.25,
        div_factor=25.0,
        final_div_factor=1e4,
        base_momentum=0.85,
        max_momentum=0.95,
        cycle_momentum=True,
    ):
        super().__init__()
        if mode not in MODES:
            hint = (
                " A constant learning rate needs no callback: give it to the "
                "optimizer and leave CyclicalLearningRate out."
                if mode == "constant"
                else ""
            )
            raise ValueError(
                "Invalid value for argument `mode`. Expected one of "
                f"{', '.join(repr(m) for m in MODES)}.{hint} Received: mode={mode!r}"
            )
        unused = (
            {"initial_learning_rate": initial_learning_rate, "step_size": step_size}
            if mode == "one_cycle"
            else {"total_steps": total_steps}
        )
        for name, value in unused.items():
            if value is not None:
                raise ValueError(
                    f"Invalid value for argument `{name}`: mode {mode!r} does not "
                    f"use it; leave it out. Received: {name}={value!r}"
                )
        self.mode = mode
        self.initial_learning_rate = initial_learning_rate
        self.maximal_learning_rate = maximal_learning_rate
        self.step_size = step_size
        self.gamma = gamma
        self.total_steps = total_steps
        self.pct_start = pct_start
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor
        self.base_momentum = base_momentum
        self.max_momentum = max_momentum
        self.cycle_momentum = bool(cycle_momentum) and mode == "one_cycle"
        # Evaluating step 0 checks every argument now rather than at the
        # first batch.
        self.rates(0)
        self.trace = []
        self.epoch = 0
        self._step = 0
        self._batch_begin = 0
        self._learning_rate = None
        self._momentum = None

    @classmethod
    def one_cycle(
        cls,
        maximal_learning_rate,
        total_steps,
        pct_start=0.25,
        div_factor=25.0,
        final_div_factor=1e4,
        base_momentum=0.85,
        max_momentum=0.95,
        cycle_momentum=True,
    ):
        """The 1cycle policy over `total_steps` batches; see `schedules.one_cycle`.

        Example:
        >>> schedule = CyclicalLearningRate.one_cycle(1e-4, total_steps=1000)
        """
        return cls(
            maximal_learning_rate=maximal_learning_rate,
            mode="one_cycle",
            total_steps=total_steps,
            pct_start=pct_start,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
            base_momentum=base_momentum,
            max_momentum=max_momentum,
            cycle_momentum=cycle_momentum,
        )

    @property
    def step(self) -> int:
        """The step the next batch will use."""
        return self._step

    def rates(self, step):
        """`(learning_rate, momentum)` at `step`; momentum is None unless cycled."""
        if self.mode == "one_cycle":
            learning_rate, momentum = schedules.one_cycle(
                step,
                self.total_steps,
                self.maximal_learning_rate,
                pct_start=self.pct_start,
                div_factor=self.div_factor,
                final_div_factor=self.final_div_factor,
                base_momentum=self.base_momentum,
                max_momentum=self.max_momentum,
            )
            return learning_rate, (momentum if self.cycle_momentum else None)
        learning_rate = schedules.cyclical_learning_rate(
            step,
            self.initial_learning_rate,
            self.maximal_learning_rate,
            self.step_size,
            mode=self.mode,
            gamma=self.gamma,
        )
        return learning_rate, None

    def restart(self, total_steps=None, maximal_learning_rate=None):
        """Starts a new cycle at step 0, e.g. at an unfreezing stage.

        Args:
            total_steps: `"one_cycle"`: the new cycle's length in batches;
                None keeps the current one. The cyclic modes ignore it: their
                cycle length is `2 * step_size`.
            maximal_learning_rate: the new cycle's peak; None keeps the
                current one.
        """
        if maximal_learning_rate is not None:
            previous = self.maximal_learning_rate
            self.maximal_learning_rate = maximal_learning_rate
            try:
                self.rates(0)
            except ValueError:
                self.maximal_learning_rate = previous
                raise
        if total_steps is not None and self.mode == "one_cycle":
            if not _is_integer(total_steps) or total_steps < 1:
                raise ValueError(
                    "Invalid value for argument `total_steps`. Expected a "
                    f"positive integer. Received: total_steps={total_steps!r}"
                )
            self.total_steps = total_steps
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
                f"CyclicalLearningRate mode 'one_cycle' moves the momentum, but "
                f"this {type(optimizer).__name__} keeps it (`beta_1` or "
                "`momentum`) as a Python float, which the compiled train step "
                "reads only once, when it is traced. Build the optimizer with "
                "`kerasbert.optimizers.build_optimizer` (its momentum is a "
                "variable), or pass `cycle_momentum=False`."
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
            "total_steps": self.total_steps,
            "maximal_learning_rate": self.maximal_learning_rate,
            "trace": list(self.trace),
        }

    def set_state(self, state):
        """Continues from a `get_state()` of an earlier process."""
        self._step = int(state["step"])
        self.total_steps = state["total_steps"]
        self.maximal_learning_rate = state.get("maximal_learning_rate", self.maximal_learning_rate)
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
            path = path / TRACE_FILENAME
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(
                f, fieldnames=["step", "epoch", "learning_rate", "momentum"]
            )
            writer.writeheader()
            writer.writerows(
                {**row, "momentum": "" if row["momentum"] is None else row["momentum"]}
                for row in self.trace
            )
        return path


class ProgressiveUnfreezing(keras.callbacks.Callback):
    """Unfreezes a classifier from the top down, stage by stage, in one `fit`.

    Stage `i` trains for `stages[i][0]` epochs with the top `stages[i][1]`
    transformer layers trainable (or every layer for `"all"`); the head is
    always trainable, the embeddings only with `"all"`. Because all stages
    run inside one `model.fit`:

    - the optimizer is built, at the start of training, on every variable
      that some stage will train (Keras refuses variables an optimizer was
      not built with, with "Unknown variable");
    - at each stage boundary the trainable flags are set and the train
      function is rebuilt (`model.make_train_function(force=True)`): the
      compiled step captures the trainable variables when it is traced, and
      `fit` looks up `model.train_function` before every batch.

    Every stage's trainable parameter count goes to `stage_log`, to the
    epoch logs (`stage`, `trainable_params`) and, with `verbose`, to stdout.

    Args:
        stages: a list of `(epochs, trainable_layers)` pairs;
            `trainable_layers` is an integer from 0 to the number of
            transformer layers, counted from the top, or `"all"`.
        groups: the classifier's `kerasbert.models.LayerGroups`.
        on_stage_begin: optional `fn(stage, record)`, called after a stage's
            flags are set; `record` is the stage's `stage_log` entry.
        schedule: optional `CyclicalLearningRate` (anything with
            `restart(total_steps, maximal_learning_rate)`) to restart at every
            stage, with `total_steps` the stage's epochs times the steps per
            epoch.
        maximal_learning_rates: optional list, one per stage, of the peak
            each stage's restart gives `schedule`; a None entry takes the
            peak `schedule` has when this callback is made. Needs `schedule`.
        steps_per_epoch: batches per epoch, for the restarts; None takes
            them from `fit` (`params["steps"]`), which knows them unless the
            dataset's length is unknown (then `total_steps` is None and a
            one-cycle schedule keeps its length).
        verbose: 1 prints a line per stage; 0 is silent.

    Raises:
        ValueError: for an empty or malformed `stages`, or more trainable
            layers than the backbone has.

    Example:
    >>> unfreezing = ProgressiveUnfreezing(
    ...     [(1, 0), (1, 2), (2, "all")], layer_groups(classifier), schedule=clr)
    >>> classifier.fit(train, epochs=4, callbacks=[clr, unfreezing])

    Reference:
        Howard & Ruder 2018, arXiv:1801.06146, section 3.3.
    """

    def __init__(
        self,
        stages,
        groups,
        on_stage_begin=None,
        schedule=None,
        steps_per_epoch=None,
        maximal_learning_rates=None,
        verbose=1,
    ):
        super().__init__()
        stages = list(stages) if stages is not None else []
        if not stages:
            raise ValueError(
                "Invalid value for argument `stages`. Expected a non-empty list "
                f"of (epochs, trainable_layers) pairs. Received: stages={stages!r}"
            )
        checked = []
        for index, stage in enumerate(stages):
            try:
                epochs, trainable_layers = stage
            except (TypeError, ValueError):
                raise ValueError(
                    f"Invalid value for argument `stages[{index}]`. Expected an "
                    f"(epochs, trainable_layers) pair. Received: {stage!r}"
                ) from None
            if not _is_integer(epochs) or epochs < 1:
                raise ValueError(
                    f"Invalid value for argument `stages[{index}]`: epochs must be "
                    f"a positive integer. Received: epochs={epochs!r}"
                )
            _check_trainable_layers(trainable_layers, len(groups.transformer))
            checked.append((int(epochs), trainable_layers))
        if on_stage_begin is not None and not callable(on_stage_begin):
            raise TypeError(
                "Invalid value for argument `on_stage_begin`. Expected a callable "
                f"fn(stage, record). Received: {on_stage_begin!r}"
            )
        if steps_per_epoch is not None and (
            not _is_integer(steps_per_epoch) or steps_per_epoch < 1
        ):
            raise ValueError(
                "Invalid value for argument `steps_per_epoch`. Expected a positive "
                f"integer or None. Received: steps_per_epoch={steps_per_epoch!r}"
            )
        if maximal_learning_rates is not None:
            maximal_learning_rates = list(maximal_learning_rates)
            if schedule is None or len(maximal_learning_rates) != len(checked) or any(
                rate is not None and not (_is_real(rate) and rate > 0)
                for rate in maximal_learning_rates
            ):
                raise ValueError(
                    "Invalid value for argument `maximal_learning_rates`. Expected, "
                    "with a `schedule`, one positive rate or None per stage. "
                    f"Received: maximal_learning_rates={maximal_learning_rates!r} "
                    f"for {len(checked)} stages"
                )
            built_peak = getattr(schedule, "maximal_learning_rate", None)
            maximal_learning_rates = [built_peak if rate is None else rate for rate in maximal_learning_rates]
        self.stages = checked
        self.maximal_learning_rates = maximal_learning_rates or [None] * len(checked)
        self.groups = groups
        self.on_stage_begin = on_stage_begin
        self.schedule = schedule
        self.steps_per_epoch = steps_per_epoch
        self.verbose = verbose
        self.stage_log = []
        self.stage = None
        ends = [sum(epochs for epochs, _ in checked[: i + 1]) for i in range(len(checked))]
        self._starts = [end - epochs for end, (epochs, _) in zip(ends, checked)]
        self.epochs = ends[-1]

    def stage_at(self, epoch) -> int:
        """The index of the stage that `epoch` (0-based) belongs to."""
        for index, start in reversed(list(enumerate(self._starts))):
            if epoch >= start:
                return index
        return 0

    def on_train_begin(self, logs=None):
        planned = (self.params or {}).get("epochs")
        if planned is not None and planned != self.epochs:
            raise ValueError(
                f"The unfreezing stages add up to {self.epochs} epochs but fit "
                f"was called with epochs={planned}; make them equal."
            )
        build_optimizer_variables(self.model, self.groups)
        # Set the first stage's flags at the first epoch even when this
        # callback ran in an earlier `fit`.
        self.stage = None
        resumed = getattr(self, "_resumed", None)
        if resumed is not None:
            # Continue inside the saved stage: its flags, no schedule restart.
            self._resumed = None
            self.stage, self.stage_log = resumed["stage"], resumed["stage_log"]
            set_trainable_layers(self.groups, self.stages[self.stage][1])
            # `fit` made its train function before this hook; one traced in
            # an earlier `fit` would still hold the old trainable set.
            self.model.make_train_function(force=True)

    def get_state(self) -> dict:
        """The current stage and the log so far, for resuming a killed run."""
        return {"stage": self.stage, "stage_log": list(self.stage_log)}

    def set_state(self, state):
        """Continues from a `get_state()`; applied when training begins."""
        self._resumed = state if state.get("stage") is not None else None

    def on_epoch_begin(self, epoch, logs=None):
        stage = self.stage_at(epoch)
        if stage == self.stage:
            return
        epochs, trainable_layers = self.stages[stage]
        set_trainable_layers(self.groups, trainable_layers)
        self.model.make_train_function(force=True)
        self.stage = stage
        record = {
            "stage": stage,
            "epoch": epoch,
            "epochs": epochs,
            "trainable_layers": trainable_layers,
            "trainable_params": count_trainable_params(self.model),
        }
        self.stage_log.append(record)
        if self.verbose:
            start = self._starts[stage]
            print(
                f"Stage {stage + 1}/{len(self.stages)}: epochs {start + 1}-"
                f"{start + epochs}, trainable_layers={trainable_layers}, "
                f"{record['trainable_params']:,} trainable parameters"
            )
        if self.schedule is not None:
            steps = self.steps_per_epoch or (self.params or {}).get("steps")
            self.schedule.restart(
                total_steps=epochs * steps if steps else None,
                maximal_learning_rate=self.maximal_learning_rates[stage],
            )
        if self.on_stage_begin is not None:
            self.on_stage_begin(stage, record)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.stage_log:
            logs["stage"] = self.stage
            logs["trainable_params"] = self.stage_log[-1]["trainable_params"]


# === Helpers ===


def set_trainable_layers(groups, trainable_layers):
    """Makes the top `trainable_layers` transformer layers and the head trainable.

    Args:
        groups: a `kerasbert.models.LayerGroups`.
        trainable_layers: an integer from 0 to the number of transformer
            layers, counted from the top, or `"all"` (embeddings too).

    Raises:
        ValueError: for any other value.

    Example:
    >>> set_trainable_layers(layer_groups(classifier), 2)
    >>> classifier.make_train_function(force=True)  # or compile again
    """
    num_layers = len(groups.transformer)
    _check_trainable_layers(trainable_layers, num_layers)
    everything = trainable_layers == "all"
    first_trainable = 0 if everything else num_layers - trainable_layers
    for layer in groups.embeddings:
        layer.trainable = everything
    for index, layer in enumerate(groups.transformer):
        layer.trainable = index >= first_trainable
    for layer in groups.head:
        layer.trainable = True


def build_optimizer_variables(model, groups):
    """Builds `model.optimizer` on every variable that any stage will train.

    A Keras 3 optimizer tracks exactly the variables it was built with and
    refuses others later. `fit` builds it on the variables trainable when it
    starts, so a schedule that unfreezes layers later needs it built on all
    of them first. The layers' trainable flags are left as they were.

    Args:
        model: a compiled model.
        groups: its `kerasbert.models.LayerGroups`.

    Raises:
        ValueError: when the model is not compiled, or its optimizer was
            already built on fewer variables.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError(
            "The model has no optimizer; call `model.compile(optimizer=...)` "
            "before building the optimizer's variables."
        )
    layers = groups.embeddings + groups.transformer + groups.head
    flags = [layer.trainable for layer in layers]
    try:
        for layer in layers:
            layer.trainable = True
        variables = list(model.trainable_variables)
    finally:
        for layer, flag in zip(layers, flags):
            layer.trainable = flag
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if not optimizer.built:
        optimizer.build(variables)
        return
    # Keras keeps the variables an optimizer was built on in
    # `_trainable_variables` (base_optimizer.py, `build`); no public API lists them.
    known = {id(v) for v in optimizer._trainable_variables}
    missing = [v.path for v in variables if id(v) not in known]
    if missing:
        raise ValueError(
            f"The optimizer was built on {len(known)} variables, without "
            f"{len(missing)} that later stages will train (e.g. {missing[0]!r}). "
            "Call `build_optimizer_variables(model, groups)` after compile and "
            "before any layer is frozen, or compile with a new optimizer."
        )


def count_trainable_params(model) -> int:
    """The number of scalars in `model.trainable_weights`."""
    return sum(math.prod(v.shape) for v in model.trainable_weights)


def _check_trainable_layers(trainable_layers, num_layers):
    if trainable_layers == "all":
        return
    if not _is_integer(trainable_layers) or not 0 <= trainable_layers <= num_layers:
        raise ValueError(
            "Invalid value for argument `trainable_layers`. Expected an integer "
            f"from 0 to {num_layers} (the backbone's transformer layers, counted "
            f'from the top) or "all". Received: trainable_layers={trainable_layers!r}'
        )


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
        if isinstance(value, keras.Variable) or _is_real(value):
            return float(ops.convert_to_numpy(value))
    return None


def _is_integer(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
