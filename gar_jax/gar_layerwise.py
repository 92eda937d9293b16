"""Layer-wise exact GAR: alignments from each layer's stored input and output-gradient.

docs/algorithms.md §1; GAR paper §5 (Lemmas 2, 3). For a layer whose output is linear in its own
parameters θ_l (y = layer(a; θ_l): Conv, Dense, and the affine part of BatchNorm / GroupNorm /
LayerNorm / RMSNorm once their statistics are fixed), example n's gradient is never needed:

    ⟨∇_{θ_l} ℓ_n, G_l⟩ = Σ_positions δ_n ⊙ layer(a_n; G_l),      δ_n = ∂ℓ_n / ∂y_n,

i.e. run the layer's own forward (same strides, padding, dilation, groups) on its stored input with
the direction G as its parameters, multiply by the stored output-gradient and sum. For the norm
layers it is cheaper still: with x̂ the normalized input, the per-example gradients of scale and
bias are u_n = Σ_pos δ_n ⊙ x̂_n and v_n = Σ_pos δ_n (shape [C] each), so only those are stored.

Two phases, matching the OLA step pair:
  * `capture` (the augmented step t): one ordinary train-mode forward/backward gives the loss and
    the batch gradient that trains the model, plus a `Tape`: every Conv/Dense layer's input a and
    output-gradient δ, every norm layer's (u, v). The output-gradients come from zero
    "perturbations" added to every layer output and differentiated in the same backward pass.
  * `alignment_from_tape` (the plain step t+1, once G exists): one forward per Conv/Dense layer with
    G as kernel, elementwise product with δ, sums. Cost ≈ one forward pass of the network.

Two conventions for train-mode BatchNorm, which couples the examples (docs/algorithms.md §1),
chosen by ``capture(..., convention=...)``; without train-mode BatchNorm they give the same
numbers:
  * "frozen" (default here): per-example losses with the batch's statistics held fixed; equal to
    `gar.alignment(batchnorm.frozen_bn_loss_fn(...), method="vmap" | "jvp")`. The training gradient must
    flow through the statistics while these δ_n must not, so `capture` runs a second backward
    with frozen statistics (input-gradients only; its forward is the same computation).
  * "contribution" (the authors' definition): example n's share of the batch gradient, each
    layer's input a_n times the output-gradient δ_n of the ordinary train-mode backward (through
    the statistics), BatchNorm's scale / bias included (Σ_pos δ_n x̂_n, Σ_pos δ_n). The shares sum
    exactly to the batch gradient, and no second backward is needed.

Memory: the tape holds every Conv/Dense layer's input and output-gradient, about one training
step's activations, kept through the plain step. Two ways to keep less:
  * ``capture(..., store=...)``: where a layer's per-example parameter gradients take fewer
    bytes than its input plus output-gradient (wide images, few channels: a WRN's first stage,
    whose 3x3x64x64 kernel is 1/3.6 of a 32x32x64 input + output-gradient), keep those instead
    ("auto", the default; "activations" / "gradients" force one kind). They are built at
    capture, one kernel offset at a time (a strided window of the input times δ, a batched
    matmul), and the replay for that layer is one dot product per example.
  * ``capture(..., remat=True)`` keeps only the output-gradients (plus θ_t and the BatchNorm
    statistics); `alignment_from_tape` then recomputes the layer inputs by one forward at θ_t
    on the same images (one more forward pass).
Measured costs: experiments/ola/README.md.

Tested in float64 against `gar.alignment(batchnorm.frozen_bn_loss_fn(...), method="vmap")` (frozen)
and against explicit per-example outer products of captured inputs and output-gradients
(contribution). Supported layers: every parameter of the model must belong to a Conv, Dense,
BatchNorm, GroupNorm, LayerNorm or RMSNorm (feature axis last) applied to a batch-major input;
anything else raises ConfigError (use `gar.alignment(..., method="jvp")`, which is model-agnostic).

Public API
    capture(model, variables, batch, example_loss, *, axis_name=None, mutable=("batch_stats",),
            convention="frozen", remat=False, store="auto", **model_kwargs)
        -> Captured(loss, logits, model_state, grads, tape: Tape)
    CONVENTIONS = ("frozen", "contribution"); check_convention(convention)
    STORES = ("auto", "activations", "gradients"); check_store(store)
    alignment_from_tape(model, variables, tape, direction, images, **model_kwargs) -> float[B]
    alignment(model, variables, batch, direction, example_loss, *, convention="frozen",
              remat=False, store="auto", **model_kwargs) -> float[B]
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from gar_jax import batchnorm
from gar_jax.errors import ConfigError

PyTree = Any
CONVENTIONS = ("frozen", "contribution")
STORES = ("auto", "activations", "gradients")
LINEAR_LAYERS = (nn.Conv, nn.Dense)
NORM_LAYERS = (nn.BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)


def check_convention(convention: str) -> None:
    """ConfigError unless `convention` is one of `CONVENTIONS`."""
    if convention not in CONVENTIONS:
        raise ConfigError(f"layer-wise GAR: convention={convention!r} must be one of "
                          f"{list(CONVENTIONS)}")


def check_store(store: str) -> None:
    """ConfigError unless `store` is one of `STORES`."""
    if store not in STORES:
        raise ConfigError(f"layer-wise GAR: store={store!r} must be one of {list(STORES)}")


class Captured(NamedTuple):
    """What the augmented step keeps.

    loss: float[], the batch's mean training loss (train-mode BatchNorm, coupled statistics).
    logits: [B, classes].
    model_state: the updated mutable collections (e.g. ``{"batch_stats": ...}``).
    grads: gradient of `loss` w.r.t. params (what trains the model).
    tape: a `Tape`.
    """
    loss: jax.Array
    logits: jax.Array
    model_state: PyTree
    grads: PyTree
    tape: dict


class Tape(NamedTuple):
    """What `alignment_from_tape` needs (a pytree).

    layers: {layer name: {"a": input, "delta": output-gradient}} for Conv/Dense ({"delta"}
      only with ``remat``), or {"g": [B, *kernel], "gb": [B, features]} (per-example kernel and
      bias gradients, `capture`'s store), and {layer name: {"u": [B, C], "v": [B, C]}}
      (per-example scale / bias gradients) for norms; batch axis first. All are gradients of
      the training loss, the mean over the (global) batch: 1/scale times example n's own (frozen convention) or
      example n's contribution to the batch gradient (contribution convention).
    scale: float32 [], the global batch size B (the factor back to per-example losses).
    params: with ``remat``: θ_t (the layer inputs are recomputed from it); else None.
    stats: with ``remat``: {train-mode BatchNorm call name: {"mean": [1, C], "var": [1, C]}},
      the (per-device) batch statistics of the captured forward, with a leading axis of 1 so
      that ``shard_map`` stacks the devices' own (spec ``P(data)``); else None.
    """
    layers: dict
    scale: jax.Array
    params: Any = None
    stats: Any = None


class _Recorder:
    """Per-trace bookkeeping shared by the interceptors (names, saved arrays, shapes)."""

    def __init__(self):
        self.calls: dict[str, int] = {}
        self.saved: dict[str, dict[str, jax.Array]] = {}
        self.out_shapes: dict[str, jax.ShapeDtypeStruct] = {}
        self.paths: dict[str, tuple[str, ...]] = {}
        self.geometry: dict[str, Any] = {}
        self.train_bn = False
        self.busy = False  # True while a layer is re-applied inside an interceptor.
        self.total = None

    def name(self, module: nn.Module) -> str:
        """Module path joined by "/", plus "#k" for the k-th repeated call of one module."""
        path = "/".join(module.path) or type(module).__name__
        index = self.calls.get(path, 0)
        self.calls[path] = index + 1
        self.paths[path] = tuple(module.path)
        return path if index == 0 else f"{path}#{index}"


def _is_layer_call(rec: _Recorder, context) -> bool:
    return (not rec.busy and context.method_name == "__call__"
            and isinstance(context.module, LINEAR_LAYERS + NORM_LAYERS))


def _check_norm(module: nn.Module, x: jax.Array, name: str) -> None:
    features = x.shape[-1]
    for leaf in ("scale", "bias"):
        if module.has_variable("params", leaf):
            shape = module.get_variable("params", leaf).shape
            if shape != (features,):
                raise ConfigError(f"layer-wise GAR: norm layer {name!r} has {leaf} of shape "
                                  f"{shape}, not ({features},) on the last axis; use "
                                  f"gar.alignment(..., method='jvp')")


def _normalized(rec: _Recorder, module: nn.Module, args, kwargs) -> jax.Array:
    """x̂: the norm layer applied to its input with scale 1 and bias 0 (its own statistics)."""
    unit = {}
    if module.has_variable("params", "scale"):
        unit["scale"] = jnp.ones_like(module.get_variable("params", "scale"))
    if module.has_variable("params", "bias"):
        unit["bias"] = jnp.zeros_like(module.get_variable("params", "bias"))
    others = {k: v for k, v in module.variables.items() if k != "params"}
    rec.busy = True
    try:
        out, _ = module.clone(parent=None).apply({**others, "params": unit}, *args,
                                                 mutable=True, **kwargs)
    finally:
        rec.busy = False
    return out


def _update_running_stats(module: nn.BatchNorm, mean: jax.Array, var: jax.Array) -> None:
    """BatchNorm's running averages, updated as flax does in train mode."""
    if module.is_initializing() or not module.is_mutable_collection("batch_stats"):
        return
    for name, value in (("mean", mean), ("var", var)):
        old = module.get_variable("batch_stats", name)
        module.put_variable("batch_stats", name, module.momentum * old +
                            (1 - module.momentum) * jax.lax.stop_gradient(value))


def _capture_interceptor(rec: _Recorder, perturbations: dict | None, frozen_bn: bool):
    """Records layer inputs (Conv/Dense) or x̂ (norms) and adds `perturbations[name]` to each
    layer's output. With `frozen_bn`, train-mode BatchNorm normalizes with its batch statistics
    held constant (as `batchnorm.frozen_bn_loss_fn`). With perturbations None it only records
    shapes."""
    def interceptor(next_fun, args, kwargs, context):
        if not _is_layer_call(rec, context):
            return next_fun(*args, **kwargs)
        module = context.module
        name = rec.name(module)
        x = args[0]
        bn_train = isinstance(module, nn.BatchNorm) and batchnorm.bn_train_mode(args, kwargs, module)
        rec.train_bn |= bn_train
        if bn_train:
            # Flax's train-mode BatchNorm, written with gar's helpers in both passes of `capture`
            # so that the two forwards are the same computation (XLA merges them); the frozen
            # pass only stops the gradient through the statistics.
            mean, var = batchnorm.bn_batch_stats(module, x)
            _update_running_stats(module, mean, var)
            if frozen_bn:
                mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
            y = batchnorm.bn_normalize(module, x, mean, var)
        else:
            y = next_fun(*args, **kwargs)
        if perturbations is None:
            rec.out_shapes[name] = jax.ShapeDtypeStruct(y.shape, y.dtype)
            if isinstance(module, NORM_LAYERS):
                _check_norm(module, x, name)
            else:
                rec.geometry[name] = _geometry(module, x, y)
            return y
        if bn_train:  # x̂ from the statistics at hand (cheaper than re-normalizing)
            axes = tuple(range(x.ndim - 1))
            xhat = (x - jnp.expand_dims(mean, axes)) * jax.lax.rsqrt(
                jnp.expand_dims(var, axes) + module.epsilon)
            rec.saved[name] = {"xhat": jax.lax.stop_gradient(xhat),
                               "mean": jax.lax.stop_gradient(mean),
                               "var": jax.lax.stop_gradient(var)}
        elif isinstance(module, NORM_LAYERS):
            rec.saved[name] = {"xhat": jax.lax.stop_gradient(_normalized(rec, module, args,
                                                                         kwargs))}
        else:
            rec.saved[name] = {"a": jax.lax.stop_gradient(x)}
        return y + perturbations[name]

    return interceptor


def _static_ints(value, rank: int) -> tuple[int, ...]:
    if value is None:
        return (1,) * rank
    return (value,) * rank if isinstance(value, int) else tuple(value)


def _geometry(module: nn.Module, x: jax.Array, y: jax.Array):
    """What `_example_grads` needs to build this layer's per-example parameter gradients, or
    None where it does not handle the layer (the tape then keeps its input and
    output-gradient): ("dense", use_bias) or ("conv", kernel_size, strides, kernel_dilation,
    explicit pads, use_bias)."""
    if isinstance(module, nn.Dense):
        if (x.ndim < 2 or getattr(module, "dot_general", None) is not None
                or getattr(module, "dot_general_cls", None) is not None):
            return None
        return ("dense", bool(module.use_bias))
    if type(module) is not nn.Conv:
        return None
    ksize = ((module.kernel_size,) if isinstance(module.kernel_size, int)
             else tuple(module.kernel_size))
    rank = len(ksize)
    if (x.ndim != rank + 2 or module.feature_group_count != 1 or module.mask is not None
            or any(d != 1 for d in _static_ints(module.input_dilation, rank))
            or module.conv_general_dilated is not None
            or module.conv_general_dilated_cls is not None):
        return None
    strides = _static_ints(module.strides, rank)
    dilation = _static_ints(module.kernel_dilation, rank)
    padding = nn.linear.canonicalize_padding(module.padding, rank)
    if padding in ("SAME", "VALID"):
        dilated = tuple((k - 1) * d + 1 for k, d in zip(ksize, dilation))
        padding = jax.lax.padtype_to_pads(x.shape[1:-1], dilated, strides, padding)
    elif isinstance(padding, str):  # CIRCULAR, REFLECT, CAUSAL
        return None
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        return None
    out = tuple((n + lo + hi - d * (k - 1) - 1) // s + 1
                for n, (lo, hi), k, s, d in zip(x.shape[1:-1], pads, ksize, strides, dilation))
    if out != tuple(y.shape[1:-1]):
        return None
    return ("conv", ksize, strides, dilation, pads, bool(module.use_bias))


def _example_grads(geometry, a: jax.Array, delta: jax.Array) -> dict:
    """Per-example gradients of a Conv / Dense layer's kernel (and bias) from its input `a` and
    output-gradient `delta`, float32 (or wider), batch axis first: {"g": [B, *kernel], "gb":
    [B, features]}. A convolution's kernel gradient is, for each kernel offset k, the strided
    window of the padded input at offset k times δ, summed over output positions: one batched
    matmul per offset (no per-example convolutions, which run many times slower on CPUs).

    The offsets are a `lax.scan` (one window alive at a time: unrolled, XLA:CPU materialized
    all of them, 294 against 86 MiB of temporaries for a 32x32x64 layer at batch 128, and ran
    no faster: 321 against 274 ms; experiments/ola/bench_example_grads.py)."""
    acc = jnp.promote_types(delta.dtype, jnp.float32)
    batch, features = delta.shape[0], delta.shape[-1]
    d = delta.reshape(batch, -1, features)
    dims = (((1,), (1,)), ((0,), (0,)))  # contract positions, batch over examples

    def outer(x):  # [B, P, Cin] x [B, P, Cout] -> [B, Cin, Cout]
        return jax.lax.dot_general(x.reshape(batch, -1, x.shape[-1]), d, dims,
                                   preferred_element_type=acc)

    use_bias = geometry[-1]
    if geometry[0] == "dense":
        entry = {"g": outer(a)}
    else:
        _, ksize, strides, dilation, pads, _ = geometry
        padded = jnp.pad(a, ((0, 0),) + pads + ((0, 0),))
        span = tuple((n - 1) * s + 1 for n, s in zip(delta.shape[1:-1], strides))
        starts = jnp.asarray([[o * dl for o, dl in zip(offset, dilation)]
                              for offset in itertools.product(*(range(k) for k in ksize))],
                             jnp.int32)
        zero = jnp.zeros((), jnp.int32)

        def one_offset(_, start):
            window = jax.lax.dynamic_slice(padded, (zero, *start, zero),
                                           (batch,) + span + (a.shape[-1],))
            if any(s != 1 for s in strides):
                window = window[(slice(None),) + tuple(slice(None, None, s) for s in strides)]
            return None, outer(window)

        _, per_offset = jax.lax.scan(one_offset, None, starts)  # [offsets, B, Cin, Cout]
        entry = {"g": jnp.moveaxis(per_offset, 0, 1).reshape(
            (batch,) + ksize + (a.shape[-1], features))}
    if use_bias:
        entry["gb"] = jnp.sum(d.astype(acc), axis=1)
    return entry


def _grad_term(entry: dict, params: dict) -> jax.Array:
    """⟨g_n, G_kernel⟩ + ⟨gb_n, G_bias⟩ per example: [B]."""
    g = entry["g"]
    term = g.reshape(g.shape[0], -1) @ params["kernel"].reshape(-1).astype(g.dtype)
    if "gb" in entry:
        term = term + entry["gb"] @ params["bias"].astype(g.dtype)
    return term


def _check_coverage(params: PyTree, rec: _Recorder) -> None:
    """Every parameter leaf must belong to a layer the tape handles."""
    covered = set(rec.paths.values())
    for key_path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = tuple(getattr(k, "key", str(k)) for k in key_path)
        if keys[:-1] not in covered:
            raise ConfigError(f"layer-wise GAR: parameter {'/'.join(keys)} does not belong to a "
                              f"Conv, Dense or norm layer; use gar.alignment(..., method='jvp')")


def _layer_params(params: PyTree, paths: dict, name: str) -> list:
    """The parameter leaves of the layer called `name` ("path" or "path#k")."""
    node = params
    for key in paths[name.split("#")[0]]:
        node = node[key]
    return jax.tree.leaves(node)


def _split(variables: PyTree) -> tuple[PyTree, dict]:
    if "params" not in variables:
        raise ConfigError("layer-wise GAR: variables need a 'params' collection")
    return variables["params"], {k: v for k, v in variables.items() if k != "params"}


def capture(model: nn.Module, variables: PyTree, batch: dict,
            example_loss: Callable[[jax.Array, jax.Array], jax.Array], *,
            axis_name: str | None = None, mutable=("batch_stats",),
            convention: str = "frozen", remat: bool = False, store: str = "auto",
            **model_kwargs) -> Captured:
    """The augmented step's forward/backward, keeping what the layer-wise GAR needs.

    Args:
      model: a flax.linen module, ``model.apply(variables, images, **model_kwargs)`` -> logits.
      variables: ``{"params": ..., "batch_stats": ...}``.
      batch: ``{"image": [B, H, W, C], "label": int32 [B]}``.
      example_loss: ``(logits, labels) -> float[B]`` per-example losses; the training loss is
        their mean.
      axis_name: inside ``jax.shard_map`` over a data axis: the name of that axis. The loss is
        then the mean over the global batch (``pmean`` of the devices' means, so the gradient
        w.r.t. replicated params is the global one, as `gar_jax.train.steps.make_grad_fn`), and
        BatchNorm statistics are per device (each device's δ are frozen at its own statistics).
      mutable: collections the train-mode forward updates (missing ones are ignored).
      convention: "frozen" or "contribution" (`CONVENTIONS`, module docstring); the same
        numbers unless the model's train-mode forward has a BatchNorm.
      remat: keep only the output-gradients (and θ_t, BatchNorm statistics); the layer inputs
        are recomputed by `alignment_from_tape` with one forward at θ_t on the same images.
        About half the tape's memory for one more forward pass.
      store: what the tape keeps of each Conv/Dense layer (`STORES`): "activations", its input
        and output-gradient (output-gradient only with `remat`); "gradients", the per-example
        gradients of its kernel and bias, built here from those two (B x parameter count, in
        float32); "auto" (default), whichever of the two takes fewer bytes per example, layer
        by layer: gradients for wide-image, few-channel layers (e.g. a WRN's first stage),
        activations elsewhere; except "activations" under the frozen convention on a
        train-mode BatchNorm net, where the smaller tape measured a higher peak (the two
        backward passes are). The alignments are the same up to float rounding. Layers
        `_geometry` does not handle (grouped, input-dilated, masked, circular/causal-padded
        convolutions) always keep activations.
      **model_kwargs: e.g. ``train=True``.

    Returns:
      `Captured` (loss and grads are exactly those of the ordinary training step).
    """
    check_convention(convention)
    check_store(store)
    params, others = _split(variables)
    mutable = [c for c in mutable if c in others]
    images, labels = batch["image"], batch["label"]

    def forward(params, perturbations, frozen_bn, rec):
        with nn.intercept_methods(_capture_interceptor(rec, perturbations, frozen_bn)):
            logits, state = model.apply({**others, "params": params}, images, mutable=mutable,
                                        **model_kwargs)
        return logits, state

    shapes_rec = _Recorder()
    jax.eval_shape(lambda p: forward(p, None, False, shapes_rec), params)
    _check_coverage(params, shapes_rec)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes_rec.out_shapes)
    scale = images.shape[0]
    if axis_name is not None:
        # Each device's perturbations are its own (device-varying), so their gradients are the
        # local δ, not a sum over devices.
        zeros = jax.tree.map(lambda z: jax.lax.pcast(z, axis_name, to="varying"), zeros)
        scale = scale * jax.lax.psum(1, axis_name)

    def mean_loss(logits):
        loss = jnp.mean(example_loss(logits, labels))
        return loss if axis_name is None else jax.lax.pmean(loss, axis_name)

    def loss_fn(params, perturbations, frozen_bn):
        rec = _Recorder()
        logits, state = forward(params, perturbations, frozen_bn, rec)
        return mean_loss(logits), (logits, state, rec.saved)

    if shapes_rec.train_bn and convention == "frozen":
        # The training gradient flows through the batch statistics, the per-example δ do not:
        # two backward passes (the second computes input-gradients only) of one forward.
        (loss, (logits, state, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, zeros, False)
        (_, (_, _, saved)), deltas = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)(
            params, zeros, True)
    else:
        # No train-mode BatchNorm (δ_n is example n's own, over B), or the contribution
        # convention (δ is the ordinary backward's, through the batch statistics): one backward.
        (loss, (logits, state, saved)), (grads, deltas) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True)(params, zeros, False)

    if store == "auto" and shapes_rec.train_bn and convention == "frozen":
        # Measured (experiments/ola/README.md): the two-backward capture is this convention's
        # peak, and the per-example gradients' temporaries add to it (WRN-16-4 b128 BatchNorm:
        # +104% memory with the size rule, +299% with store="gradients", against +87% for
        # activations); the smaller tape does not pay.
        store = "activations"
    layers, stats = {}, {}
    for name, stored in saved.items():
        delta = deltas[name]
        if "mean" in stored:
            stats[name] = {k: stored[k][None] for k in ("mean", "var")}
        if "a" in stored:
            a, geometry = stored["a"], shapes_rec.geometry.get(name)
            if geometry is not None and store != "activations":
                kept = delta.nbytes + (0 if remat else a.nbytes)
                itemsize = jnp.promote_types(delta.dtype, jnp.float32).itemsize
                grads_bytes = itemsize * delta.shape[0] * sum(
                    math.prod(v.shape) for v in _layer_params(params, shapes_rec.paths, name))
                if store == "gradients" or grads_bytes < kept:
                    layers[name] = _example_grads(geometry, a, delta)
                    continue
            layers[name] = {"delta": delta} if remat else {"a": a, "delta": delta}
        else:  # Per-example gradients of the norm's scale and bias, summed over positions.
            axes = tuple(range(1, delta.ndim - 1))
            d32 = delta.astype(jnp.promote_types(delta.dtype, jnp.float32))
            layers[name] = {"u": jnp.sum(d32 * stored["xhat"], axis=axes),
                            "v": jnp.sum(d32, axis=axes)}
    tape = Tape(layers, jnp.asarray(scale, jnp.float32))
    if remat:
        tape = tape._replace(params=jax.lax.stop_gradient(params), stats=stats)
    return Captured(loss, logits, state, grads, tape)


