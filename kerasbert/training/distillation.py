"""Knowledge distillation: a student with fewer transformer layers, taught by a finished run.

`distill(config)` is what `python -m kerasbert.distill` calls. The student is
the teacher with some of its transformer layers left out (`build_student`):
its embeddings, the chosen layers, the pooler and the head are copied
bit for bit. The teacher's logits on each training text are computed once,
before training, and travel in the training batches next to the true class
(`soft_targets`); `DistillationLoss` mixes the two. With
`hidden_state_weight`, `fit` trains a `HiddenStateStudent`: the student, and
a loss on how far each of its transformer layers' outputs lies from those of
the teacher layer it was copied from. Everything else is a
normal run (`kerasbert.training.run.train`): the data pipeline, schedules,
unfreezing, checkpoints, the export and its checks, the report.

The run directory also gets `distillation.json`: the teacher, the layers
taken, the temperature and alpha, and student and teacher compared on the
same split through their exports (accuracy, parameters, size on disk,
texts per second).

Reference:
    Hinton, Vinyals & Dean 2015, arXiv:1503.02531 (soft targets);
    Sanh et al. 2019, arXiv:1910.01108 (a student initialised from every
    other layer of its teacher);
    Jiao et al. 2020, arXiv:1909.10351 (TinyBERT: the mean squared
    difference of hidden states, layer to layer).
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasbert import rundir
from kerasbert.data.pipeline import make_dataset
from kerasbert.evaluation.saved_model_classifier import SavedModelClassifier
from kerasbert.files import write_json
from kerasbert.models.classifier import load_run_model
from kerasbert.training.distribute import is_chief
from kerasbert.training.fit import Prepared, prepare
from kerasbert.training.losses import DistillationLoss
from kerasbert.training.run import RunResult, train, write_report_safely

log = logging.getLogger(__name__)

# Texts timed for the comparison's texts per second, at most. The fastest
# pass over them counts, of at least `TIMED_PASSES` passes and as many more
# as fit in `TIMED_SECONDS`: one pass over a few tiny batches is mostly noise.
TIMED_TEXTS = 512
TIMED_PASSES = 3
TIMED_SECONDS = 2.0


@dataclass
class StudentPrepared(Prepared):
    """`Prepared` for a student: its training batches carry the teacher's logits too.

    Attributes:
        teacher_logits: the teacher's logits on each training text, in the
            training split's order.
        temperature: `DistillationLoss`'s temperature.
        alpha: `DistillationLoss`'s weight of the soft loss.
        hidden_states: the `HiddenStateStudent` that `fit` trains in the
            student's place, or None when hidden states are not matched.
    """

    teacher_logits: np.ndarray | None = None
    temperature: float = 2.0
    alpha: float = 0.5
    hidden_states: keras.Model | None = None

    def training_model(self):
        return self.classifier if self.hidden_states is None else self.hidden_states

    def training_labels(self):
        return soft_targets(self.labels("train"), self.teacher_logits)

    def loss_and_metrics(self):
        return DistillationLoss(self.temperature, self.alpha), [HardLabelAccuracy()]


@dataclass
class DistillationResult(RunResult):
    """A student's `RunResult`, and what its `distillation.json` says."""

    record: dict = field(default_factory=dict)


def soft_targets(class_ids, teacher_logits) -> np.ndarray:
    """`DistillationLoss`'s targets: each row the true class id, then the teacher's logits.

    Example:
    >>> soft_targets([2], [[0.5, -1.0, 3.0]])
    array([[ 2. ,  0.5, -1. ,  3. ]], dtype=float32)
    """
    class_ids = np.asarray(class_ids, dtype=np.float32).reshape(-1, 1)
    teacher_logits = np.asarray(teacher_logits, dtype=np.float32)
    if len(class_ids) != len(teacher_logits):
        raise ValueError(
            f"{len(class_ids)} class ids but {len(teacher_logits)} rows of teacher logits; "
            "give one row of logits per example"
        )
    return np.concatenate([class_ids, teacher_logits], axis=1)


