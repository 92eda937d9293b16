"""Search spaces: which ops a policy draws from and how a strength level becomes a magnitude.

A space is data. docs/algorithms.md §5 gives the two of the GAR paper (§6, Appendix B), with
31 levels l = 0..30,
``int_p(l, M) = int(l * M / 30)`` and ``float_p(l, M) = l * M / 30``; signed ops flip the sign of
their magnitude with probability 1/2 when applied. A new space takes a few lines::

    from gar_jax.augment.spaces import Level, Op, SearchSpace
    mine = SearchSpace("mine", (
        Op("identity"),
        Op("rotate", Level(45, integer=True), signed=True),       # int(l * 45 / 30) degrees
        Op("brightness", Level(0.9, offset=0.1)),                 # 0.1 + l * 0.9 / 30
        Op("solarize", Level(256, offset=256, integer=True, decreasing=True)),  # 256 - int_p
    ))

Magnitudes are computed on the host in float64 with the same expression the reference Python
code uses, then handed to the device (float32 where Pillow takes a C float), so levels map to
exactly the numbers Pillow sees.
"""
import dataclasses
from typing import Optional

import numpy as np

from gar_jax.augment import ops
from gar_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Level:
    """Level -> magnitude rule: ``offset +/- p(level, maximum)``.

    p is ``int(level * maximum / divisor)`` if ``integer`` else ``level * maximum / divisor``;
    ``decreasing`` subtracts it from ``offset`` (e.g. solarize: 256 - int_p(l, 256)).
    """
    maximum: float
    offset: float = 0
    integer: bool = False
    decreasing: bool = False
    divisor: int = 30

    def __call__(self, level: int):
        p = level * self.maximum / self.divisor
        if self.integer:
            p = int(p)
        if self.decreasing:
            return self.offset - p
        return self.offset + p if self.offset else p