def _linear_term(out: jax.Array, delta: jax.Array) -> jax.Array:
    """Σ_positions δ ⊙ out per example: [B] (bf16 products summed in f32)."""
    prod = out.astype(delta.dtype) * delta
    acc = jnp.promote_types(delta.dtype, jnp.float32)
    return jnp.sum(prod.reshape(prod.shape[0], -1).astype(acc), axis=1)


def _norm_term(entry: dict, direction: dict) -> jax.Array:
    """u·G_scale + v·G_bias per example: [B]; `direction` = the norm layer's params of G."""
    term = 0.0
    for key, leaf in (("u", "scale"), ("v", "bias")):
        if leaf in direction:
            term = term + entry[key] @ direction[leaf].astype(entry[key].dtype)
    return term


def _replay_interceptor(rec: _Recorder, layers: dict):
    """Runs each Conv/Dense layer on its stored input with the bound (direction) params and
    accumulates Σ δ ⊙ output; norm layers contribute u·G_scale + v·G_bias. Layer outputs are
    passed on only to keep shapes valid; everything else in the model is dead code."""
    def interceptor(next_fun, args, kwargs, context):
        if not _is_layer_call(rec, context):
            return next_fun(*args, **kwargs)
        module = context.module
        _, entry = _entry(rec, module, layers)
        if "a" in entry:
            out = next_fun(entry["a"], *args[1:], **kwargs)
            term = _linear_term(out, entry["delta"])
        elif "g" in entry:  # per-example gradients kept; `out` is dead code (shapes only)
            out = next_fun(*args, **kwargs)
            term = _grad_term(entry, module.variables["params"])
        else:
            term = _norm_term(entry, module.variables.get("params", {}))
            out = jnp.zeros_like(args[0])
        rec.total = term if rec.total is None else rec.total + term
        return out

    return interceptor