@keras.saving.register_keras_serializable(package="kerasbert")
def hard_label_accuracy(y_true, y_pred):
    """Accuracy on the true class ids, whether or not the teacher's logits follow them."""
    if len(y_true.shape) == 2 and y_true.shape[-1] > 1:
        y_true = y_true[:, :1]
    return keras.metrics.sparse_categorical_accuracy(y_true, y_pred)


@keras.saving.register_keras_serializable(package="kerasbert")
class HardLabelAccuracy(keras.metrics.MeanMetricWrapper):
    """`hard_label_accuracy` as a metric that says it rises, as Keras' own accuracies do.

    A checkpoint or early stop on `val_accuracy` with `mode="auto"` asks the
    metric which way is better; a bare `MeanMetricWrapper` cannot say.

    Example:
    >>> metric = HardLabelAccuracy()
    >>> metric.update_state(np.array([[1.0, 0.3, 0.7]]), np.array([[0.2, 0.8]]))
    >>> float(metric.result())
    1.0
    """

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(hard_label_accuracy, name=name, dtype=dtype)
        # As keras.metrics.SparseCategoricalAccuracy marks itself.
        self._direction = "up"

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def build_student(teacher, layers, dropout=None, dtype=None) -> keras.Model:
    """A classifier like `teacher` with only the transformer layers `layers`, its weights copied.

    The student's backbone has the teacher's configuration but
    `num_layers=len(layers)`; its transformer layer `i` is a copy of the
    teacher's layer `layers[i]`, and every other weight (embeddings, their
    layer norm, BERT's pooler, the head) is the teacher's.

    Args:
        teacher: a keras-hub `BertTextClassifier` or `RobertaTextClassifier`,
            or a `MeanPoolingClassifier`, as `build_classifier` makes them.
        layers: the teacher's transformer layers to keep, bottom first.
        dropout: the head's dropout rate; None keeps the teacher's.
        dtype: the student's Keras dtype policy; None keeps the teacher's.

    Returns:
        The student classifier.

    Raises:
        ValueError: `layers` is empty, or names a layer the teacher lacks.

    Example:
    >>> student = build_student(teacher, [1, 3, 5, 7, 9, 11])
    >>> len(student.backbone.transformer_layers)
    6
    """
    backbone = teacher.backbone
    num_layers = len(backbone.transformer_layers)
    layers = [int(layer) for layer in layers]
    if not layers or any(not 0 <= layer < num_layers for layer in layers):
        raise ValueError(
            f"Invalid value for argument `layers`. Expected indices of the teacher's layers, "
            f"0 to {num_layers - 1}. Received: layers={layers}"
        )
    # === Backbone ===
    backbone_config = backbone.get_config()
    backbone_config["num_layers"] = len(layers)
    if dtype is not None:
        backbone_config["dtype"] = dtype
    student_backbone = type(backbone).from_config(backbone_config)
    # === Classifier ===
    config = teacher.get_config()
    config.update(backbone=student_backbone, preprocessor=None)
    if dropout is not None:
        config["dropout"] = dropout
    if dtype is not None:
        config["dtype"] = dtype
    student = type(teacher).from_config(config)
    # === Weights ===
    chosen = {
        id(layer): backbone.transformer_layers[source]
        for layer, source in zip(student_backbone.transformer_layers, layers)
    }
    for layer in student_backbone.layers:
        if layer.weights:
            source = chosen.get(id(layer)) or backbone.get_layer(layer.name)
            layer.set_weights(source.get_weights())
    for layer in student.layers:
        if layer is not student_backbone and layer.weights:
            layer.set_weights(teacher.get_layer(layer.name).get_weights())
    return student


