"""Frozen batch statistics: per-example losses of BatchNorm models (docs/algorithms.md §1).

In train mode BatchNorm couples the examples of a batch, so "the gradient of example n" needs a
convention. This one: every train-mode BatchNorm normalizes with the batch's mean/variance
(computed exactly as flax does, at θ_t) held fixed as constants. Then the examples are
independent, ``vmap(grad)`` and forward-mode ``jvp`` give identical numbers (`gar.alignment`), and
for BatchNorm-free models nothing changes. BatchNorm's own scale and bias stay parameters and are
included in the dot products.

Public API
    frozen_bn_loss_fn(model, variables, batch, example_loss, **model_kwargs)
        -> per_example_loss_fn(params, batch) -> float[B]
    frozen_bn_loss_fn_from_stats(model, variables, stats, example_loss, **model_kwargs)
        -> per_example_loss_fn(params, batch) -> float[B]      (no forward of its own)
    batch_norm_stats(model, variables, inputs, **model_kwargs) -> {name: {"mean", "var"}}
    apply_capturing_batch_stats(model, variables, inputs, **model_kwargs)
        -> (model output, stats): flax's own forward, plus the statistics it normalized with
    apply_with_batch_stats(model, variables, inputs, stats, **model_kwargs) -> model output
    Building blocks for other interceptors (gar_layerwise):
    bn_train_mode(args, kwargs, module) -> bool, bn_batch_stats(module, x) -> (mean, var),
    bn_normalize(module, x, mean, var) -> y
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import dtypes as flax_dtypes

from gar_jax.errors import ConfigError

PyTree = Any
Batch = dict[str, jax.Array]
PerExampleLossFn = Callable[[PyTree, Batch], jax.Array]


def _bn_axes(module: nn.BatchNorm, x: jax.Array) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(feature axes, reduction axes) of a BatchNorm call on `x`, as flax canonicalizes them."""
    axis = module.axis if isinstance(module.axis, (tuple, list)) else (module.axis,)
    feature_axes = tuple(sorted({a % x.ndim for a in axis}))
    return feature_axes, tuple(i for i in range(x.ndim) if i not in feature_axes)


def bn_train_mode(args, kwargs, module: nn.BatchNorm) -> bool:
    """True when this BatchNorm call would normalize with batch statistics (flax's rule).

    `args`, `kwargs`: the call's arguments as an interceptor sees them (without the module).
    """
    if kwargs.get("mask") is not None:
        raise ConfigError("frozen batch statistics: masked BatchNorm calls are not supported")
    call_value = args[1] if len(args) > 1 else kwargs.get("use_running_average")
    return not nn.merge_param("use_running_average", module.use_running_average, call_value)