@dataclasses.dataclass(frozen=True)
class Op:
    """One op of a space: an ops.OP_NAMES name, its level rule (None: no magnitude), signed."""
    name: str
    level: Optional[Level] = None
    signed: bool = False


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A named tuple of ops sharing ``num_levels`` strength levels 0..num_levels-1."""
    name: str
    ops: tuple
    num_levels: int = 31

    def __post_init__(self):
        for op in self.ops:
            if op.name not in ops.OP_NAMES:
                raise ConfigError(f"space {self.name!r}: unknown op {op.name!r}; known ops: "
                                  f"{', '.join(ops.OP_NAMES)}")
            if op.level is None and op.name not in ops.NO_MAGNITUDE:
                raise ConfigError(f"space {self.name!r}: op {op.name!r} needs a Level rule")
        if not self.ops:
            raise ConfigError(f"space {self.name!r} has no ops")

    @property
    def op_names(self) -> tuple:
        return tuple(op.name for op in self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    def magnitude(self, op_index: int, level: int):
        """Python magnitude of op ``op_index`` at ``level`` (unsigned), None if it has none."""
        self.check_levels(level)
        rule = self.ops[op_index].level
        return None if rule is None else rule(int(level))

    def magnitude_table(self) -> np.ndarray:
        """float64 [num_ops, num_levels] of unsigned magnitudes (NaN for ops without one)."""
        table = np.full((len(self.ops), self.num_levels), np.nan)
        for i, op in enumerate(self.ops):
            if op.level is not None:
                table[i] = [op.level(level) for level in range(self.num_levels)]
        return table

    def check_levels(self, levels) -> None:
        """ConfigError if a concrete level lies outside 0..num_levels-1 (tracers pass)."""
        _check_range(levels, self.num_levels, f"strength levels for space {self.name!r}")

    def check_op_indices(self, op_indices) -> None:
        """ConfigError if a concrete op index lies outside 0..len(space)-1 (tracers pass)."""
        _check_range(op_indices, len(self.ops), f"op indices for space {self.name!r}")


def _check_range(values, size: int, what: str) -> None:
    if ops.is_traced(values):
        return
    values = np.asarray(values)
    if values.size and (values.min() < 0 or values.max() >= size):
        raise ConfigError(f"{what} must lie in 0..{size - 1}, got values in "
                          f"{values.min()}..{values.max()}")


def _paper_space(name: str, wide: bool) -> SearchSpace:
    """RA ("randaug", 14 ops) or WideLong ("wide", 19 ops) of docs/algorithms.md §5."""
    def enhancer(op_name):
        rule = Level(1.99, offset=0.01) if wide else Level(1.8, offset=0.1)
        return Op(op_name, rule)

    space_ops = [
        Op("identity"),
        Op("auto_contrast"),
        Op("equalize"),
        Op("rotate", Level(135 if wide else 30, integer=True), signed=True),
        Op("solarize", Level(256, offset=256, integer=True, decreasing=True)),
        enhancer("color"),
        Op("posterize", Level(6 if wide else 4, offset=8, integer=True, decreasing=True)),
        enhancer("contrast"),
        enhancer("brightness"),
        enhancer("sharpness"),
        Op("shear_x", Level(0.99 if wide else 0.3), signed=True),
        Op("shear_y", Level(0.99 if wide else 0.3), signed=True),
        Op("translate_x", Level(32 if wide else 14.4, integer=True), signed=True),
        Op("translate_y", Level(32 if wide else 14.4, integer=True), signed=True),
    ]
    if wide:
        space_ops += [Op("blur"), Op("invert"), Op("flip_lr"), Op("flip_ud"),
                      Op("cutout", Level(32 * 0.6, integer=True))]
    return SearchSpace(name, tuple(space_ops))


RANDAUG = _paper_space("randaug", wide=False)
WIDE = _paper_space("wide", wide=True)
# TrivialAugment's own "wide" space: RA's 14 ops with the wide ranges (docs/algorithms.md §6).
TA_WIDE = SearchSpace("ta_wide", WIDE.ops[:14])
SPACES = {"ra": RANDAUG, "randaug": RANDAUG, "uniaug": RANDAUG,
          "wide": WIDE, "wl": WIDE, "long_wide": WIDE, "ta_wide": TA_WIDE}


# A planted destructive op for experiments: sample_pairing at alpha = 1 replaces the image by its
# batch neighbour (whose label differs in 9 of 10 cases). Every learned-augmentation method should
# learn to switch it off; its name is what results.json's learned_policy.destructive_op reports.
DESTRUCTIVE_OP = Op("sample_pairing", Level(0.0, offset=1.0))


def with_destructive_op(space: "SearchSpace") -> "SearchSpace":
    """`space` plus `DESTRUCTIVE_OP` as its last op, named ``<space>+destructive``."""
    return SearchSpace(f"{space.name}+destructive", space.ops + (DESTRUCTIVE_OP,),
                       space.num_levels)


def _named_op(part: str) -> Op:
    """One op for a composed space: ``"<space>.<op>"`` (that space's rule, e.g. "wide.rotate"),
    or ``"<op>"``: the RA space's rule, else the wide space's, else `DESTRUCTIVE_OP` for
    "sample_pairing" (alpha 1)."""
    if "." in part:
        space_name, op_name = part.split(".", 1)
        ops_ = SPACES[space_name].ops if space_name in SPACES else ()
        found = [op for op in ops_ if op.name == op_name]
        if not found:
            raise ConfigError(f"unknown op {part!r} in a composed space: {space_name!r} is not a "
                              f"space or has no op {op_name!r}")
        return found[0]
    for op in RANDAUG.ops + WIDE.ops + (DESTRUCTIVE_OP,):
        if op.name == part:
            return op
    if part in ops.NO_MAGNITUDE:  # e.g. rotate_180: no level rule needed
        return Op(part)
    raise ConfigError(f"unknown space or op {part!r} in a composed space; spaces: "
                      f"{', '.join(SPACES)}; ops: "
                      f"{', '.join(dict.fromkeys(RANDAUG.op_names + WIDE.op_names))}, "
                      f"sample_pairing, rotate_180")


def compose_space(name: str) -> SearchSpace:
    """The space ``"part+part+..."``, its ops in order: a part is a space name (all its ops) or
    an op (`_named_op`). E.g. ``"ra+invert+sample_pairing"`` (RA's 14 ops, Invert, SamplePairing
    at alpha 1) or ``"identity+flip_lr"`` (a 2-op space: under UniformAugment, flip_lr alone on
    half of the images). An op may appear once."""
    parts = [p.strip() for p in name.split("+")]
    if not all(parts):
        raise ConfigError(f"composed space {name!r} has an empty part")
    space_ops = []
    for part in parts:
        space_ops += list(SPACES[part].ops) if part in SPACES else [_named_op(part)]
    names = [op.name for op in space_ops]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"composed space {name!r} holds op(s) {', '.join(repeated)} twice")
    return SearchSpace(name, tuple(space_ops))


def add_extra_ops(names: tuple, spec, extra: dict, field: str, method: str) -> tuple:
    """``names`` (a method's own op names) plus the ops of ``spec`` (comma-separated library
    names), each mapped to the method's name by ``extra`` ({library name: method's name}); a
    one-line ConfigError for an unknown op or one already in the space. FAA's and DRA's
    ``extra_ops``."""
    for name in [n.strip() for n in str(spec or "").split(",") if n.strip()]:
        if name not in extra:
            raise ConfigError(f"{field}: unknown op {name!r}; {method}'s ops can be extended by "
                              f"{', '.join(extra)}")
        if extra[name] in names:
            raise ConfigError(f"{field}: {name!r} is in the search space twice")
        names += (extra[name],)
    return names


# The hostile space of experiments/compare (README section 6): the RA space plus ops that hurt
# on digits (each alone, on half of the training images, cost 1.5-5 points against the standard
# pipeline: experiments/compare/hostile/screen.md): a user's space whose ops were not vetted.
HOSTILE_OPS = ("invert", "flip_lr", "flip_ud", "rotate_90", "rotate_180", "rotate_270",
               "sample_pairing")
HOSTILE = compose_space("+".join(("randaug",) + HOSTILE_OPS))
HOSTILE = SearchSpace("hostile", HOSTILE.ops)
SPACES["hostile"] = HOSTILE


def get_space(name) -> SearchSpace:
    """The named space: "ra"/"randaug"/"uniaug" (14 ops), "wide"/"wl"/"long_wide" (19 ops),
    "ta_wide" (TrivialAugment's: the 14 RA ops with the wide ranges), "hostile" (RA's 14 plus
    the ops that hurt on digits, `HOSTILE`), or a composition ``"ra+invert+sample_pairing"``
    (`compose_space`).

    A SearchSpace passes through unchanged.
    """
    if isinstance(name, SearchSpace):
        return name
    if isinstance(name, str) and ("+" in name or "." in name):
        return compose_space(name)
    if name not in SPACES:
        raise ConfigError(f"unknown search space {name!r}; known: {', '.join(SPACES)}, or "
                          f"a composition such as 'ra+invert+sample_pairing'")
    return SPACES[name]
