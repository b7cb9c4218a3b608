"""benchmarks/load_test.py, small: it stops by itself and counts what it sent."""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from kerasbert.serving.batching import BatchScheduler
from kerasbert.serving.model_api import ModelApi
from kerasbert.serving.model_config import ServedModelConfig
from kerasbert.serving.model_manager import ModelManager
from tests.support.servers import background_servers

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
    model_api = ModelApi(manager, batcher=BatchScheduler(8, 2000))
    with background_servers(model_api) as (url, target):
        result = load_test.run_load(
            url, "tiny", requests=60, concurrency=4, texts_per_request=2, deadline_seconds=300
        )
        grpc_result = load_test.run_grpc_load(
            target, "tiny", requests=30, concurrency=4, texts_per_request=2, deadline_seconds=300
        )
        argv = ["--url", url, "--grpc_target", target, "--model_name", "tiny", "--requests", "20"]
        assert load_test.main([*argv, "--concurrency", "2"]) == 0
    assert (result.requests, result.errors, len(result.latencies)) == (60, 0, 60)
    assert (grpc_result.requests, grpc_result.errors, len(grpc_result.latencies)) == (30, 0, 30)
    assert 0 < result.percentile(50) <= result.percentile(99) <= max(result.latencies)
    assert result.requests_per_second > 0
    table = capsys.readouterr().out
    assert "| server | requests | errors | requests/s | p50 ms | p99 ms |" in table
    assert f"| {url} REST | 20 | 0 |" in table
    assert f"| {url} gRPC | 20 | 0 |" in table


def test_failed_requests_are_counted_not_raised(load_test):
    result = load_test.run_load(
        "http://127.0.0.1:9", "tiny", requests=5, concurrency=2, timeout=5, warmup=0
    )
    assert (result.requests, result.errors, result.latencies) == (5, 5, [])
    assert result.first_error.startswith("ConnectionRefusedError")


def test_bad_arguments_exit_2(load_test):
    assert load_test.main(["--model_name", "tiny"]) == 2
    assert load_test.main(["--url", "http://x", "--requests", "0"]) == 2
