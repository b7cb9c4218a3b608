"""The distillation frontier: a teacher and its 4-, 3- and 2-layer students, accuracy and speed.

The teacher is a finished `kerasbert.train` run of
`benchmarks/configs/progressive.yaml` (MiniLM-L6, 6 layers; `--teacher` reuses
one, else it is trained here, with its export). Each student is a
`kerasbert.distill` run of `benchmarks/configs/distill_frontier.yaml`, once per
`--seeds` seed, starting from the teacher's layers spread evenly, the top one
included (`spread_layers`: 1, 3, 5 of 6 for 3 layers, as `every_other`). All
rows are scored on the same test split (the teacher's stratified 80/10/10,
`data.seed: 0`). The teacher is one run, and each student is compared with
the teacher it learnt from: a student's mean over its seeds against that run.

Speed is texts/s at batch 32 (the whole test split) and batch 1 (its first
`--single-requests` texts), tokenization included, each export loaded as TF
Serving loads it (`speed.py`'s Session path, each contender in a fresh
process); a student's speed is its first seed's export (the seeds share the
architecture). Beside them, in the same run, Hugging Face transformers +
PyTorch (`hf_torch.py`, in the torch venv) on the pretrained MiniLM-L6
weights, the teacher's before fine-tuning: the same architecture, tokenizer
and sequence length, and speed does not depend on the weights' values.
Every contender is timed `--repeat` times, in turn, and its best run kept.

Run from the repository root after `python benchmarks/fetch_assets.py` and
with the torch venv in place (benchmarks/README.md):

    nice -n 19 .venv/bin/python benchmarks/frontier.py [--teacher RUN_DIR]

Writes `benchmarks/cache/frontier/results.json` and prints a Markdown table
and a verdict per target. `--quick` is a smoke test of the whole pipeline
(300 texts, one epoch, few timed requests; under `benchmarks/cache/frontier/quick/`):
its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import accuracy  # benchmarks/ is this script's directory
import speed

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT_DIR = HERE / "cache" / "frontier"
TEACHER_CONFIG = HERE / "configs" / "progressive.yaml"
STUDENT_CONFIG = HERE / "configs" / "distill_frontier.yaml"

# The targets: a student within MAX_ACCURACY_LOSS points of its
# teacher (means over seeds) and MIN_TEACHER_SPEEDUP times its texts/s at
# batch 1; that student MIN_HF_SPEEDUP times HF + PyTorch at batch 1 and 32.
MAX_ACCURACY_LOSS = 1.0
MIN_TEACHER_SPEEDUP = 1.8
MIN_HF_SPEEDUP = 1.5
HF = "hf-torch"
QUICK_TEXTS = 300


def spread_layers(num_layers, count) -> list[int]:
    """`count` of a teacher's `num_layers` transformer layers, evenly spread, the top one kept.

    Example:
    >>> spread_layers(6, 3), spread_layers(6, 4), spread_layers(6, 2)
    ([1, 3, 5], [0, 2, 3, 5], [2, 5])
    """
    if not 0 < count <= num_layers:
        raise ValueError(f"a student has 1 to {num_layers} layers; received {count}")
    return [(i + 1) * num_layers // count - 1 for i in range(count)]


def teacher_num_layers(teacher_dir) -> int:
    """The teacher's transformer layers, from its preset's Hugging Face `config.json`."""
    import yaml

    model = yaml.safe_load((Path(teacher_dir) / "config.yaml").read_text(encoding="utf-8"))["model"]
    preset = json.loads((REPO / model["preset"] / "config.json").read_text(encoding="utf-8"))
    return int(preset["num_hidden_layers"])


def scored_accuracy(run_dir) -> float:
    """A run's test accuracy, at the epoch its `checkpoint_monitor` picked."""
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))
    return metrics["test"]["accuracy"]


# === The runs ===


