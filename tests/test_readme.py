"""The README as a new user runs it: its shell commands and Python snippets, in order.

Every ```sh and ```python block runs in a fresh directory holding the
repository's `configs/`, `benchmarks/` and `tests/`, with this interpreter for
`.venv/bin/python` (the install steps are what CI's fresh clone runs) and
free ports for 8500 and 8501. A `kerasbert.serve` command, or TF Serving's
`tensorflow_model_server` command line, starts the local server in the
background, which the blocks after it talk to. The few blocks that need
Docker, two machines or a killed run are listed in `NOT_RUN` with the reason;
any other block runs, so a new one is checked from the day it is written.
No kerasbert command may print TensorFlow's native log.

Marked `readme`: it trains twice and starts servers, so `.ci/run` runs it
apart from the default suite (`pytest -m readme`).
"""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from kerasbert.serving.server import READY_MESSAGE
from tests.support.servers import free_port
from tests.support.tiny import REPO

pytestmark = pytest.mark.readme

README = REPO / "README.md"
# A substring of each block that is not run, and why.
NOT_RUN = {
    '.venv/bin/pip install -q -e ".[test]" && .venv/bin/python -m pytest': "this suite itself",
    "--resume runs/quickstart/": "needs a run killed mid-epoch (tests/test_resume.py kills one)",
    "TF_CONFIG=": "needs two machines (tests/test_distribute.py runs two workers on loopback)",
    "-t tensorflow/serving": "needs Docker (the local server stands in: the next block)",
    "KERASBERT_TFSERVING_URL=": "needs Docker, to run the conformance suite against TF Serving",
}
# TensorFlow's native log, which no command prints: absl's lines ("I0000
# 00:00:... port.cc:153] oneDNN custom operations are on", "E0000 ... failed
# call to cuInit") and its warning that they come before absl::InitializeLog.
NATIVE_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)", re.MULTILINE)
INSTALL = re.compile(r"^(python3 -m venv \S+|\.venv/bin/pip install .*)$")
SERVER = re.compile(r"-m kerasbert\.serve\b|^tensorflow_model_server\b")
COMMAND_SECONDS = 600


def readme_blocks() -> list[tuple[int, str, str]]:
    """`(line, language, text)` of every ```sh and ```python block, in order."""
    text = README.read_text(encoding="utf-8")
    return [
        (text[: m.start()].count("\n") + 1, m.group(1), m.group(2))
        for m in re.finditer(r"^```(sh|python)\n(.*?)^```", text, re.S | re.M)
    ]


def shell_commands(block) -> list[str]:
    """The block's commands: continuation lines joined, comments and install steps left out."""
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        steps = [step.strip() for step in line.split(" && ")]
        commands.append(" && ".join(step for step in steps if not INSTALL.match(step)))
    return commands


class Workspace:
    """A fresh directory, the ports the README's commands get, and its background server."""

    def __init__(self, directory):
        self.directory = directory
        self.ports = {"8500": str(free_port()), "8501": str(free_port())}
        self.server = None
        self.server_log = directory / "server.log"
        # A user's environment: TensorFlow's log level left as it comes.
        self.env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}

    def localize(self, text) -> str:
        text = text.replace(".venv/bin/python", sys.executable)
        for port, free in self.ports.items():
            text = re.sub(rf"\b{port}\b", free, text)
        return text

    def run(self, command, line):
        if SERVER.search(command):
            self.start_server(command, line)
            return
        done = subprocess.run(
            ["bash", "-c", self.localize(command)],
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=COMMAND_SECONDS,
            env=self.env,
        )
        where = f"README line {line}: {command}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        assert done.returncode == 0, where
        if "-m kerasbert." in command:
            assert NATIVE_LOG.findall(done.stderr) == [], where
        if command.startswith("curl"):
            assert done.stdout and '"error"' not in done.stdout, where

    def run_python(self, snippet, line):
        path = self.directory / f"snippet_{line}.py"
        path.write_text(self.localize(snippet), encoding="utf-8")
        done = subprocess.run(
            [sys.executable, str(path)],
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=COMMAND_SECONDS,
            env=self.env,
        )
        assert done.returncode == 0, f"README line {line}:\n{snippet}\n{done.stderr[-3000:]}"

    def start_server(self, command, line):
        """Starts the server in the background (TF Serving's binary: the local server)."""
        self.stop_server()
        command = re.sub(
            r"^tensorflow_model_server\b", ".venv/bin/python -m kerasbert.serve", command
        )
        if "--port" not in command:
            command += " --port=8500"
        log = self.server_log.open("w")
        self.server = subprocess.Popen(
            ["bash", "-c", "exec " + self.localize(command)],
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        deadline = time.monotonic() + COMMAND_SECONDS
        while READY_MESSAGE not in self.server_log.read_text():
            assert self.server.poll() is None, (
                f"README line {line}: {command}\n{self.server_log.read_text()[-3000:]}"
            )
            assert time.monotonic() < deadline, f"README line {line}: the server never got ready"
            time.sleep(0.5)

    def stop_server(self):
        if self.server is not None:
            self.server.terminate()
            self.server.wait(timeout=60)
            self.server = None
            log = self.server_log.read_text()
            assert NATIVE_LOG.findall(log) == [], log[-3000:]


@pytest.fixture
def workspace(tmp_path):
    for folder in ("configs", "benchmarks", "tests"):
        shutil.copytree(
            REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("cache", "__pycache__")
        )
    space = Workspace(tmp_path)
    yield space
    space.stop_server()


def test_every_block_not_run_is_still_in_the_readme_once():
    texts = [text for _, _, text in readme_blocks()]
    for marker, reason in NOT_RUN.items():
        assert sum(marker in text for text in texts) == 1, f"{marker!r} ({reason})"


def test_the_readme_runs_in_order_from_a_fresh_directory(workspace):
    ran = 0
    for line, language, text in readme_blocks():
        if any(marker in text for marker in NOT_RUN):
            continue
        if language == "python":
            workspace.run_python(text, line)
        else:
            for command in shell_commands(text):
                workspace.run(command, line)
        ran += 1
    assert ran >= 15
