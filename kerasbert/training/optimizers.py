"""Optimizers with layer-wise learning rates (discriminative fine-tuning).

ULMFiT fine-tunes lower layers more gently than upper ones: transformer layer
`i` of `num_layers` learns at `learning_rate * decay ** (num_layers - 1 - i)`,
the embeddings below them at `decay ** num_layers`, and the head at the full
rate. Keras 3 optimizers have no parameter groups, and scaling gradients
instead would be wrong for Adam, whose update does not change when a gradient
is multiplied by a constant. So the optimizers here scale each variable's
learning rate inside `update_step`, and scale decoupled weight decay, which
Keras multiplies by the learning rate, by the same factor.

The multipliers are keyed by `variable.path` and kept in `get_config`, so an
optimizer saved with its model by `model.save` comes back from
`keras.saving.load_model` with the same per-layer rates.

These optimizers also hold their momentum (`beta_1` for Adam and AdamW,
`momentum` for SGD) in a non-trainable variable rather than a Python float:
the compiled train step reads a float once, when it is traced, so only a
variable lets `CyclicalLearningRate.one_cycle` change the momentum between
batches.

Reference:
    Howard & Ruder 2018, "Universal Language Model Fine-tuning for Text
    Classification", arXiv:1801.06146, section 3.2.
"""

from __future__ import annotations

import keras
from keras import ops

from kerasbert.arguments import is_integer, is_real

OPTIMIZERS = ("adamw", "adam", "sgd")


def layerwise_multipliers(groups, decay) -> dict[str, float]:
    """Learning-rate multipliers per variable path for discriminative fine-tuning.

    Transformer layer `i` (0 at the bottom) of `num_layers` gets
    `decay ** (num_layers - 1 - i)`, so the top layer learns at the full rate;
    the embeddings get `decay ** num_layers`, one step below the bottom layer;
    the head gets 1.

    Args:
        groups: a `kerasbert.models.classifier.LayerGroups`.
        decay: the factor between neighbouring layers, in (0, 1]; ULMFiT
            uses 1 / 2.6.

    Returns:
        A dict from `variable.path` to a float multiplier, for every weight
        in `groups`, frozen or not.

    Raises:
        ValueError: when `decay` is outside (0, 1], or two different
            variables share a path (then the multipliers could not tell them
            apart).

    Example:
    >>> multipliers = layerwise_multipliers(layer_groups(classifier), 0.8)
    >>> multipliers["transformer_layer_0/self_attention_layer/query/kernel"]
    0.64
    """
    if not is_real(decay) or not 0 < decay <= 1:
        raise ValueError(
            "Invalid value for argument `decay`. Expected a number in (0, 1]. "
            f"Received: decay={decay!r}"
        )
    num_layers = len(groups.transformer)
    by_layer = [(layer, decay**num_layers) for layer in groups.embeddings]
    by_layer += [
        (layer, decay ** (num_layers - 1 - i)) for i, layer in enumerate(groups.transformer)
    ]
    by_layer += [(layer, 1.0) for layer in groups.head]
    multipliers, owners = {}, {}
    for layer, multiplier in by_layer:
        for variable in layer.weights:
            owner = owners.setdefault(variable.path, variable)
            if owner is not variable:
                raise ValueError(
                    f"Two variables share the path {variable.path!r}, so "
                    "per-variable learning rates cannot tell them apart; give "
                    "the layers distinct names."
                )
            multipliers[variable.path] = float(multiplier)
    return multipliers


