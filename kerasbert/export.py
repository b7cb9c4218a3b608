"""SavedModel export with tokenization in the graph, laid out for TF Serving.

The exported directory `<base>/<model_name>/<version>/` takes raw strings:
the tokenizer's ops (core TensorFlow and TensorFlow Text only, checked at
export) run inside the serving graph, so TF Serving, `tf.saved_model.load`
and `keras.layers.TFSMLayer` all use the model as it is.

A version directory holds:

```
saved_model.pb, fingerprint.pb, variables/
assets/         labels.txt, vocabulary.txt (BERT) or vocabulary.json and
                merges.txt (RoBERTa), config.yaml, metrics.json,
                bin_edges.json (binned targets only)
assets.extra/   tf_serving_warmup_requests
```

Signatures:

- `serving_default` (`tensorflow/serving/predict`): `text` (and `text_pair`
  for sentence-pair models), `string [batch]`, to `probabilities` and
  `logits` (`float32 [batch, num_classes]`), `label` (`string [batch]`) and
  `label_id` (`int64 [batch]`).
- `predict_tokens` (`tensorflow/serving/predict`): the same outputs from
  already tokenized `token_ids`, `padding_mask` (and `segment_ids` for BERT).
- `classify` (`tensorflow/serving/classify`): serialized `tf.Example`s with a
  `text` (and `text_pair`) bytes feature to `classes` (`string [batch,
  num_classes]`) and `scores` (`float32 [batch, num_classes]`), the tensors
  TF Serving's Classify API reads.

This module imports only TensorFlow at the top: `--inspect` needs nothing
else, and Keras, keras-hub and the rest of kerasbert load only to export.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from kerasbert import cli
from kerasbert.export_check import ExportCheck, ExportCheckError, check_export
from kerasbert.saved_model_bundle import CLASSIFY_METHOD, PREDICT_METHOD, WARMUP_FILE

log = logging.getLogger(__name__)

STAGING_PREFIX = ".tmp-export-"
RUN_FILES = ("config.yaml", "labels.json", "model.keras", "tokenizer")

# Warm-up texts: the empty string, plain and non-ASCII text, and one longer
# than any sequence length, so truncation is exercised too.
WARMUP_TEXTS = (
    "",
    "A short, plain review of the film.",
    "Ünïcödé, 日本語, Ελληνικά and emoji 🎬🍿 are text too.",
    " ".join(["a long review that runs past the sequence length"] * 60),
)


class UnsupportedOpsError(ValueError):
    """The exported graph uses ops that TF Serving would not know."""


# === Serving module ===


class ServingModule(tf.Module):
    """The classifier with its tokenizer and label names, as tf.functions.

    Args:
        classifier: a Keras classifier that maps token inputs to logits.
        encoder: the `kerasbert.models.TextEncoder` the classifier was
            trained with.
        labels: class names, by class id.
        text_pair: whether the model was trained on sentence pairs.

    Example:
    >>> module = ServingModule(classifier, TextEncoder(tokenizer, 128), ["neg", "pos"])
    >>> tf.saved_model.save(module, "/tmp/m/1", signatures=module.signatures())
    """

    def __init__(self, classifier, encoder, labels, text_pair=False):
        super().__init__(name="kerasbert")
        self.classifier = classifier
        self.encoder = encoder
        # keras-hub tokenizers keep their lookup tables as plain attributes;
        # holding the tokenizer here lets tf.Module track those resources.
        self.tokenizer = encoder.tokenizer
        self.labels = tf.constant(list(labels), dtype=tf.string)
        self.model_variables = backend_variables(classifier)
        self.text_pair = text_pair
        text_specs = [tf.TensorSpec([None], tf.string, name="text")]
        if text_pair:
            text_specs.append(tf.TensorSpec([None], tf.string, name="text_pair"))
        self.serving_default = tf.function(self._serve_text, input_signature=text_specs)
        token_specs = {
            name: tf.TensorSpec(
                [None, None], tf.bool if name == "padding_mask" else tf.int32, name=name
            )
            for name in encoder.input_names
        }
        self.predict_tokens = tf.function(
            self._predict_tokens, input_signature=[token_specs]
        )
        self.classify = tf.function(
            self._classify,
            input_signature=[tf.TensorSpec([None], tf.string, name="inputs")],
        )

    def _outputs(self, inputs):
        logits = tf.cast(self.classifier(inputs, training=False), tf.float32)
        label_id = tf.argmax(logits, axis=-1, output_type=tf.int64)
        return {
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "logits": logits,
            "label": tf.gather(self.labels, label_id),
            "label_id": label_id,
        }

    # Each signature calls the one below it (classify -> serving_default ->
    # predict_tokens) instead of tracing the tokenizer and the transformer
    # again: tracing a byte-pair tokenizer takes seconds. A request is cut
    # to its longest text rather than carrying `sequence_length` tokens, and
    # to exactly that width: training rounds widths up to a multiple of 8 for
    # its compiled step, but the serving graph runs without XLA, where a new
    # width costs nothing and padding costs compute (6% of the texts/s at
    # batch 32, benchmarks/RESULTS.md).
    def _serve_text(self, text, text_pair=None):
        from kerasbert.models import trim_to_longest

        return self.predict_tokens(trim_to_longest(self.encoder(text, text_pair), multiple=1))

    def _predict_tokens(self, inputs):
        return self._outputs(inputs)

    def _classify(self, inputs):
        features = {"text": tf.io.FixedLenFeature([], tf.string, default_value="")}
        if self.text_pair:
            features["text_pair"] = tf.io.FixedLenFeature([], tf.string, default_value="")
        parsed = tf.io.parse_example(inputs, features)
        outputs = self.serving_default(*(parsed[name] for name in features))
        batch = tf.shape(inputs)[0]
        return {
            "classes": tf.tile(self.labels[tf.newaxis, :], [batch, 1]),
            "scores": outputs["probabilities"],
        }

    def run(self, key, inputs):
        """Runs signature `key` here, on `{input name: array}`, as the export would.

        The same call as `SavedModelBundle.run`, so the export check can
        compare the two.
        """
        tensors = {name: tf.constant(value) for name, value in inputs.items()}
        if key == "predict_tokens":
            outputs = self.predict_tokens(tensors)
        elif key == "classify":
            outputs = self.classify(**tensors)
        else:
            outputs = self.serving_default(**tensors)
        return {name: value.numpy() for name, value in outputs.items()}

    def signatures(self):
        """`{signature key: tf.function}` for `tf.saved_model.save`."""
        return {
            "serving_default": self.serving_default,
            "predict_tokens": self.predict_tokens,
            "classify": self.classify,
        }


def backend_variables(classifier) -> list:
    """The `tf.Variable`s behind a Keras 3 model's variables, to track on the module.

    A Keras 3 variable saves as a copy of the `tf.Variable` it wraps: the
    SavedModel's restore op fills the copy, while the traced functions read
    the original. `tf.saved_model.load` hides it by binding variables through
    the object graph; TF Serving's SavedModelBundle runs the restore op, finds
    the originals empty, and fails every request with "Could not find
    variable" (keras-team/keras#20096). Tracked directly, as Keras' own
    `ExportArchive` does, the originals are what the restore op fills.
    """
    variables = []
    for variable in classifier.variables:
        value = variable.value
        if not isinstance(value, tf.Variable):
            raise TypeError(f"variable {variable.path} holds a {type(value).__name__}, not a tf.Variable")
        variables.append(value)
    return variables


def expected_signatures(num_classes, token_inputs, text_pair=False) -> dict:
    """The signature defs an export must have, as `signature_summary` gives them.

    Args:
        num_classes: the number of labels.
        token_inputs: the backbone's input names (`TextEncoder.input_names`).
        text_pair: whether `serving_default` also takes `text_pair`.

    Returns:
        `{key: {"method", "inputs", "outputs"}}`, each tensor as
        `(dtype name, shape)` with `-1` for unknown dimensions.
    """
    outputs = {
        "probabilities": ("float32", (-1, num_classes)),
        "logits": ("float32", (-1, num_classes)),
        "label": ("string", (-1,)),
        "label_id": ("int64", (-1,)),
    }
    text = {"text": ("string", (-1,))}
    if text_pair:
        text["text_pair"] = ("string", (-1,))
    tokens = {
        name: ("bool" if name == "padding_mask" else "int32", (-1, -1)) for name in token_inputs
    }
    return {
        "serving_default": {"method": PREDICT_METHOD, "inputs": text, "outputs": outputs},
        "predict_tokens": {"method": PREDICT_METHOD, "inputs": tokens, "outputs": outputs},
        "classify": {
            "method": CLASSIFY_METHOD,
            "inputs": {"inputs": ("string", (-1,))},
            "outputs": {
                "classes": ("string", (-1, num_classes)),
                "scores": ("float32", (-1, num_classes)),
            },
        },
    }


# === Export ===


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

    Returns:
        The `Path` of the version directory.

    Raises:
        ValueError: for an invalid model name, version or label.
        FileExistsError: the version already exists; it is never overwritten.
        UnsupportedOpsError: the graph uses an op that is neither core
            TensorFlow nor TensorFlow Text.
        ExportCheckError: loaded as TF Serving loads it (in a fresh
            process, `kerasbert.export_check`), the export fails to load, to
            replay a warm-up record, or to answer as this process's model.

    Example:
    >>> export_model(classifier, tokenizer, 128, ["neg", "pos"], "saved_models", "reviews")
    PosixPath('saved_models/reviews/1')
    """
    from kerasbert.models import TextEncoder

    labels = _check_labels(labels)
    model_name = _check_model_name(model_name)
    model_dir = Path(base_path) / model_name
    version = next_version(model_dir) if version is None else _check_version(version)
    final = model_dir / str(version)
    _refuse_existing_version(model_dir, version)
    # The op check's probe and the SavedModelBundle check's process start
    # TensorFlow while the model is traced and saved.
    threading.Thread(target=_prefetch_op_sources, daemon=True).start()
    bundle_check = ExportCheck()
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = model_dir / f"{STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
    encoder = TextEncoder(tokenizer, sequence_length)
    try:
        module = ServingModule(classifier, encoder, labels, text_pair)
        tf.saved_model.save(module, str(staging), signatures=module.signatures())
        set_method_name(staging, "classify", CLASSIFY_METHOD)
        _check_signatures(
            staging, expected_signatures(len(labels), encoder.input_names, text_pair)
        )
        check_ops(staging)
        all_assets = {"labels.txt": "".join(f"{label}\n" for label in labels)}
        all_assets.update(assets or {})
        _write_assets(staging / "assets", all_assets)
        (staging / "assets.extra").mkdir(exist_ok=True)
        write_warmup_requests(
            staging / "assets.extra" / WARMUP_FILE,
            model_name,
            encoder,
            text_pair=text_pair,
            texts=warmup_texts,
        )
        try:
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


