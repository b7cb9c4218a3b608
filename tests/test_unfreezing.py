"""Progressive unfreezing: stages in one `fit`, frozen weights untouched."""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasbert.models.layer_groups import (
    LayerGroups,
    build_optimizer_variables,
    layer_groups,
    set_trainable_layers,
)
from kerasbert.models.tokenizers import TextEncoder
from kerasbert.training.cyclical_learning_rate import CyclicalLearningRate
from kerasbert.training.optimizers import build_optimizer
from kerasbert.training.progressive_unfreezing import ProgressiveUnfreezing
from kerasbert.training.schedules import OneCycleSchedule
from tests.support.tiny import TINY_TEXTS, tiny_classifier

NUM_LAYERS = 3


def tiny_classifier_with_data(family):
    classifier, tokenizer = tiny_classifier(family, num_layers=NUM_LAYERS)
    encoded = TextEncoder(tokenizer, 16)(tf.constant(TINY_TEXTS))
    inputs = {name: np.asarray(value) for name, value in encoded.items()}
    labels = np.arange(len(TINY_TEXTS)) % 3
    return classifier, inputs, labels


@pytest.fixture(scope="module")
def bert():
    return tiny_classifier_with_data("bert")


def weights_of(layers):
    return [v for layer in layers for v in layer.weights]


def size_of(layers):
    return sum(int(np.prod(v.shape)) for v in weights_of(layers))


def trainable_layers_of(groups, trainable_layers):
    """The layers a stage trains, worked out here independently of the code."""
    if trainable_layers == "all":
        return groups.embeddings + groups.transformer + groups.head
    top = groups.transformer[len(groups.transformer) - trainable_layers :]
    return top + groups.head


def compile_classifier(classifier, groups, **optimizer_args):
    name = optimizer_args.pop("name", "adamw")
    optimizer = build_optimizer(
        name,
        learning_rate=1e-3 if name.startswith("adam") else 1e-2,
        weight_decay=0.01,
        groups=groups,
        **optimizer_args,
    )
    classifier.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )


# === Flags ===


def test_set_trainable_layers_trains_the_top_layers_and_the_head(bert):
    groups = layer_groups(bert[0])
    set_trainable_layers(groups, 2)
    assert [layer.trainable for layer in groups.transformer] == [False, True, True]
    assert not any(layer.trainable for layer in groups.embeddings)
    assert all(layer.trainable for layer in groups.head)

    set_trainable_layers(groups, 0)
    assert not any(layer.trainable for layer in groups.transformer + groups.embeddings)
    assert all(layer.trainable for layer in groups.head)

    set_trainable_layers(groups, NUM_LAYERS)
    assert all(layer.trainable for layer in groups.transformer)
    assert not any(layer.trainable for layer in groups.embeddings)

    set_trainable_layers(groups, "all")
    assert all(layer.trainable for layer in groups.embeddings + groups.transformer)


@pytest.mark.parametrize("trainable_layers", [4, -1, "some", 1.5, True])
def test_trainable_layers_outside_the_backbone_are_rejected(bert, trainable_layers):
    groups = layer_groups(bert[0])
    message = r"Invalid value for argument `trainable_layers`. Expected an integer from 0 to 3"
    with pytest.raises(ValueError, match=message):
        set_trainable_layers(groups, trainable_layers)
    with pytest.raises(ValueError, match=message):
        ProgressiveUnfreezing([(1, 0), (1, trainable_layers)], groups)


@pytest.mark.parametrize(
    "stages, message",
    [
        ([], "Expected a non-empty list"),
        ([(0, 1)], r"epochs must be a positive integer. Received: epochs=0"),
        ([(1, 0, 2)], r"Expected an \(epochs, trainable_layers\) pair"),
        ([3], r"stages\[0\]"),
    ],
)
def test_malformed_stages_are_rejected(bert, stages, message):
    with pytest.raises(ValueError, match=message):
        ProgressiveUnfreezing(stages, layer_groups(bert[0]))


# === Optimizer ===


def test_optimizer_is_built_on_every_variable_a_later_stage_trains(bert):
    classifier = bert[0]
    groups = layer_groups(classifier)
    every_weight = weights_of(groups.embeddings + groups.transformer + groups.head)
    zeros = [np.zeros(v.shape, "float32") for v in every_weight]
    compile_classifier(classifier, groups)
    set_trainable_layers(groups, 0)

    # Keras' own build takes only what is trainable now, and later refuses the rest.
    stock = keras.optimizers.AdamW()
    stock.build(classifier.trainable_variables)
    with pytest.raises(ValueError, match="Unknown variable"):
        stock.apply(zeros, every_weight)

    build_optimizer_variables(classifier, groups)
    classifier.optimizer.apply(zeros, every_weight)

    # The flags are left as the stage set them.
    assert not any(layer.trainable for layer in groups.transformer)
    set_trainable_layers(groups, "all")


