"""A client for kerasbert's text classifiers behind TF Serving's REST or gRPC API.

`ServingClient` speaks only TF Serving's public APIs: REST
(`http://host:8501`, `/v1/models/...`) or gRPC (`grpc://host:8500`, with the
official `tensorflow_serving.apis` stubs), and answers the same either way,
so it works alike against TF Serving and against `python -m kerasbert.serve`.
Over REST it needs httpx and nothing of TensorFlow; over gRPC it needs
`tensorflow-serving-api` (and so TensorFlow), imported on first use.

Example:

>>> client = ServingClient("http://localhost:8501", "quickstart")
>>> client.predict(["What a superb film."])  # [(label, probabilities)]
[('positive', [0.0227322578, 0.00727118, 0.969996572])]
>>> ServingClient("grpc://localhost:8500", "quickstart").predict(["What a superb film."])
[('positive', [0.0227322578, 0.00727118, 0.969996572])]
"""

from __future__ import annotations

import base64
import urllib.parse
from typing import Iterable

import httpx

__all__ = ["ServingClient", "ServingError"]


class ServingError(ValueError):
    """The server answered an error, answered nonsense, or could not be reached.

    Attributes:
        status_code: the HTTP status, or None when there was no HTTP answer.
        server_message: the server's `error` text (gRPC: its status
            details), when it sent one.
        grpc_code: over gRPC, the status code's name (e.g. `NOT_FOUND`).
    """

    def __init__(self, message, status_code=None, server_message=None, grpc_code=None):
        super().__init__(message)
        self.status_code = status_code
        self.server_message = server_message
        self.grpc_code = grpc_code


