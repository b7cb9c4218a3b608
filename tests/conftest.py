"""Shared fixtures: tiny labelled data, tiny configs, one trained and exported run.

Everything is offline and small (2 layers, hidden 16, a vocabulary of a few
hundred tokens) so the whole suite runs in minutes on two CPU cores.
"""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from tests.support.tiny import QUICKSTART_CSV, make_reviews, tiny_config_dict


@pytest.fixture
def reviews_csv(tmp_path):
    path = tmp_path / "reviews.csv"
    make_reviews().to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny BERT trained on the quickstart data and exported; shared by many tests."""
    from kerasbert.config_loading import config_from_dict
    from kerasbert.training.run import train

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
