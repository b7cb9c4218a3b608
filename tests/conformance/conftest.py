"""The server the conformance suite talks to: kerasbert.serve, or any TF Serving.

By default the suite starts `python -m kerasbert.serve` (the real command
line, in a subprocess) on a free loopback port over a copy of the session's
freshly exported tiny BERT, served as "tiny", and stops it at the end.

To run the same cases, unchanged, against a real TF Serving, serve a
kerasbert export there and point the suite at it:

    docker run --rm -p 8501:8501 -v "$PWD/saved_models/quickstart:/models/tiny" \\
        -e MODEL_NAME=tiny tensorflow/serving
    KERASBERT_TFSERVING_URL=http://localhost:8501 .venv/bin/python -m pytest tests/conformance -q

Environment:
    KERASBERT_TFSERVING_URL: the server's REST address; unset starts kerasbert.serve.
    KERASBERT_TFSERVING_MODEL: the model's name there (default "tiny").
    KERASBERT_TFSERVING_MAX_BODY_BYTES: the server's request size limit, if
        it has one (TF Serving has none; a proxy in front may); without it
        the 413 case is skipped for an external server.
"""

import dataclasses
import os
import shutil

import httpx
import pytest

from tests.support.servers import ServerProcess

LOCAL_MAX_BODY_BYTES = 65536


@dataclasses.dataclass(frozen=True)
class Target:
    """The server under test.

    Attributes:
        url: its REST address.
        model: the model's name.
        version: the version it serves, as reported by its status API.
        local: whether it is kerasbert.serve started by this suite.
        max_body_bytes: its request size limit, when known.
    """

    url: str
    model: str
    version: int
    local: bool
    max_body_bytes: int | None


def served_version(url, model) -> int:
    response = httpx.get(f"{url}/v1/models/{model}", timeout=30)
    response.raise_for_status()
    return max(
        int(s["version"])
        for s in response.json()["model_version_status"]
        if s["state"] == "AVAILABLE"
    )


@pytest.fixture(scope="session")
def target(request, tmp_path_factory):
    url = os.environ.get("KERASBERT_TFSERVING_URL")
    if url:
        url = url.rstrip("/")
        model = os.environ.get("KERASBERT_TFSERVING_MODEL", "tiny")
        limit = os.environ.get("KERASBERT_TFSERVING_MAX_BODY_BYTES")
        yield Target(url, model, served_version(url, model), False, int(limit) if limit else None)
        return
    exported = request.getfixturevalue("exported_model")
    base = tmp_path_factory.mktemp("conformance") / "tiny"
    shutil.copytree(exported, base / "1")
    log_path = tmp_path_factory.mktemp("conformance-log") / "serve.log"
    args = [
        "--model_name",
        "tiny",
        "--model_base_path",
        base,
        "--max_body_bytes",
        LOCAL_MAX_BODY_BYTES,
    ]
    with ServerProcess(args, log_path=log_path) as server:
        yield Target(
            server.url, "tiny", served_version(server.url, "tiny"), True, LOCAL_MAX_BODY_BYTES
        )


@pytest.fixture(scope="session")
def http(target):
    with httpx.Client(base_url=target.url, timeout=httpx.Timeout(60.0)) as client:
        yield client
