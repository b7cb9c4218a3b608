"""Learning-rate and momentum schedules as pure functions of the global step.

Plain Python math, no TensorFlow: the same functions drive the
`CyclicalLearningRate` callback, can be plotted before a run, and are tested
against their closed forms. A step is the number of batches seen since the
start of the cycle, counted across epochs.

Reference:
    - Smith 2017, "Cyclical Learning Rates for Training Neural Networks",
      arXiv:1506.01186 (`triangular`, `triangular2`, `exp_range`).
    - Smith 2018, "A disciplined approach to neural network
      hyper-parameters", arXiv:1803.09820 (the 1cycle policy).
"""

from __future__ import annotations

import math
import numbers

CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


def cyclical_learning_rate(
    step,
    initial_learning_rate,
    maximal_learning_rate,
    step_size,
    mode="triangular",
    gamma=1.0,
):
    """The learning rate of Smith's cyclical policies at `step`.

    With `cycle = floor(1 + step / (2 * step_size))` and
    `x = |step / step_size - 2 * cycle + 1|`, the rate is
    `initial + (maximal - initial) * max(0, 1 - x) * scale`, where `scale` is
    1 for `triangular`, `1 / 2 ** (cycle - 1)` for `triangular2` (the
    amplitude halves every cycle) and `gamma ** step` for `exp_range`.

    Args:
        step: the batch index from the start of the cycle, an integer >= 0.
        initial_learning_rate: the lower bound, reached at the start and end
            of every cycle.
        maximal_learning_rate: the upper bound, reached in the middle of the
            first cycle.
        step_size: batches in half a cycle. Smith suggests 2 to 10 epochs'
            worth.
        mode: `"triangular"`, `"triangular2"` or `"exp_range"`.
        gamma: `exp_range` only: the amplitude's decay per step, in (0, 1].

    Returns:
        The learning rate, a float.

    Raises:
        ValueError: for a negative step, non-positive rates or step size,
            `maximal_learning_rate < initial_learning_rate`, an unknown mode
            or `gamma` outside (0, 1].

    Example:
    >>> cyclical_learning_rate(2, 1e-4, 1e-3, step_size=4)
    0.00055

    Reference:
        Smith 2017, arXiv:1506.01186, section 3.1.
    """
    _check_step(step)
    _check_cyclical_arguments(
        initial_learning_rate, maximal_learning_rate, step_size, mode, gamma
    )
    cycle = math.floor(1 + step / (2 * step_size))
    x = abs(step / step_size - 2 * cycle + 1)
    if mode == "triangular":
        scale = 1.0
    elif mode == "triangular2":
        scale = 1 / 2 ** (cycle - 1)
    else:
        scale = gamma**step
    amplitude = maximal_learning_rate - initial_learning_rate
    return initial_learning_rate + amplitude * max(0.0, 1 - x) * scale


def one_cycle(
    step,
    total_steps,
    maximal_learning_rate,
    pct_start=0.25,
    div_factor=25.0,
    final_div_factor=1e4,
    base_momentum=0.85,
    max_momentum=0.95,
):
    """The learning rate and momentum of the 1cycle policy at `step`.

    As fast.ai's `fit_one_cycle`: with progress `p = step / total_steps`
    (clipped to 1), the learning rate follows a half cosine from
    `maximal_learning_rate / div_factor` up to `maximal_learning_rate` while
    `p < pct_start`, then a half cosine down to
    `maximal_learning_rate / (div_factor * final_div_factor)` (PyTorch's
    `OneCycleLR` convention for the floor). Momentum moves the other way: from
    `max_momentum` down to `base_momentum`, then back up.

    Args:
        step: the batch index from the start of the cycle, an integer >= 0.
        total_steps: batches in the whole cycle.
        maximal_learning_rate: the peak learning rate.
        pct_start: the fraction of the cycle spent warming up, in (0, 1).
        div_factor: the starting rate is `maximal_learning_rate / div_factor`.
        final_div_factor: the final rate is the starting rate divided by
            this.
        base_momentum: the momentum at the peak learning rate.
        max_momentum: the momentum at the start and the end.

    Returns:
        `(learning_rate, momentum)`, two floats.

    Raises:
        ValueError: for a negative step, non-positive `total_steps` or rate,
            `pct_start` outside (0, 1), a division factor below 1, or
            momenta outside [0, 1) or out of order.

    Example:
    >>> one_cycle(25, total_steps=100, maximal_learning_rate=1e-3)
    (0.001, 0.85)

    Reference:
        Smith 2018, arXiv:1803.09820, section 4.1.
    """
    _check_step(step)
    _check_one_cycle_arguments(
        total_steps,
        maximal_learning_rate,
        pct_start,
        div_factor,
        final_div_factor,
        base_momentum,
        max_momentum,
    )
    start = maximal_learning_rate / div_factor
    end = start / final_div_factor
    progress = min(step / total_steps, 1.0)
    if progress < pct_start:
        position = progress / pct_start
        return (
            cosine_annealing(start, maximal_learning_rate, position),
            cosine_annealing(max_momentum, base_momentum, position),
        )
    position = (progress - pct_start) / (1 - pct_start)
    return (
        cosine_annealing(maximal_learning_rate, end, position),
        cosine_annealing(base_momentum, max_momentum, position),
    )


