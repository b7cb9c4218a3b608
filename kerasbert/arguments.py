"""Type checks for constructor arguments, shared by the schedules, callbacks and optimizers.

A bool is an `int` to Python, but never a learning rate, a step count or a
number of layers: these refuse it.
"""

import numbers


def is_real(value) -> bool:
    """A real number (int, float, numpy scalar), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_integer(value) -> bool:
    """An integer (int, numpy integer), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
