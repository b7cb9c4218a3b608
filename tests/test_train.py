"""End to end: config -> data -> fit -> run directory -> SavedModel."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from kerasbert.config_loading import config_from_dict
from kerasbert.training.run import train
from tests.support.tiny import make_reviews, tiny_config_dict

LOAD_ONLY_TF = r"""
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)
loaded = tf.saved_model.load(sys.argv[1])
fn = loaded.signatures["serving_default"]
kwargs = {name: tf.constant(json.loads(value)) for name, value in zip(sys.argv[2::2], sys.argv[3::2])}
out = fn(**kwargs)
print(json.dumps({
    "probabilities": out["probabilities"].numpy().tolist(),
    "label": [x.decode() for x in out["label"].numpy()],
    "modules": sorted(m for m in ("kerasbert", "keras_hub") if m in sys.modules),
}))
"""


def serve_in_fresh_process(version_dir, **inputs):
    args = [sys.executable, "-c", LOAD_ONLY_TF, str(version_dir)]
    for name, values in inputs.items():
        args += [name, json.dumps(values)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_run_directory_holds_config_labels_history_metrics_and_weights(trained_run):
    run_dir = trained_run.run_dir
    for name in (
        "config.yaml",
        "labels.json",
        "history.csv",
        "metrics.json",
        "best.weights.h5",
        "model.keras",
    ):
        assert (run_dir / name).is_file(), name
    labels = json.loads((run_dir / "labels.json").read_text())
    assert labels["labels"] == ["negative", "neutral", "positive"]
    history = pd.read_csv(run_dir / "history.csv")
    assert len(history) == 3 and {"loss", "val_loss", "accuracy"} <= set(history.columns)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) >= {"validation", "test"}


def test_export_serves_raw_text_in_a_process_without_kerasbert(trained_run):
    texts = ["What a superb film.", "", "Dull and lifeless plot.", "naïve 😀 " * 40]
    out = serve_in_fresh_process(trained_run.export_dir, text=texts)
    assert out["modules"] == []
    probabilities = np.array(out["probabilities"])
    assert probabilities.shape == (4, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert set(out["label"]) <= {"negative", "neutral", "positive"}


def test_a_second_export_is_the_next_version(trained_run):
    from kerasbert.exporting.exporter import next_version

    model_dir = trained_run.export_dir.parent
    assert trained_run.export_dir.name == "1"
    assert next_version(model_dir) == 2


def test_roberta_from_scratch_trains_and_exports(tmp_path, reviews_csv):
    config = config_from_dict(tiny_config_dict(reviews_csv, tmp_path, family="roberta"))
    result = train(config)
    out = serve_in_fresh_process(result.export_dir, text=["the film was great and fun", "tickets"])
    assert len(out["label"]) == 2
    assert (result.export_dir / "assets" / "merges.txt").is_file()


def test_sentence_pairs_train_and_export(tmp_path):
    frame = make_reviews(60)
    frame["context"] = ["a question about the film"] * len(frame)
    path = tmp_path / "pairs.parquet"
    frame.to_parquet(path)
    raw = tiny_config_dict(path, tmp_path)
    raw["data"]["text_pair_column"] = "context"
    result = train(config_from_dict(raw))
    out = serve_in_fresh_process(
        result.export_dir, text=["the film was dull"], text_pair=["a question about the film"]
    )
    assert len(out["label"]) == 1


def test_binned_target_exports_its_edges(tmp_path):
    frame = pd.DataFrame(
        {
            "text": [f"pitch raised {w}" for w in ["little", "some", "plenty", "a fortune"] * 20],
            "amount": [10, 500, 5000, 90000] * 20,
        }
    )
    path = tmp_path / "pitches.csv"
    frame.to_csv(path, index=False)
    raw = tiny_config_dict(path, tmp_path)
    raw["data"].update({"label_column": "amount", "binning": {"edges": [100, 1000, 10000]}})
    result = train(config_from_dict(raw))
    assert json.loads((result.export_dir / "assets" / "bin_edges.json").read_text()) == [
        100,
        1000,
        10000,
    ]
    labels = (result.export_dir / "assets" / "labels.txt").read_text().split("\n")[:-1]
    assert labels == ["[-inf, 100)", "[100, 1000)", "[1000, 10000)", "[10000, inf)"]


def test_named_bins_and_the_models_own_columns_carry_to_evaluate_and_predict(tmp_path):
    from kerasbert import evaluate, predict

    frame = pd.DataFrame(
        {
            "pitch": [f"pitch raised {w}" for w in ["little", "some", "plenty", "a fortune"] * 20],
            "amount": [10, 500, 5000, 90000] * 20,
        }
    )
    path = tmp_path / "pitches.csv"
    frame.to_csv(path, index=False)
    names = ["small", "medium", "large", "huge"]
    raw = tiny_config_dict(path, tmp_path)
    raw["data"].update(
        {
            "text_column": "pitch",
            "label_column": "amount",
            "binning": {"edges": [100, 1000, 10000], "names": names},
        }
    )
    result = train(config_from_dict(raw))
    assert (result.export_dir / "assets" / "labels.txt").read_text().splitlines() == names
    run_predictions = pd.read_csv(result.run_dir / "test_predictions.csv")
    assert set(run_predictions["label"]) <= set(names)

    # No column flags: the export's own `pitch` and `amount` columns.
    model = str(result.export_dir)
    output = tmp_path / "evaluation"
    assert evaluate.main(["--model", model, "--data", str(path), "--output", str(output)]) == 0
    assert json.loads((output / "metrics.json").read_text())["num_examples"] == len(frame)
    predictions = tmp_path / "predictions.csv"
    assert predict.main(["--model", model, "--input", str(path), "--output", str(predictions)]) == 0
    columns = pd.read_csv(predictions).columns
    assert [c for c in columns if c.startswith("probability_")] == [
        f"probability_{n}" for n in names
    ]


def test_bin_names_must_name_every_bin_once(tmp_path):
    from kerasbert.config import ConfigError

    for names, message in [
        (["low", "high"], "`names` names 2 classes but there are 3 bins"),
        (["low", "low", "high"], "`names` repeats a name"),
        (["low", "", "high"], "at least 1 character"),
    ]:
        raw = tiny_config_dict("pitches.csv", tmp_path)
        raw["data"]["binning"] = {"edges": [100, 1000], "names": names}
        with pytest.raises(ConfigError, match=message):
            config_from_dict(raw)


def write_transformers_bert(
    directory,
    vocabulary,
    num_layers=2,
    hidden=16,
    heads=2,
    intermediate=32,
    positions=32,
    tokenizer_config=None,
):
    """A tiny random BERT in Hugging Face Transformers format, made by hand."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True)
    (directory / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    (directory / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config or {"do_lower_case": True})
    )
    (directory / "config.json").write_text(
        json.dumps(
            {
                "model_type": "bert",
                "architectures": ["BertModel"],
                "vocab_size": len(vocabulary),
                "hidden_size": hidden,
                "num_hidden_layers": num_layers,
                "num_attention_heads": heads,
                "intermediate_size": intermediate,
                "max_position_embeddings": positions,
                "type_vocab_size": 2,
                "hidden_act": "gelu",
                "layer_norm_eps": 1e-12,
            }
        )
    )
    rng = np.random.default_rng(0)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.02).astype("float32")

    tensors = {
        "bert.embeddings.word_embeddings.weight": w(len(vocabulary), hidden),
        "bert.embeddings.position_embeddings.weight": w(positions, hidden),
        "bert.embeddings.token_type_embeddings.weight": w(2, hidden),
        "bert.embeddings.LayerNorm.weight": np.ones(hidden, "float32"),
        "bert.embeddings.LayerNorm.bias": np.zeros(hidden, "float32"),
        "bert.pooler.dense.weight": w(hidden, hidden),
        "bert.pooler.dense.bias": np.zeros(hidden, "float32"),
    }
    for i in range(num_layers):
        p = f"bert.encoder.layer.{i}."
        for name in ("query", "key", "value"):
            tensors[p + f"attention.self.{name}.weight"] = w(hidden, hidden)
            tensors[p + f"attention.self.{name}.bias"] = np.zeros(hidden, "float32")
        tensors[p + "attention.output.dense.weight"] = w(hidden, hidden)
        tensors[p + "attention.output.dense.bias"] = np.zeros(hidden, "float32")
        tensors[p + "attention.output.LayerNorm.weight"] = np.ones(hidden, "float32")
        tensors[p + "attention.output.LayerNorm.bias"] = np.zeros(hidden, "float32")
        tensors[p + "intermediate.dense.weight"] = w(intermediate, hidden)
        tensors[p + "intermediate.dense.bias"] = np.zeros(intermediate, "float32")
        tensors[p + "output.dense.weight"] = w(hidden, intermediate)
        tensors[p + "output.dense.bias"] = np.zeros(hidden, "float32")
        tensors[p + "output.LayerNorm.weight"] = np.ones(hidden, "float32")
        tensors[p + "output.LayerNorm.bias"] = np.zeros(hidden, "float32")
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


