"""Labelled text in splits: cleaning, stratified splits, labels, binning, class weights.

Everything here is pandas and scikit-learn; reading files is
`kerasbert.data.tables`', turning the splits into `tf.data` pipelines
`kerasbert.data.pipeline`'s.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kerasbert.data import targets as targets_lib
from kerasbert.data.tables import DataError, as_text, label_text, read_table

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


@dataclass
class Splits:
    """Train/validation/test frames with `text`, `label` (and `text_pair`).

    Attributes:
        train, validation, test: DataFrames; `label` holds label strings
            (a tuple of label names for `multi_label`, a float for
            `regression`).
        labels: the label vocabulary, fixed by the training split; the class
            id of a label is its index. For `regression`, the target's name.
        bin_edges: the edges used to bin a numeric target, or None.
        dropped: rows dropped per split for an empty text or missing label.
        task: `classification`, `multi_label` or `regression`.
        scaling: a regression target's `TargetScaling`, else None.
        unlabelled: `multi_label` only: texts with no label, per split.
    """

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame | None
    labels: list[str]
    bin_edges: list[float] | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    task: str = "classification"
    scaling: targets_lib.TargetScaling | None = None
    unlabelled: dict[str, int] = field(default_factory=dict)

    def label_ids(self, split: str) -> np.ndarray:
        """What the model learns: class ids, multi-hot rows, or scaled targets `[N, 1]`."""
        frame = getattr(self, split)
        if self.task == "multi_label":
            return targets_lib.multi_hot(frame["label"], self.labels)
        if self.task == "regression":
            return self.scaling.scale(frame["label"].to_numpy())
        index = {label: i for i, label in enumerate(self.labels)}
        return getattr(self, split)["label"].map(index).to_numpy(dtype="int64")

    def items(self):
        for name in SPLITS:
            frame = getattr(self, name)
            if frame is not None:
                yield name, frame


# === Splits ===


def load_splits(data_config, task="classification", target_transform="none") -> Splits:
    """Reads, cleans, splits and labels the data a config describes.

    Args:
        data_config: a `kerasbert.config.DataConfig`.
        task: `classification`, `multi_label` or `regression` (`model.task`).
        target_transform: `regression` only: `none` or `log1p`.

    Returns:
        `Splits` with string labels and a fixed label vocabulary.

    Raises:
        DataError: a missing column, an empty split, a single-class training
            set, or a validation/test label unseen in training.
    """
    cfg = data_config
    if task not in targets_lib.TASKS:
        raise ValueError(
            f"Invalid value for argument `task`. Expected one of "
            f"{targets_lib.TASKS}. Received: task={task!r}"
        )
    clean_args = (cfg, task, target_transform)
    # Quantile strata for a number to predict, no strata for label sets.
    strata = cfg.binning if task == "classification" else task
    dropped = {}
    if cfg.path is not None:
        frame, dropped["all"] = _clean(read_table(cfg.path, cfg.format), *clean_args, cfg.path)
        _check_not_empty(frame, "the data", cfg.path, dropped["all"])
        frames = split_frame(frame, cfg.split.validation, cfg.split.test, cfg.seed, strata)
    else:
        frames = {}
        for name in SPLITS:
            source = getattr(cfg, name)
            if source is None:
                frames[name] = None
                continue
            frames[name], dropped[name] = _clean(
                read_table(source, cfg.format), *clean_args, source
            )
            _check_not_empty(frames[name], f"the {name} split", source, dropped[name])
        if frames["validation"] is None:
            # No validation file: hold out a stratified slice of train.
            parts = split_frame(frames["train"], cfg.split.validation or 0.1, 0.0, cfg.seed, strata)
            frames["train"], frames["validation"] = parts["train"], parts["validation"]
    for name, count in dropped.items():
        if count:
            where = "the data" if name == "all" else f"the {name} file"
            log.warning(
                "dropped %d row(s) of %s with an empty text or a missing label", count, where
            )

    if task != "classification":
        return _target_splits(frames, dropped, cfg, task, target_transform)
    bin_edges = None
    if cfg.binning is not None:
        bin_edges = bin_edges_for(frames["train"]["label"], cfg.binning)
        labels = bin_names(bin_edges, cfg.binning.names)
        for name, frame in frames.items():
            if frame is not None:
                frame["label"] = bin_labels(frame["label"], bin_edges, labels, source=name)
        present = set(frames["train"]["label"])
        labels_in_train = [label for label in labels if label in present]
    else:
        labels_in_train = label_vocabulary(frames["train"]["label"])
        labels = labels_in_train

    for name, frame in frames.items():
        if frame is not None and frame.empty:
            raise DataError(f"the {name} split is empty; give it rows or change data.split")
    if len(labels_in_train) < 2:
        raise DataError(
            f"the training split has a single class {labels_in_train}; a classifier "
            "needs at least two"
        )
    for name in ("validation", "test"):
        frame = frames[name]
        if frame is None:
            continue
        unseen = sorted(set(frame["label"]) - set(labels_in_train))
        if unseen:
            raise DataError(
                f"the {name} split has labels not seen in training: {unseen[:10]}; "
                f"training labels are {labels_in_train[:20]}"
            )
    return Splits(
        train=frames["train"],
        validation=frames["validation"],
        test=frames["test"],
        labels=list(labels),
        bin_edges=bin_edges,
        dropped=dropped,
    )


def _target_splits(frames, dropped, cfg, task, target_transform) -> Splits:
    """The `Splits` of a multi-label or regression run, checked."""
    for name, frame in frames.items():
        if frame is not None and frame.empty:
            raise DataError(f"the {name} split is empty; give it rows or change data.split")
    if task == "regression":
        scaling = targets_lib.TargetScaling.fit(frames["train"]["label"], target_transform)
        return Splits(
            train=frames["train"],
            validation=frames["validation"],
            test=frames["test"],
            labels=[cfg.label_column],
            dropped=dropped,
            task=task,
            scaling=scaling,
        )
    in_train = targets_lib.label_set_vocabulary(frames["train"]["label"])
    labels = list(cfg.label_columns) if cfg.label_columns is not None else in_train
    never = [label for label in labels if label not in in_train]
    for name in ("validation", "test"):
        frame = frames[name]
        if frame is None:
            continue
        unseen = sorted(set(targets_lib.label_set_vocabulary(frame["label"])) - set(in_train))
        if unseen:
            raise DataError(
                f"the {name} split has labels never given in training: {unseen[:10]}; "
                f"training labels are {in_train[:20]}"
            )
    if never:
        raise DataError(
            f"label(s) {never[:10]} are never given in the training split, so the model "
            "cannot learn them; give them training examples or leave their columns out"
        )
    if len(labels) < 2:
        raise DataError(
            f"the training split has a single label {labels}; multi-label needs at least two"
        )
    unlabelled = {}
    for name, frame in frames.items():
        if frame is not None:
            unlabelled[name] = int((frame["label"].map(len) == 0).sum())
            if unlabelled[name]:
                log.info("%s: %d text(s) with no label", name, unlabelled[name])
    return Splits(
        train=frames["train"],
        validation=frames["validation"],
        test=frames["test"],
        labels=labels,
        dropped=dropped,
        task=task,
        unlabelled=unlabelled,
    )


def _check_not_empty(frame, what, source, dropped):
    # Before splitting: scikit-learn's complaint about 0 rows says nothing useful.
    if frame.empty:
        raise DataError(
            f"{what} is empty: {source} has no usable rows ({dropped} dropped for an "
            "empty text or a missing label); give it labelled rows"
        )


def _clean(frame: pd.DataFrame, cfg, task, target_transform, source) -> tuple[pd.DataFrame, int]:
    """Keeps the configured columns under standard names; drops unusable rows."""
    wanted = {"text": cfg.text_column, "label": cfg.label_column}
    if cfg.text_pair_column:
        wanted["text_pair"] = cfg.text_pair_column
    required = list(wanted.values())
    if cfg.label_columns is not None:
        del wanted["label"]
        required = list(wanted.values()) + list(cfg.label_columns)
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; found {list(frame.columns)[:20]}")
    if task == "multi_label":
        return _clean_label_sets(frame, wanted, cfg, source)
    frame = frame[list(wanted.values())].rename(columns={v: k for k, v in wanted.items()})
    text_columns = [c for c in ("text", "text_pair") if c in frame]
    for column in text_columns:
        frame[column] = frame[column].map(as_text)
    label = frame["label"]
    # An empty second text is kept: the pair is then the first text alone,
    # as a served request with an empty `text_pair` is.
    usable = (
        label.notna() & (label.astype(str).str.strip() != "") & (frame["text"].str.strip() != "")
    )
    frame = frame[usable].reset_index(drop=True)
    if task == "regression":
        frame["label"] = targets_lib.numeric_targets(frame["label"], source, target_transform)
    elif cfg.binning is None:
        frame["label"] = frame["label"].map(label_text)
    return frame, int((~usable).sum())


def _clean_label_sets(frame, wanted, cfg, source):
    """`_clean` for multi-label data: a `label` of label-name tuples, empty ones kept."""
    if cfg.label_columns is not None:
        label_sets = targets_lib.indicator_label_sets(frame, cfg.label_columns, source)
    else:
        label_sets = targets_lib.split_label_cells(
            frame[cfg.label_column], cfg.label_delimiter, source
        )
    texts = {k: v for k, v in wanted.items() if k != "label"}
    out = frame[list(texts.values())].rename(columns={v: k for k, v in texts.items()})
    for column in [c for c in ("text", "text_pair") if c in out]:
        out[column] = out[column].map(as_text)
    out["label"] = label_sets
    # A text with no label is an example (every label off); an empty text is not.
    usable = out["text"].str.strip() != ""
    return out[usable].reset_index(drop=True), int((~usable).sum())


def split_frame(frame, validation, test, seed, binning=None) -> dict:
    """Splits one frame into stratified train/validation/test parts.

    Stratifies on the label (or, for a binned numeric target and for
    `binning="regression"`, on its quantile bin) so every split keeps the
    class balance; `binning="multi_label"` splits label sets at random.

    Raises:
        DataError: when a class is too small to appear in every split.
    """
    from sklearn.model_selection import train_test_split

    strata = frame["label"].astype(str)
    if binning == "multi_label":
        strata = None
    elif binning is not None:
        values = _numeric(frame["label"], "the label column")
        bins = pd.qcut(values, q=min(10, max(2, len(values) // 10)), duplicates="drop")
        strata = pd.Series(np.asarray(bins).astype(str), index=frame.index)
    parts = {"train": frame, "validation": None, "test": None}
    try:
        rest = frame
        if test:
            rest, parts["test"] = train_test_split(
                frame, test_size=round(test * len(frame)), random_state=seed, stratify=strata
            )
        if validation:
            parts["train"], parts["validation"] = train_test_split(
                rest,
                test_size=round(validation * len(frame)),
                random_state=seed,
                stratify=None if strata is None else strata.loc[rest.index],
            )
        else:
            parts["train"] = rest
    except ValueError as e:
        counts = {} if strata is None else strata.value_counts().to_dict()
        raise DataError(
            f"cannot split {len(frame)} rows by class with validation={validation}, "
            f"test={test}: {str(e).splitlines()[0]} (class counts: {counts})"
        ) from None
    return {k: (v.reset_index(drop=True) if v is not None else None) for k, v in parts.items()}


# === Labels ===


def label_vocabulary(labels: pd.Series) -> list[str]:
    """Sorted distinct labels as strings; integers sort numerically."""
    distinct = set(labels.astype(str))
    try:
        return sorted(distinct, key=lambda s: (float(s), s))
    except ValueError:
        return sorted(distinct)


def bin_edges_for(values: pd.Series, binning) -> list[float]:
    """Inner bin edges: given, or the training target's quantiles."""
    if binning.edges is not None:
        return list(binning.edges)
    numbers = _numeric(values, "the training label column")
    quantiles = np.quantile(numbers, np.linspace(0, 1, binning.num_bins + 1)[1:-1])
    edges = sorted(set(float(q) for q in quantiles))
    if len(edges) < binning.num_bins - 1:
        raise DataError(
            f"the training target has too few distinct values for {binning.num_bins} "
            f"quantile bins (edges {edges}); lower data.binning.num_bins or give edges"
        )
    return edges


