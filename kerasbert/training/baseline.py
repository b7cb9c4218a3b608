"""A TF-IDF + logistic regression baseline, scored like the fine-tuned model.

A fine-tuned transformer is worth its cost only if it beats a linear model
on word n-grams; the baseline is trained on the same training split and
scored on exactly the same validation and test rows, with the same metrics
(`kerasbert.evaluation.metrics.classification_metrics`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from kerasbert import rundir
from kerasbert.evaluation import metrics as metrics_lib
from kerasbert.files import write_json

log = logging.getLogger(__name__)

DESCRIPTION = "TF-IDF (word 1-2 grams, sublinear tf) + logistic regression, C chosen on validation"


# Logistic regression's inverse regularisation strengths tried on the
# validation split: a baseline left at scikit-learn's default (C=1) is
# easy to beat, and flatters the model it is compared with.
C_VALUES = (0.1, 1.0, 10.0, 100.0)


def build_baseline(seed=0, C=1.0):
    """An unfitted scikit-learn pipeline: TF-IDF on word 1-2 grams, then logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True),
        LogisticRegression(C=C, max_iter=1000, random_state=seed),
    )


def fit_baseline(train_texts, train_labels, validation=None, seed=0):
    """The baseline fitted on the training texts, with C chosen on `validation`.

    The TF-IDF vocabulary is fitted once; one logistic regression per value
    of `C_VALUES` is fitted on the training split, and the one with the best
    validation accuracy is kept (the smaller C on a tie). Without a
    validation split, C is 1.

    Args:
        train_texts: training strings.
        train_labels: their int class ids.
        validation: `(texts, class ids)` to choose C on, or None.
        seed: the logistic regression's seed.

    Returns:
        `(model, C)`: the fitted pipeline and the C it uses.
    """
    from sklearn.base import clone

    pipeline = build_baseline(seed)
    vectorizer, regression = pipeline.steps[0][1], pipeline.steps[1][1]
    features = vectorizer.fit_transform(list(train_texts))
    candidates = C_VALUES if validation is not None else (1.0,)
    best = None
    for C in candidates:
        fitted = clone(regression).set_params(C=C).fit(features, train_labels)
        if validation is None:
            best = (fitted, C)
            break
        texts, y_true = validation
        accuracy = float(
            np.mean(fitted.predict(vectorizer.transform(list(texts))) == np.asarray(y_true))
        )
        if best is None or accuracy > best[2]:
            best = (fitted, C, accuracy)
    pipeline.steps[1] = (pipeline.steps[1][0], best[0])
    return pipeline, best[1]


def baseline_probabilities(model, texts, num_classes) -> np.ndarray:
    """`[N, num_classes]` probabilities of a fitted baseline.

    Classes the baseline never saw in training (possible with binned
    targets) get probability 0.
    """
    known = model.predict_proba(list(texts))
    probabilities = np.zeros((len(known), num_classes), dtype=np.float64)
    probabilities[:, model.classes_] = known
    return probabilities


def evaluate_baseline(
    train_texts,
    train_labels,
    eval_sets,
    labels,
    seed=0,
    num_bins=metrics_lib.DEFAULT_NUM_BINS,
) -> dict:
    """Fits the baseline on the training texts and scores it on each evaluation set.

    Its C is chosen on `eval_sets["validation"]` when there is one (see
    `fit_baseline`).

    Args:
        train_texts: training strings.
        train_labels: their int class ids (indices into `labels`).
        eval_sets: `{name: (texts, class ids)}`, e.g. `{"validation": ...,
            "test": ...}`.
        labels: class names by class id.
        seed: the logistic regression's seed.
        num_bins: confidence bins for the calibration error.

    Returns:
        `{name: metrics}` with the metrics of
        `kerasbert.evaluation.metrics.classification_metrics`.

    Raises:
        ValueError: fewer than two training classes, or ids out of range.

    Example:

    >>> evaluate_baseline(["good", "bad"] * 5, [1, 0] * 5, {"test": (["good"], [1])}, ["neg", "pos"])["test"]["accuracy"]
    1.0
    """
    train_labels = np.asarray(train_labels, dtype=np.int64)
    if len(train_texts) != len(train_labels):
        raise ValueError(f"{len(train_texts)} training texts but {len(train_labels)} labels")
    if len(np.unique(train_labels)) < 2:
        raise ValueError("the baseline needs at least two classes in the training labels")
    if train_labels.min() < 0 or train_labels.max() >= len(labels):
        raise ValueError(
            f"training class ids must lie in [0, {len(labels)}); received {sorted(set(train_labels.tolist()))[:10]}"
        )
    model, _ = fit_baseline(train_texts, train_labels, eval_sets.get("validation"), seed)
    return score_baseline(model, eval_sets, labels, num_bins)


