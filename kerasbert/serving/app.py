"""TF Serving's REST API as a Starlette app: the URLs, JSON shapes, status codes and messages of `tensorflow_model_server`.

`create_app` builds it over a `ModelManager`; `kerasbert.serving.server`
runs it and `python -m kerasbert.serve` is its command line.

Reference: TF Serving's `http_rest_api_handler.cc`, `json_tensor.cc`,
`get_model_status_impl.cc` and `g3doc/api_rest.md`
(https://github.com/tensorflow/serving).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import importlib.resources
import importlib.util
import json
import logging
import os
import re
import urllib.parse
import zlib
from typing import Sequence

import numpy as np
from google.protobuf import text_format
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from kerasbert.serving.batching import BatchScheduler
from kerasbert.serving.model_manager import ModelManager
from kerasbert.serving.rest.errors import RestError, invalid_argument, not_found
from kerasbert.serving.rest.examples import examples_from_json
from kerasbert.serving.rest.json_text import error_json, proto_json
from kerasbert.serving.rest.requests import (
    parse_json_object,
    predict_inputs_from_json,
    requested_signature_name,
    shape_text,
)
from kerasbert.serving.rest.responses import (
    classify_response_json,
    predict_response_json,
    regress_response_json,
)
from kerasbert.serving.rest.tensors import typed_array
from kerasbert.serving.saved_model_bundle import DEFAULT_SIGNATURE
from kerasbert.serving.servables import Servable, call_signature

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
    """TF Serving's HttpRestApiHandler over a ModelManager."""

    manager: ModelManager
    num_threads: int
    batcher: object
    max_body_bytes: int
    timeout_seconds: float | None
    enable_cors: bool
    _executor: concurrent.futures.ThreadPoolExecutor | None = dataclasses.field(
        default=None, init=False
    )

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
        try:
            body = await self._read_body(request)
            return self._json(await self._process(method, path, body))
        except RestError as error:
            return self._error(error)
        except ClientDisconnect:
            log.info("The client of %s %s disconnected before sending the whole body", method, path)
            return Response(b"", status_code=400)
        except Exception as error:  # noqa: BLE001  (answered without a traceback; logged in full)
            log.exception("Internal error answering %s %s", method, path)
            return self._error(
                RestError(f"Internal error: {type(error).__name__}: {error}", "INTERNAL")
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
        loop = asyncio.get_running_loop()

        async def run(batch_inputs):
            return await loop.run_in_executor(
                self.executor, call_signature, servable, key, batch_inputs
            )

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

    def _examples_signature(self, servable: Servable, signature_name: str, method: str):
        """GetClassificationSignatureDef / GetRegressionSignatureDef, without
        the method-name check (off by default in TF Serving)."""
        key = signature_name or DEFAULT_SIGNATURE
        signature = servable.signature_defs.get(key)
        if signature is None:
            raise invalid_argument(f"No signature was found with the name: {key}")
        if len(signature.inputs) != 1:
            raise invalid_argument("Expected one input Tensor.")
        if method == "classify":
            if len(signature.outputs) not in (1, 2):
                raise invalid_argument(
                    f"Expected one or two output Tensors, found {len(signature.outputs)}"
                )
            if "inputs" not in signature.inputs:
                raise invalid_argument(
                    f"No classification inputs found in SignatureDef: {text_format.MessageToString(signature)}"
                )
            if "classes" not in signature.outputs and "scores" not in signature.outputs:
                raise invalid_argument(
                    'Expected classification signature outputs to contain at least one of "classes" or '
                    f'"scores". Signature was: {text_format.MessageToString(signature)}'
                )
        else:
            if len(signature.outputs) != 1:
                raise invalid_argument("Expected one output Tensor.")
            if "inputs" not in signature.inputs:
                raise invalid_argument(
                    f"No regression inputs found in SignatureDef: {text_format.MessageToString(signature)}"
                )
            if "outputs" not in signature.outputs:
                raise invalid_argument(
                    f"No regression outputs found in SignatureDef: {text_format.MessageToString(signature)}"
                )
        return key

    async def _run_examples(self, name, version, label, body, method):
        """`(examples, outputs)` of a classify or regress body, run on its signature."""
        document = parse_json_object(body)
        signature_name = requested_signature_name(document)
        examples = examples_from_json(document, method)
        servable = self.manager.servable(name, version, label)
        key = self._examples_signature(servable, signature_name, method)
        inputs = {"inputs": typed_array(examples, [len(examples)], types_pb2.DT_STRING)}
        return examples, await self._run(servable, key, inputs)

    async def _classify(self, name, version, label, body) -> str:
        examples, outputs = await self._run_examples(name, version, label, body, "classify")
        classes, scores = outputs.get("classes"), outputs.get("scores")
        for output, dtype_ok, dtype_name in (
            (classes, lambda a: a.dtype == object, "DT_STRING"),
            (scores, lambda a: a.dtype == np.float32, "DT_FLOAT"),
        ):
            if output is None:
                continue
            if output.ndim != 2:
                raise invalid_argument(
                    f"Expected Tensor shape: [batch_size num_classes] but got {shape_text(output.shape)}"
                )
            if not dtype_ok(output):
                kind = "classes" if output is classes else "scores"
                raise invalid_argument(
                    f"Expected {kind} Tensor of {dtype_name}. Got: {output.dtype}"
                )
            if output.shape[0] != len(examples):
                kind = "classes" if output is classes else "scores"
                raise invalid_argument(
                    f"Expected {kind} output batch size of {len(examples)}. Got: {output.shape[0]}"
                )
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise invalid_argument(
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
        examples, outputs = await self._run_examples(name, version, label, body, "regress")
        values = outputs["outputs"]
        if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
            raise invalid_argument(
                f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {shape_text(values.shape)}"
            )
        if values.shape[0] != len(examples):
            raise invalid_argument(
                f"Input batch size did not match output batch size: {len(examples)} vs. {values.shape[0]}"
            )
        return regress_response_json([float(v) for v in values.reshape(-1)])


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


def _page_html(model_names: Sequence[str]) -> str:
    template = (
        importlib.resources.files("kerasbert.serving")
        .joinpath("static/index.html")
        .read_text(encoding="utf-8")
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
        BatchScheduler(max_batch_size, batch_timeout_micros, num_batch_threads)
        if enable_batching
        else None
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
            Route(
                "/{path:path}",
                api.handle,
                methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"],
            ),
        ],
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    return app
