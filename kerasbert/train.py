"""`python -m kerasbert.train --config configs/X.yaml [--set key=value ...]`."""

from __future__ import annotations

import logging
import sys

from kerasbert import cli


def parse_args(argv=None):
    parser = cli.command_parser(
        "kerasbert.train", "Fine-tune a BERT or RoBERTa classifier from a YAML config."
    )
    parser.add_config_arguments()
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue a killed run (runs/<name>/<timestamp>) from its last epoch",
    )
    return parser.parse_args(argv)


def _main(args):
    from kerasbert.config_loading import load_config

    config = load_config(args.config, args.overrides)
    if config.distillation is not None:
        raise ValueError(
            f"{args.config}: the `distillation` section is read by python -m kerasbert.distill; "
            "run that, or remove the section to train without a teacher"
        )
    cli.setup(args.debug)
    cli.load_tensorflow(args.debug)
    from kerasbert.training.run import summarize, train

    result = train(config, resume_dir=args.resume)
    log = logging.getLogger("kerasbert.train")
    log.info("metrics: %s", summarize(result.metrics))
    print(f"run: {result.run_dir}")
    if result.export_dir is not None:
        print(f"exported: {result.export_dir}")
    return 0


main = cli.command(parse_args, _main)


if __name__ == "__main__":
    sys.exit(main())
