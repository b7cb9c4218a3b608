"""The Hugging Face rows of `accuracy.py` and `targets.py`: `transformers.Trainer` with its defaults.

Runs in the torch venv (`benchmarks/cache/torch-venv`), on the split that
`accuracy.py` or `targets.py` wrote from kerasbert's own loader (the same
train, validation and test texts as every other row). The recipe is the one
the Trainer documentation leads a user to: `AutoModelForSequenceClassification`
on the MiniLM directory (BERT's pooled `[CLS]` head), AdamW at 5e-5 decaying
linearly to zero without warm-up, 3 epochs, batch 32, each batch padded to its
longest text, the epoch with the best validation accuracy kept and scored on
test.

A split whose `task` is `multi_label` or `regression` sets the model's
`problem_type` (`multi_label_classification`: a sigmoid and binary
cross-entropy per label; `regression`: one output and mean squared error on
the standardised target), keeps the epoch with the lowest validation loss,
and writes the validation and test outputs to `--predictions` for the
caller to score with kerasbert's own metrics.

Prints one line, `RESULT {json}`, for the caller to read.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

# `model.task` to the `problem_type` of a transformers sequence classifier.
PROBLEM_TYPES = {
    "classification": "single_label_classification",
    "multi_label": "multi_label_classification",
    "regression": "regression",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=Path, required=True, help="the JSON accuracy.py wrote")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument(
        "--predictions",
        type=Path,
        default=None,
        help="multi-label and regression: where the validation and test outputs go (JSON)",
    )
    args = parser.parse_args(argv)

    import numpy as np
    import transformers
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
    )

    split = json.loads(args.split.read_text(encoding="utf-8"))
    task = split.get("task", "classification")
    if task != "classification" and args.predictions is None:
        parser.error(f"a {task} split needs --predictions")
    transformers.set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(split["model_dir"])
    model = AutoModelForSequenceClassification.from_pretrained(
        split["model_dir"],
        num_labels=len(split["labels"]),
        problem_type=PROBLEM_TYPES[task],
    )

    def encoded(name):
        part = split[name]
        features = tokenizer(part["texts"], truncation=True, max_length=split["sequence_length"])
        return [
            {**{key: features[key][i] for key in features.keys()}, "labels": label}
            for i, label in enumerate(part["label_ids"])
        ]

    def accuracy(prediction):
        return {
            "accuracy": float(np.mean(prediction.predictions.argmax(-1) == prediction.label_ids))
        }

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = Trainer(
            model=model,
            args=TrainingArguments(
                output_dir=output_dir,
                num_train_epochs=args.epochs,
                learning_rate=args.learning_rate,
                per_device_train_batch_size=32,
                per_device_eval_batch_size=64,
                eval_strategy="epoch",
                save_strategy="epoch",
                save_total_limit=1,
                load_best_model_at_end=True,
                metric_for_best_model="accuracy" if task == "classification" else "loss",
                seed=args.seed,
                report_to="none",
                use_cpu=True,
                disable_tqdm=True,
            ),
            train_dataset=encoded("train"),
            eval_dataset=encoded("validation"),
            processing_class=tokenizer,
            compute_metrics=accuracy if task == "classification" else None,
        )
        trainer.train()
        if task == "classification":
            validation = trainer.evaluate()["eval_accuracy"]
            test = trainer.evaluate(encoded("test"), metric_key_prefix="test")["test_accuracy"]
            history = [
                row["eval_accuracy"] for row in trainer.state.log_history if "eval_accuracy" in row
            ]
            scores = {
                "test_accuracy": test,
                "validation_accuracy": validation,
                "validation_accuracy_by_epoch": history[: int(np.ceil(args.epochs))],
            }
        else:
            outputs = {
                name: trainer.predict(encoded(name)).predictions.tolist()
                for name in ("validation", "test")
            }
            args.predictions.write_text(json.dumps(outputs), encoding="utf-8")
            history = [row["eval_loss"] for row in trainer.state.log_history if "eval_loss" in row]
            scores = {"validation_loss_by_epoch": history[: int(np.ceil(args.epochs))]}
    result = {
        **scores,
        "problem_type": PROBLEM_TYPES[task],
        "seconds": time.perf_counter() - started,
        "versions": {
            "torch": __import__("torch").__version__,
            "transformers": transformers.__version__,
        },
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
