"""Layer-wise learning rates: exact per-variable updates, schedules, save/load."""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"

import keras
import numpy as np
import pytest
from keras import ops

from kerasbert.models.layer_groups import LayerGroups, layer_groups
from kerasbert.training.cyclical_learning_rate import CyclicalLearningRate
from kerasbert.training.optimizers import (
    LayerwiseAdam,
    LayerwiseAdamW,
    LayerwiseSGD,
    build_optimizer,
    layerwise_multipliers,
)
from kerasbert.training.schedules import CyclicalSchedule
from tests.support.tiny import tiny_classifier

DECAY = 0.8


@pytest.fixture(scope="module")
def bert():
    return tiny_classifier("bert")


def expected_multipliers(groups):
    """Howard & Ruder's rule, worked out here layer by layer."""
    by_path = {}
    for layer in groups.embeddings:
        by_path.update({v.path: DECAY**3 for v in layer.weights})
    for layer, power in zip(groups.transformer, (2, 1, 0)):
        by_path.update({v.path: DECAY**power for v in layer.weights})
    for layer in groups.head:
        by_path.update({v.path: 1.0 for v in layer.weights})
    return by_path


def fixed_gradients(variables, steps=1, seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=v.shape).astype("float32") for v in variables] for _ in range(steps)]


def run_optimizer(optimizer, variables, gradients, start):
    """Applies `gradients` step by step from `start`; returns the end values."""
    for variable, value in zip(variables, start):
        variable.assign(value)
    for step in gradients:
        optimizer.apply([ops.convert_to_tensor(g) for g in step], variables)
    return [v.numpy().copy() for v in variables]


# === Multipliers ===


def test_multipliers_fall_by_decay_per_layer_from_head_to_embeddings(bert):
    classifier, _ = bert
    groups = layer_groups(classifier)
    multipliers = layerwise_multipliers(groups, DECAY)
    assert multipliers == pytest.approx(expected_multipliers(groups), rel=1e-12)
    assert set(multipliers) == {v.path for v in classifier.weights}
    query = "transformer_layer_0/self_attention_layer/query/kernel"
    assert multipliers[query] == pytest.approx(0.64)
    assert multipliers["logits/kernel"] == 1.0


@pytest.mark.parametrize("decay", [0.0, 1.5, -0.5, "0.8"])
def test_decay_outside_zero_to_one_is_rejected(bert, decay):
    with pytest.raises(ValueError, match=r"`decay`. Expected a number in \(0, 1\]"):
        layerwise_multipliers(layer_groups(bert[0]), decay)


def test_non_positive_multipliers_are_rejected():
    with pytest.raises(ValueError, match="`learning_rate_multipliers`. Expected positive numbers"):
        LayerwiseSGD(0.1, learning_rate_multipliers={"dense/kernel": 0.0})


# === Exact updates ===


def test_sgd_update_of_lower_layers_is_decay_to_the_depth_times_the_plain_update(bert):
    classifier, _ = bert
    groups = layer_groups(classifier)
    variables = classifier.trainable_variables
    start = [np.zeros(v.shape, "float32") for v in variables]  # the update is the end value
    gradients = fixed_gradients(variables)
    original = [v.numpy().copy() for v in variables]

    layerwise = run_optimizer(
        LayerwiseSGD(0.1, learning_rate_multipliers=layerwise_multipliers(groups, DECAY)),
        variables,
        gradients,
        start,
    )
    plain = run_optimizer(keras.optimizers.SGD(0.1), variables, gradients, start)
    run_optimizer(keras.optimizers.SGD(0.0), variables, [], original)

    expected = expected_multipliers(groups)
    for variable, new, reference in zip(variables, layerwise, plain):
        np.testing.assert_allclose(new, expected[variable.path] * reference, rtol=1e-6, atol=0)
    assert any(expected[v.path] == pytest.approx(DECAY**3) for v in variables)


