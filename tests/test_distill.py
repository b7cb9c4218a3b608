"""Distillation: a 1-layer student of the quickstart-like `trained_run`, its loss, its CLI."""

import json
import re
import shutil
import tempfile

import numpy as np
import pytest
import yaml

from kerasbert import distill
from tests.support.exports import assert_session_answers_like_tf2_load
from tests.support.tiny import tiny_classifier


def student_config_dict(teacher, tmp_path, **distillation) -> dict:
    """A student's config: `data` and `model` left to the teacher's."""
    return {
        "name": "student",
        "seed": 0,
        "training": {
            "epochs": 1,
            "batch_size": 16,
            "learning_rate": 3e-3,
            "early_stopping": None,
            "baseline": False,
            "runs_dir": str(tmp_path / "runs"),
        },
        "export": {"base_path": str(tmp_path / "saved_models")},
        "distillation": {"teacher": str(teacher), "layers": [1], **distillation},
    }


def write_yaml(path, raw):
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def weights_of(layer):
    return [np.asarray(w) for w in layer.get_weights()]


def assert_same_weights(layer, other):
    ours, theirs = weights_of(layer), weights_of(other)
    assert len(ours) == len(theirs) > 0, layer.name
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b, err_msg=layer.name)


# === The student, at initialisation ===


@pytest.mark.parametrize(
    ("family", "pooling"), [("bert", "cls"), ("roberta", "cls"), ("bert", "mean")]
)
def test_student_copies_the_chosen_layers_embeddings_and_head_bit_for_bit(family, pooling):
    from kerasbert.training.distillation import build_student

    teacher, _ = tiny_classifier(family, num_layers=3, pooling=pooling)
    student = build_student(teacher, [0, 2])
    assert type(student) is type(teacher)
    source, target = teacher.backbone, student.backbone
    assert len(target.transformer_layers) == 2
    assert_same_weights(target.transformer_layers[0], source.transformer_layers[0])
    assert_same_weights(target.transformer_layers[1], source.transformer_layers[2])
    layers = [layer for layer in target.layers if layer.weights]
    others = [layer for layer in layers if layer not in target.transformer_layers]
    assert others  # the embeddings, their norm (and BERT's pooler)
    for layer in others:
        assert_same_weights(layer, source.get_layer(layer.name))
    heads = [layer for layer in student.layers if layer is not target and layer.weights]
    assert heads
    for layer in heads:
        assert_same_weights(layer, teacher.get_layer(layer.name))
    # Every student weight is accounted for above: nothing was left at random.
    assert sum(len(layer.weights) for layer in layers + heads) == len(student.weights)
    ids = np.array([[2, 5, 6, 7, 3, 0, 0, 0]])
    inputs = {"token_ids": ids, "padding_mask": ids != 0}
    if family == "bert":
        inputs["segment_ids"] = np.zeros_like(ids)
    assert student.predict(inputs, verbose=0).shape == (1, 3)


def test_student_refuses_layers_the_teacher_lacks():
    from kerasbert.training.distillation import build_student

    teacher, _ = tiny_classifier("bert", num_layers=2)
    with pytest.raises(ValueError, match=r"0 to 1\. Received: layers=\[2\]"):
        build_student(teacher, [2])


@pytest.fixture(scope="module")
def student_config(trained_run, tmp_path_factory):
    from kerasbert.config_loading import load_distillation_config

    tmp = tmp_path_factory.mktemp("distill")
    path = write_yaml(tmp / "student.yaml", student_config_dict(trained_run.run_dir, tmp))
    return load_distillation_config(path)


@pytest.fixture(scope="module")
def prepared_student(student_config):
    from kerasbert.training.distillation import prepare_student

    return prepare_student(student_config, student_config.distillation.teacher)


