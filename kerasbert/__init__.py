"""kerasbert: fine-tune BERT and RoBERTa classifiers with Keras 3, serve them with TF Serving."""

import os

# kerasbert builds on TensorFlow (tf.data, TF Text ops in the serving graph),
# and Keras reads its backend once, when first imported.
os.environ["KERAS_BACKEND"] = "tensorflow"

__version__ = "0.1.0"
