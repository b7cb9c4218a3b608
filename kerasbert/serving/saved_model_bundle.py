"""A SavedModel loaded the way TF Serving loads it.

`tensorflow_model_server`, TensorFlow's C, C++, Java and Go APIs and
`saved_model_cli run` do not use `tf.saved_model.load`. They load a
SavedModelBundle: import the MetaGraphDef tagged `serve` into a TF1 Session,
run the saver's restore op on `variables/`, run the init op (lookup tables
and other resources), then run each signature by the tensor names in its
SignatureDef. `tf.saved_model.load` rebuilds Python objects instead and binds
variables through the object graph, so an export can answer there and fail
here (keras-team/keras#20096): every variable a signature reads must be one
the restore op fills. kerasbert serves and scores exports through this class
alone, so whatever it answers, TF Serving answers too.

This module imports only numpy, TensorFlow, TensorFlow Text (whose ops the
tokenizer in the graph needs, as TF Serving's model server links them in)
and the protos of tensorflow-serving-api: the export check and the
TensorFlow 2.20 compatibility test run it in processes that have nothing else.

Example:

>>> bundle = SavedModelBundle("saved_models/quickstart/1")
>>> bundle.run("serving_default", {"text": np.array([b"What a superb film."], dtype=object)})["label"]
array([b'positive'], dtype=object)

Reference: TF Serving's `saved_model_warmup.cc`, TensorFlow's
`cc/saved_model/loader.cc` (https://github.com/tensorflow/serving,
https://github.com/tensorflow/tensorflow).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops of kerasbert's tokenizers)
from tensorflow.python.util import deprecation
from tensorflow_serving.apis import prediction_log_pb2

SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"
# The method names TF Serving's Predict, Classify and Regress APIs accept.
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
WARMUP_FILE = "tf_serving_warmup_requests"
# TF Serving replays at most this many warm-up records.
MAX_WARMUP_RECORDS = 1000


class SavedModelBundle:
    """A SavedModel in its own TF1 Session, run by signature tensor names.

    `run` is safe to call from several threads at once, as `Session.run` is.

    Args:
        path: a SavedModel directory (a version directory).
        tags: the MetaGraphDef's tags; TF Serving loads `serve`.
        intra_op_threads: threads inside one op; 0 lets TensorFlow choose,
            as TF Serving's `--tensorflow_intra_op_parallelism` does.
        inter_op_threads: ops run at once; 0 lets TensorFlow choose.

    Attributes:
        path: the directory.
        signature_defs: `{key: SignatureDef}`, without TensorFlow's internal
            `__saved_model_init_op`.

    Raises:
        OSError, RuntimeError or `tf.errors.OpError`: the directory holds no
            loadable SavedModel, or its restore or init op fails.
    """

    def __init__(self, path, tags=(SERVE_TAG,), intra_op_threads=0, inter_op_threads=0):
        self.path = Path(path)
        self.graph = tf.Graph()
        config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=intra_op_threads,
            inter_op_parallelism_threads=inter_op_threads,
        )
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        try:
            # The TF1 loader is deprecated for Python users, not for servers:
            # it is the C++ loader's path, which is the point here.
            with self.graph.as_default(), deprecation.silence(), quiet_tensorflow_logger():
                meta_graph = tf.compat.v1.saved_model.loader.load(
                    self.session, list(tags), str(self.path)
                )
        except BaseException:
            self.session.close()
            raise
        self.signature_defs = {
            key: signature
            for key, signature in meta_graph.signature_def.items()
            if not key.startswith("__")
        }

    def run(self, key: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs signature `key` on `{input name: array}`; returns every output.

        Raises:
            KeyError: no signature `key`.
            ValueError: an input is missing or not one of the signature's.
            `tf.errors.OpError`: TensorFlow refused the inputs or failed.
        """
        signature = self.signature_defs.get(key)
        if signature is None:
            raise KeyError(key)
        unknown = sorted(set(inputs) - set(signature.inputs))
        missing = sorted(set(signature.inputs) - set(inputs))
        if unknown or missing:
            raise ValueError(
                f"signature {key!r} takes inputs {sorted(signature.inputs)}; "
                f"received {sorted(inputs)}"
            )
        feed = {signature.inputs[name].name: value for name, value in inputs.items()}
        fetches = {name: info.name for name, info in signature.outputs.items()}
        return self.session.run(fetches, feed_dict=feed)

    def close(self):
        """Frees the Session and its resources."""
        self.session.close()


