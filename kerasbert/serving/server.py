"""What `python -m kerasbert.serve` runs the REST app on: a listening socket and a uvicorn server."""

from __future__ import annotations

import socket

import uvicorn

# What the server logs once it listens, as tensorflow_model_server does.
READY_MESSAGE = "Exporting HTTP/REST API at:"


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
