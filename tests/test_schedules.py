"""Schedules against their closed forms (Smith 2017; Smith 2018 / fast.ai)."""

import math

import pytest

from kerasbert.training.schedules import (
    CyclicalSchedule,
    OneCycleSchedule,
    cosine_annealing,
    schedule_from_config,
)

BASE, TOP, STEP_SIZE = 1e-4, 1e-3, 4


def smith(step, mode, gamma=1.0):
    """Smith 2017's formulas, written out here independently of the module."""
    cycle = math.floor(1 + step / (2 * STEP_SIZE))
    x = abs(step / STEP_SIZE - 2 * cycle + 1)
    scale = {"triangular": 1, "triangular2": 1 / 2 ** (cycle - 1), "exp_range": gamma**step}[mode]
    return BASE + (TOP - BASE) * max(0, 1 - x) * scale


def cyclical_learning_rate(step, *args, **kwargs):
    return CyclicalSchedule(*args, **kwargs)(step)


def one_cycle(step, *args, **kwargs):
    return OneCycleSchedule(*args, **kwargs).rates(step)


def sched_cos(start, end, pos):
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


# === Cyclical ===


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 1e-4),
        (1, 3.25e-4),
        (2, 5.5e-4),
        (4, 1e-3),
        (6, 5.5e-4),
        (8, 1e-4),
        (10, 5.5e-4),
        (12, 1e-3),
    ],
)
def test_triangular_matches_hand_computed_values(step, expected):
    assert cyclical_learning_rate(step, BASE, TOP, STEP_SIZE) == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize(
    "step, expected",
    [(0, 1e-4), (4, 1e-3), (10, 3.25e-4), (12, 5.5e-4), (16, 1e-4), (20, 3.25e-4)],
)
def test_triangular2_halves_the_amplitude_every_cycle(step, expected):
    value = cyclical_learning_rate(step, BASE, TOP, STEP_SIZE, mode="triangular2")
    assert value == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 1e-4),
        (2, 1e-4 + 9e-4 * 0.5 * 0.9**2),
        (4, 1e-4 + 9e-4 * 0.9**4),
        (12, 1e-4 + 9e-4 * 0.9**12),
    ],
)
def test_exp_range_decays_the_amplitude_by_gamma_per_step(step, expected):
    value = cyclical_learning_rate(step, BASE, TOP, STEP_SIZE, mode="exp_range", gamma=0.9)
    assert value == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclical_modes_match_the_paper_formula_at_every_step(mode):
    for step in range(40):
        value = cyclical_learning_rate(step, BASE, TOP, STEP_SIZE, mode=mode, gamma=0.95)
        assert value == pytest.approx(smith(step, mode, gamma=0.95), rel=1e-7), step


# === One cycle ===


def test_one_cycle_hits_its_landmarks():
    args = dict(total_steps=40, maximal_learning_rate=1e-3)
    assert one_cycle(0, **args) == pytest.approx((4e-5, 0.95), rel=1e-7)
    # Halfway through the warm-up (10 steps) and through the annealing (30).
    assert one_cycle(5, **args) == pytest.approx(((4e-5 + 1e-3) / 2, 0.90), rel=1e-7)
    assert one_cycle(10, **args) == pytest.approx((1e-3, 0.85), rel=1e-7)
    assert one_cycle(25, **args) == pytest.approx(((1e-3 + 4e-9) / 2, 0.90), rel=1e-7)
    assert one_cycle(40, **args) == pytest.approx((4e-9, 0.95), rel=1e-7)
    assert one_cycle(1000, **args) == pytest.approx((4e-9, 0.95), rel=1e-7)


def test_one_cycle_matches_the_fastai_formula_at_every_step():
    total, top, pct = 50, 2e-3, 0.3
    start, end = top / 10, top / 10 / 100
    for step in range(total):
        p = step / total
        if p < pct:
            expected = (sched_cos(start, top, p / pct), sched_cos(0.9, 0.8, p / pct))
        else:
            q = (p - pct) / (1 - pct)
            expected = (sched_cos(top, end, q), sched_cos(0.8, 0.9, q))
        value = one_cycle(
            step,
            top,
            total,
            pct_start=pct,
            div_factor=10,
            final_div_factor=100,
            base_momentum=0.8,
            max_momentum=0.9,
        )
        assert value == pytest.approx(expected, rel=1e-7), step


