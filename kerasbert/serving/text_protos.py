"""TF Serving's `BatchingParameters` and `MonitoringConfig` messages, and reading their text files.

`tensorflow-serving-api` ships the protos of the gRPC API and of the model
config, but not `session_bundle_config.proto` (`BatchingParameters`, read
from `--batching_parameters_file`) nor `monitoring_config.proto` (read from
`--monitoring_config_file`). The two messages are declared here with TF
Serving's package, field names, numbers and types, in a descriptor pool of
their own, so a file written for `tensorflow_model_server` parses the same
way here (wrapper fields as `max_batch_size { value: 32 }`).

Example:

>>> parameters = read_text_proto_file("batching.txt", BatchingParameters)
>>> parameters.max_batch_size.value
32

Reference: TF Serving's `servables/tensorflow/session_bundle_config.proto`
and `config/monitoring_config.proto` (https://github.com/tensorflow/serving).
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

__all__ = ["BatchingParameters", "MonitoringConfig", "PrometheusConfig", "read_text_proto_file"]


_WRAPPERS = "google/protobuf/wrappers.proto"
_FIELD = descriptor_pb2.FieldDescriptorProto


def _message(file, name, fields):
    message = file.message_type.add(name=name)
    for field_name, number, kind, type_name, repeated in fields:
        field = message.field.add(name=field_name, number=number, type=kind)
        field.label = _FIELD.LABEL_REPEATED if repeated else _FIELD.LABEL_OPTIONAL
        if type_name:
            field.type_name = type_name


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    message, int64 = _FIELD.TYPE_MESSAGE, ".google.protobuf.Int64Value"

    batching = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=[_WRAPPERS],
    )
    _message(
        batching,
        "BatchingParameters",
        [
            ("max_batch_size", 1, message, int64, False),
            ("batch_timeout_micros", 2, message, int64, False),
            ("max_enqueued_batches", 3, message, int64, False),
            ("num_batch_threads", 4, message, int64, False),
            ("thread_pool_name", 5, message, ".google.protobuf.StringValue", False),
            ("allowed_batch_sizes", 6, _FIELD.TYPE_INT64, None, True),
            ("pad_variable_length_inputs", 7, _FIELD.TYPE_BOOL, None, False),
            ("enable_large_batch_splitting", 8, message, ".google.protobuf.BoolValue", False),
            ("max_execution_batch_size", 9, message, int64, False),
        ],
    )
    pool.Add(batching)

    monitoring = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    _message(
        monitoring,
        "PrometheusConfig",
        [
            ("enable", 1, _FIELD.TYPE_BOOL, None, False),
            ("path", 2, _FIELD.TYPE_STRING, None, False),
        ],
    )
    _message(
        monitoring,
        "MonitoringConfig",
        [("prometheus_config", 1, message, ".tensorflow.serving.PrometheusConfig", False)],
    )
    pool.Add(monitoring)
    return pool


_POOL = _build_pool()
BatchingParameters = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
)
PrometheusConfig = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.serving.PrometheusConfig")
)
MonitoringConfig = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
)


def read_text_proto_file(path, message_class):
    """A message of `message_class` read from a protobuf text file, as TF Serving's ParseProtoTextFile.

    Raises:
        ValueError: the file is not a valid text `message_class`; the
            message names the file and the parser's line and column.
        OSError: the file can't be read.
    """
    path = Path(path)
    message = message_class()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), message)
    except text_format.ParseError as error:
        raise ValueError(
            f"{path}: not a valid {message_class.DESCRIPTOR.name} in text format: {error}"
        ) from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a text file: {error}") from None
    return message
