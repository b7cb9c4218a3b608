"""What the REST and gRPC APIs share: running signatures, and TF Serving's Classify and Regress.

`ModelApi` holds the `ModelManager`, the thread pool that model calls run
in, the batcher and the metrics. Both APIs convert their requests to numpy
inputs (`rest/` from JSON, `grpc_api` from protos), then call it: the same
request gets the same model call, the same batching and the same errors
(`RestError`, whose `code` is TF Serving's status code name, which the REST
API turns into an HTTP status and the gRPC API into a gRPC status).

Example:

>>> api = ModelApi(manager, batcher=BatchScheduler())
>>> servable = manager.servable("quickstart")
>>> outputs = await api.run(servable, "serving_default", {"text": texts})

Reference: TF Serving's `servables/tensorflow/classifier.cc` and
`regressor.cc` (https://github.com/tensorflow/serving).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os

import numpy as np
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2

from kerasbert.serving.metrics import ServingMetrics
from kerasbert.serving.model_manager import ModelManager
from kerasbert.serving.rest.errors import invalid_argument
from kerasbert.serving.rest.requests import shape_text
from kerasbert.serving.rest.tensors import typed_array
from kerasbert.serving.saved_model_bundle import DEFAULT_SIGNATURE
from kerasbert.serving.servables import Servable, call_signature

__all__ = ["ModelApi"]


class ModelApi:
    """Model calls for both APIs: one thread pool, one batcher, one set of metrics.

    Args:
        manager: the served models.
        batcher: a `BatchScheduler` that merges concurrent calls, or None.
        num_threads: threads for model calls; 4 per CPU by default, like
            TF Serving's REST threads.
        metrics: where requests are counted; a new `ServingMetrics` by default.
    """

    def __init__(
        self,
        manager: ModelManager,
        batcher=None,
        num_threads: int | None = None,
        metrics: ServingMetrics | None = None,
    ):
        if num_threads is not None and num_threads < 1:
            raise ValueError(
                "Invalid value for argument `num_threads`. Expected None or an integer >= 1. "
                f"Received: num_threads={num_threads}"
            )
        self.manager = manager
        self.batcher = batcher
        self.num_threads = num_threads or 4 * (os.cpu_count() or 1)
        self.metrics = metrics if metrics is not None else ServingMetrics()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        # Made on first use and shut down with the servers, so an API can be
        # served more than once.
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.num_threads, thread_name_prefix="kerasbert-serve"
            )
        return self._executor

    def shutdown(self):
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # === Running a signature ===

    async def run(self, servable: Servable, key: str, inputs: dict) -> dict:
        """Runs signature `key` on `inputs` in the thread pool, through the batcher if any."""
        loop = asyncio.get_running_loop()

        async def run(batch_inputs):
            return await loop.run_in_executor(
                self.executor, call_signature, servable, key, batch_inputs
            )

        if self.batcher is not None:
            return await self.batcher.submit((id(servable), key), inputs, run)
        return await run(inputs)

    # === Classify and Regress (classifier.cc, regressor.cc) ===

    def examples_signature(self, servable: Servable, signature_name: str, method: str) -> str:
        """The key of the signature a Classify or Regress request runs, checked as TF Serving checks it.

        GetClassificationSignatureDef / GetRegressionSignatureDef, without
        the method-name check (off by default in TF Serving).
        """
        key = signature_name or DEFAULT_SIGNATURE
        signature = servable.signature_defs.get(key)
        if signature is None:
            raise invalid_argument(f"No signature was found with the name: {key}")
        if len(signature.inputs) != 1:
            raise invalid_argument("Expected one input Tensor.")
        if method == "classify":
            if len(signature.outputs) not in (1, 2):
                raise invalid_argument(
                    f"Expected one or two output Tensors, found {len(signature.outputs)}"
                )
            if "inputs" not in signature.inputs:
                raise invalid_argument(
                    f"No classification inputs found in SignatureDef: {text_format.MessageToString(signature)}"
                )
            if "classes" not in signature.outputs and "scores" not in signature.outputs:
                raise invalid_argument(
                    'Expected classification signature outputs to contain at least one of "classes" or '
                    f'"scores". Signature was: {text_format.MessageToString(signature)}'
                )
        else:
            if len(signature.outputs) != 1:
                raise invalid_argument("Expected one output Tensor.")
            if "inputs" not in signature.inputs:
                raise invalid_argument(
                    f"No regression inputs found in SignatureDef: {text_format.MessageToString(signature)}"
                )
            if "outputs" not in signature.outputs:
                raise invalid_argument(
                    f"No regression outputs found in SignatureDef: {text_format.MessageToString(signature)}"
                )
        return key

    async def run_examples(
        self, servable: Servable, signature_name: str, examples: list[bytes], method: str
    ) -> tuple[str, dict]:
        """`(signature key, outputs)` of serialized `tf.train.Example`s run on a Classify or Regress signature."""
        key = self.examples_signature(servable, signature_name, method)
        inputs = {"inputs": typed_array(examples, [len(examples)], types_pb2.DT_STRING)}
        return key, await self.run(servable, key, inputs)

    async def classify(
        self, servable: Servable, signature_name: str, examples: list[bytes]
    ) -> tuple[str, list[list[tuple[str, float]]]]:
        """`(signature key, results)`: each example's `(label, score)` for every class.

        A signature without `classes` gives empty labels; one without
        `scores` gives scores of 0, as TF Serving's answers do.
        """
        key, outputs = await self.run_examples(servable, signature_name, examples, "classify")
        classes, scores = outputs.get("classes"), outputs.get("scores")
        for output, dtype_ok, dtype_name in (
            (classes, lambda a: a.dtype == object, "DT_STRING"),
            (scores, lambda a: a.dtype == np.float32, "DT_FLOAT"),
        ):
            if output is None:
                continue
            kind = "classes" if output is classes else "scores"
            if output.ndim != 2:
                raise invalid_argument(
                    f"Expected Tensor shape: [batch_size num_classes] but got {shape_text(output.shape)}"
                )
            if not dtype_ok(output):
                raise invalid_argument(
                    f"Expected {kind} Tensor of {dtype_name}. Got: {output.dtype}"
                )
            if output.shape[0] != len(examples):
                raise invalid_argument(
                    f"Expected {kind} output batch size of {len(examples)}. Got: {output.shape[0]}"
                )
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise invalid_argument(
                f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
            )
        num_classes = (classes if classes is not None else scores).shape[1]
        results = []
        for i in range(len(examples)):
            row = []
            for c in range(num_classes):
                text = classes[i, c].decode("utf-8", "replace") if classes is not None else ""
                row.append((text, float(scores[i, c]) if scores is not None else 0.0))
            results.append(row)
        return key, results

    async def regress(
        self, servable: Servable, signature_name: str, examples: list[bytes]
    ) -> tuple[str, list[float]]:
        """`(signature key, values)`: one regression value per example."""
        key, outputs = await self.run_examples(servable, signature_name, examples, "regress")
        values = outputs["outputs"]
        if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
            raise invalid_argument(
                f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {shape_text(values.shape)}"
            )
        if values.shape[0] != len(examples):
            raise invalid_argument(
                f"Input batch size did not match output batch size: {len(examples)} vs. {values.shape[0]}"
            )
        return key, [float(v) for v in values.reshape(-1)]
