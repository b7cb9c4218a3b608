"""`python -m kerasbert.train --config configs/X.yaml [--set key=value ...]`."""

from __future__ import annotations

import logging
import sys

from kerasbert import cli


def parse_args(argv=None):
    parser = cli.ArgumentParser(
        prog="python -m kerasbert.train",
        description="Fine-tune a BERT or RoBERTa classifier from a YAML config.",
    )
    parser.add_argument("--config", required=True, help="the run's YAML config")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set training.epochs=2 (repeatable)",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue a killed run (runs/<name>/<timestamp>) from its last epoch",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


def _main(args):
    from kerasbert.config import load_config

    config = load_config(args.config, args.overrides)
    cli.setup(args.debug)
    from kerasbert.training import summarize, train

    result = train(config, resume_dir=args.resume)
    log = logging.getLogger("kerasbert.train")
    log.info("metrics: %s", summarize(result.metrics))
    print(f"run: {result.run_dir}")
    if result.export_dir is not None:
        print(f"exported: {result.export_dir}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return cli.run(_main, args)


if __name__ == "__main__":
    sys.exit(main())
