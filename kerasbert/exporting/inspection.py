"""What an export holds, read from its files with TensorFlow alone: signatures, labels, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf

from kerasbert import rundir
from kerasbert.serving.saved_model_bundle import WARMUP_FILE


def read_saved_model(saved_model_dir):
    """The `SavedModel` protocol buffer of `saved_model_dir/saved_model.pb`."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    return saved_model


def signature_summary(saved_model_dir) -> dict:
    """The signature defs of a SavedModel, read from `saved_model.pb`.

    Returns:
        `{key: {"method", "inputs", "outputs"}}`, each tensor as
        `(dtype name, shape)`, `-1` for unknown dimensions and `None` for an
        unknown rank; TensorFlow's internal `__saved_model_init_op` is left out.
    """
    summary = {}
    for meta_graph in read_saved_model(saved_model_dir).meta_graphs:
        for key, signature in meta_graph.signature_def.items():
            if key.startswith("__"):
                continue
            summary[key] = {
                "method": signature.method_name,
                "inputs": {name: _tensor_info(info) for name, info in signature.inputs.items()},
                "outputs": {name: _tensor_info(info) for name, info in signature.outputs.items()},
            }
    return summary


def _tensor_info(info):
    dtype = tf.dtypes.as_dtype(info.dtype).name
    if info.tensor_shape.unknown_rank:
        return dtype, None
    return dtype, tuple(int(dim.size) for dim in info.tensor_shape.dim)


def check_signatures(saved_model_dir, expected):
    found = signature_summary(saved_model_dir)
    if found != expected:
        # tf.function can rename inputs (e.g. suffix `_1` on a clash); a
        # client relies on these exact names, so this is a kerasbert bug.
        raise RuntimeError(
            f"the exported signatures differ from the expected ones: found {found}, "
            f"expected {expected}"
        )


def describe_saved_model(version_dir) -> str:
    """A readable account of an exported version: signatures, labels, metrics.

    Reads only files (`saved_model.pb`, `assets/`, `assets.extra/`), with
    TensorFlow alone.

    Args:
        version_dir: a version directory, e.g. `saved_models/quickstart/1`.

    Returns:
        Several lines of text.

    Raises:
        FileNotFoundError: no `saved_model.pb` in `version_dir`.
    """
    version_dir = Path(version_dir)
    if not (version_dir / "saved_model.pb").is_file():
        versions = (
            sorted((p.name for p in version_dir.iterdir() if p.name.isdigit()), key=int)
            if version_dir.is_dir()
            else []
        )
        hint = (
            f" It holds versions {', '.join(versions)}: pass one, "
            f"e.g. {version_dir / versions[-1]}."
            if versions
            else " Expected a version directory such as saved_models/<name>/1."
        )
        raise FileNotFoundError(f"No SavedModel at {version_dir} (no saved_model.pb).{hint}")
    lines = [f"SavedModel {version_dir}", ""]
    for key, signature in sorted(signature_summary(version_dir).items()):
        lines.append(f"signature {key!r} ({signature['method']})")
        for kind in ("inputs", "outputs"):
            lines.append(f"  {kind}:")
            width = max(len(name) for name in signature[kind]) if signature[kind] else 0
            for name, (dtype, shape) in sorted(signature[kind].items()):
                lines.append(f"    {name:<{width}}  {dtype:<8} {_shape_text(shape)}")
        lines.append("")
    assets = version_dir / "assets"
    labels_path = assets / "labels.txt"
    if labels_path.is_file():
        labels = labels_path.read_text(encoding="utf-8").splitlines()
        lines.append(f"labels ({len(labels)}): {', '.join(labels)}")
    head_path = assets / "head.json"
    if head_path.is_file():
        temperature = json.loads(head_path.read_text(encoding="utf-8")).get("temperature")
        if temperature is not None:
            values = temperature if isinstance(temperature, list) else [temperature]
            lines.append(f"temperature: {', '.join(f'{t:.4g}' for t in values)}")
    edges_path = assets / "bin_edges.json"
    if edges_path.is_file():
        edges = json.loads(edges_path.read_text(encoding="utf-8"))
        lines.append(f"bin edges: {', '.join(str(e) for e in edges)}")
    metrics_path = assets / rundir.METRICS
    if metrics_path.is_file():
        lines.append("training metrics:")
        lines.extend(_metrics_lines(json.loads(metrics_path.read_text(encoding="utf-8"))))
    else:
        lines.append("training metrics: none recorded")
    warmup = version_dir / "assets.extra" / WARMUP_FILE
    if warmup.is_file():
        count = sum(1 for _ in tf.data.TFRecordDataset(str(warmup)))
        lines.append(f"warm-up requests: {count} ({warmup.relative_to(version_dir)})")
    return "\n".join(lines)


def _shape_text(shape):
    if shape is None:
        return "unknown rank"
    return "[" + ", ".join("None" if dim < 0 else str(dim) for dim in shape) + "]"


def _metrics_lines(metrics, indent="  "):
    lines = []
    for key, value in metrics.items():
        if isinstance(value, dict) and all(isinstance(v, (int, float)) for v in value.values()):
            parts = ", ".join(f"{k}={v:.4f}" for k, v in value.items())
            lines.append(f"{indent}{key}: {parts}")
        elif isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.extend(_metrics_lines(value, indent + "  "))
        elif isinstance(value, float):
            lines.append(f"{indent}{key}: {value:.4f}")
        else:
            lines.append(f"{indent}{key}: {value}")
    return lines
