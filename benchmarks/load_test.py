"""A bounded load test of `python -m kerasbert.serve` on loopback, REST and gRPC side by side.

Starts the server on free loopback ports, once without and once with
`--enable_batching --batching_parameters_file` (TF Serving's
BatchingParameters, written here from `--max_batch_size` and
`--batch_timeout_micros`), sends `--requests` predict requests (one text
each by default) from `--concurrency` concurrent clients to the REST API,
then the same to the gRPC API (TF Serving's official stubs), and prints
requests/s and p50/p99 latency for each run as a Markdown table. It stops
by itself: every request has a timeout and the whole run a deadline.

Run from the repository root:

    .venv/bin/python benchmarks/load_test.py --model_name quickstart --model_base_path saved_models/quickstart

or against a server that is already running (TF Serving included):

    .venv/bin/python benchmarks/load_test.py --url http://localhost:8501 --grpc_target localhost:8500 --model_name quickstart

Exit status 0 when every request succeeded, 1 when some failed, 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

TEXTS = [
    "What a superb film, the cast is brilliant.",
    "The plot was dull and the ending fell flat.",
    "Tickets go on sale on Friday.",
    "A lovely, funny and moving story.",
    "Boring from start to finish.",
    "The runtime is two hours and ten minutes.",
    "Terrible acting and an awful script.",
    "The credits list the whole cast.",
]


@dataclasses.dataclass
class LoadResult:
    """What one load run measured.

    Attributes:
        requests: requests sent (warm-up excluded).
        errors: requests that failed (a non-200 answer or no answer).
        seconds: wall time of the run.
        latencies: seconds per successful request.
        first_error: the first failure's text, if any.
    """

    requests: int
    errors: int
    seconds: float
    latencies: list
    first_error: str | None = None

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """The `q`-th percentile latency in seconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
        return ordered[rank - 1]


class _Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams.

    The load generator shares the machine with the server, so it must cost
    little: a general client (httpx) spends milliseconds of CPU per
    request, this one tens of microseconds, as wrk does.
    """

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        try:
            self.writer.write(head.encode("ascii") + body)
            status_line = await self.reader.readline()
            status = int(status_line.split()[1])
            length, close = None, False
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                name, value = name.strip().lower(), value.strip()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.lower() == "close":
                    close = True
                elif name == "transfer-encoding" and value.lower() == "chunked":
                    raise ValueError("chunked answers are not supported by this load generator")
            payload = (
                await self.reader.readexactly(length)
                if length is not None
                else await self.reader.read()
            )
        except BaseException:
            self.close()
            raise
        if close or length is None:
            self.close()
        return status, payload

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _load(
    url, model_name, requests, concurrency, texts_per_request, timeout, deadline_seconds, warmup
):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(
            f"Invalid value for argument `url`. Expected an http:// address. Received: url={url!r}"
        )
    host, port = parts.hostname, parts.port or 80
    path = f"{parts.path.rstrip('/')}/v1/models/{urllib.parse.quote(model_name, safe='')}:predict"
    bodies = [
        json.dumps(
            {
                "instances": [
                    TEXTS[(i * texts_per_request + j) % len(TEXTS)]
                    for j in range(texts_per_request)
                ]
            }
        ).encode()
        for i in range(len(TEXTS))
    ]

    def new_caller():
        connection = _Connection(host, port)

        async def call(index):
            try:
                status, payload = await asyncio.wait_for(
                    connection.post(path, bodies[index % len(bodies)]), timeout
                )
            except (
                OSError,
                ValueError,
                IndexError,
                asyncio.TimeoutError,
                asyncio.IncompleteReadError,
            ) as error:
                return f"{type(error).__name__}: {error}"
            if status == 200 and b'"predictions"' in payload:
                return None
            return f"HTTP {status}: {payload[:200]!r}"

        return call, connection.close

    return await _drive(new_caller, requests, concurrency, warmup, deadline_seconds)


def run_load(
    url,
    model_name,
    requests=2000,
    concurrency=16,
    texts_per_request=1,
    timeout=30.0,
    deadline_seconds=600.0,
    warmup=None,
) -> LoadResult:
    """Sends `requests` predict requests from `concurrency` concurrent clients.

    Args:
        url: the server, e.g. `http://127.0.0.1:8501`.
        model_name: the model to call.
        requests: how many requests to measure.
        concurrency: clients sending at the same time.
        texts_per_request: texts in each request's `instances`.
        timeout: seconds before one request counts as failed.
        deadline_seconds: the longest the measured run may take.
        warmup: unmeasured requests first (2 per client by default).

    Returns:
        A `LoadResult`.
    """
    warmup = 2 * concurrency if warmup is None else warmup
    return asyncio.run(
        _load(
            url,
            model_name,
            requests,
            concurrency,
            texts_per_request,
            timeout,
            deadline_seconds,
            warmup,
        )
    )


async def _grpc_load(
    target, model_name, requests, concurrency, texts_per_request, timeout, deadline_seconds, warmup
):
    # TensorFlow comes with the official stubs; only a gRPC run imports it.
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    bodies = []
    for i in range(len(TEXTS)):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        texts = [TEXTS[(i * texts_per_request + j) % len(TEXTS)] for j in range(texts_per_request)]
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(texts, dtype=tf.string))
        bodies.append(request)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        async def call(index):
            try:
                response = await stub.Predict(bodies[index % len(bodies)], timeout=timeout)
            except grpc.aio.AioRpcError as error:
                return f"{error.code().name}: {error.details()}"
            return None if response.outputs else "an answer without outputs"

        return await _drive(
            lambda: (call, lambda: None), requests, concurrency, warmup, deadline_seconds
        )


async def _drive(new_caller, requests, concurrency, warmup, deadline_seconds) -> LoadResult:
    """`warmup` unmeasured calls, then `requests` measured ones, from `concurrency` clients.

    Args:
        new_caller: `() -> (call, close)` for each client: `await call(index)`
            sends request `index` and gives None when it was answered well,
            else what went wrong; `close()` ends the client.
    """
    latencies, errors, first_error = [], 0, None
    next_index = 0

    async def client(limit, measured):
        nonlocal next_index, errors, first_error
        call, close = new_caller()
        try:
            while next_index < limit:
                index = next_index
                next_index += 1
                started = time.perf_counter()
                problem = await call(index)
                if not measured:
                    continue
                if problem is None:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
                    first_error = first_error or problem
        finally:
            close()

    # Warm-up: connections opened, first-call costs paid; not measured.
    await asyncio.wait_for(
        asyncio.gather(*(client(warmup, False) for _ in range(concurrency))), deadline_seconds
    )
    next_index = 0
    started = time.perf_counter()
    try:
        await asyncio.wait_for(
            asyncio.gather(*(client(requests, True) for _ in range(concurrency))), deadline_seconds
        )
    except asyncio.TimeoutError:
        errors = requests - len(latencies)
        first_error = first_error or f"the run passed its {deadline_seconds:.0f} s deadline"
    seconds = time.perf_counter() - started
    return LoadResult(requests, errors, seconds, latencies, first_error)


def run_grpc_load(
    target,
    model_name,
    requests=2000,
    concurrency=16,
    texts_per_request=1,
    timeout=30.0,
    deadline_seconds=600.0,
    warmup=None,
) -> LoadResult:
    """`run_load` over gRPC: Predict calls with TF Serving's stubs to `target` (`host:port`)."""
    warmup = 2 * concurrency if warmup is None else warmup
    return asyncio.run(
        _grpc_load(
            target,
            model_name,
            requests,
            concurrency,
            texts_per_request,
            timeout,
            deadline_seconds,
            warmup,
        )
    )


