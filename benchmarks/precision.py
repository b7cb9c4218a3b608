"""float32 against mixed_bfloat16: the progressive recipe's test accuracy, seed by seed.

Decides whether `runtime.mixed_precision: auto` may pick `mixed_bfloat16` on a
CPU that computes in bfloat16 (`kerasbert.training.runtime.AUTO_CPU_BFLOAT16`):
only if it costs at most `MAX_ACCURACY_LOSS` points of test accuracy on the
mean over seeds. Each run is
`python -m kerasbert.train --config benchmarks/configs/progressive.yaml`
with `runtime.mixed_precision` set, in its own process, the two precisions
alternating seed by seed so that a machine's load falls on both alike. Every
run is scored on the same test split (`data.seed: 0`); `seed` changes the
head's initial weights, dropout and batch order.

Run from the repository root after `python benchmarks/fetch_assets.py`:

    nice -n 19 .venv/bin/python benchmarks/precision.py [--seeds 0,1,2]

Writes `benchmarks/cache/precision/results.json` after every run and skips the
runs it already holds, so a stopped comparison continues where it stopped;
prints a Markdown table and the verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import accuracy  # benchmarks/ is this script's directory

OUT_DIR = accuracy.HERE / "cache" / "precision"
CONFIG = accuracy.HERE / "configs" / "progressive.yaml"
PRECISIONS = ("float32", "mixed_bfloat16")
MAX_ACCURACY_LOSS = 0.3  # points, mean over seeds


def run_once(precision, seed) -> dict:
    """One progressive run at `precision`: its test and validation accuracy and minutes."""
    run = accuracy.train_config(
        CONFIG,
        [f"runtime.mixed_precision={precision}", f"name=rt_precision_{precision}"],
        seed,
        OUT_DIR / "logs" / f"{precision}-seed{seed}.log",
    )
    return run_record(
        precision,
        seed,
        run["run_dir"],
        run["seconds"] / 60,
        run["command"],
        [run["load_before"][0], run["load_after"][0]],
    )


def run_record(precision, seed, run_dir, minutes, command, load=None) -> dict:
    """A finished run's line of the table (`accuracy.row_from_run`'s accuracies)."""
    row = accuracy.row_from_run("progressive", run_dir, 60 * minutes, command)
    return {
        "precision": precision,
        "seed": seed,
        "test_accuracy": row["test_accuracy"],
        "validation_accuracy": row["validation_accuracy"],
        "minutes": minutes,
        "load": load,
        "run_dir": row["run_dir"],
        "command": command,
    }


def verdict(runs) -> tuple[str, dict]:
    """The Markdown table of `runs` and the means, difference and decision."""
    lines = [
        "| precision | seed | test accuracy | validation accuracy | minutes | load (before, after) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for run in sorted(runs, key=lambda run: (run["precision"], run["seed"])):
        lines.append(
            f"| {run['precision']} | {run['seed']} | {100 * run['test_accuracy']:.2f}% "
            f"| {100 * run['validation_accuracy']:.2f}% | {run['minutes']:.1f} "
            f"| {', '.join(f'{value:.1f}' for value in run['load']) if run['load'] else '-'} |"
        )
    means = {
        precision: statistics.fmean(
            run["test_accuracy"] for run in runs if run["precision"] == precision
        )
        for precision in PRECISIONS
        if any(run["precision"] == precision for run in runs)
    }
    summary = {f"{p}_test_accuracy": mean for p, mean in means.items()}
    if len(means) == len(PRECISIONS):
        loss = 100 * (means["float32"] - means["mixed_bfloat16"])
        summary.update(points_lost=loss, bfloat16_ok=loss <= MAX_ACCURACY_LOSS)
        lines.append(
            f"\nmeans: float32 {100 * means['float32']:.2f}%, mixed_bfloat16 "
            f"{100 * means['mixed_bfloat16']:.2f}%: bfloat16 loses {loss:+.2f} points "
            f"({'within' if loss <= MAX_ACCURACY_LOSS else 'beyond'} {MAX_ACCURACY_LOSS})"
        )
    return "\n".join(lines), summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="PRECISION:SEED=RUN_DIR:MINUTES",
        help="take a run already finished (its command as this script runs it) instead of training",
    )
    args = parser.parse_args(argv)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    results_path = OUT_DIR / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"runs": []}
    done = {(run["precision"], run["seed"]) for run in results["runs"]}
    for key, (run_dir, minutes) in accuracy.parse_reuse(args.reuse).items():
        precision, _, seed = key.partition(":")
        if (precision, int(seed)) not in done:  # a rerun with the same --reuse adds nothing
            results["runs"].append(
                run_record(precision, int(seed), run_dir, minutes, "reused: " + run_dir)
            )
            done.add((precision, int(seed)))
    for seed in (int(seed) for seed in args.seeds.split(",")):
        for precision in PRECISIONS:
            if (precision, seed) in done:
                continue
            print(
                f"[{time.strftime('%H:%M:%S')}] {precision} seed {seed} (load {os.getloadavg()[0]:.2f})",
                flush=True,
            )
            run = run_once(precision, seed)
            results["runs"].append(run)
            results_path.write_text(json.dumps(results, indent=2), encoding="utf-8")
            print(
                f"  test accuracy {100 * run['test_accuracy']:.2f}% ({run['minutes']:.1f} min)",
                flush=True,
            )
    table, summary = verdict(results["runs"])
    results["summary"] = summary
    results_path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
