"""The classifier, its tokenizer and its labels as the tf.functions an export serves.

Signatures:

- `serving_default` (`tensorflow/serving/predict`): `text` (and `text_pair`
  for sentence-pair models), `string [batch]`, to `probabilities` and
  `logits` (`float32 [batch, num_classes]`), `label` (`string [batch]`) and
  `label_id` (`int64 [batch]`).
- `predict_tokens` (`tensorflow/serving/predict`): the same outputs from
  already tokenized `token_ids`, `padding_mask` (and `segment_ids` for BERT),
  one window of `sequence_length` tokens per text: a sliding-window model
  (`WindowedClassifier`) takes its windows from raw text only.
- `classify` (`tensorflow/serving/classify`): serialized `tf.Example`s with a
  `text` (and `text_pair`) bytes feature to `classes` (`string [batch,
  num_classes]`) and `scores` (`float32 [batch, num_classes]`), the tensors
  TF Serving's Classify API reads.

A multi-label model (`Head(task="multi_label")`) answers `probabilities`
and `logits` (`float32 [batch, labels]`, a sigmoid per label), `labels_on`
(`bool [batch, labels]`: the probability is at or above the label's tuned
threshold, applied here in the graph) and `labels` (`string [batch,
labels]`, the names); its `classify` gives every label with its score. A
regression model (`Head(task="regression")`) answers `value` (`float32
[batch]`, in the target's own unit: the standardisation and any `log1p`
undone in the graph), and has a `regress` signature
(`tensorflow/serving/regress`) instead of `classify`: serialized
`tf.Example`s to `outputs` (`float32 [batch]`), the tensor TF Serving's
Regress API reads.

The head's temperature (`Head.temperature`, fitted on validation) divides
the model's logits inside the graph: `logits` are the calibrated ones, so
`probabilities` is their softmax (or their sigmoids) as before, and the
model's raw logits are `logits * temperature`. The decisions (`label`,
`label_id`) are those of the raw logits; a multi-label model's thresholds
apply to the calibrated probabilities.
"""

from __future__ import annotations

import tensorflow as tf

from kerasbert.exporting.heads import Head
from kerasbert.models.windows import WindowedClassifier
from kerasbert.serving.saved_model_bundle import CLASSIFY_METHOD, PREDICT_METHOD, REGRESS_METHOD


