"""benchmarks/load_test.py, small: it stops by itself and counts what it sent."""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from kerasbert.serving.app import create_app
from kerasbert.serving.model_config import ServedModelConfig
from kerasbert.serving.model_manager import ModelManager
from tests.support.servers import background_server

LOAD_TEST = Path(__file__).resolve().parents[1] / "benchmarks" / "load_test.py"


@pytest.fixture(scope="module")
def load_test():
    spec = importlib.util.spec_from_file_location("kerasbert_load_test", LOAD_TEST)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_load_run_sends_every_request_without_errors(exported_model, tmp_path, load_test, capsys):
    shutil.copytree(exported_model, tmp_path / "tiny" / "1")
    manager = ModelManager([ServedModelConfig("tiny", tmp_path / "tiny")], poll_wait_seconds=0)
    manager.poll()
    app = create_app(manager, enable_batching=True, max_batch_size=8, batch_timeout_micros=2000)
    with background_server(app) as url:
        result = load_test.run_load(
            url, "tiny", requests=60, concurrency=4, texts_per_request=2, deadline_seconds=300
        )
        assert (
            load_test.main(
                ["--url", url, "--model_name", "tiny", "--requests", "20", "--concurrency", "2"]
            )
            == 0
        )
    assert (result.requests, result.errors, len(result.latencies)) == (60, 0, 60)
    assert 0 < result.percentile(50) <= result.percentile(99) <= max(result.latencies)
    assert result.requests_per_second > 0
    table = capsys.readouterr().out
    assert "| server | requests | errors | requests/s | p50 ms | p99 ms |" in table
    assert f"| {url} | 20 | 0 |" in table


def test_failed_requests_are_counted_not_raised(load_test):
    result = load_test.run_load(
        "http://127.0.0.1:9", "tiny", requests=5, concurrency=2, timeout=5, warmup=0
    )
    assert (result.requests, result.errors, result.latencies) == (5, 5, [])
    assert result.first_error.startswith("ConnectionRefusedError")


def test_bad_arguments_exit_2(load_test):
    assert load_test.main(["--model_name", "tiny"]) == 2
    assert load_test.main(["--url", "http://x", "--requests", "0"]) == 2
