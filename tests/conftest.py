"""Shared fixtures: tiny labelled data, tiny configs, one trained and exported run.

Everything is offline and small (2 layers, hidden 16, a vocabulary of a few
hundred tokens) so the whole suite runs in minutes on two CPU cores.
"""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import copy
import random
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
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
    from kerasbert.models import build_classifier

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


@pytest.fixture
def reviews_csv(tmp_path):
    path = tmp_path / "reviews.csv"
    make_reviews().to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny BERT trained on the quickstart data and exported; shared by many tests."""
    from kerasbert.config import config_from_dict
    from kerasbert.training import train

    tmp = tmp_path_factory.mktemp("trained")
    config = config_from_dict(
        tiny_config_dict(
            QUICKSTART_CSV,
            tmp,
            training={"epochs": 3, "learning_rate": 3e-3},
        )
    )
    return train(config)


@pytest.fixture(scope="session")
def exported_model(trained_run):
    """The version directory of `trained_run`'s export."""
    return trained_run.export_dir


def assert_session_answers_like_tf2_load(version_dir):
    """The export, loaded as TF Serving loads it, answers as `tf.saved_model.load` does.

    Every warm-up record (between them every signature) runs in a TF1
    Session on the MetaGraph (`SavedModelBundle`) and through the TF2
    loader's signatures; each output must agree to 1e-5.
    """
    import numpy as np
    import tensorflow as tf

    from kerasbert.saved_model_bundle import SavedModelBundle, warmup_requests

    bundle = SavedModelBundle(version_dir)
    loaded = tf.saved_model.load(str(version_dir))
    requests = list(warmup_requests(version_dir))
    assert {request.signature_key for request in requests} == set(bundle.signature_defs)
    assert set(bundle.signature_defs) == {"serving_default", "predict_tokens", "classify"}
    for request in requests:
        served = bundle.run(request.signature_key, request.inputs)
        tensors = {name: tf.constant(value) for name, value in request.inputs.items()}
        expected = loaded.signatures[request.signature_key](**tensors)
        assert set(served) == set(expected)
        for name, value in expected.items():
            value = value.numpy()
            if value.dtype.kind == "f":
                np.testing.assert_allclose(served[name], value, rtol=1e-5, atol=1e-5, err_msg=name)
            else:
                np.testing.assert_array_equal(served[name], value, err_msg=name)
    bundle.close()