@pytest.mark.parametrize(
    "layerwise_class, plain_class, kwargs",
    [
        (LayerwiseAdam, keras.optimizers.Adam, {}),
        (LayerwiseAdamW, keras.optimizers.AdamW, {"weight_decay": 0.1}),
    ],
)
def test_adam_with_multipliers_equals_adam_run_at_the_scaled_rate(
    bert, layerwise_class, plain_class, kwargs
):
    classifier, _ = bert
    groups = layer_groups(classifier)
    variables = classifier.trainable_variables
    original = [v.numpy().copy() for v in variables]
    gradients = fixed_gradients(variables, steps=3)
    multipliers = layerwise_multipliers(groups, DECAY)

    layerwise = run_optimizer(
        layerwise_class(0.01, learning_rate_multipliers=multipliers, **kwargs),
        variables,
        gradients,
        original,
    )
    # The reference: one stock Keras optimizer per rate, each on its variables.
    # Its beta_1 is rounded to float32 as the layer-wise optimizer's variable
    # is, so that the two differ only in how they get each variable's rate.
    beta_1 = float(np.float32(0.9))
    reference = [None] * len(variables)
    for multiplier in sorted(set(multipliers.values())):
        indices = [i for i, v in enumerate(variables) if multipliers[v.path] == multiplier]
        subset = [variables[i] for i in indices]
        ends = run_optimizer(
            plain_class(0.01 * multiplier, beta_1=beta_1, **kwargs),
            subset,
            [[step[i] for i in indices] for step in gradients],
            [original[i] for i in indices],
        )
        for i, end in zip(indices, ends):
            reference[i] = end
    run_optimizer(keras.optimizers.SGD(0.0), variables, [], original)

    for variable, new, expected, start in zip(variables, layerwise, reference, original):
        # Equal up to float32 rounding: the layer-wise optimizer multiplies
        # the rate in float32, the reference rounds `0.01 * multiplier` once,
        # which can differ in the last place (~1e-9 at the updates' scale).
        np.testing.assert_allclose(new, expected, rtol=1e-6, atol=1e-8)
        assert not np.array_equal(new, start), variable.path


def test_sgd_without_multipliers_or_momentum_is_stock_sgd_bit_for_bit():
    variable = keras.Variable(np.linspace(-1, 1, 6, dtype="float32"), name="w")
    gradients = fixed_gradients([variable], steps=3)
    start = [variable.numpy().copy()]
    ours = run_optimizer(LayerwiseSGD(0.1), [variable], gradients, start)
    stock = run_optimizer(keras.optimizers.SGD(0.1), [variable], gradients, start)
    np.testing.assert_array_equal(ours[0], stock[0])


# === With a schedule, in fit ===


def test_cyclical_learning_rate_drives_the_base_rate_of_every_layer():
    """Parallel one-weight layers under `loss = mean(sum of outputs)` on ones.

    Every gradient is 1, so each batch moves layer `k` steps below the top
    by `lr(step) * decay ** k`; rates and decay are powers of 2, so exactly.
    """
    decay = 0.5
    inputs = keras.Input((1,))
    layers = [
        keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros", name=f"layer_{i}")
        for i in range(5)
    ]
    model = keras.Model(inputs, keras.layers.Add()([layer(inputs) for layer in layers]))
    groups = LayerGroups(embeddings=layers[:1], transformer=layers[1:4], head=layers[4:])
    model.compile(
        optimizer=build_optimizer("sgd", 1.0, momentum=0.0, layerwise_decay=decay, groups=groups),
        loss=lambda y_true, y_pred: ops.mean(y_pred),
        jit_compile=False,
    )
    schedule = CyclicalLearningRate(CyclicalSchedule(0.25, 1.0, step_size=2))
    kernels = [[float(layer.kernel.numpy()[0, 0]) for layer in layers]]
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: kernels.append(
            [float(layer.kernel.numpy()[0, 0]) for layer in layers]
        )
    )

    model.fit(
        np.ones((12, 1), "float32"),
        np.zeros((12, 1), "float32"),
        batch_size=4,
        epochs=2,
        callbacks=[schedule, record],
        verbose=0,
    )

    rates = [0.25, 0.625, 1.0, 0.625, 0.25, 0.625]  # triangular, step size 2
    assert [row["learning_rate"] for row in schedule.trace] == pytest.approx(rates, rel=1e-7)
    updates = -np.diff(np.array(kernels), axis=0)
    depth = np.array([3, 2, 1, 0, 0])  # embeddings, transformer bottom..top, head
    np.testing.assert_allclose(updates, np.outer(rates, decay**depth), rtol=1e-6, atol=0)


# === Factory and saving ===


def test_build_optimizer_picks_the_class_and_the_momentum(bert):
    groups = layer_groups(bert[0])
    adamw = build_optimizer("adamw", 1e-3, weight_decay=0.01, momentum=0.8)
    assert isinstance(adamw, LayerwiseAdamW)
    assert float(adamw.beta_1.numpy()) == pytest.approx(0.8)
    assert adamw.weight_decay == 0.01
    assert adamw.learning_rate_multipliers == {}

    adam = build_optimizer("adam", 1e-3, layerwise_decay=DECAY, groups=groups)
    assert isinstance(adam, LayerwiseAdam)
    assert adam.weight_decay is None
    assert adam.learning_rate_multipliers == layerwise_multipliers(groups, DECAY)

    sgd = build_optimizer("sgd", 1e-2, momentum=0.5)
    assert isinstance(sgd, LayerwiseSGD)
    assert float(sgd.momentum.numpy()) == 0.5


