"""Training and inference throughput: kerasbert against plain keras-hub and HF PyTorch.

Every contender fine-tunes the same MiniLM-L6-H384 weights (every layer
trainable, AdamW or keras-hub's default Adam, dropout on) on the same
Rotten Tomatoes training texts, batch 32, for the same number of steps, on
this machine; the first `--warmup` steps (tracing, graph building, allocator
warm-up) are excluded from the timing. Inference is timed on the test split,
tokenization included, at batch 32 and batch 1.

Contenders (each runs in a fresh process, one after another):

    kerasbert/random      `prepare` + `compile_for_stage` + random batches, each
                          trimmed to its longest text (dynamic padding only)
    kerasbert/bucketed    as `kerasbert.train` runs with the default config:
                          length-bucketed batches (`pipeline.sortish_order`), then
                          trimmed, each to exactly its longest text (no XLA, so no
                          rounding), `runtime.mixed_precision: auto`
    kerasbert/bucketed+fp32    the same in float32 whatever `auto` picks
    kerasbert/bucketed+round8  the same with widths rounded up to a multiple of 8, as
                          for a compiled step (and on CPU before exact widths)
    kerasbert/bucketed+bf16    kerasbert/bucketed under `mixed_bfloat16`: bfloat16
                          compute, float32 variables (native on AVX512-BF16 CPUs)
    kerasbert/random+xla  kerasbert/random with `jit_compile=True` (Keras turns XLA
                          off on CPU by default; random batches have fewer
                          distinct widths, so fewer XLA compiles to wait for)
    kerasbert/bucketed+inter1  the same with one inter-op thread
    keras-hub/default     `TextClassifier.from_preset(dir, num_classes=2).fit` on
                          raw strings, default preprocessing: for this directory
                          keras-hub reads `max_seq_length: 256` from
                          sentence_bert_config.json (512 for a plain BERT dir)
    keras-hub/512         the same with a preprocessor at `sequence_length=512`
    keras-hub/128         the same with a preprocessor at `sequence_length=128`
    hf-torch/random       transformers + PyTorch (CPU), the same random batches,
                          padded to the longest in the batch (DataCollatorWithPadding)
    hf-torch/bucketed     the same with the bucketed batches (as `group_by_length`)
    hf-torch/random+1thread  hf-torch/random with `torch.set_num_threads(1)`:
                          OpenMP's spinning threads suffer most on a shared machine
    infer:kerasbert       `serving_default` of kerasbert's export (text in, in-graph
                          tokenization, each request cut to its longest text),
                          loaded as TF Serving loads it: a TF1 Session on the
                          MetaGraph, run by tensor names (`SavedModelBundle`)
    infer:kerasbert+1thread  the same with one intra-op thread
    infer:kerasbert-tf2load  the same export through `tf.saved_model.load`
    infer:kerasbert-bf16  infer:kerasbert on the export made with `export.dtype:
                          bfloat16` (the graph computes in bfloat16)
    infer:hf-torch        fast tokenizer + `model(**batch)` under `inference_mode`
    infer:hf-torch+1thread   the same with `torch.set_num_threads(1)`
    peak                  not a contender: the best rate of a 2048^3 matmul in
                          float32 and in bfloat16 on this machine, the measured
                          peak each training row's "% of peak" divides by

Run from the repository root after `python benchmarks/fetch_assets.py` and
with the torch venv in place (see benchmarks/README.md):

    nice -n 19 .venv/bin/python benchmarks/speed.py

Writes `benchmarks/cache/speed/results.json` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT_DIR = HERE / "cache" / "speed"
TORCH_PYTHON = HERE / "cache" / "torch-venv" / "bin" / "python"
CONFIG = HERE / "configs" / "full_constant.yaml"
SEED = 0

TRAIN_CONTENDERS = {
    "kerasbert/random": dict(kind="kerasbert", bucket_window=0),
    "kerasbert/bucketed": dict(kind="kerasbert", bucket_window=50),
    "kerasbert/bucketed+fp32": dict(kind="kerasbert", bucket_window=50, mixed_precision="float32"),
    "kerasbert/random+xla": dict(kind="kerasbert", bucket_window=0, jit_compile=True),
    "kerasbert/bucketed+inter1": dict(kind="kerasbert", bucket_window=50, inter_op=1),
    "kerasbert/bucketed+round8": dict(kind="kerasbert", bucket_window=50, pad_multiple=8),
    "kerasbert/bucketed+bf16": dict(
        kind="kerasbert", bucket_window=50, mixed_precision="mixed_bfloat16"
    ),
    "keras-hub/default": dict(kind="keras_hub", sequence_length=None),
    "keras-hub/512": dict(kind="keras_hub", sequence_length=512),
    "keras-hub/128": dict(kind="keras_hub", sequence_length=128),
    "hf-torch/random": dict(kind="hf", order="random"),
    "hf-torch/bucketed": dict(kind="hf", order="bucketed"),
    "hf-torch/random+1thread": dict(kind="hf", order="random", threads=1),
}
INFER_CONTENDERS = [
    "infer:kerasbert",
    "infer:kerasbert+1thread",
    "infer:kerasbert-tf2load",
    "infer:kerasbert-bf16",
    "infer:hf-torch",
    "infer:hf-torch+1thread",
]


# === Setup: the shared inputs and the SavedModels ===


def setup(args):
    """Writes the texts, labels and batch orders every contender uses, and the exports."""
    import numpy as np

    from kerasbert.config_loading import load_config
    from kerasbert.data import splits as data_lib
    from kerasbert.data.pipeline import BUCKET_WINDOW, encode_texts, sortish_order
    from kerasbert.exporting.exporter import export_model
    from kerasbert.models.classifier import build_classifier
    from kerasbert.models.tokenizers import TextEncoder

    config = load_config(args.config)
    splits = data_lib.load_splits(config.data)
    classifier, tokenizer = build_classifier(config.model, len(splits.labels))
    encoder = TextEncoder(tokenizer, config.model.sequence_length)
    texts = splits.train["text"].tolist()
    started = time.perf_counter()
    features = encode_texts(encoder, texts)
    tokenize_seconds = time.perf_counter() - started
    lengths = features["padding_mask"].sum(axis=1)
    # The orders `make_training_dataset` draws for epoch 0 of seed SEED.
    rng = np.random.default_rng([SEED, 0])
    random_order = rng.permutation(len(texts))
    bucketed_order = sortish_order(random_order, lengths, args.batch_size, BUCKET_WINDOW, rng)
    inputs = {
        "model_dir": str(Path(config.model.preset).resolve()),
        "sequence_length": config.model.sequence_length,
        "labels": splits.labels,
        "train_texts": texts,
        "train_label_ids": splits.label_ids("train").tolist(),
        "test_texts": splits.test["text"].tolist(),
        "orders": {"random": random_order.tolist(), "bucketed": bucketed_order.tolist()},
        "tokenize_seconds": tokenize_seconds,
        "tokenize_count": len(texts),
    }
    (args.out / "inputs.json").write_text(json.dumps(inputs), encoding="utf-8")
    exports = args.out / "saved_models"
    for name, dtype in (("kerasbert", "float32"), ("kerasbert-bf16", "bfloat16")):
        target = exports / name / "1"
        if target.exists():
            import shutil

            shutil.rmtree(target)
        export_model(
            classifier,
            tokenizer,
            config.model.sequence_length,
            splits.labels,
            exports,
            name,
            version=1,
            dtype=dtype,
        )
    return {"train_rows": len(texts), "tokenize_texts_per_s": len(texts) / tokenize_seconds}


# === The measured peak ===

PEAK_SIZE = 2048


def measure_peak(calls=10, rounds=3) -> dict:
    """GFLOP/s of a `PEAK_SIZE`-cubed matmul, float32 and bfloat16, the best of `rounds`."""
    import tensorflow as tf

    matmul = tf.function(tf.linalg.matmul)
    rates = {}
    for dtype in ("float32", "bfloat16"):
        a = tf.cast(tf.random.normal([PEAK_SIZE, PEAK_SIZE]), dtype)
        b = tf.cast(tf.random.normal([PEAK_SIZE, PEAK_SIZE]), dtype)
        matmul(a, b).numpy()
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(calls):
                product = matmul(a, b)
            product.numpy()
            best = min(best, (time.perf_counter() - started) / calls)
        rates[dtype] = 2 * PEAK_SIZE**3 / best / 1e9
    return {"gflops": rates}


# === Training contenders (TensorFlow) ===


class _StepClock:
    """A Keras callback that stamps the end of every training batch."""

    def __new__(cls):
        import keras

        class StepClock(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.ends = []

                self.cpu_ends = []

            def on_train_begin(self, logs=None):
                self.begin = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                self.ends.append(time.perf_counter())
                self.cpu_ends.append(time.process_time())

        return StepClock()


def _timed(clock, warmup, steps):
    """Wall seconds, process CPU seconds and warm-up seconds of the timed batches."""
    ends = clock.ends
    if len(ends) != warmup + steps:
        raise RuntimeError(f"expected {warmup + steps} batches, timed {len(ends)}")
    return {
        "seconds": ends[-1] - ends[warmup - 1],
        "cpu_seconds": clock.cpu_ends[-1] - clock.cpu_ends[warmup - 1],
        "warmup_seconds": ends[warmup - 1] - clock.begin,
    }


def train_kerasbert(
    args,
    bucket_window=0,
    jit_compile="auto",
    inter_op="auto",
    pad_multiple=None,
    mixed_precision="auto",
):
    """`pad_multiple=None` rounds batch widths as `kerasbert.train` would here."""
    import numpy as np
    import tensorflow as tf

    from kerasbert.config_loading import load_config
    from kerasbert.data.pipeline import make_training_dataset
    from kerasbert.training import fit as training

    # The variants are the config keys a user would set.
    overrides = [
        f"training.bucket_window={bucket_window}",
        f"runtime.jit_compile={json.dumps(jit_compile)}",
        f"runtime.inter_op_threads={inter_op}",
        f"runtime.mixed_precision={mixed_precision}",
    ]
    config = load_config(args.config, overrides=overrides)
    started = time.perf_counter()
    prepared = training.prepare(config)
    prepare_seconds = time.perf_counter() - started
    training.compile_for_stage(prepared, config.training, "all")
    model = prepared.classifier
    total = args.warmup + args.steps
    data = make_training_dataset(
        prepared.features["train"],
        prepared.labels("train"),
        args.batch_size,
        seed=SEED,
        epochs=1,
        bucket_window=config.training.bucket_window,
        pad_multiple=prepared.runtime.pad_multiple if pad_multiple is None else pad_multiple,
    ).take(total)
    widths = [int(batch[0]["token_ids"].shape[1]) for batch in data]
    real = [int(np.sum(batch[0]["padding_mask"])) for batch in data]
    # One batch of every width first, so that tracing (and XLA's compile per
    # shape) is done before the clock runs, for every variant alike.
    firsts = tf.constant(
        sorted({w: i for i, w in reversed(list(enumerate(widths)))}.values()), tf.int64
    )
    prepass = (
        data.enumerate()
        .filter(lambda i, batch: tf.reduce_any(tf.equal(i, firsts)))
        .map(lambda i, batch: batch)
    )
    started = time.perf_counter()
    model.fit(prepass, epochs=1, verbose=0)
    compile_seconds = time.perf_counter() - started
    clock = _StepClock()
    model.fit(data, epochs=1, verbose=0, callbacks=[clock])
    return {
        **_timed(clock, args.warmup, args.steps),
        "widths": widths[args.warmup :],
        "real_tokens": sum(real[args.warmup :]),
        "params": model.count_params(),
        "nonembedding_params": _nonembedding_params(model.backbone, model.count_params()),
        "prepare_seconds": prepare_seconds,
        "prepass_seconds": compile_seconds,
        "prepass_widths": len(firsts),
        "threads": _tf_threads(),
        "jit_compile": bool(model.jit_compile),
        "dtype_policy": prepared.runtime.dtype_policy,
        "pad_multiple": prepared.runtime.pad_multiple if pad_multiple is None else pad_multiple,
    }


def train_keras_hub(args, sequence_length=None):
    import keras_hub
    import numpy as np
    import tensorflow as tf

    inputs = _inputs(args)
    order = inputs["orders"]["random"][: (args.warmup + args.steps) * args.batch_size]
    texts = [inputs["train_texts"][i] for i in order]
    labels = np.asarray([inputs["train_label_ids"][i] for i in order], "int64")
    kwargs = {}
    if sequence_length is not None:
        kwargs["preprocessor"] = keras_hub.models.TextClassifierPreprocessor.from_preset(
            inputs["model_dir"], sequence_length=sequence_length
        )
    classifier = keras_hub.models.TextClassifier.from_preset(
        inputs["model_dir"], num_classes=2, **kwargs
    )
    width = classifier.preprocessor.sequence_length
    data = tf.data.Dataset.from_tensor_slices((texts, labels)).batch(args.batch_size)
    clock = _StepClock()
    classifier.fit(data, epochs=1, verbose=0, callbacks=[clock])
    # keras-hub pads every text to `sequence_length`; count the real tokens with its preprocessor.
    measured = texts[args.warmup * args.batch_size :]
    mask = classifier.preprocessor(tf.constant(measured))["padding_mask"]
    return {
        **_timed(clock, args.warmup, args.steps),
        "widths": [width] * args.steps,
        "real_tokens": int(np.sum(mask)),
        "params": classifier.count_params(),
        "nonembedding_params": _nonembedding_params(classifier.backbone, classifier.count_params()),
        "optimizer": type(classifier.optimizer).__name__,
        "threads": _tf_threads(),
        "jit_compile": bool(classifier.jit_compile),
    }


def _nonembedding_params(backbone, total):
    """Parameters that multiply activations: all but the embedding tables."""
    tables = ("token_embedding", "position_embedding", "segment_embedding")
    return total - sum(backbone.get_layer(name).count_params() for name in tables)


def _tf_threads():
    import tensorflow as tf

    return {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }


# === Inference (SavedModel) ===


def infer_savedmodel(args, name="kerasbert", threads=None, loader="session"):
    """`serving_default` of the export, loaded as TF Serving loads it.

    `loader="session"` is kerasbert's `SavedModelBundle` (a TF1 Session on
    the MetaGraph, run by tensor names: TF Serving's path, and what
    `kerasbert.serve`, `evaluate` and `predict` use); `"tf2"` is
    `tf.saved_model.load`, for comparison.
    """
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  registers the tokenizer's ops

    inputs = _inputs(args)
    path = args.out / "saved_models" / name / "1"
    if loader == "session":
        run = session_runner(path, threads)
    else:
        if threads is not None:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]

        def run(batch):
            return serve(text=tf.constant(batch))["probabilities"].numpy()

    return time_inference(run, inputs["test_texts"], args)


def session_runner(path, threads=None):
    """Texts to probabilities through an export's `serving_default`, loaded by `SavedModelBundle`."""
    import numpy as np
    import tensorflow_text  # noqa: F401  registers the tokenizer's ops

    from kerasbert.serving.saved_model_bundle import SavedModelBundle

    bundle = SavedModelBundle(path, intra_op_threads=threads or 0)

    def run(batch):
        return bundle.run("serving_default", {"text": np.array(batch, dtype=object)})[
            "probabilities"
        ]

    return run