def _row(name, result: LoadResult) -> str:
    return (
        f"| {name} | {result.requests} | {result.errors} | {result.requests_per_second:.0f} "
        f"| {1000 * result.percentile(50):.1f} | {1000 * result.percentile(99):.1f} |"
    )


def _parser():
    parser = argparse.ArgumentParser(
        prog="benchmarks/load_test.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model_name", default="quickstart")
    parser.add_argument(
        "--model_base_path", help="serve this model directory (started here, twice)"
    )
    parser.add_argument("--url", help="instead, load a server that is already running (REST)")
    parser.add_argument("--grpc_target", help="with --url: its gRPC API too, e.g. localhost:8500")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--texts_per_request", type=int, default=1)
    parser.add_argument(
        "--max_batch_size", type=int, default=32, help="of the batching parameters file"
    )
    parser.add_argument(
        "--batch_timeout_micros", type=int, default=1000, help="of the batching parameters file"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if bool(args.url) == bool(args.model_base_path):
        print(
            "error: give --model_base_path (to start the server here) or --url (a running server)",
            file=sys.stderr,
        )
        return 2
    for flag in ("requests", "concurrency", "texts_per_request"):
        if getattr(args, flag) < 1:
            print(f"error: --{flag} must be >= 1, received {getattr(args, flag)}", file=sys.stderr)
            return 2

    def load(url, target):
        arguments = (
            args.model_name,
            args.requests,
            args.concurrency,
            args.texts_per_request,
            args.timeout,
        )
        results = [("REST", run_load(url, *arguments))]
        if target:
            results.append(("gRPC", run_grpc_load(target, *arguments)))
        return results

    results = []
    if args.url:
        results += [(f"{args.url} {api}", r) for api, r in load(args.url, args.grpc_target)]
    else:
        # The tests' harness for a server in a subprocess; this script runs
        # from benchmarks/, so the repository root goes on the path first.
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.support.servers import ServerProcess

        base = ["--model_name", args.model_name, "--model_base_path", args.model_base_path]
        with tempfile.TemporaryDirectory() as directory:
            parameters = Path(directory) / "batching_parameters.txt"
            parameters.write_text(
                f"max_batch_size {{ value: {args.max_batch_size} }}\n"
                f"batch_timeout_micros {{ value: {args.batch_timeout_micros} }}\n",
                encoding="utf-8",
            )
            batching = ["--enable_batching", "--batching_parameters_file", str(parameters)]
            for name, flags in (
                ("no batching", []),
                (f"batching ({args.max_batch_size}, {args.batch_timeout_micros} µs)", batching),
            ):
                with ServerProcess(base + flags) as server:
                    for api, result in load(server.url, server.grpc_target):
                        results.append((f"{api}, {name}", result))

    print(
        f"{args.requests} requests of {args.texts_per_request} text(s) from {args.concurrency} concurrent clients, "
        f"loopback, {platform.machine()} with {os.cpu_count()} CPUs:\n"
    )
    print("| server | requests | errors | requests/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, result in results:
        print(_row(name, result))
    failed = [(name, r) for name, r in results if r.errors]
    for name, result in failed:
        print(f"\n{name}: {result.errors} failed; first: {result.first_error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
