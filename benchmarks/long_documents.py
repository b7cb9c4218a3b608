"""The long-document table: truncation, sliding windows and Hugging Face's windowed recipe.

The documents (`benchmarks/cache/rotten_tomatoes_long.csv`, written by
`fetch_assets.build_long_documents`) are 200 to 1,500 MiniLM tokens of
neutral plot synopses with one fresh or rotten snippet at a random
position, labelled by that snippet; stratified 70/15/15 with `data.seed: 0`.
Every row reads them through the same 128 tokens at a time:

    head, tail, head_tail  `python -m kerasbert.train --config
                           benchmarks/configs/long_documents.yaml --set
                           model.truncation=X`: the first, the last, or the first
                           `head_tokens` and the last of the rest
    windows, windows_mean  the same config with `model.long_text`: up to 16 windows
                           of 126 tokens, 94 apart (overlapping by 32, as the
                           Hugging Face row's), attention- or mean-pooled
    hf_windows             Hugging Face's usual recipe (`hf_finetune.py --stride`):
                           windows overlapping by `--stride` tokens from the
                           tokenizer (`return_overflowing_tokens`), each labelled
                           with its document's label, `transformers.Trainer` for
                           one epoch on as many windows, drawn at random, as there
                           are training documents; a document's prediction is the
                           mean of its windows' probabilities
    snippet_X              with `--snippet-run RUN_DIR` (a finished run of
                           `configs/progressive.yaml` on the short snippets): that
                           model exported with each truncation, or wrapped in
                           mean- or max-pooled windows, not trained on the
                           documents: what each strategy lets it see
    tuned_X                with `--snippet-run RUN_DIR --tuned`: that model
                           fine-tuned on the documents with strategy X (`TUNING`:
                           one epoch of its top two layers, head and pooling)

Each kerasbert row is then timed on its export, in a fresh process, as TF
Serving runs it (`SavedModelBundle`, tokenizer in the graph), at batch 32
over the test documents; the Hugging Face row is timed on its test pass.
Every row also gives its test accuracy by where the opinion lies: wholly in
the first 126 tokens (what `head` reads), wholly in the last 126 (`tail`),
or in neither.

Run from the repository root after `python benchmarks/fetch_assets.py`:

    nice -n 19 .venv/bin/python benchmarks/long_documents.py --snippet-run RUN_DIR --tuned

Writes `benchmarks/cache/long_documents/results.json` (after every row) and
prints a Markdown table. `--only tail,hf_windows` runs some rows (they may
run in parallel: each write reads results.json afresh); `--reuse
head=RUN_DIR:MINUTES` takes a row from a finished run; `--no-timing` and
`--time-only` split training from timing, so that the exports are timed
one after another under like load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import accuracy
import numpy as np
import speed

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT_DIR = HERE / "cache" / "long_documents"
RESULTS = OUT_DIR / "results.json"
CONFIG = HERE / "configs" / "long_documents.yaml"
OVERLAP = 32  # tokens shared by neighbouring windows, Hugging Face's `stride`
WINDOW = 126  # tokens of text per window: 128 with the two special tokens
STRIDE = WINDOW - OVERLAP  # kerasbert's `long_text.stride`: from one window's start to the next's
WINDOWS = 16  # enough windows of 126 tokens, 94 apart, for 1,500 tokens
HF_EPOCHS = 1
WINDOW_KEYS = [f"model.long_text.windows={WINDOWS}", f"model.long_text.stride={STRIDE}"]
STRATEGIES = {
    "head": ["model.truncation=head"],
    "tail": ["model.truncation=tail"],
    "head_tail": ["model.truncation=head_tail"],
    "windows": [*WINDOW_KEYS, "model.long_text.pooling=attention"],
    "windows_mean": [*WINDOW_KEYS, "model.long_text.pooling=mean"],
}
# The snippet model fine-tuned on the documents: one epoch of its top two
# layers, head and pooling, at a lower peak than from the pretrained weights.
TUNING = [
    "training.epochs=1",
    "training.unfreezing=[{epochs: 1, trainable_layers: 2}]",
    "training.schedule.maximal_learning_rate=0.0003",
]
DESCRIPTIONS = {
    "head": "kerasbert `truncation: head`: the first 126 tokens",
    "tail": "kerasbert `truncation: tail`: the last 126 tokens",
    "head_tail": "kerasbert `truncation: head_tail`: the first `head_tokens`, then the last of the rest",
    "windows": f"kerasbert `long_text`: up to {WINDOWS} windows overlapping by {OVERLAP}, attention-pooled",
    "windows_mean": f"kerasbert `long_text`: up to {WINDOWS} windows overlapping by {OVERLAP}, mean-pooled",
    "windows_max": f"kerasbert `long_text`: up to {WINDOWS} windows overlapping by {OVERLAP}, max-pooled",
    "hf_windows": f"Hugging Face: `stride={OVERLAP}`, `return_overflowing_tokens`, Trainer on windows, window probabilities averaged",
}
# Rows of the snippet model read through sliding windows, untrained on the documents.
SNIPPET_WINDOWS = {"windows_mean": "mean", "windows_max": "max"}


def windows_supported() -> bool:
    """Whether this kerasbert has `model.long_text` (sliding windows)."""
    from kerasbert.config import ModelConfig

    return "long_text" in ModelConfig.model_fields


def kerasbert_row(name, run_dir=None, seconds=None) -> dict:
    """Trains one strategy (or reads a finished run) and scores its test predictions."""
    run = {
        "command": f"python -m kerasbert.train --config {CONFIG.relative_to(REPO)}",
        "load_before": os.getloadavg(),
    }
    if run_dir is None:
        overrides = [f"name=rt_long_{name}", *STRATEGIES[name]]
        run = accuracy.train_config(CONFIG, overrides, 0, OUT_DIR / "logs" / f"{name}.log")
        if "error_after_scoring" in run:
            raise RuntimeError(f"{run['command']} failed after scoring; see {OUT_DIR / 'logs'}")
        run_dir, seconds = run["run_dir"], run["seconds"]
    run_dir = REPO / run_dir  # as given: benchmarks/cache may be a link
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    predictions = _read_csv(run_dir / "test_predictions.csv")
    return {
        "recipe": DESCRIPTIONS[name],
        "command": run["command"],
        "test_accuracy": metrics["test"]["accuracy"],
        "validation_accuracy": metrics["validation"]["accuracy"],
        "by_position": accuracy_by_position(
            predictions["text"].tolist(), predictions["predicted_label"].tolist()
        ),
        "seconds": seconds,
        "run_dir": str(run_dir.relative_to(REPO)),
        "export": status["export"],
        "load_before": run["load_before"],
        "load_after": run.get("load_after", os.getloadavg()),
    }


def hf_row() -> dict:
    """Hugging Face's windowed recipe on the same split, timed on its test pass."""
    config, splits = accuracy.load_benchmark_splits(CONFIG)
    split_path = accuracy.write_split(config, splits, OUT_DIR / "split.json")
    # As many training windows as the kerasbert rows see documents per epoch.
    windows = ["--stride", str(OVERLAP), "--train-windows", str(len(splits.train))]
    result = accuracy.run_hf_finetune(
        split_path,
        OUT_DIR / "logs" / "hf_windows.log",
        extra_args=[*windows, "--epochs", str(HF_EPOCHS)],
    )
    predicted = [splits.labels[i] for i in result.pop("test_predictions")]
    texts = splits.test[config.data.text_column].tolist()
    return {
        "recipe": DESCRIPTIONS["hf_windows"],
        "by_position": accuracy_by_position(texts, predicted),
        **result,
    }


