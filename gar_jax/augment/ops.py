"""One image op at a time: ``apply(name, image, magnitude)`` with Pillow's semantics.

This is the library's op contract (docs/algorithms.md §5). ``image`` is [H, W, C] (C = 1 or 3)
with values 0..255, uint8 or a float dtype holding integers; the result has the same shape and
dtype. ``magnitude`` is in the op's own unit and may be a traced value (jit/vmap):

=============  ==========================================================  ====================
op             Pillow equivalent                                           magnitude
=============  ==========================================================  ====================
identity       (copy)                                                      none
auto_contrast  ImageOps.autocontrast(img)                                  none
equalize       ImageOps.equalize(img)                                      none
invert         ImageOps.invert(img)                                        none
solarize       ImageOps.solarize(img, threshold)                           threshold 0..256
posterize      ImageOps.posterize(img, bits)                               bits 0..8
color          ImageEnhance.Color(img).enhance(f)                          factor f
contrast       ImageEnhance.Contrast(img).enhance(f)                       factor f
brightness     ImageEnhance.Brightness(img).enhance(f)                     factor f
sharpness      ImageEnhance.Sharpness(img).enhance(f)                      factor f
blur           img.filter(ImageFilter.BLUR)                                none
rotate         img.rotate(deg) (counter-clockwise, about the centre)       degrees, signed
shear_x        img.transform(size, AFFINE, (1, v, 0, 0, 1, 0))             coefficient, signed
shear_y        img.transform(size, AFFINE, (1, 0, 0, v, 1, 0))             coefficient, signed
translate_x    img.transform(size, AFFINE, (1, 0, v, 0, 1, 0))             pixels, signed
translate_y    img.transform(size, AFFINE, (1, 0, 0, 0, 1, v))             pixels, signed
flip_lr        ImageOps.mirror(img)                                        none
flip_ud        ImageOps.flip(img)                                          none
cutout         black square, side ``magnitude`` px, centred at ``center``  side in px
sample_pairing Image.blend(img, other, alpha)                              alpha
solarize_add   img.point(i + a if i < 128 else i, clipped to 255) (DRA)    addition a 0..255
rotate_90      img.rotate(90) (a quarter turn counter-clockwise)           none
rotate_180     img.rotate(180) (= ImageOps.flip(ImageOps.mirror(img)))     none
rotate_270     img.rotate(270)                                             none
=============  ==========================================================  ====================

Geometric ops use nearest neighbour and black fill, like Pillow's defaults. Results equal
Pillow's pixel for pixel (see affine.py and color.py for how); with a traced magnitude, geometric
rotations by a non-whole number of degrees use float32 coefficients, which can differ from Pillow
at exact pixel-boundary ties (affine.py).

``mode="bilinear"`` gives a differentiable float32 version of the geometric ops (bilinear
sampling), the enhancers, blur and sample_pairing (no truncation), with gradients with respect
to the image and the magnitude.
"""
import jax
import jax.numpy as jnp
import numpy as np

from gar_jax.augment import affine
from gar_jax.augment import color
from gar_jax.errors import ConfigError

OP_NAMES = ("identity", "auto_contrast", "equalize", "rotate", "solarize", "color", "posterize",
            "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x",
            "translate_y", "blur", "invert", "flip_lr", "flip_ud", "cutout", "sample_pairing")
NO_MAGNITUDE = frozenset({"identity", "auto_contrast", "equalize", "invert", "blur", "flip_lr",
                          "flip_ud"})
LUT_OPS = frozenset({"auto_contrast", "equalize", "invert", "solarize", "posterize"})
ENHANCERS = frozenset({"color", "contrast", "brightness", "sharpness"})
GEOMETRIC_OPS = frozenset(affine.GEOMETRIC_OPS)
DIFFERENTIABLE_OPS = GEOMETRIC_OPS | ENHANCERS | {"identity", "blur", "sample_pairing"}
MODES = ("nearest", "bilinear")

# --- solarize_add (DRA's SolarizeAdd, AutoAugment's TF op): a LUT op, added as one block.
OP_NAMES = OP_NAMES + ("solarize_add",)
LUT_OPS = LUT_OPS | {"solarize_add"}
# --- rotate_90 / rotate_180 / rotate_270 (quarter turns: on digits they change or destroy the
# label, 6 <-> 9; the hostile space of experiments/compare): geometric ops without magnitude,
# Pillow's rotate matrix at 90 / 180 / 270 degrees, added as one block.
TURNS = {"rotate_90": 90, "rotate_180": 180, "rotate_270": 270}
OP_NAMES = OP_NAMES + tuple(TURNS)
NO_MAGNITUDE = NO_MAGNITUDE | set(TURNS)


