"""A TF Serving-compatible REST server, for development.

`python -m kerasbert.serve` serves SavedModels over the REST API of
`tensorflow_model_server`, with its flags and their meanings: the same URLs,
JSON request and response shapes, status codes and error messages, so a
client written against it works unchanged against TF Serving. It is a
development server, for trying a model on a laptop and for tests;
production stays TF Serving.

This module holds the REST API, the ways to run the server and its command
line; `kerasbert.rest_json` holds TF Serving's JSON dialect (errors, request
bodies to tensors, tensors to responses), `kerasbert.model_manager` the
models (loading, warm-up, versions and the file-system poll), and
`kerasbert.batching` the batch scheduler.

Models load as TF Serving loads them (`kerasbert.saved_model_bundle`: a
TF1 Session on the MetaGraph, variables restored by the restore op, each
signature run by its tensor names), so a model this server answers with is
one TF Serving can load. The server never imports kerasbert's training side
(config, data, models, training) nor keras-hub.

Example:

```sh
python -m kerasbert.serve --model_name quickstart --model_base_path saved_models/quickstart
curl -s -d '{"instances": ["What a superb film."]}' localhost:8501/v1/models/quickstart:predict
```

Reference: TF Serving's `http_rest_api_handler.cc`, `json_tensor.cc`,
`get_model_status_impl.cc` and `g3doc/api_rest.md`
(https://github.com/tensorflow/serving).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import importlib.resources
import importlib.util
import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import uvicorn
from google.protobuf import text_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from kerasbert.batching import BatchScheduler
from kerasbert.model_manager import (
    ModelConfig,
    ModelManager,
    Servable,
    VersionPolicy,
    VersionState,
    call_signature,
    load_servable,
    read_model_config_file,
)
from kerasbert.saved_model_bundle import DEFAULT_SIGNATURE
from kerasbert.rest_json import (
    RestError,
    _array,
    _check_input_shapes,
    _invalid,
    _not_found,
    _parse_json_object,
    _proto_json,
    _shape_text,
    _signature_name,
    classify_response_json,
    error_json,
    examples_from_json,
    predict_inputs_from_json,
    predict_response_json,
    regress_response_json,
)

# The serving API as it has always been imported, wherever its parts now live.
__all__ = [
    "ModelConfig",
    "ModelManager",
    "RestError",
    "Servable",
    "ServerProcess",
    "VersionPolicy",
    "VersionState",
    "background_server",
    "create_app",
    "load_servable",
    "main",
    "read_model_config_file",
]

log = logging.getLogger("kerasbert.serve")

READY_MESSAGE = "Exporting HTTP/REST API at:"


# === The REST API ===

# TF Serving's URL patterns (http_rest_api_util.cc), matched case-insensitively.
_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)


class _RestApi:
    """TF Serving's HttpRestApiHandler over a ModelManager."""

    def __init__(self, manager, num_threads, batcher, max_body_bytes, timeout_seconds, enable_cors):
        self.manager = manager
        self.num_threads = num_threads
        self._executor = None
        self.batcher = batcher
        self.max_body_bytes = max_body_bytes
        self.timeout_seconds = timeout_seconds
        self.enable_cors = enable_cors

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        # Made on first use and shut down with the app, so an app can be
        # served more than once.
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.num_threads, thread_name_prefix="kerasbert-serve"
            )
        return self._executor

    def shutdown(self):
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _headers(self) -> dict:
        if not self.enable_cors:
            return {}
        return {
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": "POST, GET",
            "Access-Control-Allow-Headers": "Content-Type",
        }

    def _json(self, text: str, status=200) -> Response:
        return Response(
            text.encode("utf-8"), status_code=status, media_type="application/json", headers=self._headers()
        )

    def _error(self, error: RestError) -> Response:
        return self._json(error_json(error.message), error.http_status)

    async def handle(self, request: Request) -> Response:
        raw_path = request.scope.get("raw_path") or request.url.path.encode("utf-8")
        path = raw_path.decode("latin-1").split("?", 1)[0]
        method = request.method
        if not _API_PATH.fullmatch(path):
            return self._error(_not_found(f"Not found: {method} {path}. The REST API is under /v1/."))
        if method == "OPTIONS":
            if re.search(r"https?://", request.headers.get("origin", "")):
                return Response(b"", status_code=200, headers=self._headers())
            return self._error(RestError("Origin header is missing in CORS preflight", "FAILED_PRECONDITION"))
        try:
            body = await self._read_body(request)
            return self._json(await self._process(method, path, body))
        except RestError as error:
            return self._error(error)
        except Exception as error:  # noqa: BLE001  (answered without a traceback; logged in full)
            log.exception("Internal error answering %s %s", method, path)
            return self._error(RestError(f"Internal error: {type(error).__name__}: {error}", "INTERNAL"))

    async def _read_body(self, request: Request) -> bytes:
        limit = self.max_body_bytes
        declared = request.headers.get("content-length", "")
        declared = int(declared) if declared.isdigit() else None
        too_large = declared is not None and declared > limit
        chunks, size = [], 0
        if not too_large or declared <= 4 * limit:
            # Read (and drop) an oversized body so the client, still sending
            # it, gets the 413 rather than a reset connection.
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    too_large = True
                    chunks = []
                elif not too_large:
                    chunks.append(chunk)
        if too_large:
            received = declared if declared is not None else size
            raise _PayloadTooLarge(received, limit)
        return b"".join(chunks)

    async def _process(self, method: str, path: str, body: bytes) -> str:
        if method == "POST":
            match = _PREDICTION_PATH.fullmatch(path)
            if match:
                name, version, label = _model_info(match)
                verb = match.group(4)
                # The verb matches case-insensitively but dispatches exactly, as in TF Serving.
                if verb == "predict":
                    return await self._predict(name, version, label, body)
                if verb == "classify":
                    return await self._classify(name, version, label, body)
                if verb == "regress":
                    return await self._regress(name, version, label, body)
        elif method == "GET":
            match = _STATUS_PATH.fullmatch(path)
            if match:
                name, version, label = _model_info(match)
                if not name:
                    raise _invalid("Missing model name in request.")
                if match.group(4) == "metadata":
                    return self._metadata(name, version, label)
                return self._status(name, version, label)
        raise _invalid(f"Malformed request: {method} {path}")

    def _status(self, name, version, label) -> str:
        states = self.manager.version_states(name, version, label)
        response = {
            "model_version_status": [
                {
                    "version": str(s.version),
                    "state": s.state,
                    "status": {"error_code": s.error_code, "error_message": s.error_message},
                }
                for s in states
            ]
        }
        # Laid out as protobuf's JSON printer does for TF Serving.
        return json.dumps(response, indent=1, ensure_ascii=False) + "\n"

    def _metadata(self, name, version, label) -> str:
        servable = self.manager.servable(name, version, label)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key in sorted(servable.signature_defs):
            signature_map.signature_def[key].CopyFrom(servable.signature_defs[key])
        model_spec = {"name": servable.name, "signature_name": "", "version": str(servable.version)}
        # TF Serving concatenates two protobuf JSON texts (http_rest_api_util.cc).
        return (
            "{\n"
            f'"model_spec":{json.dumps(model_spec, indent=1, ensure_ascii=False)}\n,\n'
            f'"metadata": {{"signature_def": {_proto_json(signature_map)}}}\n'
            "}\n"
        )

    async def _run(self, servable: Servable, key: str, inputs: dict) -> dict:
        loop = asyncio.get_running_loop()

        async def run(batch_inputs):
            return await loop.run_in_executor(self.executor, call_signature, servable, key, batch_inputs)

        if self.batcher is not None:
            call = self.batcher.submit((id(servable), key), inputs, run)
        else:
            call = run(inputs)
        try:
            return await asyncio.wait_for(call, self.timeout_seconds)
        except asyncio.TimeoutError:
            raise RestError(
                f"Deadline exceeded: the model took longer than {self.timeout_seconds * 1000:.0f} ms "
                "(--rest_api_timeout_in_ms)",
                "DEADLINE_EXCEEDED",
            ) from None

    async def _predict(self, name, version, label, body) -> str:
        document = _parse_json_object(body)
        signature_name = _signature_name(document)
        servable = self.manager.servable(name, version, label)
        key = signature_name or DEFAULT_SIGNATURE
        signature = servable.signature_defs.get(key)
        if signature is None:
            raise _invalid(f'Serving signature name: "{key}" not found in signature def')
        if not signature.inputs:
            raise _invalid("Failed to get input map for signature: ", signature_name or "DEFAULT")
        inputs, row_format = predict_inputs_from_json(document, signature.inputs)
        _check_input_shapes(inputs, signature.inputs, key)
        outputs = await self._run(servable, key, inputs)
        return predict_response_json(outputs, row_format)

    def _examples_signature(self, servable: Servable, signature_name: str, method: str):
        """GetClassificationSignatureDef / GetRegressionSignatureDef, without
        the method-name check (off by default in TF Serving)."""
        key = signature_name or DEFAULT_SIGNATURE
        signature = servable.signature_defs.get(key)
        if signature is None:
            raise _invalid(f"No signature was found with the name: {key}")
        if len(signature.inputs) != 1:
            raise _invalid("Expected one input Tensor.")
        if method == "classify":
            if len(signature.outputs) not in (1, 2):
                raise _invalid(f"Expected one or two output Tensors, found {len(signature.outputs)}")
            if "inputs" not in signature.inputs:
                raise _invalid(
                    f"No classification inputs found in SignatureDef: {text_format.MessageToString(signature)}"
                )
            if "classes" not in signature.outputs and "scores" not in signature.outputs:
                raise _invalid(
                    'Expected classification signature outputs to contain at least one of "classes" or '
                    f'"scores". Signature was: {text_format.MessageToString(signature)}'
                )
        else:
            if len(signature.outputs) != 1:
                raise _invalid("Expected one output Tensor.")
            if "inputs" not in signature.inputs:
                raise _invalid(
                    f"No regression inputs found in SignatureDef: {text_format.MessageToString(signature)}"
                )
            if "outputs" not in signature.outputs:
                raise _invalid(
                    f"No regression outputs found in SignatureDef: {text_format.MessageToString(signature)}"
                )
        return key

    async def _classify(self, name, version, label, body) -> str:
        document = _parse_json_object(body)
        signature_name = _signature_name(document)
        examples = examples_from_json(document, "classify")
        servable = self.manager.servable(name, version, label)
        key = self._examples_signature(servable, signature_name, "classify")
        outputs = await self._run(
            servable, key, {"inputs": _array(examples, [len(examples)], types_pb2.DT_STRING)}
        )
        classes, scores = outputs.get("classes"), outputs.get("scores")
        for output, dtype_ok, dtype_name in (
            (classes, lambda a: a.dtype == object, "DT_STRING"),
            (scores, lambda a: a.dtype == np.float32, "DT_FLOAT"),
        ):
            if output is None:
                continue
            if output.ndim != 2:
                raise _invalid(
                    f"Expected Tensor shape: [batch_size num_classes] but got {_shape_text(output.shape)}"
                )
            if not dtype_ok(output):
                kind = "classes" if output is classes else "scores"
                raise _invalid(f"Expected {kind} Tensor of {dtype_name}. Got: {output.dtype}")
            if output.shape[0] != len(examples):
                kind = "classes" if output is classes else "scores"
                raise _invalid(
                    f"Expected {kind} output batch size of {len(examples)}. Got: {output.shape[0]}"
                )
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise _invalid(
                f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
            )
        num_classes = (classes if classes is not None else scores).shape[1]
        results = []
        for i in range(len(examples)):
            row = []
            for c in range(num_classes):
                text = classes[i, c].decode("utf-8", "replace") if classes is not None else ""
                row.append((text, float(scores[i, c]) if scores is not None else 0.0))
            results.append(row)
        return classify_response_json(results)

    async def _regress(self, name, version, label, body) -> str:
        document = _parse_json_object(body)
        signature_name = _signature_name(document)
        examples = examples_from_json(document, "regress")
        servable = self.manager.servable(name, version, label)
        key = self._examples_signature(servable, signature_name, "regress")
        outputs = await self._run(
            servable, key, {"inputs": _array(examples, [len(examples)], types_pb2.DT_STRING)}
        )
        values = outputs["outputs"]
        if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
            raise _invalid(
                f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {_shape_text(values.shape)}"
            )
        if values.shape[0] != len(examples):
            raise _invalid(
                f"Input batch size did not match output batch size: {len(examples)} vs. {values.shape[0]}"
            )
        return regress_response_json([float(v) for v in values.reshape(-1)])


