"""Differentiable RandAugment (DRA, seed 002; ainieli/DRA): op table, relaxed search sampler,
fixed replay of a learned policy, and the policy JSON.

A DRA policy is three float arrays of shape [L layers, A ops] (L = 2, A = 16 in the paper):
``W`` (op logits), ``M_MEAN`` and ``M_STD`` (mean and std of the magnitude m in [0, 1]). Op order
and the magnitude -> argument mapping are those of the authors' code
(ainieli/DRA ``auto_augment/operations.py`` and ``train_phase/auto_augment``; the table is
also in ``tests/data/dra_policies.json``); ``s`` is a random sign:

=============  ==========================  ==================================================
DRA op         gar_jax op                  argument (our op's own unit)
=============  ==========================  ==================================================
ShearX/Y       shear_x / shear_y           0.3 s m
TranslateX/Y   translate_x / translate_y   10 s m pixels
Rotate         rotate                      30 s m degrees
Brightness,    brightness, color,          enhancement factor 1 + 0.9 s m
Color, ...     sharpness, contrast
Cutout         cutout                      side int(max(H, W) 0.2 m) pixels
Solarize       solarize                    threshold ceil(256 - 256 m)
Posterize      posterize                   bits ceil(8 - 4 m)
Equalize, AutoContrast, Invert             no magnitude
SolarizeAdd    solarize_add                addition int(110 m) below 128 (search: 110 m, float)
SamplePairing  sample_pairing              alpha 1 (the planted destructive op, not DRA's)
=============  ==========================  ==================================================

Solarize's ``ceil``: the authors' op keeps pixels ``< 256 - 256 m`` (a float), i.e. integer pixels
below ``ceil(256 - 256 m)``, which is Pillow's ``solarize(threshold)``. Posterize's: they shift by
``int(4 m)`` bits, i.e. keep ``8 - int(4 m) = ceil(8 - 4 m)`` bits.

Search (`search_augment`), as the authors run it (ainieli/DRA: every model applies the DRA
layer image by image, ``x = tf.map_fn(self.da, x)``): per image and layer l, a hard
Gumbel-softmax one-hot over the ops (temperature tau, straight-through), p ~ U(p_min, p_max), the
op fires with probability p, magnitude m = clip(mu + eps sigma, 0, 1) (reparameterized) and a
random sign. Only each image's chosen op is computed (one applier slot with per-image op indices
and one warp + blend, whatever the number of ops); every other op j contributes
``onehot_j * 1`` (zero forward, as the authors' ``tf.ones_like(x) * hardwts[j]``), so W's
gradient is ``<dL/dy, y_chosen>`` for the chosen op and ``<dL/dy, 1>`` for the others, image by
image. The magnitude learns through the authors' straight-through term at the op's input,
``x_m = x + m - stop_gradient(m)``, with the op's input gradient as TF computes it (`apply_ops`):
geometric ops (bilinear) get no gradient through the transform, enhancers also through their
blend factor, SolarizeAdd (a float addition in the search, as theirs) through its addition; the
other ops are Pillow-exact forward. Earlier versions drew one op per batch (or ran every op on
every image) and gave the signed ops an analytic d op / dm with no input term; neither was the
authors'.

Replay (`replay_policy`): per image and layer, op ~ Categorical(W[l]), m ~ N(mu, sigma) clipped to
[0, 1], random sign, fires with p ~ U(p_min, p_max); applied Pillow-exactly by the shared batched
applier on a grid of magnitudes: level ``G + round(s m G)`` of 2G + 1 levels (G = `GRID` = 1000),
so m is quantized to 1/2000 at most: shear 1.5e-4, rotate 0.015 degrees, translate 0.005 px
(well below a pixel's nearest-neighbour resolution); an integer argument differs from the
continuous one only when m lies within 1/2000 of one of its steps. The grid keeps the applier's
small per-slot constant cost (a per-image ``vmap`` of `ops.apply` would run every op on every
image).
"""
from __future__ import annotations

import functools
import json
import math
import os
from typing import Optional

import dataclasses
import jax
import jax.numpy as jnp
import numpy as np

from gar_jax.augment import affine
from gar_jax.augment import color
from gar_jax.augment import ops
from gar_jax.augment.applier import _tables as applier_tables
from gar_jax.augment.applier import apply_sequence, slot_randomness
from gar_jax.augment.spaces import Level, Op, SearchSpace
from gar_jax.errors import ConfigError

DRA_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
           "Sharpness", "Contrast", "Cutout", "Solarize", "Posterize", "Equalize", "AutoContrast",
           "Invert", "SolarizeAdd")
