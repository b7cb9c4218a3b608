"""Batch prediction: every row, in order, with the SavedModel's own probabilities."""

import logging
import shutil

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  the exported tokenizer's ops

from kerasbert import predict
from kerasbert.evaluation.predictions import (
    predict_file,
    predict_in_batches,
    server_labels,
    server_predict_fn,
)
from kerasbert.evaluation.saved_model_classifier import SavedModelClassifier, resolve_model_dir
from tests.support.tiny import QUICKSTART_CSV

ODD_TEXTS = [
    "",
    "Ünïcödé: ce film était superbe ! 映画はつまらなかった 😀",
    "   ",
    "NA",
    'a,"quoted"\nline',
]


@pytest.fixture(scope="module")
def model(exported_model):
    return SavedModelClassifier(exported_model)


@pytest.fixture(scope="module")
def many_rows_csv(tmp_path_factory):
    """10,000 rows: quickstart texts, with empty, missing and non-ASCII ones mixed in."""
    texts = pd.read_csv(QUICKSTART_CSV)["text"].tolist()
    rows = []
    for i in range(10_000):
        text = ODD_TEXTS[i // 7 % len(ODD_TEXTS)] if i % 7 == 3 else texts[i % len(texts)]
        rows.append({"id": i, "text": None if i % 1000 == 999 else text})
    path = tmp_path_factory.mktemp("predict") / "many.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def loaded(exported_model):
    """The export loaded independently of kerasbert, to call its signature directly."""
    return tf.saved_model.load(str(exported_model))


def signature_outputs(loaded, texts):
    return loaded.signatures["serving_default"](text=tf.constant(texts))


def test_predict_keeps_every_row_in_order_with_the_signature_probabilities(
    many_rows_csv, exported_model, loaded, tmp_path, capsys
):
    output = tmp_path / "out" / "preds.csv"

    status = predict.main(
        [
            "--model",
            str(exported_model),
            "--input",
            str(many_rows_csv),
            "--output",
            str(output),
            "--batch-size",
            "256",
            "--no-progress",
        ]
    )

    assert status == 0, capsys.readouterr().err
    out = pd.read_csv(output, keep_default_na=False, dtype={"text": str})
    source = pd.read_csv(many_rows_csv, keep_default_na=False, dtype={"text": str})
    assert len(out) == 10_000
    assert out["id"].tolist() == list(range(10_000))
    assert out["text"].tolist() == source["text"].tolist()  # empty, missing, non-ASCII intact
    assert out["text"].iloc[999] == "" and out["text"].iloc[3] == ODD_TEXTS[0]
    labels = (exported_model / "assets" / "labels.txt").read_text().splitlines()
    expected = signature_outputs(loaded, source["text"].tolist())
    probabilities = out[[f"probability_{label}" for label in labels]].to_numpy()
    np.testing.assert_allclose(probabilities, expected["probabilities"].numpy(), atol=1e-6)
    assert out["predicted_label"].tolist() == [b.decode() for b in expected["label"].numpy()]


def test_classifier_labels_and_probabilities_come_from_the_export(model, loaded):
    labels, probabilities = model(["a superb film", ""])

    expected = signature_outputs(loaded, ["a superb film", ""])
    assert model.labels == ["negative", "neutral", "positive"]
    assert labels == [b.decode() for b in expected["label"].numpy()]
    # A Session on the MetaGraph against the TF2 loader: the same graph, but
    # Grappler may rewrite the division by the temperature (one float32 ulp).
    np.testing.assert_allclose(probabilities, expected["probabilities"].numpy(), rtol=0, atol=1e-6)
    assert not model.text_pair


def test_a_model_name_directory_resolves_to_its_highest_version(exported_model):
    assert resolve_model_dir(exported_model.parent) == exported_model


def test_output_format_follows_the_extension(model, many_rows_csv, tmp_path):
    small = tmp_path / "small.csv"
    pd.read_csv(many_rows_csv).head(20).to_csv(small, index=False)

    predict_file(small, tmp_path / "preds.jsonl", model, model.labels, progress=False)

    out = pd.read_json(tmp_path / "preds.jsonl", lines=True)
    assert len(out) == 20 and "probability_neutral" in out


def test_missing_text_column_exits_2_and_writes_nothing(
    exported_model, many_rows_csv, tmp_path, capsys
):
    output = tmp_path / "preds.csv"

    status = predict.main(
        [
            "--model",
            str(exported_model),
            "--input",
            str(many_rows_csv),
            "--output",
            str(output),
            "--text-column",
            "review",
        ]
    )

    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.startswith("error: ") and "missing column(s) ['review']" in err and "\n" not in err
    assert not output.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--model", "--input"])
def test_a_wrong_path_exits_2_and_leaves_an_existing_output_unchanged(
    flag, exported_model, many_rows_csv, tmp_path, capsys
):
    output = tmp_path / "preds.csv"
    output.write_text("keep me\n")
    paths = {"--model": str(exported_model), "--input": str(many_rows_csv)}
    paths[flag] = str(tmp_path / "nowhere")

    status = predict.main(
        ["--model", paths["--model"], "--input", paths["--input"], "--output", str(output)]
    )

    err = capsys.readouterr().err.strip()
    assert status == 2 and "nowhere" in err and "\n" not in err
    assert output.read_text() == "keep me\n"


def test_a_failure_midway_leaves_no_partial_file(tmp_path, many_rows_csv):
    output = tmp_path / "preds.csv"
    output.write_text("old predictions\n")
    calls = []

    def flaky(texts):
        calls.append(len(texts))
        if len(calls) == 3:
            raise RuntimeError("server went away")
        return ["a"] * len(texts), np.full((len(texts), 2), 0.5)

    with pytest.raises(RuntimeError, match="went away"):
        predict_file(many_rows_csv, output, flaky, ["a", "b"], batch_size=100, progress=False)

    assert output.read_text() == "old predictions\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.csv"]


