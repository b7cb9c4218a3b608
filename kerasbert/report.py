"""Per-run HTML reports, and tables and plots comparing runs.

```sh
python -m kerasbert.report runs/quickstart/20261125-144351        # rebuilds its report.html
python -m kerasbert.report runs/a/<stamp> runs/b/<stamp> --output comparison/
```

The report is `kerasbert.evaluation.report`'s; this is its command line. A
model that does not beat the baseline, or that predicts one class for every
test text, gets a warning at the top of the report and one line on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from kerasbert import cli
from kerasbert.evaluation.report import NUM_MISTAKES, write_comparison, write_report
from kerasbert.rundir import resolve_run_dir

# === Data summary (written at training time) ===


# === Reading a run ===


# === One run ===


# === Several runs ===


# === HTML ===


# === Command line ===


# Each command declares its own flags; `cli` gives them --debug and one-line errors.
def parse_args(argv=None):
    parser = cli.command_parser(
        "kerasbert.report", "Rebuild a run's report.html, or compare several runs."
    )
    parser.add_argument(
        "runs", nargs="+", help="run directories (runs/<name> means its latest run)"
    )
    parser.add_argument(
        "--output", help="with several runs: directory for comparison.html/.png/.csv (default: .)"
    )
    parser.add_argument(
        "--num-mistakes",
        type=int,
        default=NUM_MISTAKES,
        help="test mistakes listed in a report (default: 20)",
    )
    return parser.parse_args(argv)


def _main(args):
    cli.setup(args.debug)
    run_dirs = [resolve_run_dir(path) for path in args.runs]
    if len(run_dirs) == 1:
        if args.output is not None:
            raise ValueError(
                "--output is for comparing several runs; one run's report.html goes into its run directory"
            )
        if args.num_mistakes < 0:
            raise ValueError(f"--num-mistakes must be 0 or more; received {args.num_mistakes}")
        print(f"wrote {write_report(run_dirs[0], args.num_mistakes)}")
        return 0
    output = Path(args.output or ".")
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"--output {output}: exists and is not a directory")
    table, path = write_comparison(run_dirs, output)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(table.to_string(float_format=lambda x: f"{x:.4f}", na_rep="n/a"))
    print(f"\nwrote {path}")
    return 0


main = cli.command(parse_args, _main)


if __name__ == "__main__":
    sys.exit(main())