def export_run_dir(run_dir, base_path=None, model_name=None, version=None) -> Path:
    """Exports a finished run from its directory alone.

    Rebuilds everything from the files `kerasbert.train` wrote:
    `config.yaml` (sequence length, export defaults), `labels.json`,
    `model.keras`, `tokenizer/` and, when present, `metrics.json`.

    Args:
        run_dir: a run directory, `runs/<name>/<timestamp>`.
        base_path: default the run's `export.base_path`.
        model_name: default the run's `export.model_name`, else its `name`.
        version: a positive integer; default the next free version.

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
    from kerasbert.config import load_config

    run_dir = _check_run_dir(run_dir)
    config_text = (run_dir / "config.yaml").read_text(encoding="utf-8")
    config = load_config(run_dir / "config.yaml")
    base_path = base_path if base_path is not None else config.export.base_path
    model_name = _check_model_name(model_name if model_name is not None else config.model_name)
    if version is not None:
        # Fail before the slow part: loading the model.
        version = _check_version(version)
        _refuse_existing_version(Path(base_path) / model_name, version)
    label_map = json.loads((run_dir / "labels.json").read_text(encoding="utf-8"))
    import keras
    import keras_hub  # noqa: F401  (registers keras-hub's classes for loading)

    import kerasbert.mean_pooling_classifier  # noqa: F401  (registers `pooling: mean`'s classes)

    with warnings.catch_warnings():
        # A model saved after `fit` carries optimizer variables that a model
        # loaded with compile=False has no use for; Keras warns about that.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        classifier = keras.saving.load_model(run_dir / "model.keras", compile=False)
    tokenizer = _load_tokenizer(run_dir / "tokenizer")
    assets = tokenizer_assets(tokenizer)
    assets["config.yaml"] = config_text
    if label_map.get("bin_edges") is not None:
        assets["bin_edges.json"] = json_text(label_map["bin_edges"])
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        assets["metrics.json"] = metrics_path.read_text(encoding="utf-8")
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
    )


def _load_tokenizer(preset_dir):
    """The tokenizer `tokenizer.save_to_preset(preset_dir)` wrote.

    `Tokenizer.from_preset` wants the backbone's `config.json` too, which a
    run's `tokenizer/` lacks; this is the tokenizer half of it.
    """
    import keras
    import keras_hub  # noqa: F401  (registers the tokenizer classes)

    config = json.loads((Path(preset_dir) / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer = keras.saving.deserialize_keras_object(config)
    tokenizer.load_preset_assets(str(preset_dir))
    return tokenizer


def _check_run_dir(run_dir) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"No run directory at {run_dir}. Expected a directory written by "
            "`python -m kerasbert.train`, such as runs/<name>/<timestamp>."
        )
    missing = [name for name in RUN_FILES if not (run_dir / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"{run_dir} is not a finished run directory: it lacks "
            f"{', '.join(missing)}. Expected runs/<name>/<timestamp> with "
            f"{', '.join(RUN_FILES)}, as `python -m kerasbert.train` writes them."
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
            "Invalid value for argument `labels`. Expected at least one label. "
            "Received: labels=[]"
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


def json_text(value) -> str:
    """`value` as indented JSON with a final newline."""
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


# === Warm-up ===


def warmup_records(model_name, encoder, text_pair=False, texts=WARMUP_TEXTS) -> list:
    """TF Serving warm-up requests, one or more for each signature.

    Args:
        model_name: the model's name, for the requests' `model_spec`.
        encoder: the `TextEncoder`, to make `predict_tokens` inputs.
        text_pair: whether requests carry `text_pair` too.
        texts: the texts to send; their pairs are the same texts reversed.

    Returns:
        A list of `tensorflow_serving.apis.prediction_log_pb2.PredictionLog`.
    """
    from tensorflow_serving.apis import (
        classification_pb2,
        model_pb2,
        predict_pb2,
        prediction_log_pb2,
    )

    texts = list(texts)
    pairs = texts[::-1]

    def spec(signature):
        return model_pb2.ModelSpec(name=model_name, signature_name=signature)

    def predict(signature, inputs):
        request = predict_pb2.PredictRequest(model_spec=spec(signature))
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        return prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )

    def text_inputs(batch, batch_pairs):
        inputs = {"text": tf.constant(batch, tf.string)}
        if text_pair:
            inputs["text_pair"] = tf.constant(batch_pairs, tf.string)
        return inputs

    records = [
        predict("serving_default", text_inputs(texts, pairs)),
        predict("serving_default", text_inputs(texts[1:2], pairs[1:2])),
        predict(
            "predict_tokens",
            {
                name: value.numpy()
                for name, value in encoder(
                    tf.constant(texts, tf.string),
                    tf.constant(pairs, tf.string) if text_pair else None,
                ).items()
            },
        ),
    ]
    request = classification_pb2.ClassificationRequest(model_spec=spec("classify"))
    for text, pair in zip(texts, pairs):
        features = {"text": text}
        if text_pair:
            features["text_pair"] = pair
        request.input.example_list.examples.add().CopyFrom(make_example(features))
    records.append(
        prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=request)
        )
    )
    return records


def write_warmup_requests(path, model_name, encoder, text_pair=False, texts=WARMUP_TEXTS):
    """Writes `warmup_records(...)` as the TFRecord file TF Serving replays.

    TF Serving runs these requests when it loads a version, before it serves
    it, so the first real request doesn't pay for graph set-up.
    """
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in warmup_records(model_name, encoder, text_pair, texts):
            writer.write(record.SerializeToString())


def make_example(features) -> tf.train.Example:
    """A `tf.train.Example` of string features, as `classify` reads them.

    Example:
    >>> make_example({"text": "a fine film"}).SerializeToString()
    """
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))
                for name, value in features.items()
            }
        )
    )


# === Op check ===

# Run in a fresh interpreter: a process that has imported keras-hub has
# already loaded TF Text, and whatever else was imported may have loaded op
# libraries of its own. `tf.load_op_library` is wrapped as soon as its module
# runs, so every op library that `import tensorflow` and then
# `import tensorflow_text` load is recorded with the ops it registered.
_OP_REGISTRY_PROBE = r"""
import importlib.machinery, json, sys