def quick_overrides(out) -> tuple[list[str], list[str]]:
    """`--set`s for the teacher and for the students of a smoke run; writes its subset of texts."""
    import pandas as pd

    from kerasbert.config_loading import load_config

    data = load_config(TEACHER_CONFIG).data
    subset = out / "subset.csv"
    frame = pd.read_csv(REPO / data.path)
    frame.sample(n=QUICK_TEXTS, random_state=0).to_csv(subset, index=False)
    shared = [
        "training.epochs=1",
        f"training.runs_dir={(out / 'runs').relative_to(REPO)}",
        f"export.base_path={(out / 'saved_models').relative_to(REPO)}",
    ]
    return [f"data.path={subset.relative_to(REPO)}", "training.unfreezing=null", *shared], shared


def train_teacher(out, overrides) -> dict:
    """Trains progressive.yaml with its export: the teacher's run directory and export."""
    return accuracy.run_kerasbert(
        "train",
        TEACHER_CONFIG,
        ["export.enabled=true", *overrides],
        out / "logs" / "teacher.log",
    )


def teacher_export(teacher_dir, out) -> Path:
    """The teacher run's export, made now (under `out`) when the run has none."""
    from kerasbert import rundir

    export = rundir.status_record(teacher_dir).get("export")
    if export and (REPO / export).is_dir():
        return REPO / export
    command = [sys.executable, "-m", "kerasbert.export", "--run", str(teacher_dir)]
    command += ["--base-path", str(out / "saved_models"), "--model-name", "rt_frontier_teacher"]
    done, _ = accuracy.run_logged(command, out / "logs" / "teacher-export.log")
    exported = re.search(r"^exported: (.+)$", done.stdout, re.M)
    if done.returncode != 0 or exported is None:
        raise RuntimeError(f"{' '.join(command)} failed (exit {done.returncode}): {done.stderr}")
    return REPO / exported.group(1)


def distill_student(out, teacher_dir, layers, seed, overrides) -> dict:
    """One `kerasbert.distill` run: the student's run directory, export and test accuracy."""
    run = accuracy.run_kerasbert(
        "distill",
        STUDENT_CONFIG,
        [
            f"distillation.teacher={teacher_dir}",
            f"distillation.layers={json.dumps(layers)}",
            f"name=rt_student_l{len(layers)}",
            f"seed={seed}",
            *overrides,
        ],
        out / "logs" / f"student-l{len(layers)}-seed{seed}.log",
    )
    if run["export_dir"] is None:
        raise RuntimeError(f"{run['command']} exported nothing; see {out / 'logs'}")
    record = json.loads((run["run_dir"] / "distillation.json").read_text(encoding="utf-8"))
    return {
        "seed": seed,
        "test_accuracy": scored_accuracy(run["run_dir"]),
        "run_dir": str(run["run_dir"]),
        "export_dir": str(run["export_dir"]),
        "seconds": run["seconds"],
        "command": run["command"],
        "parameters": record["student_parameters"],
        "teacher_parameters": record["teacher_parameters"],
    }


def time_exports(out, exports, teacher_dir, args) -> dict:
    """Texts/s of each export through the Session path, and of HF + PyTorch, side by side.

    Reuses `speed.py`'s contenders: `infer:<name>` loads
    `<out>/saved_models/<name>/1`, `infer:hf-torch` the preset directory.
    """
    config, splits = accuracy.load_benchmark_splits(Path(teacher_dir) / "config.yaml")
    timing = out / "speed"
    for name, export in exports.items():
        link = timing / "saved_models" / name / "1"
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(Path(export).resolve())
    (timing / "inputs.json").write_text(
        json.dumps(
            {
                "model_dir": str((REPO / config.model.preset).resolve()),
                "sequence_length": config.model.sequence_length,
                "test_texts": splits.test[config.data.text_column].tolist(),
            }
        ),
        encoding="utf-8",
    )
    worker_args = argparse.Namespace(
        out=timing,
        config=speed.CONFIG,
        steps=0,
        warmup=args.warmup,
        batch_size=32,
        single_requests=args.single_requests,
    )
    runs = {name: [] for name in [*exports, HF]}
    for _ in range(args.repeat):  # in turn, so that a spell of load falls on all alike
        for name in runs:
            print(f"[{time.strftime('%H:%M:%S')}] timing {name} (load {os.getloadavg()[0]:.2f})")
            runs[name].append(speed.run_worker(worker_args, f"infer:{name}"))
    return {name: speed.best_of(each) for name, each in runs.items()}


