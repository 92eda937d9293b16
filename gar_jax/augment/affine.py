"""Pillow's nearest-neighbour affine warp, reproduced bit for bit, and a differentiable warp.

Pillow's ``Image.transform(size, AFFINE, (a0, a1, a2, a3, a4, a5))`` (and ``Image.rotate``, which
builds such a matrix) fills output pixel (x, y) from source pixel
``(floor(a0*(x+.5) + a1*(y+.5) + a2), floor(a3*(x+.5) + a4*(y+.5) + a5))``, black where that
falls outside the image. Its C code (Geometry.c, ``affine_fixed``) evaluates this in 16.16 fixed
point: the six coefficients are rounded to multiples of 1/65536 (with the half-pixel offsets folded
into a2 and a5) and the coordinates are accumulated in integers. Doing the same here makes every
pixel equal to Pillow's, ties included; a float evaluation would differ wherever a coordinate lands
exactly on a pixel boundary (rotations by 45 degrees, shears by 0.2, ...).

Two ways to get the fixed-point coefficients:
- :func:`fixed_point` on the host from float64 matrices (:func:`op_matrix`), exactly as Pillow
  computes them. Used whenever the magnitude is a Python number, and for the level tables of
  search spaces.
- :func:`traced_fixed_point` when the magnitude is a traced value: exact for shears,
  translations and whole-degree rotations; other angles use float32 trigonometry, whose
  coefficients can be off by one 1/65536 step, which moves a pixel only when its coordinate lies
  within 1/65536 of a pixel boundary (rare; a documented approximation).
"""
import functools
import math

import dm_pix
import jax.numpy as jnp
import numpy as np

# Ops that are pure coordinate maps (nearest neighbour, black fill).
GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y",
                 "flip_lr", "flip_ud", "rotate_90", "rotate_180", "rotate_270")

IDENTITY_MATRIX = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def rotate_matrix(angle, height: int, width: int) -> tuple:
    """Pillow's ``Image.rotate(angle)`` matrix (counter-clockwise degrees about the centre).

    Follows Image.rotate line by line in float64 (``angle % 360``, ``round(..., 15)``), so that
    the fixed-point coefficients equal Pillow's. Pillow's shortcuts for 0/90/180/270 degrees
    (copy/transpose) give the same pixels as this matrix.
    """
    angle = float(angle) % 360.0
    cx, cy = width / 2, height / 2
    angle = -math.radians(angle)
    a = round(math.cos(angle), 15)
    b = round(math.sin(angle), 15)
    d = round(-math.sin(angle), 15)
    e = round(math.cos(angle), 15)
    c = a * -cx + b * -cy + 0.0
    f = d * -cx + e * -cy + 0.0
    return (a, b, c + cx, d, e, f + cy)


def op_matrix(name: str, magnitude, height: int, width: int) -> tuple:
    """float64 output->source matrix (a0..a5) of a geometric op, as AutoAugment calls Pillow.

    shear_x: (1, v, 0, 0, 1, 0); shear_y: (1, 0, 0, v, 1, 0); translate_x: (1, 0, v, 0, 1, 0)
    (v in pixels: content moves left for v > 0); translate_y: (1, 0, 0, 0, 1, v); rotate: see
    :func:`rotate_matrix`; flips: mirror images (ImageOps.mirror / flip).
    """
    if name == "rotate":
        return rotate_matrix(magnitude, height, width)
    if name == "shear_x":
        return (1.0, float(magnitude), 0.0, 0.0, 1.0, 0.0)
    if name == "shear_y":
        return (1.0, 0.0, 0.0, float(magnitude), 1.0, 0.0)
    if name == "translate_x":
        return (1.0, 0.0, float(magnitude), 0.0, 1.0, 0.0)
    if name == "translate_y":
        return (1.0, 0.0, 0.0, 0.0, 1.0, float(magnitude))
    if name == "flip_lr":
        return (-1.0, 0.0, float(width), 0.0, 1.0, 0.0)
    if name == "flip_ud":
        return (1.0, 0.0, 0.0, 0.0, -1.0, float(height))
    if name in ("rotate_90", "rotate_180", "rotate_270"):
        return rotate_matrix(float(name[len("rotate_"):]), height, width)
    if name == "identity":
        return IDENTITY_MATRIX
    raise ValueError(f"{name!r} is not a geometric op")


def fixed_point(matrix) -> np.ndarray:
    """int32[6] 16.16 fixed-point coefficients of a float64 matrix, exactly as Geometry.c."""
    a = [float(v) for v in matrix]

    def fix(v):
        return math.floor(v * 65536.0 + 0.5)

    return np.array([fix(a[0]), fix(a[1]), fix(a[2] + a[0] * 0.5 + a[1] * 0.5),
                     fix(a[3]), fix(a[4]), fix(a[5] + a[3] * 0.5 + a[4] * 0.5)], np.int32)


def _snap(v):
    # Pillow rounds cos/sin to 15 decimals, which makes cos(90 deg) exactly 0; float32 needs a
    # coarser snap to land on 0 or +-1.
    r = jnp.round(v)
    return jnp.where(jnp.abs(v - r) < 1e-6, r, v)


