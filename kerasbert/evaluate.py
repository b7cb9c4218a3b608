"""Evaluate an exported SavedModel on a labelled file.

```sh
python -m kerasbert.evaluate --model saved_models/quickstart/1 --data test.csv --output eval/
```

The model is loaded as TF Serving loads it (a TF1 Session on the
MetaGraph, its variables restored by the restore op) and called through its
`serving_default` signature, so what is measured is what is shipped. Writes
`metrics.json` and `predictions.csv` to `--output` and prints a table; the
work is `kerasbert.evaluation.scoring`'s, the metrics
`kerasbert.evaluation.metrics`'.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from kerasbert import cli
from kerasbert.evaluation import metrics as metrics_lib
from kerasbert.evaluation.saved_model_classifier import (
    SavedModelClassifier,
    read_model_bin_edges,
    read_model_columns,
    read_model_head,
    read_model_labels,
    resolve_model_dir,
)
from kerasbert.evaluation.scoring import (
    METRICS_FILE,
    PREDICTIONS_FILE,
    evaluate_saved_model,
    format_metrics,
    label_ids,
    load_labelled,
)
from kerasbert.files import write_json

log = logging.getLogger(__name__)


def parse_args(argv=None):
    parser = cli.command_parser(
        "kerasbert.evaluate", "Evaluate an exported SavedModel on a labelled file."
    )
    parser.add_argument(
        "--model",
        required=True,
        help="a SavedModel version directory, e.g. saved_models/quickstart/1",
    )
    parser.add_argument(
        "--data", required=True, help="labelled CSV, TSV, JSON Lines or Parquet file"
    )
    parser.add_argument(
        "--text-column", help="default: the model's, from its training config (e.g. text)"
    )
    parser.add_argument(
        "--label-column", help="default: the model's, from its training config (e.g. label)"
    )
    parser.add_argument(
        "--text-pair-column",
        help="the second text's column, for sentence-pair models (default: the model's)",
    )
    parser.add_argument(
        "--output",
        default=".",
        help=f"directory for {METRICS_FILE} and {PREDICTIONS_FILE} (default: .)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="texts per call (default: 64)")
    parser.add_argument(
        "--num-bins",
        type=int,
        default=metrics_lib.DEFAULT_NUM_BINS,
        help="confidence bins for ECE (default: 15)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def _main(args):
    cli.setup(args.debug)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"--output {output}: exists and is not a directory")
    for name, value in (("--batch-size", args.batch_size), ("--num-bins", args.num_bins)):
        if value < 1:
            raise ValueError(f"{name} must be a positive int; received {value}")
    # Cheap checks first: a bad path, column or label fails before TensorFlow loads.
    model_dir = resolve_model_dir(args.model)
    columns = read_model_columns(
        model_dir,
        text_column=args.text_column,
        text_pair_column=args.text_pair_column,
        label_column=args.label_column,
    )
    task = read_model_head(model_dir).get("task", "classification")
    if task != "classification":
        return _evaluate_targets(args, model_dir, columns, task, output)
    frame, dropped = load_labelled(
        args.data,
        columns["text_column"],
        columns["label_column"],
        columns["text_pair_column"],
        read_model_bin_edges(model_dir),
        read_model_labels(model_dir),
    )
    if frame.empty:
        raise ValueError(
            f"{args.data}: no labelled rows to evaluate ({dropped} dropped without a label)"
        )
    label_ids(frame["label"], read_model_labels(model_dir))
    cli.load_tensorflow(args.debug)
    model = SavedModelClassifier(model_dir)
    if model.text_pair and not columns["text_pair_column"]:
        raise ValueError(f"{model.model_dir} takes sentence pairs; give --text-pair-column")
    if dropped:
        log.warning("dropped %d row(s) without a label", dropped)
    metrics = evaluate_saved_model(
        model,
        frame["text"].tolist(),
        frame["label"].tolist(),
        frame["text_pair"].tolist() if "text_pair" in frame else None,
        args.batch_size,
        args.num_bins,
        progress=not args.no_progress,
        predictions_path=output / PREDICTIONS_FILE,
    )
    report = {
        "model": str(model.model_dir),
        "data": str(args.data),
        "dropped_rows": dropped,
        **metrics,
    }
    write_json(output / METRICS_FILE, report)
    print(format_metrics(report))
    print(f"\nwrote {output / METRICS_FILE} and {output / PREDICTIONS_FILE}")
    return 0


def _evaluate_targets(args, model_dir, columns, task, output):
    """`_main` for a multi-label or regression export."""
    from kerasbert.evaluation import target_scoring

    frame, dropped = target_scoring.load_labelled_targets(
        args.data,
        model_dir,
        task,
        columns["text_column"],
        columns["label_column"],
        columns["text_pair_column"],
    )
    if frame.empty:
        raise ValueError(f"{args.data}: no labelled rows to evaluate ({dropped} dropped)")
    cli.load_tensorflow(args.debug)
    model = SavedModelClassifier(model_dir)
    if model.text_pair and not columns["text_pair_column"]:
        raise ValueError(f"{model.model_dir} takes sentence pairs; give --text-pair-column")
    metrics = target_scoring.evaluate_saved_targets(
        model,
        frame["text"].tolist(),
        frame["label"].tolist(),
        frame["text_pair"].tolist() if "text_pair" in frame else None,
        args.batch_size,
        predictions_path=output / PREDICTIONS_FILE,
    )
    report = {"model": str(model.model_dir), "data": str(args.data), "dropped_rows": dropped}
    write_json(output / METRICS_FILE, {**report, **metrics})
    print(target_scoring.format_target_metrics(metrics))
    print(f"\nwrote {output / METRICS_FILE} and {output / PREDICTIONS_FILE}")
    return 0


main = cli.command(parse_args, _main)


if __name__ == "__main__":
    sys.exit(main())
