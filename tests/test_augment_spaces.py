"""Search spaces: the level -> magnitude tables of docs/algorithms.md §5 and §6, by hand."""
import pytest

from gar_jax.augment import autoaugment
from gar_jax.augment.spaces import Level
from gar_jax.augment.spaces import Op
from gar_jax.augment.spaces import SearchSpace
from gar_jax.augment.spaces import get_space
from gar_jax.errors import ConfigError

RA_OPS = ("identity", "auto_contrast", "equalize", "rotate", "solarize", "color", "posterize",
          "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x",
          "translate_y")
WL_OPS = RA_OPS + ("blur", "invert", "flip_lr", "flip_ud", "cutout")

# (op, level) -> magnitude, computed by hand from int_p(l, M) = int(l M / 30), float_p = l M / 30.
RA_EXPECTED = {
    ("rotate", 0): 0, ("rotate", 7): 7, ("rotate", 30): 30,
    ("solarize", 0): 256, ("solarize", 1): 248, ("solarize", 15): 128, ("solarize", 30): 0,
    ("posterize", 0): 8, ("posterize", 7): 8, ("posterize", 8): 7, ("posterize", 15): 6,
    ("posterize", 30): 4,
    ("color", 0): 0.1, ("contrast", 10): 0.7, ("brightness", 15): 1.0, ("sharpness", 30): 1.9,
    ("shear_x", 10): 0.1, ("shear_y", 30): 0.3,
    ("translate_x", 3): 1, ("translate_x", 10): 4, ("translate_y", 15): 7, ("translate_y", 30): 14,
}
WL_EXPECTED = {
    ("rotate", 1): 4, ("rotate", 10): 45, ("rotate", 20): 90, ("rotate", 30): 135,
    ("solarize", 15): 128,
    ("posterize", 5): 7, ("posterize", 15): 5, ("posterize", 30): 2,
    ("color", 0): 0.01, ("contrast", 15): 1.005, ("brightness", 30): 2.0,
    ("shear_x", 10): 0.33, ("shear_y", 30): 0.99,
    ("translate_x", 1): 1, ("translate_x", 15): 16, ("translate_y", 30): 32,
    ("cutout", 15): 9, ("cutout", 25): 16, ("cutout", 30): 19,
}


def _check(space, expected):
    for (name, level), value in expected.items():
        got = space.magnitude(space.op_names.index(name), level)
        assert got == pytest.approx(value, abs=1e-12), (space.name, name, level, got)
        assert isinstance(got, int) == isinstance(value, int), (name, level, got)


def test_randaug_space():
    for name in ("ra", "randaug", "uniaug"):
        space = get_space(name)
        assert space.op_names == RA_OPS and space.num_levels == 31
    _check(space, RA_EXPECTED)
    signed = {op.name for op in space.ops if op.signed}
    assert signed == {"rotate", "shear_x", "shear_y", "translate_x", "translate_y"}
    for name in ("identity", "auto_contrast", "equalize"):
        assert space.magnitude(space.op_names.index(name), 5) is None


def test_wide_space():
    for name in ("wide", "wl", "long_wide"):
        space = get_space(name)
        assert space.op_names == WL_OPS
    _check(space, WL_EXPECTED)
    assert get_space("ta_wide").op_names == RA_OPS
    _check(get_space("ta_wide"), {k: v for k, v in WL_EXPECTED.items() if k[0] in RA_OPS})


def test_magnitude_table_matches_rules():
    space = get_space("wide")
    table = space.magnitude_table()
    assert table.shape == (19, 31)
    assert table[space.op_names.index("rotate"), 20] == 90
    assert all(table[space.op_names.index("identity")] != table[0])  # NaN: no magnitude


