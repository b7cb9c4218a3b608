"""How TensorFlow uses the machine: threads, XLA and mixed precision.

The `runtime` section of a config, resolved for this machine:

- threads: TensorFlow sizes its thread pools by the CPUs it may be
  scheduled on, which inside a container with a CPU quota (Docker's
  `--cpus`, a Kubernetes CPU limit) can be far more than it is allowed to
  use; the threads then wait on each other and on the quota. `"auto"`
  counts the quota too.
- XLA: `"auto"` leaves it to Keras, which compiles on GPU and TPU but not
  on a CPU-only machine, where XLA made a BERT training step no faster and
  took four times as long to compile (benchmarks/RESULTS.md).
- mixed precision: `"auto"` is `mixed_bfloat16` on GPUs that compute in
  bfloat16 (compute capability 8.0 and up: A100, L4, H100) and on CPUs
  that do (`avx512_bf16` or `amx_bf16` among their flags:
  `cpu_computes_bfloat16`), `float32` elsewhere. bfloat16 has float32's
  range, so it needs no loss scaling. On a Zen 4 CPU the progressive
  recipe ran 1.2-1.3x faster in bfloat16 and scored 0.10 points higher over
  three seeds (benchmarks/RESULTS.md, "bfloat16 on the CPU").
- batch widths: a compiled step (XLA, GPU, TPU) caches one program per
  input shape, so there each batch's width is rounded up to a multiple of
  8; a step run op by op pays nothing for a new width, and each batch is cut
  to exactly its longest text (`Runtime.pad_multiple`).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from kerasbert.data.pipeline import PAD_MULTIPLE

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPUINFO = Path("/proc/cpuinfo")
# CPU flags of native bfloat16 arithmetic: AVX512-BF16 (Cooper Lake, Zen 4)
# and AMX-BF16 (Sapphire Rapids).
CPU_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
# Whether `mixed_precision: auto` picks mixed_bfloat16 on CPUs that compute
# in bfloat16. On: it is faster there and cost no accuracy (3 seeds of the
# progressive recipe, within the 0.3 points allowed; benchmarks/RESULTS.md,
# "bfloat16 on the CPU").
AUTO_CPU_BFLOAT16 = True


@dataclass(frozen=True)
class Runtime:
    """A resolved `runtime` section: no `"auto"` left.

    Attributes:
        intra_op_threads: threads one op (a matrix multiply) may use.
        inter_op_threads: ops that may run at once.
        jit_compile: `model.compile`'s `jit_compile` (`"auto"` is Keras's
            own choice).
        dtype_policy: the Keras dtype policy of the backbone and head.
        pad_multiple: each batch's width is rounded up to a multiple of
            this; 1 cuts it to exactly its longest sequence.
    """

    intra_op_threads: int
    inter_op_threads: int
    jit_compile: object
    dtype_policy: str
    pad_multiple: int = 1


def usable_cpus(cgroup_root=CGROUP_ROOT) -> int:
    """The CPUs this process may use: its affinity, capped by a CPU quota.

    Reads cgroup v2's `cpu.max` or cgroup v1's `cpu.cfs_quota_us` and
    `cpu.cfs_period_us`; a quota of 1.5 CPUs counts as 2.

    Args:
        cgroup_root: where the cgroup file system is mounted.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(Path(cgroup_root))
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_quota(root):
    """The CPU quota in CPUs, or None when there is none (or no cgroup)."""
    try:
        fields = (root / "cpu.max").read_text().split()
        if fields and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def resolve_runtime(
    runtime_config,
    cpus=None,
    gpus=None,
    tpu=False,
    cpu_flags=None,
    auto_cpu_bfloat16=AUTO_CPU_BFLOAT16,
) -> Runtime:
    """Turns a `kerasbert.config.RuntimeConfig` into settings for this machine.

    Args:
        runtime_config: the config's `runtime` section.
        cpus: usable CPUs; None counts them (`usable_cpus`).
        gpus: `tf.config.PhysicalDevice`s of the GPUs; None lists them.
        tpu: whether the model runs on TPUs (`distribution.strategy: tpu`).
        cpu_flags: the CPU's feature flags; None reads them (`read_cpu_flags`).
        auto_cpu_bfloat16: whether `mixed_precision: auto` picks
            `mixed_bfloat16` on a CPU without GPUs that computes in bfloat16.

    Returns:
        A `Runtime`.
    """
    cfg = runtime_config
    cpus = usable_cpus() if cpus is None else cpus
    if gpus is None:
        # Physical devices: listing them does not start TensorFlow's runtime.
        gpus = tf.config.list_physical_devices("GPU")
    policy = cfg.mixed_precision
    if policy == "auto":
        if gpus:
            bfloat16 = all(_computes_bfloat16(gpu) for gpu in gpus)
        elif tpu:
            bfloat16 = False
        else:
            native = cpu_computes_bfloat16(cpu_flags)
            bfloat16 = native and auto_cpu_bfloat16
            if native and not bfloat16:
                log.info(
                    "this CPU computes in bfloat16; runtime.mixed_precision: mixed_bfloat16 "
                    "would use it (auto keeps float32 on CPUs, see benchmarks/RESULTS.md)"
                )
        policy = "mixed_bfloat16" if bfloat16 else "float32"
    compiled = cfg.jit_compile is True or bool(gpus) or tpu
    return Runtime(
        intra_op_threads=cpus if cfg.intra_op_threads == "auto" else cfg.intra_op_threads,
        inter_op_threads=cpus if cfg.inter_op_threads == "auto" else cfg.inter_op_threads,
        jit_compile=cfg.jit_compile,
        dtype_policy=policy,
        pad_multiple=PAD_MULTIPLE if compiled else 1,
    )


def read_cpu_flags(cpuinfo=CPUINFO) -> frozenset:
    """The CPU's feature flags, from the first `flags` line of `/proc/cpuinfo`.

    Args:
        cpuinfo: the file to read; empty flags where it can't be read (not
            Linux).

    Returns:
        A frozenset of flag names, such as `"avx512_bf16"`.
    """
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_computes_bfloat16(flags=None) -> bool:
    """Whether the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16).

    Args:
        flags: the CPU's feature flags; None reads them (`read_cpu_flags`).

    Example:
    >>> cpu_computes_bfloat16({"avx512f", "avx512_bf16"})
    True
    """
    flags = read_cpu_flags() if flags is None else flags
    return any(flag in flags for flag in CPU_BFLOAT16_FLAGS)


def _computes_bfloat16(gpu) -> bool:
    details = tf.config.experimental.get_device_details(gpu)
    capability = details.get("compute_capability") or (0, 0)
    return tuple(capability) >= (8, 0)


def apply_runtime(runtime) -> None:
    """Sizes TensorFlow's thread pools, before it runs its first op.

    Once TensorFlow has started (an earlier run in the same process, a test
    session) the pools cannot change; then the settings in force are kept
    and the difference is logged.

    Args:
        runtime: a `Runtime`.
    """
    wanted = (runtime.intra_op_threads, runtime.inter_op_threads)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(runtime.intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(runtime.inter_op_threads)
    except RuntimeError:
        current = (
            tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
        )
        if current != wanted:
            log.info(
                "TensorFlow had already started; keeping intra/inter-op threads %s instead of %s",
                current,
                wanted,
            )
        return
    log.info(
        "runtime: %d intra-op and %d inter-op threads, jit_compile=%s, dtype policy %s, "
        "batch widths rounded to a multiple of %d",
        *wanted,
        runtime.jit_compile,
        runtime.dtype_policy,
        runtime.pad_multiple,
    )
