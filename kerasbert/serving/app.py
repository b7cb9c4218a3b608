"""TF Serving's REST API as a Starlette app: the URLs, JSON shapes, status codes and messages of `tensorflow_model_server`.

`create_app` builds it over a `ModelManager`, or over the `ModelApi` it
shares with the gRPC API (`grpc_api`); `kerasbert.serving.server` runs it
and `python -m kerasbert.serve` is its command line. With a Prometheus path
it also serves TF Serving's request metrics there (`metrics`).

Reference: TF Serving's `http_rest_api_handler.cc`, `json_tensor.cc`,
`get_model_status_impl.cc` and `g3doc/api_rest.md`
(https://github.com/tensorflow/serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.resources
import importlib.util
import json
import logging
import re
import time
import urllib.parse
import zlib
from typing import Sequence

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from tensorflow_serving.apis import get_model_metadata_pb2

from kerasbert.serving.batching import BatchScheduler
from kerasbert.serving.model_api import ModelApi
from kerasbert.serving.model_manager import ModelManager
from kerasbert.serving.rest.errors import RestError, invalid_argument, not_found
from kerasbert.serving.rest.examples import examples_from_json
from kerasbert.serving.rest.json_text import error_json, proto_json
from kerasbert.serving.rest.requests import (
    parse_json_object,
    predict_inputs_from_json,
    requested_signature_name,
)
from kerasbert.serving.rest.responses import (
    classify_response_json,
    predict_response_json,
    regress_response_json,
)
from kerasbert.serving.saved_model_bundle import DEFAULT_SIGNATURE
from kerasbert.serving.servables import Servable

log = logging.getLogger("kerasbert.serve")


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


@dataclasses.dataclass(eq=False)
class _RestApi:
    """TF Serving's HttpRestApiHandler over a ModelApi."""

    api: ModelApi
    max_body_bytes: int
    timeout_seconds: float | None
    enable_cors: bool

    @property
    def manager(self) -> ModelManager:
        return self.api.manager

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
            text.encode("utf-8"),
            status_code=status,
            media_type="application/json",
            headers=self._headers(),
        )

    def _error(self, error: RestError) -> Response:
        return self._json(error_json(error.message), error.http_status)

    async def handle(self, request: Request) -> Response:
        raw_path = request.scope.get("raw_path") or request.url.path.encode("utf-8")
        path = raw_path.decode("latin-1").split("?", 1)[0]
        if request.scope.get("query_string"):
            # TF Serving matches its URL patterns against the path and query
            # (evhttp_request.cc's path_and_query): a query is a malformed request.
            path += "?" + request.scope["query_string"].decode("latin-1")
        method = request.method
        if not _API_PATH.fullmatch(path):
            return self._error(
                not_found(f"Not found: {method} {path}. The REST API is under /v1/.")
            )
        if method == "OPTIONS":
            if re.search(r"https?://", request.headers.get("origin", "")):
                return Response(b"", status_code=200, headers=self._headers())
            return self._error(
                RestError("Origin header is missing in CORS preflight", "FAILED_PRECONDITION")
            )
        started = time.perf_counter()
        status = "OK"
        try:
            body = await self._read_body(request)
            return self._json(await self._process(method, path, body))
        except RestError as error:
            status = error.code
            return self._error(error)
        except ClientDisconnect:
            status = "CANCELLED"
            log.info("The client of %s %s disconnected before sending the whole body", method, path)
            return Response(b"", status_code=400)
        except Exception as error:  # noqa: BLE001  (answered without a traceback; logged in full)
            status = "INTERNAL"
            log.exception("Internal error answering %s %s", method, path)
            return self._error(
                RestError(f"Internal error: {type(error).__name__}: {error}", "INTERNAL")
            )
        finally:
            # Every request under /v1/ counts, as in TF Serving's http_server.cc.
            model_name, verb = _metric_labels(method, path)
            self.api.metrics.record(
                model_name, status, verb, "REST", (time.perf_counter() - started) * 1e6
            )

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
        body = b"".join(chunks)
        # TF Serving's HTTP server inflates a gzip body (auto_uncompress_input).
        if body and "gzip" in request.headers.get("content-encoding", ""):
            body = _gunzip(body, limit)
        return body

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
                    raise invalid_argument("Missing model name in request.")
                if match.group(4) == "metadata":
                    return self._metadata(name, version, label)
                return self._status(name, version, label)
        raise invalid_argument(f"Malformed request: {method} {path}")

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
            f'"metadata": {{"signature_def": {proto_json(signature_map)}}}\n'
            "}\n"
        )

    async def _run(self, servable: Servable, key: str, inputs: dict) -> dict:
        return await self._with_timeout(self.api.run(servable, key, inputs))

    async def _predict(self, name, version, label, body) -> str:
        document = parse_json_object(body)
        signature_name = requested_signature_name(document)
        servable = self.manager.servable(name, version, label)
        key = signature_name or DEFAULT_SIGNATURE
        signature = servable.signature_defs.get(key)
        if signature is None:
            raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
        if not signature.inputs:
            raise invalid_argument(
                "Failed to get input map for signature: ", signature_name or "DEFAULT"
            )
        inputs, row_format = predict_inputs_from_json(document, signature.inputs, key)
        outputs = await self._run(servable, key, inputs)
        return predict_response_json(outputs, row_format)

    async def _with_timeout(self, call):
        try:
            return await asyncio.wait_for(call, self.timeout_seconds)
        except asyncio.TimeoutError:
            raise RestError(
                f"Deadline exceeded: the model took longer than {self.timeout_seconds * 1000:.0f} ms "
                "(--rest_api_timeout_in_ms)",
                "DEADLINE_EXCEEDED",
            ) from None

    async def _classify(self, name, version, label, body) -> str:
        document = parse_json_object(body)
        signature_name = requested_signature_name(document)
        examples = examples_from_json(document, "classify")
        servable = self.manager.servable(name, version, label)
        _, results = await self._with_timeout(self.api.classify(servable, signature_name, examples))
        return classify_response_json(results)

    async def _regress(self, name, version, label, body) -> str:
        document = parse_json_object(body)
        signature_name = requested_signature_name(document)
        examples = examples_from_json(document, "regress")
        servable = self.manager.servable(name, version, label)
        _, values = await self._with_timeout(self.api.regress(servable, signature_name, examples))
        return regress_response_json(values)