def test_the_student_config_takes_the_teachers_data_and_model_with_its_own_layers(
    student_config, trained_run
):
    from kerasbert.config_loading import load_config

    teacher = load_config(trained_run.run_dir / "config.yaml")
    assert student_config.data == teacher.data
    assert student_config.model.scratch.num_layers == 1
    assert teacher.model.scratch.num_layers == 2
    assert student_config.model.sequence_length == teacher.model.sequence_length
    assert student_config.distillation.teacher == str(trained_run.run_dir)


def test_the_shipped_config_makes_a_1_layer_student_of_the_quickstart(trained_run):
    from kerasbert.config_loading import load_distillation_config
    from tests.support.tiny import REPO

    path = REPO / "configs" / "distill_quickstart.yaml"
    config = load_distillation_config(path, [f"distillation.teacher={trained_run.run_dir}"])
    assert config.distillation.layers == "every_other"
    assert config.model.scratch.num_layers == 1
    for line in path.read_text(encoding="utf-8").splitlines():
        setting = ":" in line and not line.lstrip().startswith("#")
        if setting and not line.rstrip().endswith(":"):  # sections need none
            assert "#" in line, f"no comment: {line}"


def test_prepared_student_is_the_teachers_layer_1_and_carries_its_logits(
    prepared_student, trained_run
):
    from kerasbert.data.pipeline import make_dataset
    from kerasbert.models.classifier import load_run_model

    prepared, record = prepared_student
    teacher, _ = load_run_model(trained_run.run_dir)
    student = prepared.classifier
    assert record["layers"] == [1] and record["teacher_layers"] == 2
    assert record["student_parameters"] < record["teacher_parameters"]
    assert_same_weights(
        student.backbone.transformer_layers[0], teacher.backbone.transformer_layers[1]
    )
    for layer in student.layers:
        if layer is not student.backbone and layer.weights:
            assert_same_weights(layer, teacher.get_layer(layer.name))
    expected = teacher.predict(make_dataset(prepared.features["train"], None, 7), verbose=0)
    targets = prepared.training_labels()
    np.testing.assert_array_equal(targets[:, 0], prepared.labels("train"))
    np.testing.assert_allclose(targets[:, 1:], expected, rtol=1e-5, atol=1e-5)


# === Soft labels ===


def test_distillation_loss_is_the_temperature_scaled_kl_plus_the_hard_cross_entropy():
    from scipy.special import log_softmax

    from kerasbert.training.losses import DistillationLoss

    student = np.array([[1.0, -0.5, 2.0], [0.3, 0.1, -1.0]])
    teacher = np.array([[2.0, 0.0, 1.0], [-1.0, 2.5, 0.5]])
    class_ids = np.array([2, 0])
    t, alpha = 3.0, 0.25
    p_teacher = log_softmax(teacher / t, axis=1)
    kl = (np.exp(p_teacher) * (p_teacher - log_softmax(student / t, axis=1))).sum(axis=1)
    cross_entropy = -log_softmax(student, axis=1)[[0, 1], class_ids]
    expected = np.mean(alpha * t**2 * kl + (1 - alpha) * cross_entropy)
    y_true = np.concatenate([class_ids[:, None], teacher], axis=1).astype("float32")
    loss = DistillationLoss(temperature=t, alpha=alpha)
    np.testing.assert_allclose(float(loss(y_true, student)), expected, rtol=1e-5)
    # Validation and test have class ids alone: the cross-entropy.
    np.testing.assert_allclose(float(loss(class_ids, student)), cross_entropy.mean(), rtol=1e-5)


@pytest.mark.parametrize(
    ("argument", "value"), [("temperature", 0.0), ("temperature", -1.0), ("alpha", 1.5)]
)
def test_distillation_loss_refuses_bad_arguments(argument, value):
    from kerasbert.training.losses import DistillationLoss

    with pytest.raises(ValueError, match=f"Invalid value for argument `{argument}`"):
        DistillationLoss(**{argument: value})


