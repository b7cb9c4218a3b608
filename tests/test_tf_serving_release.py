"""Exports load in the latest released TF Serving's TensorFlow, as TF Serving loads them.

The newest `tensorflow_model_server` release, 2.20.0, is built on TensorFlow
2.20 and TensorFlow Text 2.20, older than the TensorFlow kerasbert exports
with. Its binary can't be installed here, so this test sets up a virtual
environment with `tensorflow==2.20.*`, `tensorflow-text==2.20.*` and
`tensorflow-serving-api==2.20.*` from PyPI (once; it is kept in
`.venv-tf-serving-2.20/`), and runs the export check's process there: each
export, of every model shape kerasbert makes, is loaded as a
SavedModelBundle (a TF1 Session, the restore op, the init op) under
TensorFlow 2.20, replays every warm-up record, and must answer as
`tf.saved_model.load` does in this process, to 1e-5.

Marked `tf_serving_release`: it needs PyPI and a few minutes, so the default
run leaves it out; `.ci/run` runs it (`pytest -m tf_serving_release`).
"""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kerasbert.exporting.bundle_check import ExportCheck, check_export
from kerasbert.exporting.exporter import export_model, export_run_dir
from tests.support.tiny import QUICKSTART_CSV, REPO, tiny_classifier, tiny_config_dict

pytestmark = pytest.mark.tf_serving_release

RELEASE = "2.20"
REQUIREMENTS = [
    f"tensorflow=={RELEASE}.*",
    f"tensorflow-text=={RELEASE}.*",
    f"tensorflow-serving-api=={RELEASE}.*",
]
VENV = REPO / f".venv-tf-serving-{RELEASE}"
LABELS = ["bad", "good", "info"]
VERSIONS = (
    "import tensorflow, tensorflow_text, tensorflow_serving.apis.prediction_log_pb2\n"
    "from importlib.metadata import version\n"
    "print(version('tensorflow'), version('tensorflow-text'), version('tensorflow-serving-api'))\n"
)


@pytest.fixture(scope="module")
def release_python():
    """The interpreter of a virtual environment with TF Serving 2.20's TensorFlow."""
    python = VENV / "bin" / "python"
    installed = VENV / "kerasbert-requirements.txt"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if not python.exists() or not installed.is_file() or installed.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                *REQUIREMENTS,
            ],
            check=True,
            timeout=1800,
        )
        installed.write_text(wanted)
    found = subprocess.run(
        [str(python), "-c", VERSIONS], capture_output=True, text=True, check=True, timeout=300
    )
    versions = found.stdout.split()
    assert len(versions) == 3 and all(v.startswith(f"{RELEASE}.") for v in versions), versions
    assert not tf.__version__.startswith(f"{RELEASE}."), "the project's TensorFlow is the release's"
    return python


def tf2_load_run(version_dir):
    """`run(key, inputs)` through `tf.saved_model.load`, in this process."""
    signatures = tf.saved_model.load(str(version_dir)).signatures

    def run(key, inputs):
        outputs = signatures[key](**{name: tf.constant(value) for name, value in inputs.items()})
        return {name: value.numpy() for name, value in outputs.items()}

    return run


def export_tiny(
    tmp_path,
    family="bert",
    pooling="cls",
    text_pair=False,
    policy="float32",
    dtype=None,
    window_pooling=None,
    **text,
):
    import keras

    from kerasbert.models.windows import WindowedClassifier

    keras.mixed_precision.set_global_policy(policy)
    try:
        classifier, tokenizer = tiny_classifier(family, num_layers=2, pooling=pooling)
        if window_pooling is not None:
            classifier = WindowedClassifier(classifier, pooling=window_pooling)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # `text`: the export's truncation, head_tokens, max_characters, windows and stride.
    return export_model(
        classifier,
        tokenizer,
        16,
        LABELS,
        tmp_path,
        "tiny",
        text_pair=text_pair,
        dtype=dtype,
        **text,
    )