def test_optimizer_built_on_fewer_variables_is_refused_clearly(bert):
    classifier = bert[0]
    groups = layer_groups(classifier)
    compile_classifier(classifier, groups)
    set_trainable_layers(groups, 0)
    classifier.optimizer.build(classifier.trainable_variables)

    with pytest.raises(ValueError, match=r"optimizer was built on \d+ variables, without \d+"):
        build_optimizer_variables(classifier, groups)
    set_trainable_layers(groups, "all")


# === One fit, three stages ===


# AdamW for one family, SGD with momentum for the other: both keep slots
# per variable, which must exist for layers unfrozen later. (One optimizer
# each keeps the file fast: tracing AdamW's step costs seconds per stage.)
@pytest.mark.parametrize("family, optimizer", [("bert", "adamw"), ("roberta", "sgd")])
def test_stages_train_only_their_layers_within_one_fit(family, optimizer):
    classifier, inputs, labels = tiny_classifier_with_data(family)
    groups = layer_groups(classifier)
    assert len(groups.transformer) == NUM_LAYERS
    compile_classifier(classifier, groups, name=optimizer, layerwise_decay=0.8)
    stages = [(1, 0), (1, 2), (1, "all")]
    everything = groups.embeddings + groups.transformer + groups.head

    def snapshot():
        return {v.path: v.numpy().copy() for v in weights_of(everything)}

    snapshots = [snapshot()]
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: snapshots.append(snapshot())
    )
    unfreezing = ProgressiveUnfreezing(stages, groups, verbose=0)

    history = classifier.fit(
        inputs,
        labels,
        batch_size=8,
        epochs=3,
        callbacks=[unfreezing, record],
        verbose=0,
        shuffle=False,
    )

    for stage, (_, trainable_layers) in enumerate(stages):
        trained = {v.path for v in weights_of(trainable_layers_of(groups, trainable_layers))}
        before, after = snapshots[stage], snapshots[stage + 1]
        frozen_changed = [
            p for p in before if p not in trained and not np.array_equal(before[p], after[p])
        ]
        trained_unchanged = [p for p in trained if np.array_equal(before[p], after[p])]
        assert frozen_changed == [], f"stage {stage}: frozen weights changed"
        assert trained_unchanged == [], f"stage {stage}: trainable weights did not change"

    expected_counts = [size_of(trainable_layers_of(groups, k)) for _, k in stages]
    assert [r["trainable_params"] for r in unfreezing.stage_log] == expected_counts
    assert [r["epoch"] for r in unfreezing.stage_log] == [0, 1, 2]
    # Keras would print them on every epoch's line as floats.
    assert not {"stage", "trainable_params"} & set(history.history)
    assert expected_counts[0] < expected_counts[1] < expected_counts[2]


# === Schedule restarts and epochs, on a toy model ===


