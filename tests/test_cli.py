"""What every command line shares: `--help` answers before TensorFlow loads."""

import subprocess
import sys

COMMANDS = ("train", "lr_find", "export", "serve", "evaluate", "predict", "report")

# Runs each command's --help in turn in one process, and names the first
# after which TensorFlow (or Keras) has been imported.
HELP_PROBE = """
import contextlib, io, runpy, sys
for command in sys.argv[1:]:
    sys.argv = ["python -m kerasbert." + command, "--help"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            runpy.run_module("kerasbert." + command, run_name="__main__", alter_sys=True)
        except SystemExit as exit:
            assert exit.code == 0, (command, exit.code)
    assert "usage: python -m kerasbert." + command in printed.getvalue(), command
    heavy = [m for m in ("tensorflow", "keras", "keras_hub") if m in sys.modules]
    if heavy:
        print("loaded by " + command + ": " + ", ".join(heavy))
        break
else:
    print("none")
"""


def test_help_of_every_command_loads_no_tensorflow():
    done = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, *COMMANDS], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "none"
