"""smart_augmentation's differentiable augmentation (Data_augV5), on the op library.

The learned parameters are a pytree ``{"prob": f [A], "mag": f [A]}`` over the A ops of a search
space (`gar_jax.augment.spaces`):

- ``prob``: one logit per op, initialised to 1. Ops are drawn from ``softmax(prob * temperature)``
  (temperature 0.5); every image draws ``num_ops`` (N) ops i.i.d. and gets them in draw order.
- ``mag``: one strength per op as a fraction of the op's range in the space, initialised to 0.5
  and kept in [0.01, 1]. Strength m is the space's level rule at the *continuous* level
  ``m * (num_levels - 1)`` (RandAugment's M on the 0..30 scale, un-truncated), signed ops get a
  random sign per image. Only ops that are differentiable in their magnitude (rotate, shears,
  translations, the four enhancers) learn it; the others (solarize, posterize, cutout, the
  planted sample_pairing at alpha 1) keep 0.5 and get no magnitude gradient (the authors fix them
  at their maximum, which in their inverted scale means a uniformly random threshold).

Gradients (`augment`): ``mag`` gets its gradient through the images (differentiable ops, below);
``prob`` only through the per-image loss weights (`loss_weights`): w_n = sum over the image's N
ops of prob[op] / N, shifted to be non-negative, normalized to mean 1. The draws themselves are
constants (`sample`), as in the authors' code.

Pillow semantics vs differentiability (the ops of `gar_jax.augment.ops`):
- geometric ops (rotate, shear, translate, flips) use the bilinear warp (``mode="bilinear"``):
  nearest neighbour (Pillow's default) has zero gradient in the magnitude. Integer ranges
  (rotate degrees, translate pixels) are not truncated while training, so the strength is
  continuous; flips and translations by whole pixels equal Pillow exactly.
- enhancers, blur, sample_pairing: ImageEnhance / Image.blend formulas on unrounded floats
  (``mode="bilinear"``; Pillow rounds to integers each time).
- invert and solarize: Pillow's formulas on floats (255 - x; x >= threshold inverted), whose
  derivative in the image is exact (-1 / +-1); the threshold gets no gradient (zero a.e.).
- auto_contrast, equalize, posterize: Pillow's values on the rounded image with a
  straight-through image gradient (identity): their true derivative is zero almost everywhere,
  which would cut the magnitude gradient of every op drawn before them in the same image.
- cutout: Pillow's black square; the image gradient is the mask (exact), no size gradient.

A learned policy replays as a fixed policy (`replay`, or ``policies.get_policy("smart_aug",
path=...)``): N ops i.i.d. from the learned distribution, each at level round(30 m), applied by
the Pillow-exact applier (`gar_jax.augment.applier`).
"""
import functools
import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gar_jax.augment import affine
from gar_jax.augment import color
from gar_jax.augment import ops
from gar_jax.augment import spaces
from gar_jax.augment.applier import SlotPolicy, slot_randomness
from gar_jax.errors import ConfigError

TEMPERATURE = 0.5
MAG_INIT = 0.5
MAG_MIN, MAG_MAX = 0.01, 1.0
_STRAIGHT_THROUGH = frozenset({"auto_contrast", "equalize", "posterize"})


class Sample(NamedTuple):
    """The random draws of one batch (constants of the meta-gradient).

    op_indices int32 [B, N]; negate bool [B, N] (a signed op's magnitude is negated); center
    int32 [B, N, 2] (a cutout's (y, x) centre).
    """
    op_indices: jax.Array
    negate: jax.Array
    center: jax.Array


def check_num_ops(space: spaces.SearchSpace, num_ops) -> None:
    """ConfigError unless 1 <= num_ops <= len(space)."""
    if isinstance(num_ops, bool) or not isinstance(num_ops, (int, np.integer)) or \
            not 1 <= num_ops <= len(space):
        raise ConfigError(f"smart_aug: num_ops={num_ops!r} ops per image must be an integer in "
                          f"1..{len(space)} (the ops of space {space.name!r})")


