"""Pixel-value ops in Pillow's integer arithmetic: lookup tables, degenerate images, blending.

Images are planar int32 [..., C, H, W] holding 0..255 (C = 1 or 3; any leading batch dimensions,
so the batched applier runs every pass on the whole batch at once). Planar, not [H, W, C]: the
innermost axis is then a row of pixels, which XLA vectorizes, rather than 3 channels.
Per-image parameters (thresholds, factors, centres) have shape [...] (the leading dimensions). Wherever Pillow's result is an exact
integer function the arithmetic here is integer, so results agree with Pillow bit for bit:
- grayscale: Convert.c's ``L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16``.
- smooth (ImageFilter.SMOOTH, 3x3 kernel 1/13 * [1 1 1; 1 5 1; 1 1 1]) and blur (ImageFilter.BLUR,
  5x5 ring of ones / 16): Pillow computes ``trunc(sum(k_i p_i) + 0.5)`` in float32, whose error is
  far below the distance 1/26 to the next integer, so the integer ``(2 s + d) // (2 d)`` is the
  same number. The 1-pixel (SMOOTH) or 2-pixel (BLUR) border is copied unchanged, and images
  smaller than the kernel are returned unchanged, as Filter.c does.
- blend (Image.blend, which every ImageEnhance class calls): ``trunc(in1 + alpha (in2 - in1))`` in
  float32, clipped to 0..255. This one is float arithmetic, reproduced with the same operations.
- lookup tables int32 [..., C, 256] for invert, solarize, posterize, autocontrast and equalize
  (ImageOps), applied with :func:`apply_lut`.
"""
import functools

import jax.numpy as jnp
import numpy as np

from gar_jax.augment import fusion


def floor_divide(a, b):
    """a // b for int32 |a| < 2**24 and b >= 1, without integer division (which does not
    vectorize on CPUs): a float32 quotient, floored, then corrected by one in either direction
    with integer arithmetic. (XLA may compute a / b as a * (1 / b), so the float quotient of an
    exact multiple can land just below the integer; the correction makes the result exact.)"""
    b = jnp.asarray(b, jnp.int32)
    q = jnp.floor(a.astype(jnp.float32) / b.astype(jnp.float32)).astype(jnp.int32)
    r = a - q * b
    return q + (r >= b).astype(jnp.int32) - (r < 0).astype(jnp.int32)


def _per_image(value, ndim: int):
    """Append ``ndim`` unit axes to a per-image parameter of shape [...]."""
    value = jnp.asarray(value)
    return value.reshape(value.shape + (1,) * ndim)


def grayscale(image, exact: bool = True):
    """[..., H, W]: Pillow's ``convert("L")`` of RGB images (the channel itself if C == 1).

    exact=True: int32, Pillow's rounding; exact=False: the same weights on floats, unrounded
    (for the differentiable mode).
    """
    if image.shape[-3] == 1:
        return image[..., 0, :, :]
    r, g, b = image[..., 0, :, :], image[..., 1, :, :], image[..., 2, :, :]
    if not exact:
        return (r * 19595 + g * 38470 + b * 7471) / 65536.0
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


def contrast_mean(image):
    """int32 [...]: ``int(mean(L) + 0.5)`` as ImageEnhance.Contrast computes it, exactly."""
    gray = grayscale(image)
    n = gray.shape[-1] * gray.shape[-2]
    return (2 * jnp.sum(gray, axis=(-2, -1)) + n) // (2 * n)


def _interior(h: int, w: int, border: int):
    """bool [H, W]: pixels at least ``border`` away from the edge (Filter.c filters only
    those and copies the rest)."""
    y = jnp.arange(h)[:, None]
    x = jnp.arange(w)[None, :]
    return (y >= border) & (y < h - border) & (x >= border) & (x < w - border)


def smooth_and_blur(image, exact: bool = True):
    """(SMOOTH(image), BLUR(image)), [..., C, H, W] each, sharing one 3x3 box sum.

    SMOOTH is the degenerate image of ImageEnhance.Sharpness. exact=True: int32 in, int32 out,
    Pillow's rounding; exact=False: float in, float out, unrounded (differentiable mode).
    """
    h, w = image.shape[-2:]
    if h < 3 or w < 3:
        return image, image
    # Separable box sums over a zero-padded copy: column sums over 3 and 5 rows, written to
    # memory (else every output would recompute its 25 inputs), then row sums.
    p = jnp.pad(image, [(0, 0)] * (image.ndim - 2) + [(2, 2), (2, 2)])
    col3 = p[..., 1:h + 1, :] + p[..., 2:h + 2, :] + p[..., 3:h + 3, :]
    col5 = col3 + p[..., 0:h, :] + p[..., 4:h + 4, :]
    col3, col5 = fusion.materialize(col3), fusion.materialize(col5)
    box3 = col3[..., 1:w + 1] + col3[..., 2:w + 2] + col3[..., 3:w + 3]
    box5 = sum(col5[..., dx:dx + w] for dx in range(5))
    weighted = box3 + 4 * image  # SMOOTH's weights sum to 13
    smoothed = floor_divide(2 * weighted + 13, jnp.int32(26)) if exact else weighted / 13.0
    smoothed = jnp.where(_interior(h, w, 1), smoothed, image)
    if h < 5 or w < 5:
        return smoothed, image
    ring = box5 - box3  # BLUR's kernel is the ring of a 5x5 window
    blurred = (ring + 8) >> 4 if exact else ring / 16.0
    return smoothed, jnp.where(_interior(h, w, 2), blurred, image)