def time_inference(run, texts, args, batch_sizes=(32, 1)):
    """Texts/s at batch 32 over the test split and at batch 1 over its first texts.

    Shared with `hf_torch.py`, which imports this module for it (only the
    standard library is imported at this module's top).
    """
    results = {}
    for batch_size in batch_sizes:
        count = args.single_requests if batch_size == 1 else len(texts)
        batches = [texts[i : i + batch_size] for i in range(0, count, batch_size)]
        for batch in batches[: args.warmup]:
            run(batch)
        started, cpu_started = time.perf_counter(), time.process_time()
        for batch in batches:
            run(batch)
        seconds = time.perf_counter() - started
        results[f"batch_{batch_size}"] = {
            "texts": count,
            "seconds": seconds,
            "cpu_seconds": time.process_time() - cpu_started,
            "texts_per_s": count / seconds,
        }
    return results


def _inputs(args):
    return json.loads((args.out / "inputs.json").read_text(encoding="utf-8"))


# === Orchestration ===


def run_worker(args, name):
    """Runs one contender in a fresh process; returns its JSON result."""
    hf = name.startswith("hf-torch") or name.startswith("infer:hf-torch")
    if hf:
        command = [str(TORCH_PYTHON), str(HERE / "hf_torch.py")]
        if name.startswith("infer:"):
            command += ["--infer"]
        else:
            command += ["--order", TRAIN_CONTENDERS[name]["order"]]
        if name.endswith("+1thread"):
            command += ["--threads", "1"]
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", name]
    command += [
        "--out",
        str(args.out),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--batch-size",
        str(args.batch_size),
        "--single-requests",
        str(args.single_requests),
    ]
    if not hf:
        command += ["--config", str(args.config)]
    started = time.perf_counter()
    load_before = os.getloadavg()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    log = args.out / "logs" / (name.replace("/", "_").replace(":", "_") + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    result_lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not result_lines:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"{name} failed (exit {done.returncode}); see {log}:\n{tail}")
    result = json.loads(result_lines[-1][len("RESULT ") :])
    result["wall_seconds"] = time.perf_counter() - started
    result["load_before"] = load_before
    result["load_after"] = os.getloadavg()
    return result