def _entry(rec: _Recorder, module: nn.Module, layers: dict) -> tuple[str, dict]:
    """(call name, tape entry) of this layer call."""
    name = rec.name(module)
    if name not in layers:
        raise ConfigError(f"layer-wise GAR: layer {name!r} is not on the tape (tape has "
                          f"{sorted(layers)[:4]}...); capture with the same model and kwargs")
    return name, layers[name]


def _remat_interceptor(rec: _Recorder, layers: dict, stats: dict, direction: PyTree):
    """The forward at θ_t (bound params) with train-mode BatchNorm at the tape's statistics,
    which recomputes every layer's input; each Conv/Dense is also run on that input with its
    part of `direction`, and Σ δ ⊙ output accumulated; norm layers add u·G_scale + v·G_bias."""
    def interceptor(next_fun, args, kwargs, context):
        if not _is_layer_call(rec, context):
            return next_fun(*args, **kwargs)
        module = context.module
        name, entry = _entry(rec, module, layers)
        g = direction
        for key in module.path:
            g = g[key]
        if "delta" in entry:
            y = next_fun(*args, **kwargs)
            rec.busy = True
            try:
                out = module.clone(parent=None).apply({"params": g}, *args, **kwargs)
            finally:
                rec.busy = False
            term = _linear_term(out, entry["delta"])
        elif "g" in entry:  # per-example gradients kept: only the forward continues
            y = next_fun(*args, **kwargs)
            term = _grad_term(entry, g)
        else:
            if name in stats:  # train-mode BatchNorm: normalize as the captured forward did
                y = batchnorm.bn_normalize(module, args[0], stats[name]["mean"][0],
                                           stats[name]["var"][0])
            else:
                y = next_fun(*args, **kwargs)
            term = _norm_term(entry, g)
        rec.total = term if rec.total is None else rec.total + term
        return y

    return interceptor


