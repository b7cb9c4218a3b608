"""Scoring a multi-label or regression model: its metrics and its per-example predictions.

The counterpart of `kerasbert.evaluation.scoring` for `model.task:
multi_label` and `model.task: regression`, from an export
(`SavedModelClassifier`, whose graph applies the thresholds and the target
scaling) or from arrays a model in memory gave.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kerasbert.data.tables import write_table
from kerasbert.data.targets import multi_hot
from kerasbert.evaluation import target_metrics
from kerasbert.evaluation.predictions import (
    LABEL_DELIMITER,
    PREDICTED_LABELS,
    PREDICTED_VALUE,
    PROBABILITY_PREFIX,
    predict_in_batches,
)
from kerasbert.evaluation.scoring import metric_lines


def join_labels(names, delimiter=LABEL_DELIMITER) -> str:
    """`("a", "b")` as `"a|b"`; no label is `""`."""
    return delimiter.join(names)


def multi_label_table(texts, true_sets, decided, probabilities, labels, text_pairs=None):
    """One row per text: text, labels, `predicted_labels` (delimited) and each label's probability."""
    probabilities = np.asarray(probabilities)
    columns = {"text": list(texts)}
    if text_pairs is not None:
        columns["text_pair"] = list(text_pairs)
    if true_sets is not None:
        columns["label"] = [join_labels(names) for names in true_sets]
    columns[PREDICTED_LABELS] = [join_labels(names) for names in decided]
    for j, label in enumerate(labels):
        columns[PROBABILITY_PREFIX + str(label)] = probabilities[:, j]
    return pd.DataFrame(columns)


def regression_table(texts, true_values, values, text_pairs=None):
    """One row per text: text, label (the true value) and `predicted_value`."""
    columns = {"text": list(texts)}
    if text_pairs is not None:
        columns["text_pair"] = list(text_pairs)
    if true_values is not None:
        columns["label"] = list(true_values)
    columns[PREDICTED_VALUE] = np.asarray(values, dtype="float64").reshape(-1)
    return pd.DataFrame(columns)


def score_targets(task, labels, true_targets, answers, scores, thresholds=None):
    """The metrics of one split.

    Args:
        task: `multi_label` or `regression`.
        labels: the label names.
        true_targets: label-name tuples, or numbers.
        answers: what the model decided: label-name tuples, or values.
        scores: probabilities `[N, labels]` (multi-label only).
        thresholds: the thresholds the decisions were made with.
    """
    if task == "regression":
        return target_metrics.regression_metrics(true_targets, answers)
    # The model's own decisions (the graph's, for an export), not re-thresholded here.
    return target_metrics.multi_label_metrics(
        multi_hot(true_targets, labels),
        scores,
        labels,
        thresholds,
        decisions=multi_hot(answers, labels),
    )


def evaluate_saved_targets(
    model, texts, true_targets, text_pairs=None, batch_size=64, predictions_path=None
):
    """`evaluate_saved_model` for a multi-label or regression export.

    Args:
        model: a loaded `SavedModelClassifier` of a multi-label or regression export.
        texts: the texts.
        true_targets: label-name tuples (multi-label) or numbers (regression).
        text_pairs: second segments, for sentence-pair models.
        batch_size: texts per call.
        predictions_path: where to write the per-example predictions, if given.

    Returns:
        `multi_label_metrics` or `regression_metrics`.

    Raises:
        ValueError: a multi-label target names a label the model does not know.
    """
    texts, true_targets = list(texts), list(true_targets)
    if len(texts) != len(true_targets):
        raise ValueError(f"{len(texts)} texts but {len(true_targets)} targets")
    if model.task == "multi_label":
        unknown = sorted({n for names in true_targets for n in names} - set(model.labels))
        if unknown:
            raise ValueError(
                f"{len(unknown)} label(s) not in the model's label list: {unknown[:10]}; "
                f"the model knows {list(model.labels)[:20]}"
            )
    pairs = text_pairs if model.text_pair else None
    answers, scores = predict_in_batches(
        model, texts, pairs, batch_size, progress=False, description="evaluating"
    )
    metrics = score_targets(
        model.task, model.labels, true_targets, answers, scores, model.head.get("thresholds")
    )
    if predictions_path is not None:
        if model.task == "regression":
            table = regression_table(texts, true_targets, answers, pairs)
        else:
            table = multi_label_table(texts, true_targets, answers, scores, model.labels, pairs)
        write_table(table, predictions_path)
    return metrics


def load_labelled_targets(path, model_dir, task, text_column, label_column, text_pair_column):
    """Reads a labelled file for a multi-label or regression export, read as in training.

    The label columns, delimiter and target transform come from the run
    config the export carries (`assets/config.yaml`). Multi-label rows keep
    a text with no label; regression rows without a target are dropped.

    Returns:
        `(frame, dropped)`: `text`, `label` (and `text_pair`) columns, and the
        number of rows dropped.

    Raises:
        kerasbert.data.tables.DataError: the file is unreadable, or a target
            is not what training accepts.
        ValueError: a missing column.
    """
    from pathlib import Path

    import yaml

    from kerasbert.data import targets
    from kerasbert.data.tables import check_columns, read_table, text_values

    config_path = Path(model_dir) / "assets" / "config.yaml"
    config = (
        yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    )
    data, model = config.get("data") or {}, config.get("model") or {}
    frame = read_table(path)
    label_columns = data.get("label_columns") if task == "multi_label" else None
    check_columns(frame, [text_column, text_pair_column, *(label_columns or [label_column])], path)
    dropped = 0
    if task == "regression":
        label = frame[label_column]
        keep = label.notna() & (label.astype(str).str.strip() != "")
        dropped = int((~keep).sum())
        frame = frame[keep].reset_index(drop=True)
        values = targets.numeric_targets(frame[label_column], path, model.get("target_transform"))
    elif label_columns:
        values = targets.indicator_label_sets(frame, label_columns, path).tolist()
    else:
        delimiter = data.get("label_delimiter") or LABEL_DELIMITER
        values = targets.split_label_cells(frame[label_column], delimiter, path).tolist()
    out = pd.DataFrame({"text": text_values(frame[text_column])})
    if text_pair_column:
        out["text_pair"] = text_values(frame[text_pair_column])
    out["label"] = list(values)
    return out, dropped


def format_target_metrics(metrics) -> str:
    """A human-readable table of `multi_label_metrics` or `regression_metrics` output."""
    if "per_label" not in metrics:
        rows = [("examples", metrics.get("num_examples"))] + [
            (name, metrics.get(key))
            for name, key in (
                ("MAE", "mae"),
                ("RMSE", "rmse"),
                ("R²", "r2"),
                ("Spearman", "spearman"),
            )
        ]
    else:
        rows = [
            ("examples", metrics.get("num_examples")),
            ("micro F1", metrics.get("micro_f1")),
            ("macro F1", metrics.get("macro_f1")),
            ("subset accuracy", metrics.get("subset_accuracy")),
            ("Hamming loss", metrics.get("hamming_loss")),
            ("ROC-AUC", metrics.get("roc_auc")),
        ]
    lines = metric_lines(rows)
    if "per_label" in metrics:
        table = pd.DataFrame.from_dict(metrics["per_label"], orient="index")[
            ["precision", "recall", "f1", "roc_auc", "support", "threshold"]
        ]
        lines += ["", table.to_string(float_format=lambda x: f"{x:.4f}", na_rep="n/a")]
    return "\n".join(lines)