def smooth(image):
    """ImageFilter.SMOOTH, int32 [..., C, H, W]."""
    return smooth_and_blur(image)[0]


def blur(image):
    """ImageFilter.BLUR, int32 [..., C, H, W]."""
    return smooth_and_blur(image)[1]


def blend(in1, in2, alpha):
    """Pillow's Image.blend(in1, in2, alpha) on int32 pixel arrays -> int32 0..255.

    ``alpha`` is float32 [...] (Pillow converts the Python float to a C float); the result is
    ``in1 + alpha * (in2 - in1)`` evaluated in float32, truncated and clipped as Blend.c does.
    Enhancers call it as ``blend(degenerate, image, factor)``.
    """
    a = _per_image(jnp.asarray(alpha, jnp.float32), 3)
    value = jnp.asarray(in1).astype(jnp.float32) + a * (in2 - in1).astype(jnp.float32)
    return jnp.trunc(jnp.clip(value, 0.0, 255.0)).astype(jnp.int32)


def histogram(image):
    """int32 [..., C, 256]: per-channel pixel counts (Pillow's image.histogram(), reshaped)."""
    *lead, c, h, w = image.shape
    n = int(np.prod(lead, dtype=np.int64))
    # One flat scatter-add (much faster on CPU than the batched scatter a vmap would make).
    bins = (jnp.arange(n * c, dtype=jnp.int32).reshape(n, c, 1, 1) * 256
            + image.reshape(n, c, h, w))
    counts = jnp.zeros(n * c * 256, jnp.int32).at[bins.reshape(-1)].add(1)
    return counts.reshape(*lead, c, 256)


def apply_lut(image, lut):
    """out[..., c, y, x] = lut[..., c, image[..., c, y, x]] (int32 image, lut [..., C, 256])."""
    *lead, c, h, w = image.shape
    index = jnp.arange(c, dtype=jnp.int32)[:, None, None] * 256 + image
    flat = jnp.take_along_axis(lut.reshape(*lead, c * 256), index.reshape(*lead, c * h * w),
                               axis=-1)
    return flat.reshape(image.shape)


def identity_lut(lead: tuple, channels: int):
    """int32 [*lead, C, 256] identity tables."""
    return jnp.broadcast_to(jnp.arange(256, dtype=jnp.int32), (*lead, channels, 256))


def invert_lut(lead: tuple, channels: int):
    """ImageOps.invert."""
    return 255 - identity_lut(lead, channels)


def solarize_lut(lead: tuple, channels: int, threshold):
    """ImageOps.solarize(threshold): values >= threshold are inverted (256: no change)."""
    i = identity_lut(lead, channels)
    return jnp.where(i < _per_image(jnp.asarray(threshold, jnp.int32), 2), i, 255 - i)


def solarize_add_lut(lead: tuple, channels: int, addition, threshold: int = 128):
    """SolarizeAdd (AutoAugment's TF op, DRA's 16th op): values below ``threshold`` get
    ``addition`` added (integer, per image), clipped to 0..255; the others are unchanged."""
    i = identity_lut(lead, channels)
    added = jnp.clip(i + _per_image(jnp.asarray(addition, jnp.int32), 2), 0, 255)
    return jnp.where(i < threshold, added, i)


def posterize_lut(lead: tuple, channels: int, bits):
    """ImageOps.posterize(bits): keep the top ``bits`` bits (clipped to Pillow's 1..8)."""
    shift = 8 - jnp.clip(_per_image(jnp.asarray(bits, jnp.int32), 2), 1, 8)
    return (identity_lut(lead, channels) >> shift) << shift