# === Report ===


def summary_rows(results) -> list[dict]:
    """The table's rows: teacher, students by layers, HF; speeds and ratios filled in."""
    timings = results["timings"]
    teacher = results["teacher"]
    rows = [
        {
            "model": "teacher (progressive.yaml)",
            "name": "teacher",
            "layers": teacher["layers"],
            "parameters": teacher.get("parameters"),
            "accuracies": [teacher["test_accuracy"]],
        }
    ]
    for count, runs in results["students"].items():
        rows.append(
            {
                "model": f"student, layers {runs[0]['layers']}",
                "name": f"student{count}",
                "layers": int(count),
                "parameters": runs[0]["parameters"],
                "accuracies": [run["test_accuracy"] for run in runs],
                "seeds": [run["seed"] for run in runs],
            }
        )
    rows.append(
        {
            "model": "HF transformers + PyTorch (pretrained weights)",
            "name": HF,
            "layers": teacher["layers"],
        }
    )
    for row in rows:
        timed = timings.get(row["name"])
        if timed:
            row["batch_1"] = timed["batch_1"]["texts_per_s"]
            row["batch_32"] = timed["batch_32"]["texts_per_s"]
        if row.get("accuracies"):
            row["mean"] = statistics.fmean(row["accuracies"])
    return rows


def verdicts(rows) -> list[str]:
    """One line per target: met, or missed by how much."""
    by_name = {row["name"]: row for row in rows}
    teacher, hf = by_name["teacher"], by_name.get(HF, {})
    students = [row for row in rows if row["name"].startswith("student")]
    lines, passing = [], []
    for row in students:
        loss = 100 * (teacher["mean"] - row["mean"])
        speedup = row["batch_1"] / teacher["batch_1"]
        fine = loss <= MAX_ACCURACY_LOSS and speedup >= MIN_TEACHER_SPEEDUP
        if fine:
            passing.append(row)
        lines.append(
            f"- {row['layers']} layers: accuracy {-loss:+.2f} points against the teacher "
            f"({_against(-loss, -MAX_ACCURACY_LOSS, ' points')}), {speedup:.2f}x the teacher "
            f"at batch 1 ({_against(speedup, MIN_TEACHER_SPEEDUP, 'x')}): target 1 "
            + ("**met**" if fine else "**missed**")
        )
    if passing:
        chosen = max(passing, key=lambda row: row["batch_1"])
        lines.insert(
            0,
            f"Target 1 (≤ {MAX_ACCURACY_LOSS} point lost, ≥ {MIN_TEACHER_SPEEDUP}x "
            f"the teacher at batch 1): **met** by {len(passing)} student(s); "
            f"the fastest, {chosen['layers']} layers, is judged on target 2.",
        )
    else:
        chosen = min(students, key=lambda row: teacher["mean"] - row["mean"])
        lines.insert(
            0,
            f"Target 1 (≤ {MAX_ACCURACY_LOSS} point lost, ≥ {MIN_TEACHER_SPEEDUP}x "
            "the teacher at batch 1): **missed** by every student; the most accurate, "
            f"{chosen['layers']} layers, is judged on target 2.",
        )
    if "batch_1" in hf:
        ratios = [chosen[key] / hf[key] for key in ("batch_1", "batch_32")]
        met = all(ratio >= MIN_HF_SPEEDUP for ratio in ratios)
        lines.append(
            f"Target 2 (≥ {MIN_HF_SPEEDUP}x HF + PyTorch at batch 1 and 32): {ratios[0]:.2f}x "
            f"({_against(ratios[0], MIN_HF_SPEEDUP, 'x')}) and {ratios[1]:.2f}x "
            f"({_against(ratios[1], MIN_HF_SPEEDUP, 'x')}): " + ("**met**" if met else "**missed**")
        )
    return lines


def _against(value, target, unit) -> str:
    gap = value - target
    if gap >= 0:
        return f"{abs(gap):.2f}{unit} to spare"
    return f"missed by {abs(gap):.2f}{unit}"