@pytest.mark.parametrize(
    "shape",
    [
        {"family": "bert"},
        {"family": "roberta"},
        {"family": "bert", "text_pair": True},
        {"family": "bert", "pooling": "mean"},
        {"family": "roberta", "pooling": "mean"},
        {"family": "bert", "policy": "mixed_bfloat16"},
        {"family": "roberta", "pooling": "mean", "dtype": "bfloat16"},
        {"family": "bert", "truncation": "head_tail", "head_tokens": 5, "max_characters": 300},
        {"family": "roberta", "truncation": "tail"},
        {"family": "bert", "window_pooling": "attention", "windows": 4, "stride": 10},
        {"family": "roberta", "pooling": "mean", "window_pooling": "max", "windows": 3},
    ],
    ids=[
        "bert",
        "roberta",
        "bert-pairs",
        "bert-mean",
        "roberta-mean",
        "bert-bfloat16",
        "roberta-mean-bfloat16-export",
        "bert-head-tail-capped",
        "roberta-tail",
        "bert-windows-attention",
        "roberta-windows-max",
    ],
)
def test_export_answers_under_the_release_as_under_tf2_load(shape, release_python, tmp_path):
    version_dir = export_tiny(tmp_path, **shape)
    records = check_export(
        version_dir, tf2_load_run(version_dir), ExportCheck(python=release_python)
    )
    assert records == 4


def test_a_run_trained_under_mirrored_and_exported_again_answers_under_the_release(
    release_python, tmp_path
):
    from kerasbert.config_loading import config_from_dict
    from kerasbert.training.run import train

    config = tiny_config_dict(QUICKSTART_CSV, tmp_path, distribution={"strategy": "mirrored"})
    result = train(config_from_dict(config))
    again = export_run_dir(result.run_dir, version=2)
    for version_dir in (result.export_dir, again):
        records = check_export(
            version_dir, tf2_load_run(version_dir), ExportCheck(python=release_python)
        )
        assert records == 4
    first, second = (
        tf2_load_run(d)("serving_default", {"text": np.array([b"superb"])})
        for d in (result.export_dir, again)
    )
    np.testing.assert_array_equal(first["logits"], second["logits"])


def test_a_multi_worker_run_answers_under_the_release(release_python, tmp_path):
    from tests.test_distribute import run_two_workers, write_config

    run_two_workers(write_config(tmp_path, "workers", "multi_worker_mirrored"))
    (saved_model,) = (tmp_path / "workers" / "saved_models").rglob("saved_model.pb")
    version_dir = saved_model.parent
    records = check_export(
        version_dir, tf2_load_run(version_dir), ExportCheck(python=release_python)
    )
    assert records == 4


def test_a_resumed_run_answers_under_the_release(release_python, tmp_path):
    from tests.test_resume import TRAIN, train_until_killed, write_config

    config = write_config(tmp_path, "killed")
    run_dir = train_until_killed(config, tmp_path, "killed", after_epoch=1)
    resumed = subprocess.run(
        [*TRAIN, "--config", str(config), "--resume", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0 and "resuming at epoch" in resumed.stderr, resumed.stderr[-2000:]
    version_dir = export_run_dir(run_dir, base_path=tmp_path / "sm")
    records = check_export(
        version_dir, tf2_load_run(version_dir), ExportCheck(python=release_python)
    )
    assert records == 4


@pytest.mark.parametrize(
    "head",
    [
        {"task": "multi_label", "thresholds": [0.3, 0.5, 0.7]},
        {"task": "regression", "transform": "log1p", "mean": 7.0, "std": 2.0},
    ],
    ids=["multi-label", "regression"],
)
def test_multi_label_and_regression_exports_answer_under_the_release(
    head, release_python, tmp_path
):
    from kerasbert.exporting.heads import Head

    regression = head["task"] == "regression"
    classifier, tokenizer = tiny_classifier(
        "roberta", num_layers=2, num_classes=1 if regression else 3
    )
    version_dir = export_model(
        classifier,
        tokenizer,
        16,
        ["amount"] if regression else LABELS,
        tmp_path,
        "tiny",
        head=Head.from_dict(head),
    )
    records = check_export(
        version_dir, tf2_load_run(version_dir), ExportCheck(python=release_python)
    )
    assert records == 4
