"""Multi-label and regression heads: train, export (checked as TF Serving loads it) and serve.

Two tiny runs, one per task, trained once for the module; each is exported
by its run and served by `kerasbert.serve`.
"""

import json
import re
import shutil
import urllib.request

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the ops of loaded exports)
import yaml

from kerasbert import train
from kerasbert.config_loading import ConfigError, config_from_dict
from kerasbert.exporting.exporter import export_model
from kerasbert.exporting.heads import Head
from kerasbert.models.tokenizers import TextEncoder, load_tokenizer
from kerasbert.serving.saved_model_bundle import SavedModelBundle
from tests.support.browser import (  # noqa: F401  (browser: a fixture)
    browser,
    needs_chromium,
    open_page,
    wait_for_model,
)
from tests.support.exports import assert_session_answers_like_tf2_load
from tests.support.servers import ServerProcess
from tests.support.tiny import (
    make_amounts,
    make_tagged_reviews,
    tiny_classifier,
    tiny_config_dict,
)

TEXTS = ["the score and the story stood out", "the cast stood out", "popcorn", ""]
PITCHES = ["a huge studio project", "a tiny bakery project", "a small app project", ""]

UNFREEZING = {
    "epochs": 3,
    "learning_rate": 3e-3,
    "unfreezing": [
        {"epochs": 1, "trainable_layers": 0},
        {"epochs": 1, "trainable_layers": 1},
        {"epochs": 1, "trainable_layers": "all"},
    ],
    "schedule": {
        "mode": "triangular",
        "initial_learning_rate": 1e-4,
        "maximal_learning_rate": 3e-3,
        "step_size": 4,
    },
    "layerwise_decay": 0.8,
}


def run_config(tmp_path, frame, data, model, training=None):
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    config = tiny_config_dict(path, tmp_path, data=data)
    config["model"].update(model)
    config["training"].update(training or {})
    return config


@pytest.fixture(scope="module")
def multi_label_run(tmp_path_factory):
    from kerasbert.training.run import train as train_run

    tmp = tmp_path_factory.mktemp("multi_label")
    config = run_config(
        tmp,
        make_tagged_reviews(),
        {"label_delimiter": "|", "pos_weight": {"music": 2.0}},
        {"task": "multi_label", "threshold_floor": 0.1},
        {**UNFREEZING, "baseline": True},
    )
    return train_run(config_from_dict(config))


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    from kerasbert.training.run import train as train_run

    tmp = tmp_path_factory.mktemp("regression")
    config = run_config(
        tmp,
        make_amounts(),
        {"label_column": "amount"},
        {"task": "regression", "target_transform": "log1p", "loss": "huber"},
        {**UNFREEZING, "baseline": True},
    )
    return train_run(config_from_dict(config))


def post(url, body) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode("utf-8"), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def served(export_dir, tmp_path):
    base = tmp_path / "models" / "tiny"
    shutil.copytree(export_dir, base / "1")
    return ServerProcess(
        ["--model_name", "tiny", "--model_base_path", base], log_path=tmp_path / "serve.log"
    )


def run_labels(run):
    return json.loads((run.run_dir / "labels.json").read_text())


# === Multi-label ===


def test_multi_label_run_tunes_thresholds_trains_in_stages_and_scores_per_label(multi_label_run):
    labels = run_labels(multi_label_run)
    assert labels["labels"] == ["acting", "music", "plot"]
    thresholds = labels["head"]["thresholds"]
    assert labels["head"]["task"] == "multi_label" and len(thresholds) == 3
    assert all(0.1 <= t <= 1 for t in thresholds)
    # One temperature per label, fitted on validation before the thresholds were tuned.
    calibration = json.loads((multi_label_run.run_dir / "calibration.json").read_text())
    assert labels["head"]["temperature"] == calibration["temperature"]
    assert len(calibration["temperature"]) == 3
    validation = calibration["splits"]["validation"]
    assert validation["log_loss_after"] <= validation["log_loss_before"]
    assert sum(labels["texts_without_labels"].values()) == 20  # one text in six of 120
    assert len(json.loads((multi_label_run.run_dir / "stages.json").read_text())) == 3
    test = multi_label_run.metrics["test"]
    for key in ("micro_f1", "macro_f1", "subset_accuracy", "hamming_loss", "roc_auc"):
        assert isinstance(test[key], float), key
    assert set(test["per_label"]) == {"acting", "music", "plot"}
    assert test["per_label"]["music"]["threshold"] == pytest.approx(thresholds[1])
    predictions = pd.read_csv(multi_label_run.run_dir / "test_predictions.csv")
    assert {"label", "predicted_labels", "probability_acting"} <= set(predictions.columns)
    baseline = json.loads((multi_label_run.run_dir / "baseline.json").read_text())
    assert set(baseline["test"]["per_label"]) == {"acting", "music", "plot"}


