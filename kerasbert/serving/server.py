"""What `python -m kerasbert.serve` runs its APIs on: a listening socket, a uvicorn server, one event loop."""

from __future__ import annotations

import asyncio
import signal
import socket

import uvicorn

# What the server logs once it listens, as tensorflow_model_server does.
READY_MESSAGE = "Exporting HTTP/REST API at:"
GRPC_READY_MESSAGE = "Running gRPC ModelServer at "


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host:port` (port 0: any free one) and listening."""
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


def uvicorn_server(app) -> uvicorn.Server:
    """A uvicorn server for `app`, quiet, that leaves the process's logging alone."""
    # log_config=None: uvicorn's own dictConfig would close every logging
    # handler of the host process (a notebook's, pytest's); its loggers go
    # through whatever logging the process has instead.
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_keep_alive=30,
    )
    return uvicorn.Server(config)


def url_host(host: str) -> str:
    """`host` as it goes into a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


async def serve_apis(app, sock, make_grpc_server, ready=None, rest_server=None):
    """Serves the gRPC API and, when `app` is given, the REST app on `sock`, on this event loop.

    Both APIs share the loop, as the batcher they share needs (and a
    `grpc.aio` server is made on the loop it serves from). Returns on SIGINT
    or SIGTERM, or once `rest_server.should_exit` is set.

    Args:
        app: the REST app, or None for gRPC alone.
        sock: the REST app's listening socket.
        make_grpc_server: `make_grpc_server() -> (grpc.aio.Server, port)`,
            e.g. a `functools.partial` of `grpc_api.create_grpc_server`.
        ready: `ready(grpc_port)`, called once both listen.
        rest_server: the `uvicorn.Server` to run `app` with; one is made by default.
    """
    grpc_server, grpc_port = make_grpc_server()
    await grpc_server.start()
    try:
        if ready is not None:
            ready(grpc_port)
        if app is not None:
            server = rest_server or uvicorn_server(app)
            await server.serve(sockets=[sock])
        else:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await stop.wait()
    finally:
        await grpc_server.stop(grace=1)


def run_servers(app, sock, make_grpc_server, ready=None):
    """Runs `serve_apis` until SIGINT or SIGTERM, on uvicorn's event loop (uvloop when installed)."""
    loop_factory = uvicorn.Config(app or (lambda *a: None)).get_loop_factory()
    loop = loop_factory() if loop_factory is not None else asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve_apis(app, sock, make_grpc_server, ready))
    finally:
        asyncio.set_event_loop(None)
        loop.close()
