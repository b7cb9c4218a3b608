"""The layer groups that discriminative rates and progressive unfreezing act on, and freezing them.

Groups are counted from the top: the head, the transformer layers top
down, then the embeddings. `set_trainable_layers` toggles `trainable`;
changing it takes effect in `fit` only once the train function is rebuilt
(`kerasbert.training.progressive_unfreezing.ProgressiveUnfreezing` does that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kerasbert.arguments import is_integer
from kerasbert.models.classifier import family_of
from kerasbert.models.mean_pooling import MeanPoolingClassifier
from kerasbert.models.windows import WindowedClassifier


@dataclass
class LayerGroups:
    """A classifier's layers by role, for freezing and per-layer learning rates.

    Attributes:
        embeddings: token/position/segment embeddings and their layer norm.
        transformer: the transformer layers, bottom (index 0) to top.
        head: everything above the last transformer layer (BERT's pooler,
            RoBERTa's head dense, the output layer); always trainable.
            Under mean pooling BERT's pooler is in no group: it is unused
            and stays frozen.
    """

    embeddings: list
    transformer: list
    head: list


def layer_groups(classifier) -> LayerGroups:
    """Splits a classifier's weighted layers into embeddings, transformer, head.

    BERT's pooler is part of the head, except under mean pooling, where it is
    unused (`MeanPoolingClassifier` freezes it) and belongs to no group.
    A `WindowedClassifier`'s groups are those of the classifier it wraps,
    its attention pooling's layers in the head.
    """
    if isinstance(classifier, WindowedClassifier):
        groups = layer_groups(classifier.classifier)
        groups.head += classifier.pooling_layers
        return groups
    backbone = classifier.backbone
    transformer = list(backbone.transformer_layers)
    pooler = [backbone.get_layer("pooled_dense")] if family_of(backbone) == "bert" else []
    mean_pooling = isinstance(classifier, MeanPoolingClassifier)
    head_in_backbone = [] if mean_pooling else pooler
    skip = {id(layer) for layer in transformer + pooler}
    embeddings = [layer for layer in backbone.layers if layer.weights and id(layer) not in skip]
    head = head_in_backbone + [
        layer for layer in classifier.layers if layer is not backbone and layer.weights
    ]
    return LayerGroups(embeddings=embeddings, transformer=transformer, head=head)


def set_trainable_layers(groups, trainable_layers):
    """Makes the top `trainable_layers` transformer layers and the head trainable.

    Args:
        groups: a `kerasbert.models.classifier.LayerGroups`.
        trainable_layers: an integer from 0 to the number of transformer
            layers, counted from the top, or `"all"` (embeddings too).

    Raises:
        ValueError: for any other value.

    Example:
    >>> set_trainable_layers(layer_groups(classifier), 2)
    >>> classifier.make_train_function(force=True)  # or compile again
    """
    num_layers = len(groups.transformer)
    check_trainable_layers(trainable_layers, num_layers)
    everything = trainable_layers == "all"
    first_trainable = 0 if everything else num_layers - trainable_layers
    for layer in groups.embeddings:
        layer.trainable = everything
    for index, layer in enumerate(groups.transformer):
        layer.trainable = index >= first_trainable
    for layer in groups.head:
        layer.trainable = True


def build_optimizer_variables(model, groups):
    """Builds `model.optimizer` on every variable that any stage will train.

    A Keras 3 optimizer tracks exactly the variables it was built with and
    refuses others later. `fit` builds it on the variables trainable when it
    starts, so a schedule that unfreezes layers later needs it built on all
    of them first. The layers' trainable flags are left as they were.

    Args:
        model: a compiled model.
        groups: its `kerasbert.models.classifier.LayerGroups`.

    Raises:
        ValueError: when the model is not compiled, or its optimizer was
            already built on fewer variables.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError(
            "The model has no optimizer; call `model.compile(optimizer=...)` "
            "before building the optimizer's variables."
        )
    layers = groups.embeddings + groups.transformer + groups.head
    flags = [layer.trainable for layer in layers]
    try:
        for layer in layers:
            layer.trainable = True
        variables = list(model.trainable_variables)
    finally:
        for layer, flag in zip(layers, flags):
            layer.trainable = flag
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if not optimizer.built:
        optimizer.build(variables)
        return
    # Keras keeps the variables an optimizer was built on in
    # `_trainable_variables` (base_optimizer.py, `build`); no public API lists them.
    known = {id(v) for v in optimizer._trainable_variables}
    missing = [v.path for v in variables if id(v) not in known]
    if missing:
        raise ValueError(
            f"The optimizer was built on {len(known)} variables, without "
            f"{len(missing)} that later stages will train (e.g. {missing[0]!r}). "
            "Call `build_optimizer_variables(model, groups)` after compile and "
            "before any layer is frozen, or compile with a new optimizer."
        )


def count_trainable_params(model) -> int:
    """The number of scalars in `model.trainable_weights`."""
    return sum(math.prod(v.shape) for v in model.trainable_weights)


def check_trainable_layers(trainable_layers, num_layers):
    if trainable_layers == "all":
        return
    if not is_integer(trainable_layers) or not 0 <= trainable_layers <= num_layers:
        raise ValueError(
            "Invalid value for argument `trainable_layers`. Expected an integer "
            f"from 0 to {num_layers} (the backbone's transformer layers, counted "
            f'from the top) or "all". Received: trainable_layers={trainable_layers!r}'
        )
