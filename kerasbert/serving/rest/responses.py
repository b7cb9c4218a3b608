"""Tensors to TF Serving's JSON responses: `predictions` (row format), `outputs` (columns) and classify and regress `results`.

Reference: TF Serving's `json_tensor.cc` (https://github.com/tensorflow/serving).
"""

from __future__ import annotations

import base64
from typing import Mapping, Sequence

import numpy as np

from kerasbert.serving.rest.errors import invalid_argument
from kerasbert.serving.rest.json_text import PrettyWriter, decimal_text


def _write_leaf(writer: PrettyWriter, value, dtype, as_bytes: bool):
    if dtype == np.float32:
        writer.raw(decimal_text(float(value), single_precision=True))
    elif dtype.kind == "f":
        writer.raw(decimal_text(float(value), single_precision=False))
    elif dtype == np.bool_:
        writer.raw("true" if value else "false")
    elif dtype.kind in "iu":
        writer.raw(str(int(value)))
    else:
        data = value if isinstance(value, bytes) else str(value).encode("utf-8")
        text = None
        if not as_bytes:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                # TF Serving writes such bytes raw, which is not JSON; this
                # server writes them as base64 instead, like `_bytes` outputs.
                pass
        if text is None:
            writer.start_object()
            writer.key("b64")
            writer.string(base64.b64encode(data).decode("ascii"))
            writer.end_object()
        else:
            writer.string(text)


def _write_tensor(writer: PrettyWriter, array: np.ndarray, as_bytes: bool):
    """AddTensorValues: a tensor as (nested) JSON arrays."""
    if array.ndim == 0:
        _write_leaf(
            writer, array.item() if array.dtype != object else array[()], array.dtype, as_bytes
        )
        return
    writer.start_array()
    for item in array:
        if array.ndim == 1:
            _write_leaf(writer, item, array.dtype, as_bytes)
        else:
            _write_tensor(writer, item, as_bytes)
    writer.end_array()


def _is_bytes_output(name: str, array: np.ndarray) -> bool:
    return array.dtype == object and name.endswith("_bytes")


def predict_response_json(outputs: Mapping[str, np.ndarray], row_format: bool) -> str:
    """A predict response as TF Serving writes it (MakeJsonFromTensors).

    Row format gives `predictions`: a list of values for one output, a list
    of `{name: value}` objects for several. Columnar format gives `outputs`:
    the value itself for one output, `{name: value}` for several.
    """
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    writer = PrettyWriter()
    writer.start_object()
    several = len(names) > 1
    if row_format:
        batch_size = -1
        for name in names:
            array = outputs[name]
            if array.ndim == 0:
                raise invalid_argument("Tensor name: ", name, " has no shape information ")
            if batch_size >= 0 and array.shape[0] != batch_size:
                raise invalid_argument(
                    "Tensor name: ",
                    name,
                    " has inconsistent batch size: ",
                    array.shape[0],
                    " expecting: ",
                    batch_size,
                )
            batch_size = array.shape[0]
        writer.key("predictions")
        writer.start_array()
        for index in range(batch_size):
            if several:
                writer.start_object()
            writer.single_line_arrays = True
            for name in names:
                if several:
                    writer.key(name)
                array = outputs[name]
                if array.ndim == 1:
                    _write_leaf(writer, array[index], array.dtype, _is_bytes_output(name, array))
                else:
                    _write_tensor(writer, array[index], _is_bytes_output(name, array))
            writer.single_line_arrays = False
            if several:
                writer.end_object()
        writer.end_array()
    else:
        writer.key("outputs")
        if several:
            writer.start_object()
        for name in names:
            if several:
                writer.key(name)
            _write_tensor(writer, outputs[name], _is_bytes_output(name, outputs[name]))
        if several:
            writer.end_object()
    writer.end_object()
    return writer.text()


def classify_response_json(results: Sequence[Sequence[tuple[str, float]]]) -> str:
    """A classify response as TF Serving writes it: `{"results": [[[label, score], ...], ...]}`.

    TF Serving's REST API guide calls the key `result`; the server has
    always written `results` (json_tensor.cc), and so does this one.
    """
    if not results:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    writer = PrettyWriter()
    writer.start_object()
    writer.key("results")
    writer.start_array()
    for classes in results:
        writer.single_line_arrays = True
        writer.start_array()
        for label, score in classes:
            writer.start_array()
            writer.string(label)
            writer.raw(decimal_text(score, single_precision=True))
            writer.end_array()
        writer.end_array()
        writer.single_line_arrays = False
    writer.end_array()
    writer.end_object()
    return writer.text()


def regress_response_json(values: Sequence[float]) -> str:
    """A regress response as TF Serving writes it: `{"results": [value, ...]}`."""
    if not values:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    writer = PrettyWriter()
    writer.start_object()
    writer.key("results")
    writer.single_line_arrays = True
    writer.start_array()
    for value in values:
        writer.raw(decimal_text(value, single_precision=True))
    writer.end_array()
    writer.end_object()
    return writer.text()
