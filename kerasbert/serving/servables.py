"""One loaded version of a model: loaded as TF Serving loads it, warmed up, and called.

`load_servable` loads a version directory as a `SavedModelBundle` and
replays its warm-up records (a failing record fails the load, with that
request's status, as in TF Serving); `call_signature` runs a signature on
numpy inputs, with TensorFlow's errors turned into `RestError`s.

Reference: TF Serving's `saved_model_warmup.cc` (https://github.com/tensorflow/serving).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Mapping

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from kerasbert.serving.rest.errors import RestError, invalid_argument
from kerasbert.serving.saved_model_bundle import (
    WARMUP_FILE,
    SavedModelBundle,
    error_message,
    warmup_requests,
)

# The server's one logger, whichever of its modules writes.
log = logging.getLogger("kerasbert.serve")


@dataclasses.dataclass(eq=False)
class Servable:
    """One loaded version of a model.

    A request keeps a reference to its `Servable` for its whole life, so a
    version unloaded meanwhile stays usable until the request is answered.

    Attributes:
        name: the model's name.
        version: the version number (the directory's name).
        path: the version directory.
        bundle: the loaded model: a `SavedModelBundle`, or any object with
            its `signature_defs` and `run(key, inputs)`.
    """

    name: str
    version: int
    path: Path
    bundle: object

    @property
    def id(self) -> str:
        return f"{{name: {self.name} version: {self.version}}}"

    @property
    def signature_defs(self) -> dict:
        """`{key: SignatureDef}` of the MetaGraphDef tagged `serve`."""
        return self.bundle.signature_defs


def load_servable(name: str, version: int, path) -> Servable:
    """Loads a SavedModel version directory as TF Serving does, then warms it up.

    The model is a `SavedModelBundle`: a TF1 Session on the MetaGraph, its
    variables restored and its init op run. Warm-up replays
    `assets.extra/tf_serving_warmup_requests` when the export has one (as TF
    Serving does, and a failing record fails the load); otherwise it calls
    each signature once on placeholder inputs, so that the first real
    request doesn't pay for TensorFlow's graph set-up.

    Args:
        name: the model's name.
        version: its version number.
        path: the version directory.

    Returns:
        The loaded `Servable`.

    Raises:
        RestError: TensorFlow failed to restore the model or to run a
            warm-up record; its status code and message.
        OSError: no SavedModel there.
    """
    path = Path(path)
    if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
        raise FileNotFoundError(f"No saved_model.pb or saved_model.pbtxt in {path}")
    try:
        bundle = SavedModelBundle(path)
    except tf.errors.OpError as error:
        raise RestError(
            error_message(error), TF_ERROR_CODES.get(error.error_code, "UNKNOWN")
        ) from None
    servable = Servable(name=name, version=int(version), path=path, bundle=bundle)
    try:
        _warm_up(servable)
    except BaseException:
        bundle.close()
        raise
    return servable


def _warm_up(servable: Servable):
    if not (servable.path / "assets.extra" / WARMUP_FILE).is_file():
        for key in servable.signature_defs:
            with contextlib.suppress(Exception):
                call_signature(servable, key, _placeholder_inputs(servable.signature_defs[key]))
        return
    count = 0
    # A failing record fails the load with that request's own status, as
    # in TF Serving.
    try:
        for request in warmup_requests(servable.path):
            if request.kind not in ("predict_log", "classify_log", "regress_log"):
                log.warning(
                    "Skipping a warm-up record of kind %s for %s", request.kind, servable.id
                )
                continue
            call_signature(servable, request.signature_key, request.inputs)
            count += 1
    except ValueError as error:
        raise RestError(str(error), "INVALID_ARGUMENT") from None
    log.info(
        "Finished reading warmup data for model at %s. Number of warmup records read: %d.",
        servable.path / "assets.extra" / WARMUP_FILE,
        count,
    )


def _placeholder_inputs(signature) -> dict:
    inputs = {}
    for name, info in signature.inputs.items():
        shape = (
            [1]
            if info.tensor_shape.unknown_rank
            else [max(d.size, 1) for d in info.tensor_shape.dim]
        )
        if info.dtype == types_pb2.DT_STRING:
            inputs[name] = np.full(shape, b"", dtype=object)
        else:
            inputs[name] = np.zeros(shape, dtype=tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
    return inputs


def call_signature(servable: Servable, key: str, inputs: Mapping[str, np.ndarray]) -> dict:
    """Runs one signature on numpy inputs; TensorFlow's errors become `RestError`s."""
    signature = servable.signature_defs.get(key)
    if signature is None:
        raise invalid_argument(f'Serving signature key "{key}" not found.')
    try:
        # Converted as TF Serving converts a request's values: to the
        # signature's dtype, refusing what doesn't fit it.
        arrays = {
            name: tf.constant(value, dtype=tf.dtypes.as_dtype(signature.inputs[name].dtype)).numpy()
            for name, value in inputs.items()
        }
        return servable.bundle.run(key, arrays)
    except tf.errors.OpError as error:
        code = TF_ERROR_CODES.get(error.error_code, "UNKNOWN")
        raise RestError(error_message(error), code) from None
    except (KeyError, TypeError, ValueError) as error:
        raise invalid_argument(
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        ) from None


TF_ERROR_CODES = {
    tf.errors.CANCELLED: "CANCELLED",
    tf.errors.UNKNOWN: "UNKNOWN",
    tf.errors.INVALID_ARGUMENT: "INVALID_ARGUMENT",
    tf.errors.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
    tf.errors.NOT_FOUND: "NOT_FOUND",
    tf.errors.ALREADY_EXISTS: "ALREADY_EXISTS",
    tf.errors.PERMISSION_DENIED: "PERMISSION_DENIED",
    tf.errors.RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED",
    tf.errors.FAILED_PRECONDITION: "FAILED_PRECONDITION",
    tf.errors.ABORTED: "ABORTED",
    tf.errors.OUT_OF_RANGE: "OUT_OF_RANGE",
    tf.errors.UNIMPLEMENTED: "UNIMPLEMENTED",
    tf.errors.INTERNAL: "INTERNAL",
    tf.errors.UNAVAILABLE: "UNAVAILABLE",
    tf.errors.DATA_LOSS: "DATA_LOSS",
    tf.errors.UNAUTHENTICATED: "UNAUTHENTICATED",
}
