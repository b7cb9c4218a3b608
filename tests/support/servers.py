"""Servers for tests: `python -m kerasbert.serve` in a subprocess, or the APIs in a thread of this process."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

from kerasbert.serving.server import (
    GRPC_READY_MESSAGE,
    READY_MESSAGE,
    listening_socket,
    serve_apis,
    url_host,
    uvicorn_server,
)


def free_port(host="127.0.0.1") -> int:
    """A TCP port that nothing listens on now, for a server that can't be given port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`python -m kerasbert.serve ARGS` in a subprocess, on free loopback ports.

    Unless `args` name them, `--port` (gRPC) and `--rest_api_port` get free
    ports (tensorflow_model_server's flags have no "any free port"). It
    waits until the server answers (its models loaded), and `stop()` (or
    leaving the `with` block) terminates it. The server's output goes to
    `log_path` (a temporary file by default). `url` is the REST API's
    address, `grpc_target` the gRPC API's (`host:port`).

    Args:
        args: flags for `kerasbert.serve`, e.g. `["--model_name", "tiny",
            "--model_base_path", "/tmp/tiny"]`.
        startup_timeout: seconds to wait for it to serve.
        env: the subprocess's environment; this one by default.
        log_path: where its output goes.

    Example:

    >>> with ServerProcess(["--model_name", "quickstart", "--model_base_path", "saved_models/quickstart"]) as server:
    ...     ServingClient(server.url, "quickstart").predict(["What a superb film."])
    """

    def __init__(self, args: Sequence[str], *, startup_timeout=300.0, env=None, log_path=None):
        self.args = [str(a) for a in args]
        self.startup_timeout = startup_timeout
        self.env = dict(os.environ if env is None else env)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.log_path = Path(log_path) if log_path else None
        self.url = None
        self.grpc_target = None
        self._process = None
        self._log_file = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def start(self) -> "ServerProcess":
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="kerasbert-serve-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        self._log_file = open(self.log_path, "wb")
        ports = []
        for flag in ("--port", "--rest_api_port"):
            if not any(a == flag or a.startswith(flag + "=") for a in self.args):
                ports.append(f"{flag}={free_port()}")
        command = [
            sys.executable,
            "-m",
            "kerasbert.serve",
            "--host",
            "127.0.0.1",
            *ports,
            *self.args,
        ]
        self._process = subprocess.Popen(
            command, stdout=self._log_file, stderr=subprocess.STDOUT, env=self.env
        )
        deadline = time.monotonic() + self.startup_timeout
        pattern = re.compile(re.escape(READY_MESSAGE) + r"(\S+):(\d+)")
        grpc_pattern = re.compile(re.escape(GRPC_READY_MESSAGE) + r"(\S+):(\d+)")
        while True:
            text = self.log_text()
            match = pattern.search(text)
            if match:
                host = match.group(1).strip("[]")
                self.url = f"http://{url_host(host)}:{match.group(2)}"
                grpc_match = grpc_pattern.search(text)
                if grpc_match:
                    self.grpc_target = f"{grpc_match.group(1)}:{grpc_match.group(2)}"
                return self
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise RuntimeError(
                    f"kerasbert.serve exited with status {code} before serving:\n{self.log_text()[-4000:]}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"kerasbert.serve did not serve within {self.startup_timeout:.0f} s:\n{self.log_text()[-4000:]}"
                )
            time.sleep(0.1)

    def stop(self, timeout=20.0):
        """Terminates the server (SIGTERM, then SIGKILL after `timeout` seconds)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


@contextlib.contextmanager
def background_server(app, host="127.0.0.1", port=0) -> Iterator[str]:
    """Serves `app` from a thread of this process; yields its URL.

    Example:

    >>> with background_server(create_app(manager)) as url:
    ...     httpx.get(f"{url}/v1/models/quickstart").json()
    """
    sock = listening_socket(host, port)
    server = uvicorn_server(app)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="kerasbert-serve", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server.started:
            raise RuntimeError("The background server did not start")
        bound_host, bound_port = sock.getsockname()[:2]
        yield f"http://{url_host(bound_host)}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextlib.contextmanager
def background_servers(model_api, host="127.0.0.1", **app_kwargs) -> Iterator[tuple[str, str]]:
    """Serves `model_api` over REST and gRPC, on free ports, from a thread of this process.

    Yields `(rest_url, grpc_target)`; `app_kwargs` go to `create_app`.

    Example:

    >>> with background_servers(ModelApi(manager)) as (url, target):
    ...     grpc.insecure_channel(target)
    """
    from kerasbert.serving.app import create_app
    from kerasbert.serving.grpc_api import create_grpc_server

    app = create_app(model_api, **app_kwargs)
    sock = listening_socket(host, 0)
    rest_server = uvicorn_server(app)
    grpc_ports = []
    errors = []

    def run():
        try:
            asyncio.run(
                serve_apis(
                    app,
                    sock,
                    functools.partial(create_grpc_server, model_api, host, 0),
                    grpc_ports.append,
                    rest_server,
                )
            )
        except BaseException as error:  # noqa: BLE001  (reported by the waiting test)
            errors.append(error)

    thread = threading.Thread(target=run, name="kerasbert-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not rest_server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not rest_server.started or not grpc_ports:
            raise RuntimeError(f"The background servers did not start: {errors}")
        bound_host, bound_port = sock.getsockname()[:2]
        yield f"http://{url_host(bound_host)}:{bound_port}", f"{url_host(host)}:{grpc_ports[0]}"
    finally:
        rest_server.should_exit = True
        thread.join(30)
        sock.close()
        model_api.shutdown()
