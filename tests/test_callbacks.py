"""CyclicalLearningRate: hooks called directly, and the rates a real `fit` uses."""

import csv
import math
import os

os.environ["KERAS_BACKEND"] = "tensorflow"

import keras
import numpy as np
import pytest
from keras import ops

from kerasbert.training.cyclical_learning_rate import CyclicalLearningRate
from kerasbert.training.optimizers import LayerwiseAdam, LayerwiseSGD
from kerasbert.training.schedules import CyclicalSchedule, OneCycleSchedule

BASE, TOP, STEP_SIZE = 0.1, 1.0, 4


def smith(step, mode, gamma=1.0):
    """Smith 2017's closed form, written out here independently of the module."""
    cycle = math.floor(1 + step / (2 * STEP_SIZE))
    x = abs(step / STEP_SIZE - 2 * cycle + 1)
    scale = {"triangular": 1, "triangular2": 1 / 2 ** (cycle - 1), "exp_range": gamma**step}[mode]
    return BASE + (TOP - BASE) * max(0, 1 - x) * scale


def fastai_one_cycle(step, total, top, pct=0.25, div=25.0, final_div=1e4, low=0.85, high=0.95):
    """fast.ai's fit_one_cycle (floor as in PyTorch), written out independently."""

    def sched_cos(start, end, pos):
        return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2

    p = min(step / total, 1.0)
    if p < pct:
        return sched_cos(top / div, top, p / pct), sched_cos(high, low, p / pct)
    q = (p - pct) / (1 - pct)
    return sched_cos(top, top / div / final_div, q), sched_cos(low, high, q)


def mean_output(y_true, y_pred):
    return ops.mean(y_pred)


def constant_gradient_model(optimizer, steps_per_execution=1):
    """`loss = mean(x @ w)` on inputs of ones: the gradient of every weight is 1.

    So SGD moves each weight by exactly the learning rate it used, which
    shows the rate the compiled train step actually read.
    """
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros", name="w")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=optimizer,
        loss=mean_output,
        jit_compile=False,
        steps_per_execution=steps_per_execution,
    )
    return model


def fit_and_record(model, callback, epochs=3, batches=4):
    """Fits and returns the weight after every batch (and the starting one)."""
    weights = [float(model.layers[-1].kernel.numpy()[0, 0])]
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: weights.append(
            float(model.layers[-1].kernel.numpy()[0, 0])
        )
    )
    x = np.ones((4 * batches, 3), "float32")
    history = model.fit(
        x,
        np.zeros((4 * batches, 1), "float32"),
        batch_size=4,
        epochs=epochs,
        callbacks=[callback, record],
        verbose=0,
        shuffle=False,
    )
    return np.array(weights), history