DESTRUCTIVE = "SamplePairing"  # the shared planted op (spaces.DESTRUCTIVE_OP), alpha 1
OUR_NAME = {"ShearX": "shear_x", "ShearY": "shear_y", "TranslateX": "translate_x",
            "TranslateY": "translate_y", "Rotate": "rotate", "Brightness": "brightness",
            "Color": "color", "Sharpness": "sharpness", "Contrast": "contrast", "Cutout": "cutout",
            "Solarize": "solarize", "Posterize": "posterize", "Equalize": "equalize",
            "AutoContrast": "auto_contrast", "Invert": "invert", "SolarizeAdd": "solarize_add",
            DESTRUCTIVE: "sample_pairing"}
SIGNED = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
                    "Color", "Sharpness", "Contrast"})
# Ops computed in float during the search (bilinear warp / blend / float addition).
DIFFERENTIABLE = SIGNED | {"SolarizeAdd"}
NO_MAGNITUDE = frozenset({"Equalize", "AutoContrast", "Invert", DESTRUCTIVE})
GRID = 1000
LAYERS = 2
INIT = {"W": 1e-3, "M_MEAN": 0.5, "M_STD": 0.1}
FORMAT = "gar_jax.dra_policy/1"

# The published CIFAR policies of ainieli/DRA policy.py (also tests/data/dra_policies.json), data.
PUBLISHED = {
    "WRN-28-10 on CIFAR-10": {
        "W": (
            (-0.0291, -0.0293, 0.0123, 0.1211, 0.055, 0.0145, 0.0081, -0.0956,
             -0.0748, -0.1011, 0.3763, -0.0693, -0.047, -0.0406, 0.083, -0.2228),
            (0.0005, -0.172, 0.1742, -0.1915, 0.3098, 0.1649, -0.1638, -0.0417,
             0.0562, -0.2187, 0.1768, 0.1516, -0.1664, -0.1643, 0.1992, -0.1697),
        ),
        "M_MEAN": (
            (0.5893, 0.6374, 0.7231, 0.7827, 0.594, 0.0648, 0.0882, 0.1469,
             0.0718, 0.5026, 0.241, 0.6516, 0.3202, 0.5, 0.689, 0.6221),
            (0.5318, 0.4291, 0.8164, 0.6031, 0.8365, 0.0234, 0.1391, 0.1264,
             0.0646, 0.5628, 0.2507, 0.7234, 0.4873, 0.5, 0.8073, 0.4854),
        ),
        "M_STD": (
            (0.1984, 0.255, 0.0, 0.0, 0.0, 0.006, 0.0912, 0.0633,
             0.0058, 0.1569, 0.0, 0.1357, 0.2372, 0.1, 0.0278, 0.0911),
            (0.1267, 0.127, 0.1014, 0.2698, 0.1288, 0.0203, 0.0968, 0.1096,
             0.0264, 0.3021, 0.0445, 0.1499, 0.0056, 0.1, 0.0784, 0.0669),
        ),
    },
    "WRN-28-10 on CIFAR-100": {
        "W": (
            (-0.0009, 0.2242, -0.1763, 0.2105, 0.0685, -0.0262, 0.05, 0.1379,
             -0.1412, 0.0258, 0.1639, 0.0242, -0.14, 0.0894, -0.2989, -0.055),
            (0.1769, 0.03, 0.0633, 0.0656, 0.0724, -0.0949, -0.0155, 0.0901,
             0.1075, 0.0916, 0.1079, 0.1531, -0.3673, -0.0273, -0.2288, -0.1339),
        ),
        "M_MEAN": (
            (0.5872, 0.7351, 0.3695, 0.8067, 0.6578, 0.0, 0.003, 0.1558,
             0.0185, 0.3823, 0.3003, 0.3681, 0.5405, 0.5, 0.9534, 0.4526),
            (0.5182, 0.6929, 0.4262, 0.9703, 0.4355, 0.0381, 0.0, 0.2863,
             0.0172, 0.5804, 0.186, 0.6051, 0.4063, 0.5, 0.7953, 0.4938),
        ),
        "M_STD": (
            (0.0402, 0.3393, 0.0046, 0.2675, 0.166, 0.0173, 0.0067, 0.0441,
             0.0255, 0.2503, 0.0527, 0.1339, 0.024, 0.1001, 0.1261, 0.0085),
            (0.2145, 0.0012, 0.2877, 0.0995, 0.0654, 0.0224, 0.0, 0.0175,
             0.0163, 0.1065, 0.0539, 0.0917, 0.0117, 0.1, 0.1768, 0.2105),
        ),
    },
    "PyramidNet+ShakeDrop on CIFAR-10": {
        "W": (
            (-0.0284, -0.1486, 0.0868, -0.034, 0.0086, 0.0463, 0.1919, -0.3905,
             -0.2343, -0.2946, 0.3532, 0.3675, -0.1342, -0.2277, 0.007, 0.5101),
            (0.0073, 0.0174, 0.1662, 0.1279, 0.1162, -0.003, -0.117, 0.181,
             -0.3431, -0.0664, 0.2326, -0.0712, -0.2532, -0.2205, -0.033, 0.1758),
        ),
        "M_MEAN": (
            (0.5704, 0.5712, 0.645, 0.6099, 0.4816, 0.0245, 0.0225, 0.0063,
             0.0108, 0.2884, 0.1446, 0.9988, 0.4058, 0.4994, 0.4706, 0.2999),
            (0.8364, 0.2385, 0.3994, 0.5186, 0.3202, 0.0314, 0.0657, 0.0201,
             0.0, 0.6285, 0.2861, 0.9694, 0.4609, 0.4995, 0.6286, 0.3944),
        ),
        "M_STD": (
            (0.3609, 0.0154, 0.1956, 0.1782, 0.2224, 0.05, 0.0549, 0.0119,
             0.047, 0.101, 0.0203, 0.0339, 0.0323, 0.1005, 0.0503, 0.4083),
            (0.1565, 0.2291, 0.2532, 0.0579, 0.0149, 0.0014, 0.0194, 0.0,
             0.0322, 0.3502, 0.0, 0.0374, 0.0891, 0.1, 0.2936, 0.069),
        ),
    },
    "PyramidNet+ShakeDrop on CIFAR-100": {
        "W": (
            (-0.0213, 0.2062, 0.1167, 0.0905, 0.0023, -0.2052, 0.0993, 0.108,
             0.0609, 0.4648, 0.2654, -0.0413, -0.2901, -0.2372, -0.4347, -0.2844),
            (0.1448, 0.038, -0.1221, 0.0608, 0.0551, -0.0332, 0.2568, -0.2339,
             0.4536, -0.1667, -0.13, 0.1928, -0.1145, -0.2373, -0.3602, 0.1145),
        ),
        "M_MEAN": (
            (0.577, 0.9984, 0.6181, 0.7348, 0.6911, 0.0, 0.156, 0.5923,
             0.0257, 0.4737, 0.1875, 0.7943, 0.0394, 0.4999, 1.0, 0.8417),
            (0.8939, 0.7807, 0.4618, 0.5979, 0.7068, 0.0653, 0.0718, 0.2693,
             0.0, 0.2439, 0.3477, 0.6116, 0.1641, 0.5004, 0.9673, 0.285),
        ),
        "M_STD": (
            (0.1534, 0.0453, 0.1982, 0.1278, 0.1064, 0.027, 0.0244, 0.1371,
             0.0343, 0.0131, 0.0464, 0.2045, 0.0138, 0.1002, 0.0406, 0.1079),
            (0.0297, 0.1773, 0.3246, 0.0589, 0.1483, 0.0339, 0.0752, 0.0173,
             0.0001, 0.1406, 0.0014, 0.0117, 0.1691, 0.0999, 0.0435, 0.2319),
        ),
    },
}
ALIASES = {"cifar10": "WRN-28-10 on CIFAR-10", "cifar100": "WRN-28-10 on CIFAR-100"}


