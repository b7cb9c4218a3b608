"""The accuracy table: TF-IDF + logistic regression, four kerasbert recipes, and HF's Trainer.

Every row is scored on the same test split (stratified 80/10/10 of the
fresh/rotten snippets, `data.seed: 0`). The fine-tuning rows are plain
`python -m kerasbert.train --config benchmarks/configs/X.yaml` runs, each in
its own process, once per `--seeds` seed (the run's `seed`: initial head
weights, dropout and batch order; the split stays the same); the epoch each
config's `checkpoint_monitor` picks is the one scored on test. The `hf_trainer`
row fine-tunes the same weights on the same split with `transformers.Trainer`'s
defaults (`hf_finetune.py`, in the torch venv), as a reference for what the
model reaches outside kerasbert.

Run from the repository root after `python benchmarks/fetch_assets.py`:

    nice -n 19 .venv/bin/python benchmarks/accuracy.py

Writes `benchmarks/cache/accuracy/results.json` (updated after every row)
and prints a Markdown table. `--only progressive,head_only` runs some rows, in that order;
`--set training.epochs=2` is passed to every kerasbert run; `--seeds 0,1,2`
runs every fine-tuning row three times and reports the mean and the spread.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT_DIR = HERE / "cache" / "accuracy"
TORCH_PYTHON = HERE / "cache" / "torch-venv" / "bin" / "python"
HF_RECIPE = "Hugging Face `transformers.Trainer` defaults (PyTorch): everything trainable, linear decay from 5e-5, pooled [CLS]"
RECIPES = {
    "head_only": "head only (pooler + output layer), one-cycle",
    "last2": "top 2 layers + head, one-cycle",
    "progressive": "progressive unfreezing 0 -> 2 -> all, one-cycle per stage, peaks 2e-3 / 3e-4 / 1e-4, mean pooling",
    "full_constant": "full fine-tuning, constant 5e-5",
}


def tfidf_row(config_path) -> dict:
    """TF-IDF (word 1-2 grams) + logistic regression on the config's split."""
    _, splits = load_benchmark_splits(config_path)
    started = time.perf_counter()
    from kerasbert.training.baseline import DESCRIPTION, evaluate_baseline, joined_texts

    eval_sets = {
        name: (joined_texts(getattr(splits, name)), splits.label_ids(name))
        for name in ("validation", "test")
    }
    scores = evaluate_baseline(
        joined_texts(splits.train), splits.label_ids("train"), eval_sets, splits.labels
    )
    return {
        "recipe": DESCRIPTION,
        "test_accuracy": scores["test"]["accuracy"],
        "validation_accuracy": scores["validation"]["accuracy"],
        "train_rows": len(splits.train),
        "test_rows": len(splits.test),
        "seconds": time.perf_counter() - started,
    }


def load_benchmark_splits(config_path):
    """The config and the splits its `data` section gives, for the config's task."""
    from kerasbert.config_loading import load_config
    from kerasbert.data import splits as data_lib

    config = load_config(config_path)
    return config, data_lib.load_splits(
        config.data, config.model.task, config.model.target_transform
    )


def write_split(config, splits, split_path) -> Path:
    """Writes the texts and label ids of every split as JSON, for `hf_finetune.py`.

    A multi-label text's label ids are its multi-hot row; a regression
    target is the standardised value kerasbert learns (`Splits.label_ids`).
    """
    split_path = Path(split_path)
    split_path.parent.mkdir(parents=True, exist_ok=True)
    split_path.write_text(
        json.dumps(
            {
                "model_dir": str(REPO / config.model.preset),
                "sequence_length": config.model.sequence_length,
                "task": splits.task,
                "labels": splits.labels,
                **{
                    name: {
                        "texts": getattr(splits, name)[config.data.text_column].tolist(),
                        "label_ids": label_ids(splits, name),
                    }
                    for name in ("train", "validation", "test")
                },
            }
        ),
        encoding="utf-8",
    )
    return split_path


def label_ids(splits, name) -> list:
    ids = splits.label_ids(name)
    return ids.ravel().tolist() if splits.task == "regression" else ids.tolist()


