"""tf.distribute: two-worker MultiWorkerMirrored on loopback against one-process Mirrored."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from kerasbert.training import distribute, keras_compat
from tests.support.exports import assert_session_answers_like_tf2_load
from tests.support.tiny import QUICKSTART_CSV, tiny_config_dict

# Runs kerasbert.train in a process whose one CPU is split into two logical
# devices, so MirroredStrategy has two replicas as the two workers do.
TWO_CPU_TRAIN = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from kerasbert.train import main
sys.exit(main(sys.argv[1:]))
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path, name, strategy):
    raw = tiny_config_dict(
        QUICKSTART_CSV,
        tmp_path,
        training={
            "epochs": 2,
            "batch_size": 16,
            "layerwise_decay": 0.8,
            "schedule": {"mode": "one_cycle", "maximal_learning_rate": 2e-3},
            "unfreezing": [
                {"epochs": 1, "trainable_layers": 0},
                {"epochs": 1, "trainable_layers": "all"},
            ],
            "runs_dir": str(tmp_path / name / "runs"),
        },
        export={"base_path": str(tmp_path / name / "saved_models")},
    )
    raw["name"] = name
    raw["distribution"] = {"strategy": strategy}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def weights_of(path):
    out = {}
    with h5py.File(path) as f:
        f.visititems(
            lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None
        )
    return out


def run_dir_from(stderr):
    for line in stderr.splitlines():
        if "run directory:" in line:
            return Path(line.split("run directory:")[1].strip())
    raise AssertionError(f"no run directory in the log: {stderr[-1000:]}")


def test_is_chief_follows_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.is_chief()
    cluster = {"worker": ["a:1", "b:2"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})
    )
    assert distribute.is_chief()
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    )
    assert not distribute.is_chief()
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps(
            {"cluster": {**cluster, "chief": ["c:3"]}, "task": {"type": "worker", "index": 0}}
        ),
    )
    assert not distribute.is_chief()


def test_multi_worker_without_tf_config_is_refused(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.make_strategy("multi_worker_mirrored")


def run_two_workers(config) -> list[str]:
    """`kerasbert.train --config` as worker 0 (the chief) and worker 1 on loopback.

    Returns:
        Each worker's stderr, once both exited 0.
    """
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    workers = []
    for index in range(2):
        task = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "kerasbert.train", "--config", str(config)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "TF_CONFIG": json.dumps(task)},
            )
        )
    outputs = []
    try:
        for worker in workers:
            _, err = worker.communicate(timeout=300)
            outputs.append(err)
            assert worker.returncode == 0, err[-3000:]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    return outputs


def test_installed_keras_still_needs_the_multi_worker_fix():
    # When this fails, Keras fixed keras-team/keras#20585: delete
    # kerasbert/keras_compat.py and its call in kerasbert/distribute.py.
    assert keras_compat.needs_fix()


def test_two_workers_match_one_process_mirrored(tmp_path):
    mirrored = write_config(tmp_path, "mirrored", "mirrored")
    done = subprocess.run(
        [sys.executable, "-c", TWO_CPU_TRAIN, "--config", str(mirrored)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reference_dir = run_dir_from(done.stderr)

    config = write_config(tmp_path, "workers", "multi_worker_mirrored")
    outputs = run_two_workers(config)
    chief_dir, other_dir = (run_dir_from(err) for err in outputs)
    assert chief_dir.parent.parent == tmp_path / "workers" / "runs"
    # The other worker's scratch directory is gone, and it waited for the
    # chief's export instead of looking crashed to it.
    assert not other_dir.exists()
    assert "crashed" not in outputs[0], outputs[0][-3000:]
    a = weights_of(chief_dir / "best.weights.h5")
    b = weights_of(reference_dir / "best.weights.h5")
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)
    exports = list((tmp_path / "workers" / "saved_models").rglob("saved_model.pb"))
    assert len(exports) == 1
    assert_session_answers_like_tf2_load(exports[0].parent)
    (mirrored_export,) = (tmp_path / "mirrored" / "saved_models").rglob("saved_model.pb")
    assert_session_answers_like_tf2_load(mirrored_export.parent)
    loss_workers = pd.read_csv(chief_dir / "history.csv")["loss"].to_numpy()
    loss_mirrored = pd.read_csv(reference_dir / "history.csv")["loss"].to_numpy()
    np.testing.assert_allclose(loss_workers, loss_mirrored, atol=1e-5)
