"""SavedModel export with tokenization in the graph, laid out for TF Serving.

The exported directory `<base>/<model_name>/<version>/` takes raw strings:
the tokenizer's ops (core TensorFlow and TensorFlow Text only, checked at
export) run inside the serving graph, so TF Serving, `tf.saved_model.load`
and `keras.layers.TFSMLayer` all use the model as it is.

A version directory holds:

```
saved_model.pb, fingerprint.pb, variables/
assets/         labels.txt, head.json (task, temperature, thresholds or target
                scaling), vocabulary.txt (BERT) or vocabulary.json and
                merges.txt (RoBERTa), config.yaml, metrics.json,
                bin_edges.json (binned targets only)
assets.extra/   tf_serving_warmup_requests
```

The signatures are `kerasbert.exporting.serving_module`'s.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import uuid
from pathlib import Path

import tensorflow as tf

from kerasbert import rundir
from kerasbert.exporting.bundle_check import ExportCheck, ExportCheckError, check_export
from kerasbert.exporting.heads import HEAD_FILE, Head
from kerasbert.exporting.inspection import check_signatures, read_saved_model
from kerasbert.exporting.op_check import check_ops, prefetch_op_sources
from kerasbert.exporting.serving_module import ServingModule, expected_signatures
from kerasbert.exporting.warmup import WARMUP_TEXTS, write_warmup_requests
from kerasbert.files import json_text
from kerasbert.models.precision import with_compute_dtype
from kerasbert.serving.saved_model_bundle import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    WARMUP_FILE,
    quiet_tensorflow_logger,
)

log = logging.getLogger(__name__)


STAGING_PREFIX = ".tmp-export-"


def next_version(model_dir) -> int:
    """1 + the highest integer version under `model_dir` (1 when none).

    Only all-digit names count, as for TF Serving: an interrupted export's
    hidden staging directory is not a version.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return 1
    versions = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()]
    return max(versions, default=0) + 1


def export_model(
    classifier,
    tokenizer,
    sequence_length,
    labels,
    base_path,
    model_name,
    version=None,
    text_pair=False,
    assets=None,
    warmup_texts=WARMUP_TEXTS,
    head=None,
    dtype=None,
    truncation="head",
    head_tokens=None,
    max_characters=None,
    windows=None,
    stride=None,
):
    """Writes a TF Serving SavedModel version directory, atomically.

    The version is written under a hidden, non-integer name in the same
    parent (TF Serving only loads integer names) and renamed into place only
    when complete and checked: a server polling `base_path` never sees a
    half-written version, and a failed or killed export leaves none. The
    checks: the signatures are the expected ones, every op is core
    TensorFlow or TensorFlow Text, and a fresh process that loads the staged
    directory as TF Serving does (a TF1 Session, the restore op, the init
    op) replays every warm-up record with the outputs this process gives.

    Args:
        classifier: the trained Keras classifier (token inputs to logits).
        tokenizer: its keras-hub tokenizer.
        sequence_length: the longest sequence; longer texts are truncated.
        labels: class names by class id.
        base_path: the parent of TF Serving's model base path, e.g.
            `saved_models`.
        model_name: the model's directory name under `base_path`.
        version: a positive integer version; default 1 + the highest
            existing one.
        text_pair: whether the model takes sentence pairs.
        assets: `{file name: text}` written under `assets/`, next to
            `labels.txt`.
        warmup_texts: the texts of the warm-up requests.
        head: a `kerasbert.exporting.heads.Head`: the task, temperature,
            thresholds or target scaling, applied in the graph and saved as
            `assets/head.json`; None for an uncalibrated single-label
            classifier.
        dtype: what the serving graph computes in, `"float32"` or
            `"bfloat16"` (`kerasbert.models.precision.with_compute_dtype`);
            None as the classifier does. It answers in float32 either way.
        truncation: which tokens of a longer text the graph keeps, as in
            training: `"head"`, `"tail"` or `"head_tail"` (`TextEncoder`).
        head_tokens: `"head_tail"` only: the tokens kept from the start.
        max_characters: the longest text, in characters, that
            `serving_default` and `classify` take; a longer one fails the
            request with INVALID_ARGUMENT. None for no limit.
        windows: sliding windows, for a `WindowedClassifier`: the most
            windows a text is read as (`TextEncoder`); None for one.
        stride: with `windows`: the tokens from one window's start to the next's.

    Returns:
        The `Path` of the version directory.

    Raises:
        ValueError: for an invalid model name, version, label, dtype or truncation.
        FileExistsError: the version already exists; it is never overwritten.
        UnsupportedOpsError: the graph uses an op that is neither core
            TensorFlow nor TensorFlow Text.
        ExportCheckError: loaded as TF Serving loads it (in a fresh
            process, `kerasbert.exporting.bundle_check`), the export fails to load, to
            replay a warm-up record, or to answer as this process's model.

    Example:
    >>> export_model(classifier, tokenizer, 128, ["neg", "pos"], "saved_models", "reviews")
    PosixPath('saved_models/reviews/1')
    """
    from kerasbert.models.tokenizers import TextEncoder

    labels = _check_labels(labels)
    head = head or Head()
    head.check_labels(labels)
    model_name = _check_model_name(model_name)
    if dtype is not None:
        classifier = with_compute_dtype(classifier, dtype)
    model_dir = Path(base_path) / model_name
    version = next_version(model_dir) if version is None else _check_version(version)
    final = model_dir / str(version)
    _refuse_existing_version(model_dir, version)
    # The op check's probe and the SavedModelBundle check's process start
    # TensorFlow while the model is traced and saved.
    threading.Thread(target=prefetch_op_sources, daemon=True).start()
    bundle_check = ExportCheck()
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = model_dir / f"{STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
    encoder = TextEncoder(tokenizer, sequence_length, truncation, head_tokens, windows, stride)
    try:
        module = ServingModule(
            classifier, encoder, labels, text_pair, head=head, max_characters=max_characters
        )
        examples_signature = "regress" if head.task == "regression" else "classify"
        with quiet_tensorflow_logger():
            tf.saved_model.save(module, str(staging), signatures=module.signatures())
            set_method_name(
                staging,
                examples_signature,
                REGRESS_METHOD if head.task == "regression" else CLASSIFY_METHOD,
            )
        check_signatures(
            staging,
            expected_signatures(len(labels), encoder.input_names, text_pair, task=head.task),
        )
        check_ops(staging)
        all_assets = {"labels.txt": "".join(f"{label}\n" for label in labels)}
        all_assets[HEAD_FILE] = json_text(head.to_dict())
        all_assets.update(assets or {})
        _write_assets(staging / "assets", all_assets)
        (staging / "assets.extra").mkdir(exist_ok=True)
        if max_characters is not None:
            # A warm-up record the graph refuses would stop TF Serving loading the version.
            warmup_texts = [text[:max_characters] for text in warmup_texts]
        write_warmup_requests(
            staging / "assets.extra" / WARMUP_FILE,
            model_name,
            encoder,
            text_pair=text_pair,
            texts=warmup_texts,
            examples_signature=examples_signature,
        )
        try:
            # Quiet too: running the module's functions, as a process that
            # has exported five models before warns, says "retracing".
            with quiet_tensorflow_logger():
                check_export(staging, module.run, bundle_check)
        except ExportCheckError as error:
            raise ExportCheckError(
                f"TF Serving could not serve this export, so no version was written: {error}"
            ) from None
        # Again: another export may have taken the version meanwhile, and
        # rename() would replace an empty directory.
        _refuse_existing_version(model_dir, version)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        bundle_check.close()
    log.info("exported %s", final)
    return final