def test_build_optimizer_rejects_unknown_names_and_decay_without_groups():
    message = r"`name`. Expected one of 'adamw', 'adam', 'sgd'. Received: name='rmsprop'"
    with pytest.raises(ValueError, match=message):
        build_optimizer("rmsprop", 1e-3)
    with pytest.raises(ValueError, match=r"layerwise_decay=0.8 needs the layer groups"):
        build_optimizer("adamw", 1e-3, layerwise_decay=0.8)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_accumulated_steps_apply_the_mean_gradient_once_every_n_batches(name):
    model, groups = dense_stack()
    variables = model.trainable_variables
    start = [v.numpy().copy() for v in variables]
    gradients = fixed_gradients(variables, steps=3, seed=1)

    accumulating = build_optimizer(
        name, 0.1, layerwise_decay=0.8, groups=groups, gradient_accumulation_steps=3
    )
    accumulating.build(variables)
    after_two = run_optimizer(accumulating, variables, gradients[:2], start)
    for value, old in zip(after_two, start):
        np.testing.assert_array_equal(value, old)
    run_optimizer(accumulating, variables, gradients[2:], after_two)
    accumulated = [v.numpy().copy() for v in variables]

    plain = build_optimizer(name, 0.1, layerwise_decay=0.8, groups=groups)
    plain.build(variables)
    mean = [[np.mean([step[i] for step in gradients], axis=0) for i in range(len(variables))]]
    expected = run_optimizer(plain, variables, mean, start)
    for value, want in zip(accumulated, expected):
        np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("steps", [0, -2, 1.5, True])
def test_gradient_accumulation_steps_must_be_a_positive_integer(steps):
    with pytest.raises(
        ValueError, match="`gradient_accumulation_steps`. Expected a positive integer"
    ):
        build_optimizer("adamw", 1e-3, gradient_accumulation_steps=steps)


def dense_stack():
    """Five named dense layers in a chain, grouped as embeddings, 3 layers, head."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    layers = [keras.layers.Dense(4, name=f"dense_{i}") for i in range(5)]
    outputs = inputs
    for layer in layers:
        outputs = layer(outputs)
    groups = LayerGroups(embeddings=layers[:1], transformer=layers[1:4], head=layers[4:])
    return keras.Model(inputs, outputs), groups


def test_save_and_load_keep_the_multipliers_and_the_optimizer_state(tmp_path):
    model, groups = dense_stack()
    multipliers = layerwise_multipliers(groups, DECAY)
    model.compile(
        optimizer=build_optimizer(
            "adamw", 1e-2, weight_decay=0.01, layerwise_decay=DECAY, groups=groups
        ),
        loss="mse",
        jit_compile=False,
    )
    model.fit(np.ones((8, 4), "float32"), np.zeros((8, 4), "float32"), epochs=1, verbose=0)
    model.optimizer.beta_1.assign(0.87)

    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")

    optimizer = loaded.optimizer
    assert isinstance(optimizer, LayerwiseAdamW)
    assert optimizer.learning_rate_multipliers == multipliers
    for variable in loaded.trainable_variables:
        assert optimizer.learning_rate_multiplier(variable) == multipliers[variable.path]
    embeddings_kernel = loaded.get_layer("dense_0").kernel
    assert optimizer.learning_rate_multiplier(embeddings_kernel) == pytest.approx(DECAY**3)
    assert float(optimizer.beta_1.numpy()) == pytest.approx(0.87)
    assert len(optimizer.variables) == len(model.optimizer.variables)
    for saved, restored in zip(model.optimizer.variables, optimizer.variables):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())


def test_serialized_optimizer_finds_its_multipliers_on_a_classifier(bert):
    classifier, _ = bert
    groups = layer_groups(classifier)
    original = build_optimizer("adamw", 1e-3, layerwise_decay=DECAY, groups=groups)

    restored = keras.optimizers.deserialize(keras.optimizers.serialize(original))
    restored.build(classifier.trainable_variables)

    assert isinstance(restored, LayerwiseAdamW)
    expected = expected_multipliers(groups)
    for variable in classifier.trainable_variables:
        assert restored.learning_rate_multiplier(variable) == pytest.approx(expected[variable.path])
