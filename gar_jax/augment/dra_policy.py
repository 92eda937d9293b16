"""Differentiable RandAugment (DRA, Xiao et al. 2023, docs/algorithms.md §8; ainieli/DRA): op
table, relaxed search sampler, fixed replay of a learned policy, and the policy JSON.

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
FlipLR, FlipUD flip_lr, flip_ud,           no magnitude (not DRA's: `EXTRA_OPS`, added by
Rotate90/180/  rotate_90/180/270           ``config.dra.extra_ops``; search: x_m permuted the
270                                        same way)
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
# Ops a search may add after the 16 (none is DRA's): the planted op and three without magnitude.
EXTRA_OPS = (DESTRUCTIVE, "FlipLR", "FlipUD", "Rotate90", "Rotate180", "Rotate270")
OUR_NAME = {"ShearX": "shear_x", "ShearY": "shear_y", "TranslateX": "translate_x",
            "TranslateY": "translate_y", "Rotate": "rotate", "Brightness": "brightness",
            "Color": "color", "Sharpness": "sharpness", "Contrast": "contrast", "Cutout": "cutout",
            "Solarize": "solarize", "Posterize": "posterize", "Equalize": "equalize",
            "AutoContrast": "auto_contrast", "Invert": "invert", "SolarizeAdd": "solarize_add",
            DESTRUCTIVE: "sample_pairing", "FlipLR": "flip_lr", "FlipUD": "flip_ud",
            "Rotate90": "rotate_90", "Rotate180": "rotate_180", "Rotate270": "rotate_270"}
SIGNED = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
                    "Color", "Sharpness", "Contrast"})
NO_MAGNITUDE = frozenset({"Equalize", "AutoContrast", "Invert", *EXTRA_OPS})
GRID = 1000
LAYERS = 2
INIT = {"W": 1e-3, "M_MEAN": 0.5, "M_STD": 0.1}
FORMAT = "gar_jax.dra_policy/1"

# The published CIFAR policies of ainieli/DRA policy.py (also in tests/data/dra_policies.json, the
# authors' layout), data: {name: {"W", "M_MEAN", "M_STD": [L][A] lists}}.
PUBLISHED_FILE = os.path.join(os.path.dirname(__file__), "data", "dra_policies.json")
with open(PUBLISHED_FILE, encoding="utf-8") as _f:
    PUBLISHED = json.load(_f)["policies"]
ALIASES = {"cifar10": "WRN-28-10 on CIFAR-10", "cifar100": "WRN-28-10 on CIFAR-100"}


def check_ops(names) -> tuple:
    """The op names as a tuple; ConfigError unless they are DRA's 16 in order, then optionally
    some of `EXTRA_OPS` (each once)."""
    names = tuple(names)
    extra = names[len(DRA_OPS):]
    if (names[:len(DRA_OPS)] != DRA_OPS or any(n not in EXTRA_OPS for n in extra)
            or len(set(extra)) != len(extra)):
        raise ConfigError(f"DRA policy ops must be the 16 DRA ops in order {list(DRA_OPS)} "
                          f"(optionally + some of {list(EXTRA_OPS)}, each once), got "
                          f"{list(names)}")
    return names


# ----------------------------------------------------------------------------- magnitudes


# Signed ops: argument = offset + scale * s m (the module table).
_LINEAR = {"ShearX": (0.0, 0.3), "ShearY": (0.0, 0.3), "TranslateX": (0.0, 10.0),
           "TranslateY": (0.0, 10.0), "Rotate": (0.0, 30.0), "Brightness": (1.0, 0.9),
           "Color": (1.0, 0.9), "Sharpness": (1.0, 0.9), "Contrast": (1.0, 0.9)}


def _argument(name: str, m, sign, height: int, width: int, xp):
    """The magnitude -> argument map once, for numpy (host) or jax.numpy (device) `xp`; the
    integer arguments come back as floats of integer value, None without a magnitude."""
    if name in _LINEAR:
        offset, scale = _LINEAR[name]
        return offset + scale * (m * sign)
    if name == "Cutout":
        return xp.floor(max(height, width) * 0.2 * m)
    if name == "Solarize":
        return xp.ceil(256.0 - 256.0 * m)
    if name == "Posterize":
        return xp.ceil(8.0 - 4.0 * m)
    if name == "SolarizeAdd":
        return xp.floor(110.0 * m)
    return None


def argument(name: str, value: float, height: int = 32, width: int = 32):
    """Host (float64) argument of DRA op `name` at signed magnitude `value` (unsigned ops use
    |value|); None for ops without a magnitude. See the module table."""
    if name == DESTRUCTIVE:
        return 1.0
    out = _argument(name, abs(value), 1.0 if value >= 0 else -1.0, height, width, np)
    return out if out is None or name in _LINEAR else int(out)


def argument_device(name: str, m, sign, height: int, width: int):
    """`argument` on device: m float [...] in [0, 1], sign +-1 [...]; differentiable in m for
    the signed ops (the others are step functions of m)."""
    out = _argument(name, m, sign, height, width, jnp)
    return out if out is None or name in _LINEAR else out.astype(jnp.int32)


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
        elif nm in ("FlipLR", "FlipUD", "Rotate180"):
            # pixel permutations: the input gradient of x_m permuted back (m learns its sum)
            axes = {"FlipLR": (2,), "FlipUD": (1,), "Rotate180": (1, 2)}[nm]
            f = jnp.where(select(j), jnp.flip(x_m, axes), f)
        elif nm in ("Rotate90", "Rotate270") and h == w:
            # Pillow's rotate(90) is counter-clockwise: out[i, j] = in[j, W - 1 - i]
            f = jnp.where(select(j), jnp.rot90(x_m, 1 if nm == "Rotate90" else 3, axes=(1, 2)),
                          f)
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