def hidden_state_loss(student_states, teacher_states, padding_mask):
    """The mean squared difference of paired hidden states over real tokens, averaged over pairs.

    Args:
        student_states, teacher_states: equally long lists of
            `[batch, sequence, hidden]` tensors, paired in order.
        padding_mask: `[batch, sequence]`, true at real tokens.

    Example:
    >>> mask = tf.constant([[True, False]])
    >>> float(hidden_state_loss([tf.ones([1, 2, 4])], [tf.zeros([1, 2, 4])], mask))
    1.0
    """
    mask = tf.cast(padding_mask, tf.float32)[..., None]
    losses = []
    for student, teacher in zip(student_states, teacher_states, strict=True):
        squared = tf.square(tf.cast(student, tf.float32) - tf.cast(teacher, tf.float32))
        cells = tf.reduce_sum(mask) * tf.cast(tf.shape(squared)[-1], tf.float32)
        losses.append(tf.reduce_sum(squared * mask) / tf.maximum(cells, 1.0))
    return tf.add_n(losses) / len(losses)


def backbone_states(backbone, layers) -> keras.Model:
    """The backbone, answering `{"outputs": its outputs, "states": [layer outputs]}`.

    `states` are the outputs of its transformer layers `layers`, bottom
    first. The model shares the backbone's layers and weights.
    """
    return keras.Model(
        backbone.input,
        {
            "outputs": backbone.output,
            "states": [backbone.transformer_layers[layer].output for layer in layers],
        },
    )


def classifier_head(classifier) -> keras.Model:
    """Everything of `classifier` after its backbone: `[backbone outputs, inputs]` to logits.

    The classifier's own layers, so its own weights. `inputs` is the
    classifier's input dict: a mean-pooling head reads its padding mask.
    """
    (call,) = classifier.backbone._inbound_nodes  # the backbone's one call in the classifier
    outputs = keras.tree.pack_sequence_as(classifier.backbone.output, call.outputs)
    return keras.Model([outputs, classifier.input], classifier.output)


class HiddenStateStudent(keras.Model):
    """A student that, while training, also learns its teacher's hidden states.

    It answers the student's logits. In training it adds to the loss
    `weight` times the `hidden_state_loss` of the student's transformer
    layers against the teacher layers `layers` (student layer `i` against
    teacher layer `layers[i]`, the one it was copied from), the teacher run
    in inference mode. Its weights are the student's, shared: the teacher
    is left untracked, so that checkpoints and the training state hold the
    student alone.

    Args:
        student: the classifier `build_student` made.
        teacher: the classifier it was made from.
        layers: the teacher's layers the student's were copied from.
        weight: the hidden-state loss' weight, > 0.
    """

    def __init__(self, student, teacher, layers, weight, **kwargs):
        super().__init__(**kwargs)
        self.student = student
        self.weight = float(weight)
        self.student_states = backbone_states(student.backbone, range(len(layers)))
        self.head = classifier_head(student)
        # Held in a closure, which Keras does not track: the teacher's
        # weights stay out of the student's checkpoints.
        teacher_states = backbone_states(teacher.backbone, layers)
        self._teacher_states = lambda inputs: teacher_states(inputs, training=False)["states"]

    def call(self, inputs, training=False):
        computed = self.student_states(inputs, training=training)
        logits = self.head([computed["outputs"], inputs], training=training)
        if training:
            teacher = [tf.stop_gradient(state) for state in self._teacher_states(inputs)]
            loss = hidden_state_loss(computed["states"], teacher, inputs["padding_mask"])
            self.add_loss(self.weight * loss)
        return logits


def teacher_logits(classifier, features, batch_size, pad_multiple=1) -> np.ndarray:
    """The teacher's logits on encoded texts, in their order, as float32."""
    dataset = make_dataset(features, None, batch_size, pad_multiple=pad_multiple)
    return np.asarray(classifier.predict(dataset, verbose=0), dtype=np.float32)


