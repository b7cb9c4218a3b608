"""`python -m kerasbert.distill --config configs/X.yaml [--set key=value ...] [--resume RUN_DIR]`."""

from __future__ import annotations

import logging
import sys

from kerasbert import cli


def parse_args(argv=None):
    parser = cli.command_parser(
        "kerasbert.distill",
        "Distil a finished run (the teacher) into a student with fewer transformer layers.",
    )
    parser.add_config_arguments()
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue a killed distillation (runs/<name>/<timestamp>) from its last epoch",
    )
    return parser.parse_args(argv)


def _main(args):
    from kerasbert.config_loading import load_distillation_config

    config = load_distillation_config(args.config, args.overrides)
    cli.setup(args.debug)
    cli.load_tensorflow(args.debug)
    from kerasbert.training.distillation import describe_comparison, distill
    from kerasbert.training.run import summarize

    result = distill(config, resume_dir=args.resume)
    log = logging.getLogger("kerasbert.distill")
    log.info("metrics: %s", summarize(result.metrics))
    print(f"run: {result.run_dir}")
    if result.export_dir is not None:
        print(f"exported: {result.export_dir}")
    if result.record.get("comparison") is not None:
        print(f"compared: {describe_comparison(result.record['comparison'])}")
    return 0


main = cli.command(parse_args, _main)


if __name__ == "__main__":
    sys.exit(main())