def test_multi_label_export_has_its_signatures_and_answers_in_a_session_like_tf2_load(
    multi_label_run,
):
    export_dir = multi_label_run.export_dir
    head = json.loads((export_dir / "assets" / "head.json").read_text())
    assert head == run_labels(multi_label_run)["head"]
    assert_session_answers_like_tf2_load(
        export_dir, {"serving_default", "predict_tokens", "classify"}
    )
    bundle = SavedModelBundle(export_dir)
    outputs = bundle.run("serving_default", {"text": np.array(TEXTS, dtype=object)})
    bundle.close()
    assert outputs["probabilities"].shape == (4, 3) and outputs["labels_on"].dtype == bool
    np.testing.assert_array_equal(
        outputs["labels_on"], outputs["probabilities"] >= np.float32(head["thresholds"])
    )
    assert outputs["labels"].tolist() == [[b"acting", b"music", b"plot"]] * 4
    # Each label's logit is divided by its own temperature in the graph.
    import keras

    run_dir = multi_label_run.run_dir
    classifier = keras.saving.load_model(run_dir / "model.keras", compile=False)
    tokens = TextEncoder(load_tokenizer(run_dir / "tokenizer"), 16)(tf.constant(TEXTS))
    raw = classifier.predict(tokens, verbose=0)
    temperatures = np.float32(head["temperature"])
    np.testing.assert_allclose(outputs["logits"], raw / temperatures, atol=1e-5)
    np.testing.assert_allclose(outputs["probabilities"], tf.sigmoid(raw / temperatures), atol=1e-5)


def test_multi_label_model_serves_predict_and_classify_with_every_label(multi_label_run, tmp_path):
    with served(multi_label_run.export_dir, tmp_path) as server:
        predicted = post(f"{server.url}/v1/models/tiny:predict", {"instances": TEXTS[:2]})
        classified = post(
            f"{server.url}/v1/models/tiny:classify",
            {"signature_name": "classify", "examples": [{"text": t} for t in TEXTS[:2]]},
        )
    rows = predicted["predictions"]
    assert set(rows[0]) == {"probabilities", "logits", "labels_on", "labels"}
    assert all(isinstance(on, bool) for on in rows[0]["labels_on"])
    assert rows[0]["labels"] == ["acting", "music", "plot"]
    for row, result in zip(rows, classified["results"]):
        assert [label for label, _ in result] == ["acting", "music", "plot"]
        np.testing.assert_allclose([s for _, s in result], row["probabilities"], rtol=1e-5)


def test_a_probability_between_one_half_and_the_tuned_threshold_is_decided_by_the_threshold(
    tmp_path,
):
    classifier, tokenizer = tiny_classifier(num_layers=2, num_classes=3)
    encoder = TextEncoder(tokenizer, 16)
    text = "the film was good"
    probabilities = tf.sigmoid(classifier(encoder(tf.constant([text])))).numpy()[0]
    # Each label's threshold sits on the far side of its probability from 0.5,
    # so a threshold of 0.5 would decide every label the other way.
    thresholds = [float((p + 1) / 2) if p >= 0.5 else float(p / 2) for p in probabilities]
    expected = [bool(p < 0.5) for p in probabilities]
    export_dir = export_model(
        classifier,
        tokenizer,
        16,
        ["a", "b", "c"],
        tmp_path,
        "tagged",
        head=Head("multi_label", thresholds=thresholds),
    )
    bundle = SavedModelBundle(export_dir)
    outputs = bundle.run("serving_default", {"text": np.array([text], dtype=object)})
    bundle.close()
    np.testing.assert_allclose(outputs["probabilities"][0], probabilities, rtol=1e-5, atol=1e-6)
    assert outputs["labels_on"][0].tolist() == expected


# === Regression ===