def test_local_transformers_bert_directory_trains_and_exports(tmp_path, reviews_csv):
    words = sorted(
        {w for text in pd.read_csv(reviews_csv)["text"] for w in text.split()} | {"cliche"}
    )
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    model_dir = write_transformers_bert(tmp_path / "tiny-bert", vocabulary)
    raw = tiny_config_dict(reviews_csv, tmp_path)
    raw["model"] = {"preset": str(model_dir), "sequence_length": 16}
    result = train(config_from_dict(raw))
    assert (result.export_dir / "assets" / "vocabulary.txt").read_text().split("\n")[
        : len(vocabulary)
    ] == vocabulary
    out = serve_in_fresh_process(result.export_dir, text=["the film was lovely and fun"])
    assert out["label"][0] in {"good", "bad", "info"}
    # An uncased BERT strips accents, as Hugging Face's tokenizer does for
    # this directory, and the run keeps that for its export: "cliché" is the
    # vocabulary's "cliche", not [UNK].
    from kerasbert.models.tokenizers import load_tokenizer

    accented, plain = token_ids(
        load_tokenizer(result.run_dir / "tokenizer"), ["a Cliché film", "a cliche film"]
    )
    assert accented == plain and "cliche" in accented


@pytest.mark.parametrize(
    "tokenizer_config, strips",
    [
        ({"do_lower_case": True}, True),
        ({"do_lower_case": True, "strip_accents": None}, True),
        ({"do_lower_case": True, "strip_accents": False}, False),
        ({"do_lower_case": False}, False),
    ],
)
def test_preset_tokenizer_strips_accents_as_hugging_face_bert_does(
    tmp_path, tokenizer_config, strips
):
    from kerasbert.models.tokenizers import preset_tokenizer

    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cliche", "Cliche", "film"]
    model_dir = write_transformers_bert(
        tmp_path / "bert", vocabulary, tokenizer_config=tokenizer_config
    )
    tokenizer = preset_tokenizer(str(model_dir), "bert")
    [ids] = token_ids(tokenizer, ["Cliché film"])
    if strips:
        assert ids == ["[CLS]", "cliche", "film", "[SEP]"]
    else:
        assert ids == ["[CLS]", "[UNK]", "film", "[SEP]"]