def alignment_from_tape(model: nn.Module, variables: PyTree, tape: Tape, direction: PyTree,
                        images: jax.Array, **model_kwargs) -> jax.Array:
    """GAR of the captured batch against `direction`: float32 [B].

    Entry n is B ⟨c_n, direction⟩ with c_n the tape's per-example gradient at θ_t, the params
    `capture` ran at: (1/B) ∇ℓ_n under frozen batch statistics, or example n's contribution to
    the batch gradient (`capture`'s convention; the same without train-mode BatchNorm).

    Args:
      model, model_kwargs: as given to `capture`.
      variables: the model's variables at capture time; only the non-params collections are
        used (running averages of eval-mode BatchNorm; e.g. the state before the update).
      tape: `Captured.tape`.
      direction: pytree shaped like params (G, the next batch's mean-loss gradient).
      images: the captured batch's images (only their shape and dtype are used unless the
        tape was captured with ``remat``: then the layer inputs are recomputed from them).

    Inside ``jax.shard_map`` (a tape captured with `axis_name`), call it on each device's part
    of the tape with the replicated direction: each device gets its own examples' alignments.
    """
    _, others = _split(variables)
    rec = _Recorder()
    if tape.params is None:
        with nn.intercept_methods(_replay_interceptor(rec, tape.layers)):
            model.apply({**others, "params": direction}, jnp.zeros_like(images), mutable=True,
                        **model_kwargs)
    else:
        # Nothing here may start before G exists: otherwise XLA may run the forward at θ_t
        # early and keep its activations (what remat saves) alive through the plain step.
        params, images, direction = jax.lax.optimization_barrier(
            (tape.params, images, direction))
        with nn.intercept_methods(_remat_interceptor(rec, tape.layers, tape.stats, direction)):
            model.apply({**others, "params": params}, images, mutable=True, **model_kwargs)
    if rec.total is None:
        raise ConfigError("layer-wise GAR: the model called no Conv/Dense/norm layer")
    return rec.total * tape.scale  # δ are mean-loss gradients: 1/B of each example's own.


def alignment(model: nn.Module, variables: PyTree, batch: dict, direction: PyTree,
              example_loss: Callable[[jax.Array, jax.Array], jax.Array], *,
              convention: str = "frozen", remat: bool = False, store: str = "auto",
              **model_kwargs) -> jax.Array:
    """`capture` then `alignment_from_tape` in one call: float32 [B] (for tests and benches)."""
    captured = capture(model, variables, batch, example_loss, convention=convention,
                       remat=remat, store=store, **model_kwargs)
    return alignment_from_tape(model, variables, captured.tape, direction, batch["image"],
                               **model_kwargs)