def op_matrix_device(name: str, magnitude, height: int, width: int, dtype=jnp.float32):
    """[6] matrix (``dtype``) of a geometric op for a (possibly traced) magnitude; see op_matrix."""
    v = jnp.asarray(0.0 if magnitude is None else magnitude, dtype)
    one, zero = jnp.ones_like(v), jnp.zeros_like(v)
    if name == "rotate":
        angle = -jnp.deg2rad(jnp.mod(v, 360.0))
        c, s = _snap(jnp.cos(angle)), _snap(jnp.sin(angle))
        cx, cy = width / 2, height / 2
        return jnp.stack([c, s, c * -cx + s * -cy + cx, -s, c, -s * -cx + c * -cy + cy])
    rows = {
        "shear_x": (one, v, zero, zero, one, zero),
        "shear_y": (one, zero, zero, v, one, zero),
        "translate_x": (one, zero, v, zero, one, zero),
        "translate_y": (one, zero, zero, zero, one, v),
    }
    if name in rows:
        return jnp.stack(rows[name])
    return jnp.asarray(op_matrix(name, 0.0, height, width), dtype)


@functools.lru_cache(maxsize=32)
def _whole_degree_rotations(height: int, width: int) -> np.ndarray:
    """int32 [360, 6]: exact fixed-point coefficients of rotations by 0..359 whole degrees."""
    return np.stack([fixed_point(rotate_matrix(a, height, width)) for a in range(360)])


def traced_fixed_point(name: str, magnitude, height: int, width: int):
    """int32[6] fixed-point coefficients of a geometric op for a traced magnitude.

    Shears and translations are exact for any float32 magnitude (their coefficients are exact
    in float32). Rotations by whole degrees come from a host table of Pillow's float64
    coefficients; other angles use float32 trigonometry (see module docstring).
    """
    approx = fixed_point_device(op_matrix_device(name, magnitude, height, width))
    if name != "rotate":
        return approx
    angle = jnp.asarray(magnitude, jnp.float32)
    whole = jnp.round(angle)
    table = jnp.asarray(_whole_degree_rotations(height, width))
    return jnp.where(angle == whole, table[jnp.mod(whole.astype(jnp.int32), 360)], approx)


def fixed_point_device(matrix):
    """int32[6] fixed-point coefficients from a float32[6] matrix (see module docstring)."""
    a = jnp.asarray(matrix, jnp.float32)

    def fix(v):
        # Split off the integer part so that the fraction keeps float32's full precision.
        n = jnp.floor(v)
        return n.astype(jnp.int32) * 65536 + jnp.floor((v - n) * 65536.0 + 0.5).astype(jnp.int32)

    return jnp.stack([fix(a[0]), fix(a[1]), fix(a[2] + a[0] * 0.5 + a[1] * 0.5),
                      fix(a[3]), fix(a[4]), fix(a[5] + a[3] * 0.5 + a[4] * 0.5)])


def source_indices(fixed, height: int, width: int):
    """Flat source index int32 [..., H*W] of every output pixel (-1 where Pillow fills black).

    fixed: int32 [..., 6] fixed-point coefficients (one set per image).
    """
    fixed = jnp.asarray(fixed, jnp.int32)
    a0, a1, a2, a3, a4, a5 = (fixed[..., k, None, None] for k in range(6))
    y = jnp.arange(height, dtype=jnp.int32)[:, None]
    x = jnp.arange(width, dtype=jnp.int32)[None, :]
    # Integer accumulation as in Geometry.c: xx = a2 + y*a1 + x*a0, then an arithmetic shift.
    xs = (a2 + y * a1 + x * a0) >> 16
    ys = (a5 + y * a4 + x * a3) >> 16
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    index = jnp.where(inside, ys * width + xs, -1)
    return index.reshape(*index.shape[:-2], height * width)


def warp_nearest(image, fixed):
    """Pillow's nearest-neighbour affine warp.

    Args:
      image: planar [..., C, H, W] array (any dtype).
      fixed: int32 [..., 6] fixed-point coefficients (fixed_point / traced_fixed_point).
    Returns:
      [..., C, H, W] of image's dtype; pixels mapped from outside the image are 0.
    """
    *lead, c, h, w = image.shape
    index = source_indices(fixed, h, w)[..., None, :]  # [..., 1, H*W]
    flat = image.reshape(*lead, c, h * w)
    out = jnp.take_along_axis(flat, jnp.maximum(index, 0), axis=-1)
    return jnp.where(index >= 0, out, 0).reshape(image.shape).astype(image.dtype)


def warp_bilinear(image, matrix):
    """Differentiable bilinear version of the same warp (zero outside the image).

    Args:
      image: float [H, W, C] (values 0..255, not rounded).
      matrix: [6] output->source matrix in Pillow's convention (pixel centres at +0.5), e.g.
        from :func:`op_matrix_device`; may depend on a magnitude being differentiated.
    Returns:
      [H, W, C] of image's float dtype. At integer translations it equals warp_nearest.
    """
    a = jnp.asarray(matrix, image.dtype)
    # dm-pix samples input[M @ (row, col, ch) + offset] with pixel centres at integers: shift
    # Pillow's half-pixel convention in and out.
    zero, one = jnp.zeros_like(a[0]), jnp.ones_like(a[0])
    rows = jnp.stack([
        jnp.stack([a[4], a[3], zero, a[5] + 0.5 * (a[3] + a[4]) - 0.5]),
        jnp.stack([a[1], a[0], zero, a[2] + 0.5 * (a[0] + a[1]) - 0.5]),
        jnp.stack([zero, zero, one, zero]),
    ])
    return dm_pix.affine_transform(image, rows, order=1, mode="constant", cval=0.0)
