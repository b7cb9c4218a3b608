"""An exported kerasbert model, loaded and called as TF Serving would, from Python.

`SavedModelClassifier` is what `kerasbert.evaluate` and `kerasbert.predict`
score: the export's own `serving_default` signature in a SavedModelBundle,
no Keras objects.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


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
        (
            int(p.name)
            for p in path.iterdir()
            if p.name.isdigit() and (p / "saved_model.pb").is_file()
        ),
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


def read_model_columns(model_dir, **given) -> dict:
    """The data columns a model was trained on, from the run config it was exported with.

    Args:
        model_dir: the export; None for a model known only by a server.
        **given: columns the user named (None: not named), which win.

    Returns:
        `{"text_column", "text_pair_column", "label_column"}`; `text`,
        None and `label` where neither the user nor `assets/config.yaml`
        names them.
    """
    import yaml

    columns = {"text_column": "text", "text_pair_column": None, "label_column": "label"}
    path = Path(model_dir or "") / "assets" / "config.yaml"
    if model_dir is not None and path.is_file():
        data = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("data") or {}
        columns.update({key: data[key] for key in columns if key in data})
    columns.update({key: value for key, value in given.items() if value is not None})
    return columns


def read_model_head(model_dir) -> dict:
    """An export's `assets/head.json`: `{"task", ...}`; `{"task": "classification"}` when absent."""
    path = Path(model_dir) / "assets" / "head.json"
    if not path.is_file():
        return {"task": "classification"}
    return json.loads(path.read_text(encoding="utf-8"))


def read_model_bin_edges(model_dir) -> list[float] | None:
    """The bin edges of a model trained on a binned numeric target, or None."""
    path = Path(model_dir) / "assets" / "bin_edges.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


class SavedModelClassifier:
    """An exported kerasbert model, called through its `serving_default` signature.

    Loaded as TF Serving loads it (`kerasbert.serving.saved_model_bundle`: a TF1
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
        task: `classification`, `multi_label` or `regression` (`assets/head.json`).
        head: the whole `assets/head.json` (thresholds, target scaling).

    Example:

    >>> model = SavedModelClassifier("saved_models/quickstart/1")
    >>> labels, probabilities = model(["What a superb film."])
    """

    def __init__(self, model_dir):
        import tensorflow as tf

        from kerasbert.serving.saved_model_bundle import (
            DEFAULT_SIGNATURE,
            SavedModelBundle,
            WarmupError,
            describe_error,
            replay_warmup,
        )

        self.model_dir = resolve_model_dir(model_dir)
        self.labels = read_model_labels(self.model_dir)
        self.bin_edges = read_model_bin_edges(self.model_dir)
        self.head = read_model_head(self.model_dir)
        self.task = self.head.get("task", "classification")
        try:
            self._bundle = SavedModelBundle(self.model_dir)
        except tf.errors.OpError as error:
            raise ValueError(
                f"{self.model_dir}: TF Serving could not load it: {describe_error(error)}"
            ) from None
        try:
            for _ in replay_warmup(self._bundle):
                pass
        except WarmupError as error:
            raise WarmupError(
                f"{self.model_dir}: TF Serving would not load this export: {error}"
            ) from None
        signature = self._bundle.signature_defs.get(DEFAULT_SIGNATURE)
        if signature is None:
            raise ValueError(f"{self.model_dir}: the SavedModel has no serving_default signature")
        self.text_pair = "text_pair" in signature.inputs
        if "probabilities" not in signature.outputs:
            return  # a regression model answers one value per text
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
            array `[len(texts), num_classes]`. For a multi-label model, each
            label is the tuple of labels the graph decided on; for a
            regression model, each is the value and `probabilities` is
            `[len(texts), 1]` of those values.

        Raises:
            ValueError: the graph refused an input, such as a text longer
                than the export's `max_characters`.
        """
        import tensorflow as tf

        from kerasbert.serving.saved_model_bundle import error_message

        inputs = {"text": _string_array(texts)}
        if self.text_pair:
            if text_pairs is None:
                raise ValueError(f"{self.model_dir} takes sentence pairs; give a text_pair column")
            inputs["text_pair"] = _string_array(text_pairs)
        try:
            outputs = self._bundle.run("serving_default", inputs)
        except tf.errors.InvalidArgumentError as error:
            # The graph refused an input, e.g. a text over `export.max_characters`.
            raise ValueError(f"{self.model_dir}: {error_message(error).splitlines()[0]}") from None
        if self.task == "regression":
            values = np.asarray(outputs["value"], dtype=np.float32)
            return [float(v) for v in values], values[:, None]
        if self.task == "multi_label":
            on = np.asarray(outputs["labels_on"], dtype=bool)
            decided = [tuple(self.labels[j] for j in np.flatnonzero(row)) for row in on]
            return decided, outputs["probabilities"]
        labels = [label.decode("utf-8") for label in outputs["label"].tolist()]
        return labels, outputs["probabilities"]


def _string_array(texts) -> np.ndarray:
    """`texts` as the 1-D array of UTF-8 bytes a string input is fed."""
    array = np.empty(len(texts), dtype=object)
    array[:] = [text.encode("utf-8") if isinstance(text, str) else text for text in texts]
    return array