def score_baseline(model, eval_sets, labels, num_bins=metrics_lib.DEFAULT_NUM_BINS) -> dict:
    """`{name: classification_metrics}` of a fitted baseline on each evaluation set."""
    results = {}
    for name, (texts, y_true) in eval_sets.items():
        probabilities = baseline_probabilities(model, texts, len(labels))
        results[name] = metrics_lib.classification_metrics(
            np.asarray(y_true, dtype=np.int64), probabilities, labels, num_bins
        )
    return results


def joined_texts(frame) -> list[str]:
    """A split's texts; a sentence pair is joined with a space (bag-of-words sees both)."""
    texts = frame["text"].astype(str)
    if "text_pair" in frame:
        texts = texts + " " + frame["text_pair"].astype(str)
    return texts.tolist()


def write_baseline(splits, run_dir, seed=0) -> dict:
    """Runs the baseline on a run's splits and writes `baseline.json`.

    Args:
        splits: the run's `kerasbert.data.splits.Splits`.
        run_dir: the run directory.
        seed: the logistic regression's seed.

    Returns:
        `{"model", "train_rows", "seconds", "validation", "test"}`, as
        written (no `test` when the run has no test split).
    """
    started = time.perf_counter()
    eval_sets = {
        name: (joined_texts(frame), splits.label_ids(name))
        for name, frame in splits.items()
        if name != "train"
    }
    model, C = fit_baseline(
        joined_texts(splits.train), splits.label_ids("train"), eval_sets.get("validation"), seed
    )
    results = score_baseline(model, eval_sets, splits.labels)
    record = {
        "model": DESCRIPTION,
        "C": C,
        "train_rows": int(len(splits.train)),
        "seconds": round(time.perf_counter() - started, 3),
        **results,
    }
    write_json(Path(run_dir) / rundir.BASELINE, record)
    for name, values in results.items():
        log.info(
            "baseline %s: accuracy %.4f, macro F1 %.4f",
            name,
            values["accuracy"],
            values["macro_f1"],
        )
    return record


# === Multi-label and regression ===

TARGET_DESCRIPTIONS = {
    "multi_label": "TF-IDF (word 1-2 grams, sublinear tf) + one logistic regression per label, "
    "thresholds of 0.5",
    "regression": "TF-IDF (word 1-2 grams, sublinear tf) + ridge regression on the scaled "
    "target, alpha chosen on validation",
}
ALPHA_VALUES = (0.1, 1.0, 10.0, 100.0)


def write_target_baseline(splits, run_dir, seed=0) -> dict:
    """`write_baseline` for a multi-label or regression run: the same splits, their metrics.

    Regression fits ridge regression on the target as the model learns it
    (transformed and standardised), its `alpha` chosen on validation, and is
    scored in the target's unit; multi-label fits one logistic regression
    per label.

    Returns:
        `{"model", "train_rows", "seconds", "validation", "test"}`, as written.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.multiclass import OneVsRestClassifier

    from kerasbert.evaluation import target_metrics

    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
    features = {"train": vectorizer.fit_transform(joined_texts(splits.train))}
    for name, frame in splits.items():
        if name != "train":
            features[name] = vectorizer.transform(joined_texts(frame))
    results = {}
    record = {"model": TARGET_DESCRIPTIONS[splits.task]}
    if splits.task == "regression":
        target = splits.label_ids("train").ravel()
        best = None
        for alpha in ALPHA_VALUES:
            model = Ridge(alpha=alpha).fit(features["train"], target)
            predicted = splits.scaling.inverse(model.predict(features["validation"]))
            mae = target_metrics.regression_metrics(splits.validation["label"], predicted)["mae"]
            if best is None or mae < best[0]:
                best = (mae, alpha, model)
        _, record["alpha"], model = best
        for name in features:
            if name != "train":
                predicted = splits.scaling.inverse(model.predict(features[name]))
                frame = getattr(splits, name)
                results[name] = target_metrics.regression_metrics(frame["label"], predicted)
    else:
        model = OneVsRestClassifier(LogisticRegression(max_iter=1000, random_state=seed))
        model.fit(features["train"], splits.label_ids("train"))
        for name in features:
            if name != "train":
                results[name] = target_metrics.multi_label_metrics(
                    splits.label_ids(name), model.predict_proba(features[name]), splits.labels
                )
    record.update(
        train_rows=int(len(splits.train)),
        seconds=round(time.perf_counter() - started, 3),
        **results,
    )
    write_json(Path(run_dir) / rundir.BASELINE, record)
    return record