def prepare_student(config, teacher_dir) -> tuple[StudentPrepared, dict]:
    """Loads the teacher, builds the student from it, and computes the soft targets.

    Args:
        config: the student's `Config`, with its `distillation` section
            (as `kerasbert.config_loading.load_distillation_config` reads it).
        teacher_dir: the teacher's finished run directory.

    Returns:
        `(prepared, record)`: what `train` trains, and what
        `distillation.json` says of the teacher and the layers taken.

    Raises:
        ValueError: the student's data has other labels than the teacher's,
            `distillation.layers` names layers the teacher lacks, or
            `model.sequence_length` exceeds the teacher's position embeddings.
    """
    settings = config.distillation
    teacher_dir = Path(teacher_dir)
    teacher = None
    teacher_labels = json.loads((teacher_dir / rundir.LABELS).read_text(encoding="utf-8"))["labels"]
    record = {
        "teacher": str(teacher_dir),
        "temperature": settings.temperature,
        "alpha": settings.alpha,
    }

    def build_model(splits, dtype):
        nonlocal teacher
        if list(splits.labels) != list(teacher_labels):
            raise ValueError(
                f"the student's data has the labels {splits.labels} but the teacher "
                f"{teacher_dir} was trained on {teacher_labels}; give data with the teacher's "
                "labels (leave `data` out to use the teacher's own)"
            )
        # Loaded in the strategy's scope, as the student is built: matching
        # hidden states runs the teacher beside the student on every replica.
        teacher, tokenizer = load_run_model(teacher_dir)
        if config.model.sequence_length > teacher.backbone.max_sequence_length:
            raise ValueError(
                f"model.sequence_length ({config.model.sequence_length}) exceeds the teacher's "
                f"max_sequence_length ({teacher.backbone.max_sequence_length})"
            )
        num_layers = len(teacher.backbone.transformer_layers)
        layers = settings.teacher_layers(num_layers)
        student = build_student(teacher, layers, dropout=config.model.dropout, dtype=dtype)
        record.update(
            layers=layers,
            teacher_layers=num_layers,
            student_layers=len(layers),
            teacher_parameters=int(teacher.count_params()),
            student_parameters=int(student.count_params()),
        )
        log.info(
            "student: layers %s of the teacher's %d (%d of %d parameters)",
            layers,
            num_layers,
            record["student_parameters"],
            record["teacher_parameters"],
        )
        return student, tokenizer

    prepared = prepare(config, build_model)
    hidden_states = None
    if settings.hidden_state_weight > 0:
        record["hidden_state_weight"] = settings.hidden_state_weight
        with prepared.strategy.scope():
            hidden_states = HiddenStateStudent(
                prepared.classifier, teacher, record["layers"], settings.hidden_state_weight
            )
    logits = teacher_logits(
        teacher,
        prepared.features["train"],
        config.training.batch_size,
        prepared.runtime.pad_multiple,
    )
    student = StudentPrepared(
        **{f.name: getattr(prepared, f.name) for f in fields(Prepared)},
        teacher_logits=logits,
        temperature=settings.temperature,
        alpha=settings.alpha,
        hidden_states=hidden_states,
    )
    return student, record