def subspace(space: spaces.SearchSpace, names) -> spaces.SearchSpace:
    """`space` restricted to the ops `names` (in the space's order); ConfigError on unknown."""
    names = list(names)
    unknown = [n for n in names if n not in space.op_names]
    if unknown:
        raise ConfigError(f"smart_aug: unknown op(s) {unknown} for space {space.name!r}; its ops: "
                          f"{', '.join(space.op_names)}")
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"smart_aug: ops {names} must be distinct and not empty")
    if list(names) == list(space.op_names):
        return space
    return spaces.SearchSpace(f"{space.name}[{','.join(names)}]",
                              tuple(op for op in space.ops if op.name in names),
                              space.num_levels)


def learnable_magnitude(space: spaces.SearchSpace) -> np.ndarray:
    """bool [A]: ops whose output is differentiable in a magnitude that can change."""
    return np.array([op.level is not None and op.level.maximum != 0
                     and op.name in ops.DIFFERENTIABLE_OPS for op in space.ops])


def init_params(space: spaces.SearchSpace, dtype=jnp.float32) -> dict:
    """``{"prob": ones [A], "mag": 0.5 [A]}`` (the authors' initialisation)."""
    n = len(space)
    return {"prob": jnp.ones((n,), dtype), "mag": jnp.full((n,), MAG_INIT, dtype)}


def distribution(params, temperature: float = TEMPERATURE):
    """f [A]: the probability of drawing each op, softmax(prob * temperature)."""
    return jax.nn.softmax(params["prob"] * temperature)


def op_probability(params, num_ops: int, temperature: float = TEMPERATURE):
    """f [A]: the marginal probability that an image gets op a, 1 - (1 - p_a)^N."""
    return 1.0 - (1.0 - distribution(params, temperature)) ** num_ops


def clamp(params, space: spaces.SearchSpace) -> dict:
    """``mag`` clipped to [0.01, 1]; ops that cannot learn theirs are reset to 0.5."""
    learn = jnp.asarray(learnable_magnitude(space))
    mag = jnp.where(learn, jnp.clip(params["mag"], MAG_MIN, MAG_MAX), MAG_INIT)
    return {**params, "mag": mag.astype(params["mag"].dtype)}


def magnitude_regularizer(params, space: spaces.SearchSpace):
    """MSE of the learnable magnitudes to their maximum 1 (the authors' reg_loss)."""
    learn = learnable_magnitude(space)
    if not learn.any():
        return jnp.zeros((), params["mag"].dtype)
    return jnp.mean((params["mag"][np.flatnonzero(learn)] - MAG_MAX) ** 2)


def sample(params, key, batch_size: int, num_ops: int, height: int, width: int,
           temperature: float = TEMPERATURE) -> Sample:
    """Draws N ops per image from the current distribution (no gradient), signs and centres."""
    k_ops, k_slots = jax.random.split(key)
    logits = jax.lax.stop_gradient(params["prob"]) * temperature
    op_indices = jax.random.categorical(k_ops, logits, shape=(batch_size, num_ops))
    negate, center = slot_randomness(k_slots, batch_size, num_ops, height, width)
    return Sample(op_indices.astype(jnp.int32), negate, center)


def loss_weights(params, op_indices):
    """f [B]: the per-image loss weights (module docstring); mean 1, >= 0."""
    w = jnp.mean(params["prob"][op_indices], axis=-1)
    w = jnp.where(jnp.min(w) < 0, w - jnp.min(w), w)
    return w / jnp.mean(w)


@functools.lru_cache(maxsize=64)
def _level_tables(space: spaces.SearchSpace) -> dict:
    """float64 host tables [A] of the level rules (ops without a level: zeros)."""
    rows = []
    learn = learnable_magnitude(space)
    for op, differentiable in zip(space.ops, learn):
        rule = op.level
        if rule is None:
            rows.append((0.0, 0.0, 1.0, False, False))
            continue
        scale = (space.num_levels - 1) * rule.maximum / rule.divisor
        # Truncated to integers (as Pillow's callers do) only where no gradient is wanted.
        rows.append((scale, rule.offset, -1.0 if rule.decreasing else 1.0,
                     rule.integer and not differentiable, op.signed))
    scale, offset, direction, integer, signed = map(np.array, zip(*rows))
    return {"scale": scale, "offset": offset, "direction": direction,
            "integer": integer.astype(bool), "signed": signed.astype(bool)}


