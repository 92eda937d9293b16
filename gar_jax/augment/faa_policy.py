"""Fast AutoAugment (Lim et al. 2019) policies: op semantics, JSON files, replay on device.

A policy is a tuple of sub-policies; a sub-policy is a tuple of ``(op, probability, level)``
steps with probability and level in [0, 1] and op one of `FAA_OPS` (FAA's names). Per image one
sub-policy is drawn uniformly and each of its steps fires with its probability, in order. A level
maps linearly onto the op's range, ``magnitude = level * (high - low) + low`` (`RANGES`), with
FAA's semantics, which differ from our other spaces (data/fast_autoaugment_policies.json):

- ShearX/Y (coefficient, +-0.3), TranslateX/Y (a FRACTION of the width/height, +-0.45) and Rotate
  (+-30 degrees) negate their magnitude with probability 1/2; translations are ``v * size`` px.
- Solarize thresholds at ``v`` (a float: pixel i is inverted iff i >= v), Posterize keeps
  ``int(v)`` bits, the enhancers take the factor ``v`` (a C float, as Pillow).
- Cutout: ``v * width`` px (0 < v <= 0.2); FAA draws a float centre ``cx = np.random.uniform(w)``,
  which numpy reads as ``uniform(low=w, high=1.0)``: uniform on (1, w], not [0, w) (the centre
  never falls in the first pixel column / row); matched here. It fills the Pillow rectangle
  ``(x0, y0, min(w, x0 + v), min(h, y0 + v))`` with x0 = int(max(0, cx - v/2)) (inclusive
  corners, so int(v) + 1 pixels a side before clipping) with RGB (125, 123, 114); gray images
  get that colour's Pillow luma, 123.
- SamplePairing is our planted destructive op (spaces.DESTRUCTIVE_OP): alpha 1, the level is
  ignored; it replaces the image by its batch neighbour. It is not one of FAA's 15 ops.
- FlipLR, FlipUD, Rotate90/180/270 (`EXTRA_OPS`, not FAA's either) are the library's flip_lr,
  flip_ud, rotate_90/180/270 (Pillow's mirror, flip, rotate(90/180/270)); the level is ignored. A search space adds them
  (and SamplePairing) with ``config.faa.extra_ops`` (the hostile space of experiments/compare).

Replay (`FaaPolicy`) runs on the shared batched slot applier (applier.py): each step is one slot
whose per-image parameters (warp coefficients, lookup-table code, blend factor) are gathered from
small tables built on the host in float64 from the policy's continuous magnitudes, exactly as
Pillow receives them. So a policy with arbitrary float levels costs what a discrete space costs
and equals Pillow pixel for pixel (tests/test_faa.py); only Cutout, whose geometry and fill
differ from the library's, is applied by this module after each slot.
"""
import dataclasses
import json
import math
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from gar_jax import files
from gar_jax.augment import affine
from gar_jax.augment import applier
from gar_jax.augment import color
from gar_jax.augment import ops
from gar_jax.errors import ConfigError

# FAA's 15 ops and ranges (FastAutoAugment/augmentations.py: augment_list), in its order.
RANGES = {
    "ShearX": (-0.3, 0.3), "ShearY": (-0.3, 0.3), "TranslateX": (-0.45, 0.45),
    "TranslateY": (-0.45, 0.45), "Rotate": (-30.0, 30.0), "AutoContrast": (0.0, 1.0),
    "Invert": (0.0, 1.0), "Equalize": (0.0, 1.0), "Solarize": (0.0, 256.0),
    "Posterize": (4.0, 8.0), "Contrast": (0.1, 1.9), "Color": (0.1, 1.9),
    "Brightness": (0.1, 1.9), "Sharpness": (0.1, 1.9), "Cutout": (0.0, 0.2),
}
FAA_OPS = tuple(RANGES)
DESTRUCTIVE = "SamplePairing"  # the planted op (alpha 1), only where a search space adds it
# Ops outside FAA's 15 that a search space may add, without magnitude: FAA name -> ops name.
EXTRA_OPS = {DESTRUCTIVE: "sample_pairing", "FlipLR": "flip_lr", "FlipUD": "flip_ud",
             "Rotate90": "rotate_90", "Rotate180": "rotate_180", "Rotate270": "rotate_270"}