def distill(config, resume_dir=None) -> DistillationResult:
    """Distils `config.distillation.teacher` into a student, and trains, exports and compares it.

    Args:
        config: the student's `Config`, with its `distillation` section.
        resume_dir: a student's run directory to continue from its last
            epoch, as `train`'s: the student is built from the teacher again
            (the same layers, the same logits) and takes the run's weights.

    Returns:
        The student's run directory, final metrics and export directory, and
        its `distillation.json` as `record` (`comparison` None when the
        student was not exported).
    """
    teacher_dir = Path(config.distillation.teacher)
    prepared, record = prepare_student(config, teacher_dir)
    result = train(config, resume_dir=resume_dir, prepared=prepared)
    if not is_chief():
        return DistillationResult(result.run_dir, result.metrics, result.export_dir, record)
    split = "test" if prepared.splits.test is not None else "validation"
    record["comparison"] = None
    if result.export_dir is not None:
        frame = getattr(prepared.splits, split)
        with teacher_export(teacher_dir) as export:
            record["comparison"] = {
                "split": split,
                **compare_exports(
                    {"student": result.export_dir, "teacher": export},
                    frame["text"].tolist(),
                    frame["label"].tolist(),
                    frame["text_pair"].tolist() if "text_pair" in frame else None,
                    config.training.batch_size,
                ),
            }
        for name in ("student", "teacher"):
            record["comparison"][name]["parameters"] = record[f"{name}_parameters"]
        log.info("student and teacher on %s: %s", split, describe_comparison(record["comparison"]))
    else:
        log.info("no comparison of the exports: the student was not exported")
    write_json(result.run_dir / rundir.DISTILLATION, record)
    write_report_safely(result.run_dir)
    return DistillationResult(result.run_dir, result.metrics, result.export_dir, record)


@contextlib.contextmanager
def teacher_export(teacher_dir):
    """Yields the teacher run's export directory, exported now if the run has none.

    A run trained with `export.enabled: false`, or whose export was moved,
    is exported into a temporary directory, removed when the block ends:
    the teacher's run and base path are left as they were.
    """
    export = rundir.status_record(teacher_dir).get("export")
    if export and Path(export).is_dir():
        yield Path(export)
        return
    from kerasbert.exporting.exporter import export_run_dir

    log.info("the teacher has no export: exporting it to a temporary directory to compare")
    with tempfile.TemporaryDirectory(prefix="kerasbert-teacher-") as base_path:
        yield export_run_dir(teacher_dir, base_path=base_path, model_name="teacher", version=1)


def compare_exports(exports, texts, labels, text_pairs=None, batch_size=32) -> dict:
    """Accuracy, size on disk and texts per second of exports, on the same labelled texts.

    Each export is loaded as TF Serving loads it (`SavedModelClassifier`).
    Speed is the fastest of at least `TIMED_PASSES` passes (and
    `TIMED_SECONDS`) over the first `TIMED_TEXTS` texts, in batches of
    `batch_size`.

    Args:
        exports: `{name: version directory}`.
        texts, labels, text_pairs: the labelled split.
        batch_size: texts per call.

    Returns:
        `{name: {"accuracy", "export_bytes", "texts_per_second"}}`.
    """
    results = {}
    timed = texts[:TIMED_TEXTS]
    timed_pairs = None if text_pairs is None else text_pairs[:TIMED_TEXTS]
    for name, export in exports.items():
        model = SavedModelClassifier(export)
        predicted = _predict(model, texts, text_pairs, batch_size)
        seconds = []
        while len(seconds) < TIMED_PASSES or sum(seconds) < TIMED_SECONDS:
            started = time.perf_counter()
            _predict(model, timed, timed_pairs, batch_size)
            seconds.append(time.perf_counter() - started)
        results[name] = {
            "accuracy": float(np.mean([p == str(t) for p, t in zip(predicted, labels)])),
            "export_bytes": sum(f.stat().st_size for f in Path(export).rglob("*") if f.is_file()),
            "texts_per_second": round(len(timed) / max(min(seconds), 1e-9), 1),
        }
    return results


def _predict(model, texts, text_pairs, batch_size) -> list:
    labels = []
    for start in range(0, len(texts), batch_size):
        pairs = None if text_pairs is None else text_pairs[start : start + batch_size]
        labels += model(texts[start : start + batch_size], pairs)[0]
    return labels


def describe_comparison(comparison) -> str:
    """One line: each model's accuracy, parameters and texts per second."""
    return "; ".join(
        f"{name} accuracy {values['accuracy']:.4f}, {values['parameters']:,} parameters, "
        f"{values['texts_per_second']:.0f} texts/s"
        for name, values in comparison.items()
        if isinstance(values, dict)
    )
