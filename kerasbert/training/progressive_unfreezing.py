"""`ProgressiveUnfreezing`: the top of the network first, then downwards stage by stage, in one `fit`.

Which layers a stage trains is `kerasbert.models.layer_groups`'; the
per-layer rates are `kerasbert.training.optimizers`'; each stage restarts
a `CyclicalLearningRate`.
"""

from __future__ import annotations

import keras

from kerasbert.arguments import is_integer, is_real
from kerasbert.models.layer_groups import (
    build_optimizer_variables,
    check_trainable_layers,
    count_trainable_params,
    set_trainable_layers,
)


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

    Every stage's first epoch and trainable parameter count go to
    `stage_log` and, with `verbose`, to stdout. The epoch logs stay as Keras
    makes them: Keras prints every number there as a float on the epoch's
    line (`stage: 0.0000e+00`).

    Args:
        stages: a list of `(epochs, trainable_layers)` pairs;
            `trainable_layers` is an integer from 0 to the number of
            transformer layers, counted from the top, or `"all"`.
        groups: the classifier's `kerasbert.models.classifier.LayerGroups`.
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
            if not is_integer(epochs) or epochs < 1:
                raise ValueError(
                    f"Invalid value for argument `stages[{index}]`: epochs must be "
                    f"a positive integer. Received: epochs={epochs!r}"
                )
            check_trainable_layers(trainable_layers, len(groups.transformer))
            checked.append((int(epochs), trainable_layers))
        if on_stage_begin is not None and not callable(on_stage_begin):
            raise TypeError(
                "Invalid value for argument `on_stage_begin`. Expected a callable "
                f"fn(stage, record). Received: {on_stage_begin!r}"
            )
        if steps_per_epoch is not None and (not is_integer(steps_per_epoch) or steps_per_epoch < 1):
            raise ValueError(
                "Invalid value for argument `steps_per_epoch`. Expected a positive "
                f"integer or None. Received: steps_per_epoch={steps_per_epoch!r}"
            )
        if maximal_learning_rates is not None:
            maximal_learning_rates = list(maximal_learning_rates)
            if (
                schedule is None
                or len(maximal_learning_rates) != len(checked)
                or any(
                    rate is not None and not (is_real(rate) and rate > 0)
                    for rate in maximal_learning_rates
                )
            ):
                raise ValueError(
                    "Invalid value for argument `maximal_learning_rates`. Expected, "
                    "with a `schedule`, one positive rate or None per stage. "
                    f"Received: maximal_learning_rates={maximal_learning_rates!r} "
                    f"for {len(checked)} stages"
                )
            built_peak = schedule.schedule.maximal_learning_rate
            maximal_learning_rates = [
                built_peak if rate is None else rate for rate in maximal_learning_rates
            ]
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