def test_cosine_annealing_goes_from_start_to_end():
    assert cosine_annealing(1.0, 3.0, 0) == 1.0
    assert cosine_annealing(1.0, 3.0, 0.5) == pytest.approx(2.0, rel=1e-12)
    assert cosine_annealing(1.0, 3.0, 1) == 3.0


# === Bad arguments ===


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(step_size=0),
            r"Invalid value for argument `step_size`. Expected a positive integer. Received: step_size=0$",
        ),
        (dict(step_size=2.5), r"`step_size`. Expected a positive integer. Received: step_size=2.5"),
        (
            dict(maximal_learning_rate=1e-5),
            r"`maximal_learning_rate`. Expected a value >= initial_learning_rate=0.0001",
        ),
        (
            dict(initial_learning_rate=0.0),
            r"`initial_learning_rate`. Expected a positive number. Received: initial_learning_rate=0.0",
        ),
        (
            dict(mode="linear"),
            r"`mode`. Expected one of 'triangular', 'triangular2', 'exp_range'. Received: mode='linear'",
        ),
        (dict(gamma=1.5), r"`gamma`. Expected a number in \(0, 1\]. Received: gamma=1.5"),
        (dict(step=-1), r"`step`. Expected an integer >= 0. Received: step=-1"),
    ],
)
def test_cyclical_rejects_bad_arguments(kwargs, message):
    args = dict(step=0, initial_learning_rate=BASE, maximal_learning_rate=TOP, step_size=STEP_SIZE)
    with pytest.raises(ValueError, match=message):
        cyclical_learning_rate(**{**args, **kwargs})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(total_steps=0),
            r"`total_steps`. Expected a positive integer. Received: total_steps=0",
        ),
        (
            dict(pct_start=1.0),
            r"`pct_start`. Expected a fraction in \(0, 1\). Received: pct_start=1.0",
        ),
        (dict(div_factor=0.5), r"`div_factor`. Expected a number >= 1. Received: div_factor=0.5"),
        (dict(max_momentum=1.0), r"`max_momentum`. Expected a number in \[0, 1\)"),
        (dict(base_momentum=0.99), r"`base_momentum`. Expected a value <= max_momentum=0.95"),
        (dict(maximal_learning_rate=-1.0), r"`maximal_learning_rate`. Expected a positive number"),
    ],
)
def test_one_cycle_rejects_bad_arguments(kwargs, message):
    args = dict(step=0, total_steps=10, maximal_learning_rate=1e-3)
    with pytest.raises(ValueError, match=message):
        one_cycle(**{**args, **kwargs})


# === Schedule objects ===


def test_only_the_one_cycle_moves_the_momentum_and_only_when_asked():
    assert CyclicalSchedule(BASE, TOP, STEP_SIZE).momentum(3) is None
    cycle = OneCycleSchedule(1e-3, total_steps=40)
    assert [cycle.momentum(step) for step in (0, 5, 10, 25, 40)] == pytest.approx(
        [0.95, 0.90, 0.85, 0.90, 0.95], rel=1e-7
    )
    still = OneCycleSchedule(1e-3, total_steps=40, cycle_momentum=False)
    assert still.momentum(5) is None
    assert [still(step) for step in range(40)] == [cycle(step) for step in range(40)]


def test_schedule_objects_round_trip_through_their_flat_config():
    for schedule in (
        CyclicalSchedule(BASE, TOP, STEP_SIZE, mode="triangular2"),
        OneCycleSchedule(1e-3, 40),
    ):
        again = schedule_from_config(schedule.get_config())
        assert type(again) is type(schedule)
        assert again.get_config() == schedule.get_config()
        assert [again(step) for step in range(50)] == [schedule(step) for step in range(50)]


def test_restarted_checks_the_new_cycle_and_leaves_the_old_one_alone():
    cycle = OneCycleSchedule(1e-3, total_steps=40)
    shorter = cycle.restarted(total_steps=10, maximal_learning_rate=2e-3)
    assert (shorter.total_steps, shorter.maximal_learning_rate) == (10, 2e-3)
    assert (cycle.total_steps, cycle.maximal_learning_rate) == (40, 1e-3)
    with pytest.raises(
        ValueError, match="`total_steps`. Expected a positive integer. Received: total_steps=0"
    ):
        cycle.restarted(total_steps=0)
    cyclical = CyclicalSchedule(BASE, TOP, STEP_SIZE)
    assert cyclical.restarted(total_steps=99).get_config() == cyclical.get_config()
    with pytest.raises(ValueError, match="maximal_learning_rate"):
        cyclical.restarted(maximal_learning_rate=BASE / 2)
