"""The learning-rate range test: sweep, smoothing, divergence stop, restore, CLI."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml

from kerasbert.config_loading import config_from_dict
from kerasbert.training.fit import compile_for_stage, prepare
from kerasbert.training.range_test import (
    lr_range_test,
    smooth_losses,
    suggest_learning_rate,
    sweep_learning_rate,
)
from tests.support.tiny import QUICKSTART_CSV, tiny_config_dict


def test_sweep_is_exponential_from_min_to_max():
    rates = [sweep_learning_rate(i, 5, 1e-6, 1e-2) for i in range(5)]
    np.testing.assert_allclose(rates, [1e-6, 1e-5, 1e-4, 1e-3, 1e-2], rtol=1e-12)


def test_smoothing_is_the_bias_corrected_moving_average():
    losses = [2.0, 1.0, 4.0]
    beta = 0.5
    expected = [
        (0.5 * 2.0) / (1 - 0.5),
        (0.25 * 2.0 + 0.5 * 1.0) / (1 - 0.25),
        (0.125 * 2.0 + 0.25 * 1.0 + 0.5 * 4.0) / (1 - 0.125),
    ]
    np.testing.assert_allclose(smooth_losses(losses, beta), expected, rtol=1e-12)


def test_suggestion_is_a_tenth_of_the_minimum_loss_rate():
    assert suggest_learning_rate(
        [1e-4, 1e-3, 1e-2, 1e-1], [2.0, 1.5, 1.0, math.nan]
    ) == pytest.approx(1e-3)


@pytest.fixture(scope="module")
def prepared_tiny(tmp_path_factory, request):

    tmp = tmp_path_factory.mktemp("lr_find")
    config = config_from_dict(tiny_config_dict(QUICKSTART_CSV, tmp))
    prepared = prepare(config)
    return config, prepared


def test_range_test_stops_on_divergence_and_restores_weights(prepared_tiny):
    config, prepared = prepared_tiny
    compile_for_stage(prepared, config.training, "all")
    model = prepared.classifier
    before = [w.numpy().copy() for w in model.weights]
    result = lr_range_test(
        model,
        prepared.dataset("train", 8, shuffle=True),
        min_learning_rate=1e-5,
        max_learning_rate=1e3,
        num_steps=60,
    )
    assert result.diverged and len(result.learning_rates) < 60
    assert result.learning_rates[0] == pytest.approx(1e-5)
    np.testing.assert_allclose(result.smoothed, smooth_losses(result.losses), rtol=1e-12)
    assert result.suggestion == pytest.approx(
        suggest_learning_rate(result.learning_rates, result.smoothed)
    )
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)


def test_range_test_for_a_stage_leaves_frozen_layers_alone(prepared_tiny):
    from kerasbert.models.layer_groups import layer_groups

    config, prepared = prepared_tiny
    compile_for_stage(prepared, config.training, 0)
    groups = layer_groups(prepared.classifier)
    assert not any(layer.trainable for layer in groups.transformer + groups.embeddings)
    assert all(layer.trainable for layer in groups.head)


def test_bad_range_is_refused(prepared_tiny):
    config, prepared = prepared_tiny
    compile_for_stage(prepared, config.training, "all")
    with pytest.raises(ValueError, match=r"Expected 0 < min < max"):
        lr_range_test(prepared.classifier, prepared.dataset("train", 8), 1e-2, 1e-4)


def two_stage_config(tmp_path):
    """A config file with two unfreezing stages: the head, then everything."""
    raw = tiny_config_dict(
        QUICKSTART_CSV,
        tmp_path,
        training={
            "epochs": 2,
            "unfreezing": [
                {"epochs": 1, "trainable_layers": 0},
                {"epochs": 1, "trainable_layers": "all"},
            ],
        },
    )
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_cli_writes_csv_png_and_suggestion(tmp_path):
    path = two_stage_config(tmp_path)
    out = tmp_path / "sweep"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kerasbert.lr_find",
            "--config",
            str(path),
            "--stage",
            "2",
            "--steps",
            "30",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "suggested maximal_learning_rate" in done.stdout
    summary = json.loads((out / "lr_find.json").read_text())
    assert summary["trainable_layers"] == "all" and summary["suggested_maximal_learning_rate"] > 0
    assert (out / "lr_find.png").stat().st_size > 1000
    assert len((out / "lr_find.csv").read_text().splitlines()) == summary["steps"] + 1


def test_cli_refuses_a_stage_that_does_not_exist(tmp_path):

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(QUICKSTART_CSV, tmp_path)))
    done = subprocess.run(
        [sys.executable, "-m", "kerasbert.lr_find", "--config", str(path), "--stage", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --stage 3: the config has no training.unfreezing stages"
    ]


@pytest.mark.parametrize(
    "losses, diverged, warning",
    [
        ([1.0, 0.8, 0.5, 0.9, 3.0], True, None),
        ([0.5, 0.8, 1.0, 2.0, 5.0], True, "lowest at the first learning rate"),
        ([2.0, 1.5, 1.0, 0.8, 0.5], False, "still falling at the last learning rate"),
    ],
)
def test_a_sweep_without_a_minimum_says_so(losses, diverged, warning):
    from kerasbert.training.range_test import RangeTestResult, smooth_losses, unclear_minimum

    rates = [1e-5 * 10**i for i in range(len(losses))]
    result = RangeTestResult(rates, losses, smooth_losses(losses, beta=0.0), 1e-4, diverged)
    found = unclear_minimum(result)
    assert (found is None) if warning is None else (warning in found)


def test_stages_count_from_one_as_training_prints_them(tmp_path, capsys):
    from kerasbert import lr_find

    path = two_stage_config(tmp_path)
    for stage in ("0", "3"):
        assert lr_find.main(["--config", str(path), "--stage", stage]) == 2
        assert capsys.readouterr().err.strip() == (
            f"error: --stage {stage}: the config has 2 unfreezing stage(s); give 1 to 2"
        )


def test_train_carries_the_newest_range_test_of_its_data_and_model_into_its_run(tmp_path):
    from kerasbert import lr_find
    from kerasbert.evaluation.runs import load_run
    from kerasbert.training.range_test import latest_range_test
    from kerasbert.training.run import train

    raw = tiny_config_dict(QUICKSTART_CSV, tmp_path, export={"enabled": False})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert lr_find.main(["--config", str(path), "--steps", "10"]) == 0
    (sweep,) = (tmp_path / "runs" / "tiny").glob("lr_find-*")

    run_dir = train(config_from_dict(raw)).run_dir
    for name in ("lr_find.csv", "lr_find.png", "lr_find.json"):
        assert (run_dir / name).read_bytes() == (sweep / name).read_bytes()
    assert not [name for name in load_run(run_dir).missing if name.startswith("lr_find")]

    other_batch = {**raw, "training": {**raw["training"], "batch_size": 4}}
    assert latest_range_test(config_from_dict(other_batch)) is None
    other_data = {**raw, "data": {**raw["data"], "seed": 1}}
    assert latest_range_test(config_from_dict(other_data)) is None
