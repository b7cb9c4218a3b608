"""The Hugging Face rows of `accuracy.py`, `targets.py`, `long_documents.py`: the Trainer as shipped.

Runs in the torch venv (`benchmarks/cache/torch-venv`), on the split that
`accuracy.write_split` wrote from kerasbert's own loader (the same
train, validation and test texts as every other row). The recipe is the one
the Trainer documentation leads a user to: `AutoModelForSequenceClassification`
on the MiniLM directory (BERT's pooled `[CLS]` head), AdamW at 5e-5 decaying
linearly to zero without warm-up, 3 epochs, batch 32, each batch padded to its
longest text, the epoch with the best validation accuracy kept and scored on
test.

With `--stride`, the long-document table's Hugging Face row
(`long_documents.py`): the usual recipe for texts longer than the model
reads. The tokenizer cuts every document into windows of `sequence_length`
tokens overlapping by `stride` (`return_overflowing_tokens=True`), each window
takes its document's label, and the Trainer fine-tunes on windows
(`--train-windows` of them drawn at random, to fit a time budget; all by
default) without evaluating between epochs; a test document's prediction
is the mean of its windows' probabilities. Its texts/s are timed on that
test pass: tokenizing into windows, the model on 32 windows at a time, and
averaging, 32 documents at a time.

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
        "--stride", type=int, default=None, help="windows overlapping by this many tokens"
    )
    parser.add_argument(
        "--train-windows", type=int, default=None, help="with --stride: windows drawn for training"
    )
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
    if task != "classification" and args.stride is not None:
        parser.error(f"--stride scores single-label classification only, not a {task} split")
    transformers.set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(split["model_dir"])
    model = AutoModelForSequenceClassification.from_pretrained(
        split["model_dir"],
        num_labels=len(split["labels"]),
        problem_type=PROBLEM_TYPES[task],
    )

    windows = {} if args.stride is None else {"stride": args.stride}

    def encoded(name):
        """One feature row per text, or per window with `--stride`, labelled with its text's label."""
        part = split[name]
        features = tokenizer(
            part["texts"],
            truncation=True,
            max_length=split["sequence_length"],
            return_overflowing_tokens=bool(windows),
            **windows,
        )
        documents = features.pop("overflow_to_sample_mapping", range(len(part["texts"])))
        return [
            {**{key: features[key][i] for key in features.keys()}, "labels": part["label_ids"][doc]}
            for i, doc in enumerate(documents)
        ]

    def accuracy(prediction):
        return {
            "accuracy": float(np.mean(prediction.predictions.argmax(-1) == prediction.label_ids))
        }

    train_rows = encoded("train")
    if windows and args.train_windows:
        drawn = np.random.default_rng(args.seed).permutation(len(train_rows))[: args.train_windows]
        train_rows = [train_rows[i] for i in drawn]
    # Without windows, the epoch with the best validation accuracy (or loss) is kept.
    selection = (
        {"eval_strategy": "no", "save_strategy": "no"}
        if windows
        else {
            "eval_strategy": "epoch",
            "save_strategy": "epoch",
            "save_total_limit": 1,
            "load_best_model_at_end": True,
            "metric_for_best_model": "accuracy" if task == "classification" else "loss",
        }
    )
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
                seed=args.seed,
                report_to="none",
                use_cpu=True,
                disable_tqdm=True,
                **selection,
            ),
            train_dataset=train_rows,
            eval_dataset=None if windows else encoded("validation"),
            processing_class=tokenizer,
            compute_metrics=accuracy if task == "classification" else None,
        )
        trainer.train()
        if windows:
            scores = {
                "train_windows": len(train_rows),
                "train_seconds": time.perf_counter() - started,
                **windowed_test(model, tokenizer, split, args.stride),
            }
        elif task == "classification":
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


def windowed_test(model, tokenizer, split, stride, batch_size=32) -> dict:
    """Test accuracy of the mean window probabilities per document, and the texts/s of that pass.

    32 documents at a time are cut into windows, and the model runs on 32
    windows at a time; tokenizing, the model and the averaging are timed.
    """
    import numpy as np
    import torch

    texts, labels = split["test"]["texts"], split["test"]["label_ids"]
    model.eval()
    probabilities, window_count = [], 0
    started, cpu_started = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                truncation=True,
                max_length=split["sequence_length"],
                stride=stride,
                return_overflowing_tokens=True,
                padding=True,
                return_tensors="pt",
            )
            documents = batch.pop("overflow_to_sample_mapping")
            window_count += len(documents)
            each = torch.cat(
                [
                    model(
                        **{key: value[i : i + batch_size] for key, value in batch.items()}
                    ).logits.softmax(-1)
                    for i in range(0, len(documents), batch_size)
                ]
            )
            for document in range(int(documents.max()) + 1):
                probabilities.append(each[documents == document].mean(0).numpy())
    seconds = time.perf_counter() - started
    predicted = np.stack(probabilities).argmax(-1)
    return {
        "test_accuracy": float(np.mean(predicted == np.asarray(labels))),
        "test_predictions": predicted.tolist(),
        "test_windows_per_text": window_count / len(texts),
        "batch_32": {
            "texts": len(texts),
            "seconds": seconds,
            "cpu_seconds": time.process_time() - cpu_started,
            "texts_per_s": len(texts) / seconds,
        },
    }


if __name__ == "__main__":
    sys.exit(main())
