"""A run killed with SIGKILL mid-stage resumes to the same weights and LR trace."""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pandas as pd
import yaml

from tests.support.exports import assert_session_answers_like_tf2_load
from tests.support.tiny import QUICKSTART_CSV, tiny_config_dict

TRAIN = [sys.executable, "-m", "kerasbert.train"]
# One thread per op pool: the interrupted and the uninterrupted run must
# compute bit-for-bit alike.
DETERMINISTIC = {**os.environ, "TF_DETERMINISTIC_OPS": "1", "OMP_NUM_THREADS": "1"}


def write_config(tmp_path, name):
    raw = tiny_config_dict(
        QUICKSTART_CSV,
        tmp_path / name,
        training={
            "epochs": 5,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "schedule": {"mode": "one_cycle", "maximal_learning_rate": 2e-3},
            "unfreezing": [
                {"epochs": 1, "trainable_layers": 0},
                {"epochs": 4, "trainable_layers": "all"},
            ],
        },
        export={"enabled": False},
    )
    raw["training"]["runs_dir"] = str(tmp_path / "runs")
    raw["name"] = name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def weights_of(run_dir):
    with h5py.File(run_dir / "best.weights.h5") as f:
        out = {}
        f.visititems(
            lambda name, obj: (
                out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return out


def only_run(tmp_path, name):
    (run_dir,) = (tmp_path / "runs" / name).iterdir()
    return run_dir


def train_until_killed(config, tmp_path, name, after_epoch):
    """Starts `kerasbert.train --config`, SIGKILLs it once epoch `after_epoch`'s state is saved.

    Returns:
        The killed run's directory.
    """
    process = subprocess.Popen(
        [*TRAIN, "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=DETERMINISTIC,
    )
    try:
        deadline = time.monotonic() + 300
        run_dir = None
        while time.monotonic() < deadline and process.poll() is None:
            runs = tmp_path / "runs" / name
            if runs.is_dir() and any(runs.iterdir()):
                run_dir = only_run(tmp_path, name)
                if saved_epoch(run_dir) >= after_epoch:
                    break
            time.sleep(0.02)
        assert process.poll() is None, "training ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    return run_dir


def saved_epoch(run_dir):
    state = run_dir / "resume" / "state.json"
    if not state.is_file():
        return 0
    import json

    return json.loads(state.read_text())["epoch"]


def test_sigkill_mid_stage_then_resume_matches_an_uninterrupted_run(tmp_path):
    straight = write_config(tmp_path, "straight")
    done = subprocess.run(
        [*TRAIN, "--config", str(straight)],
        capture_output=True,
        text=True,
        timeout=400,
        env=DETERMINISTIC,
    )
    assert done.returncode == 0, done.stderr[-2000:]

    killed = write_config(tmp_path, "killed")
    # Killed once the state after epoch 2 exists: inside the second stage.
    run_dir = train_until_killed(killed, tmp_path, "killed", after_epoch=2)
    assert 2 <= saved_epoch(run_dir) < 5

    refused = subprocess.run(
        [*TRAIN, "--config", str(straight), "--resume", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        refused.returncode == 2
        and "differs from the one the run was started with" in refused.stderr
    )

    resumed = subprocess.run(
        [*TRAIN, "--config", str(killed), "--resume", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=400,
        env=DETERMINISTIC,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming at epoch" in resumed.stderr

    reference = only_run(tmp_path, "straight")
    a, b = weights_of(reference), weights_of(run_dir)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-6, err_msg=name)
    trace_a = pd.read_csv(reference / "lr_trace.csv")
    trace_b = pd.read_csv(run_dir / "lr_trace.csv")
    pd.testing.assert_frame_equal(trace_a, trace_b)
    history = pd.read_csv(run_dir / "history.csv")
    assert set(history["epoch"]) == {0, 1, 2, 3, 4}

    again = subprocess.run(
        [*TRAIN, "--config", str(killed), "--resume", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 2
    assert (
        again.stderr.strip()
        .splitlines()[-1]
        .endswith("the run finished already; start a new run instead")
    )

    # The resumed run exports, and the export answers as TF Serving loads it.
    from kerasbert import export

    assert export.main(["--run", str(run_dir), "--base-path", str(tmp_path / "sm")]) == 0
    assert_session_answers_like_tf2_load(tmp_path / "sm" / "killed" / "1")


def test_resume_of_a_directory_that_is_not_a_run(tmp_path):
    config = write_config(tmp_path, "x")
    done = subprocess.run(
        [*TRAIN, "--config", str(config), "--resume", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "not a run directory" in done.stderr
