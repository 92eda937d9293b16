"""Fast AutoAugment: op semantics vs Pillow, policy files, replay statistics, the search."""
import numpy as np
import pytest
import jax
import jax.numpy as jnp
from PIL import Image
from scipy import stats

from gar_jax.augment import faa
from gar_jax.augment import pil_reference
from gar_jax.errors import ConfigError

LEVELS = (0.0, 0.13, 0.5, 0.77, 1.0)


@pytest.mark.parametrize("shape", [(32, 32, 3), (8, 8, 1)])
def test_every_op_at_several_levels_equals_pillow(shape):
    """One sub-policy per (op, level); each image gets one fired step; Pillow per image."""
    policy = [[(op, 1.0, lv)] for op in faa.ALL_OPS for lv in LEVELS]
    n = len(policy)
    h, w, c = shape
    rng = np.random.RandomState(0)
    # Smooth-ish images with structure (so that warps, cutouts and histograms all matter).
    images = rng.randint(0, 256, (n, h, w, c)).astype(np.uint8)
    images[: n // 2] = (images[: n // 2] // 64) * 64 + 10
    negate = rng.rand(n, 1) < 0.5
    centre = rng.rand(n, 1, 2).astype(np.float32)
    pol = faa.FaaPolicy(policy)
    draws = {"sub": jnp.arange(n), "fire": jnp.ones((n, 1), bool), "negate": jnp.asarray(negate),
             "centre": jnp.asarray(centre)}
    out = np.asarray(faa.apply_draws(pol.device_tables(h, w), pol.names, jnp.asarray(images),
                                     draws))

    def pil(a):
        return Image.fromarray(a[..., 0] if c == 1 else a)

    for i, ((op, _, level),) in enumerate(policy):
        ref = np.asarray(pil_reference.faa_apply(
            op, pil(images[i]), level, negate=bool(negate[i, 0]), centre=centre[i, 0],
            other=pil(images[i - 1])))
        ref = ref[..., None] if c == 1 else ref
        np.testing.assert_array_equal(out[i], ref, err_msg=f"{op} level {level} "
                                      f"negate {negate[i, 0]} centre {centre[i, 0]}")
