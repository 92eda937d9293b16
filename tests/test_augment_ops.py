"""gar_jax.augment.ops against Pillow itself, on crops of real photographs.

Reference: gar_jax.augment.pil_reference, which calls Pillow (ImageOps, ImageEnhance,
Image.rotate / transform, ImageFilter) exactly as the AutoAugment-family code does.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_sample_images

from gar_jax.augment import ops
from gar_jax.augment import pil_reference
from gar_jax.errors import ConfigError

# Magnitudes per op: both signs for signed ops, the ends of every space's range, and values
# where Pillow's pixel boundaries tie (rotations by 45 degrees, shear 0.2 / 0.04).
CASES = {
    "identity": [None], "auto_contrast": [None], "equalize": [None], "invert": [None],
    "blur": [None], "flip_lr": [None], "flip_ud": [None], "rotate_90": [None], "rotate_180": [None],
    "rotate_270": [None],
    "solarize": [0, 77, 128, 200, 256],
    "posterize": [1, 2, 4, 6, 8],
    "color": [0.01, 0.1, 0.55, 1.0, 1.37, 1.9, 2.0],
    "contrast": [0.01, 0.1, 0.55, 1.0, 1.37, 1.9, 2.0],
    "brightness": [0.01, 0.1, 0.55, 1.0, 1.37, 1.9, 2.0],
    "sharpness": [0.01, 0.1, 0.55, 1.0, 1.37, 1.9, 2.0],
    "rotate": [-135, -45, -30, -7, 0, 13, 45, 90, 135, 180, 22.5],
    "shear_x": [-0.99, -0.3, -0.2, -0.04, 0.04, 0.2, 0.3, 0.495],
    "shear_y": [-0.99, -0.3, -0.2, -0.04, 0.04, 0.2, 0.3, 0.495],
    "translate_x": [-32, -14, -3, 0, 2.5, 5, 14],
    "translate_y": [-32, -14, -3, 0, 2.5, 5, 14],
}
# Pillow computes these in float32 (blend) or rounds a float32 sum (filters): allow one level.
FLOAT_OPS = {"color", "contrast", "brightness", "sharpness", "blur", "sample_pairing"}


@pytest.fixture(scope="module")
def photos():
    """Crops of scikit-learn's two sample photographs: four 32x32 RGB, one 32x32 gray (Pillow's
    "L" conversion), and one 64x96 RGB from each photograph."""
    rng = np.random.default_rng(0)
    images = load_sample_images().images

    def crop(i, h, w):
        p = images[i]
        y, x = rng.integers(0, p.shape[0] - h), rng.integers(0, p.shape[1] - w)
        return p[y:y + h, x:x + w].copy()

    small = [crop(i % 2, 32, 32) for i in range(4)]
    gray = (small[1].astype(np.int64) @ [19595, 38470, 7471] + 0x8000) >> 16
    return small + [gray.astype(np.uint8)[..., None], crop(0, 64, 96), crop(1, 64, 96)]


def _assert_matches(name, ours, ref, context):
    ours, ref = np.asarray(ours).astype(int), np.asarray(ref).astype(int)
    assert ours.shape == ref.shape, context
    diff = np.abs(ours - ref)
    if name in FLOAT_OPS:
        assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3, (context, diff.max(), diff.mean())
    else:
        assert diff.max() == 0, (context, int((diff > 0).any(-1).sum()), "pixels differ")


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_equals_pillow(photos, name):
    for i, image in enumerate(photos):
        for m in CASES[name]:
            ours = ops.apply(name, jnp.asarray(image), m)
            assert ours.dtype == jnp.uint8
            _assert_matches(name, ours, pil_reference.apply_array(name, image, m), (i, m))


def test_float_images_keep_dtype_and_values(photos):
    image = photos[0]
    out = ops.apply("rotate", jnp.asarray(image, jnp.float32), 30)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out), pil_reference.apply_array("rotate", image, 30))


def test_cutout_and_sample_pairing_equal_pillow(photos):
    for image in photos[:1] + photos[4:6]:
        h, w = image.shape[:2]
        for size in (0, 1, 8, 16, 19):
            for center in ((0, 0), (h - 1, 5), (10, w - 12), (h // 2, w // 2)):
                ours = ops.apply("cutout", jnp.asarray(image), size, center=center)
                ref = pil_reference.apply_array("cutout", image, size, center=center)
                _assert_matches("cutout", ours, ref, (size, center))
    a, b = photos[0], photos[2]
    for alpha in (0.0, 0.2, 0.37, 1.0):
        ours = ops.apply("sample_pairing", jnp.asarray(a), alpha, other=jnp.asarray(b))
        ref = pil_reference.apply_array("sample_pairing", a, alpha, other=b)
        _assert_matches("sample_pairing", ours, ref, alpha)


def test_cutout_from_key_is_a_square_of_the_right_size(photos):
    image = jnp.full((32, 32, 3), 200, jnp.uint8)
    out = np.asarray(ops.apply("cutout", image, 8, key=jax.random.PRNGKey(3)))
    rows, cols = np.nonzero(out[..., 0] == 0)
    assert len(rows) > 0
    box = (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
    assert box[0] <= 8 and box[1] <= 8 and len(rows) == box[0] * box[1]


@pytest.mark.parametrize("name", ["rotate", "shear_x", "shear_y", "translate_x"])
def test_traced_magnitudes_equal_pillow(photos, name):
    """Under jit/vmap the magnitude is a tracer: shears, translations and whole-degree
    rotations stay exact."""
    magnitudes = [m for m in CASES[name] if name != "rotate" or float(m).is_integer()]
    images = np.stack(photos[:2])
    fn = jax.jit(jax.vmap(jax.vmap(lambda im, m: ops.apply(name, im, m), (None, 0)), (0, None)))
    ours = np.asarray(fn(images, jnp.asarray(magnitudes, jnp.float32)))
    for i, image in enumerate(images):
        for j, m in enumerate(magnitudes):
            _assert_matches(name, ours[i, j], pil_reference.apply_array(name, image, m), (i, m))


def test_bad_input_raises_config_error_before_compiling():
    image = jnp.zeros((8, 8, 3), jnp.uint8)
    with pytest.raises(ConfigError, match="unknown augmentation op 'rotat'"):
        ops.apply("rotat", image, 3)
    with pytest.raises(ConfigError, match=r"\[H, W, C\]"):
        ops.apply("rotate", jnp.zeros((2, 8, 8, 3), jnp.uint8), 3)
    with pytest.raises(ConfigError, match="dtype"):
        ops.apply("rotate", jnp.zeros((8, 8, 3), jnp.int32), 3)
    with pytest.raises(ConfigError, match="channels"):
        ops.apply("rotate", jnp.zeros((8, 8, 4), jnp.uint8), 3)
    with pytest.raises(ConfigError, match="needs a magnitude"):
        ops.apply("rotate", image)
    with pytest.raises(ConfigError, match="posterize bits"):
        ops.apply("posterize", image, 0)
    with pytest.raises(ConfigError, match="center"):
        ops.apply("cutout", image, 4)
    with pytest.raises(ConfigError, match="other="):
        ops.apply("sample_pairing", image, 0.3)
    with pytest.raises(ConfigError, match="no differentiable mode"):
        ops.apply("equalize", image, mode="bilinear")
    # Inside jit the error comes while tracing, i.e. before XLA compiles anything.
    with pytest.raises(ConfigError):
        jax.jit(lambda im: ops.apply("no_such_op", im, 1.0))(image)
