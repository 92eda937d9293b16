"""AutoAugment (Cubuk et al. 2019): the published CIFAR-10, SVHN and ImageNet policies as data.

Each policy is 25 sub-policies of two ``(op, probability, level)`` steps, level 0..9 (None for ops
without a magnitude), copied from the paper's appendix tables (docs/algorithms.md §6).
:func:`space` turns AutoAugment's op names and 10 levels into a SearchSpace so that the policy
runs on the shared batched applier. Levels map linearly as in the original AutoAugment
code (``PARAMETER_MAX = 10``: ``int_p(l, M) = int(l * M / 10)``, ``float_p(l, M) = l * M / 10``) onto
the ranges of docs/algorithms.md §6: shear 0.3 and rotate 30 degrees (signed), translate 10 px
on CIFAR/SVHN or 150/331 of the image size on ImageNet (signed), solarize 256 - int_p(l, 256),
posterize 8 - int_p(l, 4) bits, enhancers 0.1 + float_p(l, 1.8), cutout int_p(l, 20) px,
sample pairing float_p(l, 0.4).
"""
import functools

import numpy as np

from gar_jax.augment.spaces import Level, Op, SearchSpace
from gar_jax.errors import ConfigError

POLICIES = {
    "cifar10": (
        (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
        (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
        (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
        (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
        (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
        (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
        (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
        (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
        (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
        (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
        (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
        (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
        (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
        (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
        (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
        (("Color", 0.9, 9), ("Equalize", 0.6, None)),
        (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
        (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
        (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
        (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
        (("Equalize", 0.8, None), ("Invert", 0.1, None)),
        (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
    ),
    "svhn": (
        (("ShearX", 0.9, 4), ("Invert", 0.2, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.6, None), ("Solarize", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("AutoContrast", 0.8, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.4, None)),
        (("ShearY", 0.9, 5), ("Solarize", 0.2, 6)),
        (("Invert", 0.9, None), ("AutoContrast", 0.8, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("Solarize", 0.3, 3)),
        (("ShearY", 0.8, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.9, None), ("TranslateY", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Contrast", 0.3, 3), ("Rotate", 0.8, 4)),
        (("Invert", 0.8, None), ("TranslateY", 0.0, 2)),
        (("ShearY", 0.7, 6), ("Solarize", 0.4, 8)),
        (("Invert", 0.6, None), ("Rotate", 0.8, 4)),
        (("ShearY", 0.3, 7), ("TranslateX", 0.9, 3)),
        (("ShearX", 0.1, 6), ("Invert", 0.6, None)),
        (("Solarize", 0.7, 2), ("TranslateY", 0.6, 7)),
        (("ShearY", 0.8, 4), ("Invert", 0.8, None)),
        (("ShearX", 0.7, 9), ("TranslateY", 0.8, 3)),
        (("ShearY", 0.8, 5), ("AutoContrast", 0.7, None)),
        (("ShearX", 0.7, 2), ("Invert", 0.1, None)),
    ),
    "imagenet": (
        (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
        (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
        (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
        (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
        (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
        (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
        (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
        (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
        (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
        (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
        (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
        (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
        (("Color", 0.4, 0), ("Equalize", 0.6, None)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    ),
}
DATASETS = tuple(POLICIES)
NUM_LEVELS = 10


def _op(aa_name: str, translate_x_max: float, translate_y_max: float) -> Op:
    """Our Op (ops name, level rule, signed) for one of AutoAugment's op names."""
    def lin(maximum, **kw):
        return Level(maximum, divisor=NUM_LEVELS, **kw)

    enhancer = lin(1.8, offset=0.1)
    table = {
        "ShearX": Op("shear_x", lin(0.3), signed=True),
        "ShearY": Op("shear_y", lin(0.3), signed=True),
        "TranslateX": Op("translate_x", lin(translate_x_max, integer=True), signed=True),
        "TranslateY": Op("translate_y", lin(translate_y_max, integer=True), signed=True),
        "Rotate": Op("rotate", lin(30, integer=True), signed=True),
        "AutoContrast": Op("auto_contrast"),
        "Invert": Op("invert"),
        "Equalize": Op("equalize"),
        "Solarize": Op("solarize", lin(256, offset=256, integer=True, decreasing=True)),
        "Posterize": Op("posterize", lin(4, offset=8, integer=True, decreasing=True)),
        "Contrast": Op("contrast", enhancer),
        "Color": Op("color", enhancer),
        "Brightness": Op("brightness", enhancer),
        "Sharpness": Op("sharpness", enhancer),
        "Cutout": Op("cutout", lin(20, integer=True)),
        "SamplePairing": Op("sample_pairing", lin(0.4)),
    }
    return table[aa_name]


def check_dataset(dataset: str) -> None:
    if dataset not in POLICIES:
        raise ConfigError(f"unknown AutoAugment policy {dataset!r}; known: {', '.join(DATASETS)}")


def space(dataset: str, height: int = 32, width: int = 32) -> SearchSpace:
    """The ops of one dataset's policy (in order of first use) as a 10-level SearchSpace.

    Translations are 10 px for "cifar10"/"svhn" and 150/331 of the image size for "imagenet".
    """
    check_dataset(dataset)
    if dataset == "imagenet":
        tx, ty = 150 / 331 * width, 150 / 331 * height
    else:
        tx = ty = 10
    return SearchSpace(f"autoaugment_{dataset}",
                       tuple(_op(n, tx, ty) for n in _names_in_order(dataset)),
                       num_levels=NUM_LEVELS)


def _names_in_order(dataset: str) -> list:
    """AutoAugment op names of one policy, in order of first use (the space's op order)."""
    names = []
    for sub_policy in POLICIES[dataset]:
        for name, _, _ in sub_policy:
            if name not in names:
                names.append(name)
    return names


@functools.lru_cache(maxsize=32)
def tables(dataset: str, height: int, width: int):
    """(space, op_index int32 [25, 2], probability float32 [25, 2], level int32 [25, 2]).

    op_index indexes ``space.ops``; ops without a magnitude get level 0 (unused).
    """
    aa_space = space(dataset, height, width)
    order = _names_in_order(dataset)
    steps = POLICIES[dataset]
    op_index = np.array([[order.index(n) for n, _, _ in sub] for sub in steps], np.int32)
    probability = np.array([[p for _, p, _ in sub] for sub in steps], np.float32)
    level = np.array([[lv or 0 for _, _, lv in sub] for sub in steps], np.int32)
    return aa_space, op_index, probability, level