def test_autoaugment_levels():
    # AutoAugment's 10 levels: int_p(l, M) = int(l M / 10), float_p = l M / 10.
    cifar, _, _, _ = autoaugment.tables("cifar10", 32, 32)
    expected = {("rotate", 2): 6, ("translate_x", 9): 9, ("posterize", 7): 6,
                ("solarize", 2): 205, ("shear_y", 8): 0.24, ("color", 9): 1.72,
                ("brightness", 0): 0.1}
    assert cifar.num_levels == 10
    _check(cifar, expected)
    imagenet, op_index, probability, level = autoaugment.tables("imagenet", 224, 224)
    # No translation in the ImageNet table, but the range is 150/331 of the size.
    assert autoaugment._op("TranslateX", 150 / 331 * 224, 0).level(9) == 91
    assert op_index.shape == probability.shape == level.shape == (25, 2)
    # First ImageNet sub-policy: (Posterize, 0.4, 8), (Rotate, 0.6, 9).
    assert [imagenet.op_names[i] for i in op_index[0]] == ["posterize", "rotate"]
    assert probability[0].tolist() == pytest.approx([0.4, 0.6]) and level[0].tolist() == [8, 9]


def test_user_defined_space_in_a_few_lines():
    mine = SearchSpace("mine", (
        Op("identity"),
        Op("rotate", Level(45, integer=True), signed=True),
        Op("brightness", Level(0.9, offset=0.1)),
    ), num_levels=11)
    assert mine.magnitude(1, 10) == 15 and mine.magnitude(2, 10) == pytest.approx(0.4)


def test_bad_spaces_and_levels_raise_config_error():
    with pytest.raises(ConfigError, match="unknown search space"):
        get_space("randaugment")
    with pytest.raises(ConfigError, match="unknown op"):
        SearchSpace("bad", (Op("rotat", Level(30)),))
    with pytest.raises(ConfigError, match="needs a Level"):
        SearchSpace("bad", (Op("rotate"),))
    space = get_space("ra")
    for level in (-1, 31):
        with pytest.raises(ConfigError, match=r"0\.\.30"):
            space.magnitude(3, level)
    with pytest.raises(ConfigError, match="AutoAugment policy"):
        autoaugment.tables("cifar100", 32, 32)


# ------------------------------------------------------------------ composed and hostile spaces

def test_composed_space_is_its_parts_in_order_with_their_rules():
    from gar_jax.augment import spaces

    s = get_space("ra+invert+sample_pairing+rotate_180")
    assert s.op_names == RA_OPS + ("invert", "sample_pairing", "rotate_180")
    assert s.ops[:14] == spaces.RANDAUG.ops                      # RA's own level rules
    assert s.magnitude(s.op_names.index("sample_pairing"), 0) == 1.0   # alpha 1 at any level
    assert s.magnitude(s.op_names.index("sample_pairing"), 30) == 1.0
    assert s.magnitude(s.op_names.index("invert"), 30) is None
    assert s.magnitude(s.op_names.index("rotate_180"), 12) is None
    # "space.op" takes that space's rule: the wide rotate reaches 135 degrees at level 30
    w = get_space("identity+wide.rotate")
    assert w.op_names == ("identity", "rotate") and w.magnitude(1, 30) == 135
    assert get_space("identity+rotate").magnitude(1, 30) == 30   # plain name: RA's rule


@pytest.mark.parametrize("name, message", [
    ("ra+rotate", "twice"), ("ra+nope", "unknown space or op 'nope'"),
    ("identity+wide.nope", "has no op 'nope'"), ("ra+", "empty part"),
    ("nope.rotate", "is not a space")])
def test_composed_space_refuses_bad_names(name, message):
    with pytest.raises(ConfigError, match=message):
        get_space(name)


def test_hostile_space_is_ra_plus_the_hostile_ops():
    from gar_jax.augment import spaces

    h = get_space("hostile")
    assert h.op_names == RA_OPS + ("invert", "flip_lr", "flip_ud", "rotate_90", "rotate_180",
                                   "rotate_270", "sample_pairing")
    assert h.op_names[14:] == spaces.HOSTILE_OPS
    assert h.ops[:14] == spaces.RANDAUG.ops