def token_ids(tokenizer, texts):
    """Each text's tokens as training and the SavedModel see them (TextEncoder in a graph)."""
    from kerasbert.data.pipeline import encode_texts
    from kerasbert.models.tokenizers import TextEncoder

    encoded = encode_texts(TextEncoder(tokenizer, sequence_length=8), texts)
    vocabulary = tokenizer.get_vocabulary()
    return [
        [vocabulary[i] for i in row[mask > 0]]
        for row, mask in zip(encoded["token_ids"], encoded["padding_mask"])
    ]


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "kerasbert.train", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def run_config(raw, tmp_path):
    """`kerasbert.train` on the config dict `raw`, written to a file first."""
    import yaml

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    return run_cli("--config", str(path))


def test_bad_config_exits_2_with_one_line(tmp_path, reviews_csv):
    raw = tiny_config_dict(reviews_csv, tmp_path)
    raw["training"]["lerning_rate"] = 0.1
    done = run_config(raw, tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "training.lerning_rate" in lines[0] and "learning_rate" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_bad_data_exits_2_with_one_line_and_writes_no_run(tmp_path, reviews_csv):
    raw = tiny_config_dict(reviews_csv, tmp_path)
    raw["data"]["label_column"] = "sentiment"
    done = run_config(raw, tmp_path)
    assert done.returncode == 2, done.stderr[-1000:]
    error_lines = [line for line in done.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "missing column(s) ['sentiment']" in error_lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


def test_accumulating_more_batches_than_the_run_has_exits_2_and_writes_no_run(
    tmp_path, reviews_csv
):
    raw = tiny_config_dict(reviews_csv, tmp_path)
    raw["training"]["gradient_accumulation_steps"] = 1000
    done = run_config(raw, tmp_path)
    assert done.returncode == 2, done.stderr[-1000:]
    error_lines = [line for line in done.stderr.strip().splitlines() if line.startswith("error:")]
    assert error_lines == [
        "error: training.gradient_accumulation_steps (1000) exceeds the run's 7 batches, "
        "so the weights would never be updated"
    ]
    assert not (tmp_path / "runs").exists()


def test_local_preset_with_a_wrong_sha256_stops_before_loading(tmp_path, reviews_csv):
    import hashlib

    from kerasbert.models.checksums import sha256_of

    model_dir = write_transformers_bert(
        tmp_path / "tiny-bert", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "film"]
    )
    good = sha256_of(model_dir / "model.safetensors")
    assert good == hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    raw = tiny_config_dict(reviews_csv, tmp_path)
    raw["model"] = {
        "preset": str(model_dir),
        "sequence_length": 16,
        "preset_sha256": {"model.safetensors": "0" * 64},
    }
    with pytest.raises(
        ValueError, match=r"model\.safetensors: sha256 mismatch \(expected 0{64}, found " + good
    ):
        train(config_from_dict(raw))
    assert not (tmp_path / "runs").exists()


def test_each_unfreezing_stage_peaks_at_its_own_rate_or_the_schedules(tmp_path, reviews_csv):
    raw = tiny_config_dict(reviews_csv, tmp_path)
    raw["training"].update(
        {
            "epochs": 3,
            "schedule": {
                "mode": "one_cycle",
                "maximal_learning_rate": 1e-3,
                "restart_each_stage": True,
            },
            "unfreezing": [
                {"epochs": 1, "trainable_layers": 0, "maximal_learning_rate": 2e-2},
                {"epochs": 1, "trainable_layers": 1},
                {"epochs": 1, "trainable_layers": "all", "maximal_learning_rate": 1e-4},
            ],
        }
    )
    raw["export"]["enabled"] = False
    result = train(config_from_dict(raw))
    trace = pd.read_csv(result.run_dir / "lr_trace.csv")
    peaks = trace.groupby("epoch")["learning_rate"].max().tolist()
    assert peaks == pytest.approx([2e-2, 1e-3, 1e-4], rel=0.05)


def test_unfreezing_under_a_constant_rate_runs_every_stage(reviews_csv, tmp_path):
    """There is no cycle to restart: the stages unfreeze, the rate stays."""
    stages = [{"epochs": 1, "trainable_layers": 0}, {"epochs": 1, "trainable_layers": "all"}]
    config = tiny_config_dict(
        reviews_csv,
        tmp_path,
        training={"epochs": 2, "unfreezing": stages},
        export={"enabled": False},
    )
    assert "schedule" not in config["training"]  # the default: a constant rate
    result = train(config_from_dict(config))
    assert json.loads((result.run_dir / "status.json").read_text())["status"] == "finished"
    logged = json.loads((result.run_dir / "stages.json").read_text())
    assert [stage["trainable_layers"] for stage in logged] == [0, "all"]
    assert logged[0]["trainable_params"] < logged[1]["trainable_params"]


def test_a_run_that_fails_is_marked_failed_and_not_taken_for_the_latest(
    reviews_csv, tmp_path, monkeypatch
):
    from kerasbert.rundir import resolve_run_dir
    from kerasbert.training import run

    config = config_from_dict(tiny_config_dict(reviews_csv, tmp_path, export={"enabled": False}))
    finished = train(config).run_dir

    def fails(*args, **kwargs):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(run, "fit", fails)
    with pytest.raises(RuntimeError, match="the disk is full"):
        train(config)
    (failed,) = [p for p in finished.parent.iterdir() if p != finished]
    assert json.loads((failed / "status.json").read_text())["status"] == "failed"
    assert failed.name > finished.name
    assert resolve_run_dir(finished.parent) == finished


def test_a_preset_that_cannot_be_downloaded_is_one_line_saying_what_to_do(
    reviews_csv, tmp_path, monkeypatch, capsys
):
    import keras_hub
    import requests
    import yaml

    from kerasbert import train as train_cli

    def offline(*args, **kwargs):
        # What keras-hub's download gives without network, as raised offline.
        raise requests.exceptions.ConnectionError(
            "HTTPSConnectionPool(host='api.kaggle.com', port=443): Max retries exceeded with url: "
            "/v1/models.ModelApiService/DownloadModelInstanceVersion (Caused by NameResolutionError)"
        )

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", offline)
    raw = tiny_config_dict(reviews_csv, tmp_path)
    raw["model"] = {"preset": "bert_tiny_en_uncased", "sequence_length": 16}
    config = tmp_path / "preset.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert train_cli.main(["--config", str(config)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith(
        "error: model.preset 'bert_tiny_en_uncased': could not download it (ConnectionError: "
        "HTTPSConnectionPool(host='api.kaggle.com'"
    ), line
    assert line.endswith(
        "Without network, give a local directory instead, in Keras preset or Hugging Face format (config.json, model.safetensors, vocab.txt)."
    )