def report(results) -> str:
    rows = summary_rows(results)
    by_name = {row["name"]: row for row in rows}
    teacher, hf = by_name["teacher"], by_name.get(HF, {})
    lines = [
        "| model | layers | parameters | test accuracy (mean) | per seed | vs teacher "
        "| texts/s, batch 1 | batch 32 | batch 1 vs teacher | batch 1 vs HF | batch 32 vs HF |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [
            row["model"],
            str(row["layers"]),
            f"{row['parameters']:,}" if row.get("parameters") else "-",
        ]
        if "mean" in row:
            cells += [
                f"{100 * row['mean']:.2f}%",
                ", ".join(f"{100 * value:.2f}" for value in row["accuracies"]),
                f"{100 * (row['mean'] - teacher['mean']):+.2f}",
            ]
        else:
            cells += ["-", "-", "-"]
        if "batch_1" in row:
            cells += [f"{row['batch_1']:.1f}", f"{row['batch_32']:.1f}"]
            cells.append(f"{row['batch_1'] / teacher['batch_1']:.2f}x")
            for key in ("batch_1", "batch_32"):
                cells.append(f"{row[key] / hf[key]:.2f}x" if key in hf else "-")
        else:
            cells += ["-"] * 5
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", *verdicts(rows)])


# === Orchestration ===


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, help="a finished run of progressive.yaml to reuse")
    parser.add_argument("--layers", default="4,3,2", help="comma-separated student layer counts")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds for every student")
    parser.add_argument(
        "--repeat", type=int, default=3, help="timing rounds; each one's best counts"
    )
    parser.add_argument("--single-requests", type=int, default=200, help="batch-1 requests timed")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches before timing")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 300 texts, 1 epoch, 1 timing round"
    )
    args = parser.parse_args(argv)
    try:
        counts = [int(count) for count in args.layers.split(",")]
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        parser.error(
            f"--layers and --seeds take comma-separated integers; received "
            f"{args.layers!r} and {args.seeds!r}"
        )
    out = OUT_DIR / "quick" if args.quick else OUT_DIR
    (out / "logs").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    teacher_overrides, student_overrides = [], []
    if args.quick:
        teacher_overrides, student_overrides = quick_overrides(out)
        args.repeat, args.single_requests, args.warmup = 1, 16, 1
    results = {
        "machine": speed.machine_info(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "quick": args.quick,
    }
    results_path = out / "results.json"

    def save():
        results_path.write_text(json.dumps(results, indent=2), encoding="utf-8")

    print(f"[{time.strftime('%H:%M:%S')}] teacher (load {os.getloadavg()[0]:.2f})", flush=True)
    if args.teacher:
        teacher_dir = args.teacher.resolve()
        export = teacher_export(teacher_dir, out)
        seconds = None
    else:
        run = train_teacher(out, teacher_overrides)
        teacher_dir, export, seconds = run["run_dir"], run["export_dir"], run["seconds"]
    num_layers = teacher_num_layers(teacher_dir)
    results["teacher"] = {
        "run_dir": str(teacher_dir),
        "export_dir": str(export),
        "layers": num_layers,
        "test_accuracy": scored_accuracy(teacher_dir),
        "seconds": seconds,
    }
    save()
    exports = {"teacher": export}
    results["students"] = {}
    for count in counts:
        layers = spread_layers(num_layers, count)
        runs = []
        for seed in seeds:
            print(
                f"[{time.strftime('%H:%M:%S')}] student {layers}, seed {seed} "
                f"(load {os.getloadavg()[0]:.2f})",
                flush=True,
            )
            runs.append(
                {
                    **distill_student(out, teacher_dir, layers, seed, student_overrides),
                    "layers": layers,
                }
            )
            print(f"  test accuracy {100 * runs[-1]['test_accuracy']:.2f}%", flush=True)
            results["students"][str(count)] = runs
            save()
        results["teacher"]["parameters"] = runs[0]["teacher_parameters"]
        exports[f"student{count}"] = runs[0]["export_dir"]
    results["timings"] = time_exports(out, exports, teacher_dir, args)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    save()
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