class ServingClient:
    """Predictions from a model that TF Serving (or `kerasbert.serve`) serves.

    Args:
        url: the server's REST address, e.g. `http://localhost:8501`, or
            its gRPC address, e.g. `grpc://localhost:8500`.
        model_name: the model's name on the server.
        version: a version number; the server's latest by default.
        timeout: seconds to wait for each answer.

    Example:

    >>> with ServingClient("http://localhost:8501", "quickstart") as client:
    ...     for label, probabilities in client.predict(["What a superb film.", "Dull."]):
    ...         print(label, max(probabilities))
    """

    def __init__(
        self, url: str, model_name: str, version: int | None = None, timeout: float = 30.0
    ):
        if not isinstance(url, str) or not url.startswith(("http://", "https://", "grpc://")):
            raise ValueError(
                "Invalid value for argument `url`. Expected the server's http://, https:// or grpc:// "
                f"address, e.g. http://localhost:8501 or grpc://localhost:8500. Received: url={url!r}"
            )
        if not isinstance(model_name, str) or not model_name:
            raise ValueError(
                f"Invalid value for argument `model_name`. Expected a non-empty string. Received: model_name={model_name!r}"
            )
        if version is not None and (
            isinstance(version, bool) or not isinstance(version, int) or version < 0
        ):
            raise ValueError(
                f"Invalid value for argument `version`. Expected None or an integer >= 0. Received: version={version!r}"
            )
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(
                f"Invalid value for argument `timeout`. Expected a number > 0. Received: timeout={timeout!r}"
            )
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.version = version
        self.timeout = timeout
        model_path = f"/v1/models/{urllib.parse.quote(model_name, safe='')}"
        if version is not None:
            model_path += f"/versions/{version}"
        self._model_url = self.url + model_path
        self._grpc = _GrpcCalls(self) if url.startswith("grpc://") else None
        self._http = None if self._grpc else httpx.Client(timeout=timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Closes the connections."""
        if self._grpc is not None:
            self._grpc.close()
        else:
            self._http.close()

    # === Requests ===

    def _request(self, method: str, url: str, body=None) -> dict:
        try:
            response = self._http.request(method, url, json=body)
        except httpx.TimeoutException:
            raise ServingError(f"{method} {url}: no answer within {self.timeout} s") from None
        except httpx.HTTPError as error:
            raise ServingError(f"{method} {url}: could not reach the server: {error}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code != 200 or not isinstance(data, dict) or "error" in data:
            server_message = data.get("error") if isinstance(data, dict) else None
            detail = server_message if server_message is not None else response.text[:500]
            raise ServingError(
                f"{method} {url}: HTTP {response.status_code}: {detail}",
                status_code=response.status_code,
                server_message=server_message,
            )
        return data

    def status(self) -> dict:
        """The model's versions and their states (`GET /v1/models/<name>`, gRPC GetModelStatus)."""
        if self._grpc is not None:
            return self._grpc.status()
        return self._request("GET", self._model_url)

    def metadata(self) -> dict:
        """The model's signatures (`GET /v1/models/<name>/metadata`, gRPC GetModelMetadata)."""
        if self._grpc is not None:
            return self._grpc.metadata()
        return self._request("GET", f"{self._model_url}/metadata")

    def predict(
        self, texts: Iterable[str], text_pairs: Iterable[str] | None = None, batch_size: int = 64
    ) -> list[tuple[str, list[float]]]:
        """The label and class probabilities of each text, in order.

        Calls the `serving_default` signature, `batch_size` texts per request.

        Args:
            texts: the texts to classify.
            text_pairs: for sentence-pair models, the second text of each pair.
            batch_size: texts per request.

        Returns:
            A list of `(label, probabilities)`, one per text.

        Raises:
            ServingError: the server refused a request, or is unreachable.
        """
        return [
            (_text(row["label"]), [float(p) for p in row["probabilities"]])
            for row in self._predictions(texts, text_pairs, batch_size, ("label", "probabilities"))
        ]

    def predict_labels(
        self, texts: Iterable[str], text_pairs: Iterable[str] | None = None, batch_size: int = 64
    ) -> list[tuple[tuple[str, ...], list[float]]]:
        """A multi-label model's decided labels and every label's probability, for each text.

        Calls the `serving_default` signature, whose `labels_on` output
        applies each label's tuned threshold inside the graph.

        Returns:
            A list of `(labels on, probabilities)`, one per text: the names
            of the labels decided on, in the model's label order, and one
            probability per label.

        Raises:
            ServingError: the server refused a request, is unreachable, or
                serves a model that is not multi-label.
        """
        results = []
        names = ("labels", "labels_on", "probabilities")
        for row in self._predictions(texts, text_pairs, batch_size, names):
            on = [label for label, on in zip(row["labels"], row["labels_on"]) if on]
            results.append(
                (tuple(_text(label) for label in on), [float(p) for p in row["probabilities"]])
            )
        return results

    def _predictions(self, texts, text_pairs, batch_size, names) -> list[dict]:
        """`serving_default`'s answer for each text, as `{output name: value}` with `names` in it."""
        results = []
        for batch, pairs in _batches(texts, text_pairs, batch_size):
            if self._grpc is not None:
                data = self._grpc.predict(batch, pairs)
            else:
                if pairs is None:
                    instances = batch
                else:
                    instances = [{"text": t, "text_pair": p} for t, p in zip(batch, pairs)]
                data = self._request("POST", f"{self._model_url}:predict", {"instances": instances})
            predictions = data.get("predictions")
            if not isinstance(predictions, list) or len(predictions) != len(batch):
                raise ServingError(
                    f"Expected {len(batch)} predictions from {self._model_url}, received: {str(data)[:300]}"
                )
            for prediction in predictions:
                if not isinstance(prediction, dict) or any(n not in prediction for n in names):
                    wanted = ", ".join(f"`{name}`" for name in names)
                    raise ServingError(
                        f"{self._model_url} answered without {wanted}; is it a kerasbert export "
                        f"of this task? Received: {str(prediction)[:300]}"
                    )
                results.append(prediction)
        return results

    def classify(
        self, texts: Iterable[str], text_pairs: Iterable[str] | None = None, batch_size: int = 64
    ) -> list[list[tuple[str, float]]]:
        """Every class and its score for each text, with TF Serving's Classify API.

        Calls the export's `classify` signature with one `tf.Example` per text.

        Returns:
            A list, one per text, of `(label, score)` for every class.

        Raises:
            ServingError: the server refused a request, or is unreachable.
        """
        return [
            [(_text(label), float(score)) for label, score in row]
            for row in self._example_results("classify", texts, text_pairs, batch_size)
        ]

    def regress(
        self, texts: Iterable[str], text_pairs: Iterable[str] | None = None, batch_size: int = 64
    ) -> list[float]:
        """A regression model's value for each text, with TF Serving's Regress API.

        Calls the export's `regress` signature with one `tf.Example` per
        text; the values are in the target's own unit.

        Returns:
            One value per text.

        Raises:
            ServingError: the server refused a request (a model without a
                `regress` signature), or is unreachable.
        """
        return [
            float(value)
            for value in self._example_results("regress", texts, text_pairs, batch_size)
        ]

    def _example_results(self, method, texts, text_pairs, batch_size) -> list:
        """The `results` of the Classify or Regress API (`method`), one per text."""
        results = []
        for batch, pairs in _batches(texts, text_pairs, batch_size):
            examples = [{"text": t} for t in batch]
            if pairs is not None:
                for example, pair in zip(examples, pairs):
                    example["text_pair"] = pair
            if self._grpc is not None:
                data = getattr(self._grpc, method)(examples)
            else:
                data = self._request(
                    "POST",
                    f"{self._model_url}:{method}",
                    {"signature_name": method, "examples": examples},
                )
            # TF Serving answers `results`; its REST guide says `result`.
            answers = data.get("results", data.get("result"))
            if not isinstance(answers, list) or len(answers) != len(batch):
                raise ServingError(
                    f"Expected {len(batch)} results from {self._model_url}, received: {str(data)[:300]}"
                )
            results.extend(answers)
        return results


class _GrpcCalls:
    """A `ServingClient`'s calls over gRPC, with answers shaped as the REST API's JSON."""

    def __init__(self, client: ServingClient):
        # TensorFlow comes with the stubs: imported only when gRPC is used.
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self._grpc = grpc
        self.client = client
        self.target = client.url[len("grpc://") :]
        self.channel = grpc.insecure_channel(
            self.target,
            options=[
                ("grpc.max_receive_message_length", 2**31 - 1),
                ("grpc.max_send_message_length", 2**31 - 1),
            ],
        )
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def _spec(self, spec, signature_name=""):
        spec.name = self.client.model_name
        if signature_name:
            spec.signature_name = signature_name
        if self.client.version is not None:
            spec.version.value = self.client.version

    def _call(self, stub, method_name, request):
        grpc = self._grpc
        name = f"{self.target} {method_name}"
        try:
            return getattr(stub, method_name)(request, timeout=self.client.timeout)
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServingError(
                    f"{name}: no answer within {self.client.timeout} s", grpc_code=code.name
                ) from None
            if code == grpc.StatusCode.UNAVAILABLE and "connect" in (error.details() or "").lower():
                raise ServingError(
                    f"{name}: could not reach the server: {error.details()}", grpc_code=code.name
                ) from None
            raise ServingError(
                f"{name}: gRPC {code.name}: {error.details()}",
                server_message=error.details(),
                grpc_code=code.name,
            ) from None

    def status(self) -> dict:
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        response = self._call(self.models, "GetModelStatus", request)
        from tensorflow.core.protobuf import error_codes_pb2

        return {
            "model_version_status": [
                {
                    "version": str(s.version),
                    "state": get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
                    "status": {
                        "error_code": error_codes_pb2.Code.Name(s.status.error_code),
                        "error_message": s.status.error_message,
                    },
                }
                for s in response.model_version_status
            ]
        }

    def metadata(self) -> dict:
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec)
        response = self._call(self.predictions, "GetModelMetadata", request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {
            "model_spec": {
                "name": response.model_spec.name,
                "signature_name": response.model_spec.signature_name,
                "version": str(response.model_spec.version.value),
            },
            "metadata": {
                "signature_def": json_format.MessageToDict(
                    signature_map,
                    preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True,
                )
            },
        }

    def predict(self, texts, pairs) -> dict:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec)
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(texts, dtype=tf.string))
        if pairs is not None:
            request.inputs["text_pair"].CopyFrom(tf.make_tensor_proto(pairs, dtype=tf.string))
        response = self._call(self.predictions, "Predict", request)
        outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
        # Rows as the REST API's row format gives them, strings decoded.
        return {
            "predictions": [
                {name: _decoded(array[i : i + 1].tolist()[0]) for name, array in outputs.items()}
                for i in range(len(texts))
            ]
        }

    def classify(self, examples) -> dict:
        from tensorflow_serving.apis import classification_pb2

        request = classification_pb2.ClassificationRequest()
        self._spec(request.model_spec, "classify")
        _add_examples(request.input.example_list, examples)
        response = self._call(self.predictions, "Classify", request)
        return {
            "results": [
                [[c.label, c.score] for c in classifications.classes]
                for classifications in response.result.classifications
            ]
        }

    def regress(self, examples) -> dict:
        from tensorflow_serving.apis import regression_pb2

        request = regression_pb2.RegressionRequest()
        self._spec(request.model_spec, "regress")
        _add_examples(request.input.example_list, examples)
        response = self._call(self.predictions, "Regress", request)
        return {"results": [regression.value for regression in response.result.regressions]}