def toy_model():
    """Five dense layers in a chain, grouped as embeddings, 3 layers, head."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    layers = [keras.layers.Dense(4, name=f"dense_{i}") for i in range(5)]
    outputs = inputs
    for layer in layers:
        outputs = layer(outputs)
    model = keras.Model(inputs, outputs)
    groups = LayerGroups(embeddings=layers[:1], transformer=layers[1:4], head=layers[4:])
    model.compile(optimizer=build_optimizer("sgd", 0.01), loss="mse", jit_compile=False)
    return model, groups


def test_schedule_restarts_with_each_stage_length(capsys):
    model, groups = toy_model()
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 4), "float32")
    schedule = CyclicalLearningRate(OneCycleSchedule(0.01, total_steps=100))
    started = []
    unfreezing = ProgressiveUnfreezing(
        [(1, 0), (2, 3)],
        groups,
        on_stage_begin=lambda stage, record: started.append((stage, record["epoch"])),
        schedule=schedule,
    )

    model.fit(x, y, batch_size=4, epochs=3, callbacks=[schedule, unfreezing], verbose=0)

    assert [row["step"] for row in schedule.trace] == [0, 1, 0, 1, 2, 3]
    assert schedule.schedule.total_steps == 4  # 2 epochs of 2 batches
    assert started == [(0, 0), (1, 1)]
    printed = capsys.readouterr().out
    assert "Stage 1/2: epochs 1-1, trainable_layers=0, 20 trainable parameters" in printed
    assert "Stage 2/2: epochs 2-3, trainable_layers=3, 80 trainable parameters" in printed


def test_each_stage_cycles_up_to_its_own_peak_in_fit():
    model, groups = toy_model()
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 4), "float32")
    schedule = CyclicalLearningRate(
        OneCycleSchedule(0.01, total_steps=100, pct_start=0.5, div_factor=2)
    )
    unfreezing = ProgressiveUnfreezing(
        [(1, 0), (1, 3), (1, "all")],
        groups,
        schedule=schedule,
        maximal_learning_rates=[0.04, None, 0.001],
        verbose=0,
    )

    model.fit(x, y, batch_size=4, epochs=3, callbacks=[schedule, unfreezing], verbose=0)

    # Two batches per stage; with pct_start 0.5 the second batch is the peak.
    # The stage without a peak of its own takes the schedule's, not the
    # stage before's.
    peaks = [row["learning_rate"] for row in schedule.trace[1::2]]
    assert peaks == pytest.approx([0.04, 0.01, 0.001], rel=1e-6)


@pytest.mark.parametrize(
    "rates, schedule",
    [
        ([0.1], CyclicalLearningRate(OneCycleSchedule(0.01, total_steps=10))),
        ([0.1, -1.0], CyclicalLearningRate(OneCycleSchedule(0.01, total_steps=10))),
        ([0.1, None], None),
        ([True, None], CyclicalLearningRate(OneCycleSchedule(0.01, total_steps=10))),
    ],
)
def test_stage_peaks_must_match_the_stages_and_need_a_schedule(rates, schedule):
    _, groups = toy_model()
    with pytest.raises(ValueError, match="maximal_learning_rates"):
        ProgressiveUnfreezing(
            [(1, 0), (1, "all")], groups, schedule=schedule, maximal_learning_rates=rates
        )


def test_hooks_switch_stages_at_stage_boundaries_and_restart_the_schedule():
    model, groups = toy_model()
    schedule = CyclicalLearningRate(OneCycleSchedule(0.01, total_steps=100))
    unfreezing = ProgressiveUnfreezing(
        [(2, 1), (1, "all")], groups, schedule=schedule, steps_per_epoch=5, verbose=0
    )
    unfreezing.set_model(model)
    unfreezing.on_train_begin()

    flags = []
    for epoch in range(3):
        unfreezing.on_epoch_begin(epoch)
        flags.append([layer.trainable for layer in groups.embeddings + groups.transformer])
        assert unfreezing.stage == (0 if epoch < 2 else 1)

    assert flags == [[False, False, False, True]] * 2 + [[True] * 4]
    assert [record["epoch"] for record in unfreezing.stage_log] == [0, 2]
    assert [record["trainable_params"] for record in unfreezing.stage_log] == [40, 100]
    assert schedule.schedule.total_steps == 5  # the last stage: 1 epoch of 5 batches


def test_resumed_run_continues_inside_its_stage_without_restarting_the_schedule():
    model, groups = toy_model()
    schedule = CyclicalLearningRate(OneCycleSchedule(0.01, total_steps=10))
    stages = [(1, 0), (2, 2)]
    first = ProgressiveUnfreezing(stages, groups, schedule=schedule, steps_per_epoch=5, verbose=0)
    first.set_model(model)
    first.on_train_begin()
    for epoch in range(2):
        first.on_epoch_begin(epoch)
    # As if the run was killed 7 batches into the second stage.
    schedule.set_state({**schedule.get_state(), "step": 7})
    state = first.get_state()

    model, groups = toy_model()
    resumed = ProgressiveUnfreezing(stages, groups, schedule=schedule, steps_per_epoch=5, verbose=0)
    resumed.set_state(state)
    resumed.set_model(model)
    resumed.on_train_begin()
    resumed.on_epoch_begin(2)

    assert [layer.trainable for layer in groups.transformer] == [False, True, True]
    assert not groups.embeddings[0].trainable
    assert resumed.stage == 1
    assert [record["stage"] for record in resumed.stage_log] == [0, 1]
    assert schedule.step == 7


def test_fit_for_other_epochs_than_the_stages_is_refused():
    model, groups = toy_model()
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 4), "float32")
    unfreezing = ProgressiveUnfreezing([(1, 0), (1, "all")], groups, verbose=0)
    message = "stages add up to 2 epochs but fit was called with epochs=3"
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, epochs=3, callbacks=[unfreezing], verbose=0)