def _read_csv(path):
    import pandas as pd

    return pd.read_csv(path, keep_default_na=False)


def accuracy_by_position(texts, predicted, sequence_length=128) -> dict:
    """Accuracy over the documents whose opinion lies wholly in the first, the last
    `sequence_length - 2` tokens, or in neither (`middle`), with their counts."""
    documents = _read_csv(documents_path()).set_index("text").loc[texts]
    window = sequence_length - 2
    end = documents["opinion_start"] + documents["opinion_tokens"]
    first = (end <= window).to_numpy()
    last = (documents["opinion_start"] >= documents["tokens"] - window).to_numpy()
    right = documents["label"].to_numpy() == np.asarray(predicted)
    return {
        name: {"documents": int(mask.sum()), "accuracy": float(right[mask].mean())}
        for name, mask in (("first", first), ("last", last), ("middle", ~first & ~last))
    }


def documents_path() -> Path:
    """The documents' CSV, as the benchmark config names it."""
    import yaml

    return REPO / yaml.safe_load(CONFIG.read_text(encoding="utf-8"))["data"]["path"]


def time_export(export, warmup=1) -> dict:
    """Texts/s of an export at batch 32 over the test documents, in a fresh process."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        str(export),
        "--warmup",
        str(warmup),
    ]
    done, _ = accuracy.run_logged(
        command, OUT_DIR / "logs" / f"infer-{Path(export).parent.name}.log"
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"timing {export} failed (exit {done.returncode}); see {OUT_DIR}/logs")
    return json.loads(lines[-1][len("RESULT ") :])


def worker(export, warmup) -> int:
    _, splits = accuracy.load_benchmark_splits(CONFIG)
    run = speed.session_runner(REPO / export)
    outputs = []

    def kept(batch):
        outputs.append(run(batch))
        return outputs[-1]

    timing = speed.time_inference(
        run=kept,
        texts=splits.test["text"].tolist(),
        args=argparse.Namespace(warmup=warmup),
        batch_sizes=(32,),
    )
    probabilities = np.concatenate(outputs[warmup:])
    timing["batch_32"]["predicted"] = [splits.labels[i] for i in probabilities.argmax(axis=1)]
    print("RESULT " + json.dumps(timing["batch_32"]), flush=True)
    return 0


def snippet_row(name, snippet_run, warmup) -> dict:
    """The snippet classifier reading the long documents through one strategy, untrained on them.

    `snippet_run` is a finished `kerasbert.train` run on the short snippets
    (`configs/progressive.yaml`). Its classifier is exported with the
    long-document config's 128 tokens and `name`'s truncation, or wrapped
    in a `WindowedClassifier` with `name`'s pooling (`SNIPPET_WINDOWS`), and
    the export scores and times the test documents.
    """
    from kerasbert.exporting.exporter import export_model
    from kerasbert.models.classifier import load_run_model
    from kerasbert.models.windows import WindowedClassifier

    exports = OUT_DIR / "saved_models"
    target = exports / f"snippet_{name}" / "1"
    if not target.exists():
        classifier, tokenizer = load_run_model(REPO / snippet_run)
        labels = json.loads((REPO / snippet_run / "labels.json").read_text(encoding="utf-8"))
        encoding = {"truncation": name}
        if name in SNIPPET_WINDOWS:
            classifier = WindowedClassifier(classifier, pooling=SNIPPET_WINDOWS[name])
            encoding = {"windows": WINDOWS, "stride": STRIDE}
        export_model(
            classifier, tokenizer, 128, labels["labels"], exports, f"snippet_{name}", 1, **encoding
        )
    timing = time_export(target.relative_to(REPO), warmup)
    _, splits = accuracy.load_benchmark_splits(CONFIG)
    predicted = timing.pop("predicted")
    return {
        "recipe": DESCRIPTIONS[name].replace("kerasbert", "snippet model,", 1),
        "command": f"snippet run {snippet_run}",
        "test_accuracy": float(np.mean(np.asarray(predicted) == splits.test["label"].to_numpy())),
        "by_position": accuracy_by_position(splits.test["text"].tolist(), predicted),
        "seconds": None,
        "batch_32": timing,
    }


def tuned_row(name, snippet_run, resume=None) -> dict:
    """The snippet classifier fine-tuned on the documents with strategy `name` (`TUNING`).

    `resume`: a run of this row that was killed, finished from its last epoch.
    """
    command = [sys.executable, str(Path(__file__).resolve()), "--tune-worker", name]
    command += ["--snippet-run", snippet_run]
    if resume is not None:
        command += ["--resume-run", resume]
    load_before = os.getloadavg()
    started = time.perf_counter()
    done, _ = accuracy.run_logged(command, OUT_DIR / "logs" / f"tuned_{name}.log")
    lines = [line for line in done.stdout.splitlines() if line.startswith("RUN_DIR ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"tuning {name} failed (exit {done.returncode}); see {OUT_DIR}/logs")
    # Relative to the repository, as the config's `runs_dir` is.
    run_dir = Path(lines[-1][len("RUN_DIR ") :])
    row = kerasbert_row(name, run_dir, time.perf_counter() - started)
    row.update(
        recipe=DESCRIPTIONS[name].replace("kerasbert", "snippet model fine-tuned,", 1),
        command=f"long_documents.py --tune-worker {name} --snippet-run {snippet_run}",
        load_before=load_before,
    )
    return row


def tune_worker(name, snippet_run, resume=None) -> int:
    """Fine-tunes the snippet run's classifier on the documents, reading them as `name` says."""
    from kerasbert.config_loading import load_config
    from kerasbert.models.classifier import load_run_model
    from kerasbert.models.windows import WindowedClassifier
    from kerasbert.training.fit import prepare
    from kerasbert.training.run import train

    config = load_config(CONFIG, [f"name=rt_long_tuned_{name}", *STRATEGIES[name], *TUNING])
    source = REPO / snippet_run

    def snippet_model(splits, dtype):
        labels = json.loads((source / "labels.json").read_text(encoding="utf-8"))["labels"]
        if labels != list(splits.labels):
            raise ValueError(f"the snippet run's labels {labels} are not {splits.labels}")
        classifier, tokenizer = load_run_model(source)
        if config.model.long_text is not None:
            classifier = WindowedClassifier(classifier, pooling=config.model.long_text.pooling)
        return classifier, tokenizer

    # --resume-run: a tuning run killed after its training, finished here.
    prepared = prepare(config, build_model=snippet_model)
    result = train(config, resume_dir=resume, prepared=prepared)
    print(f"RUN_DIR {result.run_dir}", flush=True)
    return 0


