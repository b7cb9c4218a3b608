"""Export of a BERT run for TF Serving: layout, signatures, parity, op check, CLI.

Shares the session's `trained_run` (a tiny BERT, exported by training to
`<tmp>/saved_models/tiny/1`). Each test that exports again writes under its
own `tmp_path`.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the ops of loaded exports)

from kerasbert import export
from kerasbert.exporting import serving_module
from kerasbert.exporting.exporter import export_model, next_version
from kerasbert.exporting.inspection import signature_summary
from kerasbert.exporting.op_check import UnsupportedOpsError, check_ops, graph_ops, op_sources
from kerasbert.models.tokenizers import load_tokenizer
from kerasbert.serving.saved_model_bundle import WARMUP_FILE
from tests.support.exports import assert_session_answers_like_tf2_load
from tests.support.tiny import QUICKSTART_CSV

LABELS = ["negative", "neutral", "positive"]

# 50 texts in the quickstart's style that are not among its rows.
HELD_OUT_TEXTS = [
    f"My {who} found the {what} {how}."
    for who in ("sister", "neighbour", "whole class", "grandfather", "dentist")
    for what, how in (
        ("soundtrack", "oddly soothing"),
        ("villain", "far too cheap"),
        ("pacing", "perfectly judged"),
        ("screenplay", "a total mess"),
        ("opening scene", "gorgeous"),
        ("runtime", "listed at two hours"),
        ("sequel", "not out yet"),
        ("lead actor", "wooden and dull"),
        ("ending", "moving and warm"),
        ("credits", "surprisingly long"),
    )
]

ODD_TEXTS = [
    "",
    "   ",
    "naïve café, ünïcödé façade",
    "日本語のレビュー：とても良い映画でした",
    "🎬🍿🔥",
    "a superb 🎬 with emoji inside",
    " ".join(["superb"] * 300) + " awful",
    " ".join(["superb"] * 300) + " tedious and boring to the end",
]


@pytest.fixture(scope="module")
def run_model(trained_run):
    """The run's Keras classifier and tokenizer, reloaded from its files."""
    import keras

    classifier = keras.saving.load_model(trained_run.run_dir / "model.keras", compile=False)
    tokenizer = load_tokenizer(trained_run.run_dir / "tokenizer")
    return classifier, tokenizer


@pytest.fixture(scope="module")
def loaded(exported_model):
    return tf.saved_model.load(str(exported_model))


@pytest.fixture(scope="module")
def temperature(trained_run):
    """The temperature the run fitted on validation, which its export divides the logits by."""
    return json.loads((trained_run.run_dir / "labels.json").read_text())["head"]["temperature"]


def keras_outputs(run_model, texts, temperature, sequence_length=16):
    """Logits and probabilities of the Keras classifier on `TextEncoder` inputs, calibrated."""
    from kerasbert.models.tokenizers import TextEncoder

    classifier, tokenizer = run_model
    inputs = TextEncoder(tokenizer, sequence_length)(tf.constant(texts))
    logits = classifier.predict(inputs, verbose=0) / temperature
    return logits, tf.nn.softmax(logits).numpy(), {k: v.numpy() for k, v in inputs.items()}


def error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# === Layout and signatures ===