def run_logged(command, log) -> tuple[subprocess.CompletedProcess, float]:
    """Runs a command from the repository root, its output into `log`; the result and seconds."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    return done, seconds


def run_hf_finetune(split_path, log_path, seed=0, extra_args=()) -> dict:
    """Runs `hf_finetune.py` in the torch venv once and returns its `RESULT` line, parsed."""
    if not TORCH_PYTHON.exists():
        raise RuntimeError(
            f"{TORCH_PYTHON} is missing: create the torch venv first (benchmarks/README.md, step 2)"
        )
    command = [
        str(TORCH_PYTHON),
        str(HERE / "hf_finetune.py"),
        "--split",
        str(split_path),
        "--seed",
        str(seed),
        *extra_args,
    ]
    load_before = os.getloadavg()
    done, _ = run_logged(command, log_path)
    match = re.search(r"^RESULT (.+)$", done.stdout, re.M)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}); see {log_path}")
    return {
        "command": " ".join(command),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        **json.loads(match.group(1)),
    }


def hf_trainer_row(seed=0) -> dict:
    """Runs `hf_finetune.py` in the torch venv on the benchmark split, once."""
    config, splits = load_benchmark_splits(HERE / "configs" / "progressive.yaml")
    split_path = write_split(config, splits, OUT_DIR / "split.json")
    result = run_hf_finetune(split_path, OUT_DIR / "logs" / f"hf_trainer-seed{seed}.log", seed)
    return {"recipe": HF_RECIPE, "epochs": 3, **result}


def train_config(config, overrides, seed, log_path) -> dict:
    """Runs `python -m kerasbert.train` on one config file, in its own process.

    Returns:
        `{"run_dir", "seconds", "command", "load_before", "load_after"}`, and
        `"error_after_scoring"` for a run that trained and scored but failed
        afterwards (in export, say).

    Raises:
        RuntimeError: the run left no `metrics.json`.
    """
    load_before = os.getloadavg()
    run = run_kerasbert("train", config, [f"seed={seed}", *overrides], log_path)
    run.pop("export_dir")
    error = run.pop("error_after_scoring")
    run.update(load_before=load_before, load_after=os.getloadavg())
    if error:
        run["error_after_scoring"] = error
    return run


def kerasbert_row(name, overrides, seed=0) -> dict:
    """Runs `kerasbert.train` on one benchmark config and reads its metrics."""
    run = train_config(
        HERE / "configs" / f"{name}.yaml",
        overrides,
        seed,
        OUT_DIR / "logs" / f"{name}-seed{seed}.log",
    )
    row = row_from_run(name, run.pop("run_dir"), run.pop("seconds"), run.pop("command"))
    row.update(run)
    return row


def run_kerasbert(module, config, overrides, log) -> dict:
    """Runs `python -m kerasbert.<module> --config CONFIG --set ...` in its own process.

    Args:
        module: `train` or `distill`.
        config: the YAML file.
        overrides: `key=value` strings, each passed as `--set`.
        log: where the run's stdout and stderr are written.

    Returns:
        `run_dir` (under the repository, links kept), `export_dir` (None when nothing was exported),
        `seconds`, the `command`, and `error_after_scoring`: the last line of
        stderr when the run scored (wrote `metrics.json`) but exited with an
        error, else None.

    Raises:
        RuntimeError: the run left no `metrics.json`.
    """
    config = Path(config).resolve()
    command = [
        sys.executable,
        "-m",
        f"kerasbert.{module}",
        "--config",
        str(config.relative_to(REPO)),
    ]
    for override in overrides:
        command += ["--set", override]
    done, seconds = run_logged(command, log)
    match = re.search(r"run directory: (\S+)", done.stderr) or re.search(
        r"^run: (.+)$", done.stdout, re.M
    )
    run_dir = REPO / match.group(1) if match else None
    if run_dir is None or not (run_dir / "metrics.json").exists():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise RuntimeError(
            f"{' '.join(command)} failed (exit {done.returncode}); see {log}:\n{tail}"
        )
    exported = re.search(r"^exported: (.+)$", done.stdout, re.M)
    return {
        "run_dir": run_dir,  # as printed: benchmarks/cache may be a link
        "export_dir": REPO / exported.group(1) if exported else None,
        "seconds": seconds,
        "command": " ".join(command),
        "error_after_scoring": (
            (done.stderr.strip().splitlines() or ["?"])[-1] if done.returncode != 0 else None
        ),
    }


def row_from_run(name, run_dir, seconds, command) -> dict:
    """A table row from a finished run directory's metrics and config."""
    import yaml

    # Absolute but with links kept: benchmarks/cache may be a link out of the repository.
    run_dir = Path(os.path.abspath(run_dir))
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    training = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["training"]
    return {
        "recipe": RECIPES[name],
        "command": command,
        "test_accuracy": metrics["test"]["accuracy"],
        "validation_accuracy": metrics["validation"]["accuracy"],
        "epochs": training["epochs"],
        "stages": training.get("unfreezing"),
        "seconds": seconds,
        "run_dir": str(run_dir.relative_to(REPO)),
        "history": (run_dir / "history.csv").read_text(encoding="utf-8"),
    }


def summarize(runs) -> dict:
    """Mean, sample standard deviation and values of the test accuracy over seeds."""
    import statistics

    tests = [run["test_accuracy"] for run in runs]
    return {
        "seeds": [run.get("seed", 0) for run in runs],
        "test_accuracy": statistics.fmean(tests),
        "test_accuracy_sd": statistics.stdev(tests) if len(tests) > 1 else None,
        "test_accuracies": tests,
        "validation_accuracy": statistics.fmean(run["validation_accuracy"] for run in runs),
        "seconds": statistics.fmean(run["seconds"] for run in runs),
    }


