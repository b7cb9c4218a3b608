"""What an export's graph does with the model's outputs: its task, temperature, thresholds and target scaling.

Saved with a run (`labels.json`) and with its export (`assets/head.json`),
and read by the serving module, which applies it inside the graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

TASKS = ("classification", "multi_label", "regression")
HEAD_FILE = "head.json"


@dataclass(frozen=True)
class Head:
    """How model outputs become answers.

    Attributes:
        task: `classification` (softmax, the most probable label),
            `multi_label` (a sigmoid per label, "on" at or above its
            threshold) or `regression` (one value).
        thresholds: `multi_label` only: one decision threshold per label.
        transform: `regression` only: `none` or `log1p`, undone in the graph.
        mean, std: `regression` only: the transformed target's
            standardisation, undone in the graph.
        temperature: what the logits are divided by before the softmax
            (a number) or the sigmoids (`multi_label`: one per label),
            fitted on validation (`kerasbert.training.calibration`); 1 leaves
            them as trained. Not for `regression`.

    Example:
    >>> Head("multi_label", thresholds=[0.5, 0.3]).to_dict()["thresholds"]
    [0.5, 0.3]
    """

    task: str = "classification"
    thresholds: list[float] = field(default_factory=list)
    transform: str = "none"
    mean: float = 0.0
    std: float = 1.0
    temperature: float | list[float] = 1.0

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(
                f"Invalid value for argument `task`. Expected one of {TASKS}. "
                f"Received: task={self.task!r}"
            )
        if self.transform not in ("none", "log1p"):
            raise ValueError(
                "Invalid value for argument `transform`. Expected 'none' or 'log1p'. "
                f"Received: transform={self.transform!r}"
            )
        if not self.std > 0:
            raise ValueError(
                f"Invalid value for argument `std`. Expected > 0. Received: {self.std}"
            )
        temperatures = (
            list(self.temperature)
            if isinstance(self.temperature, (list, tuple))
            else [self.temperature]
        )
        if not all(math.isfinite(t) and t > 0 for t in temperatures):
            raise ValueError(
                "Invalid value for argument `temperature`. Expected finite values > 0. "
                f"Received: temperature={self.temperature!r}"
            )
        if self.task == "regression" and temperatures != [1.0]:
            raise ValueError(
                "Invalid value for argument `temperature`. A regression head has no "
                f"probabilities to calibrate; expected 1. Received: temperature={self.temperature!r}"
            )
        if self.task == "classification" and isinstance(self.temperature, (list, tuple)):
            raise ValueError(
                "Invalid value for argument `temperature`. Expected one number for a "
                f"classification head. Received: temperature={self.temperature!r}"
            )
        if any(not 0 <= t <= 1 for t in self.thresholds):
            raise ValueError(
                "Invalid value for argument `thresholds`. Expected values in [0, 1]. "
                f"Received: thresholds={list(self.thresholds)}"
            )

    def check_labels(self, labels):
        """Raises ValueError unless a multi-label head has one threshold per label."""
        if self.task == "multi_label" and len(self.thresholds) != len(labels):
            raise ValueError(
                f"a multi-label head needs one threshold per label: {len(self.thresholds)} "
                f"thresholds for {len(labels)} labels"
            )
        if (
            self.task == "multi_label"
            and isinstance(self.temperature, (list, tuple))
            and len(self.temperature) != len(labels)
        ):
            raise ValueError(
                f"a multi-label head needs one temperature per label: {len(self.temperature)} "
                f"temperatures for {len(labels)} labels"
            )
        if self.task == "regression" and len(labels) != 1:
            raise ValueError(f"a regression head has one output, named by one label; got {labels}")

    def to_dict(self) -> dict:
        """The JSON form; only the fields of its task."""
        if self.task == "multi_label":
            return {
                "task": self.task,
                "thresholds": [float(t) for t in self.thresholds],
                "temperature": self.temperatures(len(self.thresholds)),
            }
        if self.task == "regression":
            return {
                "task": self.task,
                "transform": self.transform,
                "mean": float(self.mean),
                "std": float(self.std),
            }
        return {"task": self.task, "temperature": float(self.temperature)}

    def temperatures(self, num_labels) -> list[float]:
        """A multi-label head's temperature per label (a single number applies to each)."""
        if isinstance(self.temperature, (list, tuple)):
            return [float(t) for t in self.temperature]
        return [float(self.temperature)] * num_labels

    @classmethod
    def from_dict(cls, values) -> Head:
        """The head of `to_dict`'s form; None or `{}` is a classification head.

        A head saved before temperatures were fitted has a temperature of 1.
        """
        values = dict(values or {})
        temperature = values.get("temperature", 1.0)
        return cls(
            task=values.get("task", "classification"),
            thresholds=[float(t) for t in values.get("thresholds", [])],
            transform=values.get("transform", "none"),
            mean=float(values.get("mean", 0.0)),
            std=float(values.get("std", 1.0)),
            temperature=[float(t) for t in temperature]
            if isinstance(temperature, list)
            else float(temperature),
        )
