"""TF Serving's gRPC API: `PredictionService` and `ModelService`, with the official protos and stubs.

`create_grpc_server` serves, on `grpc.aio`, the services of
`tensorflow_serving.apis.prediction_service_pb2_grpc` (Predict, Classify,
Regress, MultiInference, GetModelMetadata) and `model_service_pb2_grpc`
(GetModelStatus, HandleReloadConfigRequest) over the `ModelApi` the REST
API uses: one model manager, one thread pool, one batcher, one set of
metrics, so a request gets the same answer either way. Errors carry the
gRPC status codes and messages TF Serving's gRPC server gives.

It runs on the event loop of the REST server (`kerasbert.serving.server`),
which the batcher needs.

Example:

>>> server, port = create_grpc_server(ModelApi(manager), "127.0.0.1", 8500)
>>> await server.start()

Reference: TF Serving's `model_servers/prediction_service_impl.cc`,
`model_service_impl.cc`, `get_model_status_impl.cc`,
`servables/tensorflow/predict_util.cc`, `get_model_metadata_impl.cc`,
`classifier.cc`, `regressor.cc`, `multi_inference.cc` and `util.cc`
(https://github.com/tensorflow/serving).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
    status_pb2,
)

from kerasbert.serving.model_api import ModelApi
from kerasbert.serving.model_config import served_model_configs
from kerasbert.serving.rest.errors import RestError, invalid_argument
from kerasbert.serving.rest.requests import check_input_shapes
from kerasbert.serving.saved_model_bundle import DEFAULT_SIGNATURE

__all__ = ["create_grpc_server", "tensor_proto"]

log = logging.getLogger("kerasbert.serve")

# TF Serving's gRPC messages may be as large as its REST bodies are.
_MAX_MESSAGE_BYTES = 2**31 - 1


# === Errors and metrics ===


def _grpc_method(api: str | None = None):
    """Answers a `RestError` with its gRPC status; counts Predict, Classify and Regress."""

    def decorate(method):
        @functools.wraps(method)
        async def handler(self, request, context):
            started = time.perf_counter()
            status = "OK"
            try:
                return await method(self, request, context)
            except RestError as error:
                status = error.code
                await context.abort(grpc.StatusCode[error.code], error.message)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as error:  # noqa: BLE001  (answered without a traceback; logged in full)
                status = "INTERNAL"
                log.exception("Internal error answering gRPC %s", method.__name__)
                await context.abort(
                    grpc.StatusCode.INTERNAL, f"Internal error: {type(error).__name__}: {error}"
                )
            finally:
                if api is not None:
                    self.api.metrics.record(
                        request.model_spec.name,
                        status,
                        api,
                        "GRPC",
                        (time.perf_counter() - started) * 1e6,
                    )

        return handler

    return decorate


def _servable(api: ModelApi, model_spec):
    choice = model_spec.WhichOneof("version_choice")
    version = model_spec.version.value if choice == "version" else None
    label = model_spec.version_label if choice == "version_label" else None
    return api.manager.servable(model_spec.name, version, label)


def _model_spec(name: str, signature_name: str | None, version: int):
    """MakeModelSpec: an empty signature name is the default signature's."""
    spec = model_pb2.ModelSpec(name=name)
    if signature_name is not None:
        spec.signature_name = signature_name or DEFAULT_SIGNATURE
    spec.version.value = version
    return spec


# === Tensors ===


_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
}


def tensor_proto(array) -> tensor_pb2.TensorProto:
    """A numpy array as a TensorProto with its values in the typed field (`float_val`, `string_val`, ...).

    That is how TF Serving's Predict writes outputs (Tensor::AsProtoField);
    `tf.make_ndarray` reads it back.
    """
    array = np.asarray(array)
    if array.dtype == object or array.dtype.kind in "SU":
        dtype = types_pb2.DT_STRING
        values = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.reshape(-1)]
    else:
        dtype = tf.dtypes.as_dtype(array.dtype).as_datatype_enum
        values = array.reshape(-1).tolist()
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape]
    )
    field = _VALUE_FIELDS.get(dtype)
    if field is None:
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape)
    getattr(proto, field).extend(values)
    return proto


