"""The multi-label and regression tables: TF-IDF, kerasbert and HF's Trainer on one split each.

- multi-label: a movie's genres from its title and year (MovieLens,
  `configs/movielens_genres.yaml`), scored by micro and macro F1, subset
  accuracy and Hamming loss;
- regression: the mean human sentiment rating of a tweet or an Amazon
  review snippet, -4..+4 (VADER's ground truth, `configs/vader_sentiment.yaml`),
  scored by MAE, RMSE, R² and Spearman's rank correlation in the rating's unit.

Every row of a table is scored on the same test split, the one kerasbert's
loader draws from the config (`data.seed: 0`), and with kerasbert's own
metric functions (`kerasbert.evaluation.target_metrics`):

- `tfidf`: kerasbert's TF-IDF baseline for the task
  (`training.baseline.write_target_baseline`): one logistic regression per
  label at thresholds of 0.5, or ridge regression with `alpha` chosen on
  validation;
- `kerasbert`: `python -m kerasbert.train --config benchmarks/configs/X.yaml`,
  the progressive-unfreezing recipe of `progressive.yaml`; multi-label
  thresholds are tuned on validation for best F1 per label;
- `hf_trainer`: `hf_finetune.py` in the torch venv, `transformers.Trainer`'s
  defaults with `problem_type` set (`multi_label_classification` or
  `regression`). Its validation and test outputs are scored here: multi-label
  at 0.5 and at thresholds tuned on validation with kerasbert's
  `tune_thresholds`; regression after undoing kerasbert's standardisation of
  the target, which it was trained on.

Run from the repository root after `python benchmarks/fetch_assets.py`:

    nice -n 19 .venv/bin/python benchmarks/targets.py

Writes `benchmarks/cache/targets/{multi_label,regression}.json` (updated after
every row) and prints a Markdown table per task. `--task regression` runs one
table, `--only tfidf,hf_trainer` some rows, `--seeds 0,1,2` every fine-tuning
row once per seed, `--reuse kerasbert=RUN_DIR:MINUTES` takes the kerasbert row
from a finished run of the table's config.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import accuracy  # benchmarks/ is this script's directory

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT_DIR = HERE / "cache" / "targets"
CONFIGS = {
    "multi_label": HERE / "configs" / "movielens_genres.yaml",
    "regression": HERE / "configs" / "vader_sentiment.yaml",
}
ROWS = ("tfidf", "kerasbert", "hf_trainer")
KERASBERT_RECIPE = (
    "kerasbert, progressive unfreezing 0 -> 2 -> all (1 + 1 + 3 epochs), one-cycle per stage, "
    "peaks 2e-3 / 3e-4 / 1e-4, mean pooling"
)
HF_RECIPE = (
    "Hugging Face `transformers.Trainer` defaults (PyTorch), `problem_type={problem_type}`: "
    "everything trainable, linear decay from 5e-5, 3 epochs, pooled [CLS]"
)
# The headline metrics of each table, and whether lower is better.
COLUMNS = {
    "multi_label": (
        ("micro_f1", False),
        ("macro_f1", False),
        ("subset_accuracy", False),
        ("hamming_loss", True),
    ),
    "regression": (("mae", True), ("rmse", True), ("r2", False), ("spearman", False)),
}


def tfidf_row(task) -> dict:
    """kerasbert's TF-IDF baseline for the task, fitted on the table's train split.

    Regression is `write_target_baseline`'s ridge row. For multi-label that
    baseline decides at 0.5; its logistic regressions are refitted here so
    that their outputs are scored as the fine-tuned rows' are: at thresholds
    tuned on validation, and at 0.5 (`write_target_baseline`'s own numbers)
    under `test_at_0.5`.
    """
    from kerasbert.training.baseline import TARGET_DESCRIPTIONS, write_target_baseline

    config, splits = accuracy.load_benchmark_splits(CONFIGS[task])
    started = time.perf_counter()
    if task == "multi_label":
        scores = score_outputs(splits, tfidf_logits(splits), config.model.threshold_floor)
        recipe = TARGET_DESCRIPTIONS[task].replace(
            "thresholds of 0.5", "thresholds tuned on validation"
        )
        return {"recipe": recipe, **scores, "seconds": time.perf_counter() - started}
    run_dir = OUT_DIR / f"{task}-tfidf"
    run_dir.mkdir(parents=True, exist_ok=True)
    record = write_target_baseline(splits, run_dir)
    return {
        "recipe": record["model"],
        "test": record["test"],
        "validation": record["validation"],
        "alpha": record["alpha"],
        "seconds": record["seconds"],
    }


def tfidf_logits(splits, seed=0) -> dict:
    """Validation and test logits of `write_target_baseline`'s multi-label model, refitted."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from kerasbert.training.baseline import joined_texts

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
    model = OneVsRestClassifier(LogisticRegression(max_iter=1000, random_state=seed))
    model.fit(vectorizer.fit_transform(joined_texts(splits.train)), splits.label_ids("train"))
    return {
        name: model.decision_function(vectorizer.transform(joined_texts(getattr(splits, name))))
        for name in ("validation", "test")
    }


def kerasbert_row(task, overrides, seed=0) -> dict:
    """Trains the table's config with `kerasbert.train` and reads its metrics."""
    run = accuracy.train_config(
        CONFIGS[task], overrides, seed, OUT_DIR / "logs" / f"{task}-kerasbert-seed{seed}.log"
    )
    return {**run_metrics(run.pop("run_dir")), **run}


def run_metrics(run_dir) -> dict:
    """The test and validation metrics, best epoch and history of a finished run."""
    run_dir = Path(run_dir).resolve()
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return {
        "recipe": KERASBERT_RECIPE,
        "test": metrics["test"],
        "validation": metrics["validation"],
        "run_dir": str(run_dir.relative_to(REPO)),
        "history": (run_dir / "history.csv").read_text(encoding="utf-8"),
    }


def hf_trainer_row(task, seed=0) -> dict:
    """Fine-tunes with `transformers.Trainer` on the table's split and scores its outputs."""
    import numpy as np

    config, splits = accuracy.load_benchmark_splits(CONFIGS[task])
    split_path = accuracy.write_split(config, splits, OUT_DIR / f"{task}-split.json")
    predictions_path = OUT_DIR / f"{task}-hf-seed{seed}-outputs.json"
    result = accuracy.run_hf_finetune(
        split_path,
        OUT_DIR / "logs" / f"{task}-hf_trainer-seed{seed}.log",
        seed,
        ["--predictions", str(predictions_path)],
    )
    outputs = json.loads(predictions_path.read_text(encoding="utf-8"))
    outputs = {name: np.asarray(values, dtype="float64") for name, values in outputs.items()}
    scores = score_outputs(splits, outputs, config.model.threshold_floor)
    return {"recipe": HF_RECIPE.format(problem_type=result["problem_type"]), **scores, **result}


def score_outputs(splits, outputs, threshold_floor) -> dict:
    """kerasbert's metrics of a model's raw validation and test outputs (logits).

    Multi-label: thresholds tuned on validation (as `kerasbert.train` tunes
    its own), and the test metrics at 0.5 under `test_at_0.5`. Regression:
    the outputs are standardised targets, mapped back to the target's unit.
    """
    from scipy.special import expit

    from kerasbert.evaluation import target_metrics

    if splits.task == "regression":
        return {
            name: target_metrics.regression_metrics(
                getattr(splits, name)["label"], splits.scaling.inverse(values.ravel())
            )
            for name, values in outputs.items()
        }
    probabilities = {name: expit(values) for name, values in outputs.items()}
    thresholds = target_metrics.tune_thresholds(
        splits.label_ids("validation"), probabilities["validation"], threshold_floor
    )
    scores = {
        name: target_metrics.multi_label_metrics(
            splits.label_ids(name), values, splits.labels, thresholds
        )
        for name, values in probabilities.items()
    }
    scores["test_at_0.5"] = target_metrics.multi_label_metrics(
        splits.label_ids("test"), probabilities["test"], splits.labels
    )
    return scores


def report(task, results) -> str:
    """A Markdown table of the task's rows: test metrics, mean ± sd over seeds."""
    columns = COLUMNS[task]
    header = " | ".join(
        f"test {name.replace('_', ' ')} ({'↓' if low else '↑'})" for name, low in columns
    )
    lines = [
        f"| row | recipe | seeds | {header} | wall time per run |",
        "|---|---|---:|" + "---:|" * len(columns) + "---:|",
    ]
    for name, row in results["rows"].items():
        runs = row["runs"]
        cells = []
        for metric, _ in columns:
            values = [run["test"][metric] for run in runs]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{statistics.fmean(values):.3f}{spread}")
        minutes = statistics.fmean(run["seconds"] for run in runs) / 60
        lines.append(
            f"| {name} | {row['recipe']} | {len(runs)} | {' | '.join(cells)} | {minutes:.1f} min |"
        )
        if "test_at_0.5" in runs[0]:
            cells = [
                f"{statistics.fmean(run['test_at_0.5'][metric] for run in runs):.3f}"
                for metric, _ in columns
            ]
            lines.append(
                f"| {name} | the same outputs, thresholds of 0.5 | {len(runs)} | {' | '.join(cells)} | |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=(*CONFIGS, "both"), default="both")
    parser.add_argument("--only", default=None, help="comma-separated rows: " + ",".join(ROWS))
    accuracy.add_run_arguments(parser)
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(ROWS)
    unknown = set(names) - set(ROWS)
    if unknown:
        parser.error(f"--only: unknown rows {sorted(unknown)}; choose from {', '.join(ROWS)}")
    reuse = accuracy.parse_reuse(args.reuse)
    if set(reuse) - {"kerasbert"} or (reuse and args.task == "both"):
        parser.error("--reuse takes kerasbert=RUN_DIR:MINUTES, one table's run: give --task too")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    tasks = list(CONFIGS) if args.task == "both" else [args.task]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        results_path = OUT_DIR / f"{task}.json"
        results = json.loads(results_path.read_text()) if results_path.exists() else {}
        results.setdefault("rows", {})
        for name in names:
            print(
                f"[{time.strftime('%H:%M:%S')}] {task} {name} (load {os.getloadavg()[0]:.2f})",
                flush=True,
            )
            if name == "tfidf":
                runs = [tfidf_row(task)]
            elif name in reuse:
                run_dir, minutes = reuse[name]
                command = f"python -m kerasbert.train --config {CONFIGS[task].relative_to(REPO)}"
                runs = [
                    {**run_metrics(run_dir), "seconds": 60 * minutes, "seed": 0, "command": command}
                ]
            else:
                runs = []
                for seed in seeds:
                    row = (
                        hf_trainer_row(task, seed)
                        if name == "hf_trainer"
                        else kerasbert_row(task, args.overrides, seed)
                    )
                    runs.append({**row, "seed": seed})
            results["rows"][name] = {"recipe": runs[0]["recipe"], "runs": runs}
            results["rows"] = {n: results["rows"][n] for n in ROWS if n in results["rows"]}
            results_path.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
        print(report(task, results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
