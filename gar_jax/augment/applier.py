"""The batched applier every policy (and OLA) uses: K op slots per image, in order, on device.

``apply_sequence(space, key, images, op_indices, levels, active)`` applies, for each image b and
slot k = 0..K-1 in order, op ``space.ops[op_indices[b, k]]`` at strength ``levels[b, k]`` if
``active[b, k]``; signed ops get a random sign and cutout a random centre from ``key`` (per image,
per slot). The pixels equal those of :func:`gar_jax.augment.ops.apply` (and so Pillow's) for the
same op, magnitude, sign and centre.

Why it is fast: a ``vmap`` of ``lax.switch`` over the ops would run every op on every image. Here
each slot is one fixed pipeline of shared passes whose per-op parameters are gathered from small
host-built tables indexed by (op, level, sign):

1. one nearest-neighbour warp with per-image 16.16 fixed-point affine coefficients (all geometric
   ops: rotate, shear, translate, flips; identity coefficients for the other ops);
2. one per-channel 256-entry lookup table (identity, invert, solarize, posterize, auto_contrast
   from the channel's min and max, equalize from its histogram), picked per image by a one-hot
   contraction over the candidate tables;
3. one blend ``A + t (B - A)`` (Pillow's Image.blend) with a per-image choice of A among black,
   the contrast mean, the grayscale, SMOOTH and BLUR (computed once per slot for the batch) and of
   B among the image and its batch neighbour (sample_pairing); ops that are not blends use
   A = the image and t = 0;
4. one cutout mask (size 0 for other ops).

So the work per slot is a small constant, whatever the number of ops in the space; passes that
no op of the space needs are left out when the function is traced. Images are processed planar
(int32 [B, C, H, W]) and each slot's input is materialized (fusion.py), so that XLA neither
runs 3-wide vector loops nor recomputes a slot inside the next one's gathers and stencils.
"""
import dataclasses
import functools
import types
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gar_jax.augment import affine
from gar_jax.augment import color
from gar_jax.augment import fusion
from gar_jax.augment import ops
from gar_jax.augment.spaces import get_space
from gar_jax.errors import ConfigError

# Stage-2 lookup-table codes (0: the identity table), the ``lut_code`` of `apply_slot`.
LUT_CODES = types.MappingProxyType({"invert": 1, "solarize": 2, "posterize": 3, "auto_contrast": 4,
                                    "equalize": 5, "solarize_add": 6})
# Stage-3 choice of A, the ``blend_code`` of `apply_slot`: 0 = the image itself (with t = 0 it
# is left unchanged).
BLEND_CODES = types.MappingProxyType({"brightness": 1, "contrast": 2, "color": 3, "sharpness": 4,
                                      "blur": 5})


def lut_code(name: str) -> int:
    """The `apply_slot` ``lut_code`` of op ``name`` (an ops.apply name); 0 if it has no table."""
    return LUT_CODES.get(name, 0)


def blend_code(name: str) -> int:
    """The `apply_slot` ``blend_code`` of op ``name`` (an ops.apply name); 0 if not a blend."""
    return BLEND_CODES.get(name, 0)


def to_planar(images):
    """uint8 [B, H, W, C] -> the int32 [B, C, H, W] layout of `apply_slot` (see color.py)."""
    return jnp.moveaxis(images, -1, 1).astype(jnp.int32)


def from_planar(x):
    """The inverse of `to_planar`: int32 [B, C, H, W] -> uint8 [B, H, W, C]."""
    return jnp.moveaxis(x, 1, -1).astype(jnp.uint8)


@functools.lru_cache(maxsize=64)
def _tables(space, height: int, width: int) -> dict:
    """Host tables of one space for one image size, indexed [op, level, sign] (sign 0: +, 1: -).

    fixed: int32 [..., 6] warp coefficients; factor: float32 blend t; integer: int32 solarize
    threshold / posterize bits / cutout size; per op: lut code, blend code, pairing, cutout flags.
    """
    n, levels = len(space), space.num_levels
    identity = affine.fixed_point(affine.IDENTITY_MATRIX)
    fixed = np.broadcast_to(identity, (n, levels, 2, 6)).copy()
    factor = np.zeros((n, levels, 2), np.float32)
    integer = np.zeros((n, levels, 2), np.int32)
    magnitudes = space.magnitude_table()
    for o, op in enumerate(space.ops):
        for level in range(levels):
            for s, sign in enumerate((1.0, -1.0)):
                m = magnitudes[o, level]
                m = sign * m if op.signed else m
                if op.name in ops.GEOMETRIC_OPS:
                    m = 0.0 if np.isnan(m) else m
                    fixed[o, level, s] = affine.fixed_point(
                        affine.op_matrix(op.name, float(m), height, width))
                elif op.name in ops.ENHANCERS or op.name == "sample_pairing":
                    factor[o, level, s] = np.float32(m)  # Pillow passes a C float
                elif op.name in ("solarize", "posterize", "cutout", "solarize_add"):
                    integer[o, level, s] = int(m)
    return {
        "fixed": fixed, "factor": factor, "integer": integer,
        "lut_code": np.array([lut_code(op.name) for op in space.ops], np.int32),
        "blend_code": np.array([blend_code(op.name) for op in space.ops], np.int32),
        "pairing": np.array([op.name == "sample_pairing" for op in space.ops]),
        "cutout": np.array([op.name == "cutout" for op in space.ops]),
        "signed": np.array([op.signed for op in space.ops]),
    }