class FakeClient:
    """Stands in for `kerasbert.client.ServingClient`: (label, probabilities) per text."""

    def __init__(self):
        self.batches = []

    def predict(self, texts, text_pairs=None, batch_size=64):
        self.batches.append(list(texts))
        return [("long", [0.2, 0.8]) if len(t) > 5 else ("short", [0.9, 0.1]) for t in texts]

    def classify(self, texts, text_pairs=None, batch_size=64):
        return [[("short", 0.9), ("long", 0.1)] for _ in texts]


def test_server_predict_fn_writes_the_client_predictions_in_order(tmp_path):
    source = tmp_path / "in.csv"
    pd.DataFrame({"text": ["tiny", "a longer text", "", "über-long text"]}).to_csv(
        source, index=False
    )
    client = FakeClient()

    out = predict_file(
        source,
        tmp_path / "out.csv",
        server_predict_fn(client),
        server_labels(client),
        batch_size=3,
        progress=False,
    )

    assert client.batches == [["tiny", "a longer text", ""], ["über-long text"]]
    assert out["predicted_label"].tolist() == ["short", "long", "short", "long"]
    np.testing.assert_allclose(out["probability_long"], [0.1, 0.8, 0.1, 0.8], rtol=1e-6)
    written = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert written["text"].tolist() == ["tiny", "a longer text", "", "über-long text"]


def test_server_mode_matches_the_saved_model(exported_model, loaded, tmp_path, capsys, caplog):
    from tests.support.servers import ServerProcess

    caplog.set_level(logging.INFO)

    base = tmp_path / "models" / "tiny"
    shutil.copytree(exported_model, base / "1")
    source = tmp_path / "in.csv"
    texts = ["What a superb film.", "", ODD_TEXTS[1], "Dull and flat."] * 10
    pd.DataFrame({"text": texts}).to_csv(source, index=False)
    output = tmp_path / "out.csv"

    with ServerProcess(
        ["--model_name", "tiny", "--model_base_path", base], log_path=tmp_path / "serve.log"
    ) as server:
        status = predict.main(
            [
                "--server",
                server.url,
                "--model-name",
                "tiny",
                "--input",
                str(source),
                "--output",
                str(output),
                "--batch-size",
                "16",
                "--no-progress",
            ]
        )

    assert status == 0, capsys.readouterr().err
    # Quiet: no line per HTTP request.
    assert [
        r.getMessage() for r in caplog.records if r.name.startswith(("httpx", "httpcore"))
    ] == []
    out = pd.read_csv(output, keep_default_na=False)
    assert out["text"].tolist() == texts
    expected = signature_outputs(loaded, texts)
    probabilities = out[
        ["probability_negative", "probability_neutral", "probability_positive"]
    ].to_numpy()
    np.testing.assert_allclose(probabilities, expected["probabilities"].numpy(), atol=1e-5)
    assert out["predicted_label"].tolist() == [b.decode() for b in expected["label"].numpy()]


def test_server_mode_needs_a_model_name(tmp_path, capsys):
    status = predict.main(
        [
            "--server",
            "http://localhost:8501",
            "--input",
            "x.csv",
            "--output",
            str(tmp_path / "o.csv"),
        ]
    )

    assert status == 2
    assert "--model-name" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


def test_predict_in_batches_rejects_a_model_that_drops_rows():
    with pytest.raises(RuntimeError, match="1 labels and 1 probability rows for a batch of 2"):
        predict_in_batches(lambda texts: (["a"], [[1.0]]), ["x", "y"], progress=False)


def test_loading_an_export_logs_none_of_tensorflows_lines(exported_model, caplog):
    caplog.set_level(logging.DEBUG)
    SavedModelClassifier(exported_model)
    # TF1's loader would say "Restoring parameters from .../variables/variables".
    assert [r.getMessage() for r in caplog.records if r.name in ("tensorflow", "absl")] == []
