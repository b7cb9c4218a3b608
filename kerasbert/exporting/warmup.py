"""The requests TF Serving replays while it loads a version: `assets.extra/tf_serving_warmup_requests`."""

from __future__ import annotations

import tensorflow as tf

# Warm-up texts: the empty string, plain and non-ASCII text, and one longer
# than any sequence length, so truncation is exercised too.
WARMUP_TEXTS = (
    "",
    "A short, plain review of the film.",
    "Ünïcödé, 日本語, Ελληνικά and emoji 🎬🍿 are text too.",
    " ".join(["a long review that runs past the sequence length"] * 60),
)


def warmup_records(
    model_name, encoder, text_pair=False, texts=WARMUP_TEXTS, examples_signature="classify"
) -> list:
    """TF Serving warm-up requests, one or more for each signature.

    Args:
        model_name: the model's name, for the requests' `model_spec`.
        encoder: the `TextEncoder`, to make `predict_tokens` inputs.
        text_pair: whether requests carry `text_pair` too.
        texts: the texts to send; their pairs are the same texts reversed.
        examples_signature: the signature that takes `tf.Example`s:
            `classify`, or `regress` for a regression model.

    Returns:
        A list of `tensorflow_serving.apis.prediction_log_pb2.PredictionLog`.
    """
    from tensorflow_serving.apis import (
        classification_pb2,
        model_pb2,
        predict_pb2,
        prediction_log_pb2,
        regression_pb2,
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

    tokens = encoder(
        tf.constant(texts, tf.string), tf.constant(pairs, tf.string) if text_pair else None
    )
    if encoder.windows is not None:
        # `predict_tokens` takes one window per text: each text's first.
        tokens = {name: value[:, 0] for name, value in tokens.items()}
    records = [
        predict("serving_default", text_inputs(texts, pairs)),
        predict("serving_default", text_inputs(texts[1:2], pairs[1:2])),
        predict("predict_tokens", {name: value.numpy() for name, value in tokens.items()}),
    ]
    if examples_signature == "regress":
        request = regression_pb2.RegressionRequest(model_spec=spec("regress"))
    else:
        request = classification_pb2.ClassificationRequest(model_spec=spec("classify"))
    for text, pair in zip(texts, pairs):
        features = {"text": text}
        if text_pair:
            features["text_pair"] = pair
        request.input.example_list.examples.add().CopyFrom(make_example(features))
    if examples_signature == "regress":
        log = prediction_log_pb2.PredictionLog(
            regress_log=prediction_log_pb2.RegressLog(request=request)
        )
    else:
        log = prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=request)
        )
    records.append(log)
    return records


def write_warmup_requests(
    path, model_name, encoder, text_pair=False, texts=WARMUP_TEXTS, examples_signature="classify"
):
    """Writes `warmup_records(...)` as the TFRecord file TF Serving replays.

    TF Serving runs these requests when it loads a version, before it serves
    it, so the first real request doesn't pay for graph set-up.
    """
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in warmup_records(model_name, encoder, text_pair, texts, examples_signature):
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