loaded = []
phase = ["tensorflow"]


class RecordOpLibraries:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "tensorflow.python.framework.load_library":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            original = module.load_op_library

            def load_op_library(library_filename):
                loaded.append((phase[0], str(library_filename)))
                return original(library_filename)

            module.load_op_library = load_op_library

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, RecordOpLibraries)
import tensorflow
from tensorflow.core.framework import op_def_pb2
from tensorflow.python.client import pywrap_tf_session as c_api


def registered():
    buffer = c_api.TF_GetAllOpList()
    return sorted(op.name for op in op_def_pb2.OpList.FromString(c_api.TF_GetBuffer(buffer)).op)


def library_ops(filename):
    # A library loaded before returns the ops it registered then.
    handle = c_api.TF_LoadLibrary(filename)
    try:
        return sorted(op.name for op in op_def_pb2.OpList.FromString(c_api.TF_GetOpList(handle)).op)
    finally:
        c_api.TF_DeleteLibraryHandle(handle)


after_tensorflow = registered()
phase[0] = "tensorflow_text"
import tensorflow_text

libraries = {}
for when, filename in loaded:
    libraries.setdefault(when, {})[filename] = library_ops(filename)
# The last line of stdout, whatever else may have been printed before it.
print("\n" + json.dumps({"registered": after_tensorflow, "libraries": libraries}))
"""


@dataclass(frozen=True)
class OpSources:
    """Which ops a TF Serving model server with TF Text can run.

    Attributes:
        core: ops TensorFlow itself registers.
        text: ops from TensorFlow Text's op libraries.
        other_libraries: `{library file: ops}` for op libraries that
            `import tensorflow` loads besides (e.g. TF Lite's
            `AudioMicrofrontend`): registered in every Python process, yet
            not part of core TensorFlow nor of TF Serving.
    """

    core: frozenset
    text: frozenset
    other_libraries: dict


_op_sources_lock = threading.Lock()


def op_sources() -> OpSources:
    """Core TensorFlow and TensorFlow Text op names, from a clean process.

    "Core" is what a process that imports only `tensorflow` has registered,
    minus the ops of op libraries that import loaded with
    `tf.load_op_library`; "TF Text" is the ops of the op libraries
    `import tensorflow_text` loads. This process can't tell them apart: it
    may have imported TF Text (keras-hub does) or other op libraries before.
    Computed once per process (a few seconds).

    Raises:
        RuntimeError: the probe process failed, or found no TF Text ops.
    """
    # One probe at a time: `export_model` starts one in the background.
    with _op_sources_lock:
        return _probe_op_sources()


def _prefetch_op_sources():
    try:
        op_sources()
    except Exception:  # noqa: BLE001  (check_ops calls again and raises it)
        pass


@functools.lru_cache(maxsize=1)
def _probe_op_sources() -> OpSources:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", _OP_REGISTRY_PROBE],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if result.returncode != 0:
        tail = " ".join(result.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"could not list TensorFlow's registered ops: {tail}")
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    libraries = probe["libraries"]
    other = libraries.get("tensorflow", {})
    from_other = {op for ops in other.values() for op in ops}
    text = frozenset(op for ops in libraries.get("tensorflow_text", {}).values() for op in ops)
    if not text:
        raise RuntimeError("importing tensorflow_text loaded no op library; cannot check ops")
    core = frozenset(set(probe["registered"]) - from_other)
    return OpSources(core=core, text=text, other_libraries=other)


def read_saved_model(saved_model_dir):
    """The `SavedModel` protocol buffer of `saved_model_dir/saved_model.pb`."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    return saved_model