def _select(code, candidates: dict, default):
    """candidates[code] (a per-image scalar code), else default; a chain of selects."""
    out = default
    for value, candidate in candidates.items():
        out = jnp.where(code == value, candidate, out)
    return out


def apply_slot(x, p, names: frozenset):
    """One table-driven op slot (the four passes of the module docstring) on a planar batch.

    The building block of `apply_sequence`, public for policies that gather their per-image
    parameters from their own tables (augment/faa_policy.py).

    Args:
      x: int32 [B, C, H, W] (`to_planar`), pixel values 0..255.
      p: per-image parameters; only those of the passes ``names`` needs are read:
        fixed int32 [B, 6] 16.16 warp coefficients (affine.fixed_point; identity: no warp;
        geometric ops); lut_code int32 [B] (`lut_code`; 0: identity) and integer int32 [B]
        (solarize threshold, posterize bits, solarize_add; LUT ops); blend_code int32 [B]
        (`blend_code`), factor float32 [B] (blend t; 0: unchanged) and pairing bool [B] (blend
        towards the batch neighbour ``roll(x, 1)``: sample_pairing) for blends; cut_size int32 [B]
        (0: none) and center int32 [B, 2] (y, x) for cutout.
      names: the ops.apply names the slot may apply (a frozenset, static): passes that none of
        them needs are not traced.
    Returns:
      int32 [B, C, H, W].
    """
    lead, channels = x.shape[:1], x.shape[1]
    x = fusion.materialize(x)  # read many times below: compute it once

    def per_image(v):  # [B] -> [B, 1, 1, 1], to select whole images
        return v[:, None, None, None]

    out = x
    if names & ops.GEOMETRIC_OPS:
        out = affine.warp_nearest(out, p["fixed"])
    if names & ops.LUT_OPS:
        luts = {}
        if "invert" in names:
            luts[1] = color.invert_lut(lead, channels)
        if "solarize" in names:
            luts[2] = color.solarize_lut(lead, channels, p["integer"])
        if "posterize" in names:
            luts[3] = color.posterize_lut(lead, channels, p["integer"])
        if "auto_contrast" in names:
            luts[4] = color.autocontrast_lut(x)
        if "equalize" in names:
            luts[5] = color.equalize_lut(color.histogram(x))
        if "solarize_add" in names:
            luts[6] = color.solarize_add_lut(lead, channels, p["integer"])
        luts[0] = color.identity_lut(lead, channels)
        codes = sorted(luts)
        # Select each image's table by a one-hot contraction rather than a chain of selects: the
        # contraction is computed once per table, whereas XLA fuses a select chain into the
        # pixel gather below and recomputes every candidate table entry for every pixel.
        choice = jax.nn.one_hot(jnp.searchsorted(jnp.array(codes), p["lut_code"]), len(codes),
                                dtype=jnp.float32)
        stacked = jnp.stack([luts[c] for c in codes], axis=1).astype(jnp.float32)
        lut = jnp.einsum("bk,bkcv->bcv", choice, stacked).astype(jnp.int32)
        out = color.apply_lut(out, lut)
    if names & (ops.ENHANCERS | {"blur", "sample_pairing"}):
        degenerate = {}
        if "brightness" in names:
            degenerate[1] = 0
        if "contrast" in names:
            degenerate[2] = per_image(color.contrast_mean(x))
        if "color" in names:
            degenerate[3] = color.grayscale(x)[:, None]
        if names & {"sharpness", "blur"}:
            smoothed, blurred = color.smooth_and_blur(x)
            if "sharpness" in names:
                degenerate[4] = smoothed
            if "blur" in names:
                degenerate[5] = blurred
        a = _select(per_image(p["blend_code"]), degenerate, out)
        b = out
        if "sample_pairing" in names:
            b = jnp.where(per_image(p["pairing"]), jnp.roll(x, 1, axis=0), out)
        out = color.blend(a, b, p["factor"])
    if "cutout" in names:
        out = color.cutout(out, p["cut_size"], p["center"][:, 0], p["center"][:, 1])
    return out