def run_hooks(callback, model, steps, epoch_size=None):
    """Drives the callback's hooks as `fit` would, without fitting."""
    callback.set_model(model)
    callback.on_train_begin()
    batch_logs = []
    for step in range(steps):
        if epoch_size and step % epoch_size == 0:
            callback.on_epoch_begin(step // epoch_size)
        batch = step % epoch_size if epoch_size else step
        callback.on_train_batch_begin(batch)
        logs = {}
        callback.on_train_batch_end(batch, logs)
        batch_logs.append(logs)
    return batch_logs


# === Hooks called directly ===


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_hooks_set_the_closed_form_rate_before_each_batch(mode):
    model = constant_gradient_model(LayerwiseSGD(0.5))
    callback = CyclicalLearningRate(CyclicalSchedule(BASE, TOP, STEP_SIZE, mode=mode, gamma=0.9))
    callback.set_model(model)
    callback.on_train_begin()
    for step in range(20):
        callback.on_train_batch_begin(step % 5)
        expected = smith(step, mode, gamma=0.9)
        assert callback.trace[-1]["learning_rate"] == pytest.approx(expected, rel=1e-7)
        assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(expected, rel=1e-6)
        logs = {}
        callback.on_train_batch_end(step % 5, logs)
        assert logs["learning_rate"] == pytest.approx(expected, rel=1e-7)


def test_hooks_set_one_cycle_rate_and_momentum():
    model = constant_gradient_model(LayerwiseAdam(0.5))
    callback = CyclicalLearningRate(OneCycleSchedule(1e-3, total_steps=30))
    batch_logs = run_hooks(callback, model, steps=30, epoch_size=10)
    for step in (0, 3, 7, 8, 15, 22, 29):
        lr, momentum = fastai_one_cycle(step, 30, 1e-3)
        row = callback.trace[step]
        assert (row["step"], row["epoch"]) == (step, step // 10)
        assert row["learning_rate"] == pytest.approx(lr, rel=1e-7)
        assert row["momentum"] == pytest.approx(momentum, rel=1e-7)
        assert batch_logs[step]["momentum"] == pytest.approx(momentum, rel=1e-7)
    # What the optimizer holds after the last batch.
    assert float(model.optimizer.beta_1.numpy()) == pytest.approx(momentum, rel=1e-6)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(lr, rel=1e-6)


def test_restart_starts_the_cycle_again():
    model = constant_gradient_model(LayerwiseSGD(0.5))
    callback = CyclicalLearningRate(OneCycleSchedule(1.0, total_steps=10))
    run_hooks(callback, model, steps=4)
    callback.restart(total_steps=20)
    callback.on_train_batch_begin(0)
    assert callback.step == 0
    assert callback.trace[-1]["learning_rate"] == pytest.approx(1.0 / 25, rel=1e-7)
    assert callback.schedule.total_steps == 20


def test_restart_with_a_new_peak_follows_the_closed_form_of_that_peak():
    model = constant_gradient_model(LayerwiseSGD(0.5))
    callback = CyclicalLearningRate(OneCycleSchedule(1.0, total_steps=10))
    run_hooks(callback, model, steps=4)
    callback.restart(total_steps=8, maximal_learning_rate=0.2)
    for step in range(8):
        callback.on_train_batch_begin(step)
        callback.on_train_batch_end(step)
    expected = [fastai_one_cycle(step, 8, 0.2)[0] for step in range(8)]
    assert [row["learning_rate"] for row in callback.trace[-8:]] == pytest.approx(
        expected, rel=1e-6
    )


def test_restart_refuses_a_peak_below_the_cyclical_floor_and_keeps_its_own():
    callback = CyclicalLearningRate(CyclicalSchedule(BASE, TOP, STEP_SIZE))
    with pytest.raises(ValueError, match="maximal_learning_rate"):
        callback.restart(maximal_learning_rate=BASE / 2)
    assert callback.schedule.maximal_learning_rate == TOP


def test_state_round_trip_keeps_a_restarted_peak():
    callback = CyclicalLearningRate(OneCycleSchedule(1.0, total_steps=10))
    callback.restart(total_steps=6, maximal_learning_rate=0.3)
    callback._step = 4
    fresh = CyclicalLearningRate(OneCycleSchedule(1.0, total_steps=10))
    fresh.set_state(callback.get_state())
    assert (fresh.step, fresh.schedule.total_steps, fresh.schedule.maximal_learning_rate) == (
        4,
        6,
        0.3,
    )
    assert fresh.rates(4) == callback.rates(4)


# === Through fit ===


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_fit_uses_the_closed_form_rate_at_steps_counted_across_epochs(mode):
    model = constant_gradient_model(LayerwiseSGD(0.5))
    callback = CyclicalLearningRate(CyclicalSchedule(BASE, TOP, STEP_SIZE, mode=mode, gamma=0.9))

    weights, history = fit_and_record(model, callback, epochs=3, batches=4)

    expected = [smith(step, mode, gamma=0.9) for step in range(12)]
    assert [row["step"] for row in callback.trace] == list(range(12))
    assert [row["epoch"] for row in callback.trace] == [0] * 4 + [1] * 4 + [2] * 4
    assert [row["learning_rate"] for row in callback.trace] == pytest.approx(expected, rel=1e-7)
    # With a gradient of 1, each batch moves the weight by the rate it used.
    np.testing.assert_allclose(-np.diff(weights), expected, rtol=1e-5)
    # The epoch logs carry the rate of each epoch's last batch.
    assert history.history["learning_rate"] == pytest.approx(expected[3::4], rel=1e-7)


def test_fit_with_one_cycle_moves_the_momentum_sgd_uses():
    model = constant_gradient_model(LayerwiseSGD(0.5, momentum=0.9))
    callback = CyclicalLearningRate(OneCycleSchedule(0.5, total_steps=12))

    weights, history = fit_and_record(model, callback, epochs=3, batches=4)

    rates = [fastai_one_cycle(step, 12, 0.5) for step in range(12)]
    recorded = [(r["learning_rate"], r["momentum"]) for r in callback.trace]
    np.testing.assert_allclose(recorded, rates, rtol=1e-7, atol=0)
    # Keras' SGD with the momentum of each step: v = mu * v - lr * g; w += v.
    velocity, expected = 0.0, []
    for lr, momentum in rates:
        velocity = momentum * velocity - lr
        expected.append(velocity)
    np.testing.assert_allclose(np.diff(weights), expected, rtol=1e-5)
    assert history.history["momentum"] == pytest.approx([m for _, m in rates[3::4]], rel=1e-7)


def test_fit_with_one_cycle_moves_the_beta_1_adam_uses():
    model = constant_gradient_model(LayerwiseAdam(0.5))
    callback = CyclicalLearningRate(OneCycleSchedule(0.01, total_steps=8))

    weights, _ = fit_and_record(model, callback, epochs=2, batches=4)

    # Keras' Adam with the beta_1 of each step and a gradient of 1.
    m = v = 0.0
    beta_2, epsilon, expected = 0.999, 1e-7, []
    for t, (lr, beta_1) in enumerate(fastai_one_cycle(s, 8, 0.01) for s in range(8)):
        m += (1 - m) * (1 - beta_1)
        v += (1 - v) * (1 - beta_2)
        alpha = lr * math.sqrt(1 - beta_2 ** (t + 1)) / (1 - beta_1 ** (t + 1))
        expected.append(-m * alpha / (math.sqrt(v) + epsilon))
    np.testing.assert_allclose(np.diff(weights), expected, rtol=1e-4)
    # Had beta_1 stayed at its first value, the bias correction would cancel
    # and every step would move the weight by exactly its learning rate.
    lrs = [r["learning_rate"] for r in callback.trace]
    assert not np.allclose(-np.diff(weights), lrs, rtol=1e-3)


def test_steps_are_counted_with_several_steps_per_execution():
    model = constant_gradient_model(LayerwiseSGD(0.5), steps_per_execution=2)
    callback = CyclicalLearningRate(CyclicalSchedule(BASE, TOP, STEP_SIZE))
    fit_and_record(model, callback, epochs=2, batches=4)
    assert [row["step"] for row in callback.trace] == [0, 2, 4, 6]


def test_write_trace_writes_every_step_to_lr_trace_csv(tmp_path):
    model = constant_gradient_model(LayerwiseSGD(0.5, momentum=0.9))
    callback = CyclicalLearningRate(OneCycleSchedule(0.5, total_steps=8))
    fit_and_record(model, callback, epochs=2, batches=4)

    written = callback.write_trace(tmp_path)

    assert written == tmp_path / "lr_trace.csv"
    with written.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "epoch", "learning_rate", "momentum"]
    assert [int(r["step"]) for r in rows] == list(range(8))
    assert [int(r["epoch"]) for r in rows] == [0] * 4 + [1] * 4
    assert [float(r["learning_rate"]) for r in rows] == [r["learning_rate"] for r in callback.trace]
    assert [float(r["momentum"]) for r in rows] == [r["momentum"] for r in callback.trace]


# === Refusals ===


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (
            (1e-3, 1e-4, 4),
            {},
            r"`maximal_learning_rate`. Expected a value >= initial_learning_rate=0.001",
        ),
        (
            (1e-4, 1e-3, 0),
            {},
            r"Invalid value for argument `step_size`. Expected a positive integer. Received: step_size=0",
        ),
        (
            (1e-4, 1e-3, 4),
            {"mode": "cosine"},
            r"`mode`. Expected one of 'triangular', 'triangular2', 'exp_range'. Received: mode='cosine'",
        ),
        (
            (1e-4, 1e-3, 4),
            {"gamma": 1.5},
            r"`gamma`. Expected a number in \(0, 1\]. Received: gamma=1.5",
        ),
    ],
)
def test_bad_schedule_values_are_rejected_in_the_constructor(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        CyclicalSchedule(*args, **kwargs)


def test_the_callback_refuses_what_is_not_a_schedule():
    with pytest.raises(TypeError, match="Expected a schedule of kerasbert.training.schedules"):
        CyclicalLearningRate(lambda step: 1e-3)


def test_one_cycle_rejects_a_zero_length_cycle():
    message = r"`total_steps`. Expected a positive integer. Received: total_steps=0"
    with pytest.raises(ValueError, match=message):
        CyclicalLearningRate(OneCycleSchedule(1e-3, total_steps=0))


def test_an_optimizer_with_a_learning_rate_schedule_is_refused():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    model = constant_gradient_model(LayerwiseSGD(schedule))
    callback = CyclicalLearningRate(CyclicalSchedule(BASE, TOP, STEP_SIZE))
    with pytest.raises(TypeError, match="sets the learning rate itself.*float `learning_rate`"):
        fit_and_record(model, callback, epochs=1, batches=1)


def test_one_cycle_refuses_a_momentum_baked_into_the_train_step():
    model = constant_gradient_model(keras.optimizers.SGD(0.5, momentum=0.9))
    callback = CyclicalLearningRate(OneCycleSchedule(0.5, total_steps=8))
    with pytest.raises(TypeError, match="as a Python float.*build_optimizer.*cycle_momentum=False"):
        fit_and_record(model, callback, epochs=1, batches=1)

    callback = CyclicalLearningRate(OneCycleSchedule(0.5, total_steps=4, cycle_momentum=False))
    fit_and_record(model, callback, epochs=1, batches=4)
    assert [row["momentum"] for row in callback.trace] == pytest.approx([0.9] * 4)
