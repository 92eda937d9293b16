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
        "rotate_90": lambda: image.rotate(90),
        "rotate_180": lambda: image.rotate(180),
        "rotate_270": lambda: image.rotate(270),
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


# ---- Fast AutoAugment (augment/faa_policy.py): FAA's own op functions, literally, on Pillow. ---
_FAA_RANGES = {
    "ShearX": (-0.3, 0.3), "ShearY": (-0.3, 0.3), "TranslateX": (-0.45, 0.45),
    "TranslateY": (-0.45, 0.45), "Rotate": (-30, 30), "AutoContrast": (0, 1), "Invert": (0, 1),
    "Equalize": (0, 1), "Solarize": (0, 256), "Posterize": (4, 8), "Contrast": (0.1, 1.9),
    "Color": (0.1, 1.9), "Brightness": (0.1, 1.9), "Sharpness": (0.1, 1.9), "Cutout": (0, 0.2),
}


def faa_apply(op: str, image: Image.Image, level: float, *, negate: bool = False,
              centre=(0.5, 0.5), other: Image.Image = None) -> Image.Image:
    """FAA's ``apply_augment(img, op, level)`` with its random draws given: ``negate`` (the sign
    flip of shear/translate/rotate), ``centre`` = (y, x) uniform [0, 1) draws u of the Cutout
    centre: FAA's ``np.random.uniform(w)`` is numpy's ``uniform(low=w, high=1.0)`` = ``w + (1 -
    w) u`` (on (1, w]), ``other`` the SamplePairing partner (alpha 1)."""
    if op == "SamplePairing":
        return Image.blend(image, other, 1.0)
    extra = {"FlipLR": ImageOps.mirror, "FlipUD": ImageOps.flip,
             "Rotate90": lambda im: im.rotate(90), "Rotate180": lambda im: im.rotate(180),
             "Rotate270": lambda im: im.rotate(270)}  # the ops a search space may add
    if op in extra:
        return extra[op](image)
    low, high = _FAA_RANGES[op]
    v = level * (high - low) + low
    if op in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate") and negate:
        v = -v
    w, h = image.size
    if op == "ShearX":
        return _affine(image, (1, v, 0, 0, 1, 0))
    if op == "ShearY":
        return _affine(image, (1, 0, 0, v, 1, 0))
    if op == "TranslateX":
        return _affine(image, (1, 0, v * w, 0, 1, 0))
    if op == "TranslateY":
        return _affine(image, (1, 0, 0, 0, 1, v * h))
    if op == "Rotate":
        return image.rotate(v)
    if op == "Posterize":
        return ImageOps.posterize(image, int(v))
    if op == "Cutout":
        if v <= 0:
            return image.copy()
        v = v * w
        x0 = int(max(0, w + (1.0 - w) * float(centre[1]) - v / 2.0))
        y0 = int(max(0, h + (1.0 - h) * float(centre[0]) - v / 2.0))
        fill = (125, 123, 114)
        if image.mode == "L":  # FAA is RGB only; gray images get the colour's luma
            fill = Image.new("RGB", (1, 1), fill).convert("L").getpixel((0, 0))
        out = image.copy()
        ImageDraw.Draw(out).rectangle((x0, y0, min(w, x0 + v), min(h, y0 + v)), fill)
        return out
    names = {"AutoContrast": "auto_contrast", "Invert": "invert", "Equalize": "equalize",
             "Solarize": "solarize", "Contrast": "contrast", "Color": "color",
             "Brightness": "brightness", "Sharpness": "sharpness"}
    return apply(names[op], image, v)