def export_run_dir(run_dir, base_path=None, model_name=None, version=None, dtype=None) -> Path:
    """Exports a finished run from its directory alone.

    Rebuilds everything from the files `kerasbert.train` wrote:
    `config.yaml` (sequence length and truncation, export defaults and `export.dtype`), `labels.json`,
    `model.keras`, `tokenizer/` and, when present, `metrics.json`.

    Args:
        run_dir: a run directory, `runs/<name>/<timestamp>`, or `runs/<name>`
            for its latest run that did not fail.
        base_path: default the run's `export.base_path`.
        model_name: default the run's `export.model_name`, else its `name`.
        version: a positive integer; default the next free version.
        dtype: `"float32"` or `"bfloat16"`; default the run's `export.dtype`.

    Returns:
        The `Path` of the new version directory.

    Raises:
        FileNotFoundError: `run_dir` is missing or lacks a run file.
        FileExistsError: the version already exists.
        ValueError: an invalid model name or version.

    Example:
    >>> export_run_dir("runs/quickstart/20250101-120000", version=7)
    PosixPath('saved_models/quickstart/7')
    """
    from kerasbert.config_loading import load_config

    run_dir = _check_run_dir(run_dir)
    config_text = (run_dir / rundir.CONFIG).read_text(encoding="utf-8")
    config = load_config(run_dir / rundir.CONFIG)
    base_path = base_path if base_path is not None else config.export.base_path
    model_name = _check_model_name(model_name if model_name is not None else config.model_name)
    if version is not None:
        # Fail before the slow part: loading the model.
        version = _check_version(version)
        _refuse_existing_version(Path(base_path) / model_name, version)
    label_map = json.loads((run_dir / rundir.LABELS).read_text(encoding="utf-8"))
    from kerasbert.models.classifier import load_run_model

    classifier, tokenizer = load_run_model(run_dir)
    assets = tokenizer_assets(tokenizer)
    assets[rundir.CONFIG] = config_text
    if label_map.get("bin_edges") is not None:
        assets["bin_edges.json"] = json_text(label_map["bin_edges"])
    metrics_path = run_dir / rundir.METRICS
    if metrics_path.exists():
        assets[rundir.METRICS] = metrics_path.read_text(encoding="utf-8")
    return export_model(
        classifier,
        tokenizer,
        config.model.sequence_length,
        label_map["labels"],
        base_path,
        model_name,
        version=version,
        text_pair=bool(label_map.get("text_pair")),
        assets=assets,
        head=Head.from_dict(label_map.get("head")),
        dtype=dtype if dtype is not None else config.export.dtype,
        truncation=config.model.truncation,
        head_tokens=config.model.head_tokens,
        max_characters=config.export.max_characters,
        windows=None if config.model.long_text is None else config.model.long_text.windows,
        stride=None if config.model.long_text is None else config.model.long_text.stride,
    )