def test_regression_run_scores_in_the_target_unit_against_a_ridge_baseline(regression_run):
    head = run_labels(regression_run)["head"]
    amounts = make_amounts()["amount"]
    assert head["task"] == "regression" and head["transform"] == "log1p"
    assert head["mean"] == pytest.approx(np.log1p(amounts).mean(), rel=0.2)
    test = regression_run.metrics["test"]
    assert {"mae", "rmse", "r2", "spearman"} <= set(test)
    # In the amounts' unit (hundreds to tens of thousands), not the scaled one.
    assert test["mae"] > 10
    baseline = json.loads((regression_run.run_dir / "baseline.json").read_text())
    assert "ridge" in baseline["model"] and baseline["test"]["mae"] > 10
    predictions = pd.read_csv(regression_run.run_dir / "test_predictions.csv")
    assert {"label", "predicted_value"} <= set(predictions.columns)


def test_regression_export_has_a_regress_signature_and_answers_in_a_session_like_tf2_load(
    regression_run,
):
    from kerasbert.exporting.inspection import signature_summary

    export_dir = regression_run.export_dir
    assert_session_answers_like_tf2_load(
        export_dir, {"serving_default", "predict_tokens", "regress"}
    )
    summary = signature_summary(export_dir)
    assert summary["regress"]["method"] == "tensorflow/serving/regress"
    assert set(summary["serving_default"]["outputs"]) == {"value"}


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_regress_on_the_local_server_returns_serving_default_values_in_the_target_unit(
    regression_run, tmp_path
):
    import keras

    from kerasbert.models.tokenizers import load_tokenizer

    head = run_labels(regression_run)["head"]
    classifier = keras.saving.load_model(regression_run.run_dir / "model.keras", compile=False)
    tokenizer = load_tokenizer(regression_run.run_dir / "tokenizer")
    scaled = classifier.predict(TextEncoder(tokenizer, 16)(tf.constant(PITCHES)), verbose=0)
    in_unit = np.expm1(scaled[:, 0].astype("float64") * head["std"] + head["mean"])
    with served(regression_run.export_dir, tmp_path) as server:
        predicted = post(f"{server.url}/v1/models/tiny:predict", {"instances": PITCHES})
        regressed = post(
            f"{server.url}/v1/models/tiny:regress",
            {"signature_name": "regress", "examples": [{"text": text} for text in PITCHES]},
        )
        by_grpc = grpc_regress(server.grpc_target, PITCHES)
    values = [row["value"] if isinstance(row, dict) else row for row in predicted["predictions"]]
    np.testing.assert_allclose(regressed["results"], values, rtol=1e-5)
    np.testing.assert_allclose(regressed["results"], in_unit, rtol=1e-4)
    np.testing.assert_allclose(by_grpc, values, rtol=1e-5)


