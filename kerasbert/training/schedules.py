"""Learning-rate and momentum schedules: objects that map a step to a rate.

Plain Python math, no TensorFlow, shaped like Keras' `CosineDecay`: the
arguments are checked once in the constructor, `schedule(step)` is the
learning rate at `step` (a pure function of it), `schedule.momentum(step)`
the 1cycle policy's momentum (None for the others), `restarted(...)` a new
cycle, and `get_config()` a flat dict. The `CyclicalLearningRate` callback
applies one; the same objects can be plotted before a run, and are tested
against their closed forms. A step is the number of batches seen since the
start of the cycle, counted across epochs.

`LinearSchedule` is the recipe of BERT's paper and of Hugging Face's
`get_linear_schedule_with_warmup`: a linear warm-up, then a linear decay to 0.

Reference:
    - Smith 2017, "Cyclical Learning Rates for Training Neural Networks",
      arXiv:1506.01186 (`triangular`, `triangular2`, `exp_range`).
    - Smith 2018, "A disciplined approach to neural network
      hyper-parameters", arXiv:1803.09820 (the 1cycle policy).
    - Devlin et al. 2019, "BERT", arXiv:1810.04805, appendix A.2 (linear
      warm-up and decay).
"""

from __future__ import annotations

import math

from kerasbert.arguments import is_integer, is_real

# Smith's cyclical policies, the 1cycle policy, and BERT's linear warm-up and
# decay: every mode a schedule has. (A constant rate is no schedule: the
# optimizer keeps it.)
CYCLIC_MODES = ("triangular", "triangular2", "exp_range")
MODES = CYCLIC_MODES + ("one_cycle", "linear")


class Schedule:
    """What every schedule shares: a restart, and no momentum unless it moves one."""

    def momentum(self, step):
        """The momentum at `step`, or None: the policy leaves it alone."""
        return None

    def restarted(self, total_steps=None, maximal_learning_rate=None):
        """The same policy anew: `total_steps` long (for the schedules that have a length),
        peaking at `maximal_learning_rate`; None keeps each. A cyclical cycle stays
        `2 * step_size` batches long."""
        config = self.get_config()
        changes = {"total_steps": total_steps, "maximal_learning_rate": maximal_learning_rate}
        config.update({k: v for k, v in changes.items() if v is not None and k in config})
        return type(self)(**config)


class CyclicalSchedule(Schedule):
    """Smith's (2017) cyclical learning rates between two bounds.

    With `cycle = floor(1 + step / (2 * step_size))` and
    `x = |step / step_size - 2 * cycle + 1|`, the rate is
    `initial + (maximal - initial) * max(0, 1 - x) * scale`, where `scale` is
    1 for `triangular`, `1 / 2 ** (cycle - 1)` for `triangular2` (the
    amplitude halves every cycle) and `gamma ** step` for `exp_range`.

    Args:
        initial_learning_rate: the lower bound, reached at the start and end
            of every cycle.
        maximal_learning_rate: the upper bound, reached in the middle of the
            first cycle.
        step_size: batches in half a cycle. Smith suggests 2 to 10 epochs'
            worth.
        mode: `"triangular"`, `"triangular2"` or `"exp_range"`.
        gamma: `exp_range` only: the amplitude's decay per step, in (0, 1].

    Raises:
        ValueError: for non-positive rates or step size,
            `maximal_learning_rate < initial_learning_rate`, an unknown mode
            or `gamma` outside (0, 1]; and, when called, a negative step.

    Example:
    >>> schedule = CyclicalSchedule(1e-4, 1e-3, step_size=4)
    >>> schedule(2), schedule.momentum(2)
    (0.00055, None)

    Reference:
        Smith 2017, arXiv:1506.01186, section 3.1.
    """

    def __init__(
        self, initial_learning_rate, maximal_learning_rate, step_size, mode="triangular", gamma=1.0
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
        if not is_real(gamma) or not 0 < gamma <= 1:
            raise ValueError(
                "Invalid value for argument `gamma`. Expected a number in (0, 1]. "
                f"Received: gamma={gamma!r}"
            )
        self.initial_learning_rate = initial_learning_rate
        self.maximal_learning_rate = maximal_learning_rate
        self.step_size = step_size
        self.mode = mode
        self.gamma = gamma

    def __call__(self, step) -> float:
        _check_step(step)
        cycle = math.floor(1 + step / (2 * self.step_size))
        x = abs(step / self.step_size - 2 * cycle + 1)
        if self.mode == "triangular":
            scale = 1.0
        elif self.mode == "triangular2":
            scale = 1 / 2 ** (cycle - 1)
        else:
            scale = self.gamma**step
        amplitude = self.maximal_learning_rate - self.initial_learning_rate
        return self.initial_learning_rate + amplitude * max(0.0, 1 - x) * scale

    def get_config(self) -> dict:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "maximal_learning_rate": self.maximal_learning_rate,
            "step_size": self.step_size,
            "mode": self.mode,
            "gamma": self.gamma,
        }