def is_traced(value) -> bool:
    """True if ``value`` is a JAX tracer (its number is unknown until run time)."""
    return isinstance(value, jax.core.Tracer)


def check_image(image, rank: int = 3, uint8_only: bool = False, what: str = "image"):
    """ConfigError unless ``image`` is an array of the given rank with 1 or 3 channels."""
    shape = getattr(image, "shape", None)
    dtype = getattr(image, "dtype", None)
    layout = "[H, W, C]" if rank == 3 else "[B, H, W, C]"
    if shape is None or dtype is None or len(shape) != rank:
        raise ConfigError(f"{what} must be a {layout} array, got shape {shape}")
    if shape[-1] not in (1, 3):
        raise ConfigError(f"{what} must have 1 or 3 channels (gray or RGB), got shape {shape}")
    ok = dtype == np.uint8 or (not uint8_only and jnp.issubdtype(dtype, jnp.floating))
    if not ok:
        wanted = "uint8" if uint8_only else "uint8 or float (holding 0..255)"
        raise ConfigError(f"{what} must be {wanted}, got dtype {dtype}")


def _check_args(name, image, magnitude, center, key, other, mode):
    if name not in OP_NAMES:
        raise ConfigError(f"unknown augmentation op {name!r}; known ops: {', '.join(OP_NAMES)}")
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; use one of {MODES}")
    if mode == "bilinear" and name not in DIFFERENTIABLE_OPS:
        raise ConfigError(f"op {name!r} has no differentiable mode; use mode='nearest' "
                          f"(differentiable ops: {', '.join(sorted(DIFFERENTIABLE_OPS))})")
    check_image(image)
    if name not in NO_MAGNITUDE and magnitude is None:
        raise ConfigError(f"op {name!r} needs a magnitude, e.g. apply({name!r}, image, 0.5)")
    if name == "cutout" and center is None and key is None:
        raise ConfigError("cutout needs center=(y, x) or key= (a jax.random key for the centre)")
    if name == "sample_pairing":
        if other is None or getattr(other, "shape", None) != image.shape:
            raise ConfigError("sample_pairing needs other= an image of the same shape "
                              f"{image.shape}, got {getattr(other, 'shape', None)}")
    if magnitude is not None and not is_traced(magnitude):
        value = float(magnitude)
        if name == "posterize" and (value != int(value) or not 1 <= value <= 8):
            raise ConfigError(f"posterize bits must be an integer in 1..8 (as in Pillow), got {magnitude}")
        if name == "cutout" and value < 0:
            raise ConfigError(f"cutout size must be >= 0 pixels, got {magnitude}")


def to_int(image):
    """int32 copy of a 0..255 image (floats are rounded and clipped)."""
    if image.dtype == jnp.uint8:
        return image.astype(jnp.int32)
    return jnp.clip(jnp.round(image), 0, 255).astype(jnp.int32)


def fixed_point_for(name, magnitude, height, width):
    """Fixed-point warp coefficients: exact (host float64) unless the magnitude is traced."""
    if name in ("flip_lr", "flip_ud") or name in TURNS:
        magnitude = 0.0
    if is_traced(magnitude):
        return affine.traced_fixed_point(name, magnitude, height, width)
    return jnp.asarray(affine.fixed_point(affine.op_matrix(name, float(magnitude), height, width)))


def lut_for(name, x, magnitude):
    """The int32 [C, 256] lookup table of a LUT op on planar image x (int32 [C, H, W])."""
    lead, channels = x.shape[:-3], x.shape[-3]
    if name == "invert":
        return color.invert_lut(lead, channels)
    if name == "solarize":
        return color.solarize_lut(lead, channels, magnitude)
    if name == "posterize":
        return color.posterize_lut(lead, channels, magnitude)
    if name == "solarize_add":
        return color.solarize_add_lut(lead, channels, magnitude)
    if name == "auto_contrast":
        return color.autocontrast_lut(x)
    return color.equalize_lut(color.histogram(x))