def grpc_regress(target, texts) -> list[float]:
    """TF Serving's gRPC Regress call on model `tiny`'s `regress` signature."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc, regression_pb2

    from kerasbert.exporting.warmup import make_example

    request = regression_pb2.RegressionRequest()
    request.model_spec.name, request.model_spec.signature_name = "tiny", "regress"
    for text in texts:
        request.input.example_list.examples.add().CopyFrom(make_example({"text": text}))
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Regress(request, timeout=60)
    return [regression.value for regression in response.result.regressions]


# === Bad input: one line, exit status 2 ===


def error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def train_cli(tmp_path, frame, data, model):
    config = run_config(tmp_path, frame, data, model)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return train.main(["--config", str(path)])


@pytest.mark.parametrize(
    "labels, message",
    [
        (["a|b", "3", "b"] * 10, "mixes delimited label names"),
        (["a||b", "a", "b"] * 10, "empty label name"),
        (["a|", "a", "b"] * 10, "empty label name"),
    ],
)
def test_bad_delimited_labels_are_refused_in_one_line(labels, message, tmp_path, capsys):
    frame = pd.DataFrame({"text": [f"text {i}" for i in range(len(labels))], "label": labels})
    status = train_cli(tmp_path, frame, {"label_delimiter": "|"}, {"task": "multi_label"})
    assert status == 2
    assert message in error_line(capsys)


def test_numbers_in_a_delimited_label_column_are_refused(tmp_path, capsys):
    frame = pd.DataFrame({"text": [f"text {i}" for i in range(30)], "label": [1, 2, 3] * 10})
    status = train_cli(tmp_path, frame, {"label_delimiter": "|"}, {"task": "multi_label"})
    assert status == 2
    assert "holds numbers" in error_line(capsys)


def test_a_label_seen_only_in_validation_is_refused(tmp_path, capsys):
    rows = pd.DataFrame({"text": [f"text {i}" for i in range(30)], "label": ["a|b", "b"] * 15})
    train_path, validation_path = tmp_path / "train.csv", tmp_path / "validation.csv"
    rows.to_csv(train_path, index=False)
    rows.assign(label=["a|c", "b"] * 15).to_csv(validation_path, index=False)
    config = tiny_config_dict(
        train_path,
        tmp_path,
        data={"train": str(train_path), "validation": str(validation_path)},
        model={**tiny_config_dict(train_path, tmp_path)["model"], "task": "multi_label"},
    )
    del config["data"]["path"], config["data"]["split"]
    config["data"]["label_delimiter"] = "|"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert train.main(["--config", str(tmp_path / "config.yaml")]) == 2
    line = error_line(capsys)
    assert "validation split has labels never given in training: ['c']" in line


@pytest.mark.parametrize(
    "amounts, transform, message",
    [
        (["12.5", "many", "3"] * 10, "none", "must be a number"),
        ([1.0, float("inf"), 3.0] * 10, "none", "must be finite"),
        ([10.0, -5.0, 30.0] * 10, "log1p", "needs targets of 0 or more"),
    ],
)
def test_bad_regression_targets_are_refused_in_one_line(
    amounts, transform, message, tmp_path, capsys
):
    frame = pd.DataFrame({"text": [f"text {i}" for i in range(30)], "amount": amounts})
    model = {"task": "regression", "target_transform": transform}
    status = train_cli(tmp_path, frame, {"label_column": "amount"}, model)
    assert status == 2
    assert message in error_line(capsys)


# === Contradictory configs: refused before any data is read ===


@pytest.mark.parametrize(
    "data, model, training, message",
    [
        ({"label_delimiter": "|"}, {}, {}, "set `model.task: multi_label`"),
        ({}, {"task": "multi_label"}, {}, "needs `data.label_delimiter`"),
        (
            {"label_delimiter": "|", "label_columns": ["a", "b"]},
            {"task": "multi_label"},
            {},
            "not both",
        ),
        ({"binning": {"num_bins": 4}}, {"task": "regression"}, {}, "data.binning is for"),
        (
            {"class_weight": "balanced", "label_delimiter": "|"},
            {"task": "multi_label"},
            {},
            "data.class_weight is for",
        ),
        ({}, {"target_transform": "log1p"}, {}, "`target_transform` is for `task: regression`"),
        ({}, {"task": "multi_label", "loss": "huber"}, {}, "`loss` is for `task: regression`"),
        ({"pos_weight": {"a": 2.0}}, {"task": "regression"}, {}, "data.pos_weight is for"),
        ({}, {"task": "regression"}, {"checkpoint_monitor": "val_accuracy"}, "logs no accuracy"),
        ({}, {"task": "regression"}, {"eval_steps": 5}, "leave it out"),
        (
            {"label_delimiter": "|"},
            {"task": "multi_label"},
            {"early_stopping": {"monitor": "val_accuracy"}},
            "training.early_stopping.monitor is 'val_accuracy', but a multi-label run logs",
        ),
        ({}, {"threshold_floor": 0.1}, {}, "`threshold_floor` is for `task: multi_label`"),
        (
            {},
            {"task": "regression", "threshold_floor": 0.1},
            {},
            "`threshold_floor` is for `task: multi_label`",
        ),
    ],
)
def test_contradictory_task_settings_are_refused_at_config_validation(
    data, model, training, message, tmp_path
):
    config = tiny_config_dict(tmp_path / "never-read.csv", tmp_path, data=data)
    config["model"].update(model)
    config["training"].update(training)
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(config)


@pytest.mark.parametrize(
    "data, model, floor",
    [
        ({}, {}, None),
        ({"label_delimiter": "|"}, {"task": "multi_label"}, 0.05),
        ({"label_delimiter": "|"}, {"task": "multi_label", "threshold_floor": 0.2}, 0.2),
        ({}, {"task": "regression", "target_transform": "log1p", "loss": "huber"}, None),
    ],
)
def test_a_saved_config_of_every_task_loads_again(data, model, floor, tmp_path):
    from kerasbert.config_loading import dump_config

    config = tiny_config_dict(tmp_path / "never-read.csv", tmp_path, data=data)
    config["model"].update(model)
    loaded = config_from_dict(config)
    assert loaded.model.threshold_floor == floor
    again = config_from_dict(yaml.safe_load(dump_config(loaded)))
    assert again == loaded


def test_a_contradictory_config_exits_2_without_reading_the_data(tmp_path, capsys):
    config = tiny_config_dict(tmp_path / "never-read.csv", tmp_path)
    config["model"]["target_transform"] = "log1p"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert train.main(["--config", str(tmp_path / "config.yaml")]) == 2
    line = error_line(capsys)
    assert "model" in line and "target_transform" in line and "never-read" not in line


# === The shipped pitch example ===


def test_pitch_examples_train_the_same_data_both_ways_with_roberta_unfreezing_and_triangular():
    from pathlib import Path

    from kerasbert.config_loading import load_config
    from kerasbert.data.splits import load_splits

    root = Path(__file__).resolve().parents[1]
    bins = load_config(root / "configs/examples/pitch_amount_bins.yaml")
    regression = load_config(root / "configs/examples/pitch_amount_regression.yaml")
    assert (bins.model.task, regression.model.task) == ("classification", "regression")
    assert bins.data.path == regression.data.path
    assert regression.model.target_transform == "log1p" and bins.data.binning.num_bins == 4
    for config in (bins, regression):
        assert config.model.scratch.family == "roberta"
        assert config.training.schedule.mode == "triangular"
        assert len(config.training.unfreezing) > 1
    data = bins.data.model_copy(update={"path": str(root / bins.data.path)})
    binned = load_splits(data)
    assert binned.labels == ["low", "modest", "high", "top"]
    data = regression.data.model_copy(update={"path": str(root / regression.data.path)})
    amounts = load_splits(data, "regression", "log1p")
    assert amounts.scaling.transform == "log1p" and len(amounts.train) == len(binned.train)


# === evaluate and predict ===


def test_evaluate_and_predict_score_a_multi_label_export_with_its_thresholds(
    multi_label_run, tmp_path, capsys
):
    from kerasbert import evaluate, predict

    frame = make_tagged_reviews(24, seed=3)
    frame.to_csv(tmp_path / "labelled.csv", index=False)
    assert (
        evaluate.main(
            [
                "--model",
                str(multi_label_run.export_dir),
                "--data",
                str(tmp_path / "labelled.csv"),
                "--output",
                str(tmp_path),
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "micro F1" in printed and "threshold" in printed
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["per_label"]) == {"acting", "music", "plot"}
    scored = pd.read_csv(tmp_path / "predictions.csv", keep_default_na=False)
    frame[["text"]].to_csv(tmp_path / "texts.csv", index=False)
    assert (
        predict.main(
            [
                "--model",
                str(multi_label_run.export_dir),
                "--input",
                str(tmp_path / "texts.csv"),
                "--output",
                str(tmp_path / "out.csv"),
                "--no-progress",
            ]
        )
        == 0
    )
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert out["predicted_labels"].tolist() == scored["predicted_labels"].tolist()
    thresholds = np.array(run_labels(multi_label_run)["head"]["thresholds"], dtype=np.float32)
    probabilities = out[["probability_acting", "probability_music", "probability_plot"]]
    for row, decided in zip(probabilities.to_numpy(np.float32), out["predicted_labels"]):
        on = [name for name, p, t in zip(["acting", "music", "plot"], row, thresholds) if p >= t]
        assert decided == "|".join(on)


def test_evaluate_and_predict_give_a_regression_export_values_in_the_target_unit(
    regression_run, tmp_path, capsys
):
    from kerasbert import evaluate, predict

    make_amounts(24, seed=3).to_csv(tmp_path / "labelled.csv", index=False)
    assert (
        evaluate.main(
            [
                "--model",
                str(regression_run.export_dir),
                "--data",
                str(tmp_path / "labelled.csv"),
                "--output",
                str(tmp_path),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "Spearman" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_examples"] == 24 and metrics["mae"] > 10
    assert (
        predict.main(
            [
                "--model",
                str(regression_run.export_dir),
                "--input",
                str(tmp_path / "labelled.csv"),
                "--output",
                str(tmp_path / "out.csv"),
                "--no-progress",
            ]
        )
        == 0
    )
    out = pd.read_csv(tmp_path / "out.csv")
    scored = pd.read_csv(tmp_path / "predictions.csv")
    np.testing.assert_allclose(out["predicted_value"], scored["predicted_value"], rtol=1e-6)
    assert not any(column.startswith("probability_") for column in out.columns)


@pytest.fixture(scope="module")
def heads_servers(multi_label_run, regression_run, tmp_path_factory):
    """Both runs' exports, `tagged` and `amount`, served over REST and gRPC from this process."""
    from kerasbert.serving.model_api import ModelApi
    from kerasbert.serving.model_config import ServedModelConfig
    from kerasbert.serving.model_manager import ModelManager
    from tests.support.servers import background_servers

    base = tmp_path_factory.mktemp("served_heads")
    configs = []
    for name, run in (("tagged", multi_label_run), ("amount", regression_run)):
        shutil.copytree(run.export_dir, base / name / "1")
        configs.append(ServedModelConfig(name, base / name))
    manager = ModelManager(configs, poll_wait_seconds=0)
    manager.poll()
    with background_servers(ModelApi(manager)) as (url, target):
        yield {"http": url, "grpc": f"grpc://{target}"}