@contextlib.contextmanager
def quiet_tensorflow_logger():
    """TensorFlow's Python loggers (its own and absl's) at ERROR for the block.

    Loading ("Restoring parameters from ...") and saving ("Assets written
    to ...", a line per function whose captured tokenizer constants have
    numeric names) log lines that say nothing a user can act on.
    """
    loggers = [tf.get_logger(), logging.getLogger("absl")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def error_message(error: tf.errors.OpError) -> str:
    """A TensorFlow error's message without the graph's Python stack traces.

    Example: "Could not find variable logits/kernel. ..." rather than
    "Graph execution error:", "Detected at node ...", and the stack.
    """
    message = error.message
    lines = message.splitlines()
    if not lines or not lines[0].startswith("Graph execution error"):
        return message.strip()
    kept, skipping = [], False
    for line in lines[1:]:
        if line.startswith("Detected at node"):
            skipping = True
            continue
        stripped = line.strip()
        if skipping and (
            stripped == "<stack traces unavailable>"
            or stripped.startswith('File "')
            or line.startswith("    ")
        ):
            continue
        skipping = False
        if stripped:
            kept.append(line)
    return "\n".join(kept).strip() or message.strip()


def describe_error(error: BaseException) -> str:
    """`Type: first line of the message`, TensorFlow's stack traces left out."""
    message = error_message(error) if isinstance(error, tf.errors.OpError) else str(error)
    first = message.strip().splitlines()[0] if message.strip() else ""
    return f"{type(error).__name__}: {first}"


class WarmupError(ValueError):
    """A warm-up record failed: TF Serving would not load the version."""


@dataclasses.dataclass(frozen=True)
class WarmupRequest:
    """One record of `assets.extra/tf_serving_warmup_requests`.

    Attributes:
        kind: the PredictionLog's kind: `predict_log`, `classify_log`,
            `regress_log`, or another that kerasbert does not replay.
        signature_key: the signature the request names (`serving_default`
            when it names none).
        inputs: `{input name: array}` as the signature takes them; for a
            classify or regress request, `{"inputs": serialized examples}`.
    """

    kind: str
    signature_key: str
    inputs: dict


def warmup_requests(version_dir, limit=MAX_WARMUP_RECORDS) -> Iterator[WarmupRequest]:
    """The warm-up requests of an export, in file order; none without a file.

    Raises:
        ValueError: a classify or regress request holds no examples.
    """
    path = Path(version_dir) / "assets.extra" / WARMUP_FILE
    if not path.is_file():
        return
    for record in tf.data.TFRecordDataset(str(path)).take(limit):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        kind = entry.WhichOneof("log_type")
        if kind == "predict_log":
            request = entry.predict_log.request
            inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        elif kind in ("classify_log", "regress_log"):
            request = getattr(entry, kind).request
            inputs = {"inputs": np.array(serialized_examples(request.input), dtype=object)}
        else:
            yield WarmupRequest(kind or "", DEFAULT_SIGNATURE, {})
            continue
        yield WarmupRequest(kind, request.model_spec.signature_name or DEFAULT_SIGNATURE, inputs)


def replay_warmup(bundle: SavedModelBundle) -> Iterator[tuple[WarmupRequest, dict]]:
    """Runs the export's warm-up records in order, as TF Serving does while loading.

    Yields:
        `(request, outputs)` for each record.

    Raises:
        WarmupError: a record failed, or is of a kind kerasbert does not
            replay; says which record, its signature and the error.
    """
    for index, request in enumerate(warmup_requests(bundle.path)):
        where = f"warm-up record {index} ({request.signature_key})"
        if request.kind not in ("predict_log", "classify_log", "regress_log"):
            raise WarmupError(f"warm-up record {index}: unsupported kind {request.kind or 'none'}")
        try:
            outputs = bundle.run(request.signature_key, request.inputs)
        except (tf.errors.OpError, KeyError, ValueError) as error:
            raise WarmupError(f"{where}: {describe_error(error)}") from None
        yield request, outputs


def serialized_examples(request_input) -> list[bytes]:
    """The `tf.Example` bytes a classify or regress `Input` feeds the model.

    With a context, TF Serving feeds each example's bytes after the
    context's, which parse as one Example with the features of both.

    Raises:
        ValueError: the input holds no examples.
    """
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in request_input.example_list.examples]
    if kind == "example_list_with_context":
        with_context = request_input.example_list_with_context
        context = with_context.context.SerializeToString()
        return [context + e.SerializeToString() for e in with_context.examples]
    raise ValueError("Input is empty.")
