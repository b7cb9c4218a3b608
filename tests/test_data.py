import math

import numpy as np
import pandas as pd
import pytest

from kerasbert.config import DataConfig
from kerasbert.data.splits import bin_edges_for, bin_labels, bin_names, class_weights, load_splits
from kerasbert.data.tables import DataError, read_table
from tests.support.tiny import make_reviews


def write(frame, path):
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_four_formats_read_the_same_rows(tmp_path, suffix):
    frame = make_reviews(30)
    frame.loc[0, "text"] = 'naïve, 😀 and a\ttab-free "quote"'
    path = write(frame, tmp_path / f"reviews{suffix}")
    read = read_table(path)
    assert read["text"].tolist() == frame["text"].tolist()
    assert read["label"].tolist() == frame["label"].tolist()


def test_unknown_extension_is_refused(tmp_path):
    path = tmp_path / "reviews.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match=r"cannot tell the format"):
        read_table(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"no such data file"):
        read_table(tmp_path / "nope.csv")


def test_stratified_split_keeps_class_balance_and_is_seeded(tmp_path):
    frame = make_reviews(300)
    frame["text"] += [f" #{i}" for i in range(300)]
    path = write(frame, tmp_path / "r.csv")
    cfg = DataConfig(path=str(path), split={"validation": 0.2, "test": 0.1}, seed=3)
    splits = load_splits(cfg)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (210, 60, 30)
    for frame in (splits.train, splits.validation, splits.test):
        counts = frame["label"].value_counts()
        assert counts.max() - counts.min() <= 1
    again = load_splits(cfg)
    assert again.test["text"].tolist() == splits.test["text"].tolist()
    other = load_splits(DataConfig(path=str(path), split={"validation": 0.2, "test": 0.1}, seed=4))
    assert other.test["text"].tolist() != splits.test["text"].tolist()
    texts = [set(f["text"]) for f in (splits.train, splits.validation, splits.test)]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])


def test_separate_files_and_integer_labels(tmp_path):
    frame = make_reviews(60)
    frame["label"] = frame["label"].map({"good": 2, "bad": 10, "info": 1})
    train = write(frame.iloc[:40], tmp_path / "train.jsonl")
    validation = write(frame.iloc[40:], tmp_path / "validation.csv")
    splits = load_splits(DataConfig(train=str(train), validation=str(validation)))
    assert splits.labels == ["1", "2", "10"]  # numeric order, as strings
    assert splits.test is None
    assert splits.label_ids("validation").tolist() == [
        splits.labels.index(str(v)) for v in frame["label"].iloc[40:]
    ]


def test_empty_text_and_missing_label_rows_are_dropped_and_counted(tmp_path):
    frame = make_reviews(30)
    frame.loc[3, "text"] = "   "
    frame.loc[4, "label"] = None
    frame.loc[5, "text"] = None
    path = write(frame, tmp_path / "r.csv")
    splits = load_splits(DataConfig(path=str(path), split={"validation": 0.2, "test": 0.0}))
    assert splits.dropped == {"all": 3}
    assert len(splits.train) + len(splits.validation) == 27


def test_an_empty_second_text_is_kept_and_an_empty_first_text_dropped(tmp_path):
    frame = make_reviews(30)
    frame["text_pair"] = ["is it good?", "", "   ", None, "when?"] * 6
    frame.loc[0, "text"] = ""
    path = tmp_path / "pairs.csv"
    frame.to_csv(path, index=False)
    splits = load_splits(
        DataConfig(
            path=str(path), text_pair_column="text_pair", split={"validation": 0.2, "test": 0.2}
        )
    )
    kept = pd.concat([splits.train, splits.validation, splits.test])
    assert len(kept) == 29 and sum(splits.dropped.values()) == 1
    assert (kept["text_pair"].str.strip() == "").sum() == 18  # "", "   " and None, 6 each
    assert (kept["text"] != "").all()


