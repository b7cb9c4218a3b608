"""The export-time check: a staged export, loaded as TF Serving loads it.

Before a version is renamed into place, a fresh process (one that has
imported only TensorFlow, TensorFlow Text and `kerasbert.serving.saved_model_bundle`,
like a model server) loads the staged directory as a `SavedModelBundle` (a
TF1 Session, the restore op, the init op) and replays every warm-up record,
which between them run every signature. The exporting process then runs the
same requests through the model it traced and compares: every output must
agree to 1e-5. `tf.saved_model.load` can't stand in for this: it binds
variables through the object graph, and an export that answers there may
read variables that TF Serving's restore op never fills.

`ExportCheck` starts its process at once, so TensorFlow imports there while
the exporter traces and saves; `check_export` then hands it the directory.

The child's side is this module's `__main__`:
`python -m kerasbert.exporting.bundle_check` reads `{"saved_model_dir", "responses"}`
as one JSON line on stdin, writes one `PredictResponse` per warm-up record to
the TFRecord file `responses`, and prints `{"records": N}` or
`{"error": "..."}` as the last line of stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# Outputs that differ by more than this (absolute, plus as much relative to
# the expected value) fail the check. A bfloat16 export (`export.dtype`) is
# held to it too: bfloat16 is far from float32 (8 bits of mantissa), but both
# sides here run the same bfloat16 graph on the same machine's kernels, so
# they round alike; a difference means the served graph is not the traced one.
TOLERANCE = 1e-5


class ExportCheckError(ValueError):
    """A staged export fails when loaded and run as TF Serving would."""


class ExportCheck:
    """A fresh Python process that will load one export as TF Serving does.

    Args:
        python: the interpreter to run it with; another environment's (e.g.
            an older TensorFlow's) checks that TensorFlow instead.
        env: extra environment variables for it.

    Example:
    >>> check = ExportCheck()          # TensorFlow imports there meanwhile
    >>> ...                            # trace and save the export
    >>> check_export(staging_dir, module.run, check)
    """

    def __init__(self, python=sys.executable, env=None):
        self._stdout = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
        # Not pipes: a chatty TensorFlow would fill one while nobody reads it.
        self.process = subprocess.Popen(
            [str(python), "-m", "kerasbert.exporting.bundle_check"],
            stdin=subprocess.PIPE,
            stdout=self._stdout,
            stderr=self._stderr,
            text=True,
            env=_child_env(env),
        )

    def replay(self, saved_model_dir, timeout=600) -> list[dict]:
        """Loads `saved_model_dir` there and replays its warm-up records.

        Returns:
            The outputs of each record, `{output name: array}`, in file order.

        Raises:
            ExportCheckError: the load or a record failed; says which.
        """
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        with tempfile.TemporaryDirectory(prefix="kerasbert-check-") as scratch:
            responses = Path(scratch) / "responses.tfrecord"
            request = {
                "saved_model_dir": str(Path(saved_model_dir).resolve()),
                "responses": str(responses),
            }
            try:
                self.process.communicate(json.dumps(request) + "\n", timeout=timeout)
            except subprocess.TimeoutExpired:
                self.close()
                raise ExportCheckError(
                    f"loading as TF Serving does: no answer in {timeout} s"
                ) from None
            result = self._result()
            if "error" in result:
                raise ExportCheckError(result["error"])
            return [
                {
                    name: tf.make_ndarray(proto)
                    for name, proto in predict_pb2.PredictResponse.FromString(
                        record.numpy()
                    ).outputs.items()
                }
                for record in tf.data.TFRecordDataset(str(responses))
            ]

    def _result(self) -> dict:
        self._stdout.seek(0)
        lines = self._stdout.read().strip().splitlines()
        try:
            return json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            self._stderr.seek(0)
            tail = " ".join(self._stderr.read().strip().splitlines()[-3:])
            return {
                "error": f"the checking process failed (exit {self.process.returncode}): {tail}"
            }

    def close(self):
        """Stops the process if it still runs; frees its files."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stdout.close()
        self._stderr.close()