def check_ops(names) -> tuple:
    """The op names as a tuple; ConfigError unless they are DRA's 16 (optionally + SamplePairing)."""
    names = tuple(names)
    if names not in (DRA_OPS, DRA_OPS + (DESTRUCTIVE,)):
        raise ConfigError(f"DRA policy ops must be the 16 DRA ops in order {list(DRA_OPS)} "
                          f"(optionally + {DESTRUCTIVE!r}), got {list(names)}")
    return names


# ----------------------------------------------------------------------------- magnitudes


def argument(name: str, value: float, height: int = 32, width: int = 32):
    """Host (float64) argument of DRA op `name` at signed magnitude `value` (unsigned ops use
    |value|); None for ops without a magnitude. See the module table."""
    m = abs(value)
    if name in ("ShearX", "ShearY"):
        return 0.3 * value
    if name in ("TranslateX", "TranslateY"):
        return 10.0 * value
    if name == "Rotate":
        return 30.0 * value
    if name in ("Brightness", "Color", "Sharpness", "Contrast"):
        return 1.0 + 0.9 * value
    if name == "Cutout":
        return int(max(height, width) * 0.2 * m)
    if name == "Solarize":
        return math.ceil(256.0 - 256.0 * m)
    if name == "Posterize":
        return math.ceil(8.0 - 4.0 * m)
    if name == "SolarizeAdd":
        return int(110.0 * m)
    if name == DESTRUCTIVE:
        return 1.0
    return None