def _input_array(alias: str, proto) -> np.ndarray:
    try:
        return tf.make_ndarray(proto)
    except (TypeError, ValueError) as error:
        raise invalid_argument(f"Invalid tensor for input `{alias}`: {error}") from None


def _examples(input_proto) -> list[bytes]:
    """InputToSerializedExampleTensor: each example serialized, merged over the context."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in input_proto.example_list.examples]
    elif kind == "example_list_with_context":
        listed = input_proto.example_list_with_context
        context = listed.context.SerializeToString()
        # Serialized protos concatenate as a merge: the example's values win.
        examples = [context + e.SerializeToString() for e in listed.examples]
    else:
        examples = []
    if not examples:
        raise invalid_argument("Input is empty.")
    return examples


# === PredictionService ===


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TF Serving's PredictionServiceImpl over a `ModelApi`."""

    def __init__(self, api: ModelApi):
        self.api = api

    @_grpc_method("Predict")
    async def Predict(self, request, context):
        servable = _servable(self.api, request.model_spec)
        key = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signature_defs.get(key)
        if signature is None:
            raise RestError(f'Serving signature key "{key}" not found.', "FAILED_PRECONDITION")
        _check_input_names(request.inputs, signature.inputs)
        inputs = {alias: _input_array(alias, proto) for alias, proto in request.inputs.items()}
        check_input_shapes({k: v.shape for k, v in inputs.items()}, signature.inputs, key)
        wanted = list(request.output_filter) or sorted(signature.outputs)
        for alias in wanted:
            if alias not in signature.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                    "{" + ",".join(sorted(signature.outputs)) + "}."
                )
        if len(set(wanted)) != len(wanted):
            duplicate = next(a for a in wanted if wanted.count(a) > 1)
            raise invalid_argument(f"duplicate output tensor alias: {duplicate}")
        outputs = await self.api.run(servable, key, inputs)
        response = predict_pb2.PredictResponse(
            model_spec=_model_spec(request.model_spec.name, key, servable.version)
        )
        for alias in wanted:
            response.outputs[alias].CopyFrom(tensor_proto(outputs[alias]))
        return response

    @_grpc_method("Classify")
    async def Classify(self, request, context):
        servable = _servable(self.api, request.model_spec)
        examples = _examples(request.input)
        _, results = await self.api.classify(servable, request.model_spec.signature_name, examples)
        response = classification_pb2.ClassificationResponse(
            model_spec=_model_spec(
                request.model_spec.name, request.model_spec.signature_name, servable.version
            )
        )
        _fill_classifications(response.result, results)
        return response

    @_grpc_method("Regress")
    async def Regress(self, request, context):
        servable = _servable(self.api, request.model_spec)
        examples = _examples(request.input)
        _, values = await self.api.regress(servable, request.model_spec.signature_name, examples)
        response = regression_pb2.RegressionResponse(
            model_spec=_model_spec(
                request.model_spec.name, request.model_spec.signature_name, servable.version
            )
        )
        response.result.regressions.extend(regression_pb2.Regression(value=v) for v in values)
        return response

    @_grpc_method()
    async def MultiInference(self, request, context):
        model_name, signature_names = "", set()
        for task in request.tasks:
            if not task.model_spec.name:
                raise invalid_argument("Found ModelSpec with an empty model name.")
            if model_name and task.model_spec.name != model_name:
                raise invalid_argument(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name."
                )
            model_name = task.model_spec.name
            signature_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if signature_name in signature_names:
                raise invalid_argument(f"Duplicate evaluation of signature: {signature_name}")
            signature_names.add(signature_name)
        spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        servable = _servable(self.api, spec)
        for task in request.tasks:
            signature_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if signature_name not in servable.signature_defs:
                raise invalid_argument(
                    f"Requested signature not found in model graph: {signature_name}"
                )
            if task.method_name not in (
                "tensorflow/serving/classify",
                "tensorflow/serving/regress",
            ):
                raise invalid_argument(f"Unrecognized signature method_name: {task.method_name}")
        examples = _examples(request.input)
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            result = response.results.add(
                model_spec=_model_spec(
                    task.model_spec.name, task.model_spec.signature_name, servable.version
                )
            )
            if task.method_name == "tensorflow/serving/classify":
                _, results = await self.api.classify(
                    servable, task.model_spec.signature_name, examples
                )
                _fill_classifications(result.classification_result, results)
            else:
                _, values = await self.api.regress(
                    servable, task.model_spec.signature_name, examples
                )
                result.regression_result.regressions.extend(
                    regression_pb2.Regression(value=v) for v in values
                )
        return response

    @_grpc_method()
    async def GetModelMetadata(self, request, context):
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        if not request.metadata_field:
            raise invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid_argument(f"Metadata field {field} is not supported")
        servable = _servable(self.api, request.model_spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(signature_map)
        return response


def _check_input_names(request_inputs, signature_inputs):
    """VerifyRequestInputsSize and GetInputValues' alias check, with TF Serving's messages."""
    sent, expected = set(request_inputs), set(signature_inputs)
    if len(sent) != len(expected):
        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
            f"Missing but required: {{{','.join(sorted(expected - sent))}}}."
        )
    for alias in sorted(sent - expected):
        raise invalid_argument(
            f"input tensor alias not found in signature: {alias}. Inputs expected to be in the set "
            f"{{{','.join(sorted(expected))}}}."
        )


