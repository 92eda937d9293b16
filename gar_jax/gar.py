"""Gradient-Alignment Reward (GAR): exact per-example alignments with the next batch gradient.

The idea (docs/algorithms.md §1; GAR paper §4, eq. 1). Step t trains on batch t at parameters
θ_t; step t+1 computes the ordinary batch gradient G = ∇_θ L_{t+1}(θ_{t+1}), L = *mean* loss
of batch t+1. The reward of example n of batch t is

    GAR_n = ⟨∇_θ ℓ_n(θ_t), G⟩,        ℓ_n = example n's own loss (per-example, NOT averaged),

i.e. how much a step on example n alone would have lowered the next batch's loss. The baseline
NSLR gives every example of batch t the same reward −L_{t+1} (:func:`nslr_reward`). Rewards are
normalized before REINFORCE (``gar_jax.reinforce``), so their scale does not matter; the contract
here is fixed anyway: ℓ_n is the per-example loss (a batch-mean loss would scale GAR by 1/B) and
``direction`` is G, the gradient of the next batch's *mean* loss.

Exact and cheap: the vector (GAR_n)_n is the forward-mode derivative d/dε ℓ(θ_t + εG), so
``alignment(..., method="jvp")`` costs about one extra forward pass and never materializes a
per-example gradient. ``method="vmap"`` computes the per-example gradients explicitly
(``vmap(grad)``, in chunks of ``chunk_size`` examples to bound memory) and dots them with G; it is
the obviously-correct reference and agrees with "jvp" to floating-point accuracy.

BatchNorm convention. In train mode BatchNorm couples the examples of a batch, so "the gradient
of example n" is undefined until a convention is fixed. Frozen statistics (`gar_jax.batchnorm`):
every BatchNorm normalizes with the batch's mean/variance at θ_t held fixed; examples are then
independent, vmap(grad) == jvp, and BatchNorm's own scale and bias are included (the authors'
code skipped them). ``batchnorm.frozen_bn_loss_fn(model, variables, batch, example_loss,
train=True)`` builds such a ``per_example_loss_fn`` from any flax model. The layer-wise method
(`gar_jax.gar_layerwise`) also offers the authors' convention, each example's contribution to the
batch gradient. For BatchNorm-free models the conventions coincide.

Reward timing. GAR rewards batch t only once batch t+1's gradient at θ_{t+1} exists: keep θ_t and
batch t (or, layer-wise, its tape) through step t+1, then call `alignment`.

Exact ways of computing GAR (`METHODS`, the ``gar_method`` of every method that uses it):
"layerwise" (`gar_jax.gar_layerwise`, from the tape of step t), "jvp" and "vmap" (`alignment`).
One approximate (`APPROXIMATE_METHODS`, OLA only): "fd" (`finite_difference_alignment`), a
one-sided finite difference of the per-example losses: one forward pass where the losses at θ_t
are known already (step t's forward computed them), less work than "jvp"'s forward-mode pass,
with a relative error of about 1e-2 in float32 (experiments/ola/README.md section 7d).

Public API
    alignment(per_example_loss_fn, params, batch, direction, *, method="jvp", chunk_size=None)
        -> float[B]
    finite_difference_alignment(per_example_loss_fn, params, batch, direction, *, step=1e-5,
                                base_losses=None) -> float[B]
    nslr_reward(next_loss, batch_size) -> float[B]
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from gar_jax.errors import ConfigError

PyTree = Any
Batch = dict[str, jax.Array]
PerExampleLossFn = Callable[[PyTree, Batch], jax.Array]

# The ways of computing GAR, the one registry of every method's ``gar_method``: "layerwise"
# needs step t's tape (`gar_jax.gar_layerwise`); `alignment` computes the others.
METHODS = ("layerwise", "jvp", "vmap")
ALIGNMENT_METHODS = METHODS[1:]
# GAR up to a finite difference's error (`finite_difference_alignment`), from one forward pass;
# not exact, so neither among `METHODS` nor `alignment`'s (OLA offers it: ``ola.gar_method``).
APPROXIMATE_METHODS = ("fd",)


# --------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------
def _batch_size(batch: Batch) -> int:
    leaves = jax.tree.leaves(batch)
    if not leaves:
        raise ConfigError("alignment: the batch is empty; pass a dict like "
                          "{'image': [B,H,W,C], 'label': [B]}")
    sizes = {jnp.shape(a)[0] if jnp.ndim(a) else None for a in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ConfigError(f"alignment: every batch entry needs the same leading batch axis; "
                          f"got leading sizes {sorted(map(str, sizes))}")
    return sizes.pop()


def _conform_direction(params: PyTree, direction: PyTree) -> PyTree:
    """Returns `direction` with params' tree structure and dtypes, or raises ConfigError.

    Dicts and FrozenDicts with the same keys are accepted interchangeably (they flatten to the
    same key paths); shapes must match exactly.
    """
    p_items = jax.tree_util.tree_flatten_with_path(params)[0]
    d_items = jax.tree_util.tree_flatten_with_path(direction)[0]
    p_paths = {jax.tree_util.keystr(k): v for k, v in p_items}
    d_paths = {jax.tree_util.keystr(k): v for k, v in d_items}
    missing = sorted(set(p_paths) - set(d_paths))
    extra = sorted(set(d_paths) - set(p_paths))
    if missing or extra:
        raise ConfigError(
            "alignment: direction must be a pytree shaped like params (the gradient of the next "
            f"batch's mean loss w.r.t. the same params); missing {missing[:3]}, extra {extra[:3]}")
    leaves = []
    for path, p in p_paths.items():
        d = d_paths[path]
        if jnp.shape(d) != jnp.shape(p):
            raise ConfigError(f"alignment: direction{path} has shape {jnp.shape(d)} but "
                              f"params{path} has shape {jnp.shape(p)}")
        # jvp needs tangents of the primal's dtype; the dot products are done in that dtype too.
        leaves.append(jnp.asarray(d, jnp.result_type(p)))
    treedef = jax.tree.structure(params)
    order = [jax.tree_util.keystr(k) for k, _ in p_items]
    by_path = dict(zip(p_paths, leaves))
    return jax.tree.unflatten(treedef, [by_path[k] for k in order])


def _tree_dot(a: PyTree, b: PyTree) -> jax.Array:
    # Elementwise product + sum rather than jnp.vdot: on TPUs a default-precision dot product of
    # float32 runs in bfloat16 passes, an elementwise multiply does not.
    return sum(jnp.sum(x * y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _single_example_loss(per_example_loss_fn: PerExampleLossFn) -> Callable:
    """(params, example without batch axis) -> scalar loss, evaluating a batch of one."""
    def loss(params, example):
        one = jax.tree.map(lambda a: a[None], example)
        out = per_example_loss_fn(params, one)
        if jnp.shape(out) != (1,):
            raise ConfigError(f"alignment: per_example_loss_fn must return one loss per example "
                              f"(shape [B]); for a batch of one it returned {jnp.shape(out)}")
        return out[0]
    return loss


def alignment(per_example_loss_fn: PerExampleLossFn, params: PyTree, batch: Batch,
              direction: PyTree, *, method: str = "jvp",
              chunk_size: int | None = None) -> jax.Array:
    """Alignment of every example's loss gradient with `direction`.

    Args:
      per_example_loss_fn: ``(params, batch) -> float[B]``, the B per-example losses ℓ_n (not
        averaged). It must treat examples independently (BatchNorm-free nets, or a loss from
        `batchnorm.frozen_bn_loss_fn`): "vmap" and chunked methods evaluate each example as a batch
        of one, and "jvp" differentiates the whole batch at once; the two agree only then.
      params: the pytree differentiated (θ_t).
      batch: dict of arrays with a common leading batch axis B (``{"image", "label"}``).
      direction: pytree shaped like `params` (G, the next batch's mean-loss gradient). Leaves are
        cast to params' dtypes.
      method: "jvp" (forward mode, ≈ one extra forward; default) or "vmap" (explicit
        per-example gradients, then tree-wise dot products).
      chunk_size: if given (and < B), examples are processed ``chunk_size`` at a time with
        ``lax.map`` (the last chunk may be smaller), bounding peak memory to that many
        per-example gradients ("vmap") or forward passes ("jvp"). None: the whole batch at
        once. Note: on XLA:CPU, per-example conv weight gradients inside that loop miss XLA's
        fast convolution layout and run many times slower (experiments/alignment.md); "jvp"
        needs no chunking (its memory is about one forward pass).

    Returns:
      float[B] (the loss dtype): entry n is ⟨∇_params ℓ_n(params), direction⟩.

    Raises:
      ConfigError: unknown method, bad chunk_size, or `direction` not shaped like `params`.
    """
    if method not in ALIGNMENT_METHODS:
        raise ConfigError(f"alignment: unknown method {method!r}; use one of "
                          f"{list(ALIGNMENT_METHODS)} (layerwise GAR: gar_jax.gar_layerwise)")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ConfigError(f"alignment: chunk_size must be a positive int or None, "
                          f"got {chunk_size!r}")
    direction = _conform_direction(params, direction)
    batch_size = _batch_size(batch)

    if method == "jvp" and chunk_size is None:
        # The whole batch in one forward-mode pass: d/dε ℓ(params + ε·direction).
        losses, tangents = jax.jvp(lambda p: per_example_loss_fn(p, batch), (params,),
                                   (direction,))
        if jnp.shape(losses) != (batch_size,):
            raise ConfigError(f"alignment: per_example_loss_fn must return per-example losses "
                              f"of shape [B]=({batch_size},), got {jnp.shape(losses)}")
        return tangents

    single = _single_example_loss(per_example_loss_fn)
    if method == "vmap":
        def one(example):
            return _tree_dot(jax.grad(single)(params, example), direction)
    else:
        def one(example):
            return jax.jvp(lambda p: single(p, example), (params,), (direction,))[1]

    if chunk_size is None or chunk_size >= batch_size:
        return jax.vmap(one)(batch)
    # lax.map vmaps `one` over chunks of chunk_size examples and scans over the chunks, so only
    # one chunk of per-example gradients is alive at a time; a remainder chunk is handled too.
    return jax.lax.map(one, batch, batch_size=chunk_size)


def finite_difference_alignment(per_example_loss_fn: PerExampleLossFn, params: PyTree,
                                batch: Batch, direction: PyTree, *, step: float = 1e-5,
                                base_losses: jax.Array | None = None) -> jax.Array:
    """`alignment` by a one-sided finite difference: (ℓ_n(θ + εG) - ℓ_n(θ)) / ε.

    ε = step · ||params|| / ||direction||, a move of `step` times the parameters' norm, so one
    `step` suits any model and any size of G. Its error is the curvature along G (∝ ε) plus the
    losses' rounding (∝ 1 / ε): in float32 on digits, at OLA's checkpoints, step = 1e-5 gave a
    correlation of 0.99999 with the exact rewards and a relative error of 0.5%; 1e-4 and 1e-6
    about 1.5% and 1% (experiments/ola/probe_rewards.py --fd). Float32 losses at least: bfloat16
    or float16 ones are refused (their rounding is 1e5 times larger).

    Args:
      per_example_loss_fn, params, batch, direction: as in `alignment` (examples independent).
      step: the move's size relative to ||params||, > 0.
      base_losses: float[B], the per-example losses at `params` if already known (OLA: step t's
        training forward under the same frozen statistics); then one forward pass in all, else
        two.

    Returns:
      float[B] (the loss dtype); zeros where `direction` is zero.
    """
    if not (isinstance(step, (int, float)) and 0 < step < 1):
        raise ConfigError(f"finite_difference_alignment: step must be a number in (0, 1), "
                          f"got {step!r}")
    direction = _conform_direction(params, direction)
    batch_size = _batch_size(batch)
    d_norm = optax.tree.norm(direction)
    eps = step * optax.tree.norm(params) / jnp.maximum(d_norm, 1e-30)
    moved = jax.tree.map(lambda p, d: p + (eps * d).astype(p.dtype), params, direction)
    losses = per_example_loss_fn(moved, batch)
    if jnp.shape(losses) != (batch_size,):
        raise ConfigError(f"finite_difference_alignment: per_example_loss_fn must return "
                          f"per-example losses of shape [B]=({batch_size},), got "
                          f"{jnp.shape(losses)}")
    if jnp.finfo(losses.dtype).nmant < 23:
        raise ConfigError(f"finite_difference_alignment: the losses are {losses.dtype}; a "
                          f"finite difference needs float32 or float64 (use an exact method)")
    if base_losses is None:
        base_losses = per_example_loss_fn(params, batch)
    elif jnp.shape(base_losses) != (batch_size,):
        raise ConfigError(f"finite_difference_alignment: base_losses must have shape "
                          f"[B]=({batch_size},), got {jnp.shape(base_losses)}")
    fd = (losses - base_losses.astype(losses.dtype)) / eps.astype(losses.dtype)
    return jnp.where(d_norm > 0, fd, jnp.zeros_like(fd))


def nslr_reward(next_loss: jax.Array, batch_size: int) -> jax.Array:
    """Next-Step-Loss Reward: every example of batch t gets −L_{t+1}.

    Args:
      next_loss: scalar float, the mean loss of batch t+1 at θ_{t+1}.
      batch_size: B, the number of examples of batch t.

    Returns:
      float[B], all equal. Normalize these across steps (``reinforce.RunningNormalizer``); per
      batch they normalize to exactly zero.
    """
    next_loss = jnp.asarray(next_loss)
    if next_loss.ndim != 0:
        raise ConfigError(f"nslr_reward: next_loss must be a scalar, got shape {next_loss.shape}")
    return jnp.full((batch_size,), -next_loss, dtype=jnp.result_type(next_loss, jnp.float32))