def _check(space, images, op_indices, levels, active):
    ops.check_image(images, rank=4, uint8_only=True, what="images")
    shapes = {"op_indices": np.shape(op_indices), "levels": np.shape(levels),
              "active": np.shape(active)}
    if len(set(shapes.values())) != 1 or len(shapes["levels"]) != 2:
        raise ConfigError(f"op_indices, levels and active must share one shape [B, K], got {shapes}")
    if shapes["levels"][0] != images.shape[0]:
        raise ConfigError(f"op slots are for {shapes['levels'][0]} images but the batch has "
                          f"{images.shape[0]}")
    space.check_op_indices(op_indices)
    space.check_levels(levels)


def slot_randomness(key, batch_size: int, slots: int, height: int, width: int):
    """The random draws apply_sequence makes from ``key``.

    Returns (negate bool [B, K]: a signed op's magnitude is negated, w.p. 1/2; center int32
    [B, K, 2]: a cutout's (y, x) centre, uniform over the pixels).
    """
    key_sign, key_y, key_x = jax.random.split(key, 3)
    shape = (batch_size, slots)
    negate = jax.random.bernoulli(key_sign, 0.5, shape)
    center = jnp.stack([jax.random.randint(key_y, shape, 0, height),
                        jax.random.randint(key_x, shape, 0, width)], axis=-1)
    return negate, center


def apply_sequence(space, key, images, op_indices, levels, active):
    """Apply K op slots per image, in order (see module docstring).

    Args:
      space: a spaces.SearchSpace (or a name for spaces.get_space).
      key: jax.random key for the signs of signed ops and the centres of cutouts (see
        slot_randomness).
      images: uint8 [B, H, W, C], C = 1 or 3.
      op_indices: int [B, K] indices into space.ops.
      levels: int [B, K] strength levels 0..space.num_levels-1 (traced values are clipped).
      active: bool [B, K]; inactive slots leave the image unchanged.
    Returns:
      uint8 [B, H, W, C].
    Raises:
      ConfigError: (before compiling) bad shapes or dtypes, op indices or levels out of range.
    """
    space = get_space(space)
    _check(space, images, op_indices, levels, active)
    _, h, w, _ = images.shape
    tables = {k: jnp.asarray(v) for k, v in _tables(space, h, w).items()}
    names = frozenset(space.op_names)
    op_indices = jnp.clip(jnp.asarray(op_indices, jnp.int32), 0, len(space) - 1)
    levels = jnp.clip(jnp.asarray(levels, jnp.int32), 0, space.num_levels - 1)
    active = jnp.asarray(active, bool)
    negate, center = slot_randomness(key, *op_indices.shape, h, w)
    sign = (negate & tables["signed"][op_indices]).astype(jnp.int32)
    identity = jnp.asarray(affine.fixed_point(affine.IDENTITY_MATRIX))
    params = {
        "fixed": jnp.where(active[..., None], tables["fixed"][op_indices, levels, sign], identity),
        "factor": jnp.where(active, tables["factor"][op_indices, levels, sign], 0.0),
        "integer": tables["integer"][op_indices, levels, sign],
        "lut_code": jnp.where(active, tables["lut_code"][op_indices], 0),
        "blend_code": jnp.where(active, tables["blend_code"][op_indices], 0),
        "pairing": active & tables["pairing"][op_indices],
        "cut_size": jnp.where(active & tables["cutout"][op_indices],
                              tables["integer"][op_indices, levels, sign], 0),
        "center": center,
    }
    out = to_planar(images)  # planar: see color.py
    # Scan over slots (axis 1 -> leading axis) so the slot pipeline is compiled once.
    params = jax.tree_util.tree_map(lambda v: jnp.moveaxis(v, 1, 0), params)

    def slot(x, p):
        return apply_slot(x, p, names), None

    out, _ = jax.lax.scan(slot, out, params)
    return from_planar(out)


@dataclasses.dataclass(frozen=True)
class SlotPolicy:
    """A policy that samples op slots per image and applies them with apply_sequence.

    ``policy(key, images)`` splits ``key`` into (sample, apply) keys; ``policy.sample(key, b)``
    exposes the draws (op_indices int32 [b, K], levels int32 [b, K], active bool [b, K]) made
    with the sample key, so that their statistics can be checked without images.
    """
    name: str
    sampler: Callable  # (key, batch_size) -> (op_indices, levels, active)
    space_for: Callable  # (height, width) -> SearchSpace

    def sample(self, key, batch_size: int):
        return self.sampler(key, batch_size)

    def __call__(self, key, images):
        ops.check_image(images, rank=4, uint8_only=True, what="images")
        b, h, w, _ = images.shape
        k_sample, k_apply = jax.random.split(key)
        op_indices, levels, active = self.sampler(k_sample, b)
        return apply_sequence(self.space_for(h, w), k_apply, images, op_indices, levels, active)
