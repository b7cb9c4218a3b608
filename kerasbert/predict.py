"""Batch prediction from an exported SavedModel or a TF Serving server.

```sh
python -m kerasbert.predict --model saved_models/quickstart/1 --input reviews.csv --output preds.csv
python -m kerasbert.predict --server http://localhost:8501 --model-name quickstart \
    --input reviews.csv --output preds.csv
```

Every input row comes out, in order, with `predicted_label` and one
`probability_<label>` column per class added; an empty or missing text is
predicted as the empty string. The output file appears only when complete.

The library side works on any `predict_fn(texts[, text_pairs]) -> (labels,
probabilities)`: `SavedModelClassifier` (the SavedModel's own serving
signature, loaded as TF Serving loads it, no Keras objects) and
`server_predict_fn` (a `kerasbert.client.ServingClient`) are two.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from kerasbert import cli
from kerasbert.data import read_table

log = logging.getLogger(__name__)

PREDICTED_LABEL = "predicted_label"
PROBABILITY_PREFIX = "probability_"
WRITERS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


# === Models ===


def resolve_model_dir(path) -> Path:
    """A SavedModel version directory: `path`, or its highest integer version.

    Args:
        path: `saved_models/<name>/<version>`, or `saved_models/<name>` for
            its highest version.

    Raises:
        FileNotFoundError: `path` is missing or holds no SavedModel.
    """
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such SavedModel directory")
    versions = sorted(
        (int(p.name) for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()),
    )
    if not versions:
        raise FileNotFoundError(
            f"{path}: not a SavedModel (no saved_model.pb) and no version directories in it; "
            "pass a version directory such as saved_models/<name>/1"
        )
    return path / str(versions[-1])


def read_model_labels(model_dir) -> list[str]:
    """The class names of an export, from `assets/labels.txt`.

    Raises:
        FileNotFoundError: the export has no label list (not made by kerasbert).
    """
    path = Path(model_dir) / "assets" / "labels.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir}: no assets/labels.txt; was it exported by kerasbert?")
    return path.read_text(encoding="utf-8").splitlines()


def read_model_bin_edges(model_dir) -> list[float] | None:
    """The bin edges of a model trained on a binned numeric target, or None."""
    path = Path(model_dir) / "assets" / "bin_edges.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


class SavedModelClassifier:
    """An exported kerasbert model, called through its `serving_default` signature.

    Loaded as TF Serving loads it (`kerasbert.saved_model_bundle`: a TF1
    Session on the MetaGraph, the restore op, the init op) and warmed up
    with the export's warm-up records, so what it predicts is what TF
    Serving would answer, and an export TF Serving would refuse is refused.

    Args:
        model_dir: a version directory (or its parent, for the highest version).

    Attributes:
        model_dir: the version directory.
        labels: class names by class id.
        text_pair: whether the signature takes a `text_pair` input.
        bin_edges: the numeric target's bin edges, or None.

    Example:

    >>> model = SavedModelClassifier("saved_models/quickstart/1")
    >>> labels, probabilities = model(["What a superb film."])
    """

    def __init__(self, model_dir):
        import tensorflow as tf

        from kerasbert.saved_model_bundle import (
            DEFAULT_SIGNATURE,
            SavedModelBundle,
            WarmupError,
            describe_error,
            replay_warmup,
        )

        self.model_dir = resolve_model_dir(model_dir)
        self.labels = read_model_labels(self.model_dir)
        self.bin_edges = read_model_bin_edges(self.model_dir)
        try:
            self._bundle = SavedModelBundle(self.model_dir)
        except tf.errors.OpError as error:
            raise ValueError(f"{self.model_dir}: TF Serving could not load it: {describe_error(error)}") from None
        try:
            for _ in replay_warmup(self._bundle):
                pass
        except WarmupError as error:
            raise WarmupError(f"{self.model_dir}: TF Serving would not load this export: {error}") from None
        signature = self._bundle.signature_defs.get(DEFAULT_SIGNATURE)
        if signature is None:
            raise ValueError(f"{self.model_dir}: the SavedModel has no serving_default signature")
        self.text_pair = "text_pair" in signature.inputs
        dims = signature.outputs["probabilities"].tensor_shape.dim
        num_classes = dims[-1].size if dims else -1
        if num_classes >= 0 and num_classes != len(self.labels):
            raise ValueError(
                f"{self.model_dir}: assets/labels.txt lists {len(self.labels)} labels but the "
                f"model outputs {num_classes} probabilities"
            )

    def __call__(self, texts, text_pairs=None):
        """Predicts a batch of strings.

        Returns:
            `(labels, probabilities)`: a list of label strings and a float32
            array `[len(texts), num_classes]`.
        """
        inputs = {"text": _string_array(texts)}
        if self.text_pair:
            if text_pairs is None:
                raise ValueError(f"{self.model_dir} takes sentence pairs; give a text_pair column")
            inputs["text_pair"] = _string_array(text_pairs)
        outputs = self._bundle.run("serving_default", inputs)
        labels = [label.decode("utf-8") for label in outputs["label"].tolist()]
        return labels, outputs["probabilities"]


def _string_array(texts) -> np.ndarray:
    """`texts` as the 1-D array of UTF-8 bytes a string input is fed."""
    array = np.empty(len(texts), dtype=object)
    array[:] = [text.encode("utf-8") if isinstance(text, str) else text for text in texts]
    return array


def server_predict_fn(client):
    """A `predict_fn` that sends texts to a TF Serving-compatible server.

    Args:
        client: a `kerasbert.client.ServingClient` (or any object with
            `predict(texts, text_pairs=None, batch_size=...) -> [(label,
            probabilities)]`).

    Returns:
        `predict_fn(texts, text_pairs=None) -> (labels, probabilities [N, C])`,
        one request per call.

    Example:

    >>> from kerasbert.client import ServingClient
    >>> predict_fn = server_predict_fn(ServingClient("http://localhost:8501", "quickstart"))
    """

    def predict_fn(texts, text_pairs=None):
        texts = list(texts)
        results = client.predict(texts, text_pairs, batch_size=max(1, len(texts)))
        labels = [str(label) for label, _ in results]
        probabilities = np.asarray([list(p) for _, p in results], dtype=np.float32)
        return labels, probabilities.reshape(len(results), -1)

    return predict_fn


def server_labels(client) -> list[str]:
    """The class names of a served kerasbert model, in probability order.

    Asks the export's `classify` signature, which answers every class with
    its score, about one empty text.

    Args:
        client: a `kerasbert.client.ServingClient`.
    """
    return [label for label, _ in client.classify([""])[0]]


# === Prediction ===


def predict_in_batches(predict_fn, texts, text_pairs=None, batch_size=64, progress=True, description="predicting"):
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
        raise ValueError(f"Invalid value for argument `batch_size`. Expected a positive int. Received: batch_size={batch_size!r}")
    texts = list(texts)
    if text_pairs is not None and len(text_pairs) != len(texts):
        raise ValueError(f"`text_pairs` has {len(text_pairs)} items but `texts` has {len(texts)}")
    labels, chunks = [], []
    with tqdm(total=len(texts), desc=description, unit="text", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            if text_pairs is None:
                batch_labels, batch_probabilities = predict_fn(batch)
            else:
                batch_labels, batch_probabilities = predict_fn(batch, list(text_pairs[start : start + batch_size]))
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


def text_values(column: pd.Series) -> list[str]:
    """A column as strings, with missing values (NaN, None) as `""`."""
    return [_as_text(v) for v in column.tolist()]


def _as_text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def predictions_frame(frame, labels, predicted, probabilities) -> pd.DataFrame:
    """`frame` with `predicted_label` and `probability_<label>` columns added.

    Input columns with those names are replaced.

    Args:
        frame: the input rows.
        labels: class names by class id (the probability columns' order).
        predicted: one predicted label per row.
        probabilities: `[len(frame), len(labels)]`.

    Raises:
        ValueError: the probabilities don't have one column per label.
    """
    probabilities = np.asarray(probabilities)
    if len(frame) and probabilities.shape != (len(frame), len(labels)):
        raise ValueError(
            f"expected probabilities of shape ({len(frame)}, {len(labels)}) for "
            f"{len(labels)} labels; received {probabilities.shape}"
        )
    added = [PREDICTED_LABEL] + [PROBABILITY_PREFIX + str(label) for label in labels]
    replaced = [column for column in added if column in frame.columns]
    if replaced:
        log.warning("replacing input column(s) %s with this prediction's", replaced)
    out = frame.drop(columns=replaced).reset_index(drop=True)
    new = {PREDICTED_LABEL: list(predicted)}
    for i, label in enumerate(labels):
        new[PROBABILITY_PREFIX + str(label)] = probabilities[:, i] if len(frame) else []
    return pd.concat([out, pd.DataFrame(new)], axis=1)


def check_columns(frame, columns, source):
    """Raises ValueError naming the columns of `columns` that `frame` lacks."""
    missing = [c for c in columns if c is not None and c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; found {list(frame.columns)[:20]}")


def read_input(path, text_column="text", text_pair_column=None) -> pd.DataFrame:
    """Reads a file to predict and checks that it has the text column(s).

    Raises:
        kerasbert.data.DataError: the file is missing or unreadable.
        ValueError: a missing column.
    """
    frame = read_table(path)
    check_columns(frame, [text_column, text_pair_column], path)
    return frame


def predict_frame(frame, predict_fn, labels, text_column="text", text_pair_column=None, batch_size=64, progress=True) -> pd.DataFrame:
    """Predicts every row of a frame; see `predictions_frame` for the columns added.

    Args:
        frame: rows with a `text_column` (missing values are predicted as "").
        predict_fn: `predict_fn(texts[, text_pairs]) -> (labels, probabilities)`.
        labels: class names by class id, for the probability columns.
        text_column: the column with the texts.
        text_pair_column: the second segment's column for pair models.
        batch_size: texts per call.
        progress: show a progress bar.
    """
    texts = text_values(frame[text_column])
    pairs = text_values(frame[text_pair_column]) if text_pair_column else None
    predicted, probabilities = predict_in_batches(predict_fn, texts, pairs, batch_size, progress)
    return predictions_frame(frame, labels, predicted, probabilities)


def predict_file(input_path, output_path, predict_fn, labels, text_column="text", text_pair_column=None, batch_size=64, progress=True) -> pd.DataFrame:
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
        kerasbert.data.DataError: the input is missing or unreadable.
        ValueError: a missing column.
        IsADirectoryError: `output_path` is a directory.

    Example:

    >>> model = SavedModelClassifier("saved_models/quickstart/1")
    >>> predict_file("reviews.csv", "preds.csv", model, model.labels)
    """
    check_output_file(output_path)
    frame = read_input(input_path, text_column, text_pair_column)
    out = predict_frame(frame, predict_fn, labels, text_column, text_pair_column, batch_size, progress)
    write_table(out, output_path)
    return out


def check_output_file(path):
    """Raises IsADirectoryError when `path` is a directory."""
    if Path(path).is_dir():
        raise IsADirectoryError(f"{path}: is a directory; give a file name for the predictions")


# === Files ===


@contextlib.contextmanager
def atomic_output(path):
    """Yields a temporary path beside `path`, renamed onto it on success.

    On any error the temporary file is removed and `path` is left as it was.

    Example:

    >>> with atomic_output("out.json") as tmp:
    ...     tmp.write_text("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path, text):
    """Writes UTF-8 text atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_table(frame, path):
    """Writes a frame atomically as CSV, TSV, JSON Lines or Parquet (by extension)."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bz2", ".xz")]
    kind = WRITERS.get(suffixes[-1] if suffixes else "", "csv")
    compression = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz"}.get(path.suffix.lower())
    with atomic_output(path) as tmp:
        if kind == "csv":
            frame.to_csv(tmp, index=False, compression=compression)
        elif kind == "tsv":
            frame.to_csv(tmp, sep="\t", index=False, compression=compression)
        elif kind == "jsonl":
            frame.to_json(tmp, orient="records", lines=True, force_ascii=False, compression=compression)
        else:
            frame.to_parquet(tmp, index=False)


# === Command line ===


def parse_args(argv=None):
    parser = cli.ArgumentParser(
        prog="python -m kerasbert.predict",
        description="Predict the label of every row of a file with an exported model or a server.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a SavedModel version directory, e.g. saved_models/quickstart/1")
    source.add_argument("--server", metavar="URL", help="a TF Serving REST address, e.g. http://localhost:8501")
    parser.add_argument("--model-name", help="the served model's name (with --server)")
    parser.add_argument("--input", required=True, help="CSV, TSV, JSON Lines or Parquet file")
    parser.add_argument("--output", required=True, help="where to write the rows with predictions")
    parser.add_argument("--text-column", default="text", help="the column to classify (default: text)")
    parser.add_argument("--text-pair-column", help="the second text's column, for sentence-pair models")
    parser.add_argument("--labels", help="with --server: the class names, comma-separated or a labels.txt file (default: asked from the server)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per call (default: 64)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


def _main(args):
    cli.setup(args.debug)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive int; received {args.batch_size}")
    if args.server and not args.model_name:
        raise ValueError("--server needs --model-name, the served model's name")
    check_output_file(args.output)
    # Cheap checks first: a bad input fails before TensorFlow loads.
    model_dir = resolve_model_dir(args.model) if args.model else None
    frame = read_input(args.input, args.text_column, args.text_pair_column)
    if args.server:
        # Imported here: prediction from a SavedModel does not need httpx.
        from kerasbert.client import ServingClient

        client = ServingClient(args.server, args.model_name)
        labels = parse_labels(args.labels) if args.labels else server_labels(client)
        predict_fn = server_predict_fn(client)
    else:
        model = SavedModelClassifier(model_dir)
        if model.text_pair and not args.text_pair_column:
            raise ValueError(f"{model.model_dir} takes sentence pairs; give --text-pair-column")
        labels, predict_fn = model.labels, model
    out = predict_frame(frame, predict_fn, labels, args.text_column, args.text_pair_column, args.batch_size, not args.no_progress)
    write_table(out, args.output)
    print(f"wrote {len(out)} predictions to {args.output}")
    return 0


def parse_labels(value) -> list[str]:
    """Class names from a labels file (one per line) or a comma-separated list."""
    path = Path(value)
    if path.is_file():
        labels = path.read_text(encoding="utf-8").splitlines()
    else:
        labels = [label.strip() for label in value.split(",")]
    if len(labels) < 2 or any(not label for label in labels):
        raise ValueError(f"--labels must name at least two non-empty classes; received {value!r}")
    return labels


def main(argv=None) -> int:
    args = parse_args(argv)
    return cli.run(_main, args)


if __name__ == "__main__":
    sys.exit(main())
