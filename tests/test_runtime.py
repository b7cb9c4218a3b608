"""Runtime settings: CPU quotas, automatic choices, a bfloat16 model."""

import logging
import os

os.environ["KERAS_BACKEND"] = "tensorflow"

import numpy as np
import pytest
import tensorflow as tf

from kerasbert.config import RuntimeConfig
from kerasbert.config_loading import config_from_dict
from kerasbert.training.runtime import (
    Runtime,
    apply_runtime,
    cpu_computes_bfloat16,
    read_cpu_flags,
    resolve_runtime,
    usable_cpus,
)
from tests.support.exports import assert_session_answers_like_tf2_load
from tests.support.tiny import QUICKSTART_CSV, tiny_config_dict


def affinity():
    return len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    "files, quota",
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "100000 100000\n"}, 1),
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: round up
        ({"cpu.max": "10000 100000\n"}, 1),  # a tenth: at least one
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu.max": "garbage\n"}, None),
        ({}, None),
    ],
)
def test_usable_cpus_is_the_affinity_capped_by_the_cgroup_quota(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    expected = affinity() if quota is None else min(affinity(), quota)
    assert usable_cpus(tmp_path) == expected


def test_auto_uses_the_usable_cpus_keras_jit_choice_and_float32_without_bfloat16_hardware():
    runtime = resolve_runtime(
        RuntimeConfig(), cpus=3, gpus=[], cpu_flags={"avx512f", "avx512_vnni"}
    )
    assert runtime == Runtime(
        intra_op_threads=3, inter_op_threads=3, jit_compile="auto", dtype_policy="float32"
    )


def test_explicit_settings_pass_through():
    config = RuntimeConfig(
        intra_op_threads=4, inter_op_threads=1, jit_compile=False, mixed_precision="mixed_bfloat16"
    )
    runtime = resolve_runtime(config, cpus=2, gpus=[])
    assert runtime == Runtime(
        intra_op_threads=4, inter_op_threads=1, jit_compile=False, dtype_policy="mixed_bfloat16"
    )


@pytest.mark.parametrize(
    "capability, policy",
    [((8, 0), "mixed_bfloat16"), ((9, 0), "mixed_bfloat16"), ((7, 5), "float32")],
)
def test_auto_mixed_precision_is_bfloat16_on_gpus_that_compute_in_it(
    monkeypatch, capability, policy
):
    monkeypatch.setattr(
        tf.config.experimental, "get_device_details", lambda gpu: {"compute_capability": capability}
    )
    runtime = resolve_runtime(RuntimeConfig(), cpus=1, gpus=["GPU:0"])
    assert runtime.dtype_policy == policy


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2 avx2 avx512f {extra}
bugs\t\t: sysret_ss_attrs

processor\t: 1
flags\t\t: fpu sse2 avx2 avx512f {extra}
"""


@pytest.mark.parametrize(
    "extra, native",
    [("avx512_bf16 avx512_vnni", True), ("amx_bf16 amx_tile", True), ("avx512_vnni", False)],
)
def test_cpu_bfloat16_is_read_from_the_cpuinfo_flags(tmp_path, extra, native):
    (tmp_path / "cpuinfo").write_text(CPUINFO.format(extra=extra))
    flags = read_cpu_flags(tmp_path / "cpuinfo")
    assert {"avx512f", *extra.split()} <= flags
    assert "sysret_ss_attrs" not in flags
    assert cpu_computes_bfloat16(flags) is native


def test_no_cpuinfo_means_no_flags(tmp_path):
    assert read_cpu_flags(tmp_path / "missing") == frozenset()
    assert cpu_computes_bfloat16(frozenset()) is False


@pytest.mark.parametrize(
    "flags, native", [({"avx512_bf16"}, True), ({"amx_bf16"}, True), ({"avx512f"}, False)]
)
def test_auto_is_bfloat16_on_cpus_that_compute_in_it(caplog, flags, native):
    # benchmarks/RESULTS.md, "bfloat16 on the CPU": faster, and no accuracy lost.
    runtime = resolve_runtime(RuntimeConfig(), cpus=1, gpus=[], cpu_flags=flags)
    assert runtime.dtype_policy == ("mixed_bfloat16" if native else "float32")
    # Without the default, auto keeps float32 and says that mixed_bfloat16 is there to set.
    with caplog.at_level(logging.INFO, logger="kerasbert.training.runtime"):
        kept = resolve_runtime(
            RuntimeConfig(), cpus=1, gpus=[], cpu_flags=flags, auto_cpu_bfloat16=False
        )
    assert kept.dtype_policy == "float32"
    assert ("mixed_bfloat16 would use it" in caplog.text) is native
    explicit = RuntimeConfig(mixed_precision="float32")
    assert resolve_runtime(explicit, cpus=1, gpus=[], cpu_flags=flags).dtype_policy == "float32"


@pytest.mark.parametrize(
    "jit_compile, gpus, tpu, pad_multiple",
    [
        ("auto", [], False, 1),  # Keras runs the CPU step without XLA
        (False, [], False, 1),
        (True, [], False, 8),
        ("auto", ["GPU:0"], False, 8),
        (False, ["GPU:0"], False, 8),
        ("auto", [], True, 8),
    ],
)
def test_batch_widths_are_rounded_only_for_a_compiled_step(jit_compile, gpus, tpu, pad_multiple):
    config = RuntimeConfig(jit_compile=jit_compile, mixed_precision="float32")
    runtime = resolve_runtime(config, cpus=1, gpus=gpus, tpu=tpu, cpu_flags=frozenset())
    assert runtime.pad_multiple == pad_multiple


def test_threads_already_fixed_are_kept_and_the_difference_logged(caplog):
    tf.constant(1.0) + 1.0  # TensorFlow has started
    current = (
        tf.config.threading.get_intra_op_parallelism_threads(),
        tf.config.threading.get_inter_op_parallelism_threads(),
    )
    wanted = tuple(n + 7 for n in current)
    with caplog.at_level(logging.INFO, logger="kerasbert.training.runtime"):
        apply_runtime(Runtime(*wanted, jit_compile="auto", dtype_policy="float32"))
    assert f"keeping intra/inter-op threads {current} instead of {wanted}" in caplog.text
    assert (
        tf.config.threading.get_intra_op_parallelism_threads(),
        tf.config.threading.get_inter_op_parallelism_threads(),
    ) == current


def test_a_bfloat16_run_trains_and_exports_a_bfloat16_model_with_float32_variables(tmp_path):
    from kerasbert.training.fit import compile_for_stage, prepare

    config = config_from_dict(
        tiny_config_dict(QUICKSTART_CSV, tmp_path, runtime={"mixed_precision": "mixed_bfloat16"})
    )
    prepared = prepare(config)
    model = prepared.classifier
    assert prepared.runtime.dtype_policy == "mixed_bfloat16"
    assert model.backbone.dtype_policy.name == "mixed_bfloat16"
    assert {v.dtype for v in model.trainable_variables} == {"float32"}
    compile_for_stage(prepared, config.training, "all")
    batch = {name: value[:8] for name, value in prepared.features["train"].items()}
    assert model(batch).dtype == "bfloat16"
    history = model.fit(batch, prepared.labels("train")[:8], epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    from kerasbert.exporting.exporter import export_model

    version = export_model(
        model, prepared.tokenizer, 16, prepared.splits.labels, tmp_path / "sm", "bf16", version=1
    )
    out = tf.saved_model.load(str(version)).signatures["serving_default"](
        text=tf.constant(["a superb film", ""])
    )
    assert out["probabilities"].dtype == tf.float32
    np.testing.assert_allclose(tf.reduce_sum(out["probabilities"], -1), [1.0, 1.0], rtol=1e-5)
    assert_session_answers_like_tf2_load(version)