class OneCycleSchedule(Schedule):
    """The 1cycle policy (Smith 2018) over `total_steps` batches, as fast.ai's `fit_one_cycle`.

    With progress `p = step / total_steps` (clipped to 1), the learning rate
    follows a half cosine from `maximal_learning_rate / div_factor` up to
    `maximal_learning_rate` while `p < pct_start`, then a half cosine down to
    `maximal_learning_rate / (div_factor * final_div_factor)` (PyTorch's
    `OneCycleLR` convention for the floor). Momentum moves the other way:
    from `max_momentum` down to `base_momentum`, then back up.

    Args:
        maximal_learning_rate: the peak learning rate.
        total_steps: batches in the whole cycle.
        pct_start: the fraction of the cycle spent warming up, in (0, 1).
        div_factor: the starting rate is `maximal_learning_rate / div_factor`.
        final_div_factor: the final rate is the starting rate divided by this.
        base_momentum: the momentum at the peak learning rate.
        max_momentum: the momentum at the start and the end.
        cycle_momentum: whether `momentum(step)` moves the momentum (or is None).

    Raises:
        ValueError: for a non-positive `total_steps` or rate, `pct_start`
            outside (0, 1), a division factor below 1, or momenta outside
            [0, 1) or out of order; and, when called, a negative step.

    Example:
    >>> schedule = OneCycleSchedule(1e-3, total_steps=100)
    >>> schedule(25), schedule.momentum(25)
    (0.001, 0.85)

    Reference:
        Smith 2018, arXiv:1803.09820, section 4.1.
    """

    def __init__(
        self,
        maximal_learning_rate,
        total_steps,
        pct_start=0.25,
        div_factor=25.0,
        final_div_factor=1e4,
        base_momentum=0.85,
        max_momentum=0.95,
        cycle_momentum=True,
    ):
        _check_positive_int("total_steps", total_steps)
        _check_positive_float("maximal_learning_rate", maximal_learning_rate)
        if not is_real(pct_start) or not 0 < pct_start < 1:
            raise ValueError(
                "Invalid value for argument `pct_start`. Expected a fraction in "
                f"(0, 1). Received: pct_start={pct_start!r}"
            )
        for name, value in (("div_factor", div_factor), ("final_div_factor", final_div_factor)):
            if not is_real(value) or not value >= 1:
                raise ValueError(
                    f"Invalid value for argument `{name}`. Expected a number >= 1. "
                    f"Received: {name}={value!r}"
                )
        for name, value in (("base_momentum", base_momentum), ("max_momentum", max_momentum)):
            if not is_real(value) or not 0 <= value < 1:
                raise ValueError(
                    f"Invalid value for argument `{name}`. Expected a number in "
                    f"[0, 1). Received: {name}={value!r}"
                )
        if base_momentum > max_momentum:
            raise ValueError(
                "Invalid value for argument `base_momentum`. Expected a value <= "
                f"max_momentum={max_momentum!r}. Received: base_momentum={base_momentum!r}"
            )
        self.maximal_learning_rate = maximal_learning_rate
        self.total_steps = total_steps
        self.pct_start = pct_start
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor
        self.base_momentum = base_momentum
        self.max_momentum = max_momentum
        self.cycle_momentum = bool(cycle_momentum)

    def rates(self, step) -> tuple[float, float]:
        """`(learning_rate, momentum)` at `step`, the momentum even when not cycled."""
        _check_step(step)
        start = self.maximal_learning_rate / self.div_factor
        end = start / self.final_div_factor
        progress = min(step / self.total_steps, 1.0)
        if progress < self.pct_start:
            position = progress / self.pct_start
            return (
                cosine_annealing(start, self.maximal_learning_rate, position),
                cosine_annealing(self.max_momentum, self.base_momentum, position),
            )
        position = (progress - self.pct_start) / (1 - self.pct_start)
        return (
            cosine_annealing(self.maximal_learning_rate, end, position),
            cosine_annealing(self.base_momentum, self.max_momentum, position),
        )

    def __call__(self, step) -> float:
        return self.rates(step)[0]

    def momentum(self, step):
        """The momentum at `step`, or None when `cycle_momentum` is off."""
        return self.rates(step)[1] if self.cycle_momentum else None

    def get_config(self) -> dict:
        return {
            "maximal_learning_rate": self.maximal_learning_rate,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "base_momentum": self.base_momentum,
            "max_momentum": self.max_momentum,
            "cycle_momentum": self.cycle_momentum,
        }


