"""A TF Serving-compatible gRPC and REST server, for development.

`python -m kerasbert.serve` serves SavedModels over the gRPC and REST APIs
of `tensorflow_model_server`, with its flags and their meanings: the same
gRPC services and REST URLs, request and response shapes, status codes and
error messages, so a client written against it works unchanged against TF
Serving. It is a development server, for trying a model on a laptop and
for tests; production stays TF Serving.

This module is the command line. The server is `kerasbert.serving`:
`grpc_api` and `app` (the two APIs) over `model_api` (what they share),
`server` (running them), `model_manager`, `model_config` and `servables`
(versions, their loading and warm-up), `batching`, `metrics` (Prometheus),
and `rest/`, TF Serving's JSON dialect (errors, request bodies to tensors,
tensors to responses).

Models load as TF Serving loads them (`kerasbert.serving.saved_model_bundle`: a
TF1 Session on the MetaGraph, variables restored by the restore op, each
signature run by its tensor names), so a model this server answers with is
one TF Serving can load. The server never imports kerasbert's training side
(config, data, models, training) nor keras-hub.

Example:

```sh
python -m kerasbert.serve --port=8500 --rest_api_port=8501 --model_name=quickstart --model_base_path=saved_models/quickstart
curl -s -d '{"instances": ["What a superb film."]}' localhost:8501/v1/models/quickstart:predict
```

Reference: TF Serving's `model_servers/main.cc` and `server.cc` (the flags),
`http_rest_api_handler.cc`, `json_tensor.cc`, `get_model_status_impl.cc`
and `g3doc/api_rest.md` (https://github.com/tensorflow/serving).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kerasbert import cli
from kerasbert.serving.server import (
    GRPC_READY_MESSAGE,
    READY_MESSAGE,
    listening_socket,
    run_servers,
    url_host,
)

if TYPE_CHECKING:
    from kerasbert.serving.model_config import ServedModelConfig

# The server's one logger, whichever of its modules writes.
log = logging.getLogger("kerasbert.serve")


# === The REST API ===


# === Running the server ===


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
            "A development server for SavedModels with TF Serving's gRPC and REST APIs and "
            "flags (tensorflow_model_server). Production stays TF Serving."
        ),
        allow_abbrev=False,
    )
    add = parser.add_argument
    tf_serving = parser.add_argument_group("tensorflow_model_server's flags")
    add = tf_serving.add_argument
    add(
        "--port",
        type=int,
        default=8500,
        help="TCP port to listen on for the gRPC API; disabled if set to zero [8500]",
    )
    add(
        "--grpc_socket_path",
        default="",
        help="if non-empty, also listen for the gRPC API on this UNIX socket",
    )
    add(
        "--rest_api_port",
        type=int,
        default=0,
        help="port to listen on for the HTTP/REST API; if zero the REST API is not exported. "
        "Must differ from --port [0]",
    )
    add(
        "--model_name",
        default="default",
        help="name of the model (ignored if --model_config_file is set) [default]",
    )
    add(
        "--model_base_path",
        help="path to export (ignored if --model_config_file is set, otherwise required)",
    )
    add(
        "--model_config_file",
        help="if non-empty, read an ascii ModelServerConfig protobuf from this file and serve its models",
    )
    add(
        "--file_system_poll_wait_seconds",
        type=int,
        default=1,
        help="seconds between polls of the file system for new model versions; 0 polls once, at start [1]",
    )
    add(
        "--enable_batching",
        type=_parse_bool,
        nargs="?",
        const=True,
        default=False,
        help="enable batching [false]",
    )
    add(
        "--batching_parameters_file",
        help="if non-empty, read an ascii BatchingParameters protobuf from this file and use "
        "it instead of the defaults (needs --enable_batching)",
    )
    add(
        "--monitoring_config_file",
        help="if non-empty, read an ascii MonitoringConfig protobuf from this file "
        '(e.g. prometheus_config { enable: true path: "/monitoring/prometheus/metrics" })',
    )
    add(
        "--rest_api_timeout_in_ms",
        type=int,
        default=30000,
        help="timeout for HTTP/REST API calls; answers 504 beyond [30000]",
    )
    add(
        "--rest_api_num_threads",
        type=int,
        default=0,
        help="threads for model calls of both APIs; 0: 4 per CPU [0]",
    )
    add(
        "--rest_api_enable_cors_support",
        type=_parse_bool,
        nargs="?",
        const=True,
        default=False,
        help="enable CORS headers in responses [false]",
    )
    own = parser.add_argument_group(
        "kerasbert's own flags (tensorflow_model_server has none of these)"
    )
    add = own.add_argument
    add(
        "--debug",
        action="store_true",
        help="show TensorFlow's native log and tracebacks [false]",
    )
    add(
        "--host",
        default="127.0.0.1",
        help="address both APIs listen on; 0.0.0.0 for every interface, as TF Serving [127.0.0.1]",
    )
    add(
        "--max_batch_size",
        type=int,
        help="with batching and no --batching_parameters_file: shorthand for its "
        "max_batch_size { value: N } [1000, TF Serving's default]",
    )
    add(
        "--batch_timeout_micros",
        type=int,
        help="shorthand for the parameters file's batch_timeout_micros [0]",
    )
    add(
        "--num_batch_threads",
        type=int,
        help="shorthand for the parameters file's num_batch_threads [the CPU count]",
    )
    add(
        "--max_body_bytes",
        type=int,
        default=32 * 1024 * 1024,
        help="answer 413 to larger REST request bodies [32 MiB]",
    )
    return parser


_BATCHING_SHORTHANDS = ("max_batch_size", "batch_timeout_micros", "num_batch_threads")


def _model_configs(args) -> list[ServedModelConfig]:
    # TensorFlow loads with these: after the flags are parsed, so --help is instant.
    from kerasbert.serving.model_config import ServedModelConfig, read_model_config_file

    if args.model_config_file:
        return read_model_config_file(args.model_config_file)
    if not args.model_base_path:
        raise ValueError(
            "Give --model_base_path (with --model_name), or --model_config_file. "
            "Example: --model_name=quickstart --model_base_path=$PWD/saved_models/quickstart"
        )
    return [ServedModelConfig(args.model_name, Path(args.model_base_path).expanduser().absolute())]


def _check_flags(args):
    def port_ok(port):
        return 0 <= port <= 65535

    checks = [
        ("port", port_ok(args.port), "an integer from 0 to 65535"),
        ("rest_api_port", port_ok(args.rest_api_port), "an integer from 0 to 65535"),
        (
            "file_system_poll_wait_seconds",
            args.file_system_poll_wait_seconds >= 0,
            "an integer >= 0",
        ),
        ("rest_api_num_threads", args.rest_api_num_threads >= 0, "an integer >= 0"),
        (
            "max_batch_size",
            args.max_batch_size is None or args.max_batch_size >= 1,
            "an integer >= 1",
        ),
        (
            "batch_timeout_micros",
            args.batch_timeout_micros is None or args.batch_timeout_micros >= 0,
            "an integer >= 0",
        ),
        (
            "num_batch_threads",
            args.num_batch_threads is None or args.num_batch_threads >= 1,
            "an integer >= 1",
        ),
        ("max_body_bytes", args.max_body_bytes >= 1, "an integer >= 1"),
    ]
    for flag, ok, expected in checks:
        if not ok:
            raise ValueError(
                f"Invalid value for flag `--{flag}`. Expected {expected}. Received: --{flag}={getattr(args, flag)}"
            )
    if args.port == 0 and not args.grpc_socket_path:
        # TF Serving's server.cc refuses this too.
        raise ValueError(
            "At least one of --port or --grpc_socket_path must be set: the gRPC API is always served."
        )
    if args.rest_api_port and args.rest_api_port == args.port:
        raise ValueError(
            f"--rest_api_port cannot be the same as --port ({args.port}). "
            "Please use a different port for the HTTP/REST API."
        )
    if args.batching_parameters_file and not args.enable_batching:
        raise ValueError(
            "--batching_parameters_file is set without setting --enable_batching to true."
        )
    shorthands = [f"--{f}" for f in _BATCHING_SHORTHANDS if getattr(args, f) is not None]
    if shorthands and args.batching_parameters_file:
        raise ValueError(
            f"Give the batching parameters in --batching_parameters_file or as {', '.join(shorthands)}, "
            "not both."
        )
    if shorthands and not args.enable_batching:
        raise ValueError(f"{', '.join(shorthands)} need --enable_batching.")


def parse_args(argv=None):
    return _parser().parse_args(argv)


def batch_scheduler(args):
    """The batcher the flags ask for (`--enable_batching`, `--batching_parameters_file`), or None."""
    if not args.enable_batching:
        return None
    from kerasbert.serving.batching import batch_scheduler_from_parameters
    from kerasbert.serving.text_protos import BatchingParameters, read_text_proto_file

    if args.batching_parameters_file:
        parameters = read_text_proto_file(args.batching_parameters_file, BatchingParameters)
        try:
            return batch_scheduler_from_parameters(parameters)
        except ValueError as error:
            raise ValueError(f"{args.batching_parameters_file}: {error}") from None
    parameters = BatchingParameters()
    for flag in _BATCHING_SHORTHANDS:
        if getattr(args, flag) is not None:
            getattr(parameters, flag).value = getattr(args, flag)
    return batch_scheduler_from_parameters(parameters)


def _main(args) -> int:
    """Runs the server until interrupted."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _check_flags(args)
    configs = _model_configs(args)
    batcher = batch_scheduler(args)
    prometheus_path = None
    if args.monitoring_config_file:
        from kerasbert.serving.metrics import read_monitoring_config_file

        prometheus_path = read_monitoring_config_file(args.monitoring_config_file)
    cli.load_tensorflow(args.debug)
    from kerasbert.serving.app import create_app
    from kerasbert.serving.grpc_api import create_grpc_server
    from kerasbert.serving.model_api import ModelApi
    from kerasbert.serving.model_manager import ModelManager

    manager = ModelManager(configs, poll_wait_seconds=args.file_system_poll_wait_seconds)
    model_api = ModelApi(manager, batcher=batcher, num_threads=args.rest_api_num_threads or None)
    app = None
    if args.rest_api_port:
        app = create_app(
            model_api,
            max_body_bytes=args.max_body_bytes,
            rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
            enable_cors=args.rest_api_enable_cors_support,
            prometheus_path=prometheus_path,
        )

    def make_grpc_server():
        server, port = create_grpc_server(model_api, args.host, args.port or None)
        if args.grpc_socket_path:
            server.add_insecure_port(f"unix:{args.grpc_socket_path}")
        return server, port

    sock = listening_socket(args.host, args.rest_api_port) if app is not None else None
    manager.poll()
    manager.start()

    def ready(grpc_port):
        if args.port:
            log.info("%s%s:%d ...", GRPC_READY_MESSAGE, url_host(args.host), grpc_port)
        if args.grpc_socket_path:
            log.info("%sUNIX socket %s ...", GRPC_READY_MESSAGE, args.grpc_socket_path)
        if sock is None:
            return
        host, port = sock.getsockname()[:2]
        log.info("%s%s:%d ...", READY_MESSAGE, url_host(host), port)
        log.info(
            "Development server: production stays TF Serving. Try the models at http://%s:%d/",
            url_host(host),
            port,
        )
        if (
            importlib.util.find_spec("httptools") is None
            or importlib.util.find_spec("uvloop") is None
        ):
            log.info(
                "Serving with uvicorn's pure-Python HTTP stack; `pip install httptools uvloop` roughly doubles throughput"
            )

    try:
        run_servers(app, sock, make_grpc_server, ready)
    finally:
        manager.stop()
        model_api.shutdown()
        if sock is not None:
            sock.close()
    return 0


# Bad flags or a bad config file: one line and status 2.
main = cli.command(parse_args, _main)


if __name__ == "__main__":
    sys.exit(main())