def test_version_directory_has_model_assets_and_warmup(trained_run, exported_model):
    assert exported_model.name == "1"
    assert sorted(p.name for p in exported_model.parent.iterdir()) == ["1"]
    for name in ("saved_model.pb", "fingerprint.pb", "variables", "assets", "assets.extra"):
        assert (exported_model / name).exists(), name
    assets = exported_model / "assets"
    assert (assets / "labels.txt").read_text(encoding="utf-8").splitlines() == LABELS
    # Training scores the export afterwards and adds to the run's metrics;
    # the asset holds those known when it was exported.
    metrics = json.loads((assets / "metrics.json").read_text())
    for split in ("validation", "test"):
        for name in ("accuracy", "loss"):
            assert metrics[split][name] == pytest.approx(trained_run.metrics[split][name], abs=1e-6)
    assert (assets / "config.yaml").read_text() == (trained_run.run_dir / "config.yaml").read_text()
    vocabulary = (assets / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    assert vocabulary[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert not (assets / "bin_edges.json").exists()
    assert (exported_model / "assets.extra" / WARMUP_FILE).stat().st_size > 0


def test_signature_defs_have_exact_names_dtypes_and_methods(exported_model):
    outputs = {
        "probabilities": ("float32", (-1, 3)),
        "logits": ("float32", (-1, 3)),
        "label": ("string", (-1,)),
        "label_id": ("int64", (-1,)),
    }
    assert signature_summary(exported_model) == {
        "serving_default": {
            "method": "tensorflow/serving/predict",
            "inputs": {"text": ("string", (-1,))},
            "outputs": outputs,
        },
        "predict_tokens": {
            "method": "tensorflow/serving/predict",
            "inputs": {
                "token_ids": ("int32", (-1, -1)),
                "padding_mask": ("bool", (-1, -1)),
                "segment_ids": ("int32", (-1, -1)),
            },
            "outputs": outputs,
        },
        "classify": {
            "method": "tensorflow/serving/classify",
            "inputs": {"inputs": ("string", (-1,))},
            "outputs": {"classes": ("string", (-1, 3)), "scores": ("float32", (-1, 3))},
        },
    }


# === Serving without kerasbert ===

# One fresh interpreter (TensorFlow's start-up is the slow part) plays two
# clients: first a TF-only program that runs every signature, then
# `python -m kerasbert.export --inspect`.
FRESH_CLIENT = textwrap.dedent(
    """
    import contextlib, io, json, runpy, sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

    version_dir, given_path, out_path = sys.argv[1:]
    model = tf.saved_model.load(version_dir)
    given = np.load(given_path)
    texts = tf.constant([t.encode("utf-8") for t in given["texts"]])
    out = {}
    for name, value in model.signatures["serving_default"](text=texts).items():
        out["serving_default/" + name] = value.numpy()
    tokens = {
        k.split("/")[1]: tf.constant(given[k]) for k in given.files if k.startswith("tokens/")
    }
    for name, value in model.signatures["predict_tokens"](**tokens).items():
        out["predict_tokens/" + name] = value.numpy()
    examples = [
        tf.train.Example(features=tf.train.Features(feature={
            "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[t.numpy()]))
        })).SerializeToString()
        for t in texts
    ]
    for name, value in model.signatures["classify"](inputs=tf.constant(examples)).items():
        out["classify/" + name] = value.numpy()
    out = {k: v.astype(str) if v.dtype == object else v for k, v in out.items()}

    def loaded_modules():
        return sorted(m for m in sys.modules if m.split(".")[0] in ("kerasbert", "keras_hub"))

    out["serving_modules"] = np.array(loaded_modules(), dtype=str)

    sys.argv = ["kerasbert.export", "--inspect", version_dir]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            runpy.run_module("kerasbert.export", run_name="__main__", alter_sys=True)
        except SystemExit as e:
            out["inspect_exit"] = np.array(e.code)
    out["inspect_stdout"] = np.array(printed.getvalue())
    out["inspect_modules"] = np.array(loaded_modules(), dtype=str)
    np.savez(out_path, **out)
    """
)


@pytest.fixture(scope="module")
def fresh_client(run_model, exported_model, temperature, tmp_path_factory):
    """What `FRESH_CLIENT` saw, and the Keras model's outputs on the same texts."""
    texts = HELD_OUT_TEXTS
    tmp = tmp_path_factory.mktemp("fresh_client")
    logits, probabilities, tokens = keras_outputs(run_model, texts, temperature)
    np.savez(tmp / "in.npz", texts=np.array(texts), **{f"tokens/{k}": v for k, v in tokens.items()})
    subprocess.run(
        [
            sys.executable,
            "-c",
            FRESH_CLIENT,
            str(exported_model),
            str(tmp / "in.npz"),
            str(tmp / "out.npz"),
        ],
        check=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    return dict(np.load(tmp / "out.npz")), logits, probabilities


def test_tensorflow_only_process_runs_every_signature_like_keras(fresh_client):
    out, logits, probabilities = fresh_client
    assert len(HELD_OUT_TEXTS) == 50
    assert not set(HELD_OUT_TEXTS) & set(QUICKSTART_CSV.read_text(encoding="utf-8").splitlines())
    assert list(out["serving_modules"]) == []
    np.testing.assert_allclose(out["serving_default/probabilities"], probabilities, atol=1e-5)
    np.testing.assert_allclose(out["serving_default/logits"], logits, atol=1e-5)
    np.testing.assert_array_equal(out["serving_default/label_id"], logits.argmax(-1))
    np.testing.assert_array_equal(out["serving_default/label"], np.array(LABELS)[logits.argmax(-1)])
    for name in ("probabilities", "logits", "label", "label_id"):
        np.testing.assert_array_equal(out[f"predict_tokens/{name}"], out[f"serving_default/{name}"])
    np.testing.assert_array_equal(out["classify/scores"], out["serving_default/probabilities"])
    np.testing.assert_array_equal(out["classify/classes"], np.array([LABELS] * 50))


def test_inspect_as_a_module_loads_neither_keras_hub_nor_training_code(fresh_client):
    out, _, _ = fresh_client
    assert int(out["inspect_exit"]) == 0
    assert "labels (3): negative, neutral, positive" in str(out["inspect_stdout"])
    # Reading files with TensorFlow alone: no Keras model, tokenizer or training code.
    assert list(out["inspect_modules"]) == [
        "kerasbert",
        "kerasbert.cli",
        "kerasbert.exporting",
        "kerasbert.exporting.inspection",
        "kerasbert.rundir",
        "kerasbert.serving",
        "kerasbert.serving.saved_model_bundle",
    ]


def test_keras_model_around_tfsm_layer_predicts_the_same(run_model, exported_model, temperature):
    import keras

    text = keras.Input(shape=(), dtype="string", name="text")
    served = keras.layers.TFSMLayer(str(exported_model), call_endpoint="serving_default")(text)
    model = keras.Model(text, served)
    texts = HELD_OUT_TEXTS[:20]
    predicted = model.predict(tf.constant(texts), batch_size=8, verbose=0)
    _, probabilities, _ = keras_outputs(run_model, texts, temperature)
    np.testing.assert_allclose(predicted["probabilities"], probabilities, atol=1e-5)
    assert [label.decode() for label in predicted["label"]] == [
        LABELS[i] for i in probabilities.argmax(-1)
    ]


def test_warmup_requests_parse_and_run_against_their_signatures(exported_model, loaded):
    from tensorflow_serving.apis import prediction_log_pb2

    path = exported_model / "assets.extra" / WARMUP_FILE
    records = [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(str(path))
    ]
    kinds = [record.WhichOneof("log_type") for record in records]
    assert kinds.count("predict_log") >= 2 and kinds.count("classify_log") == 1
    methods = {k: v["method"] for k, v in signature_summary(exported_model).items()}
    sent_texts = []
    for record in records:
        if record.HasField("predict_log"):
            request = record.predict_log.request
            signature = request.model_spec.signature_name
            assert methods[signature] == "tensorflow/serving/predict"
            inputs = {
                name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()
            }
            if signature == "serving_default":
                sent_texts += [t.decode("utf-8") for t in inputs["text"].numpy()]
        else:
            request = record.classify_log.request
            signature = request.model_spec.signature_name
            assert methods[signature] == "tensorflow/serving/classify"
            examples = [e.SerializeToString() for e in request.input.example_list.examples]
            inputs = {"inputs": tf.constant(examples)}
        assert request.model_spec.name == "tiny"
        batch = len(next(iter(inputs.values())).numpy())
        outputs = loaded.signatures[signature](**inputs)
        assert batch > 0
        assert {name: value.shape[0] for name, value in outputs.items()} == {
            name: batch for name in outputs
        }
    assert "" in sent_texts
    assert any(not text.isascii() for text in sent_texts)


def test_a_text_gets_the_same_logits_alone_batched_with_a_longer_one_and_at_full_width(
    run_model, loaded
):
    from kerasbert.models.tokenizers import TextEncoder

    short, long = "superb", ODD_TEXTS[-1]
    serve = loaded.signatures["serving_default"]
    alone = serve(text=tf.constant([short]))["logits"].numpy()
    batched = serve(text=tf.constant([short, long]))["logits"].numpy()
    np.testing.assert_allclose(alone[0], batched[0], atol=1e-5)
    # predict_tokens takes the inputs as given: here padded to the full 16.
    full_width = TextEncoder(run_model[1], 16)(tf.constant([short]))
    assert full_width["token_ids"].shape == (1, 16)
    untrimmed = loaded.signatures["predict_tokens"](**full_width)["logits"].numpy()
    np.testing.assert_allclose(alone, untrimmed, atol=1e-5)


def test_empty_long_non_ascii_and_emoji_texts_return_one_row_each(loaded):
    out = loaded.signatures["serving_default"](text=tf.constant(ODD_TEXTS))
    for name, value in out.items():
        assert value.shape[0] == len(ODD_TEXTS), name
    probabilities = out["probabilities"].numpy()
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    # The two long texts differ only after 300 words: past the 16-token
    # sequence length, so truncation makes them the same input.
    np.testing.assert_array_equal(probabilities[-1], probabilities[-2])
    single = loaded.signatures["serving_default"](text=tf.constant([""]))
    assert single["label"].shape == (1,)


# === Op check ===


def test_op_sources_leave_out_op_libraries_that_tensorflow_loads():
    from tensorflow.python.framework import op_def_registry

    sources = op_sources()
    assert {"MatMul", "Softmax", "ParseExampleV2"} <= sources.core
    assert {"RegexSplitWithOffsets", "FastWordpieceTokenizeWithOffsets"} <= sources.text
    assert not sources.core & sources.text
    # TF Lite's audio op library is loaded by `import tensorflow`, so the op is
    # registered in this very process, yet it is no core op and TF Serving
    # doesn't have it.
    assert op_def_registry.get("AudioMicrofrontend") is not None
    assert "AudioMicrofrontend" not in sources.core | sources.text
    assert any("AudioMicrofrontend" in ops for ops in sources.other_libraries.values())


def test_op_check_passes_bert_export_and_lists_its_ops(exported_model):
    ops = check_ops(exported_model)
    assert {"FastWordpieceTokenizeWithOffsets", "RegexSplitWithOffsets"} <= set(ops["text"])
    assert {"Softmax", "ParseExampleV2", "StatefulPartitionedCall"} <= set(ops["core"])
    assert set(ops["core"]) | set(ops["text"]) == graph_ops(exported_model)


class ClassifierWithForeignOp(tf.Module):
    """Constant logits, plus an op from TF Lite's audio op library.

    Small on purpose: the tokenizer's ops are traced and saved as in any
    export, without the cost of a transformer.
    """

    def __call__(self, inputs, training=False):
        from tensorflow.lite.experimental.microfrontend.python.ops import (
            audio_microfrontend_op,
        )

        frames = audio_microfrontend_op.audio_microfrontend(
            tf.zeros([480], tf.int16), sample_rate=16000, num_channels=4
        )
        batch = tf.shape(inputs["token_ids"])[0]
        return tf.zeros([batch, 3]) + tf.cast(tf.reduce_sum(frames), tf.float32)


def test_export_with_an_op_outside_core_and_text_fails_and_leaves_nothing(run_model, tmp_path):
    _, tokenizer = run_model
    with pytest.raises(
        UnsupportedOpsError,
        match=r"neither core TensorFlow nor TensorFlow Text ops: "
        r"AudioMicrofrontend \(from _audio_microfrontend_op.so\)\.",
    ):
        export_model(ClassifierWithForeignOp(), tokenizer, 16, LABELS, tmp_path, "foreign")
    # Everything had been written when the check failed; none of it is left.
    assert list((tmp_path / "foreign").iterdir()) == []


# === Loaded as TF Serving loads it ===


def test_session_answers_every_signature_like_tf2_load(exported_model):
    assert_session_answers_like_tf2_load(exported_model)


def test_cli_re_export_answers_in_a_session_like_tf2_load(trained_run, tmp_path, capsys):
    assert export.main(["--run", str(trained_run.run_dir), "--base-path", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"exported: {tmp_path / 'tiny' / '1'}"
    assert_session_answers_like_tf2_load(tmp_path / "tiny" / "1")


def test_export_whose_variables_the_restore_op_misses_is_refused_in_one_line(
    trained_run, tmp_path, monkeypatch, capsys
):
    # What every export did before: the signatures read Keras 3's tf.Variables,
    # the restore op fills untracked copies, and only tf.saved_model.load works.
    monkeypatch.setattr(serving_module, "backend_variables", lambda classifier: [])
    assert export.main(["--run", str(trained_run.run_dir), "--base-path", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(
        "error: TF Serving could not serve this export, so no version was written: "
        "warm-up record 0 (serving_default): FailedPreconditionError: Could not find variable "
    ), line
    assert list((tmp_path / "tiny").iterdir()) == []


def test_export_check_refuses_outputs_that_differ_from_the_exporting_process(exported_model):
    from kerasbert.exporting.bundle_check import ExportCheckError, check_export
    from kerasbert.serving.saved_model_bundle import SavedModelBundle

    bundle = SavedModelBundle(exported_model)

    def shifted(key, inputs):
        outputs = bundle.run(key, inputs)
        name = "scores" if key == "classify" else "probabilities"
        outputs[name] = outputs[name] + 1e-4
        return outputs

    assert check_export(exported_model, bundle.run) == 4
    with pytest.raises(
        ExportCheckError,
        match=r"warm-up record 0 \(serving_default\): output 'probabilities' differs",
    ):
        check_export(exported_model, shifted)


# === Atomicity ===


KILLED_BEFORE_RENAME = textwrap.dedent(
    """
    import os, signal, sys
    from kerasbert.exporting.exporter import export_run_dir

    def killed(src, dst):
        os.kill(os.getpid(), signal.SIGKILL)

    os.rename = killed
    export_run_dir(sys.argv[1], base_path=sys.argv[2])
    """
)


def test_export_killed_before_rename_leaves_no_loadable_version(trained_run, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", KILLED_BEFORE_RENAME, str(trained_run.run_dir), str(tmp_path)],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
    (leftover,) = (tmp_path / "tiny").iterdir()
    # Everything was written; only the rename was missing. TF Serving loads
    # integer-named directories only, and this one is hidden and isn't.
    assert (leftover / "saved_model.pb").exists()
    assert (leftover / "assets.extra" / WARMUP_FILE).exists()
    assert leftover.name.startswith(".") and not leftover.name.isdigit()
    assert next_version(tmp_path / "tiny") == 1


# === Command line ===


def test_inspect_prints_signatures_labels_and_metrics(exported_model, capsys):
    assert export.main(["--inspect", str(exported_model)]) == 0
    out = capsys.readouterr().out
    assert "signature 'serving_default' (tensorflow/serving/predict)" in out
    assert "signature 'classify' (tensorflow/serving/classify)" in out
    assert "    text  string   [None]" in out
    assert "    scores   float32  [None, 3]" in out
    assert "labels (3): negative, neutral, positive" in out
    head = json.loads((exported_model / "assets" / "head.json").read_text())
    assert f"temperature: {head['temperature']:.4g}\n" in out
    metrics = json.loads((exported_model / "assets" / "metrics.json").read_text())
    test = metrics["test"]
    assert f"  test: accuracy={test['accuracy']:.4f}, loss={test['loss']:.4f}" in out
    assert "warm-up requests: 4" in out


@pytest.mark.parametrize("argv", [[], ["--run", "r", "--inspect", "v"]])
def test_cli_needs_exactly_one_of_run_and_inspect(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export.main(argv)
    assert exit_info.value.code == 2
    assert "--run" in error_line(capsys)


def test_cli_rejects_run_options_with_inspect(exported_model, capsys):
    assert export.main(["--inspect", str(exported_model), "--version", "2"]) == 2
    assert error_line(capsys) == "error: --version: only with --run, not with --inspect"


def test_cli_rejects_a_missing_run_directory(tmp_path, capsys):
    assert export.main(["--run", str(tmp_path / "nope")]) == 2
    assert error_line(capsys).startswith(f"error: No run directory at {tmp_path / 'nope'}.")


def test_cli_rejects_a_directory_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("name: x\n")
    assert export.main(["--run", str(tmp_path)]) == 2
    assert "it lacks labels.json, model.keras, tokenizer" in error_line(capsys)


def test_cli_refuses_to_overwrite_an_existing_version(trained_run, exported_model, capsys):
    before = (exported_model / "saved_model.pb").stat().st_mtime_ns
    assert export.main(["--run", str(trained_run.run_dir), "--version", "1"]) == 2
    err = error_line(capsys)
    assert f"Version 1 of model `tiny` already exists at {exported_model}" in err
    assert "export version 2" in err
    assert (exported_model / "saved_model.pb").stat().st_mtime_ns == before


@pytest.mark.parametrize("version", ["0", "two", "-3"])
def test_cli_rejects_a_version_that_is_not_a_positive_integer(trained_run, version, capsys):
    assert export.main(["--run", str(trained_run.run_dir), "--version", version]) == 2
    expected = "Invalid value for argument `version`. Expected a positive integer"
    assert expected in error_line(capsys)


def test_cli_inspect_of_a_model_directory_names_its_versions(exported_model, capsys):
    assert export.main(["--inspect", str(exported_model.parent)]) == 2
    err = error_line(capsys)
    assert f"No SavedModel at {exported_model.parent}" in err
    assert f"pass one, e.g. {exported_model}" in err


def test_export_logs_one_line_of_its_own_and_none_of_tensorflows(run_model, tmp_path, caplog):
    classifier, tokenizer = run_model
    caplog.set_level(logging.DEBUG)
    version_dir = export_model(classifier, tokenizer, 16, LABELS, tmp_path, "quiet")
    assert [r.getMessage() for r in caplog.records if r.name in ("tensorflow", "absl")] == []
    assert [r.getMessage() for r in caplog.records if r.name.startswith("kerasbert")] == [
        f"exported {version_dir}"
    ]