class _PayloadTooLarge(RestError):
    def __init__(self, received, limit, inflated=False):
        super().__init__(
            f"Request body of {received} bytes{' inflated' if inflated else ''} is larger than "
            f"this server's limit of {limit} bytes; "
            "start it with a larger --max_body_bytes to accept it.",
            "RESOURCE_EXHAUSTED",
        )

    @property
    def http_status(self) -> int:
        return 413


def _gunzip(body: bytes, limit: int) -> bytes:
    """A gzip request body inflated, at most `limit` bytes of it.

    A body that doesn't inflate is read as empty, as TF Serving's HTTP server
    reads it (evhttp_request.cc), so that the request is refused as one
    without a body.
    """
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, limit + 1)
        complete = inflater.eof
    except zlib.error:
        inflated, complete = b"", False
    if len(inflated) > limit:
        raise _PayloadTooLarge(f"more than {limit}", limit, inflated=True)
    if not complete:
        log.warning("Failed to uncompress the gzipped body")
        return b""
    return inflated


def _model_info(match) -> tuple[str, int | None, str | None]:
    name = urllib.parse.unquote(match.group(1) or "")
    version = match.group(2)
    if version is not None:
        if int(version) >= 2**63:
            raise invalid_argument(f"Failed to convert version: {version} to numeric.")
        version = int(version)
    label = urllib.parse.unquote(match.group(3)) if match.group(3) else None
    return name, version, label


def _metric_labels(method: str, path: str) -> tuple[str, str]:
    """`(model_name, API)` of a request for the metrics: "" where the path names none."""
    if method == "POST":
        match = _PREDICTION_PATH.fullmatch(path)
        if match:
            return urllib.parse.unquote(match.group(1)), match.group(4)
    elif method == "GET":
        match = _STATUS_PATH.fullmatch(path)
        if match:
            return urllib.parse.unquote(match.group(1) or ""), ""
    return "", ""


def _page_html(model_names: Sequence[str]) -> str:
    template = (
        importlib.resources.files("kerasbert.serving")
        .joinpath("static/index.html")
        .read_text(encoding="utf-8")
    )
    names = json.dumps(list(model_names)).replace("<", "\\u003c")
    return template.replace("__KERASBERT_MODELS__", names)


def create_app(
    manager: ModelManager | ModelApi,
    *,
    enable_batching=False,
    max_batch_size=32,
    batch_timeout_micros=1000,
    num_batch_threads=None,
    max_body_bytes=32 * 1024 * 1024,
    rest_api_timeout_in_ms=30000,
    num_threads=None,
    enable_cors=False,
    prometheus_path=None,
) -> Starlette:
    """The ASGI app: TF Serving's REST API under `/v1/`, a try-it page at `/`.

    Model calls run in a thread pool, so requests are served concurrently.

    Args:
        manager: the models to serve (the app doesn't start or stop it), or
            a `ModelApi` shared with the gRPC API, which brings its own
            thread pool, batcher and metrics (the batching and thread
            arguments are then not used).
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
        prometheus_path: where to serve the request metrics in Prometheus'
            text format (`--monitoring_config_file`); nowhere by default.

    Example:

    >>> app = create_app(manager)
    >>> uvicorn.run(app, port=8501)
    """
    if max_body_bytes < 1:
        raise ValueError(
            "Invalid value for argument `max_body_bytes`. Expected an integer >= 1. "
            f"Received: max_body_bytes={max_body_bytes}"
        )
    if prometheus_path is not None and not str(prometheus_path).startswith("/"):
        raise ValueError(
            "Invalid value for argument `prometheus_path`. Expected a path starting with /. "
            f"Received: prometheus_path={prometheus_path!r}"
        )
    owns_model_api = not isinstance(manager, ModelApi)
    if owns_model_api:
        batcher = (
            BatchScheduler(max_batch_size, batch_timeout_micros, num_batch_threads)
            if enable_batching
            else None
        )
        model_api = ModelApi(manager, batcher=batcher, num_threads=num_threads)
    else:
        model_api = manager
    api = _RestApi(
        model_api,
        max_body_bytes,
        rest_api_timeout_in_ms / 1000 if rest_api_timeout_in_ms > 0 else None,
        enable_cors,
    )

    async def page(request: Request) -> Response:
        return HTMLResponse(_page_html(model_api.manager.model_names))

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(model_api.metrics.prometheus_text())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        if owns_model_api:
            model_api.shutdown()

    routes = [Route("/", page, methods=["GET"])]
    if prometheus_path is not None:
        routes.append(Route(prometheus_path, metrics, methods=["GET"]))
    routes.append(
        Route(
            "/{path:path}",
            api.handle,
            methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"],
        )
    )
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.batcher = model_api.batcher
    app.state.model_api = model_api
    return app
