"""`python -m kerasbert.lr_find --config X.yaml [--stage K]`: the LR range test.

Writes `lr_find.csv`, `lr_find.png` and `lr_find.json` (the suggested
`maximal_learning_rate` and the rule behind it) and the config swept, and
prints the suggestion. The next `train` of the same data and model copies
the three files into its run directory, for its report.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kerasbert import cli, rundir


# Each command declares its own flags; `cli` gives them --debug and one-line errors.
def parse_args(argv=None):
    parser = cli.command_parser(
        "kerasbert.lr_find", "Exponential learning-rate sweep on the configured model and data."
    )
    parser.add_config_arguments()
    parser.add_argument(
        "--stage",
        type=int,
        default=None,
        help="sweep with stage K's layers trainable, counting from 1 as training prints "
        "'Stage K/N' (default: every layer)",
    )
    parser.add_argument("--steps", type=int, default=100, help="the most steps (default 100)")
    parser.add_argument("--min-lr", type=float, default=1e-7)
    parser.add_argument("--max-lr", type=float, default=1.0)
    parser.add_argument(
        "--output",
        default=None,
        help="directory for the results (default runs/<name>/lr_find-<timestamp>)",
    )
    return parser.parse_args(argv)


def _main(args):
    from kerasbert.config_loading import dump_config, load_config

    config = load_config(args.config, args.overrides)
    stages = config.training.unfreezing or []
    if args.stage is not None and not 1 <= args.stage <= len(stages):
        raise ValueError(
            f"--stage {args.stage}: the config has {len(stages)} unfreezing stage(s); "
            f"give 1 to {len(stages)}"
            if stages
            else f"--stage {args.stage}: the config has no training.unfreezing stages"
        )
    cli.setup(args.debug)
    cli.load_tensorflow(args.debug)
    from kerasbert.training.fit import compile_for_stage, prepare
    from kerasbert.training.range_test import lr_range_test, unclear_minimum, write_range_test

    prepared = prepare(config)
    trainable_layers = stages[args.stage - 1].trainable_layers if args.stage is not None else "all"
    compile_for_stage(prepared, config.training, trainable_layers)
    result = lr_range_test(
        prepared.classifier,
        prepared.dataset("train", config.training.batch_size, shuffle=True, seed=config.seed),
        min_learning_rate=args.min_lr,
        max_learning_rate=args.max_lr,
        num_steps=args.steps,
    )
    output = (
        Path(args.output)
        if args.output
        else rundir.make_run_dir(config.training.runs_dir, config.name, prefix="lr_find-")
    )
    output.mkdir(parents=True, exist_ok=True)
    write_range_test(result, output)
    # `train` carries the newest range test of the same data and model into its run.
    (output / rundir.LR_FIND_CONFIG).write_text(dump_config(config), encoding="utf-8")
    summary = {
        "suggested_maximal_learning_rate": result.suggestion,
        "rule": "learning rate at the minimum of the smoothed loss, divided by 10",
        "steps": len(result.learning_rates),
        "diverged": result.diverged,
        "trainable_layers": trainable_layers,
        "warning": unclear_minimum(result),
    }
    (output / rundir.LR_FIND_SUGGESTION).write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"suggested maximal_learning_rate: {result.suggestion:.3g} (minimum of the smoothed loss / 10)"
    )
    if summary["warning"]:
        print(f"warning: {summary['warning']}", file=sys.stderr)
    print(f"wrote {output / rundir.LR_FIND_TABLE} and {output / rundir.LR_FIND_PLOT}")
    return 0


main = cli.command(parse_args, _main)


if __name__ == "__main__":
    sys.exit(main())