def argument_device(name: str, m, sign, height: int, width: int):
    """`argument` on device: m float [...] in [0, 1], sign +-1 [...]; differentiable in m for
    the signed ops (the others are step functions of m)."""
    v = m * sign
    if name in ("ShearX", "ShearY"):
        return 0.3 * v
    if name in ("TranslateX", "TranslateY"):
        return 10.0 * v
    if name == "Rotate":
        return 30.0 * v
    if name in ("Brightness", "Color", "Sharpness", "Contrast"):
        return 1.0 + 0.9 * v
    if name == "Cutout":
        return jnp.floor(max(height, width) * 0.2 * m).astype(jnp.int32)
    if name == "Solarize":
        return jnp.ceil(256.0 - 256.0 * m).astype(jnp.int32)
    if name == "Posterize":
        return jnp.ceil(8.0 - 4.0 * m).astype(jnp.int32)
    if name == "SolarizeAdd":
        return jnp.floor(110.0 * m).astype(jnp.int32)
    return None


@dataclasses.dataclass(frozen=True)
class ReplaySpace(SearchSpace):
    """The DRA ops as a SearchSpace for the batched applier: 2 * grid + 1 levels, level l is the
    signed magnitude v = (l - grid) / grid (unsigned ops only use l >= grid); the magnitude table
    holds each op's argument at v for images of `height` x `width` (Cutout's side depends on it)."""
    dra_ops: tuple = DRA_OPS
    grid: int = GRID
    height: int = 32
    width: int = 32

    def magnitude_table(self) -> np.ndarray:
        v = (np.arange(self.num_levels) - self.grid) / self.grid
        table = np.full((len(self.ops), self.num_levels), np.nan)
        for i, name in enumerate(self.dra_ops):
            if name not in NO_MAGNITUDE or name == DESTRUCTIVE:
                table[i] = [argument(name, x, self.height, self.width) for x in v]
        return table

    def magnitude(self, op_index: int, level: int):
        self.check_levels(level)
        value = self.magnitude_table()[op_index, int(level)]
        return None if np.isnan(value) else float(value)


@functools.lru_cache(maxsize=16)
def replay_space(names: tuple = DRA_OPS, height: int = 32, width: int = 32,
                 grid: int = GRID) -> ReplaySpace:
    """The `ReplaySpace` of op list `names` for one image size."""
    space_ops = tuple(Op(OUR_NAME[n], None if n in NO_MAGNITUDE and n != DESTRUCTIVE
                         else Level(1.0)) for n in check_ops(names))
    return ReplaySpace("dra", space_ops, num_levels=2 * grid + 1, dra_ops=names, grid=grid,
                       height=height, width=width)


# ----------------------------------------------------------------------------- parameters


def init_params(num_ops: int = len(DRA_OPS), layers: int = LAYERS) -> dict:
    """The search's start: {"W": 1e-3, "M_MEAN": 0.5, "M_STD": 0.1}, float32 [layers, num_ops]."""
    if num_ops < 1 or layers < 1:
        raise ConfigError(f"a DRA policy needs >= 1 op and >= 1 layer, got {num_ops}, {layers}")
    return {k: jnp.full((layers, num_ops), v, jnp.float32) for k, v in INIT.items()}


def clip_params(params: dict) -> dict:
    """M_MEAN and M_STD clipped to [0, 1] (the authors clip before every use)."""
    return {"W": params["W"], "M_MEAN": jnp.clip(params["M_MEAN"], 0.0, 1.0),
            "M_STD": jnp.clip(params["M_STD"], 0.0, 1.0)}


def check_params(params: dict, num_ops: Optional[int] = None) -> None:
    """ConfigError unless W, M_MEAN, M_STD share one [L, A] shape (A = num_ops if given)."""
    if not isinstance(params, dict) or set(params) != {"W", "M_MEAN", "M_STD"}:
        raise ConfigError("a DRA policy is a dict with keys 'W', 'M_MEAN', 'M_STD'")
    shapes = {k: np.shape(v) for k, v in params.items()}
    if len(set(shapes.values())) != 1 or len(shapes["W"]) != 2:
        raise ConfigError(f"W, M_MEAN, M_STD must share one shape [layers, ops], got {shapes}")
    if num_ops is not None and shapes["W"][1] != num_ops:
        raise ConfigError(f"the DRA policy has {shapes['W'][1]} ops, expected {num_ops}")
    concrete = [v for v in params.values() if not ops.is_traced(v)]
    if not all(np.isfinite(np.asarray(v)).all() for v in concrete):
        raise ConfigError("a DRA policy must hold finite numbers")


