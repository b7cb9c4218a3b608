"""What every command line shares: `--help` answers before TensorFlow loads, and
TensorFlow's native log is held back (tests/test_readme.py checks that every
command the README shows prints none of it)."""

import subprocess
import sys

COMMANDS = ("train", "distill", "lr_find", "export", "serve", "evaluate", "predict", "report")

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


# === No TensorFlow chatter ===


def test_tensorflows_native_log_is_shown_when_its_import_fails(tmp_path):
    """What `load_tensorflow` holds aside while TensorFlow starts is shown when it fails."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, sys\n"
        "from kerasbert import cli\n"
        "class Failing:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'tensorflow_text':\n"
        "            os.write(2, b'native chatter before the failure\\n')\n"
        "            raise ImportError('no tensorflow_text here')\n"
        "sys.meta_path.insert(0, Failing())\n"
        "try:\n"
        "    cli.load_tensorflow(debug=False)\n"
        "except ImportError as e:\n"
        "    print('raised', e)\n"
    )
    done = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, timeout=300)
    assert "raised no tensorflow_text here" in done.stdout, done.stderr[-2000:]
    assert "native chatter before the failure" in done.stderr
