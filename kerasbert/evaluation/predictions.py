"""Predicting every row of a table, with any `predict_fn`.

Every input row comes out, in order, with `predicted_label` and one
`probability_<label>` column per class added; an empty or missing text is
predicted as the empty string. The functions work on any
`predict_fn(texts[, text_pairs]) -> (labels, probabilities)`:
`kerasbert.evaluation.saved_model_classifier.SavedModelClassifier` (an
export) and `server_predict_fn` (a `kerasbert.client.ServingClient`) are two.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from kerasbert.data.tables import check_columns, read_table, text_values, write_table

log = logging.getLogger(__name__)


PREDICTED_LABEL = "predicted_label"


PROBABILITY_PREFIX = "probability_"


def server_predict_fn(client, task="classification"):
    """A `predict_fn` that sends texts to a TF Serving-compatible server.

    It answers as `SavedModelClassifier` does for the same export: a
    multi-label model's decided labels (the thresholds applied in the
    graph) come from `serving_default`, a regression model's values from
    its `regress` signature.

    Args:
        client: a `kerasbert.client.ServingClient` (or any object with its
            `predict`, `predict_labels` and `regress` methods).
        task: the served model's task (`server_task`).

    Returns:
        `predict_fn(texts, text_pairs=None) -> (labels, probabilities [N, C])`,
        one request per call; for `multi_label`, each label is the tuple of
        labels decided on; for `regression`, each is the value, and
        `probabilities` is `[N, 1]` of those values.

    Example:

    >>> from kerasbert.client import ServingClient
    >>> predict_fn = server_predict_fn(ServingClient("http://localhost:8501", "quickstart"))
    """

    def predict_fn(texts, text_pairs=None):
        texts = list(texts)
        batch_size = max(1, len(texts))
        if task == "regression":
            # float32, as the export answers: the same numbers as `predict --model`.
            values = np.asarray(client.regress(texts, text_pairs, batch_size), dtype=np.float32)
            return [float(v) for v in values], values[:, None]
        if task == "multi_label":
            results = client.predict_labels(texts, text_pairs, batch_size)
        else:
            results = client.predict(texts, text_pairs, batch_size=batch_size)
        labels = [label if task == "multi_label" else str(label) for label, _ in results]
        probabilities = np.asarray([list(p) for _, p in results], dtype=np.float32)
        return labels, probabilities.reshape(len(results), -1)

    return predict_fn


def server_labels(client) -> list[str]:
    """The class names of a served kerasbert model, in probability order.

    Asks the export's `classify` signature, which answers every class (or,
    multi-label, every label) with its score, about one empty text.

    Args:
        client: a `kerasbert.client.ServingClient`.
    """
    return [label for label, _ in client.classify([""])[0]]


def server_task(client) -> str:
    """The task of a served kerasbert model, told by its `serving_default` outputs.

    Args:
        client: a `kerasbert.client.ServingClient`.

    Returns:
        `multi_label` (a `labels_on` output), `regression` (a `value`
        output) or `classification`.
    """
    signatures = client.metadata()["metadata"]["signature_def"]["signature_def"]
    outputs = signatures.get("serving_default", {}).get("outputs", {})
    if "labels_on" in outputs:
        return "multi_label"
    if "value" in outputs:
        return "regression"
    return "classification"


def predict_in_batches(
    predict_fn, texts, text_pairs=None, batch_size=64, progress=True, description="predicting"
):
    """Runs `predict_fn` over `texts` in batches, with a progress bar.

    Args:
        predict_fn: `predict_fn(texts[, text_pairs]) -> (labels, probabilities)`.
        texts: a list of strings.
        text_pairs: optional second segments, as long as `texts`.
        batch_size: texts per call.
        progress: show a tqdm bar on stderr.
        description: the bar's label.

    Returns:
        `(labels, probabilities)`: a list of `len(texts)` label strings and a
        `[len(texts), num_classes]` float array, in input order.

    Raises:
        ValueError: `batch_size` is not positive, or `text_pairs` has the
            wrong length.
        RuntimeError: `predict_fn` returned the wrong number of rows.
    """
    from tqdm.auto import tqdm

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"Invalid value for argument `batch_size`. Expected a positive int. Received: batch_size={batch_size!r}"
        )
    texts = list(texts)
    if text_pairs is not None and len(text_pairs) != len(texts):
        raise ValueError(f"`text_pairs` has {len(text_pairs)} items but `texts` has {len(texts)}")
    labels, chunks = [], []
    with tqdm(
        total=len(texts), desc=description, unit="text", disable=not progress, file=sys.stderr
    ) as bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            if text_pairs is None:
                batch_labels, batch_probabilities = predict_fn(batch)
            else:
                batch_labels, batch_probabilities = predict_fn(
                    batch, list(text_pairs[start : start + batch_size])
                )
            batch_probabilities = np.asarray(batch_probabilities)
            if len(batch_labels) != len(batch) or len(batch_probabilities) != len(batch):
                raise RuntimeError(
                    f"the model returned {len(batch_labels)} labels and {len(batch_probabilities)} "
                    f"probability rows for a batch of {len(batch)} texts"
                )
            labels.extend(batch_labels)
            chunks.append(batch_probabilities)
            bar.update(len(batch))
    probabilities = np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
    return labels, probabilities


# A multi-label model's decided labels, joined by `LABEL_DELIMITER`, and a
# regression model's value.
PREDICTED_LABELS = "predicted_labels"
PREDICTED_VALUE = "predicted_value"
LABEL_DELIMITER = "|"


def predictions_frame(
    frame, labels, predicted, probabilities, task="classification"
) -> pd.DataFrame:
    """`frame` with `predicted_label` and `probability_<label>` columns added.

    Input columns with those names are replaced. A multi-label model's rows
    get `predicted_labels` (the labels decided on, `|`-delimited) instead of
    `predicted_label`; a regression model's get `predicted_value` alone.

    Args:
        frame: the input rows.
        labels: class names by class id (the probability columns' order).
        predicted: one predicted label per row (a tuple of labels for
            `multi_label`, a number for `regression`).
        probabilities: `[len(frame), len(labels)]`.
        task: the model's task (`SavedModelClassifier.task`).

    Raises:
        ValueError: the probabilities don't have one column per label.
    """
    probabilities = np.asarray(probabilities)
    if task == "regression":
        return _with_columns(frame, {PREDICTED_VALUE: [float(v) for v in predicted]})
    if len(frame) and probabilities.shape != (len(frame), len(labels)):
        raise ValueError(
            f"expected probabilities of shape ({len(frame)}, {len(labels)}) for "
            f"{len(labels)} labels; received {probabilities.shape}"
        )
    if task == "multi_label":
        new = {PREDICTED_LABELS: [LABEL_DELIMITER.join(names) for names in predicted]}
    else:
        new = {PREDICTED_LABEL: list(predicted)}
    for i, label in enumerate(labels):
        new[PROBABILITY_PREFIX + str(label)] = probabilities[:, i] if len(frame) else []
    return _with_columns(frame, new)


def _with_columns(frame, new) -> pd.DataFrame:
    replaced = [column for column in new if column in frame.columns]
    if replaced:
        log.warning("replacing input column(s) %s with this prediction's", replaced)
    out = frame.drop(columns=replaced).reset_index(drop=True)
    return pd.concat([out, pd.DataFrame(new)], axis=1)


def read_input(path, text_column="text", text_pair_column=None) -> pd.DataFrame:
    """Reads a file to predict and checks that it has the text column(s).

    Raises:
        kerasbert.data.tables.DataError: the file is missing or unreadable.
        ValueError: a missing column.
    """
    frame = read_table(path)
    check_columns(frame, [text_column, text_pair_column], path)
    return frame


def predict_frame(
    frame,
    predict_fn,
    labels,
    text_column="text",
    text_pair_column=None,
    batch_size=64,
    progress=True,
    task="classification",
) -> pd.DataFrame:
    """Predicts every row of a frame; see `predictions_frame` for the columns added.

    Args:
        frame: rows with a `text_column` (missing values are predicted as "").
        predict_fn: `predict_fn(texts[, text_pairs]) -> (labels, probabilities)`.
        labels: class names by class id, for the probability columns.
        text_column: the column with the texts.
        text_pair_column: the second segment's column for pair models.
        batch_size: texts per call.
        progress: show a progress bar.
        task: the model's task, for the columns (see `predictions_frame`).
    """
    texts = text_values(frame[text_column])
    pairs = text_values(frame[text_pair_column]) if text_pair_column else None
    predicted, probabilities = predict_in_batches(predict_fn, texts, pairs, batch_size, progress)
    return predictions_frame(frame, labels, predicted, probabilities, task)


# `predict_frame`'s arguments, after the two paths.
def predict_file(
    input_path,
    output_path,
    predict_fn,
    labels,
    text_column="text",
    text_pair_column=None,
    batch_size=64,
    progress=True,
) -> pd.DataFrame:
    """Predicts every row of a file and writes the rows with predictions.

    Everything is checked before anything is written; the output appears
    atomically, so a failure leaves no partial file and an existing file
    untouched.

    Args:
        input_path: a CSV, TSV, JSON Lines or Parquet file.
        output_path: where to write; the format follows the extension
            (CSV when unknown).
        predict_fn, labels, text_column, text_pair_column, batch_size,
            progress: as for `predict_frame`.

    Returns:
        The written frame.

    Raises:
        kerasbert.data.tables.DataError: the input is missing or unreadable.
        ValueError: a missing column.
        IsADirectoryError: `output_path` is a directory.

    Example:

    >>> model = SavedModelClassifier("saved_models/quickstart/1")
    >>> predict_file("reviews.csv", "preds.csv", model, model.labels)
    """
    check_output_file(output_path)
    frame = read_input(input_path, text_column, text_pair_column)
    out = predict_frame(
        frame, predict_fn, labels, text_column, text_pair_column, batch_size, progress
    )
    write_table(out, output_path)
    return out


def check_output_file(path):
    """Raises IsADirectoryError when `path` is a directory."""
    if Path(path).is_dir():
        raise IsADirectoryError(f"{path}: is a directory; give a file name for the predictions")