def magnitudes(space: spaces.SearchSpace, mag, op_indices, negate):
    """f [B, N]: each slot's magnitude in the op's own unit (degrees, pixels, factor, ...)."""
    t = _level_tables(space)
    dtype = mag.dtype
    p = mag[op_indices] * jnp.asarray(t["scale"], dtype)[op_indices]
    p = jnp.where(jnp.asarray(t["integer"])[op_indices], jnp.floor(p), p)
    value = jnp.asarray(t["offset"], dtype)[op_indices] + \
        jnp.asarray(t["direction"], dtype)[op_indices] * p
    flip = negate & jnp.asarray(t["signed"])[op_indices]
    return jnp.where(flip, -value, value)


def _straight_through(name, x, magnitude):
    exact = ops.apply(name, jnp.clip(jnp.round(x), 0, 255).astype(jnp.uint8),
                      None if name in ops.NO_MAGNITUDE else jnp.asarray(magnitude, jnp.int32))
    return x + jax.lax.stop_gradient(exact.astype(x.dtype) - x)


def _candidate(name, x, magnitude, other, center):
    """One non-geometric op on one float image [H, W, C] (module docstring)."""
    if name == "invert":
        return 255.0 - x
    if name == "solarize":
        return jnp.where(x >= jax.lax.stop_gradient(magnitude), 255.0 - x, x)
    if name in _STRAIGHT_THROUGH:
        return _straight_through(name, x, magnitude)
    if name == "cutout":
        planar = jnp.moveaxis(x, -1, -3)
        size = jnp.floor(jax.lax.stop_gradient(magnitude)).astype(jnp.int32)
        return jnp.moveaxis(color.cutout(planar, size, center[0], center[1]), -3, -1)
    return ops.apply(name, x, magnitude, other=other, mode="bilinear")


def _apply_one(space, x, other, op_index, magnitude, center):
    """Op ``space.ops[op_index]`` at ``magnitude`` on one float image (one slot)."""
    h, w = x.shape[:2]
    names = space.op_names
    out = x
    geometric = [i for i, n in enumerate(names) if n in ops.GEOMETRIC_OPS]
    if geometric:
        identity = jnp.asarray(affine.IDENTITY_MATRIX, x.dtype)
        matrices = jnp.stack([affine.op_matrix_device(n, magnitude, h, w, x.dtype)
                              if i in geometric else identity for i, n in enumerate(names)])
        is_geometric = jnp.asarray(np.isin(np.arange(len(names)), geometric))[op_index]
        out = jnp.where(is_geometric, affine.warp_bilinear(x, matrices[op_index]), out)
    for i, name in enumerate(names):
        if name in ops.GEOMETRIC_OPS or name == "identity":
            continue
        out = jnp.where(op_index == i, _candidate(name, x, magnitude, other, center), out)
    return out


def apply(space: spaces.SearchSpace, images, op_indices, slot_magnitudes, center):
    """Applies each image's N ops in order, differentiably (module docstring).

    Args:
      space: the search space.
      images: float [B, H, W, C], values 0..255 (C = 1 or 3).
      op_indices: int [B, N]; slot_magnitudes: float [B, N] in the ops' units (`magnitudes`);
      center: int [B, N, 2] cutout centres.
    Returns:
      float [B, H, W, C] (the images' dtype), not rounded.
    """
    ops.check_image(images, rank=4, what="images")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ConfigError(f"smart.apply needs float images (0..255), got {images.dtype}")
    space.check_op_indices(op_indices)
    per_image = jax.vmap(lambda x, o, m, y, c: _apply_one(space, x, y, o, m, c))

    def slot(x, s):
        o, m, c = s
        # sample_pairing blends with the batch neighbour as it enters this slot (as the applier).
        return per_image(x, o, m.astype(x.dtype), jnp.roll(x, 1, axis=0), c), None

    slots = (jnp.moveaxis(op_indices, 1, 0), jnp.moveaxis(slot_magnitudes, 1, 0),
             jnp.moveaxis(center, 1, 0))
    out, _ = jax.lax.scan(slot, images, slots)
    return out


