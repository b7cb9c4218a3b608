"""Fixes for `model.fit` under `MultiWorkerMirroredStrategy` in Keras 3.

Upstream: keras-team/keras issue 20585 (open for Keras 3.15 with TF 2.21):
`fit` under `MultiWorkerMirroredStrategy` fails in two places of Keras'
TensorFlow trainer (`keras/src/backend/tensorflow/trainer.py`):

1. `TensorFlowTrainer._maybe_symbolic_build` reduces the distributed first
   batch with `strategy.reduce("MEAN", batch)`, which the collective
   strategy cannot do ("Attempt to convert a value (PerReplica ...)"). The
   symbolic build only needs the batch's structure and shapes, so the first
   local replica's batch serves.
2. `reduce_per_replica` reduces every value of a multi-worker run with
   `strategy.reduce("MEAN", v, axis=0)`, which fails for the scalar metrics
   and loss ("Invalid reduction dimension 0 for input with 0 dimensions");
   scalars need `axis=None`.

`apply()` patches exactly these two functions, and only when the installed
Keras still has the faulty code (`needs_fix()` reads its source), so an
upgraded Keras runs untouched. `tests/test_distribute.py` fails once Keras
is fixed, which is the signal to delete this module.
"""

from __future__ import annotations

import inspect

import tensorflow as tf


def _trainer_module():
    from keras.src.backend.tensorflow import trainer

    return trainer


def needs_fix() -> bool:
    """Whether the installed Keras still has both faults of issue 20585."""
    trainer = _trainer_module()
    build = inspect.getsource(trainer.TensorFlowTrainer._maybe_symbolic_build)
    reduce = inspect.getsource(trainer.reduce_per_replica)
    return "distribute_strategy.reduce(" in build and 'strategy.reduce("MEAN", v, axis=0)' in reduce


def apply() -> bool:
    """Patches Keras' TensorFlow trainer when needed; returns whether it did."""
    trainer = _trainer_module()
    if getattr(trainer, "_kerasbert_patched", False) or not needs_fix():
        return False
    original_reduce = trainer.reduce_per_replica

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tf.nest.map_structure(
                    lambda x: (
                        self.distribute_strategy.experimental_local_results(x)[0]
                        if isinstance(x, tf.distribute.DistributedValues)
                        else x
                    ),
                    batch,
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):

            def reduce_one(v):
                rank = v.shape.rank if hasattr(v, "shape") and v.shape.rank is not None else None
                if rank == 0 or (
                    trainer._is_per_replica_instance(v)
                    and strategy.experimental_local_results(v)[0].shape.rank == 0
                ):
                    return strategy.reduce("MEAN", v, axis=None)
                return strategy.reduce("MEAN", v, axis=0)

            return tf.nest.map_structure(reduce_one, values)
        return original_reduce(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_per_replica
    trainer._kerasbert_patched = True
    return True