def bin_names(edges: list[float], names=None) -> list[str]:
    """The class names of the bins `[-inf, e0), [e0, e1), ... [en, inf)`.

    `names`, when given, are the names; else each bin is named by its bounds.
    """
    if names is not None:
        return list(names)
    bounds = [-math.inf] + list(edges) + [math.inf]
    return [f"[{_fmt(lo)}, {_fmt(hi)})" for lo, hi in zip(bounds, bounds[1:])]


def bin_labels(values: pd.Series, edges: list[float], names=None, source="data") -> pd.Series:
    """Maps numeric targets to the class names of their bins, `bin_names(edges, names)`."""
    numbers = _numeric(values, f"the {source} label column")
    index = np.searchsorted(np.asarray(edges, dtype="float64"), numbers, side="right")
    names = bin_names(edges, names)
    return pd.Series([names[i] for i in index], index=values.index)


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "-inf" if x < 0 else "inf"
    return f"{x:g}"


def _numeric(values: pd.Series, what: str) -> np.ndarray:
    return targets_lib.as_numbers(
        values,
        lambda count, examples: (
            f"binning needs numbers but {what} has {count} non-numeric value(s), e.g. {examples}"
        ),
    )


def class_weights(spec, labels: list[str], train_labels: pd.Series) -> dict[int, float] | None:
    """Keras `class_weight` from `"balanced"` or an explicit `{label: weight}`.

    `"balanced"` is scikit-learn's `n_samples / (n_classes * count)`. Labels
    left out of an explicit mapping weigh 1.

    Raises:
        DataError: an explicit mapping names a label that is not a class.
    """
    if spec is None:
        return None
    if spec == "balanced":
        from sklearn.utils.class_weight import compute_class_weight

        present = [label for label in labels if label in set(train_labels)]
        weights = compute_class_weight(
            "balanced", classes=np.array(present), y=train_labels.to_numpy()
        )
        by_label = dict(zip(present, weights))
        return {i: float(by_label.get(label, 1.0)) for i, label in enumerate(labels)}
    unknown = sorted(set(spec) - set(labels))
    if unknown:
        raise DataError(
            f"data.class_weight names unknown label(s) {unknown}; labels are {labels[:20]}"
        )
    return {i: float(spec.get(label, 1.0)) for i, label in enumerate(labels)}