def degenerate_for(name, x):
    """ImageEnhance's degenerate image for an enhancer (int32, broadcastable to planar x)."""
    if name == "brightness":
        return jnp.zeros_like(x)
    if name == "contrast":
        return jnp.broadcast_to(color.contrast_mean(x)[..., None, None, None], x.shape)
    if name == "color":
        return jnp.broadcast_to(color.grayscale(x)[..., None, :, :], x.shape)
    return color.smooth(x)


def _apply_nearest(name, x, magnitude, center, key, other, fill):
    """The op on planar int32 x [C, H, W]; other (sample_pairing) is planar too."""
    h, w = x.shape[-2:]
    if name == "identity":
        return x
    if name in GEOMETRIC_OPS:
        return affine.warp_nearest(x, fixed_point_for(name, magnitude, h, w))
    if name in LUT_OPS:
        return color.apply_lut(x, lut_for(name, x, magnitude))
    if name in ENHANCERS:
        return color.blend(degenerate_for(name, x), x, magnitude)
    if name == "blur":
        return color.blur(x)
    if name == "sample_pairing":
        return color.blend(x, other, magnitude)
    # cutout
    if center is None:
        ky, kx = jax.random.split(key)
        center = (jax.random.randint(ky, (), 0, h), jax.random.randint(kx, (), 0, w))
    size = jnp.floor(jnp.asarray(magnitude, jnp.float32)).astype(jnp.int32)
    return color.cutout(x, size, center[0], center[1], fill)


def _apply_bilinear(name, image, magnitude, other):
    # float32 unless the caller works in another float dtype (e.g. float64 under enable_x64).
    dtype = image.dtype if jnp.issubdtype(image.dtype, jnp.floating) else jnp.float32
    x = image.astype(dtype)
    h, w = x.shape[:2]
    if name == "identity":
        return x
    if name in GEOMETRIC_OPS:
        return affine.warp_bilinear(x, affine.op_matrix_device(name, magnitude, h, w, dtype))
    if name == "sample_pairing":
        return x + magnitude * (other.astype(dtype) - x)
    planar = jnp.moveaxis(x, -1, -3)
    smoothed, blurred = color.smooth_and_blur(planar, exact=False)
    if name == "blur":
        return jnp.moveaxis(blurred, -3, -1)
    if name == "brightness":
        degenerate = jnp.zeros_like(x)
    elif name == "contrast":
        degenerate = jnp.mean(color.grayscale(planar, exact=False))
    elif name == "color":
        degenerate = color.grayscale(planar, exact=False)[..., None]
    else:
        degenerate = jnp.moveaxis(smoothed, -3, -1)
    return jnp.clip(degenerate + magnitude * (x - degenerate), 0.0, 255.0)


def apply(name: str, image, magnitude=None, *, center=None, key=None, other=None, fill=0,
          mode: str = "nearest"):
    """Apply op ``name`` to one image (see the module docstring for names and units).

    Args:
      name: one of OP_NAMES.
      image: [H, W, C] uint8, or float holding 0..255; C is 1 or 3.
      magnitude: the op's strength (Python number or traced scalar); ignored by ops without one.
      center: cutout only: (y, x) pixel of the square's centre (ints, may be traced).
      key: cutout only, instead of center: jax.random key; the centre is uniform over pixels.
      other: sample_pairing only: the image to blend with (same shape).
      fill: cutout only: fill value (scalar or per channel), default black.
      mode: "nearest" (Pillow-exact, integer output) or "bilinear" (differentiable, float32).
    Returns:
      mode "nearest": same shape and dtype as ``image``; mode "bilinear": float32 (or the
      image's float dtype).
    Raises:
      ConfigError: unknown name or mode, wrong rank/dtype/channels, missing or invalid
        magnitude/center/other; raised before anything is compiled.
    """
    _check_args(name, image, magnitude, center, key, other, mode)
    image = jnp.asarray(image)
    if mode == "bilinear":
        return _apply_bilinear(name, image, magnitude, other)
    planar = jnp.moveaxis(to_int(image), -1, -3)
    if other is not None:
        other = jnp.moveaxis(to_int(jnp.asarray(other)), -1, -3)
    out = _apply_nearest(name, planar, magnitude, center, key, other, fill)
    return jnp.moveaxis(out, -3, -1).astype(image.dtype)