class LinearSchedule(Schedule):
    """A linear warm-up to `maximal_learning_rate`, then a linear decay to 0.

    Over `total_steps` batches with `warmup = ceil(warmup_ratio *
    total_steps)`, the rate at `step` is `maximal_learning_rate * step /
    warmup` while `step < warmup`, then `maximal_learning_rate * (total_steps
    - step) / (total_steps - warmup)`, and 0 from `total_steps` on: Hugging
    Face's `get_linear_schedule_with_warmup`, with `TrainingArguments`'
    rounding of `warmup_ratio`.

    Args:
        maximal_learning_rate: the rate at the end of the warm-up.
        total_steps: batches from the start to the end of the decay.
        warmup_ratio: the fraction of `total_steps` spent warming up, in
            [0, 1).

    Raises:
        ValueError: for a non-positive rate or `total_steps`, a
            `warmup_ratio` outside [0, 1); and, when called, a negative step.

    Example:
    >>> schedule = LinearSchedule(1e-3, total_steps=100, warmup_ratio=0.1)
    >>> schedule(5), schedule(10), schedule(55), schedule.momentum(5)
    (0.0005, 0.001, 0.0005, None)

    Reference:
        Devlin et al. 2019, arXiv:1810.04805, appendix A.2.
    """

    def __init__(self, maximal_learning_rate, total_steps, warmup_ratio=0.1):
        _check_positive_float("maximal_learning_rate", maximal_learning_rate)
        _check_positive_int("total_steps", total_steps)
        if not is_real(warmup_ratio) or not 0 <= warmup_ratio < 1:
            raise ValueError(
                "Invalid value for argument `warmup_ratio`. Expected a fraction in "
                f"[0, 1). Received: warmup_ratio={warmup_ratio!r}"
            )
        self.maximal_learning_rate = maximal_learning_rate
        self.total_steps = total_steps
        self.warmup_ratio = warmup_ratio

    @property
    def warmup_steps(self) -> int:
        return math.ceil(self.warmup_ratio * self.total_steps)

    def __call__(self, step) -> float:
        _check_step(step)
        warmup = self.warmup_steps
        if step < warmup:
            return self.maximal_learning_rate * step / warmup
        remaining = max(0, self.total_steps - step) / max(1, self.total_steps - warmup)
        return self.maximal_learning_rate * remaining

    def get_config(self) -> dict:
        return {
            "maximal_learning_rate": self.maximal_learning_rate,
            "total_steps": self.total_steps,
            "warmup_ratio": self.warmup_ratio,
        }


def schedule_from_config(config):
    """The schedule of a `get_config()`: its keys tell the three kinds apart."""
    if "warmup_ratio" in config:
        return LinearSchedule(**config)
    return (OneCycleSchedule if "total_steps" in config else CyclicalSchedule)(**config)


def cosine_annealing(start, end, position):
    """Half a cosine from `start` (position 0) to `end` (position 1).

    fast.ai's `sched_cos`: `start + (1 + cos(pi * (1 - position))) *
    (end - start) / 2`.
    """
    return start + (1 + math.cos(math.pi * (1 - position))) * (end - start) / 2


# === Argument checks ===


def _check_step(step):
    if not is_integer(step) or step < 0:
        raise ValueError(
            f"Invalid value for argument `step`. Expected an integer >= 0. Received: step={step!r}"
        )


def _check_positive_float(name, value):
    _check_positive(name, value, is_real, "number")


def _check_positive_int(name, value):
    _check_positive(name, value, is_integer, "integer")


def _check_positive(name, value, is_kind, kind):
    if not is_kind(value) or not value > 0:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a positive {kind}. "
            f"Received: {name}={value!r}"
        )