def predict_cli(tmp_path, source, output, *args):
    from kerasbert import predict

    argv = ["--input", str(source), "--output", str(output), "--batch-size", "5", "--no-progress"]
    return predict.main([*map(str, args), *argv])


@pytest.mark.parametrize(
    "name, frame, column",
    [
        ("tagged", make_tagged_reviews(12, seed=5), "predicted_labels"),
        ("amount", make_amounts(12, seed=5), "predicted_value"),
    ],
)
def test_predict_through_a_server_writes_what_predict_from_the_export_writes(
    name, frame, column, heads_servers, multi_label_run, regression_run, tmp_path, capsys
):
    run = multi_label_run if name == "tagged" else regression_run
    source = tmp_path / "in.csv"
    frame[["text"]].assign(text=lambda f: f["text"].where(f.index != 3, "")).to_csv(
        source, index=False
    )
    assert predict_cli(tmp_path, source, tmp_path / "model.csv", "--model", run.export_dir) == 0
    expected = (tmp_path / "model.csv").read_text(encoding="utf-8")
    assert column in expected.splitlines()[0]
    for protocol, url in heads_servers.items():
        output = tmp_path / f"{protocol}.csv"
        server = ["--server", url, "--model-name", name]
        assert predict_cli(tmp_path, source, output, *server) == 0, capsys.readouterr().err
        assert output.read_text(encoding="utf-8") == expected, protocol


