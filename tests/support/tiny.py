"""Tiny labelled data, tiny configs and tiny seeded classifiers: what most tests train and export.

Everything is offline and small (2 or 3 layers, hidden 16, a vocabulary of a
few hundred tokens) so the whole suite runs in minutes on two CPU cores.
"""

import copy
import random
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]


QUICKSTART_CSV = REPO / "configs" / "data" / "quickstart_reviews.csv"


def make_reviews(n=90, seed=0) -> pd.DataFrame:
    """`n` short texts in three easily separable classes."""
    rng = random.Random(seed)
    words = {
        "good": ["great", "lovely", "superb", "brilliant", "fun"],
        "bad": ["awful", "boring", "dull", "terrible", "flat"],
        "info": ["tickets", "runtime", "release", "credits", "cast"],
    }
    rows = []
    for i in range(n):
        label = list(words)[i % 3]
        picks = rng.sample(words[label], 2)
        rows.append({"text": f"the film was {picks[0]} and {picks[1]}", "label": label})
    return pd.DataFrame(rows)


def tiny_config_dict(data_path, tmp_path, family="bert", **sections) -> dict:
    """A config for a tiny from-scratch model on `data_path`, writing under `tmp_path`."""
    config = {
        "name": "tiny",
        "seed": 0,
        "data": {"path": str(data_path), "split": {"validation": 0.2, "test": 0.2}},
        "model": {
            "scratch": {
                "family": family,
                "num_layers": 2,
                "num_heads": 2,
                "hidden_dim": 16,
                "intermediate_dim": 32,
                "max_sequence_length": 32,
                "vocabulary_size": 300,
            },
            "sequence_length": 16,
        },
        "training": {
            "epochs": 1,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "early_stopping": None,
            "baseline": False,
            "runs_dir": str(Path(tmp_path) / "runs"),
        },
        "export": {"base_path": str(Path(tmp_path) / "saved_models")},
        # Tests compare outputs to 1e-5: the same numbers on every CPU, with
        # native bfloat16 (which `auto` would pick) or without.
        "runtime": {"mixed_precision": "float32"},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section] = {**copy.deepcopy(config[section]), **values}
        else:
            config[section] = values
    return config


TINY_TEXTS = [
    f"the {noun} was {adjective}"
    for noun in ("film", "plot", "cast", "music")
    for adjective in ("good", "bad", "dull", "great")
]


def tiny_classifier(family="bert", num_layers=3, pooling="cls", texts=TINY_TEXTS, num_classes=3):
    """A seeded from-scratch classifier (hidden 16) and its tokenizer."""
    import keras

    from kerasbert.config import ModelConfig
    from kerasbert.models.classifier import build_classifier

    model_config = ModelConfig(
        scratch={
            "family": family,
            "vocabulary_size": 300,
            "hidden_dim": 16,
            "intermediate_dim": 32,
            "num_layers": num_layers,
            "max_sequence_length": 32,
        },
        sequence_length=16,
        pooling=pooling,
    )
    keras.utils.set_random_seed(0)
    return build_classifier(model_config, num_classes, texts)


def make_tagged_reviews(n=120, seed=0) -> pd.DataFrame:
    """`n` short texts with any of three labels (`acting`, `music`, `plot`), `|`-delimited.

    Each label has its own words, so a text's labels can be read off it;
    one text in six has none of them, and no label.
    """
    rng = random.Random(seed)
    words = {
        "acting": ["cast", "actors", "performances"],
        "music": ["score", "soundtrack", "songs"],
        "plot": ["story", "twists", "script"],
    }
    rows = []
    for i in range(n):
        labels = [label for bit, label in enumerate(words) if (i % 7 + 1) >> bit & 1]
        if i % 6 == 0:
            labels = []
        picks = [rng.choice(words[label]) for label in labels] or ["popcorn"]
        rows.append(
            {"text": "the " + " and the ".join(picks) + " stood out", "label": "|".join(labels)}
        )
    return pd.DataFrame(rows)


def make_amounts(n=120, seed=0) -> pd.DataFrame:
    """`n` short pitch texts and a heavy-tailed amount that their words set."""
    rng = random.Random(seed)
    sizes = {"tiny": 50.0, "small": 500.0, "large": 5000.0, "huge": 50000.0}
    rows = []
    for i in range(n):
        size = list(sizes)[i % 4]
        thing = rng.choice(["bakery", "app", "studio", "garden"])
        amount = sizes[size] * rng.uniform(0.8, 1.25)
        rows.append({"text": f"a {size} {thing} project", "amount": round(amount, 2)})
    return pd.DataFrame(rows)