def graph_ops(saved_model_dir) -> set[str]:
    """Every op type in a SavedModel: graph nodes and function library nodes.

    A node whose op is a function of the library (a direct function call) is
    not an op and is left out.
    """
    ops = set()
    for meta_graph in read_saved_model(saved_model_dir).meta_graphs:
        library = meta_graph.graph_def.library
        functions = {function.signature.name for function in library.function}
        nodes = [node.op for node in meta_graph.graph_def.node]
        for function in library.function:
            nodes.extend(node.op for node in function.node_def)
        ops.update(op for op in nodes if op not in functions)
    return ops


def check_ops(saved_model_dir) -> dict[str, list[str]]:
    """Checks that a SavedModel uses only core TensorFlow and TF Text ops.

    TF Serving's model server registers core TensorFlow and TensorFlow
    Text's ops; a SavedModel with any other op fails to load there.

    Args:
        saved_model_dir: a SavedModel directory.

    Returns:
        `{"core": [...], "text": [...]}`: the ops used, by source.

    Raises:
        UnsupportedOpsError: naming each op from elsewhere.

    Example:
    >>> check_ops("saved_models/quickstart/1")["text"]
    ['CaseFoldUTF8', 'FastWordpieceTokenizeWithOffsets', 'RegexSplitWithOffsets']
    """
    sources = op_sources()
    used = graph_ops(saved_model_dir)
    unsupported = sorted(used - sources.core - sources.text)
    if unsupported:
        described = []
        for op in unsupported:
            library = next(
                (path for path, ops in sources.other_libraries.items() if op in ops), None
            )
            described.append(f"{op} (from {Path(library).name})" if library else op)
        raise UnsupportedOpsError(
            f"The exported graph uses {len(unsupported)} op(s) that are neither core "
            f"TensorFlow nor TensorFlow Text ops: {', '.join(described)}. TF Serving "
            "would fail to load it; build the model and tokenizer from TensorFlow "
            "and TensorFlow Text ops only."
        )
    return {
        "core": sorted(used & sources.core),
        "text": sorted(used & sources.text),
    }