def test_the_run_records_the_epochs_it_ran_and_the_epoch_it_kept(trained_run):
    summary = json.loads((trained_run.run_dir / "fit_summary.json").read_text())
    history = pd.read_csv(trained_run.run_dir / "history.csv")
    assert summary["epochs_run"] == summary["epochs_planned"] == len(history) == 3
    assert summary["stopped_early"] is False and summary["early_stopping"] is None
    assert summary["checkpoint_monitor"] == "val_loss"
    assert summary["kept_epoch"] == int(history["val_loss"].idxmin()) + 1
    assert summary["kept_value"] == pytest.approx(history["val_loss"].min())


def test_fit_summary_says_when_early_stopping_ended_the_run():
    import keras

    from kerasbert.evaluation.runs import describe_fit
    from kerasbert.training.fit import fit_summary

    checkpoint = keras.callbacks.ModelCheckpoint(
        "unused.weights.h5", monitor="val_accuracy", mode="max"
    )
    checkpoint._set_monitor_op()
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2)
    history = pd.DataFrame({"epoch": [0, 1, 2, 3, 4], "val_accuracy": [0.5, 0.7, 0.8, 0.6, 0.8]})
    summary = fit_summary(history, 22, checkpoint, stopper)
    assert (summary["epochs_run"], summary["stopped_early"], summary["kept_epoch"]) == (5, True, 3)
    assert describe_fit(summary) == (
        "trained 5 of 22 epochs: early stopping ended the run (val_loss did not improve for 2 "
        "epochs); kept epoch 3, the best by val_accuracy (0.8)"
    )