def _child_env(extra):
    """This environment, quiet, with this kerasbert first on the path: the
    process runs this source even in an environment that never installed it."""
    root = str(Path(__file__).resolve().parents[2])  # the directory that holds kerasbert/
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=path, **(extra or {}))


def check_export(saved_model_dir, run, check=None, timeout=600) -> int:
    """Checks that TF Serving would load, warm up and answer as `run` does.

    Args:
        saved_model_dir: the staged export, with its warm-up records.
        run: `run(signature key, {input name: array}) -> {output: array}`,
            the exporting process's own model (`ServingModule.run`).
        check: a started `ExportCheck`; a new one when None.
        timeout: seconds to wait for the checking process.

    Returns:
        The number of warm-up records replayed.

    Raises:
        ExportCheckError: the load, a record or a comparison failed, or a
            signature has no warm-up record; one line that says which.
    """
    from kerasbert.exporting.inspection import signature_summary
    from kerasbert.serving.saved_model_bundle import warmup_requests

    check = check or ExportCheck()
    try:
        served = check.replay(saved_model_dir, timeout)
    finally:
        check.close()
    requests = list(warmup_requests(saved_model_dir))
    if len(served) != len(requests):
        raise ExportCheckError(f"{len(served)} answers to {len(requests)} warm-up records")
    for index, (request, outputs) in enumerate(zip(requests, served)):
        where = f"warm-up record {index} ({request.signature_key})"
        expected = run(request.signature_key, request.inputs)
        if set(outputs) != set(expected):
            raise ExportCheckError(
                f"{where}: outputs {sorted(outputs)}, expected {sorted(expected)}"
            )
        for name, value in expected.items():
            difference = _difference(np.asarray(outputs[name]), np.asarray(value))
            if difference:
                raise ExportCheckError(f"{where}: output {name!r} {difference}")
    signature_keys = set(signature_summary(saved_model_dir))
    untried = sorted(signature_keys - {request.signature_key for request in requests})
    if untried:
        raise ExportCheckError(f"no warm-up record runs signature(s) {', '.join(untried)}")
    return len(requests)


def _difference(found, expected) -> str:
    """What is wrong with `found`, or "" when it matches `expected`."""
    if found.shape != expected.shape:
        return f"has shape {found.shape}, expected {expected.shape}"
    if expected.dtype.kind == "f":
        if not np.allclose(found, expected, rtol=TOLERANCE, atol=TOLERANCE):
            worst = float(np.max(np.abs(found.astype(np.float64) - expected)))
            return (
                f"differs from the exporting process's by up to {worst:.3g} (tolerance {TOLERANCE})"
            )
        return ""
    if not np.array_equal(found, expected):
        return "differs from the exporting process's"
    return ""


# === The checking process ===


def _serve_requests(saved_model_dir, responses_path) -> dict:
    """Loads the export as TF Serving does and answers its warm-up records."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from kerasbert.serving.saved_model_bundle import (
        SavedModelBundle,
        WarmupError,
        describe_error,
        replay_warmup,
    )

    try:
        bundle = SavedModelBundle(saved_model_dir)
    except Exception as error:  # noqa: BLE001  (any failure is the answer)
        return {"error": f"loading as TF Serving does: {describe_error(error)}"}
    count = 0
    with tf.io.TFRecordWriter(str(responses_path)) as writer:
        try:
            for _, outputs in replay_warmup(bundle):
                response = predict_pb2.PredictResponse()
                for name, value in outputs.items():
                    response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
                writer.write(response.SerializeToString())
                count += 1
        except WarmupError as error:
            return {"error": str(error)}
    return {"records": count}


def main():
    request = json.loads(sys.stdin.readline())
    result = _serve_requests(request["saved_model_dir"], request["responses"])
    print("\n" + json.dumps(result))


if __name__ == "__main__":
    main()
