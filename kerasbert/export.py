"""SavedModel export with tokenization in the graph, laid out for TF Serving.

The exported directory `<base>/<model_name>/<version>/` takes raw strings:
the tokenizer's ops (TensorFlow and TensorFlow Text only) run inside the
serving graph, so TF Serving, `tf.saved_model.load` and
`keras.layers.TFSMLayer` all use the model as it is.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import tensorflow as tf

from kerasbert.models import TextEncoder

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"


class ServingModule(tf.Module):
    """The classifier with its tokenizer and label names, as tf.functions.

    Args:
        classifier: a Keras classifier that maps token inputs to logits.
        encoder: the `TextEncoder` the classifier was trained with.
        labels: class names, by class id.
        text_pair: whether the model was trained on sentence pairs.
    """

    def __init__(self, classifier, encoder, labels, text_pair=False):
        super().__init__(name="kerasbert")
        self.classifier = classifier
        self.encoder = encoder
        # keras-hub tokenizers keep their lookup tables as plain attributes;
        # holding the tokenizer here lets tf.Module track those resources.
        self.tokenizer = encoder.tokenizer
        self.labels = tf.constant(list(labels), dtype=tf.string)
        self.text_pair = text_pair
        if text_pair:
            self.serving_default = tf.function(
                self._serve_pair,
                input_signature=[
                    tf.TensorSpec([None], tf.string, name="text"),
                    tf.TensorSpec([None], tf.string, name="text_pair"),
                ],
            )
        else:
            self.serving_default = tf.function(
                self._serve_text,
                input_signature=[tf.TensorSpec([None], tf.string, name="text")],
            )
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

    def _serve_text(self, text):
        return self._outputs(self.encoder(text))

    def _serve_pair(self, text, text_pair):
        return self._outputs(self.encoder(text, text_pair))

    def _predict_tokens(self, inputs):
        return self._outputs(inputs)

    def _classify(self, inputs):
        features = {"text": tf.io.FixedLenFeature([], tf.string, default_value="")}
        if self.text_pair:
            features["text_pair"] = tf.io.FixedLenFeature([], tf.string, default_value="")
        parsed = tf.io.parse_example(inputs, features)
        outputs = self._outputs(self.encoder(parsed["text"], parsed.get("text_pair")))
        batch = tf.shape(inputs)[0]
        return {
            "classes": tf.tile(self.labels[tf.newaxis, :], [batch, 1]),
            "scores": outputs["probabilities"],
        }

    def signatures(self):
        return {
            "serving_default": self.serving_default,
            "predict_tokens": self.predict_tokens,
            "classify": self.classify,
        }


def next_version(model_dir) -> int:
    """1 + the highest integer version under `model_dir` (1 when none)."""
    model_dir = Path(model_dir)
    versions = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()] if model_dir.is_dir() else []
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
):
    """Writes a TF Serving SavedModel version directory, atomically.

    The version is written under a hidden temporary name in the same parent
    and renamed into place only when complete: TF Serving polls the base
    path and must never see a half-written version.

    Args:
        classifier: the trained Keras classifier (token inputs to logits).
        tokenizer: its keras-hub tokenizer.
        sequence_length: the longest sequence; longer texts are truncated.
        labels: class names by class id.
        base_path: TF Serving's model base path parent, e.g. `saved_models`.
        model_name: the model's name under `base_path`.
        version: an integer version; default 1 + the highest existing one.
        text_pair: whether the model takes sentence pairs.
        assets: `{file name: text}` written under `assets/`.

    Returns:
        The `Path` of the version directory.

    Raises:
        FileExistsError: the version already exists; it is never overwritten.
    """
    model_dir = Path(base_path) / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(model_dir) if version is None else int(version)
    final = model_dir / str(version)
    if final.exists():
        raise FileExistsError(f"{final} exists; versions are never overwritten")
    staging = model_dir / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    try:
        module = ServingModule(classifier, TextEncoder(tokenizer, sequence_length), labels, text_pair)
        tf.saved_model.save(module, str(staging), signatures=module.signatures())
        set_method_name(staging, "classify", CLASSIFY_METHOD)
        assets_dir = staging / "assets"
        assets_dir.mkdir(exist_ok=True)
        (assets_dir / "labels.txt").write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
        for name, text in (assets or {}).items():
            (assets_dir / name).write_text(text, encoding="utf-8")
        (staging / "assets.extra").mkdir(exist_ok=True)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def set_method_name(saved_model_dir, signature_key, method_name):
    """Sets a signature's method name, which `tf.saved_model.save` can't.

    TF Serving's Classify API accepts only signatures whose method is
    `tensorflow/serving/classify`.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    path = Path(saved_model_dir) / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(path.read_bytes())
    for meta_graph in saved_model.meta_graphs:
        meta_graph.signature_def[signature_key].method_name = method_name
    path.write_bytes(saved_model.SerializeToString())


def tokenizer_assets(tokenizer) -> dict[str, str]:
    """The tokenizer's vocabulary (and BPE merges) as asset files."""
    vocabulary = tokenizer.get_vocabulary()
    assets = {"vocabulary.txt": "".join(f"{token}\n" for token in vocabulary)}
    merges = getattr(tokenizer, "merges", None)
    if merges:
        assets["merges.txt"] = "".join(f"{m}\n" for m in merges)
    return assets


def json_text(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"