def test_missing_column_lists_what_was_found(tmp_path):
    path = write(make_reviews(30), tmp_path / "r.csv")
    with pytest.raises(
        DataError, match=r"missing column\(s\) \['review'\]; found \['text', 'label'\]"
    ):
        load_splits(DataConfig(path=str(path), text_column="review"))


def test_single_class_training_set_is_refused(tmp_path):
    frame = make_reviews(30)
    frame["label"] = "good"
    path = write(frame, tmp_path / "r.csv")
    with pytest.raises(DataError, match=r"single class \['good'\]"):
        load_splits(DataConfig(path=str(path), split={"validation": 0.2, "test": 0.0}))


def test_unseen_validation_label_is_refused(tmp_path):
    frame = make_reviews(30)
    train = write(frame, tmp_path / "train.csv")
    other = frame.copy()
    other.loc[0, "label"] = "surprise"
    validation = write(other, tmp_path / "validation.csv")
    with pytest.raises(
        DataError, match=r"validation split has labels not seen in training: \['surprise'\]"
    ):
        load_splits(DataConfig(train=str(train), validation=str(validation)))


def test_empty_split_is_refused(tmp_path):
    frame = make_reviews(30)
    train = write(frame, tmp_path / "train.csv")
    validation = write(frame.iloc[:0], tmp_path / "validation.csv")
    with pytest.raises(DataError, match=r"the validation split is empty"):
        load_splits(DataConfig(train=str(train), validation=str(validation)))


def test_too_small_class_for_a_stratified_split(tmp_path):
    frame = make_reviews(30)
    frame.loc[0, "label"] = "rare"
    path = write(frame, tmp_path / "r.csv")
    with pytest.raises(DataError, match=r"cannot split 30 rows by class"):
        load_splits(DataConfig(path=str(path)))


def test_quantile_binning_makes_equal_bins_and_saves_edges(tmp_path):
    frame = pd.DataFrame(
        {"text": [f"pitch number {i}" for i in range(400)], "label": np.arange(400) * 10.0}
    )
    path = write(frame, tmp_path / "pitches.csv")
    splits = load_splits(
        DataConfig(path=str(path), binning={"num_bins": 4}, split={"validation": 0.1, "test": 0.1})
    )
    assert len(splits.bin_edges) == 3
    assert splits.labels == bin_names(splits.bin_edges)
    counts = splits.train["label"].value_counts()
    assert len(counts) == 4 and counts.max() - counts.min() <= 2


def test_explicit_edges_bin_by_half_open_intervals():
    edges = [1000.0, 10000.0]
    labels = bin_labels(pd.Series(["5", "1000", "9999.5", "10000", "1e6"]), edges)
    assert labels.tolist() == [
        "[-inf, 1000)",
        "[1000, 10000)",
        "[1000, 10000)",
        "[10000, inf)",
        "[10000, inf)",
    ]
    assert bin_names(edges) == ["[-inf, 1000)", "[1000, 10000)", "[10000, inf)"]


def test_binning_a_text_target_is_refused():
    from kerasbert.config import BinningConfig

    with pytest.raises(DataError, match=r"binning needs numbers .* e\.g\. \['lots'\]"):
        bin_edges_for(pd.Series(["1", "lots"]), BinningConfig(num_bins=2))


def test_balanced_class_weights_match_the_formula():
    labels = ["a", "b", "c"]
    train = pd.Series(["a"] * 6 + ["b"] * 3 + ["c"] * 1)
    weights = class_weights("balanced", labels, train)
    for i, count in enumerate([6, 3, 1]):
        assert math.isclose(weights[i], 10 / (3 * count))


def test_explicit_class_weights_default_to_one_and_reject_unknown_labels():
    labels = ["a", "b"]
    assert class_weights({"b": 2.5}, labels, pd.Series(["a", "b"])) == {0: 1.0, 1: 2.5}
    with pytest.raises(DataError, match=r"unknown label\(s\) \['z'\]"):
        class_weights({"z": 2.0}, labels, pd.Series(["a", "b"]))