# === Inspection ===


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


def _check_signatures(saved_model_dir, expected):
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
        versions = sorted(
            (p.name for p in version_dir.iterdir() if p.name.isdigit()), key=int
        ) if version_dir.is_dir() else []
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
    edges_path = assets / "bin_edges.json"
    if edges_path.is_file():
        edges = json.loads(edges_path.read_text(encoding="utf-8"))
        lines.append(f"bin edges: {', '.join(str(e) for e in edges)}")
    metrics_path = assets / "metrics.json"
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


# === Command line ===


def parse_args(argv=None):
    parser = cli.ArgumentParser(
        prog="python -m kerasbert.export",
        description="Export a training run as a TF Serving SavedModel version, "
        "or describe an exported version.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--run", help="a run directory, runs/<name>/<timestamp>")
    action.add_argument("--inspect", metavar="VERSION_DIR", help="describe an exported version")
    parser.add_argument("--model-name", help="default: the run's export.model_name, else its name")
    parser.add_argument("--version", help="a positive integer; default: the next free version")
    parser.add_argument("--base-path", help="default: the run's export.base_path")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


def _main(args):
    if args.inspect is not None:
        run_flags = {
            "--model-name": args.model_name,
            "--version": args.version,
            "--base-path": args.base_path,
        }
        given = [flag for flag, value in run_flags.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: only with --run, not with --inspect")
        print(describe_saved_model(args.inspect))
        return 0
    cli.setup(args.debug)
    path = export_run_dir(args.run, args.base_path, args.model_name, args.version)
    print(f"exported: {path}")
    return 0


def main(argv=None) -> int:
    """`python -m kerasbert.export --run DIR | --inspect VERSION_DIR`."""
    return cli.run(_main, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