class _PayloadTooLarge(RestError):
    def __init__(self, received, limit):
        super().__init__(
            f"Request body of {received} bytes is larger than this server's limit of {limit} bytes; "
            "start it with a larger --max_body_bytes to accept it.",
            "RESOURCE_EXHAUSTED",
        )

    @property
    def http_status(self) -> int:
        return 413


def _model_info(match) -> tuple[str, int | None, str | None]:
    name = urllib.parse.unquote(match.group(1) or "")
    version = match.group(2)
    if version is not None:
        if int(version) >= 2**63:
            raise _invalid(f"Failed to convert version: {version} to numeric.")
        version = int(version)
    label = urllib.parse.unquote(match.group(3)) if match.group(3) else None
    return name, version, label


def _page_html(model_names: Sequence[str]) -> str:
    template = (
        importlib.resources.files("kerasbert").joinpath("static/index.html").read_text(encoding="utf-8")
    )
    names = json.dumps(list(model_names)).replace("<", "\\u003c")
    return template.replace("__KERASBERT_MODELS__", names)


def create_app(
    manager: ModelManager,
    *,
    enable_batching=False,
    max_batch_size=32,
    batch_timeout_micros=1000,
    num_batch_threads=None,
    max_body_bytes=32 * 1024 * 1024,
    rest_api_timeout_in_ms=30000,
    num_threads=None,
    enable_cors=False,
) -> Starlette:
    """The ASGI app: TF Serving's REST API under `/v1/`, a try-it page at `/`.

    Model calls run in a thread pool, so requests are served concurrently.

    Args:
        manager: the models to serve; the app doesn't start or stop it.
        enable_batching: merge concurrent calls of a signature (see
            `BatchScheduler`).
        max_batch_size: with batching, the most rows in one model call.
        batch_timeout_micros: with batching, how long a batch waits for more.
        num_batch_threads: with batching, batches run at once; CPU count by default.
        max_body_bytes: larger request bodies get 413.
        rest_api_timeout_in_ms: a model call taking longer gets 504; 0 or
            less waits forever.
        num_threads: threads for model calls; 4 per CPU by default, like
            TF Serving's REST threads.
        enable_cors: add CORS headers to API answers.

    Example:

    >>> app = create_app(manager)
    >>> uvicorn.run(app, port=8501)
    """
    if max_body_bytes < 1:
        raise ValueError(
            "Invalid value for argument `max_body_bytes`. Expected an integer >= 1. "
            f"Received: max_body_bytes={max_body_bytes}"
        )
    num_threads = num_threads or 4 * (os.cpu_count() or 1)
    batcher = (
        BatchScheduler(max_batch_size, batch_timeout_micros, num_batch_threads) if enable_batching else None
    )
    api = _RestApi(
        manager,
        num_threads,
        batcher,
        max_body_bytes,
        rest_api_timeout_in_ms / 1000 if rest_api_timeout_in_ms > 0 else None,
        enable_cors,
    )

    async def page(request: Request) -> Response:
        return HTMLResponse(_page_html(manager.model_names))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        api.shutdown()

    app = Starlette(
        routes=[
            Route("/", page, methods=["GET"]),
            Route("/{path:path}", api.handle, methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
        ],
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    return app


# === Running the server ===


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _uvicorn_server(app) -> uvicorn.Server:
    # log_config=None: uvicorn's own dictConfig would close every logging
    # handler of the host process (a notebook's, pytest's); its loggers go
    # through whatever logging the process has instead.
    config = uvicorn.Config(
        app, log_config=None, log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=30
    )
    return uvicorn.Server(config)


@contextlib.contextmanager
def background_server(app, host="127.0.0.1", port=0) -> Iterator[str]:
    """Serves `app` from a thread of this process (tests, notebooks); yields its URL.

    Example:

    >>> with background_server(create_app(manager)) as url:
    ...     httpx.get(f"{url}/v1/models/quickstart").json()
    """
    sock = _listening_socket(host, port)
    server = _uvicorn_server(app)
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
        yield f"http://{_url_host(bound_host)}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class ServerProcess:
    """`python -m kerasbert.serve ARGS` in a subprocess, on a free loopback port.

    It waits until the server answers (its models loaded), and `stop()` (or
    leaving the `with` block) terminates it. The server's output goes to
    `log_path` (a temporary file by default).

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
        self.env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.env["PYTHONUNBUFFERED"] = "1"
        self.log_path = Path(log_path) if log_path else None
        self.url = None
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
        command = [
            sys.executable,
            "-m",
            "kerasbert.serve",
            "--host",
            "127.0.0.1",
            "--rest_api_port",
            "0",
            *self.args,
        ]
        self._process = subprocess.Popen(
            command, stdout=self._log_file, stderr=subprocess.STDOUT, env=self.env
        )
        deadline = time.monotonic() + self.startup_timeout
        pattern = re.compile(re.escape(READY_MESSAGE) + r"(\S+):(\d+)")
        while True:
            match = pattern.search(self.log_text())
            if match:
                host = match.group(1).strip("[]")
                self.url = f"http://{_url_host(host)}:{match.group(2)}"
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


# === Command line ===


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, received {text!r}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kerasbert.serve",
        description=(
            "A development server for SavedModels with TF Serving's REST API and flags "
            "(tensorflow_model_server). Production stays TF Serving."
        ),
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("--rest_api_port", type=int, default=8501, help="port of the REST API (0: any free port) [8501]")
    add("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface [127.0.0.1]")
    add(
        "--model_name",
        default="default",
        help="name of the model in URLs (ignored with --model_config_file) [default]",
    )
    add(
        "--model_base_path",
        help="directory of the model's version directories (ignored with --model_config_file)",
    )
    add("--model_config_file", help="a ModelServerConfig in text format, for several models")
    add(
        "--file_system_poll_wait_seconds",
        type=int,
        default=1,
        help="seconds between looks for new or removed versions; 0 looks once, at start [1]",
    )
    add(
        "--rest_api_timeout_in_ms",
        type=int,
        default=30000,
        help="answer 504 when a model call takes longer [30000]",
    )
    add("--rest_api_num_threads", type=int, default=0, help="threads for model calls; 0: 4 per CPU [0]")
    add(
        "--rest_api_enable_cors_support",
        type=_parse_bool,
        nargs="?",
        const=True,
        default=False,
        help="add CORS headers",
    )
    add(
        "--enable_batching",
        type=_parse_bool,
        nargs="?",
        const=True,
        default=False,
        help="merge concurrent requests",
    )
    add("--max_batch_size", type=int, default=32, help="with batching, the most rows in one model call [32]")
    add(
        "--batch_timeout_micros",
        type=int,
        default=1000,
        help="with batching, how long a batch waits for more [1000]",
    )
    add(
        "--num_batch_threads",
        type=int,
        default=0,
        help="with batching, batches run at once; 0: the CPU count [0]",
    )
    add(
        "--max_body_bytes",
        type=int,
        default=32 * 1024 * 1024,
        help="answer 413 to larger request bodies [32 MiB]",
    )
    return parser


def _model_configs(args) -> list[ModelConfig]:
    if args.model_config_file:
        return read_model_config_file(args.model_config_file)
    if not args.model_base_path:
        raise ValueError(
            "Give --model_base_path (with --model_name), or --model_config_file. "
            "Example: --model_name quickstart --model_base_path saved_models/quickstart"
        )
    return [ModelConfig(args.model_name, Path(args.model_base_path).expanduser().absolute())]


def _check_flags(args):
    checks = [
        ("rest_api_port", 0 <= args.rest_api_port <= 65535, "an integer from 0 to 65535"),
        ("file_system_poll_wait_seconds", args.file_system_poll_wait_seconds >= 0, "an integer >= 0"),
        ("rest_api_num_threads", args.rest_api_num_threads >= 0, "an integer >= 0"),
        ("max_batch_size", args.max_batch_size >= 1, "an integer >= 1"),
        ("batch_timeout_micros", args.batch_timeout_micros >= 0, "an integer >= 0"),
        ("num_batch_threads", args.num_batch_threads >= 0, "an integer >= 0"),
        ("max_body_bytes", args.max_body_bytes >= 1, "an integer >= 1"),
    ]
    for flag, ok, expected in checks:
        if not ok:
            raise ValueError(
                f"Invalid value for flag `--{flag}`. Expected {expected}. Received: --{flag}={getattr(args, flag)}"
            )


def main(argv=None) -> int:
    """Runs the server until interrupted; 2 for bad flags or config."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        _check_flags(args)
        configs = _model_configs(args)
        manager = ModelManager(configs, poll_wait_seconds=args.file_system_poll_wait_seconds)
        app = create_app(
            manager,
            enable_batching=args.enable_batching,
            max_batch_size=args.max_batch_size,
            batch_timeout_micros=args.batch_timeout_micros,
            num_batch_threads=args.num_batch_threads or None,
            max_body_bytes=args.max_body_bytes,
            rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
            num_threads=args.rest_api_num_threads or None,
            enable_cors=args.rest_api_enable_cors_support,
        )
        sock = _listening_socket(args.host, args.rest_api_port)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    manager.poll()
    manager.start()
    host, port = sock.getsockname()[:2]
    log.info("%s%s:%d ...", READY_MESSAGE, _url_host(host), port)
    log.info(
        "Development server: production stays TF Serving. Try the models at http://%s:%d/",
        _url_host(host),
        port,
    )
    if importlib.util.find_spec("httptools") is None or importlib.util.find_spec("uvloop") is None:
        log.info(
            "Serving with uvicorn's pure-Python HTTP stack; `pip install httptools uvloop` roughly doubles throughput"
        )
    try:
        _uvicorn_server(app).run(sockets=[sock])
    finally:
        manager.stop()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