def worker(args):
    name = args.worker
    if name == "setup":
        result = setup(args)
    elif name == "peak":
        result = measure_peak()
    elif name.startswith("infer:"):
        model, _, variant = name.split(":", 1)[1].partition("+")
        loader = "tf2" if model.endswith("-tf2load") else "session"
        model = model.removesuffix("-tf2load")
        result = infer_savedmodel(
            args, model, threads=1 if variant == "1thread" else None, loader=loader
        )
    else:
        spec = dict(TRAIN_CONTENDERS[name])
        kind = spec.pop("kind")
        result = (train_kerasbert if kind == "kerasbert" else train_keras_hub)(args, **spec)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, default=CONFIG, help="the benchmark config (data, model)"
    )
    parser.add_argument(
        "--out", type=Path, default=OUT_DIR, help="where inputs, exports and results go"
    )
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per contender")
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed steps (or inference batches) first"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--single-requests", type=int, default=200, help="batch-1 requests timed")
    parser.add_argument("--only", default=None, help="comma-separated contenders (default: all)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the contenders this many times, in turn, and keep each one's best",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.worker:
        return worker(args)

    names = ["setup", "peak", *TRAIN_CONTENDERS, *INFER_CONTENDERS]
    if args.only:
        wanted = args.only.split(",")
        names = [n for n in names if n in wanted]
        if set(wanted) - set(names):
            parser.error(f"--only: unknown contenders {sorted(set(wanted) - set(names))}")
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() and args.only else {}
    results["machine"] = machine_info()
    results["started"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    results["settings"] = {
        "steps": args.steps,
        "warmup": args.warmup,
        "batch_size": args.batch_size,
        "single_requests": args.single_requests,
    }
    contenders = results.setdefault("contenders", {})
    if "setup" in names:
        print(f"[{time.strftime('%H:%M:%S')}] setup (load {os.getloadavg()[0]:.2f})", flush=True)
        contenders["setup"] = run_worker(args, "setup")
    runs = {name: [] for name in names if name != "setup"}
    # In turn rather than one contender's repeats back to back, so that a
    # spell of load from other jobs falls on every contender alike.
    for _ in range(args.repeat):
        for name in runs:
            print(
                f"[{time.strftime('%H:%M:%S')}] {name} (load {os.getloadavg()[0]:.2f})", flush=True
            )
            runs[name].append(run_worker(args, name))
            contenders[name] = best_of(runs[name])
            results_path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    results_path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(report(results))
    return 0


# === Report ===


def best_of(runs) -> dict:
    """The fastest of a contender's runs (for inference, per batch size), all runs kept.

    The best, as `timeit` reports its minimum: on a shared machine every run
    is slowed by other jobs by some amount, never sped up.
    """
    if "batch_32" in runs[0]:
        best = dict(runs[0])
        for key in ("batch_32", "batch_1"):
            best[key] = max((run[key] for run in runs), key=lambda r: r["texts_per_s"])
    elif "gflops" in runs[0]:
        best = {"gflops": {d: max(run["gflops"][d] for run in runs) for d in runs[0]["gflops"]}}
    else:
        best = dict(min(runs, key=lambda run: run["seconds"]))
    best["runs"] = [{k: v for k, v in run.items() if k != "runs"} for run in runs]
    return best


def machine_info():
    """The CPU, cores, memory and load, from lscpu and /proc."""
    info = {}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "CPU family", "Model", "Thread(s) per core"):
                info[key.strip()] = value.strip()
        flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0]
        info["avx512f"] = " avx512f " in flags + " "
        mhz = [
            float(line.split(":")[1])
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("cpu MHz")
        ]
        info["cpu_mhz"] = mhz[0] if mhz else None
        meminfo = Path("/proc/meminfo").read_text().splitlines()[0]
        info["mem_total_gib"] = round(int(meminfo.split()[1]) / 2**20, 1)
    except (OSError, IndexError, ValueError):
        pass
    info["loadavg"] = os.getloadavg()
    return info