def test_labels_are_refused_for_a_served_regression_model(heads_servers, tmp_path, capsys):
    make_amounts(4)[["text"]].to_csv(tmp_path / "in.csv", index=False)
    server = ["--server", heads_servers["http"], "--model-name", "amount", "--labels", "a,b"]
    assert predict_cli(tmp_path, tmp_path / "in.csv", tmp_path / "out.csv", *server) == 2
    assert "amount is a regression model" in error_line(capsys)
    assert not (tmp_path / "out.csv").exists()


# === The local server's page ===


def run_page(browser, url, model, texts):
    """The server's page with `model` picked and `texts` run."""
    errors = []
    page = open_page(browser, url, errors)
    page.select_option("#model", model)
    wait_for_model(page)
    page.fill("#texts", "\n".join(texts))
    page.click("#run")
    page.wait_for_selector(f"#results .result:nth-child({len(texts)})", timeout=60_000)
    assert errors == []
    return page


@needs_chromium
def test_page_shows_the_labels_a_multi_label_model_decides_on(heads_servers, browser):
    url = heads_servers["http"]
    page = run_page(browser, url, "tagged", TEXTS[:3])
    expected = post(f"{url}/v1/models/tagged:predict", {"instances": TEXTS[:3]})["predictions"]
    results = page.locator("#results .result")
    assert results.count() == 3
    for index, row in enumerate(expected):
        result = results.nth(index)
        on = [label for label, on in zip(row["labels"], row["labels_on"]) if on]
        assert result.locator(".prediction").inner_text() == f"→ {', '.join(on) or 'no label'}"
        assert result.locator(".row.top .label").all_inner_texts() == on
        assert result.locator(".label").all_inner_texts() == ["acting", "music", "plot"]
        widths = result.locator(".bar").evaluate_all(
            "bars => bars.map(b => parseFloat(b.style.width))"
        )
        assert widths == pytest.approx([100 * p for p in row["probabilities"]], abs=0.06)


