"""`tf.distribute` strategies by name, and who writes the run's files.

The model, its optimizer and its metrics are created inside the strategy's
scope (see `training.prepare` and `training.compile_for_stage`); Keras then
splits each global batch across the replicas and, under a multi-worker
strategy, shards the data per worker.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy for `distribution.strategy`.

    Args:
        name: `"auto"`, `"one_device"`, `"mirrored"`,
            `"multi_worker_mirrored"` or `"tpu"`.

    Raises:
        ValueError: `multi_worker_mirrored` without `TF_CONFIG`, or `tpu`
            where no TPU can be reached.
    """
    # Physical, not logical: listing logical devices starts TensorFlow's
    # runtime, after which collective ops can no longer be configured.
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "distribution.strategy multi_worker_mirrored reads the cluster from the "
                "TF_CONFIG environment variable, which is not set"
            )
        from kerasbert.training import keras_compat

        keras_compat.apply()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as e:
            raise ValueError(
                f"distribution.strategy tpu: no TPU found ({str(e).splitlines()[0]})"
            ) from None
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown distribution.strategy {name!r}")


def wait_for_workers(strategy):
    """Returns once every worker of a multi-worker strategy has called it too.

    The chief exports after training while the other workers have nothing
    left to do; a worker that exits meanwhile looks to the chief's
    coordination service like a task that crashed. One collective op makes
    them wait. Without other workers it returns at once.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    if strategy.extended._num_workers < 2:
        return
    barrier = tf.function(lambda: strategy.run(lambda: tf.constant(1.0)))
    strategy.reduce(tf.distribute.ReduceOp.SUM, barrier(), axis=None)


def is_chief() -> bool:
    """Whether this process writes the run directory and the export.

    Without `TF_CONFIG` every process is its own chief; in a cluster the
    chief is the `chief` task, or worker 0 when there is none.
    """
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task") or {}
    kind, index = task.get("type"), task.get("index", 0)
    if kind is None:
        return True
    if kind == "chief":
        return True
    has_chief = "chief" in (config.get("cluster") or {})
    return kind == "worker" and index == 0 and not has_chief