def _check_run_dir(run_dir) -> Path:
    run_dir = Path(run_dir)
    if run_dir.is_dir():
        run_dir = rundir.resolve_run_dir(run_dir)
    else:
        raise FileNotFoundError(
            f"No run directory at {run_dir}. Expected a directory written by "
            "`python -m kerasbert.train`, such as runs/<name>/<timestamp>."
        )
    missing = rundir.missing_export_inputs(run_dir)
    if missing:
        raise FileNotFoundError(
            f"{run_dir} is not a finished run directory: it lacks "
            f"{', '.join(missing)}. Expected runs/<name>/<timestamp> with "
            f"{', '.join(rundir.EXPORT_INPUTS)}, as `python -m kerasbert.train` writes them."
        )
    return run_dir


def _refuse_existing_version(model_dir, version):
    final = Path(model_dir) / str(version)
    if final.exists():
        raise FileExistsError(
            f"Version {version} of model `{final.parent.name}` already exists at "
            f"{final}; versions are never overwritten. Pass another version, or "
            f"none to export version {next_version(model_dir)}."
        )


def _check_model_name(model_name) -> str:
    if not isinstance(model_name, str):
        raise TypeError(
            "Invalid type for argument `model_name`. Expected a string. "
            f"Received: model_name={model_name!r} of type {type(model_name).__name__}"
        )
    if not model_name or model_name.startswith(".") or "/" in model_name or "\\" in model_name:
        raise ValueError(
            "Invalid value for argument `model_name`. Expected one directory name, "
            "not empty, without `/` and not starting with `.`. "
            f"Received: model_name={model_name!r}"
        )
    return model_name


def _check_version(version) -> int:
    if isinstance(version, str) and version.strip().isdigit():
        version = int(version)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(
            "Invalid value for argument `version`. Expected a positive integer "
            f"(TF Serving loads integer version directories). Received: version={version!r}"
        )
    return version


def _check_labels(labels) -> list[str]:
    labels = list(labels)
    if not labels:
        raise ValueError(
            "Invalid value for argument `labels`. Expected at least one label. Received: labels=[]"
        )
    for label in labels:
        if not isinstance(label, str) or not label or "\n" in label:
            raise ValueError(
                "Invalid value for argument `labels`. Expected non-empty strings "
                f"without newlines (one per line of labels.txt). Received: {label!r}"
            )
    return labels


def _write_assets(assets_dir, assets):
    assets_dir.mkdir(exist_ok=True)
    for name, text in assets.items():
        path = assets_dir / name
        if path.exists():
            # tf.saved_model.save puts tracked asset files here too.
            raise RuntimeError(f"asset {name} collides with a file TensorFlow saved")
        path.write_text(text, encoding="utf-8")


def set_method_name(saved_model_dir, signature_key, method_name):
    """Sets a signature's method name, which `tf.saved_model.save` can't.

    TF Serving's Classify API accepts only signatures whose method is
    `tensorflow/serving/classify`. The fingerprint, a checksum of
    `saved_model.pb`, is written again to match.

    Args:
        saved_model_dir: a SavedModel directory.
        signature_key: e.g. `"classify"`.
        method_name: e.g. `CLASSIFY_METHOD`.
    """
    from tensorflow.python.saved_model import fingerprinting_utils

    saved_model = read_saved_model(saved_model_dir)
    for meta_graph in saved_model.meta_graphs:
        meta_graph.signature_def[signature_key].method_name = method_name
    path = Path(saved_model_dir) / "saved_model.pb"
    path.write_bytes(saved_model.SerializeToString())
    fingerprinting_utils.write_fingerprint(str(saved_model_dir))


def tokenizer_assets(tokenizer) -> dict[str, str]:
    """The tokenizer's vocabulary (and BPE merges) as asset files.

    BERT's WordPiece vocabulary is `vocabulary.txt`, one token per line in id
    order; RoBERTa's byte-level BPE is `vocabulary.json` (token to id) and
    `merges.txt`, the files keras-hub and Hugging Face read.
    """
    merges = getattr(tokenizer, "merges", None)
    if merges:
        vocabulary = tokenizer.get_vocabulary()
        return {
            "vocabulary.json": json_text({token: i for i, token in enumerate(vocabulary)}),
            "merges.txt": "".join(f"{merge}\n" for merge in merges),
        }
    return {"vocabulary.txt": "".join(f"{token}\n" for token in tokenizer.get_vocabulary())}