def test_a_run_that_exports_nothing_still_reports_every_metric(trained_run, reviews_csv, tmp_path):
    from kerasbert.evaluation.scoring import evaluate_saved_model
    from kerasbert.exporting.exporter import export_run_dir

    config = tiny_config_dict(reviews_csv, tmp_path, export={"enabled": False})
    result = train(config_from_dict(config))
    assert result.export_dir is None
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    exported = json.loads((trained_run.run_dir / "metrics.json").read_text())
    assert set(metrics["test"]) == set(exported["test"])  # F1, AUC, confusion matrix, ...
    predictions = pd.read_csv(result.run_dir / "test_predictions.csv")
    assert len(predictions) == metrics["test"]["num_examples"]
    # The model in memory scores as its export would.
    version = export_run_dir(result.run_dir, base_path=tmp_path / "sm")
    from_export = evaluate_saved_model(
        version, predictions["text"].tolist(), predictions["label"].tolist()
    )
    for key in ("accuracy", "macro_f1", "log_loss"):
        assert metrics["test"][key] == pytest.approx(from_export[key], abs=1e-5), key


def test_data_predict_is_predicted_by_the_export_into_the_run(tmp_path, reviews_csv):
    unlabelled = tmp_path / "new.csv"
    pd.DataFrame({"text": ["a superb film", "tickets on friday", ""]}).to_csv(
        unlabelled, index=False
    )
    raw = tiny_config_dict(reviews_csv, tmp_path)
    raw["data"]["predict"] = str(unlabelled)
    result = train(config_from_dict(raw))
    predictions = pd.read_csv(result.run_dir / "predictions.csv", keep_default_na=False)
    assert predictions["text"].tolist() == ["a superb film", "tickets on friday", ""]
    labels = (result.export_dir / "assets" / "labels.txt").read_text().splitlines()
    assert set(predictions["predicted_label"]) <= set(labels)


def test_a_bad_data_predict_file_fails_before_training(tmp_path, reviews_csv):
    from kerasbert.config import ConfigError

    unlabelled = tmp_path / "new.csv"
    pd.DataFrame({"review": ["a superb film"]}).to_csv(unlabelled, index=False)
    raw = tiny_config_dict(reviews_csv, tmp_path)
    raw["data"]["predict"] = str(unlabelled)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['text'\]"):
        train(config_from_dict(raw))
    assert not (tmp_path / "runs").exists()
    raw["export"]["enabled"] = False
    with pytest.raises(ConfigError, match="data.predict is predicted by the export"):
        config_from_dict(raw)
