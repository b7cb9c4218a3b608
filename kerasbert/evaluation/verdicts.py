"""What a report says first: does the model beat the baseline, and does it predict more than one class.

Both are pure functions of what a run directory holds (`metrics.json`,
`baseline.json`, `test_predictions.csv`), so they can be tested directly and
the report and its command line say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

from kerasbert.evaluation import metrics as metrics_lib
from kerasbert.evaluation.formats import format_count, format_metric

# The main metric, then the one used when a run did not record it. Macro F1
# weighs every class alike, so a model that ignores a rare class cannot hide
# behind accuracy; plain Keras runs record only accuracy.
MAIN_METRICS = ("macro_f1", "accuracy")
# The split the verdict is given on, then the one used when a run has no test split.
VERDICT_SPLITS = ("test", "validation")


@dataclass(frozen=True)
class BaselineVerdict:
    """The model against the baseline on one split and metric (higher is better)."""

    split: str
    metric: str
    model: float
    baseline: float

    @property
    def difference(self) -> float:
        return self.model - self.baseline

    @property
    def beats(self) -> bool:
        return self.difference > 0

    @property
    def trails(self) -> bool:
        return self.difference < 0

    def sentence(self) -> str:
        """The verdict in one line, e.g. `The model trails the baseline on test macro_f1: ...`."""
        verb = "beats" if self.beats else "trails" if self.trails else "ties with"
        return (
            f"The model {verb} the baseline on {self.split} {self.metric}: "
            f"{format_metric(self.model)} against {format_metric(self.baseline)} "
            f"({self.difference:+.4f})."
        )


def baseline_verdict(metrics, baseline) -> BaselineVerdict | None:
    """The model against the baseline on the main metric, or None when they share none.

    The split is `test` (else `validation`) and the metric `macro_f1` (else
    `accuracy`): the first pair both the model and the baseline recorded.

    Args:
        metrics: `metrics.json`, `{split: {metric: value}}`.
        baseline: `baseline.json`, `{split: {metric: value}}`, or None.

    Example:

    >>> v = baseline_verdict({"test": {"macro_f1": 0.51}}, {"test": {"macro_f1": 0.94}})
    >>> v.trails, v.sentence()
    (True, 'The model trails the baseline on test macro_f1: 0.5100 against 0.9400 (-0.4300).')
    """
    for split in VERDICT_SPLITS:
        model_values = (metrics or {}).get(split)
        baseline_values = (baseline or {}).get(split)
        if not isinstance(model_values, dict) or not isinstance(baseline_values, dict):
            continue
        for metric in MAIN_METRICS:
            model, base = model_values.get(metric), baseline_values.get(metric)
            if metrics_lib.is_number(model) and metrics_lib.is_number(base):
                return BaselineVerdict(split, metric, float(model), float(base))
    return None


def single_predicted_class(predicted_counts, true_counts) -> str | None:
    """The one class a model predicted for every text, when the texts hold several classes.

    A model that gives every test text the same class has learned nothing
    about the texts. Only "every text" counts: a model that almost always
    predicts one class shows up instead as a low macro F1 against the
    baseline (`baseline_verdict`). A test set holding a single class is not
    flagged, since predicting that class is right there.

    Args:
        predicted_counts: `{label: number of texts predicted as it}`.
        true_counts: `{label: number of texts labelled with it}`.

    Returns:
        That label, or None.

    Example:

    >>> single_predicted_class({"pos": 9, "neg": 0}, {"pos": 5, "neg": 4})
    'pos'
    """
    predicted = [label for label, n in predicted_counts.items() if n > 0]
    present = [label for label, n in true_counts.items() if n > 0]
    if len(predicted) == 1 and len(present) > 1:
        return predicted[0]
    return None


def single_class_sentence(label, num_texts, num_classes) -> str:
    """The single-class warning in one line."""
    return (
        f"The model predicts the same class, {label!r}, for all {format_count(num_texts)} test "
        f"texts, which hold {format_count(num_classes)} classes: it does not tell the classes apart."
    )


def class_counts_from_matrix(matrix, labels) -> tuple[dict, dict]:
    """`(predicted_counts, true_counts)` from a confusion matrix (rows true, columns predicted)."""
    predicted = {str(label): sum(row[j] for row in matrix) for j, label in enumerate(labels)}
    true = {str(label): sum(matrix[i]) for i, label in enumerate(labels)}
    return predicted, true


def class_counts_from_predictions(predictions) -> tuple[dict, dict]:
    """`(predicted_counts, true_counts)` from `test_predictions.csv`'s columns."""
    return (
        predictions["predicted_label"].value_counts().to_dict(),
        predictions["label"].value_counts().to_dict(),
    )