def report(results) -> str:
    lines = [
        "| strategy | test acc. | opinion in the first 126 | in the last 126 | in neither "
        "| val. acc. | texts/s (batch 32) | training wall time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"].values():
        if "pending" in row:
            lines.append(f"| {row['recipe']} | {row['pending']} | | | | | | |")
            continue
        where = row["by_position"]
        cells = [
            f"{100 * where[part]['accuracy']:.1f}% ({where[part]['documents']})"
            for part in ("first", "last", "middle")
        ]
        validation = row.get("validation_accuracy")
        validation = f"{100 * validation:.1f}%" if validation is not None else "-"
        rate = f"{row['batch_32']['texts_per_s']:.1f}" if "batch_32" in row else "-"
        seconds = row.get("train_seconds", row["seconds"])
        minutes = f"{seconds / 60:.1f} min" if seconds is not None else "-"
        lines.append(
            f"| {row['recipe']} | **{100 * row['test_accuracy']:.1f}%** | {' | '.join(cells)} "
            f"| {validation} | {rate} | {minutes} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated rows")
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="ROW=RUN_DIR:MINUTES",
        help="take a kerasbert row from a finished run directory instead of training again",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed inference batches first")
    parser.add_argument("--no-timing", action="store_true", help="train and score only")
    parser.add_argument(
        "--time-only", action="store_true", help="only time the exports of rows already run"
    )
    parser.add_argument(
        "--snippet-run",
        default=None,
        metavar="RUN_DIR",
        help="also score this snippet model (a progressive.yaml run) through each truncation",
    )
    parser.add_argument(
        "--tuned",
        action="store_true",
        help="with --snippet-run: also fine-tune the snippet model on the documents, each strategy",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tune-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--resume-run",
        default=None,
        metavar="RUN_DIR",
        help="with --tuned and one row in --only: finish that row's killed tuning run",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.worker:
        return worker(args.worker, args.warmup)
    if args.tune_worker:
        return tune_worker(args.tune_worker, args.snippet_run, args.resume_run)
    names = [*STRATEGIES, "hf_windows"]
    if args.only:
        unknown = set(args.only.split(",")) - set(names)
        if unknown:
            parser.error(f"--only: unknown rows {sorted(unknown)}; choose from {', '.join(names)}")
        names = args.only.split(",")
    reuse = {}
    for item in args.reuse:
        row, _, rest = item.partition("=")
        run_dir, _, minutes = rest.rpartition(":")
        reuse[row] = (run_dir, 60 * float(minutes))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    if not args.only and RESULTS.exists():
        RESULTS.unlink()
    save(machine=speed.machine_info())
    if not args.time_only:
        for name in names:
            print(
                f"[{time.strftime('%H:%M:%S')}] {name} (load {os.getloadavg()[0]:.2f})", flush=True
            )
            if name == "hf_windows":
                row = hf_row()
            elif name == "windows" and not windows_supported():
                row = {
                    "recipe": DESCRIPTIONS[name],
                    "pending": "pending: no `model.long_text` here",
                }
            else:
                row = kerasbert_row(name, *reuse.get(name, ()))
            save(row=(name, row))
            if "test_accuracy" in row:
                print(f"  test accuracy {100 * row['test_accuracy']:.1f}%", flush=True)
    # The exports one after another, once every row has trained, so that
    # their texts/s are measured under like load.
    rows = json.loads(RESULTS.read_text(encoding="utf-8"))["rows"]
    # With --time-only, the tuned rows' exports too (`--tuned` times its own).
    tuned = [f"tuned_{n}" for n in names] if args.time_only and not args.tuned else []
    for name in [*names, *tuned] if not args.no_timing else ():
        if "export" in rows.get(name, {}):
            print(f"[{time.strftime('%H:%M:%S')}] timing {name} (load {os.getloadavg()[0]:.2f})")
            timing = time_export(rows[name]["export"], args.warmup)
            timing.pop("predicted")
            row = dict(rows[name], batch_32=timing)
            save(row=(name, row))
    snippet_names = [n for n in names if n in ("head", "tail", "head_tail")]
    if "windows" in names:
        snippet_names += list(SNIPPET_WINDOWS)
    for name in snippet_names if args.snippet_run else ():
        print(
            f"[{time.strftime('%H:%M:%S')}] snippet model, {name} (load {os.getloadavg()[0]:.2f})"
        )
        save(row=(f"snippet_{name}", snippet_row(name, args.snippet_run, args.warmup)))
    for name in names if args.snippet_run and args.tuned else ():
        if name in STRATEGIES:
            print(f"[{time.strftime('%H:%M:%S')}] tuned {name} (load {os.getloadavg()[0]:.2f})")
            row = tuned_row(name, args.snippet_run, args.resume_run)
            if not args.no_timing:
                timing = time_export(row["export"], args.warmup)
                timing.pop("predicted")
                row["batch_32"] = timing
            save(row=(f"tuned_{name}", row))
    print(report(json.loads(RESULTS.read_text(encoding="utf-8"))))
    return 0


def save(machine=None, row=None):
    """Adds a row (or the machine) to results.json, read afresh: rows may run in parallel."""
    results = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    results.setdefault("rows", {})
    if machine is not None:
        results["machine"] = machine
    if row is not None:
        name, values = row
        results["rows"][name] = {**values, "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    RESULTS.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