def peak_flops(machine, flops_per_cycle=32):
    """FP32 peak: cores x clock x FLOPs/cycle.

    32 FP32 FLOPs per cycle per core: two 256-bit FMA pipes (Zen 4 runs
    AVX-512 instructions as two 256-bit halves), 8 lanes x 2 FLOPs each.
    """
    cores = int(machine.get("CPU(s)", os.cpu_count() or 1))
    return cores * (machine.get("cpu_mhz") or 0) * 1e6 * flops_per_cycle


def train_flops(result, batch_size, layers=6, hidden=384):
    """FLOPs of the timed steps: 6 x non-embedding params x tokens + attention.

    Attention scores and their weighted sum add 4 x T^2 x hidden per layer
    and sequence going forward; training is three times forward.
    """
    params = result["nonembedding_params"]
    tokens = sum(batch_size * w for w in result["widths"])
    attention = sum(12 * layers * batch_size * w * w * hidden for w in result["widths"])
    return 6 * params * tokens + attention, tokens


def report(results) -> str:
    settings = results["settings"]
    batch = settings["batch_size"]
    steps = settings["steps"]
    machine = results["machine"]
    cores = int(machine.get("CPU(s)", 1))
    contenders = results["contenders"]
    measured = contenders.get("peak", {}).get("gflops")
    # A row's peak: the measured matmul rate in its compute dtype, else
    # the assumed FP32 peak.
    peaks = (
        {dtype: 1e9 * rate for dtype, rate in measured.items()}
        if measured
        else {"float32": peak_flops(machine)}
    )
    described = (
        f"measured peak (a {PEAK_SIZE}^3 matmul, best of its runs): "
        + ", ".join(f"{dtype} {rate:.0f} GFLOP/s" for dtype, rate in measured.items())
        if measured
        else f"peak FP32 assumed {peaks['float32'] / 1e9:.0f} GFLOP/s"
    )
    lines = [
        f"Training, batch {batch}, {steps} timed steps after {settings['warmup']} warm-up steps; "
        f"{described}; % of peak divides by the peak of the row's compute dtype:",
        "",
        "| contender | samples/s | vs keras-hub/default | vs hf-torch/random | vs hf-torch/bucketed "
        "| s/step | CPU s/step | mean width | tokens (real) | GFLOP/step | % of peak (wall) "
        "| % of peak per CPU-s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rate = {
        n: steps * batch / contenders[n]["seconds"] for n in TRAIN_CONTENDERS if n in contenders
    }
    for name in TRAIN_CONTENDERS:
        if name not in contenders:
            continue
        r = contenders[name]
        flops, tokens = train_flops(r, batch)
        vs_hub = (
            f"{rate[name] / rate['keras-hub/default']:.2f}x" if "keras-hub/default" in rate else "-"
        )
        vs_hf = {
            order: f"{rate[name] / rate[f'hf-torch/{order}']:.2f}x"
            if f"hf-torch/{order}" in rate
            else "-"
            for order in ("random", "bucketed")
        }
        dtype = "bfloat16" if r.get("dtype_policy") == "mixed_bfloat16" else "float32"
        peak = peaks.get(dtype)
        wall_share = flops / r["seconds"] / peak if peak else float("nan")
        cpu_share = flops / r["cpu_seconds"] / (peak / cores) if peak else float("nan")
        lines.append(
            f"| {name} | {rate[name]:.1f} | {vs_hub} | {vs_hf['random']} | {vs_hf['bucketed']} "
            f"| {r['seconds'] / steps:.2f} "
            f"| {r['cpu_seconds'] / steps:.2f} | {sum(r['widths']) / len(r['widths']):.1f} "
            f"| {tokens} ({r['real_tokens']}) | {flops / steps / 1e9:.0f} | {100 * wall_share:.1f}% | {100 * cpu_share:.1f}% |"
        )
    lines += [
        "",
        "Inference, texts/s, tokenization included (batch 32: the whole test split; batch 1: the first "
        f"{settings['single_requests']} test texts one at a time):",
        "",
        "| contender | batch 32 | batch 1 | batch 32 vs HF | batch 1 vs HF | CPU s per text (b32 / b1) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    hf = contenders.get("infer:hf-torch")
    for name in INFER_CONTENDERS:
        if name not in contenders:
            continue
        r = contenders[name]
        b32, b1 = r["batch_32"], r["batch_1"]
        vs32 = f"{b32['texts_per_s'] / hf['batch_32']['texts_per_s']:.2f}x" if hf else "-"
        vs1 = f"{b1['texts_per_s'] / hf['batch_1']['texts_per_s']:.2f}x" if hf else "-"
        cpu = f"{1000 * b32['cpu_seconds'] / b32['texts']:.1f} ms / {1000 * b1['cpu_seconds'] / b1['texts']:.1f} ms"
        lines.append(
            f"| {name.split(':', 1)[1]} | {b32['texts_per_s']:.1f} | {b1['texts_per_s']:.1f} | {vs32} | {vs1} | {cpu} |"
        )
    lines += [
        "",
        "Load average (1 min) before each contender: "
        + ", ".join(
            f"{n} {contenders[n]['load_before'][0]:.1f}"
            for n in contenders
            if "load_before" in contenders[n]
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