def test_with_alpha_1_training_follows_the_teacher_not_the_true_labels(
    prepared_student, student_config
):
    """The same steps with every true label wrong end in the same weights; with alpha 0, not."""
    import dataclasses

    import keras

    from kerasbert.models.classifier import load_run_model
    from kerasbert.training.distillation import build_student
    from kerasbert.training.fit import compile_for_stage

    prepared, record = prepared_student
    teacher, _ = load_run_model(record["teacher"])
    train = prepared.splits.train
    wrong = {"negative": "neutral", "neutral": "positive", "positive": "negative"}

    def weights_after_training(alpha, labels):
        keras.utils.set_random_seed(0)  # the same dropout masks in every run
        splits = dataclasses.replace(prepared.splits, train=train.assign(label=labels))
        student = build_student(teacher, record["layers"])
        run = dataclasses.replace(prepared, classifier=student, splits=splits, alpha=alpha)
        compile_for_stage(run, student_config.training)
        student.fit(run.training_dataset(16, seed=0, epochs=1).take(4), verbose=0)
        return student.get_weights()

    true, scrambled = train["label"], train["label"].map(wrong)
    for a, b in zip(weights_after_training(1.0, true), weights_after_training(1.0, scrambled)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    hard = zip(weights_after_training(0.0, true), weights_after_training(0.0, scrambled))
    assert any(not np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in hard)


# === Hidden states ===


def token_inputs(family, ids):
    ids = np.asarray(ids)
    inputs = {"token_ids": ids, "padding_mask": ids != 0}
    if family == "bert":
        inputs["segment_ids"] = np.zeros_like(ids)
    return inputs


def without_dropout(classifier):
    """A copy of a classifier with its weights and no dropout, in its backbone or its head."""
    backbone_config = classifier.backbone.get_config()
    backbone_config["dropout"] = 0.0
    config = classifier.get_config()
    config.update(
        backbone=type(classifier.backbone).from_config(backbone_config),
        preprocessor=None,
        dropout=0.0,
    )
    copy = type(classifier).from_config(config)
    copy.set_weights(classifier.get_weights())
    return copy


def test_hidden_state_loss_is_the_mean_squared_difference_over_real_tokens():
    import tensorflow as tf

    from kerasbert.training.distillation import hidden_state_loss

    rng = np.random.default_rng(0)
    student = [rng.normal(size=(2, 4, 3)).astype("float32") for _ in range(2)]
    teacher = [rng.normal(size=(2, 4, 3)).astype("float32") for _ in range(2)]
    mask = np.array([[True, True, False, False], [True, True, True, False]])
    expected = np.mean([((s - t)[mask] ** 2).mean() for s, t in zip(student, teacher)])
    loss = hidden_state_loss(student, teacher, tf.constant(mask))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    # What padding holds does not count.
    padded = [np.where(mask[..., None], t, 1e3).astype("float32") for t in teacher]
    np.testing.assert_allclose(float(hidden_state_loss(student, padded, mask)), expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("family", "pooling"), [("bert", "cls"), ("roberta", "cls"), ("bert", "mean")]
)
def test_hidden_state_student_answers_the_students_logits_and_adds_the_layer_loss(family, pooling):
    import keras

    from kerasbert.training.distillation import (
        HiddenStateStudent,
        backbone_states,
        build_student,
        hidden_state_loss,
    )

    teacher = without_dropout(tiny_classifier(family, num_layers=3, pooling=pooling)[0])
    student = build_student(teacher, [0, 2])
    model = HiddenStateStudent(student, teacher, [0, 2], weight=0.5)
    inputs = token_inputs(family, [[2, 5, 6, 7, 3, 0, 0, 0], [2, 8, 9, 3, 0, 0, 0, 0]])
    np.testing.assert_allclose(model(inputs), student(inputs), rtol=1e-6, atol=1e-6)
    assert not model.losses  # inference adds no loss
    # Its weights are the student's own, the teacher's left out of its checkpoints.
    assert {id(w) for w in model.weights} == {id(w) for w in student.weights}
    model(inputs, training=True)
    (added,) = model.losses
    mask = inputs["padding_mask"]
    ours = [layer.output for layer in student.backbone.transformer_layers]
    theirs = [teacher.backbone.transformer_layers[i].output for i in (0, 2)]
    student_states = keras.Model(student.backbone.input, ours)(inputs)
    teacher_states = keras.Model(teacher.backbone.input, theirs)(inputs)
    expected = 0.5 * hidden_state_loss(student_states, teacher_states, mask)
    np.testing.assert_allclose(float(added), float(expected), rtol=1e-5)
    # Layer 0 of the student is teacher layer 0 on the same input: nothing to learn there.
    first = backbone_states(student.backbone, [0])(inputs)["states"]
    np.testing.assert_allclose(first[0], teacher_states[0], atol=1e-6)
    assert float(added) > 0  # layer 1 of the student reads layer 0, teacher layer 2 read layer 1


def test_training_on_hidden_states_draws_the_students_layers_to_the_teachers(
    prepared_student, student_config
):
    """A few steps at weight 1 leave the hidden-state loss lower than the same steps at 0."""
    import dataclasses

    import keras

    from kerasbert.data.pipeline import make_dataset
    from kerasbert.models.classifier import load_run_model
    from kerasbert.training.distillation import HiddenStateStudent, build_student
    from kerasbert.training.fit import compile_for_stage

    prepared, record = prepared_student
    teacher, _ = load_run_model(record["teacher"])
    (batch,) = make_dataset(prepared.features["validation"], None, 256).take(1)

    def hidden_loss_after_training(weight):
        keras.utils.set_random_seed(0)
        student = build_student(teacher, [0])
        model = HiddenStateStudent(student, teacher, [1], weight)
        run = dataclasses.replace(prepared, classifier=student, hidden_states=model)
        compile_for_stage(run, student_config.training)
        model.fit(run.training_dataset(16, seed=0, epochs=1).take(6), verbose=0)
        measured = HiddenStateStudent(student, teacher, [1], 1.0)
        keras.utils.set_random_seed(0)
        measured(batch, training=True)
        return float(measured.losses[0])

    assert hidden_loss_after_training(3.0) < 0.8 * hidden_loss_after_training(0.0)


# === The command ===


@pytest.fixture(scope="module")
def distilled(trained_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distilled")
    raw = student_config_dict(trained_run.run_dir, tmp)
    # The student's accuracy must say which way is better for a checkpoint on it.
    raw["training"]["checkpoint_monitor"] = "val_accuracy"
    path = write_yaml(tmp / "student.yaml", raw)
    assert distill.main(["--config", str(path)]) == 0
    (run_dir,) = (tmp / "runs" / "student").iterdir()
    return run_dir


def test_distilled_run_says_what_it_was_distilled_from_and_compares_with_it(distilled, trained_run):
    record = json.loads((distilled / "distillation.json").read_text())
    assert record["teacher"] == str(trained_run.run_dir)
    assert record["layers"] == [1] and record["temperature"] == 2.0 and record["alpha"] == 0.5
    comparison = record["comparison"]
    assert comparison["split"] == "test"
    for name in ("student", "teacher"):
        values = comparison[name]
        assert 0 <= values["accuracy"] <= 1
        assert values["texts_per_second"] > 0 and values["export_bytes"] > 0
    assert comparison["student"]["parameters"] < comparison["teacher"]["parameters"]
    metrics = json.loads((distilled / "metrics.json").read_text())
    assert comparison["student"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    teacher_metrics = json.loads((trained_run.run_dir / "metrics.json").read_text())
    assert comparison["teacher"]["accuracy"] == pytest.approx(teacher_metrics["test"]["accuracy"])
    saved = yaml.safe_load((distilled / "config.yaml").read_text())
    assert saved["distillation"]["teacher"] == str(trained_run.run_dir)
    report = (distilled / "report.html").read_text()
    assert "Distilled from" in report and str(trained_run.run_dir) in report


def test_student_export_serves_raw_text_in_a_session_with_the_teachers_labels(
    distilled, trained_run
):
    from kerasbert.evaluation.saved_model_classifier import (
        SavedModelClassifier,
        read_model_labels,
    )

    status = json.loads((distilled / "status.json").read_text())
    export = status["export"]
    assert_session_answers_like_tf2_load(export)
    teacher_labels = read_model_labels(trained_run.export_dir)
    student = SavedModelClassifier(export)
    assert student.labels == teacher_labels == ["negative", "neutral", "positive"]
    labels, probabilities = student(["What a superb film.", "Dull and lifeless plot."])
    assert set(labels) <= set(teacher_labels)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_a_teacher_without_an_export_is_exported_for_the_comparison_and_left_as_it_was(
    trained_run, tmp_path, monkeypatch
):
    teacher = tmp_path / "teacher"
    shutil.copytree(trained_run.run_dir, teacher, ignore=shutil.ignore_patterns("tensorboard"))
    status = json.loads((teacher / "status.json").read_text())
    del status["export"]
    (teacher / "status.json").write_text(json.dumps(status))
    before = {path: path.read_bytes() for path in teacher.rglob("*") if path.is_file()}
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    path = write_yaml(tmp_path / "student.yaml", student_config_dict(teacher, tmp_path))
    assert distill.main(["--config", str(path)]) == 0
    (run_dir,) = (tmp_path / "runs" / "student").iterdir()
    comparison = json.loads((run_dir / "distillation.json").read_text())["comparison"]
    assert comparison["teacher"]["texts_per_second"] > 0
    assert comparison["teacher"]["export_bytes"] > 0
    teacher_metrics = json.loads((teacher / "metrics.json").read_text())
    assert comparison["teacher"]["accuracy"] == pytest.approx(teacher_metrics["test"]["accuracy"])
    after = {path: path.read_bytes() for path in teacher.rglob("*") if path.is_file()}
    assert after == before
    assert not list(temporary.glob("kerasbert-teacher-*"))


# === Bad input: one line, exit 2 ===


def unfinished_copy(run_dir, tmp_path):
    copy = tmp_path / "unfinished"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("tensorboard", "plots"))
    (copy / "status.json").write_text(json.dumps({"status": "running"}))
    return copy


def windowed_copy(run_dir, tmp_path):
    """The run, its config saying it read sliding windows."""
    import yaml

    copy = tmp_path / "windowed"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("tensorboard", "plots"))
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["model"]["long_text"] = {"windows": 4, "stride": None, "pooling": "mean"}
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    return copy


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", r"distillation\.teacher: .*no such run directory"),
        ("windowed", r"distillation\.teacher: .* reads long texts in sliding windows"),
        ("unfinished", r"distillation\.teacher: .*has not finished \(status running\)"),
        ("more_layers", r"distillation\.layers lists 3 layers but the teacher has 2"),
        ("out_of_range", r"distillation\.layers: the teacher has layers 0 to 1; received \[5\]"),
        ("temperature", r"distillation\.temperature: .*greater than 0; received 0"),
        ("hidden_state_weight", r"distillation\.hidden_state_weight: .*0; received -1"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(trained_run, tmp_path, capsys, case, message):
    teacher, overrides = trained_run.run_dir, []
    if case == "missing":
        teacher = tmp_path / "runs" / "nobody"
    elif case == "unfinished":
        teacher = unfinished_copy(trained_run.run_dir, tmp_path)
    elif case == "windowed":
        teacher = windowed_copy(trained_run.run_dir, tmp_path)
    elif case == "more_layers":
        overrides = ["--set", "distillation.layers=[0, 1, 2]"]
    elif case == "out_of_range":
        overrides = ["--set", "distillation.layers=[5]"]
    elif case == "temperature":
        overrides = ["--set", "distillation.temperature=0"]
    else:
        overrides = ["--set", "distillation.hidden_state_weight=-1"]
    path = write_yaml(tmp_path / "student.yaml", student_config_dict(teacher, tmp_path))
    assert distill.main(["--config", str(path), *overrides]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and re.search(message, err), err
    assert not (tmp_path / "runs" / "student").exists()


def test_a_student_may_not_change_the_teachers_backbone(trained_run, tmp_path, capsys):
    raw = student_config_dict(trained_run.run_dir, tmp_path)
    raw["model"] = {"pooling": "mean"}
    path = write_yaml(tmp_path / "student.yaml", raw)
    assert distill.main(["--config", str(path)]) == 2
    assert "model.pooling: a student keeps its teacher's backbone" in capsys.readouterr().err


def test_train_refuses_a_config_with_a_distillation_section(tmp_path, capsys):
    from kerasbert import train
    from tests.support.tiny import QUICKSTART_CSV, tiny_config_dict

    raw = tiny_config_dict(QUICKSTART_CSV, tmp_path, distillation={"teacher": "runs/quickstart"})
    path = write_yaml(tmp_path / "student.yaml", raw)
    assert train.main(["--config", str(path)]) == 2
    assert "read by python -m kerasbert.distill" in capsys.readouterr().err


def test_a_student_may_set_its_dropout_and_data(trained_run, tmp_path):
    from kerasbert.config_loading import load_distillation_config

    raw = student_config_dict(trained_run.run_dir, tmp_path)
    raw["data"] = {"path": "elsewhere.csv"}
    path = write_yaml(tmp_path / "student.yaml", raw)
    config = load_distillation_config(path, ["model.dropout=0.3"])
    assert config.model.dropout == 0.3 and config.data.path == "elsewhere.csv"
    assert config.model.scratch.hidden_dim == 16  # the rest of `model` is the teacher's


def test_only_a_classification_run_can_teach(tmp_path):
    from kerasbert.config import ConfigError
    from kerasbert.config_loading import config_from_dict
    from tests.support.tiny import tiny_config_dict

    raw = tiny_config_dict("tagged.csv", tmp_path, distillation={"teacher": "runs/tagged"})
    raw["model"]["task"] = "multi_label"
    raw["data"]["label_delimiter"] = "|"
    with pytest.raises(ConfigError, match="distillation learns from a teacher's softmax"):
        config_from_dict(raw)


def test_a_killed_distillation_resumes_to_the_weights_of_an_uninterrupted_one(
    trained_run, tmp_path, monkeypatch, capsys
):
    """With hidden states matched: the training state is the student's alone, and enough."""
    from kerasbert.models.classifier import load_run_model
    from kerasbert.training.resume import TrainingState

    def config(name):
        raw = student_config_dict(trained_run.run_dir, tmp_path / name, hidden_state_weight=1.0)
        raw["training"]["epochs"] = 2
        raw["export"]["enabled"] = False
        return str(write_yaml(tmp_path / f"{name}.yaml", raw))

    assert distill.main(["--config", config("straight")]) == 0
    saved = TrainingState.on_epoch_end

    def killed_after_the_first_epoch(self, epoch, logs=None):
        saved(self, epoch, logs)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(TrainingState, "on_epoch_end", killed_after_the_first_epoch)
    # As Ctrl-C stops it: the state of the first epoch is saved.
    assert distill.main(["--config", config("killed")]) == 130
    monkeypatch.undo()
    (run_dir,) = (tmp_path / "killed" / "runs" / "student").iterdir()
    assert json.loads((run_dir / "resume" / "state.json").read_text())["epoch"] == 1
    capsys.readouterr()
    assert distill.main(["--config", config("killed"), "--resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "Epoch 1/2" not in out
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    assert json.loads((run_dir / "distillation.json").read_text())["hidden_state_weight"] == 1.0
    assert "hidden states matched at weight 1.0" in (run_dir / "report.html").read_text()
    (reference,) = (tmp_path / "straight" / "runs" / "student").iterdir()
    expected = load_run_model(reference)[0].get_weights()
    for a, b in zip(expected, load_run_model(run_dir)[0].get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
