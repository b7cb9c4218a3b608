"""Resuming a killed run where it stopped, schedule included.

At the end of every epoch `TrainingState` writes, atomically, everything the
rest of the run depends on: every model variable (weights and the dropout
seed generators), every optimizer variable (moments, iteration count), and
the state of the stateful callbacks (learning-rate position, unfreezing
stage, early stopping, best checkpoint). The data order needs nothing saved:
`pipeline.make_training_dataset` draws epoch `e`'s order from `(seed, e)`.

Keras' own `BackupAndRestore` saves the weights and the epoch but not the
callbacks' state, which a cyclical schedule and progressive unfreezing need.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from kerasbert import rundir
from kerasbert.files import write_bytes


class TrainingState(keras.callbacks.Callback):
    """Saves the state of training at every epoch end, for `--resume`.

    Args:
        directory: where the state goes (`<run>/resume`).
        stateful: `{name: callback}`; each has `get_state()` and
            `set_state(state)` returning/taking JSON-serialisable data.
    """

    def __init__(self, directory, stateful):
        super().__init__()
        self.directory = Path(directory)
        self.stateful = dict(stateful)

    def on_epoch_end(self, epoch, logs=None):
        self.directory.mkdir(parents=True, exist_ok=True)
        arrays = {f"model/{i}": np.asarray(v.numpy()) for i, v in enumerate(self.model.variables)}
        optimizer = self.model.optimizer
        arrays.update(
            {f"optimizer/{i}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
        )
        meta = {
            "epoch": epoch + 1,
            "callbacks": {name: cb.get_state() for name, cb in self.stateful.items()},
            "learning_rate": float(np.asarray(optimizer.learning_rate.numpy())),
        }
        # Write both files under temporary names, then rename: a kill at any
        # moment leaves the previous epoch's complete state.
        write_bytes(self.directory / rundir.STATE_VARIABLES, lambda f: np.savez(f, **arrays))
        write_bytes(self.directory / rundir.STATE, lambda f: f.write(json.dumps(meta).encode()))


def load_state(directory):
    """The saved `(state, arrays)` of a run, or None when none was saved."""
    directory = Path(directory)
    if not (directory / rundir.STATE).is_file():
        return None
    state = json.loads((directory / rundir.STATE).read_text())
    with np.load(directory / rundir.STATE_VARIABLES) as data:
        arrays = {k: data[k] for k in data.files}
    if len([k for k in arrays if k.startswith("model/")]) == 0:
        raise ValueError(f"{directory}: the saved training state holds no model variables")
    return state, arrays


def restore_state(model, state, arrays, stateful):
    """Puts saved variables and callback states back; returns the next epoch.

    The optimizer must already be built on the same variables.

    Raises:
        ValueError: the saved state does not fit this model.
    """
    model_arrays = [
        arrays[f"model/{i}"] for i in range(len([k for k in arrays if k.startswith("model/")]))
    ]
    optimizer_arrays = [
        arrays[f"optimizer/{i}"]
        for i in range(len([k for k in arrays if k.startswith("optimizer/")]))
    ]
    _assign_all(model.variables, model_arrays, "model")
    _assign_all(model.optimizer.variables, optimizer_arrays, "optimizer")
    model.optimizer.learning_rate.assign(state["learning_rate"])
    for name, callback in stateful.items():
        if name in state["callbacks"]:
            callback.set_state(state["callbacks"][name])
    return int(state["epoch"])


def _assign_all(variables, values, what):
    if len(variables) != len(values):
        raise ValueError(
            f"the saved {what} state has {len(values)} variables but the {what} "
            f"has {len(variables)}; was the run made with another config?"
        )
    for variable, value in zip(variables, values):
        if tuple(variable.shape) != value.shape:
            raise ValueError(
                f"the saved {what} variable {variable.path} has shape {value.shape}, "
                f"expected {tuple(variable.shape)}; was the run made with another config?"
            )
        variable.assign(value)


# === Keras' own callbacks, made resumable ===


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` whose patience count survives a resume."""

    def get_state(self):
        return {
            "wait": int(self.wait),
            "best": _plain(self.best),
            "best_epoch": int(self.best_epoch),
        }

    def set_state(self, state):
        self._resumed = state

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        state = getattr(self, "_resumed", None)
        if state is not None:
            self.wait, self.best, self.best_epoch = (
                state["wait"],
                state["best"],
                state["best_epoch"],
            )


class ResumableModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint` that remembers the best value across a resume."""

    def get_state(self):
        return {"best": _plain(self.best)}

    def set_state(self, state):
        self.best = state["best"]


def _plain(value):
    # JSON keeps inf (a best value not yet set) as Infinity.
    return None if value is None else float(np.asarray(value))


def write_status(run_dir, status, **extra):
    """Marks a run `running`, `finished` or `failed` in `<run>/status.json`."""
    path = Path(run_dir) / rundir.STATUS
    write_bytes(path, lambda f: f.write(json.dumps({"status": status, **extra}).encode()))
