"""Dynamic-range int8 against float32: MiniLM-L6's logits and texts/s, the model alone.

Keras 3's `model.quantize("int8")` stores every Dense and EinsumDense kernel
(attention projections, feed-forward, pooler, head) as int8 with a scale
per output, and quantizes each layer's input to int8 as it runs. Under
TensorFlow the product is `tf.linalg.matmul(int8, int8, output_type=int32)`
(a `BatchMatMulV3`, an op the TF Serving 2.20 model server has). This
times that model against the float32 one on the same token ids (batch 32
and batch 1, 48 tokens, as the Rotten Tomatoes snippets), the two
interleaved so that a machine's load falls on both, and times the bare
matmul of one feed-forward layer (1024 x 384 by 384 x 1536) in both types.

Tokenization and the Session path are left out: they cost the same for
both models, so int8 can be faster through the export only if it is faster
here.

Run from the repository root after `python benchmarks/fetch_assets.py`:

    nice -n 5 .venv/bin/python benchmarks/int8.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
PRESET = HERE / "cache" / "minilm-l6-h384-uncased"
TOKENS = 48
ROUNDS = 5


def best_seconds(functions, arguments, calls) -> dict:
    """The fastest mean seconds per call of each function, over `ROUNDS` interleaved rounds."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(ROUNDS):
        for name, function in functions.items():
            started = time.perf_counter()
            for _ in range(calls):
                function(arguments[name])
            best[name] = min(best[name], (time.perf_counter() - started) / calls)
    return best


def main() -> int:
    import keras
    import keras_hub
    import tensorflow as tf

    def classifier():
        return keras_hub.models.BertTextClassifier.from_preset(
            str(PRESET), num_classes=2, preprocessor=None
        )

    keras.utils.set_random_seed(0)
    float_model = classifier()
    int8_model = classifier()
    int8_model.set_weights(float_model.get_weights())
    int8_model.quantize("int8")
    models = {
        "float32": tf.function(lambda x: float_model(x, training=False)),
        "int8": tf.function(lambda inputs: int8_model(inputs, training=False)),
    }
    ids = np.random.default_rng(0).integers(1000, 20000, size=(32, TOKENS)).astype("int32")
    batch = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": ids > 0}
    logits = {name: model(batch).numpy() for name, model in models.items()}
    print(f"load {os.getloadavg()[0]:.2f}")
    print(f"largest logit difference: {np.abs(logits['float32'] - logits['int8']).max():.4f}")
    print("same argmax:", f"{np.mean(logits['float32'].argmax(1) == logits['int8'].argmax(1)):.0%}")
    single = {key: value[:1] for key, value in batch.items()}
    for size, inputs, calls in ((32, batch, 5), (1, single, 20)):
        seconds = best_seconds(models, dict.fromkeys(models, inputs), calls)
        rates = {name: size / value for name, value in seconds.items()}
        print(
            f"batch {size}: float32 {rates['float32']:.0f} texts/s, int8 {rates['int8']:.0f} "
            f"texts/s ({rates['int8'] / rates['float32']:.2f}x)"
        )
    a = tf.random.normal([1024, 384])
    b = tf.random.normal([384, 1536])
    matmuls = {
        "float32": tf.function(lambda pair: tf.linalg.matmul(*pair)),
        "int8": tf.function(lambda ab: tf.linalg.matmul(*ab, output_type=tf.int32)),
    }
    pairs = {"float32": (a, b), "int8": (tf.cast(a * 20, tf.int8), tf.cast(b * 20, tf.int8))}
    for name in matmuls:
        matmuls[name](pairs[name])
    seconds = best_seconds(matmuls, pairs, 20)
    operations = 2 * 1024 * 384 * 1536
    print(
        "matmul 1024x384 by 384x1536: "
        + ", ".join(
            f"{name} {operations / value / 1e9:.0f} G op/s" for name, value in seconds.items()
        )
    )
    print(f"load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