def report(results) -> str:
    lines = [
        "| recipe | epochs | seeds | test accuracy | per seed | validation accuracy | wall time per run |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for row in results["rows"].values():
        summary = summarize(row["runs"]) if "runs" in row else row
        spread = (
            f" ± {100 * summary['test_accuracy_sd']:.1f}" if summary.get("test_accuracy_sd") else ""
        )
        per_seed = ", ".join(f"{100 * value:.1f}" for value in summary.get("test_accuracies", []))
        lines.append(
            f"| {row['recipe']} | {row.get('epochs', '-')} | {len(summary.get('seeds', [])) or '-'} "
            f"| {100 * summary['test_accuracy']:.1f}%{spread} | {per_seed or '-'} "
            f"| {100 * summary['validation_accuracy']:.1f}% | {summary['seconds'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def ensemble_accuracy(config_path, run_dirs) -> dict:
    """Test accuracy of each run and of the mean of their probabilities.

    The runs must share the config's model and split (seeds of one recipe).
    """
    import numpy as np
    from scipy.special import softmax

    from kerasbert.config_loading import load_config
    from kerasbert.training import fit as training

    prepared = training.prepare(load_config(config_path))
    labels = prepared.labels("test")
    probabilities, each = [], {}
    for run_dir in run_dirs:
        prepared.classifier.load_weights(str(Path(run_dir) / "best.weights.h5"))
        logits = prepared.classifier.predict(prepared.dataset("test", 64), verbose=0)
        probabilities.append(softmax(logits, axis=1))
        each[str(run_dir)] = float(np.mean(probabilities[-1].argmax(axis=1) == labels))
    mean = np.mean(probabilities, axis=0)
    return {"runs": each, "ensemble": float(np.mean(mean.argmax(axis=1) == labels))}


def names_in_order() -> list[str]:
    return ["tfidf", *RECIPES, "hf_trainer"]


def add_run_arguments(parser):
    """`--set`, `--seeds` and `--reuse`, the options every table's fine-tuning rows take."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to every kerasbert.train run",
    )
    parser.add_argument(
        "--seeds", default="0", help="comma-separated seeds for every fine-tuning row"
    )
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="ROW=RUN_DIR:MINUTES",
        help="take a row from a finished run directory instead of training again",
    )


def parse_reuse(items) -> dict:
    """`{row: (run_dir, minutes)}` from `--reuse ROW=RUN_DIR:MINUTES` options."""
    reuse = {}
    for item in items:
        row, _, rest = item.partition("=")
        run_dir, _, minutes = rest.rpartition(":")
        reuse[row] = (run_dir, float(minutes))
    return reuse


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default=None, help="comma-separated rows: " + ",".join(names_in_order())
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--ensemble",
        nargs="+",
        default=None,
        metavar="RUN_DIR",
        help="only score these runs of progressive.yaml and the mean of their probabilities",
    )
    args = parser.parse_args(argv)
    if args.ensemble:
        print(
            json.dumps(
                ensemble_accuracy(HERE / "configs" / "progressive.yaml", args.ensemble), indent=2
            )
        )
        return 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    reuse = parse_reuse(args.reuse)
    names = names_in_order()
    if args.only:
        unknown = set(args.only.split(",")) - set(names)
        if unknown:
            parser.error(f"--only: unknown rows {sorted(unknown)}; choose from {', '.join(names)}")
        names = args.only.split(",")  # in the order given
    results_path = OUT_DIR / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() and args.only else {}
    results.setdefault("rows", {})
    seeds = [int(seed) for seed in args.seeds.split(",")]
    results["seeds"] = seeds
    results["overrides"] = args.overrides
    for name in names:
        print(f"[{time.strftime('%H:%M:%S')}] {name} (load {os.getloadavg()[0]:.2f})", flush=True)
        if name == "tfidf":
            row = tfidf_row(HERE / "configs" / "full_constant.yaml")
        elif name in reuse:  # a run already made, e.g. by a table that stopped later
            run_dir, minutes = reuse[name]
            run = row_from_run(
                name,
                run_dir,
                60 * minutes,
                f"python -m kerasbert.train --config benchmarks/configs/{name}.yaml",
            )
            row = {"recipe": run["recipe"], "epochs": run["epochs"], "runs": [run]}
        else:
            runs = []
            for seed in seeds:
                run = (
                    hf_trainer_row(seed)
                    if name == "hf_trainer"
                    else kerasbert_row(name, args.overrides, seed)
                )
                runs.append({**run, "seed": seed})
                print(
                    f"  seed {seed}: test accuracy {100 * runs[-1]['test_accuracy']:.2f}%",
                    flush=True,
                )
            row = {"recipe": runs[0]["recipe"], "epochs": runs[0]["epochs"], "runs": runs}
        results["rows"][name] = row
        results_path.write_text(json.dumps(results, indent=2), encoding="utf-8")
        summary = summarize(row["runs"]) if "runs" in row else row
        print(
            f"  test accuracy {100 * summary['test_accuracy']:.2f}% ({summary['seconds'] / 60:.1f} min per run)",
            flush=True,
        )
    rows = results["rows"]
    results["rows"] = {n: rows[n] for n in names_in_order() if n in rows}
    results_path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
