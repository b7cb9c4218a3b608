"""Export a training run as a TF Serving SavedModel version, or describe one.

```sh
python -m kerasbert.export --run runs/quickstart/<timestamp> [--model-name N] [--version V] [--base-path P] [--dtype D]
python -m kerasbert.export --inspect saved_models/quickstart/1
```

The work is `kerasbert.exporting`'s; `--inspect` loads only TensorFlow.
"""

from __future__ import annotations

import sys

from kerasbert import cli

# === Command line ===


def parse_args(argv=None):
    parser = cli.command_parser(
        "kerasbert.export",
        "Export a training run as a TF Serving SavedModel version, "
        "or describe an exported version.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--run",
        help="a run directory, runs/<name>/<timestamp>, or runs/<name> for its latest run",
    )
    action.add_argument("--inspect", metavar="VERSION_DIR", help="describe an exported version")
    parser.add_argument("--model-name", help="default: the run's export.model_name, else its name")
    parser.add_argument("--version", help="a positive integer; default: the next free version")
    parser.add_argument("--base-path", help="default: the run's export.base_path")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        help="what the exported graph computes in; default: the run's export.dtype",
    )
    return parser.parse_args(argv)


def _main(args):
    if args.inspect is not None:
        run_flags = {
            "--model-name": args.model_name,
            "--version": args.version,
            "--base-path": args.base_path,
            "--dtype": args.dtype,
        }
        given = [flag for flag, value in run_flags.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: only with --run, not with --inspect")
        # TensorFlow loads here, after the flags are parsed: --help is instant.
        cli.setup(args.debug)
        cli.load_tensorflow(args.debug)
        from kerasbert.exporting.inspection import describe_saved_model

        print(describe_saved_model(args.inspect))
        return 0
    cli.setup(args.debug)
    cli.load_tensorflow(args.debug)
    # Here, not at the top: exporting loads Keras and keras-hub, which
    # --inspect must not.
    from kerasbert.exporting.exporter import export_run_dir

    path = export_run_dir(args.run, args.base_path, args.model_name, args.version, args.dtype)
    print(f"exported: {path}")
    return 0


main = cli.command(parse_args, _main)


if __name__ == "__main__":
    sys.exit(main())