def augment(params, space: spaces.SearchSpace, images, drawn: Sample):
    """``(augmented float [B,H,W,C], weights f [B])`` of images (uint8 or float 0..255) under
    the draws `drawn`; differentiable in ``params`` (mag via the images, prob via the weights)."""
    dtype = params["mag"].dtype
    x = images.astype(dtype)
    slot_magnitudes = magnitudes(space, params["mag"], drawn.op_indices, drawn.negate)
    return (apply(space, x, drawn.op_indices, slot_magnitudes, drawn.center),
            loss_weights(params, drawn.op_indices))


# ----------------------------------------------------------------- the policy, as a fixed policy


def levels(params, space: spaces.SearchSpace) -> np.ndarray:
    """int [A]: each op's replay level, round(mag * (num_levels - 1))."""
    mag = np.asarray(jax.device_get(params["mag"]), np.float64)
    return np.rint(mag * (space.num_levels - 1)).astype(int)


def to_json(params, space: spaces.SearchSpace, base_space: str, num_ops: int,
            temperature: float = TEMPERATURE) -> dict:
    """The replayable ``policy.json`` content (`replay` reads it back)."""
    params = jax.device_get(params)
    names = list(space.op_names)
    p = np.asarray(distribution(params, temperature), np.float64)
    marginal = np.asarray(op_probability(params, num_ops, temperature), np.float64)
    return {
        "method": "smart_aug", "base_space": base_space, "ops": names, "num_ops": int(num_ops),
        "num_levels": space.num_levels, "temperature": float(temperature),
        "prob_logits": np.asarray(params["prob"], np.float64).tolist(),
        "distribution": p.tolist(), "magnitude": np.asarray(params["mag"], np.float64).tolist(),
        "level": levels(params, space).tolist(),
        "learnable_magnitude": learnable_magnitude(space).tolist(),
        "op_probability": dict(zip(names, marginal.tolist())),
    }


def space_from_json(policy: dict) -> spaces.SearchSpace:
    """The space a policy.json was learned over (its base space's ops, plus the planted
    destructive op if listed)."""
    base = spaces.get_space(policy["base_space"])
    known = {op.name: op for op in base.ops}
    known.setdefault(spaces.DESTRUCTIVE_OP.name, spaces.DESTRUCTIVE_OP)
    unknown = [n for n in policy["ops"] if n not in known]
    if unknown:
        raise ConfigError(f"policy ops {unknown} are not in space {base.name!r}")
    return spaces.SearchSpace(f"smart_aug[{base.name}]", tuple(known[n] for n in policy["ops"]),
                              base.num_levels)


def replay(path=None, policy: dict = None):
    """A fixed policy (`applier.SlotPolicy`) from a policy.json file or dict: N ops per image
    i.i.d. from the learned distribution, each at its learned level, always applied."""
    if (path is None) == (policy is None):
        raise ConfigError("smart.replay needs path= (a policy.json) or policy= (its dict)")
    if policy is None:
        try:
            with open(path, encoding="utf-8") as f:
                policy = json.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read smart_aug policy {path!r}: {e}") from e
    space = space_from_json(policy)
    logits = jnp.log(jnp.asarray(policy["distribution"], jnp.float32))
    level = jnp.asarray(policy["level"], jnp.int32)
    n = int(policy["num_ops"])
    check_num_ops(space, n)
    space.check_levels(np.asarray(policy["level"]))

    def sampler(key, b):
        op_indices = jax.random.categorical(key, logits, shape=(b, n)).astype(jnp.int32)
        return op_indices, level[op_indices], jnp.ones((b, n), bool)

    return SlotPolicy(f"smart_aug[{space.name},n={n}]", sampler, lambda h, w: space)