@needs_chromium
def test_page_shows_a_regression_models_value_in_the_target_unit(heads_servers, browser):
    url = heads_servers["http"]
    page = run_page(browser, url, "amount", PITCHES[:3])
    assert page.locator("#run").inner_text() == "Predict"
    examples = [{"text": text} for text in PITCHES[:3]]
    expected = post(
        f"{url}/v1/models/amount:regress", {"signature_name": "regress", "examples": examples}
    )["results"]
    results = page.locator("#results .result")
    assert results.count() == 3 and results.locator(".row").count() == 0
    for index, value in enumerate(expected):
        prediction = results.nth(index).locator(".prediction")
        assert float(prediction.get_attribute("title")) == pytest.approx(value, rel=1e-6)
        shown = prediction.inner_text()
        assert shown.startswith("→ ") and float(shown[2:]) == pytest.approx(value, rel=1e-5)


def test_report_of_a_multi_label_run_has_a_per_label_table_with_thresholds(multi_label_run):
    from kerasbert.evaluation.report import write_report

    html = write_report(multi_label_run.run_dir).read_text(encoding="utf-8")
    section = html[html.index("<h3>Per label</h3>") :]
    for label in ("acting", "music", "plot"):
        assert f"<th>{label}</th>" in section
    assert "<th>threshold</th>" in section and "micro_f1" in html


def report_data_section(run) -> str:
    from kerasbert.evaluation.report import write_report

    html = write_report(run.run_dir).read_text(encoding="utf-8")
    section = html[html.index("<h2>Data</h2>") :]
    return section[: section.index("</section>")]


def test_report_of_a_multi_label_run_counts_each_label_and_the_texts_without_one(
    multi_label_run,
):
    summary = json.loads((multi_label_run.run_dir / "data_summary.json").read_text())
    splits = summary["splits"]
    assert summary["task"] == "multi_label" and set(splits) == {"train", "validation", "test"}
    # Every row of the data is in one split, counted under each of its labels.
    tags = [name for cell in make_tagged_reviews()["label"].dropna() for name in cell.split("|")]
    for label in ("acting", "music", "plot"):
        counted = sum(split["label_counts"][label] for split in splits.values())
        assert counted == tags.count(label)
    without = run_labels(multi_label_run)["texts_without_labels"]
    assert {name: split["no_label"] for name, split in splits.items()} == without
    section = report_data_section(multi_label_run)
    for column in ("n(acting)", "n(music)", "n(plot)", "no label"):
        assert f"<th>{column}</th>" in section
    assert "alt='class_balance'" in section


def test_report_of_a_regression_run_describes_the_target_of_each_split(regression_run):
    summary = json.loads((regression_run.run_dir / "data_summary.json").read_text())
    splits = summary["splits"]
    amounts = make_amounts()["amount"]
    assert sum(split["target"]["count"] for split in splits.values()) == len(amounts)
    assert min(split["target"]["min"] for split in splits.values()) == amounts.min()
    assert max(split["target"]["max"] for split in splits.values()) == amounts.max()
    test = pd.read_csv(regression_run.run_dir / "test_predictions.csv")["label"]
    assert splits["test"]["target"]["median"] == pytest.approx(test.median())
    assert splits["test"]["target"]["mean"] == pytest.approx(test.mean())
    section = report_data_section(regression_run)
    for statistic in ("count", "min", "median", "mean", "max"):
        assert f"<th>amount {statistic}</th>" in section
    assert "n(amount)" not in section and "alt='class_balance'" not in section


@pytest.mark.parametrize(
    "frame, data, model, metric, column",
    [
        (
            make_tagged_reviews(60),
            {"label_delimiter": "|"},
            {"task": "multi_label"},
            "micro_f1",
            "predicted_labels",
        ),
        (
            make_amounts(60),
            {"label_column": "amount"},
            {"task": "regression", "target_transform": "log1p"},
            "spearman",
            "predicted_value",
        ),
    ],
)
def test_a_run_that_exports_nothing_scores_its_task_in_process(
    frame, data, model, metric, column, tmp_path
):
    from kerasbert.training.run import train as train_run

    config = run_config(tmp_path, frame, data, model)
    config["export"]["enabled"] = False
    result = train_run(config_from_dict(config))
    assert result.export_dir is None
    assert isinstance(result.metrics["test"][metric], float)
    assert column in pd.read_csv(result.run_dir / "test_predictions.csv").columns