def bn_batch_stats(module: nn.BatchNorm, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and biased variance of `x` over all non-feature axes, as flax's BatchNorm computes
    them in train mode (same reduction axes, dtype promotion, fast variance and cross-device
    mean when the module has an ``axis_name``)."""
    _, reduce_axes = _bn_axes(module, x)
    dtype = module.dtype if module.dtype is not None else jnp.result_type(x)
    if module.force_float32_reductions:
        dtype = jnp.promote_types(dtype, jnp.float32)
    x = jnp.asarray(x, dtype)

    def mean(*arrays):
        means = [a.mean(reduce_axes) for a in arrays]
        if module.axis_name is not None:
            means = list(jax.lax.pmean(jnp.stack(means), module.axis_name,
                                       axis_index_groups=module.axis_index_groups))
        return means

    if module.use_fast_variance:
        mu, mu2 = mean(x, jnp.square(x))
        var = jnp.maximum(0.0, mu2 - jnp.square(mu))  # round-off can make E[x²]-E[x]² < 0
    else:
        (mu,) = mean(x)
        (var,) = mean(jnp.square(x - jnp.expand_dims(mu, reduce_axes)))
    return mu, var


def bn_normalize(module: nn.BatchNorm, x: jax.Array, mean: jax.Array,
                 var: jax.Array) -> jax.Array:
    """Flax's BatchNorm normalization with given statistics and the module's own scale/bias."""
    feature_axes, reduce_axes = _bn_axes(module, x)
    feature_shape = [x.shape[a] if a in feature_axes else 1 for a in range(x.ndim)]
    y = x - jnp.expand_dims(mean, reduce_axes)
    mul = jax.lax.rsqrt(jnp.expand_dims(var, reduce_axes) + module.epsilon)
    parts = [x]
    if module.use_scale:
        scale = module.get_variable("params", "scale").reshape(feature_shape)
        if not module.force_float32_reductions:
            scale = jnp.asarray(scale, module.param_dtype)
        mul = mul * scale
        parts.append(scale)
    y = y * mul
    if module.use_bias:
        bias = module.get_variable("params", "bias").reshape(feature_shape)
        if not module.force_float32_reductions:
            bias = jnp.asarray(bias, module.param_dtype)
        y = y + bias
        parts.append(bias)
    return jnp.asarray(y, flax_dtypes.canonicalize_dtype(*parts, dtype=module.dtype))


def _bn_interceptor(stats: dict[str, dict[str, jax.Array]], mode: str):
    """A flax method interceptor for train-mode BatchNorm calls.

    mode="capture": compute each call's batch statistics, record them in `stats` and normalize
    with them (the output equals flax's train-mode output; running averages are not updated).
    mode="observe": record the statistics as "capture" does, then run flax's own BatchNorm
    unchanged (its output, gradient and running-average updates are those of a plain forward).
    mode="frozen": normalize with the recorded constants. Calls are keyed by module path plus
    a call index, so a module called twice gets two entries. Eval-mode calls pass through.
    """
    calls: dict[str, int] = {}

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if (not isinstance(module, nn.BatchNorm) or context.method_name != "__call__"
                or not bn_train_mode(args, kwargs, module)):
            return next_fun(*args, **kwargs)
        path = "/".join(module.path) or type(module).__name__
        index = calls.get(path, 0)
        calls[path] = index + 1
        name = path if index == 0 else f"{path}#{index}"
        x = args[0]
        if mode != "frozen":
            mean, var = bn_batch_stats(module, x)
            stats[name] = {"mean": jax.lax.stop_gradient(mean),
                           "var": jax.lax.stop_gradient(var)}
            if mode == "observe":
                return next_fun(*args, **kwargs)
        elif name not in stats:
            raise ConfigError(f"frozen batch statistics: BatchNorm call {name!r} has no captured "
                              f"statistics (captured: {sorted(stats)}); capture them with the "
                              f"same model and model_kwargs")
        return bn_normalize(module, x, stats[name]["mean"], stats[name]["var"])

    return interceptor


def batch_norm_stats(model: nn.Module, variables: PyTree, inputs: jax.Array,
                     **model_kwargs) -> dict[str, dict[str, jax.Array]]:
    """Batch statistics of every train-mode BatchNorm call of ``model.apply(variables, inputs,
    **model_kwargs)`` (e.g. ``train=True``), computed exactly as flax does, as constants.

    Returns:
      ``{name: {"mean": f32[F], "var": f32[F]}}`` with name the module path joined by "/"
      ("path#k" for the k-th repeated call of one module); F = the feature size. ``{}`` for a
      model without BatchNorm. Running averages in `variables` are neither used nor updated.
    """
    stats: dict[str, dict[str, jax.Array]] = {}
    with nn.intercept_methods(_bn_interceptor(stats, "capture")):
        model.apply(variables, inputs, **model_kwargs)
    return stats


def apply_capturing_batch_stats(model: nn.Module, variables: PyTree, inputs: jax.Array,
                                **model_kwargs) -> tuple[Any, dict[str, dict[str, jax.Array]]]:
    """``model.apply(variables, inputs, **model_kwargs)`` exactly as flax runs it (its own
    train-mode BatchNorm; with ``mutable=["batch_stats"]`` the running averages are updated as
    usual, and gradients flow through the batch statistics as usual), plus the statistics of
    every train-mode BatchNorm call as :func:`batch_norm_stats` returns them (constants, no
    gradient). Use it in the training step's own forward to freeze its statistics for
    :func:`frozen_bn_loss_fn_from_stats` without a second forward at the same params.

    Returns:
      ``(model output, stats)``; stats ``{}`` for a model without BatchNorm.
    """
    stats: dict[str, dict[str, jax.Array]] = {}
    with nn.intercept_methods(_bn_interceptor(stats, "observe")):
        out = model.apply(variables, inputs, **model_kwargs)
    return out, stats


def apply_with_batch_stats(model: nn.Module, variables: PyTree, inputs: jax.Array,
                           stats: dict[str, dict[str, jax.Array]], **model_kwargs) -> Any:
    """``model.apply(variables, inputs, **model_kwargs)`` with every train-mode BatchNorm
    normalizing with the constants `stats` (from :func:`batch_norm_stats`) instead of the
    statistics of `inputs`. Examples of `inputs` are then independent of each other."""
    with nn.intercept_methods(_bn_interceptor(stats, "frozen")):
        return model.apply(variables, inputs, **model_kwargs)


def frozen_bn_loss_fn(model: nn.Module, variables: PyTree, batch: Batch,
                      example_loss: Callable[[jax.Array, jax.Array], jax.Array],
                      **model_kwargs) -> PerExampleLossFn:
    """A per-example loss under the frozen-batch-statistics convention.

    Runs one forward of ``model.apply(variables, batch["image"], **model_kwargs)`` to capture
    every train-mode BatchNorm's batch mean/variance at ``variables["params"]``, and returns

        per_example_loss_fn(params, batch) -> float[B]
            = example_loss(model.apply({**variables, "params": params}, batch["image"],
                                       **model_kwargs), batch["label"])

    in which those BatchNorms normalize with the captured constants (no gradient flows into
    them). Evaluated on the capture batch at the capture params, it returns exactly the
    per-example losses of the ordinary train-mode forward; examples are independent, so it can
    be used with any :func:`alignment` method. Models without BatchNorm are unchanged.

    Args:
      model: a ``flax.linen`` module, e.g. with ``__call__(x, train: bool)``.
      variables: ``{"params": ..., "batch_stats": ..., ...}``; collections other than params are
        passed through unchanged (running averages are not updated).
      batch: ``{"image": [B,...], "label": int32[B]}`` whose statistics are frozen.
      example_loss: ``(logits [B,C], labels [B]) -> float[B]``, e.g.
        ``optax.softmax_cross_entropy_with_integer_labels``.
      **model_kwargs: passed to ``model.apply`` (e.g. ``train=True``; ``rngs=`` for dropout,
        whose masks differ between a batch and a batch of one).
    """
    stats = batch_norm_stats(model, variables, batch["image"], **model_kwargs)
    return frozen_bn_loss_fn_from_stats(model, variables, stats, example_loss, **model_kwargs)


def frozen_bn_loss_fn_from_stats(model: nn.Module, variables: PyTree,
                                 stats: dict[str, dict[str, jax.Array]],
                                 example_loss: Callable[[jax.Array, jax.Array], jax.Array],
                                 **model_kwargs) -> PerExampleLossFn:
    """:func:`frozen_bn_loss_fn` with already captured statistics (no forward of its own):
    `stats` from :func:`batch_norm_stats` or :func:`apply_capturing_batch_stats` (e.g. of the
    training step at the same params and batch). `variables` supplies the collections other
    than params (passed through unchanged); its params are not used."""
    others = {k: v for k, v in variables.items() if k != "params"}

    def per_example_loss_fn(params: PyTree, batch: Batch) -> jax.Array:
        logits = apply_with_batch_stats(model, {**others, "params": params}, batch["image"],
                                        stats, **model_kwargs)
        return example_loss(logits, batch["label"])

    return per_example_loss_fn