def _add_examples(example_list, examples):
    """Adds one `tf.Example` per `{feature name: text}` to a request's `example_list`."""
    for features in examples:
        example = example_list.examples.add()
        for name, text in features.items():
            example.features.feature[name].bytes_list.value.append(text.encode("utf-8"))


def _decoded(value):
    """A tensor row's value with its byte strings decoded, at any depth."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_decoded(item) for item in value]
    return value


def _batches(texts, text_pairs, batch_size):
    """`(texts, pairs or None)` of at most `batch_size`, after checking the arguments."""
    texts, text_pairs = _check_texts(texts, text_pairs)
    batch_size = _check_batch_size(batch_size)
    for start in range(0, len(texts), batch_size):
        stop = start + batch_size
        yield texts[start:stop], None if text_pairs is None else text_pairs[start:stop]


def _check_texts(texts, text_pairs) -> tuple[list[str], list[str] | None]:
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            f"Invalid value for argument `texts`. Expected a list of strings. Received: texts={texts!r:.80}"
        )
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"Invalid value for argument `texts`. Expected a list of strings. Received: texts[{i}]={text!r:.80} "
                f"({type(text).__name__})"
            )
    if text_pairs is None:
        return texts, None
    pairs, _ = _check_texts(text_pairs, None)
    if len(pairs) != len(texts):
        raise ValueError(
            "Invalid value for argument `text_pairs`. Expected one pair per text "
            f"({len(texts)}). Received: {len(pairs)} text_pairs"
        )
    return texts, pairs


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"Invalid value for argument `batch_size`. Expected an integer >= 1. Received: batch_size={batch_size!r}"
        )
    return batch_size


def _text(value) -> str:
    """A string output, decoding TF Serving's `{"b64": ...}` form."""
    if isinstance(value, dict) and "b64" in value:
        return base64.b64decode(value["b64"]).decode("utf-8", "replace")
    return str(value)