def build_optimizer(
    name,
    learning_rate,
    weight_decay=0.0,
    momentum=0.9,
    layerwise_decay=1.0,
    groups=None,
    gradient_accumulation_steps=1,
):
    """The optimizer for a fine-tuning run, with layer-wise rates if asked.

    Always one of this module's optimizers, even without layer-wise decay,
    because their momentum is a variable that a one-cycle schedule can move.

    Args:
        name: `"adamw"`, `"adam"` or `"sgd"`.
        learning_rate: the base rate, a float; `CyclicalLearningRate`
            overwrites it every batch when it runs.
        weight_decay: decoupled weight decay (Keras applies it the same way
            for all three); 0 turns it off.
        momentum: SGD's momentum, or Adam's and AdamW's `beta_1`.
        layerwise_decay: the factor between neighbouring layers' rates, in
            (0, 1]; 1 gives every layer the same rate.
        groups: a `kerasbert.models.classifier.LayerGroups`; needed when
            `layerwise_decay < 1`.
        gradient_accumulation_steps: apply the mean gradient of this many
            batches at once, for an effective batch this many times larger
            than memory allows; 1 updates after every batch.

    Returns:
        A `LayerwiseAdamW`, `LayerwiseAdam` or `LayerwiseSGD`.

    Raises:
        ValueError: for an unknown `name`, or layer-wise decay without
            `groups`.

    Example:
    >>> optimizer = build_optimizer(
    ...     "adamw", 5e-5, weight_decay=0.01, momentum=0.9,
    ...     layerwise_decay=0.8, groups=layer_groups(classifier))
    >>> classifier.compile(optimizer=optimizer, loss=...)
    """
    if name not in OPTIMIZERS:
        raise ValueError(
            "Invalid value for argument `name`. Expected one of "
            f"{', '.join(repr(n) for n in OPTIMIZERS)}. Received: name={name!r}"
        )
    multipliers = None
    if layerwise_decay != 1:
        if groups is None:
            raise ValueError(
                f"layerwise_decay={layerwise_decay!r} needs the layer groups to "
                "know which layer each variable belongs to; pass "
                "`groups=layer_groups(classifier)`."
            )
        multipliers = layerwise_multipliers(groups, layerwise_decay)
    if not is_integer(gradient_accumulation_steps) or gradient_accumulation_steps < 1:
        raise ValueError(
            "Invalid value for argument `gradient_accumulation_steps`. Expected "
            "a positive integer. Received: "
            f"gradient_accumulation_steps={gradient_accumulation_steps!r}"
        )
    common = dict(
        learning_rate=float(learning_rate),
        learning_rate_multipliers=multipliers,
        # Keras takes None (not 1) for "no accumulation".
        gradient_accumulation_steps=int(gradient_accumulation_steps)
        if gradient_accumulation_steps > 1
        else None,
    )
    if name == "adamw":
        return LayerwiseAdamW(weight_decay=float(weight_decay), beta_1=float(momentum), **common)
    weight_decay = float(weight_decay) if weight_decay else None
    if name == "adam":
        return LayerwiseAdam(weight_decay=weight_decay, beta_1=float(momentum), **common)
    return LayerwiseSGD(weight_decay=weight_decay, momentum=float(momentum), **common)


class _Layerwise:
    """Per-variable learning-rate multipliers and a momentum variable.

    Mixed in before a Keras optimizer class, whose `build` and `update_step`
    it wraps. Subclasses name their momentum attribute in `_momentum_name`;
    one that replaces `update_step` calls `_layerwise_learning_rate` at its
    top.
    """

    _momentum_name = None

    def _init_layerwise(self, learning_rate_multipliers):
        multipliers = dict(learning_rate_multipliers or {})
        for path, multiplier in multipliers.items():
            if not is_real(multiplier) or not multiplier > 0:
                raise ValueError(
                    "Invalid value for argument `learning_rate_multipliers`. "
                    "Expected positive numbers keyed by variable path. "
                    f"Received: {path!r}: {multiplier!r}"
                )
        self._learning_rate_multipliers = {k: float(v) for k, v in multipliers.items()}
        with keras.name_scope(self.name):
            momentum = keras.Variable(
                getattr(self, self._momentum_name),
                name=self._momentum_name,
                dtype=keras.config.floatx(),
                trainable=False,
                aggregation="only_first_replica",
            )
        setattr(self, self._momentum_name, momentum)

    @property
    def learning_rate_multipliers(self) -> dict[str, float]:
        """The multipliers by variable path, as given (a copy)."""
        return dict(self._learning_rate_multipliers)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._build_layerwise(variables)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = self._layerwise_learning_rate(variable, learning_rate)
        super().update_step(gradient, variable, learning_rate)

    def _build_layerwise(self, variables):
        # Looked up once per variable here, by index, because in the TF
        # backend `update_step` receives the `tf.Variable` under each Keras
        # variable, which has no `path`.
        self._multiplier_by_index = [
            self._learning_rate_multipliers.get(_path(v), 1.0) for v in variables
        ]
        self._weight_decay_by_index = [
            self.weight_decay is not None and self._use_weight_decay(v) for v in variables
        ]

    def learning_rate_multiplier(self, variable) -> float:
        """The multiplier this optimizer applies to `variable`'s rate."""
        return self._multiplier_by_index[self._get_variable_index(variable)]

    def _apply_weight_decay(self, variables):
        # Keras decays all variables with the base learning rate before the
        # updates; `_layerwise_learning_rate` does it per variable instead,
        # with the variable's own rate, inside the (distribution-aware)
        # per-variable update.
        return

    def _layerwise_learning_rate(self, variable, learning_rate):
        """Applies weight decay and returns `variable`'s learning rate."""
        index = self._get_variable_index(variable)
        learning_rate = ops.cast(learning_rate, variable.dtype)
        multiplier = self._multiplier_by_index[index]
        if multiplier != 1.0:
            learning_rate = ops.multiply(learning_rate, multiplier)
        if self._weight_decay_by_index[index]:
            # The same expression as Keras' own decoupled weight decay,
            # `variable -= variable * weight_decay * learning_rate`, applied
            # before the update as Keras does.
            weight_decay = ops.cast(self.weight_decay, variable.dtype)
            self.assign_sub(
                variable, ops.multiply(ops.multiply(variable, weight_decay), learning_rate)
            )
        return learning_rate

    def get_config(self):
        config = super().get_config()
        momentum = getattr(self, self._momentum_name)
        config[self._momentum_name] = float(ops.convert_to_numpy(momentum))
        config["learning_rate_multipliers"] = dict(self._learning_rate_multipliers)
        return config