ALL_OPS = FAA_OPS + tuple(EXTRA_OPS)
# FAA name -> gar_jax.augment.ops name (the names of results.json's op_probability).
OP_NAME = {
    "ShearX": "shear_x", "ShearY": "shear_y", "TranslateX": "translate_x",
    "TranslateY": "translate_y", "Rotate": "rotate", "AutoContrast": "auto_contrast",
    "Invert": "invert", "Equalize": "equalize", "Solarize": "solarize", "Posterize": "posterize",
    "Contrast": "contrast", "Color": "color", "Brightness": "brightness",
    "Sharpness": "sharpness", "Cutout": "cutout", **EXTRA_OPS,
}
SIGNED = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"})
CUTOUT_FILL = (125, 123, 114)
CUTOUT_FILL_GRAY = 123  # Image.new("RGB", (1, 1), CUTOUT_FILL).convert("L"): ITU-R 601 luma
PUBLISHED_FILE = os.path.join(os.path.dirname(__file__), "data", "fast_autoaugment_policies.json")
FORMAT = ("each policy is a list of sub-policies; a sub-policy is a list of [op, probability, "
          "level] with probability and level in [0, 1]. Per image one sub-policy is drawn "
          "uniformly; each of its ops fires with its probability; magnitude = level * (high - "
          "low) + low with (low, high) from op_ranges.")


def magnitude(op: str, level: float, height: int, width: int) -> float:
    """Host float64 magnitude of ``op`` at ``level`` in the unit of ``ops.apply`` (unsigned).

    Translations and Cutout come out in pixels (FAA's fractions times the width/height; Cutout
    uses the width for both sides, as FAA); SamplePairing is alpha 1.
    """
    if op in EXTRA_OPS:
        return 1.0 if op == DESTRUCTIVE else 0.0
    low, high = RANGES[op]
    v = float(level) * (high - low) + low
    if op in ("TranslateX", "Cutout"):
        return v * width
    if op == "TranslateY":
        return v * height
    return v


# ----------------------------------------------------------------------------------------------
# Policies as data: validation and JSON in the reference layout.

def check_policy(policy, *, allowed=ALL_OPS, what: str = "FAA policy") -> tuple:
    """The policy as a tuple of tuples of (op, float p, float level); ConfigError if malformed."""
    if isinstance(policy, (str, bytes)) or not hasattr(policy, "__len__") or not len(policy):
        raise ConfigError(f"{what} must be a non-empty list of sub-policies, got {policy!r:.80}")
    out = []
    for s, sub in enumerate(policy):
        if isinstance(sub, (str, bytes)) or not hasattr(sub, "__len__") or not len(sub):
            raise ConfigError(f"{what}: sub-policy {s} must be a non-empty list of "
                              f"[op, probability, level], got {sub!r:.80}")
        steps = []
        for step in sub:
            if isinstance(step, (str, bytes)) or len(step) != 3:
                raise ConfigError(f"{what}: sub-policy {s}: each step is [op, probability, "
                                  f"level], got {step!r:.80}")
            op, p, level = step
            if op not in allowed:
                raise ConfigError(f"{what}: sub-policy {s}: unknown op {op!r}; known: "
                                  f"{', '.join(allowed)}")
            for name, v in (("probability", p), ("level", level)):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                    raise ConfigError(f"{what}: sub-policy {s}: {op} {name} must be a number "
                                      f"in [0, 1], got {v!r}")
            steps.append((op, float(p), float(level)))
        out.append(tuple(steps))
    return tuple(out)


def to_json(policies: dict, source: str) -> dict:
    """{name: policy} in the layout of data/fast_autoaugment_policies.json."""
    checked = {name: check_policy(p, what=f"policy {name!r}") for name, p in policies.items()}
    return {
        "source": source, "format": FORMAT,
        "op_ranges": {**{k: list(v) for k, v in RANGES.items()}, DESTRUCTIVE: [1.0, 1.0],
                      **{k: [0.0, 0.0] for k in EXTRA_OPS if k != DESTRUCTIVE}},
        "sizes": {name: len(p) for name, p in checked.items()},
        "policies": {name: [[list(step) for step in sub] for sub in p]
                     for name, p in checked.items()},
    }


