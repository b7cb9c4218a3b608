"""A TF Serving-compatible REST server, for development.

`python -m kerasbert.serve` serves SavedModels over the REST API of
`tensorflow_model_server`, with its flags and their meanings: the same URLs,
JSON request and response shapes, status codes and error messages, so a
client written against it works unchanged against TF Serving. It is a
development server, for trying a model on a laptop and for tests;
production stays TF Serving.

This module is the command line. The server is `kerasbert.serving`: `app`
(the REST API), `server` (running it), `model_manager`, `model_config` and
`servables` (versions, their loading and warm-up), `batching`, and `rest/`,
TF Serving's JSON dialect (errors, request bodies to tensors, tensors to
responses).

Models load as TF Serving loads them (`kerasbert.serving.saved_model_bundle`: a
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
import importlib.resources
import importlib.util
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kerasbert import cli
from kerasbert.serving.server import READY_MESSAGE, listening_socket, url_host, uvicorn_server

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
            "A development server for SavedModels with TF Serving's REST API and flags "
            "(tensorflow_model_server). Production stays TF Serving."
        ),
        allow_abbrev=False,
    )
    add = parser.add_argument
    add(
        "--rest_api_port",
        type=int,
        default=8501,
        help="port of the REST API (0: any free port) [8501]",
    )
    add(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 for every interface [127.0.0.1]",
    )
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
    add(
        "--rest_api_num_threads",
        type=int,
        default=0,
        help="threads for model calls; 0: 4 per CPU [0]",
    )
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
    add(
        "--max_batch_size",
        type=int,
        default=32,
        help="with batching, the most rows in one model call [32]",
    )
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


def _model_configs(args) -> list[ServedModelConfig]:
    # TensorFlow loads with these: after the flags are parsed, so --help is instant.
    from kerasbert.serving.model_config import ServedModelConfig, read_model_config_file

    if args.model_config_file:
        return read_model_config_file(args.model_config_file)
    if not args.model_base_path:
        raise ValueError(
            "Give --model_base_path (with --model_name), or --model_config_file. "
            "Example: --model_name quickstart --model_base_path saved_models/quickstart"
        )
    return [ServedModelConfig(args.model_name, Path(args.model_base_path).expanduser().absolute())]


def _check_flags(args):
    checks = [
        ("rest_api_port", 0 <= args.rest_api_port <= 65535, "an integer from 0 to 65535"),
        (
            "file_system_poll_wait_seconds",
            args.file_system_poll_wait_seconds >= 0,
            "an integer >= 0",
        ),
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


def parse_args(argv=None):
    return _parser().parse_args(argv)


def _main(args) -> int:
    """Runs the server until interrupted."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _check_flags(args)
    configs = _model_configs(args)
    from kerasbert.serving.app import create_app
    from kerasbert.serving.model_manager import ModelManager

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
    sock = listening_socket(args.host, args.rest_api_port)
    manager.poll()
    manager.start()
    host, port = sock.getsockname()[:2]
    log.info("%s%s:%d ...", READY_MESSAGE, url_host(host), port)
    log.info(
        "Development server: production stays TF Serving. Try the models at http://%s:%d/",
        url_host(host),
        port,
    )
    if importlib.util.find_spec("httptools") is None or importlib.util.find_spec("uvloop") is None:
        log.info(
            "Serving with uvicorn's pure-Python HTTP stack; `pip install httptools uvloop` roughly doubles throughput"
        )
    try:
        uvicorn_server(app).run(sockets=[sock])
    finally:
        manager.stop()
        sock.close()
    return 0


# Bad flags or a bad config file: one line and status 2.
main = cli.command(parse_args, _main)


if __name__ == "__main__":
    sys.exit(main())