class ServingModule(tf.Module):
    """The classifier with its tokenizer and label names, as tf.functions.

    Args:
        classifier: a Keras classifier that maps token inputs to logits.
        encoder: the `kerasbert.models.classifier.TextEncoder` the classifier was
            trained with.
        labels: class names, by class id.
        text_pair: whether the model was trained on sentence pairs.
        head: a `kerasbert.exporting.heads.Head`: the task, its
            temperature, and its thresholds or target scaling; None for an
            uncalibrated single-label classifier.
        max_characters: the longest text, in characters, that the text
            signatures take; a longer one fails the request with
            INVALID_ARGUMENT. None for no limit.

    Example:
    >>> module = ServingModule(classifier, TextEncoder(tokenizer, 128), ["neg", "pos"])
    >>> tf.saved_model.save(module, "/tmp/m/1", signatures=module.signatures())
    """

    def __init__(
        self, classifier, encoder, labels, text_pair=False, head=None, max_characters=None
    ):
        super().__init__(name="kerasbert")
        self.windowed = isinstance(classifier, WindowedClassifier)
        if self.windowed != (encoder.windows is not None):
            raise ValueError(
                "A WindowedClassifier needs an encoder with `windows`, and only it does. "
                f"Received: {type(classifier).__name__} and windows={encoder.windows}"
            )
        self.max_characters = max_characters
        self.head = head or Head()
        self.head.check_labels(list(labels))
        self.task = self.head.task
        if self.task == "multi_label":
            self.thresholds = tf.constant(self.head.thresholds, dtype=tf.float32)
            self.temperature = tf.constant(self.head.temperatures(len(labels)), dtype=tf.float32)
        elif self.task == "classification":
            self.temperature = tf.constant(self.head.temperature, dtype=tf.float32)
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
        self.predict_tokens = tf.function(self._predict_tokens, input_signature=[token_specs])
        examples_spec = [tf.TensorSpec([None], tf.string, name="inputs")]
        if self.task == "regression":
            self.regress = tf.function(self._regress, input_signature=examples_spec)
        else:
            self.classify = tf.function(self._classify, input_signature=examples_spec)

    def _outputs(self, inputs):
        if self.windowed:
            logits = self.classifier.infer(inputs)
        else:
            logits = self.classifier(inputs, training=False)
        logits = tf.cast(logits, tf.float32)
        if self.task != "regression":
            # Temperature scaling: calibrated probabilities, the same decisions.
            logits = logits / self.temperature
        if self.task == "multi_label":
            probabilities = tf.sigmoid(logits)
            return {
                "probabilities": probabilities,
                "logits": logits,
                "labels_on": probabilities >= self.thresholds,
                "labels": tf.tile(self.labels[tf.newaxis, :], [tf.shape(logits)[0], 1]),
            }
        if self.task == "regression":
            value = logits[:, 0] * self.head.std + self.head.mean
            if self.head.transform == "log1p":
                value = tf.math.expm1(value)
            return {"value": value}
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
        from kerasbert.data.pipeline import trim_to_longest

        if text_pair is not None:
            text_pair = self._within_limit(text_pair)
        text = self._within_limit(text)
        inputs = trim_to_longest(self.encoder(text, text_pair), multiple=1)
        if self.windowed:
            # `predict_tokens` takes one window per text; these are several.
            return self._outputs(inputs)
        return self.predict_tokens(inputs)

    def _within_limit(self, text):
        """`text`, once no string in it is longer than `max_characters`."""
        if self.max_characters is None:
            return text
        longest = tf.reduce_max(tf.strings.length(text, unit="UTF8_CHAR"))
        # Reads "assertion failed: [a text has] [1234] [characters, more than ...]".
        check = tf.debugging.Assert(
            longest <= self.max_characters,
            [
                "a text has",
                longest,
                f"characters, more than the {self.max_characters} this model takes "
                "(export.max_characters); shorten or split it",
            ],
        )
        with tf.control_dependencies([check]):
            return tf.identity(text)

    def _predict_tokens(self, inputs):
        return self._outputs(inputs)

    def _serve_examples(self, inputs):
        features = {"text": tf.io.FixedLenFeature([], tf.string, default_value="")}
        if self.text_pair:
            features["text_pair"] = tf.io.FixedLenFeature([], tf.string, default_value="")
        parsed = tf.io.parse_example(inputs, features)
        return self.serving_default(*(parsed[name] for name in features))

    def _regress(self, inputs):
        return {"outputs": self._serve_examples(inputs)["value"]}

    def _classify(self, inputs):
        outputs = self._serve_examples(inputs)
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
        elif key == "regress":
            outputs = self.regress(**tensors)
        else:
            outputs = self.serving_default(**tensors)
        return {name: value.numpy() for name, value in outputs.items()}

    def signatures(self):
        """`{signature key: tf.function}` for `tf.saved_model.save`."""
        signatures = {
            "serving_default": self.serving_default,
            "predict_tokens": self.predict_tokens,
        }
        if self.task == "regression":
            signatures["regress"] = self.regress
        else:
            signatures["classify"] = self.classify
        return signatures


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
            raise TypeError(
                f"variable {variable.path} holds a {type(value).__name__}, not a tf.Variable"
            )
        variables.append(value)
    return variables


def expected_signatures(num_classes, token_inputs, text_pair=False, task="classification") -> dict:
    """The signature defs an export must have, as `signature_summary` gives them.

    Args:
        num_classes: the number of labels.
        token_inputs: the backbone's input names (`TextEncoder.input_names`).
        text_pair: whether `serving_default` also takes `text_pair`.
        task: the head's task (`kerasbert.exporting.heads.Head.task`).

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
    if task == "multi_label":
        outputs = {
            "probabilities": ("float32", (-1, num_classes)),
            "logits": ("float32", (-1, num_classes)),
            "labels_on": ("bool", (-1, num_classes)),
            "labels": ("string", (-1, num_classes)),
        }
    elif task == "regression":
        outputs = {"value": ("float32", (-1,))}
    text = {"text": ("string", (-1,))}
    if text_pair:
        text["text_pair"] = ("string", (-1,))
    tokens = {
        name: ("bool" if name == "padding_mask" else "int32", (-1, -1)) for name in token_inputs
    }
    signatures = {
        "serving_default": {"method": PREDICT_METHOD, "inputs": text, "outputs": outputs},
        "predict_tokens": {"method": PREDICT_METHOD, "inputs": tokens, "outputs": outputs},
    }
    if task == "regression":
        signatures["regress"] = {
            "method": REGRESS_METHOD,
            "inputs": {"inputs": ("string", (-1,))},
            "outputs": {"outputs": ("float32", (-1,))},
        }
        return signatures
    return {
        **signatures,
        "classify": {
            "method": CLASSIFY_METHOD,
            "inputs": {"inputs": ("string", (-1,))},
            "outputs": {
                "classes": ("string", (-1, num_classes)),
                "scores": ("float32", (-1, num_classes)),
            },
        },
    }