def op_probability(params: dict, p_min: float = 0.2, p_max: float = 0.8) -> np.ndarray:
    """float64 [A]: the probability that an image gets op j applied (in at least one layer):
    1 - prod_l (1 - E[p] softmax(W[l])_j), E[p] = (p_min + p_max) / 2."""
    w = np.asarray(params["W"], np.float64)
    p_op = np.exp(w - w.max(axis=1, keepdims=True))
    p_op /= p_op.sum(axis=1, keepdims=True)
    return 1.0 - np.prod(1.0 - 0.5 * (p_min + p_max) * p_op, axis=0)


# ----------------------------------------------------------------------------- JSON


def to_json(params: dict, names=DRA_OPS, *, name: str = "searched", source: str = "") -> str:
    """The policy in the layout of ``tests/data/dra_policies.json``: {"ops", "policies": {name:
    {"W", "M_MEAN", "M_STD"}}} (plus "format" and "source"); M_MEAN and M_STD clipped."""
    names = check_ops(names)
    params = clip_params(jax.device_get(params))
    check_params(params, len(names))
    return json.dumps({
        "format": FORMAT, "source": source, "ops": list(names),
        "policies": {name: {k: np.asarray(params[k], np.float64).round(6).tolist()
                            for k in ("W", "M_MEAN", "M_STD")}},
    }, indent=1)