@functools.lru_cache(maxsize=None)
def _autocontrast_undershoot() -> tuple:
    """Where Pillow's autocontrast LUT is one below the exact value, as bit masks.

    ImageOps.autocontrast computes ``int(i * (255.0 / (hi - lo)) - lo * (255.0 / (hi - lo)))``
    in float64. Where the exact value 255 (i - lo) / (hi - lo) is an integer, rounding can land
    just below it and ``int`` then gives one less (e.g. lo=0, hi=25, i=25 -> 254, not 255).
    These cases (12 094 of the 2.8 million (lo, hi, i), in 5 958 (lo, hi) pairs) are enumerated
    once with the same float64 operations. Returns (row int32 [256 * 256]: the mask row of pair
    lo * 256 + hi, 0 if none; masks int32 [rows, 8]: bit i % 32 of word i // 32 set where the
    LUT entry i is one low).
    """
    i = np.arange(256)
    low_pairs, low_bits = [], []
    for lo in range(255):
        hi = np.arange(lo + 1, 256)[:, None]
        scale = 255.0 / (hi - lo)
        pillow = np.trunc(i[None, :] * scale + -lo * scale)
        exact = np.floor_divide(255 * (i[None, :] - lo), hi - lo)
        low = (pillow != exact) & (i[None, :] >= lo) & (i[None, :] <= hi)
        assert np.all(exact[low] - pillow[low] == 1)
        rows = np.nonzero(low.any(axis=1))[0]
        low_pairs.append(lo * 256 + hi[rows, 0])
        low_bits.append(low[rows])
    pairs, bits = np.concatenate(low_pairs), np.concatenate(low_bits)  # [P], bool [P, 256]
    row = np.zeros(256 * 256, np.int32)
    row[pairs] = np.arange(1, len(pairs) + 1)
    words = (bits.reshape(-1, 8, 32).astype(np.uint64) << np.arange(32, dtype=np.uint64)).sum(-1)
    masks = np.concatenate([np.zeros((1, 8), np.uint64), words]).astype(np.uint32)
    return row, masks.view(np.int32)


def autocontrast_lut(image):
    """ImageOps.autocontrast() (cutoff 0) per channel of int32 images [..., C, H, W]."""
    lead, channels = image.shape[:-3], image.shape[-3]
    lo = jnp.min(image, axis=(-2, -1))[..., None]  # [..., C, 1]: lowest used level
    hi = jnp.max(image, axis=(-2, -1))[..., None]
    i = identity_lut(lead, channels)
    lut = floor_divide(255 * (i - lo), jnp.maximum(hi - lo, 1))
    row, masks = (jnp.asarray(t) for t in _autocontrast_undershoot())
    words = masks[row[lo[..., 0] * 256 + hi[..., 0]]]  # [..., C, 8]
    word = jnp.take_along_axis(words, jnp.broadcast_to(i >> 5, i.shape), axis=-1)
    lut = lut - ((word >> (i & 31)) & 1)
    return jnp.where(hi > lo, jnp.clip(lut, 0, 255), i)


def equalize_lut(hist):
    """ImageOps.equalize() per channel, from hist int32 [..., C, 256] (Pillow 13's arithmetic).

    step = (pixels - count of the last used level) // 255; lut[i] = (step // 2 + pixels below i)
    // step, clipped to 255 by Image.point; identity if fewer than two levels are used or step
    is 0. (Older Pillow releases divided by 256.)
    """
    i = identity_lut(hist.shape[:-2], hist.shape[-2])
    present = hist > 0
    last = jnp.max(jnp.where(present, i, -1), axis=-1, keepdims=True)
    last_count = jnp.sum(jnp.where(i == last, hist, 0), axis=-1, keepdims=True)
    total = jnp.sum(hist, axis=-1, keepdims=True)
    step = (total - last_count) // 255
    below = jnp.cumsum(hist, axis=-1) - hist
    lut = jnp.clip(floor_divide(step // 2 + below, jnp.maximum(step, 1)), 0, 255)
    use = (jnp.sum(present, axis=-1, keepdims=True) > 1) & (step > 0)
    return jnp.where(use, lut, i)


def cutout(image, size, center_y, center_x, fill=0):
    """Fill the size x size square at rows cy - size//2 ... cy - size//2 + size - 1 (columns
    likewise), clipped at the borders, with ``fill`` (scalar or per channel; default black).

    image [..., C, H, W] any dtype; size, center_y, center_x int [...]; size 0: no change.
    """
    h, w = image.shape[-2:]
    size = _per_image(jnp.asarray(size, jnp.int32), 2)
    top = _per_image(jnp.asarray(center_y, jnp.int32), 2) - size // 2
    left = _per_image(jnp.asarray(center_x, jnp.int32), 2) - size // 2
    y = jnp.arange(h, dtype=jnp.int32)[:, None]
    x = jnp.arange(w, dtype=jnp.int32)[None, :]
    inside = (y >= top) & (y < top + size) & (x >= left) & (x < left + size)
    fill = jnp.broadcast_to(jnp.asarray(fill, image.dtype), (image.shape[-3],))[:, None, None]
    return jnp.where(inside[..., None, :, :], fill, image)
