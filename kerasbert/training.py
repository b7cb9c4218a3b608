"""A whole fine-tuning run: data, model, `fit`, run directory, export.

`train(config)` is what `python -m kerasbert.train` calls; each step is a
function of its own so tests and other commands (`lr_find`) reuse them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import keras

from kerasbert import data as data_lib
from kerasbert import export as export_lib
from kerasbert.config import dump_config
from kerasbert.models import TextEncoder, build_classifier
from kerasbert.pipeline import encode_texts, make_dataset

log = logging.getLogger(__name__)

BEST_WEIGHTS = "best.weights.h5"


@dataclass
class Prepared:
    """Everything `fit` needs, built from a config."""

    splits: data_lib.Splits
    classifier: keras.Model
    tokenizer: object
    encoder: TextEncoder
    features: dict  # split name -> encoded features
    class_weight: dict | None

    def labels(self, split):
        return self.splits.label_ids(split)

    def dataset(self, split, batch_size, shuffle=False, seed=0):
        return make_dataset(
            self.features[split], self.labels(split), batch_size, shuffle=shuffle, seed=seed
        )


def prepare(config) -> Prepared:
    """Reads the data and builds the model and tokenized splits of a config."""
    keras.utils.set_random_seed(config.seed)
    splits = data_lib.load_splits(config.data)
    for name, frame in splits.items():
        counts = frame["label"].value_counts().to_dict()
        log.info("%s: %d rows, classes %s", name, len(frame), counts)
    classifier, tokenizer = build_classifier(
        config.model, len(splits.labels), texts=_texts_for_vocabulary(splits)
    )
    encoder = TextEncoder(tokenizer, config.model.sequence_length)
    features = {
        name: encode_texts(
            encoder,
            frame["text"].tolist(),
            frame["text_pair"].tolist() if "text_pair" in frame else None,
        )
        for name, frame in splits.items()
    }
    class_weight = data_lib.class_weights(config.data.class_weight, splits.labels, splits.train["label"])
    return Prepared(splits, classifier, tokenizer, encoder, features, class_weight)


def _texts_for_vocabulary(splits):
    texts = splits.train["text"].tolist()
    if "text_pair" in splits.train:
        texts += splits.train["text_pair"].tolist()
    return texts


def make_run_dir(runs_dir, name) -> Path:
    """A fresh `runs/<name>/<timestamp>` directory."""
    parent = Path(runs_dir) / name
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(100):
        run_dir = parent / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a new run directory under {parent}")


def compile_classifier(classifier, training_config, optimizer=None):
    """Compiles with AdamW (or the configured optimizer) and accuracy."""
    if optimizer is None:
        optimizer = build_plain_optimizer(training_config)
    classifier.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return classifier


def build_plain_optimizer(training_config):
    cfg = training_config
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(cfg.learning_rate, momentum=cfg.momentum)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(cfg.learning_rate)
    return keras.optimizers.AdamW(cfg.learning_rate, weight_decay=cfg.weight_decay)


def fit(prepared, config, run_dir, extra_callbacks=()):
    """Runs `model.fit` with logging, checkpointing and early stopping."""
    cfg = config.training
    model = prepared.classifier
    compile_classifier(model, cfg)
    callbacks = [
        keras.callbacks.CSVLogger(str(run_dir / "history.csv")),
        keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / BEST_WEIGHTS),
            monitor=cfg.checkpoint_monitor,
            save_best_only=True,
            save_weights_only=True,
        ),
        *extra_callbacks,
    ]
    if cfg.early_stopping is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=cfg.early_stopping.monitor,
                patience=cfg.early_stopping.patience,
                mode=cfg.early_stopping.mode,
            )
        )
    history = model.fit(
        prepared.dataset("train", cfg.batch_size, shuffle=True, seed=config.seed),
        validation_data=prepared.dataset("validation", cfg.batch_size),
        epochs=cfg.epochs,
        class_weight=prepared.class_weight,
        shuffle=False,  # the dataset reshuffles itself, from the seed
        callbacks=callbacks,
        verbose=2 if not _interactive() else "auto",
    )
    if (run_dir / BEST_WEIGHTS).exists():
        model.load_weights(str(run_dir / BEST_WEIGHTS))
    return history


def _interactive():
    import sys

    return sys.stdout.isatty()


def evaluate_splits(prepared, batch_size) -> dict:
    """Loss and accuracy of the (restored best) model on validation and test."""
    metrics = {}
    for split in ("validation", "test"):
        if split in prepared.features:
            values = prepared.classifier.evaluate(
                prepared.dataset(split, batch_size), verbose=0, return_dict=True
            )
            metrics[split] = {k: float(v) for k, v in values.items()}
    return metrics


def save_run(prepared, config, run_dir, metrics):
    """Writes the resolved config, label map, metrics and model to the run."""
    (run_dir / "metrics.json").write_text(export_lib.json_text(metrics), encoding="utf-8")
    prepared.classifier.save(str(run_dir / "model.keras"))
    prepared.tokenizer.save_to_preset(str(run_dir / "tokenizer"))


def write_run_header(prepared, config, run_dir):
    (run_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    label_map = {
        "labels": prepared.splits.labels,
        "bin_edges": prepared.splits.bin_edges,
        "text_pair": "text_pair" in prepared.splits.train,
        "dropped_rows": prepared.splits.dropped,
    }
    (run_dir / "labels.json").write_text(export_lib.json_text(label_map), encoding="utf-8")


def export_run(prepared, config, run_dir, base_path=None, model_name=None, version=None):
    """Exports the run's model as the next TF Serving version."""
    splits = prepared.splits
    assets = export_lib.tokenizer_assets(prepared.tokenizer)
    assets["config.yaml"] = dump_config(config)
    if splits.bin_edges is not None:
        assets["bin_edges.json"] = export_lib.json_text(splits.bin_edges)
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        assets["metrics.json"] = metrics_path.read_text(encoding="utf-8")
    return export_lib.export_model(
        prepared.classifier,
        prepared.tokenizer,
        config.model.sequence_length,
        splits.labels,
        base_path or config.export.base_path,
        model_name or config.model_name,
        version=version,
        text_pair="text_pair" in splits.train,
        assets=assets,
    )


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    export_dir: Path | None


def train(config) -> RunResult:
    """Fine-tunes, evaluates, saves and exports the run a config describes.

    Args:
        config: a validated `kerasbert.config.Config`.

    Returns:
        The run directory, the final metrics and the export directory.
    """
    prepared = prepare(config)
    run_dir = make_run_dir(config.training.runs_dir, config.name)
    log.info("run directory: %s", run_dir)
    write_run_header(prepared, config, run_dir)
    fit(prepared, config, run_dir)
    metrics = evaluate_splits(prepared, config.training.batch_size)
    save_run(prepared, config, run_dir, metrics)
    export_dir = None
    if config.export.enabled:
        export_dir = export_run(prepared, config, run_dir)
        log.info("exported %s", export_dir)
    return RunResult(run_dir, metrics, export_dir)


def summarize(metrics) -> str:
    parts = []
    for split, values in metrics.items():
        parts.append(f"{split}: " + ", ".join(f"{k}={v:.4f}" for k, v in values.items()))
    return "; ".join(parts)