def load_policy(spec, name: Optional[str] = None) -> tuple:
    """(params dict of float32 arrays, op names) of a DRA policy.

    `spec`: a published name (`PUBLISHED`: "WRN-28-10 on CIFAR-10", ...; aliases "cifar10",
    "cifar100"), a path to a JSON file in that layout (``tests/data/dra_policies.json``
    itself, or a run's ``policy.json``; `name` picks the policy when it holds several), or a dict
    {"W", "M_MEAN", "M_STD"} (the 16 DRA ops, or 17 with the destructive op).
    """
    if isinstance(spec, dict):
        params = {k: np.asarray(v, np.float32) for k, v in spec.items()}
        check_params(params)
        names = DRA_OPS + ((DESTRUCTIVE,) if params["W"].shape[1] == len(DRA_OPS) + 1 else ())
        check_params(params, len(check_ops(names)))
        return {k: jnp.asarray(v) for k, v in params.items()}, names
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"a DRA policy is a published name, a JSON path or a dict, got {spec!r}")
    spec = ALIASES.get(spec, spec)
    if spec in PUBLISHED:
        data = {"ops": list(DRA_OPS), "policies": {spec: PUBLISHED[spec]}}
        name = spec
    elif os.path.isfile(spec):
        try:
            with open(spec, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read DRA policy {spec!r}: {e}") from e
    else:
        raise ConfigError(f"unknown DRA policy {spec!r}: not a published one "
                          f"({', '.join(list(ALIASES) + list(PUBLISHED))}) nor a file")
    if "policies" not in data or "ops" not in data:
        raise ConfigError(f"{spec!r} is not in the DRA policy layout ('ops', 'policies')")
    policies = data["policies"]
    if name is None:
        if len(policies) != 1:
            raise ConfigError(f"{spec!r} holds {len(policies)} DRA policies; name one of "
                              f"{sorted(policies)}")
        name = next(iter(policies))
    if name not in policies:
        raise ConfigError(f"no DRA policy {name!r} in {spec!r}; it has {sorted(policies)}")
    names = check_ops(data["ops"])
    params = {k: np.asarray(policies[name][k], np.float32) for k in ("W", "M_MEAN", "M_STD")}
    check_params(params, len(names))
    return {k: jnp.asarray(v) for k, v in params.items()}, names


# ----------------------------------------------------------------------------- replay


def sample_slots(params: dict, key, batch_size: int, *, signed: np.ndarray,
                 p_min: float = 0.2, p_max: float = 0.8, grid: int = GRID) -> tuple:
    """Per image and layer: op ~ Categorical(W[l]), m ~ N(M_MEAN, M_STD) clipped to [0, 1],
    sign +-1 (signed ops), fires with p ~ U(p_min, p_max).

    Returns (op_indices int32 [B, L], levels int32 [B, L] on the 2 grid + 1 level grid, active
    bool [B, L]) for `apply_sequence` with `replay_space`.
    """
    params = clip_params(params)
    layers = params["W"].shape[0]
    k_op, k_eps, k_sign, k_p, k_fire = jax.random.split(key, 5)
    shape = (batch_size, layers)
    op = jax.random.categorical(k_op, params["W"][None], axis=-1, shape=shape).astype(jnp.int32)
    layer = jnp.arange(layers)[None, :]
    mean, std = params["M_MEAN"][layer, op], params["M_STD"][layer, op]
    m = jnp.clip(mean + std * jax.random.normal(k_eps, shape), 0.0, 1.0)
    negative = jax.random.bernoulli(k_sign, 0.5, shape) & jnp.asarray(signed)[op]
    v = jnp.where(negative, -m, m)
    levels = grid + jnp.round(v * grid).astype(jnp.int32)
    p = jax.random.uniform(k_p, shape, minval=p_min, maxval=p_max)
    active = jax.random.uniform(k_fire, shape) < p
    return op, levels, active


@dataclasses.dataclass(frozen=True)
class ReplayPolicy:
    """A fixed DRA policy: ``policy(key, images uint8 [B, H, W, C]) -> uint8`` (Pillow-exact ops
    on the magnitude grid); ``policy.sample(key, B)`` exposes the draws of the sample key."""
    params: dict
    names: tuple
    p_min: float = 0.2
    p_max: float = 0.8
    grid: int = GRID

    def __hash__(self):
        return id(self)

    @property
    def signed(self) -> np.ndarray:
        return np.array([n in SIGNED for n in self.names])

    def sample(self, key, batch_size: int):
        return sample_slots(self.params, key, batch_size, signed=self.signed, p_min=self.p_min,
                            p_max=self.p_max, grid=self.grid)

    def __call__(self, key, images):
        ops.check_image(images, rank=4, uint8_only=True, what="images")
        b, h, w, _ = images.shape
        k_sample, k_apply = jax.random.split(key)
        op_indices, levels, active = self.sample(k_sample, b)
        space = replay_space(self.names, h, w, self.grid)
        return apply_sequence(space, k_apply, images, op_indices, levels, active)


def replay_policy(policy="cifar10", *, name: Optional[str] = None, p_min: float = 0.2,
                  p_max: float = 0.8, grid: int = GRID) -> ReplayPolicy:
    """The fixed policy of a DRA policy (`load_policy` spec: published name, JSON path or dict)."""
    check_probability_range(p_min, p_max)
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ConfigError(f"grid must be an integer >= 1, got {grid!r}")
    params, names = load_policy(policy, name)
    return ReplayPolicy(params, names, float(p_min), float(p_max), grid)


def check_probability_range(p_min, p_max) -> None:
    if not 0.0 <= p_min <= p_max <= 1.0:
        raise ConfigError(f"DRA apply probability range needs 0 <= p_min <= p_max <= 1, got "
                          f"[{p_min}, {p_max}]")


# ----------------------------------------------------------------------------- search


def gumbel_one_hot(key, logits, tau: float):
    """Hard Gumbel-softmax over the last axis: (one-hot float [..., A] whose gradient is that of
    softmax((logits + g) / tau) (straight-through), index int32 [...]). The index is distributed
    as Categorical(softmax(logits)) whatever tau."""
    g = jax.random.gumbel(key, logits.shape, logits.dtype)
    soft = jax.nn.softmax((logits + g) / tau, axis=-1)
    index = jnp.argmax(logits + g, axis=-1).astype(jnp.int32)
    hard = jax.nn.one_hot(index, logits.shape[-1], dtype=soft.dtype)
    return hard + (soft - jax.lax.stop_gradient(soft)), index


def _warp_and_blend(names: tuple, x_m, op, m, sign):
    """The signed ops (geometric and enhancers) in float, for every image at once, as the
    authors' TF ops differentiate: one bilinear warp of the input x_m with a per-image matrix
    (identity for non-geometric ops) whose argument is built from stop_gradient(m) (TF's
    projective transform has no gradient in the transform), then one blend
    ``clip(D + f (x - D))`` with a per-image degenerate image D of x_m and a factor f(m) that
    carries the analytic gradient (TF's blend is differentiable in f). x_m float32 [N, H, W, C],
    op int32 [N], m float [N], sign [N] -> float32 [N, H, W, C]."""
    n, h, w, _ = x_m.shape
    m_fixed = jax.lax.stop_gradient(m)
    geometric = [(j, nm) for j, nm in enumerate(names) if nm in SIGNED and
                 OUR_NAME[nm] in ops.GEOMETRIC_OPS]
    matrix = jnp.broadcast_to(jnp.asarray(affine.IDENTITY_MATRIX, jnp.float32), (n, 6))
    for j, nm in geometric:
        arg = argument_device(nm, m_fixed, sign, h, w)
        mat = affine.op_matrix_device(OUR_NAME[nm], arg, h, w).T  # [N, 6]
        matrix = jnp.where((op == j)[:, None], mat, matrix)
    warped = jax.vmap(affine.warp_bilinear)(x_m, matrix)
    planar = jnp.moveaxis(warped, -1, 1)
    gray = color.grayscale(planar, exact=False)  # [N, H, W]
    smoothed, _ = color.smooth_and_blur(planar, exact=False)
    degenerate = {"Brightness": jnp.zeros_like(warped),
                  "Contrast": jnp.broadcast_to(jnp.mean(gray, axis=(1, 2))[:, None, None, None],
                                               warped.shape),
                  "Color": jnp.broadcast_to(gray[..., None], warped.shape),
                  "Sharpness": jnp.moveaxis(smoothed, 1, -1)}
    out = warped
    for j, nm in enumerate(names):
        if nm in degenerate:
            factor = argument_device(nm, m, sign, h, w)[:, None, None, None]
            blended = _clip255(degenerate[nm] + factor * (warped - degenerate[nm]))
            out = jnp.where((op == j)[:, None, None, None], blended, out)
    return out


def _clip255(v):
    """v clipped to [0, 255] with TF's clip_by_value gradient: 1 on the closed interval, 0
    outside (jnp.clip gives 1/2 at the bounds, where digits' 0 pixels lie)."""
    return jnp.where(v < 0.0, 0.0, jnp.where(v > 255.0, 255.0, v))


def _autocontrast_float(x):
    """TF's float autocontrast per image and channel: (x - lo) 255 / (hi - lo) clipped, x where
    hi == lo; x float [N, H, W, C]."""
    lo = jnp.min(x, axis=(1, 2), keepdims=True)
    hi = jnp.max(x, axis=(1, 2), keepdims=True)
    span = jnp.where(hi > lo, hi - lo, 1.0)
    return jnp.where(hi > lo, _clip255((x - lo) * (255.0 / span)), x)


def apply_ops(names: tuple, key, x, op, m, sign, grid: int = GRID):
    """DRA op ``names[op[i]]`` on image i at magnitude m[i] in [0, 1] and sign[i] (+-1), with
    the authors' gradients (ainieli/DRA ``auto_augment/dra.py`` ``apply_op``).

    The authors feed each op ``x_m = x + m - stop_gradient(m)`` (the straight-through term at
    the op's input), so dL/dm is the op's input gradient summed over pixels, plus the op's own
    gradient in its argument where TF has one. Here:

    - geometric ops: bilinear warp of x_m, matrix from stop_gradient(m) (no gradient in the
      transform, as TF's ImageProjectiveTransformV2); enhancers: blend of x_m, analytic in the
      factor (`_warp_and_blend`); SolarizeAdd: ``where(x < 128, clip(x_m + 110 m, 0, 255),
      x_m)`` in float (the authors' float addition, differentiable in m);
    - the other ops: forward Pillow-exact through the shared applier (input rounded, magnitude
      on the `GRID` grid), backward that of the authors' TF op in x_m, by adding
      ``f(x_m) - stop_gradient(f(x_m))`` with f: Cutout ``mask x_m``, Solarize ``x_m`` below the
      threshold and ``255 - x_m`` above, Posterize and Equalize ``x_m`` (their custom identity
      gradients), AutoContrast the float autocontrast of x_m (whose sum over a uniform shift is
      0: its magnitude learns nothing, as in the published policies where it stays at 0.5 /
      0.1), Invert ``255 - x_m``, SamplePairing (alpha 1, not an op of the authors) the batch
      neighbour's input ``roll(x)``.

    x float [N, H, W, C] (0..255); returns float32 [N, H, W, C] differentiable in x and m.
    Only each image's own op is computed (a per-image op index into one applier slot and one
    warp + blend), so the cost does not grow with the number of ops.
    """
    n, h, w, _ = x.shape
    x = x.astype(jnp.float32)
    x_m = x + (m - jax.lax.stop_gradient(m))[:, None, None, None]
    space = replay_space(tuple(names), h, w, grid)
    exact = jnp.clip(jnp.round(jax.lax.stop_gradient(x)), 0, 255).astype(jnp.uint8)
    levels = grid + jnp.round(jax.lax.stop_gradient(m) * grid).astype(jnp.int32)
    y = apply_sequence(space, key, exact, op[:, None], levels[:, None],
                       jnp.ones((n, 1), bool)).astype(jnp.float32)
    integer = jnp.asarray(applier_tables(space, h, w)["integer"])[op, levels, 0]  # [N]
    pixels = exact.astype(jnp.float32)
    select = (lambda j: (op == j)[:, None, None, None])
    f = x_m  # Posterize, Equalize: the identity gradient
    for j, nm in enumerate(names):
        if nm == "Cutout":
            _, center = slot_randomness(key, n, 1, h, w)
            ones = jnp.ones((n, 1, h, w), jnp.float32)
            mask = jnp.moveaxis(color.cutout(ones, integer, center[:, 0, 0], center[:, 0, 1]),
                                1, -1)
            f = jnp.where(select(j), mask * x_m, f)
        elif nm == "Solarize":
            below = pixels < integer[:, None, None, None]
            f = jnp.where(select(j), jnp.where(below, x_m, 255.0 - x_m), f)
        elif nm == "Invert":
            f = jnp.where(select(j), 255.0 - x_m, f)
        elif nm == "AutoContrast":
            f = jnp.where(select(j), _autocontrast_float(x_m), f)
        elif nm == DESTRUCTIVE:
            # alpha 1: the output is the neighbour's input (no gradient to this image's m)
            f = jnp.where(select(j), jnp.roll(x, 1, axis=0), f)
    y = y + (f - jax.lax.stop_gradient(f))
    if any(nm in SIGNED for nm in names):
        signed = jnp.asarray([nm in SIGNED for nm in names])[op]
        y = jnp.where(signed[:, None, None, None], _warp_and_blend(tuple(names), x_m, op, m, sign),
                      y)
    if "SolarizeAdd" in names:
        added = jnp.where(x < 128.0, _clip255(x_m + 110.0 * m[:, None, None, None]), x_m)
        y = jnp.where(select(names.index("SolarizeAdd")), added, y)
    return y


def search_augment(params: dict, key, images, *, names=DRA_OPS, tau: float = 0.5,
                   p_min: float = 0.2, p_max: float = 0.8) -> tuple:
    """The relaxed DRA layers on a batch, per image as the authors draw them (module docstring),
    differentiable in `params`.

    Args:
      params: {"W", "M_MEAN", "M_STD"} float32 [L, A] (M_* are clipped to [0, 1] here).
      key: jax.random key; the same key gives the same batch.
      images: [B, H, W, C] uint8 or float (0..255).
      names: the A op names (`DRA_OPS`, optionally + DESTRUCTIVE).
    Returns:
      (float32 [B, H, W, C] augmented images, {"op": int32 [B, L] chosen ops, "fired": bool
       [B, L], "magnitude": float32 [B, L]}).
    """
    ops.check_image(images, rank=4, what="images")
    check_params(params, len(names))
    params = clip_params(params)
    x = jnp.asarray(images).astype(jnp.float32)
    b = x.shape[0]
    layers, num_ops = params["W"].shape

    def layer(x, inputs):  # one DRA layer; scanned over the layers so it is compiled once
        w, mu, sigma, k = inputs
        k_g, k_p, k_fire, k_eps, k_sign, k_op = jax.random.split(k, 6)
        # Per image: the hard Gumbel-softmax op, p ~ U(p_min, p_max), the firing, eps, the sign.
        onehot, index = gumbel_one_hot(k_g, jnp.broadcast_to(w, (b, num_ops)), tau)
        p = jax.random.uniform(k_p, (b,), minval=p_min, maxval=p_max)
        fired = jax.random.uniform(k_fire, (b,)) < p
        eps = jax.random.normal(k_eps, (b,))
        sign = jnp.where(jax.random.bernoulli(k_sign, 0.5, (b,)), -1.0, 1.0)
        m = jnp.clip(mu[index] + eps * sigma[index], 0.0, 1.0)
        y = apply_ops(names, k_op, x, index, m, sign)  # only each image's own op
        y = jnp.where(fired[:, None, None, None], y, x)
        weight = jnp.take_along_axis(onehot, index[:, None], axis=1)[:, 0]
        rest = jnp.sum(onehot, axis=1) - weight
        # sum_j hardwts_j (op_j(x) if j is chosen else 1): the other ops' terms are zero
        # forward and give W the gradient <dL/dy, 1> (the authors' ones_like(x) * hardwts[j]).
        x = weight[:, None, None, None] * y + rest[:, None, None, None]
        return x, (index, fired, m)

    keys = jax.random.split(key, layers)
    x, (index, fired, m) = jax.lax.scan(
        layer, x, (params["W"], params["M_MEAN"], params["M_STD"], keys))
    last = (lambda v: jnp.moveaxis(v, 0, -1))  # [L, B] -> [B, L]
    return x, {"op": last(index), "fired": last(fired), "magnitude": last(m)}
