"""The slow, obviously-correct path: every op called on Pillow itself, one image on the host.

This is how the original AutoAugment / RandAugment / TrivialAugment code applies its ops; the
tests compare the on-device ops against it pixel for pixel, and experiments/bench_augment.py uses
it as the Pillow baseline.
"""
import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageEnhance
from PIL import ImageFilter
from PIL import ImageOps


def _affine(image, coefficients):
    return image.transform(image.size, Image.Transform.AFFINE, coefficients)


def apply(name: str, image: Image.Image, magnitude=None, *, center=None, other=None,
          fill=0) -> Image.Image:
    """Pillow's version of ``gar_jax.augment.ops.apply(name, image, magnitude)`` (same units).

    cutout: ``center`` = (y, x); the square covers rows y - s//2 .. y - s//2 + s - 1, clipped.
    sample_pairing: ``other`` is a PIL image of the same size.
    """
    m = magnitude
    simple = {
        "identity": lambda: image.copy(),
        "auto_contrast": lambda: ImageOps.autocontrast(image),
        "equalize": lambda: ImageOps.equalize(image),
        "invert": lambda: ImageOps.invert(image),
        "solarize": lambda: ImageOps.solarize(image, m),
        "posterize": lambda: ImageOps.posterize(image, int(m)),
        "color": lambda: ImageEnhance.Color(image).enhance(m),
        "contrast": lambda: ImageEnhance.Contrast(image).enhance(m),
        "brightness": lambda: ImageEnhance.Brightness(image).enhance(m),
        "sharpness": lambda: ImageEnhance.Sharpness(image).enhance(m),
        "blur": lambda: image.filter(ImageFilter.BLUR),
        "rotate": lambda: image.rotate(m),
        "shear_x": lambda: _affine(image, (1, m, 0, 0, 1, 0)),
        "shear_y": lambda: _affine(image, (1, 0, 0, m, 1, 0)),
        "translate_x": lambda: _affine(image, (1, 0, m, 0, 1, 0)),
        "translate_y": lambda: _affine(image, (1, 0, 0, 0, 1, m)),
        "flip_lr": lambda: ImageOps.mirror(image),
        "flip_ud": lambda: ImageOps.flip(image),
        "sample_pairing": lambda: Image.blend(image, other, m),
        # SolarizeAdd has no Pillow function; AutoAugment's reference code uses this point().
        "solarize_add": lambda: image.point(
            lambda i: min(i + int(m), 255) if i < 128 else i),
    }
    if name in simple:
        return simple[name]()
    if name != "cutout":
        raise ValueError(f"unknown op {name!r}")
    out = image.copy()
    size = int(m)
    if size <= 0:
        return out
    w, h = image.size
    top, left = center[0] - size // 2, center[1] - size // 2
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + size, w) - 1, min(top + size, h) - 1  # ImageDraw boxes are inclusive
    if x1 >= x0 and y1 >= y0:
        if image.mode == "L":
            color = int(fill)
        else:
            color = tuple(int(v) for v in np.broadcast_to(fill, (len(image.getbands()),)))
        ImageDraw.Draw(out).rectangle((x0, y0, x1, y1), fill=color)
    return out


def apply_array(name: str, array: np.ndarray, magnitude=None, **kwargs) -> np.ndarray:
    """``apply`` on a uint8 [H, W, C] array (C = 1 or 3); returns uint8 [H, W, C]."""
    gray = array.shape[-1] == 1
    image = Image.fromarray(array[..., 0] if gray else array)
    if "other" in kwargs and kwargs["other"] is not None:
        other = kwargs["other"]
        kwargs["other"] = Image.fromarray(other[..., 0] if gray else other)
    out = np.asarray(apply(name, image, magnitude, **kwargs))
    return out[..., None] if gray else out
