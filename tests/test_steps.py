"""A run counted in steps: `max_steps`, the linear schedule, evaluation every N steps."""

import json

import numpy as np
import pandas as pd
import pytest

from kerasbert.config import ConfigError, TrainingConfig
from kerasbert.config_loading import config_from_dict
from kerasbert.training.run import train
from kerasbert.training.schedules import LinearSchedule, schedule_from_config
from kerasbert.training.steps import plan, sparse_loss_and_accuracy
from tests.support.tiny import tiny_config_dict

# === The linear schedule ===


def hugging_face_linear(step, peak, total, warmup):
    """transformers' `get_linear_schedule_with_warmup` lambda, times the peak."""
    if step < warmup:
        return peak * step / max(1, warmup)
    return peak * max(0.0, (total - step) / max(1, total - warmup))


@pytest.mark.parametrize("total, ratio", [(100, 0.1), (37, 0.25), (10, 0.0), (3, 0.5)])
def test_linear_schedule_is_hugging_faces_warmup_then_decay(total, ratio):
    schedule = LinearSchedule(2e-5, total, ratio)
    warmup = int(np.ceil(ratio * total))  # TrainingArguments.get_warmup_steps
    assert [schedule(step) for step in range(total + 3)] == pytest.approx(
        [hugging_face_linear(step, 2e-5, total, warmup) for step in range(total + 3)]
    )
    assert schedule.momentum(0) is None


def test_linear_schedule_restarts_and_round_trips_its_config():
    schedule = LinearSchedule(1e-3, 100, 0.1).restarted(total_steps=20, maximal_learning_rate=5e-4)
    assert schedule.get_config() == {
        "maximal_learning_rate": 5e-4,
        "total_steps": 20,
        "warmup_ratio": 0.1,
    }
    again = schedule_from_config(schedule.get_config())
    assert type(again) is LinearSchedule and again.get_config() == schedule.get_config()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"maximal_learning_rate": 0, "total_steps": 10}, "maximal_learning_rate"),
        ({"maximal_learning_rate": 1e-3, "total_steps": 0}, "total_steps"),
        ({"maximal_learning_rate": 1e-3, "total_steps": 10, "warmup_ratio": 1}, "warmup_ratio"),
    ],
)
def test_linear_schedule_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LinearSchedule(**kwargs)


# === The config ===


def test_linear_mode_needs_a_peak_rate(tmp_path):
    raw = tiny_config_dict("data.csv", tmp_path, training={"schedule": {"mode": "linear"}})
    with pytest.raises(ConfigError, match="mode 'linear' needs `maximal_learning_rate`"):
        config_from_dict(raw)


def test_max_steps_with_unfreezing_stages_is_refused_before_any_data_is_read(tmp_path):
    stages = [{"epochs": 1, "trainable_layers": 0}, {"epochs": 1, "trainable_layers": "all"}]
    raw = tiny_config_dict(
        tmp_path / "missing.csv",
        tmp_path,
        training={"epochs": 2, "max_steps": 10, "unfreezing": stages},
    )
    with pytest.raises(ConfigError, match="`max_steps` sets the run's length in steps"):
        config_from_dict(raw)


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"epochs": 3}, (7, 3, 21)),
        ({"epochs": 3, "max_steps": 10}, (7, 2, 10)),  # max_steps overrides epochs
        ({"max_steps": 7}, (7, 1, 7)),
        ({"max_steps": 2}, (7, 1, 2)),
    ],
)
def test_plan_counts_whole_epochs_or_the_step_budget(settings, expected):
    length = plan(TrainingConfig(batch_size=8, **settings), train_rows=54)
    assert (length.steps_per_epoch, length.epochs, length.total_steps) == expected


def test_loss_and_accuracy_from_logits_are_keras_sparse_crossentropys():
    import keras

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(13, 4)) * 3
    labels = rng.integers(0, 4, size=13)
    loss, accuracy = sparse_loss_and_accuracy(logits, labels)
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    assert loss == pytest.approx(float(expected), rel=1e-6)
    assert accuracy == pytest.approx(np.mean(logits.argmax(axis=1) == labels))


# === A whole run ===


def test_a_step_budget_under_a_linear_schedule_with_stepwise_evaluation(tmp_path, reviews_csv):
    """54 training rows in batches of 8: 7 steps an epoch, so 10 steps end inside epoch 2."""
    raw = tiny_config_dict(
        reviews_csv,
        tmp_path,
        training={
            "max_steps": 10,
            "eval_steps": 5,
            "schedule": {"mode": "linear", "maximal_learning_rate": 1e-3, "warmup_ratio": 0.2},
        },
        export={"enabled": False},
    )
    run_dir = train(config_from_dict(raw)).run_dir

    trace = pd.read_csv(run_dir / "lr_trace.csv")
    assert trace["step"].tolist() == list(range(10))
    assert trace["epoch"].tolist() == [0] * 7 + [1] * 3
    schedule = LinearSchedule(1e-3, 10, 0.2)
    assert trace["learning_rate"].tolist() == pytest.approx([schedule(s) for s in range(10)])

    history = pd.read_csv(run_dir / "history.csv")
    assert history["epoch"].tolist() == [0, 1]
    summary = json.loads((run_dir / "fit_summary.json").read_text())
    assert (summary["epochs_planned"], summary["epochs_run"]) == (2, 2)

    evaluations = pd.read_csv(run_dir / "eval_history.csv")
    assert evaluations["step"].tolist() == [5, 10]
    assert evaluations["epoch"].tolist() == [1, 2]
    # Step 10 is the run's last batch: the weights Keras then validates.
    last = evaluations.iloc[-1]
    assert last["val_loss"] == pytest.approx(history["val_loss"].iloc[-1], rel=1e-5)
    assert last["val_accuracy"] == pytest.approx(history["val_accuracy"].iloc[-1])
