"""`export.dtype: bfloat16`: the serving graph computes in bfloat16 and answers in float32."""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the ops of loaded exports)

from kerasbert.exporting.exporter import export_model
from kerasbert.exporting.inspection import read_saved_model
from kerasbert.models.precision import with_compute_dtype
from kerasbert.models.tokenizers import TextEncoder
from tests.support.exports import assert_session_answers_like_tf2_load
from tests.support.tiny import QUICKSTART_CSV, TINY_TEXTS, tiny_classifier, tiny_config_dict

LABELS = ["bad", "good", "info"]
MATMULS = {"MatMul", "BatchMatMulV2", "Einsum", "_FusedMatMul"}


def matmul_dtypes(version_dir) -> set:
    """The dtypes the exported graph's matrix multiplies compute in."""
    dtypes = set()
    for meta_graph in read_saved_model(version_dir).meta_graphs:
        functions = meta_graph.graph_def.library.function
        nodes = [node for function in functions for node in function.node_def]
        for node in [*meta_graph.graph_def.node, *nodes]:
            if node.op in MATMULS:
                dtypes.add(tf.dtypes.as_dtype(node.attr["T"].type).name)
    return dtypes


@pytest.fixture(scope="module")
def float32_classifier():
    return tiny_classifier("bert", num_layers=2)


@pytest.fixture(scope="module")
def bfloat16_export(float32_classifier, tmp_path_factory):
    """A float32 classifier exported with `dtype="bfloat16"`: every export-time check ran."""
    classifier, tokenizer = float32_classifier
    base = tmp_path_factory.mktemp("bf16")
    return export_model(classifier, tokenizer, 16, LABELS, base, "tiny", dtype="bfloat16")


def test_a_bfloat16_export_computes_in_bfloat16_and_answers_in_float32(
    float32_classifier, bfloat16_export
):
    classifier, tokenizer = float32_classifier
    assert matmul_dtypes(bfloat16_export) == {"bfloat16"}
    texts = [*TINY_TEXTS[:5], "", "naïve café 🎬"]
    out = tf.saved_model.load(str(bfloat16_export)).signatures["serving_default"](
        text=tf.constant(texts)
    )
    assert out["probabilities"].dtype == tf.float32 and out["logits"].dtype == tf.float32
    np.testing.assert_allclose(tf.reduce_sum(out["probabilities"], -1), 1.0, rtol=1e-6)
    # bfloat16 keeps 8 bits of mantissa: the answers are the float32
    # model's to a few parts in a thousand, not to 1e-5.
    tokens = TextEncoder(tokenizer, 16)(tf.constant(texts))
    expected = tf.nn.softmax(classifier.predict(tokens, verbose=0)).numpy()
    np.testing.assert_allclose(out["probabilities"], expected, atol=2e-2)
    assert not np.array_equal(out["probabilities"].numpy(), expected)


def test_a_bfloat16_export_serves_in_a_tf1_session_like_tf2_load(bfloat16_export):
    assert_session_answers_like_tf2_load(bfloat16_export)


def test_the_float32_classifier_is_left_as_it_was(float32_classifier, bfloat16_export):
    classifier, _ = float32_classifier
    assert classifier.dtype_policy.name == "float32"
    assert with_compute_dtype(classifier, "float32") is classifier


def test_with_compute_dtype_rebuilds_under_the_policy_with_the_same_weights(float32_classifier):
    classifier, _ = float32_classifier
    served = with_compute_dtype(classifier, "bfloat16")
    assert served.dtype_policy.name == "mixed_bfloat16"
    assert served.backbone.dtype_policy.name == "mixed_bfloat16"
    assert {v.dtype for v in served.trainable_variables} == {"float32"}
    for mine, theirs in zip(served.get_weights(), classifier.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    back = with_compute_dtype(served, "float32")
    assert back.backbone.dtype_policy.name == "float32"
    with pytest.raises(ValueError, match="Expected one of \\['bfloat16', 'float32'\\]"):
        with_compute_dtype(classifier, "float16")


def test_a_run_exports_in_the_configured_dtype_whatever_it_trained_in(tmp_path, capsys):
    from kerasbert import export
    from kerasbert.config_loading import config_from_dict
    from kerasbert.training.run import train

    config = tiny_config_dict(
        QUICKSTART_CSV,
        tmp_path,
        runtime={"mixed_precision": "mixed_bfloat16"},
        export={"dtype": "float32"},
    )
    result = train(config_from_dict(config))
    assert matmul_dtypes(result.export_dir) == {"float32"}
    argv = ["--run", str(result.run_dir), "--base-path", str(tmp_path / "again")]
    assert export.main([*argv, "--dtype", "bfloat16"]) == 0
    (saved_model,) = (tmp_path / "again").rglob("saved_model.pb")
    assert matmul_dtypes(saved_model.parent) == {"bfloat16"}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        export.main([*argv, "--dtype", "float16"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "invalid choice: 'float16'" in error