def cosine_annealing(start, end, position):
    """Half a cosine from `start` (position 0) to `end` (position 1).

    fast.ai's `sched_cos`: `start + (1 + cos(pi * (1 - position))) *
    (end - start) / 2`.
    """
    return start + (1 + math.cos(math.pi * (1 - position))) * (end - start) / 2


# === Argument checks ===


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integer(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_step(step):
    if not _is_integer(step) or step < 0:
        raise ValueError(
            "Invalid value for argument `step`. Expected an integer >= 0. "
            f"Received: step={step!r}"
        )


def _check_positive_float(name, value):
    if not _is_real(value) or not value > 0:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a positive "
            f"number. Received: {name}={value!r}"
        )


def _check_positive_int(name, value):
    if not _is_integer(value) or value <= 0:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a positive "
            f"integer. Received: {name}={value!r}"
        )


def _check_cyclical_arguments(
    initial_learning_rate, maximal_learning_rate, step_size, mode, gamma
):
    if mode not in CYCLIC_MODES:
        raise ValueError(
            "Invalid value for argument `mode`. Expected one of "
            f"{', '.join(repr(m) for m in CYCLIC_MODES)}. Received: mode={mode!r}"
        )
    _check_positive_float("initial_learning_rate", initial_learning_rate)
    _check_positive_float("maximal_learning_rate", maximal_learning_rate)
    if maximal_learning_rate < initial_learning_rate:
        raise ValueError(
            "Invalid value for argument `maximal_learning_rate`. Expected a "
            f"value >= initial_learning_rate={initial_learning_rate!r}; swap "
            "the two or raise the maximum. Received: "
            f"maximal_learning_rate={maximal_learning_rate!r}"
        )
    _check_positive_int("step_size", step_size)
    if not _is_real(gamma) or not 0 < gamma <= 1:
        raise ValueError(
            "Invalid value for argument `gamma`. Expected a number in (0, 1]. "
            f"Received: gamma={gamma!r}"
        )


def _check_one_cycle_arguments(
    total_steps,
    maximal_learning_rate,
    pct_start,
    div_factor,
    final_div_factor,
    base_momentum,
    max_momentum,
):
    _check_positive_int("total_steps", total_steps)
    _check_positive_float("maximal_learning_rate", maximal_learning_rate)
    if not _is_real(pct_start) or not 0 < pct_start < 1:
        raise ValueError(
            "Invalid value for argument `pct_start`. Expected a fraction in "
            f"(0, 1). Received: pct_start={pct_start!r}"
        )
    for name, value in (("div_factor", div_factor), ("final_div_factor", final_div_factor)):
        if not _is_real(value) or not value >= 1:
            raise ValueError(
                f"Invalid value for argument `{name}`. Expected a number >= 1. "
                f"Received: {name}={value!r}"
            )
    for name, value in (("base_momentum", base_momentum), ("max_momentum", max_momentum)):
        if not _is_real(value) or not 0 <= value < 1:
            raise ValueError(
                f"Invalid value for argument `{name}`. Expected a number in "
                f"[0, 1). Received: {name}={value!r}"
            )
    if base_momentum > max_momentum:
        raise ValueError(
            "Invalid value for argument `base_momentum`. Expected a value <= "
            f"max_momentum={max_momentum!r}. Received: base_momentum={base_momentum!r}"
        )
