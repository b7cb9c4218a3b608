"""Batch prediction from an exported SavedModel or a TF Serving server.

```sh
python -m kerasbert.predict --model saved_models/quickstart/1 --input reviews.csv --output preds.csv
python -m kerasbert.predict --server http://localhost:8501 --model-name quickstart \
    --input reviews.csv --output preds.csv
```

Every input row comes out, in order, with `predicted_label` and one
`probability_<label>` column per class added; an empty or missing text is
predicted as the empty string. A multi-label model's rows get
`predicted_labels` (`|`-delimited) instead of `predicted_label`, a
regression model's `predicted_value` alone; through a server, the task is
told by the model's signatures. The output file appears only when complete.

The work is `kerasbert.evaluation.predictions` and
`kerasbert.evaluation.saved_model_classifier`; this is their command line.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kerasbert import cli
from kerasbert.data.tables import write_table
from kerasbert.evaluation.predictions import (
    check_output_file,
    predict_frame,
    read_input,
    server_labels,
    server_predict_fn,
    server_task,
)
from kerasbert.evaluation.saved_model_classifier import (
    SavedModelClassifier,
    read_model_columns,
    resolve_model_dir,
)


def parse_args(argv=None):
    parser = cli.command_parser(
        "kerasbert.predict",
        "Predict the label of every row of a file with an exported model or a server.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model", help="a SavedModel version directory, e.g. saved_models/quickstart/1"
    )
    source.add_argument(
        "--server", metavar="URL", help="a TF Serving REST address, e.g. http://localhost:8501"
    )
    parser.add_argument("--model-name", help="the served model's name (with --server)")
    parser.add_argument("--input", required=True, help="CSV, TSV, JSON Lines or Parquet file")
    parser.add_argument("--output", required=True, help="where to write the rows with predictions")
    parser.add_argument(
        "--text-column",
        help="the column to classify (default: with --model, the model's, from its "
        "training config; with --server, text)",
    )
    parser.add_argument(
        "--text-pair-column",
        help="the second text's column, for sentence-pair models (default: the model's)",
    )
    parser.add_argument(
        "--labels",
        help="with --server: the class names, comma-separated or a labels.txt file (default: asked from the server)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="texts per call (default: 64)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def _main(args):
    cli.setup(args.debug)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive int; received {args.batch_size}")
    if args.server and not args.model_name:
        raise ValueError("--server needs --model-name, the served model's name")
    check_output_file(args.output)
    # Cheap checks first: a bad input fails before TensorFlow loads.
    model_dir = resolve_model_dir(args.model) if args.model else None
    columns = read_model_columns(
        model_dir, text_column=args.text_column, text_pair_column=args.text_pair_column
    )
    text_column, text_pair_column = columns["text_column"], columns["text_pair_column"]
    frame = read_input(args.input, text_column, text_pair_column)
    if args.server:
        # Imported here: prediction from a SavedModel does not need httpx.
        from kerasbert.client import ServingClient

        client = ServingClient(args.server, args.model_name)
        task = server_task(client)
        if task == "regression":
            if args.labels:
                raise ValueError(
                    f"--labels names classes, but {args.model_name} is a regression model; "
                    "leave --labels out"
                )
            labels = []
        else:
            labels = parse_labels(args.labels) if args.labels else server_labels(client)
        predict_fn = server_predict_fn(client, task)
    else:
        cli.load_tensorflow(args.debug)
        model = SavedModelClassifier(model_dir)
        if model.text_pair and not text_pair_column:
            raise ValueError(f"{model.model_dir} takes sentence pairs; give --text-pair-column")
        labels, predict_fn, task = model.labels, model, model.task
    out = predict_frame(
        frame,
        predict_fn,
        labels,
        text_column,
        text_pair_column,
        args.batch_size,
        not args.no_progress,
        task=task,
    )
    write_table(out, args.output)
    print(f"wrote {len(out)} predictions to {args.output}")
    return 0


def parse_labels(value) -> list[str]:
    """Class names from a labels file (one per line) or a comma-separated list."""
    path = Path(value)
    if path.is_file():
        labels = path.read_text(encoding="utf-8").splitlines()
    else:
        labels = [label.strip() for label in value.split(",")]
    if len(labels) < 2 or any(not label for label in labels):
        raise ValueError(f"--labels must name at least two non-empty classes; received {value!r}")
    return labels


main = cli.command(parse_args, _main)


if __name__ == "__main__":
    sys.exit(main())