def save(path: str, policies: dict, source: str) -> None:
    """Writes {name: policy} as JSON in the reference layout (atomically)."""
    files.write_json(path, to_json(policies, source))


def load(path: str, name: Optional[str] = None) -> tuple:
    """One policy of a JSON file in the reference layout (``name`` may be left out if it holds
    one); ConfigError for a missing file, a bad layout, an unknown name or op."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read FAA policy file {path!r}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("policies"), dict):
        raise ConfigError(f"{path}: not an FAA policy file (no 'policies' object)")
    policies = data["policies"]
    if name is None:
        if len(policies) != 1:
            raise ConfigError(f"{path} holds {len(policies)} policies ({', '.join(policies)}): "
                              "name one, e.g. policy='path.json:name'")
        name = next(iter(policies))
    if name not in policies:
        raise ConfigError(f"{path}: no policy {name!r}; it holds {', '.join(policies)}")
    return check_policy(policies[name], what=f"{path}:{name}")


def published_names() -> tuple:
    with open(PUBLISHED_FILE, encoding="utf-8") as f:
        return tuple(json.load(f)["policies"])


def resolve(policy) -> tuple:
    """A policy from a published name ("fa_reduced_cifar10", "fa_resnet50_rimagenet",
    "fa_reduced_svhn"), a file "path.json" or "path.json:name", or the policy itself."""
    if not isinstance(policy, str):
        return check_policy(policy)
    if policy in published_names():
        return load(PUBLISHED_FILE, policy)
    path, name = policy, ""
    if not path.endswith(".json") and ".json:" in path:
        path, name = policy.rsplit(":", 1)
    if not path.endswith(".json"):
        raise ConfigError(f"FAA policy {policy!r} is neither a published policy "
                          f"({', '.join(published_names())}) nor a .json file")
    return load(path, name or None)


def op_probability(policy, search_ops=None) -> dict:
    """{ops name: probability that an image gets that op} under the policy (exact).

    An image draws one of the S sub-policies uniformly; it gets op o from sub-policy s unless
    every step of s using o skips: 1 - prod(1 - p). Reported: FAA's 15 ops and the extra ops the
    policy uses, or exactly ``search_ops`` (FAA names, unused ones at 0) when given.
    """
    policy = check_policy(policy)
    total = {}
    for sub in policy:
        for op in dict.fromkeys(o for o, _, _ in sub):
            skip = math.prod(1.0 - p for o, p, _ in sub if o == op)
            total[OP_NAME[op]] = total.get(OP_NAME[op], 0.0) + (1.0 - skip) / len(policy)
    listed = search_ops if search_ops is not None else [
        o for o in ALL_OPS if o in FAA_OPS or OP_NAME[o] in total]
    return {OP_NAME[o]: total.get(OP_NAME[o], 0.0) for o in listed}


def remove_duplicates(sub_policies) -> list:
    """Drops sub-policies whose op sequence already occurred (FAA's remove_deplicates)."""
    seen, out = set(), []
    for sub in sub_policies:
        key = tuple(op for op, _, _ in sub)
        if key not in seen:
            seen.add(key)
            out.append(sub)
    return out


# ----------------------------------------------------------------------------------------------
# Device tables and replay.

def tables(policy, height: int, width: int) -> dict:
    """Host tables of a policy with S sub-policies of K steps (all sub-policies need K steps).

    Returns numpy arrays indexed [S, K] (and sign 0: +, 1: - for the warp):
      fixed int32 [S, K, 2, 6] 16.16 warp coefficients (identity for non-geometric ops);
      factor float32 blend t (enhancers; 1 for SamplePairing); integer int32 (solarize
      threshold ceil(v), posterize bits); lut_code, blend_code int32; pairing bool;
      cutout float32 side in px (0: none); probability float32.
    """
    policy = check_policy(policy)
    if len({len(sub) for sub in policy}) != 1:
        raise ConfigError("FAA replay needs sub-policies of one length, got lengths "
                          f"{sorted({len(sub) for sub in policy})}")
    s, k = len(policy), len(policy[0])
    identity = affine.fixed_point(affine.IDENTITY_MATRIX)
    out = {
        "fixed": np.broadcast_to(identity, (s, k, 2, 6)).copy(),
        "factor": np.zeros((s, k), np.float32), "integer": np.zeros((s, k), np.int32),
        "lut_code": np.zeros((s, k), np.int32), "blend_code": np.zeros((s, k), np.int32),
        "pairing": np.zeros((s, k), bool), "cutout": np.zeros((s, k), np.float32),
        "probability": np.zeros((s, k), np.float32),
    }
    for i, sub in enumerate(policy):
        for j, (op, p, level) in enumerate(sub):
            name, v = OP_NAME[op], magnitude(op, level, height, width)
            out["probability"][i, j] = p
            if name in ops.GEOMETRIC_OPS:
                for sign_index, sign in enumerate((1.0, -1.0)):
                    out["fixed"][i, j, sign_index] = affine.fixed_point(
                        affine.op_matrix(name, sign * v, height, width))
            elif name in ops.ENHANCERS or name == "sample_pairing":
                out["factor"][i, j] = np.float32(v)  # Pillow passes a C float
                out["blend_code"][i, j] = applier.blend_code(name)
                out["pairing"][i, j] = name == "sample_pairing"
            elif name in ops.LUT_OPS:
                out["lut_code"][i, j] = applier.lut_code(name)
                # Pillow's solarize inverts i >= v for a float v: i.e. i >= ceil(v).
                out["integer"][i, j] = math.ceil(v) if name == "solarize" else int(v)
            elif name == "cutout":
                out["cutout"][i, j] = v if level > 0 else 0.0
    return out


def policy_names(policy) -> frozenset:
    """The ops.apply names a policy uses (selects the passes the slot applier compiles)."""
    return frozenset(OP_NAME[op] for sub in check_policy(policy) for op, _, _ in sub)


def draw(key, probability):
    """One image's random draws under a policy whose steps fire with ``probability`` [S, K].

    Returns {sub int32 []: the sub-policy, fire bool [K], negate bool [K]: sign flips of the
    signed ops, centre float32 [K, 2]: the uniform [0, 1) draws u of the Cutout (y, x) centre,
    which `cutout_box` maps as numpy maps FAA's ``np.random.uniform(size)``}. Keys are per
    image, so one image's draws do not depend on its batch (the slow references in the tests rely on it).
    """
    k_sub, k_fire, k_sign, k_cut = jax.random.split(key, 4)
    steps = probability.shape[1]
    sub = jax.random.randint(k_sub, (), 0, probability.shape[0])
    return {"sub": sub, "fire": jax.random.uniform(k_fire, (steps,)) < probability[sub],
            "negate": jax.random.bernoulli(k_sign, 0.5, (steps,)),
            "centre": jax.random.uniform(k_cut, (steps, 2))}


def sample(tab: dict, key, batch_size: int) -> dict:
    """`draw` for ``batch_size`` images (keys ``split(key, batch_size)``), batched [B, ...]."""
    return jax.vmap(lambda k: draw(k, tab["probability"]))(jax.random.split(key, batch_size))


def cutout_box(size_px, centre, height: int, width: int):
    """FAA's CutoutAbs as (side int32, top, left) of an inclusive Pillow rectangle.

    size_px: float side v (0: none); centre: float (y, x) uniform [0, 1) draws u. FAA draws
    ``cx = np.random.uniform(w)``: numpy's ``uniform(low, high=1.0)`` is ``low + (high - low) u``,
    so cx = w + (1 - w) u, uniform on (1, w] (its low/high read backwards); then
    x0 = int(max(0, cx - v/2)) and fills x0..min(w, x0 + v) inclusive, i.e. int(v) + 1 columns
    from x0, clipped at the border.
    """
    v = jnp.asarray(size_px, jnp.float32)
    cy = height + (1.0 - height) * centre[..., 0]
    cx = width + (1.0 - width) * centre[..., 1]
    top = jnp.floor(jnp.maximum(0.0, cy - v / 2)).astype(jnp.int32)
    left = jnp.floor(jnp.maximum(0.0, cx - v / 2)).astype(jnp.int32)
    side = jnp.where(v > 0, jnp.floor(v).astype(jnp.int32) + 1, 0)
    return side, top, left


def apply_draws(tab: dict, names: frozenset, images, draws: dict, group: Optional[int] = None):
    """Applies drawn steps to uint8 images [B, H, W, C]; uint8 out.

    tab: device tables of `tables` [R, K, ...]; draws: batched `draw` outputs whose ``sub``
    indexes the R rows (several policies can share one batch: stack their tables and offset
    ``sub``). names: the ops.apply names of the ops in ``tab`` (passes not needed are not
    compiled). group: SamplePairing takes the image before it within consecutive groups of
    ``group`` images (default: the whole batch), so that batched candidates never mix.
    """
    b, h, w, c = images.shape
    group = b if group is None else group
    x = applier.to_planar(images)  # the layout of applier.apply_slot
    sub, fire = draws["sub"], draws["fire"]
    identity = jnp.asarray(affine.fixed_point(affine.IDENTITY_MATRIX))
    fill = jnp.asarray(CUTOUT_FILL if c == 3 else (CUTOUT_FILL_GRAY,) * c, jnp.int32)
    # Cutout (FAA geometry and fill) and SamplePairing at alpha 1 (a copy of the neighbour, as
    # Image.blend(a, b, 1.0)) are applied here; everything else by the shared slot pipeline.
    slot_names = names - {"cutout", "sample_pairing", "identity"}
    for k in range(tab["probability"].shape[1]):
        f = fire[:, k]
        sign = draws["negate"][:, k].astype(jnp.int32)
        before = x
        if slot_names:
            p = {
                "fixed": jnp.where(f[:, None], tab["fixed"][sub, k, sign], identity),
                "factor": jnp.where(f, tab["factor"][sub, k], 0.0),
                "integer": tab["integer"][sub, k],
                "lut_code": jnp.where(f, tab["lut_code"][sub, k], 0),
                "blend_code": jnp.where(f, tab["blend_code"][sub, k], 0),
                "pairing": jnp.zeros_like(f),
            }
            x = applier.apply_slot(x, p, slot_names)
        if "sample_pairing" in names:
            grouped = before.reshape(b // group, group, *before.shape[1:])
            other = jnp.roll(grouped, 1, axis=1).reshape(before.shape)
            x = jnp.where((f & tab["pairing"][sub, k])[:, None, None, None], other, x)
        if "cutout" in names:
            side, top, left = cutout_box(jnp.where(f, tab["cutout"][sub, k], 0.0),
                                         draws["centre"][:, k], h, w)
            # color.cutout centres the square at (top + side//2): give it the top-left corner.
            x = color.cutout(x, side, top + side // 2, left + side // 2, fill)
    return applier.from_planar(x)


@dataclasses.dataclass(frozen=True, eq=False)
class FaaPolicy:
    """A fixed FAA policy: ``policy(key, images uint8 [B, H, W, C]) -> uint8``."""
    policy: tuple = dataclasses.field(repr=False)
    name: str = "faa"

    def __post_init__(self):
        object.__setattr__(self, "policy", check_policy(self.policy))
        tables(self.policy, 8, 8)  # one-length check before anything is compiled

    @property
    def names(self) -> frozenset:
        return policy_names(self.policy)

    def device_tables(self, height: int, width: int) -> dict:
        return {k: jnp.asarray(v) for k, v in tables(self.policy, height, width).items()}

    def sample(self, key, batch_size: int, height: int = 32, width: int = 32) -> dict:
        return sample(self.device_tables(height, width), key, batch_size)

    def __call__(self, key, images):
        ops.check_image(images, rank=4, uint8_only=True, what="images")
        _, h, w, _ = images.shape
        tab = self.device_tables(h, w)
        return apply_draws(tab, self.names, images, sample(tab, key, images.shape[0]))


def fast_autoaugment(policy="fa_reduced_cifar10") -> FaaPolicy:
    """`FaaPolicy` of a published name, a JSON file ("path.json[:name]") or a policy list."""
    label = policy if isinstance(policy, str) else "custom"
    return FaaPolicy(resolve(policy), name=f"faa[{label}]")
