"""A classifier's compute dtype, changed after training: what `export.dtype` exports.

A model trained in float32 can serve in bfloat16 and one trained in
`mixed_bfloat16` can serve in float32: the variables are float32 under both
Keras policies (`float32`, `mixed_bfloat16`), so the same weights load into
the model rebuilt under the other policy. Under `mixed_bfloat16` every layer
casts its float32 variables and inputs to bfloat16 and computes there; the
serving module casts the logits back, so an export answers in float32
either way.
"""

from __future__ import annotations

import keras

# `export.dtype` to the Keras dtype policy the exported model computes under.
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def with_compute_dtype(classifier, dtype):
    """The classifier computing in `dtype`, with the same (float32) weights.

    Every layer's dtype policy in the classifier's config is replaced, as if
    it had been built under the policy (`build_classifier(..., dtype=...)`),
    and the weights are copied over. A classifier that already computes in
    `dtype` is returned as it is.

    Args:
        classifier: a built Keras classifier under the `float32` or
            `mixed_bfloat16` policy.
        dtype: `"float32"` or `"bfloat16"`.

    Returns:
        A Keras model.

    Raises:
        ValueError: for another `dtype`, or a classifier under another policy.

    Example:
    >>> served = with_compute_dtype(classifier, "bfloat16")
    >>> served.dtype_policy.compute_dtype
    'bfloat16'
    """
    if dtype not in POLICIES:
        raise ValueError(
            "Invalid value for argument `dtype`. Expected one of "
            f"{sorted(POLICIES)}. Received: dtype={dtype!r}"
        )
    policy = POLICIES[dtype]
    current = classifier.dtype_policy.name
    if current not in POLICIES.values():
        raise ValueError(
            f"Cannot change the compute dtype of a classifier under the {current!r} policy: "
            f"its variables are not float32. Expected one of {sorted(POLICIES.values())}."
        )
    if current == policy:
        return classifier
    config = _with_policy(keras.saving.serialize_keras_object(classifier), policy)
    # The export needs the model, not its training setup (a custom `compile`
    # would only warn that it can't be restored).
    config.pop("compile_config", None)
    rebuilt = keras.saving.deserialize_keras_object(config)
    rebuilt.set_weights(classifier.get_weights())
    return rebuilt


def _with_policy(config, policy):
    """`config` with every serialized float32 or mixed_bfloat16 `DTypePolicy` set to `policy`."""
    if isinstance(config, list):
        return [_with_policy(item, policy) for item in config]
    if not isinstance(config, dict):
        return config
    if (
        config.get("class_name") == "DTypePolicy"
        and config.get("config", {}).get("name") in POLICIES.values()
    ):
        return {**config, "config": {**config["config"], "name": policy}}
    return {key: _with_policy(value, policy) for key, value in config.items()}