def _fill_classifications(result, rows):
    for row in rows:
        classifications = result.classifications.add()
        for label, score in row:
            classifications.classes.add(label=label, score=score)


# === ModelService ===


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """TF Serving's ModelServiceImpl over a `ModelApi`."""

    def __init__(self, api: ModelApi):
        self.api = api

    @_grpc_method()
    async def GetModelStatus(self, request, context):
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = request.model_spec
        choice = spec.WhichOneof("version_choice")
        states = self.api.manager.version_states(
            spec.name,
            spec.version.value if choice == "version" else None,
            spec.version_label if choice == "version_label" else None,
        )
        response = get_model_status_pb2.GetModelStatusResponse()
        for state in states:
            response.model_version_status.add(
                version=state.version,
                state=get_model_status_pb2.ModelVersionStatus.State.Value(state.state),
                status=_status_proto(state.error_code, state.error_message),
            )
        return response

    async def HandleReloadConfigRequest(self, request, context):
        code, message = "OK", ""
        if request.config.WhichOneof("config") != "model_config_list":
            code, message = (
                "INVALID_ARGUMENT",
                "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                "Only ModelConfigList is currently supported",
            )
        else:
            try:
                configs = served_model_configs(request.config, "ReloadConfigRequest.config")
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self.api.executor, self.api.manager.reload, configs)
            except ValueError as error:
                code, message = "INVALID_ARGUMENT", str(error)
        if code != "OK":
            log.error("ReloadConfig failed: %s", message)
        response = model_management_pb2.ReloadConfigResponse(status=_status_proto(code, message))
        if code != "OK":
            await context.abort(grpc.StatusCode[code], message)
        return response


def _status_proto(code: str, message: str) -> status_pb2.StatusProto:
    return status_pb2.StatusProto(
        error_code=error_codes_pb2.Code.Value(code), error_message=message
    )


# === The server ===


def create_grpc_server(
    api: ModelApi, host: str, port: int | None
) -> tuple[grpc.aio.Server, int | None]:
    """A `grpc.aio` server with both services, bound to `host:port` (0: any free port).

    Call it on the event loop that will serve it.

    Args:
        api: what the services answer with.
        host: the address to listen on.
        port: the TCP port; 0 for any free one, None for no TCP port
            (add a `unix:` one to the server).

    Returns:
        `(server, port)`: the server, not started yet, and the port it is
        bound to (None without one).

    Raises:
        OSError: the address can't be bound.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(api), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(api), server)
    if port is None:
        return server, None
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"Could not listen for gRPC on {address}: {error}") from None
    if bound == 0:
        raise OSError(f"Could not listen for gRPC on {address}")
    return server, bound