@keras.saving.register_keras_serializable(package="kerasbert")
class LayerwiseAdam(_Layerwise, keras.optimizers.Adam):
    """Adam with a learning-rate multiplier per variable.

    Exactly Adam run with `learning_rate * multiplier` on each variable
    (Adam's step is linear in the learning rate), with `beta_1` held in a
    variable so a schedule can change it between batches.

    Args:
        learning_rate: the base learning rate, a float.
        beta_1: the decay of the first-moment estimate (the momentum).
        beta_2: the decay of the second-moment estimate.
        epsilon: added to the denominator for numerical stability.
        amsgrad: whether to use the AMSGrad variant.
        learning_rate_multipliers: a dict from `variable.path` to a positive
            float; variables not in it get 1. See `layerwise_multipliers`.
        **kwargs: `keras.optimizers.Adam`'s other arguments (`weight_decay`,
            `clipnorm`, ...).

    Example:
    >>> optimizer = LayerwiseAdam(1e-3, learning_rate_multipliers={"dense/kernel": 0.5})
    """

    _momentum_name = "beta_1"

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        learning_rate_multipliers=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            **kwargs,
        )
        self._init_layerwise(learning_rate_multipliers)


@keras.saving.register_keras_serializable(package="kerasbert")
class LayerwiseAdamW(_Layerwise, keras.optimizers.AdamW):
    """AdamW with a learning-rate multiplier per variable.

    Exactly AdamW run with `learning_rate * multiplier` on each variable,
    decoupled weight decay included (Keras scales it by the learning rate),
    with `beta_1` held in a variable so a schedule can change it between
    batches.

    Args:
        learning_rate: the base learning rate, a float.
        weight_decay: the decoupled weight decay, a float.
        beta_1: the decay of the first-moment estimate (the momentum).
        beta_2: the decay of the second-moment estimate.
        epsilon: added to the denominator for numerical stability.
        amsgrad: whether to use the AMSGrad variant.
        learning_rate_multipliers: a dict from `variable.path` to a positive
            float; variables not in it get 1. See `layerwise_multipliers`.
        **kwargs: `keras.optimizers.AdamW`'s other arguments.

    Example:
    >>> optimizer = LayerwiseAdamW(
    ...     5e-5, weight_decay=0.01,
    ...     learning_rate_multipliers=layerwise_multipliers(groups, 0.8))
    """

    _momentum_name = "beta_1"

    # AdamW's own signature, restated as Keras' AdamW restates Adam's: the
    # arguments keep their names and defaults in `get_config` and help().
    def __init__(
        self,
        learning_rate=0.001,
        weight_decay=0.004,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        learning_rate_multipliers=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            **kwargs,
        )
        self._init_layerwise(learning_rate_multipliers)


@keras.saving.register_keras_serializable(package="kerasbert")
class LayerwiseSGD(_Layerwise, keras.optimizers.SGD):
    """SGD with momentum and a learning-rate multiplier per variable.

    Keras' SGD update rule with `learning_rate * multiplier` on each
    variable. The momentum is a variable, and the velocity slots always exist
    (with momentum 0 the update is plain SGD), so a schedule can move the
    momentum between batches.

    Args:
        learning_rate: the base learning rate, a float.
        momentum: a float in [0, 1].
        nesterov: whether to use Nesterov momentum.
        learning_rate_multipliers: a dict from `variable.path` to a positive
            float; variables not in it get 1. See `layerwise_multipliers`.
        **kwargs: `keras.optimizers.SGD`'s other arguments.

    Example:
    >>> optimizer = LayerwiseSGD(0.01, momentum=0.9,
    ...     learning_rate_multipliers={"dense/kernel": 0.5})
    """

    _momentum_name = "momentum"

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
        nesterov=False,
        learning_rate_multipliers=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **kwargs
        )
        self._init_layerwise(learning_rate_multipliers)

    def build(self, variables):
        if self.built:
            return
        # Skips SGD.build, which creates the velocity slots only when the
        # momentum, a float there, is not 0.
        super(keras.optimizers.SGD, self).build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")
        self._build_layerwise(variables)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = self._layerwise_learning_rate(variable, learning_rate)
        gradient = ops.cast(gradient, variable.dtype)
        velocity = self.momentums[self._get_variable_index(variable)]
        momentum = ops.cast(self.momentum, variable.dtype)
        step = ops.multiply(gradient, learning_rate)
        self.assign(velocity, ops.subtract(ops.multiply(velocity, momentum), step))
        if self.nesterov:
            self.assign_add(variable, ops.subtract(ops.multiply(velocity, momentum), step))
        else:
            self.assign_add(variable, velocity)


def _path(variable):
    return getattr(variable, "path", variable.name)
