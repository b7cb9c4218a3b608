"""The TF-IDF + logistic regression baseline."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss

from kerasbert.data.splits import Splits
from kerasbert.training.baseline import evaluate_baseline, write_baseline
from tests.support.tiny import make_reviews

LABELS = ["bad", "good", "info"]


def reviews_split(n, seed):
    frame = make_reviews(n, seed=seed)
    return frame["text"].tolist(), frame["label"].map(LABELS.index).to_numpy()


def test_baseline_scores_like_an_independent_scikit_learn_fit():
    train_texts, train_ids = reviews_split(90, seed=0)
    test_texts, test_ids = reviews_split(30, seed=1)

    results = evaluate_baseline(train_texts, train_ids, {"test": (test_texts, test_ids)}, LABELS)

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression(max_iter=1000, random_state=0).fit(
        vectorizer.fit_transform(train_texts), train_ids
    )
    probabilities = model.predict_proba(vectorizer.transform(test_texts))
    test = results["test"]
    assert test["accuracy"] == pytest.approx(accuracy_score(test_ids, probabilities.argmax(axis=1)))
    assert test["log_loss"] == pytest.approx(log_loss(test_ids, probabilities))
    assert test["accuracy"] > 0.9  # the classes are separable by their words
    assert set(test) >= {
        "macro_f1",
        "weighted_f1",
        "roc_auc",
        "ece",
        "per_class",
        "confusion_matrix",
    }


def test_classes_unseen_in_training_get_probability_zero():
    # Binned targets can leave a class out of training; it keeps its column.
    labels = ["bad", "unused", "good"]
    texts = ["awful dull film", "great fun film"] * 5
    ids = np.array([0, 2] * 5)

    test = evaluate_baseline(texts, ids, {"test": (["awful dull", "great fun"], [0, 2])}, labels)[
        "test"
    ]

    assert test["per_class"]["unused"]["support"] == 0
    assert [row[1] for row in test["confusion_matrix"]] == [0, 0, 0]
    assert test["accuracy"] == 1.0


def test_write_baseline_scores_exactly_the_run_validation_and_test_rows(tmp_path):
    frames = {
        name: make_reviews(n, seed=s)
        for name, n, s in (("train", 60, 0), ("validation", 21, 1), ("test", 15, 2))
    }
    splits = Splits(frames["train"], frames["validation"], frames["test"], labels=LABELS)

    record = write_baseline(splits, tmp_path)

    written = json.loads((tmp_path / "baseline.json").read_text())
    assert written == record
    assert written["train_rows"] == 60
    assert written["C"] in (0.1, 1.0, 10.0, 100.0)  # chosen on the validation split
    assert written["validation"]["num_examples"] == 21
    assert written["test"]["num_examples"] == 15
    expected_counts = frames["test"]["label"].value_counts()
    assert [sum(row) for row in written["test"]["confusion_matrix"]] == [
        int(expected_counts[label]) for label in LABELS
    ]


def test_sentence_pairs_are_scored_on_both_texts(tmp_path):
    # The class is only visible in the second text.
    train = pd.DataFrame(
        {
            "text": ["the film"] * 20,
            "text_pair": ["awful dull", "great fun"] * 10,
            "label": ["bad", "good"] * 10,
        }
    )
    splits = Splits(train, train.copy(), None, labels=["bad", "good"])

    record = write_baseline(splits, tmp_path)

    assert record["validation"]["accuracy"] == 1.0
    assert "test" not in record


def test_baseline_needs_two_training_classes():
    with pytest.raises(ValueError, match="at least two classes"):
        evaluate_baseline(["a", "b"], [0, 0], {}, ["x", "y"])


def test_c_is_chosen_on_validation_accuracy_the_smaller_on_a_tie():
    from kerasbert.training.baseline import C_VALUES, fit_baseline

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    # Labels carried by a few words among many noisy ones: the best C is not
    # scikit-learn's default for every draw.
    texts = [" ".join(rng.choice(words, 6)) for _ in range(200)]
    ids = np.array([int("w1" in t.split() or "w2" in t.split()) for t in texts])
    train, validation = (texts[:120], ids[:120]), (texts[120:], ids[120:])

    model, chosen = fit_baseline(*train, validation=validation)

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    features = vectorizer.fit_transform(train[0])
    accuracies = [
        accuracy_score(
            validation[1],
            LogisticRegression(C=C, max_iter=1000, random_state=0)
            .fit(features, train[1])
            .predict(vectorizer.transform(validation[0])),
        )
        for C in C_VALUES
    ]
    assert chosen == C_VALUES[int(np.argmax(accuracies))]
    assert accuracy_score(validation[1], model.predict(validation[0])) == max(accuracies)
    assert fit_baseline(*train)[1] == 1.0  # no validation split: scikit-learn's default
