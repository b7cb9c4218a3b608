"""What every command line shares: `--help` answers before TensorFlow loads, and
TensorFlow's native log stays quiet."""

import os
import re
import subprocess
import sys

import yaml

from kerasbert.client import ServingClient
from tests.support.servers import ServerProcess
from tests.support.tiny import tiny_config_dict

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


# === No TensorFlow chatter ===

# TensorFlow's native logging: absl's lines ("I0000 00:00:... port.cc:153]
# oneDNN custom operations are on", "E0000 ... failed call to cuInit") and
# its warning that they come before absl::InitializeLog.
NATIVE_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)", re.MULTILINE)


def run_command(command, *args, cwd):
    """`python -m kerasbert.<command>` in a user's environment: no TF_CPP_MIN_LOG_LEVEL."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-m", f"kerasbert.{command}", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


def test_train_export_evaluate_predict_and_serve_print_no_tensorflow_log_lines(
    tmp_path, reviews_csv
):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(reviews_csv, tmp_path)))
    stderr = run_command("train", "--config", config, cwd=tmp_path)
    run_dir = next((tmp_path / "runs" / "tiny").iterdir())
    stderr += run_command(
        "export", "--run", run_dir, "--base-path", tmp_path / "again", cwd=tmp_path
    )
    model = tmp_path / "saved_models" / "tiny"
    stderr += run_command(
        "evaluate",
        "--model",
        model,
        "--data",
        reviews_csv,
        "--output",
        tmp_path / "evaluation",
        cwd=tmp_path,
    )
    stderr += run_command(
        "predict",
        "--model",
        model,
        "--input",
        reviews_csv,
        "--output",
        tmp_path / "predictions.csv",
        "--no-progress",
        cwd=tmp_path,
    )
    log = tmp_path / "serve.log"
    with ServerProcess(
        ["--model_name", "tiny", "--model_base_path", model],
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
        log_path=log,
    ) as server:
        assert ServingClient(server.url, "tiny").predict(["a good film"])
    stderr += log.read_text()
    assert NATIVE_LOG.findall(stderr) == [], stderr[:3000]
    assert "exported" in stderr  # kerasbert's own log lines stay


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
