"""Running the REST app: on a socket with uvicorn, in the foreground or in a background thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Iterator

import uvicorn

READY_MESSAGE = "Exporting HTTP/REST API at:"


def listening_socket(host: str, port: int) -> socket.socket:
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


@contextlib.contextmanager
def background_server(app, host="127.0.0.1", port=0) -> Iterator[str]:
    """Serves `app` from a thread of this process (tests, notebooks); yields its URL.

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


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
