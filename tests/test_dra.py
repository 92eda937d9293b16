"""Differentiable RandAugment: solarize_add, the op table against Pillow, the Gumbel sampler,
straight-through gradients, the replay's statistics, keys, JSON and errors."""
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gar_jax.augment import applier, color, dra_policy, ops, pil_reference, policies
from gar_jax.errors import ConfigError

import config_files

# The authors' published matrices and op table (ainieli/DRA policy.py, auto_augment/), as data.
REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "dra_policies.json")


def hand_argument(name, m, sign, size):
    """The mapping written out from tests/data/dra_policies.json (magnitude_to_argument)."""
    table = {
        "ShearX": 0.3 * m * sign, "ShearY": 0.3 * m * sign,
        "TranslateX": 10 * m * sign, "TranslateY": 10 * m * sign, "Rotate": 30 * m * sign,
        "Brightness": 1 + sign * 0.9 * m, "Color": 1 + sign * 0.9 * m,
        "Sharpness": 1 + sign * 0.9 * m, "Contrast": 1 + sign * 0.9 * m,
        "Cutout": int(size * 0.2 * m), "Solarize": math.ceil(256 - 256 * m),
        "Posterize": math.ceil(8 - 4 * m), "SolarizeAdd": int(110 * m), "SamplePairing": 1.0,
    }
    return table.get(name)


def test_solarize_add_matches_pillow_and_numpy():
    rng = np.random.default_rng(0)
    fn = jax.jit(lambda image, addition: ops.apply("solarize_add", image, addition))
    for shape in [(7, 9, 3), (6, 5, 1)]:
        image = rng.integers(0, 256, shape, np.uint8)
        for addition in (0, 1, 55, 110, 127, 200):
            ours = np.asarray(fn(jnp.asarray(image), addition))
            numpy_ref = np.where(image < 128, np.minimum(image.astype(int) + addition, 255),
                                 image)
            np.testing.assert_array_equal(ours, numpy_ref)
            np.testing.assert_array_equal(
                ours, pil_reference.apply_array("solarize_add", image, addition))


def test_each_op_at_its_dra_magnitude_equals_pillow_at_the_mapped_argument():
    """Replay (and the search's exact ops): the applier on the magnitude grid equals Pillow's op
    at the argument the reference JSON prescribes, for every op, magnitude and sign."""
    names = dra_policy.DRA_OPS + (dra_policy.DESTRUCTIVE,)
    grid, size = dra_policy.GRID, 32
    cases = [(j, m, s) for j in range(len(names)) for m in (0.0, 0.137, 0.5, 0.803, 1.0)
             for s in (1, -1) if s == 1 or names[j] in dra_policy.SIGNED]
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (len(cases), size, size, 3), np.uint8)
    op = np.array([[j] for j, _, _ in cases], np.int32)
    levels = np.array([[grid + round(s * m * grid)] for _, m, s in cases], np.int32)
    key = jax.random.PRNGKey(3)
    out = np.asarray(applier.apply_sequence(dra_policy.replay_space(names, size, size), key, images,
                                            op, levels, np.ones_like(op, bool)))
    _, center = applier.slot_randomness(key, len(cases), 1, size, size)
    center = np.asarray(center)
    for i, (j, m, s) in enumerate(cases):
        name = names[j]
        arg = hand_argument(name, m, s, size)
        assert arg == pytest.approx(dra_policy.argument(name, s * m, size, size)) if arg is not None \
            else dra_policy.argument(name, s * m) is None
        kwargs = {}
        if name == "Cutout":
            kwargs["center"] = tuple(center[i, 0])
        if name == dra_policy.DESTRUCTIVE:
            kwargs["other"] = images[i - 1]
        expected = pil_reference.apply_array(dra_policy.OUR_NAME[name], images[i], arg, **kwargs)
        if name in ("Brightness", "Color", "Sharpness", "Contrast"):
            # The batched applier's blends may differ from Pillow by one level (its own
            # tests allow the same); everything else is exact.
            diff = np.abs(out[i].astype(int) - expected.astype(int))
            assert diff.max() <= 1 and np.mean(diff > 0) < 0.02, (name, m, s)
        else:
            np.testing.assert_array_equal(out[i], expected, err_msg=f"{name} m={m} sign={s}")


def test_argument_table_matches_reference_file():
    with open(REFERENCE, encoding="utf-8") as f:
        data = json.load(f)
    assert tuple(data["ops"]) == dra_policy.DRA_OPS
    text = json.dumps(data["magnitude_to_argument"])
    for piece in ("m * 0.3", "m * 10 pixels", "m * 30 degrees", "1 + s * 0.9 * m",
                  "max(H, W) * 0.2 * m", "ceil(256 - 256 * m)", "ceil(8 - 4 * m)",
                  "int(110 * m)"):
        assert piece in text, piece
    for name in ("WRN-28-10 on CIFAR-10", "WRN-28-10 on CIFAR-100"):
        params, names = dra_policy.load_policy(REFERENCE, name)
        assert names == dra_policy.DRA_OPS
        for k in ("W", "M_MEAN", "M_STD"):
            np.testing.assert_allclose(params[k], np.asarray(dra_policy.PUBLISHED[name][k]), atol=1e-7)


def test_gumbel_one_hot_frequencies_and_straight_through_gradient():
    logits = jnp.asarray(np.random.default_rng(2).normal(0, 0.8, 16), jnp.float32)
    n = 40000
    _, index = jax.vmap(lambda k: dra_policy.gumbel_one_hot(k, logits, 0.5))(
        jax.random.split(jax.random.PRNGKey(0), n))
    counts = np.bincount(np.asarray(index), minlength=16)
    p = np.exp(np.asarray(logits, np.float64))
    expected = n * p / p.sum()
    assert stats.chisquare(counts, expected).pvalue > 1e-3, (counts, expected)
    # Forward: an exact one-hot; backward: the gradient of softmax((logits + g) / tau).
    key, c = jax.random.PRNGKey(5), jnp.arange(16.0)
    onehot, idx = dra_policy.gumbel_one_hot(key, logits, 0.5)
    np.testing.assert_array_equal(onehot, jax.nn.one_hot(idx, 16))
    grad = jax.grad(lambda w: jnp.sum(dra_policy.gumbel_one_hot(key, w, 0.5)[0] * c))(logits)
    g = jax.random.gumbel(key, logits.shape)
    soft = jax.nn.softmax((logits + g) / 0.5)
    np.testing.assert_allclose(grad, soft * (c - jnp.sum(soft * c)) / 0.5, rtol=1e-5, atol=1e-6)


def test_magnitude_gradients_are_the_authors_input_straight_through():
    """d<op(x_m, m), R>/dm with x_m = x + m - sg(m) (ainieli/DRA apply_op), written out per op:
    the op's input Jacobian applied to a uniform shift (J 1), plus the op's own derivative in its
    argument where the TF op has one (enhancer factors, SolarizeAdd's float addition); geometric
    ops get no gradient through the transform. Forward values: Pillow (exact ops), the float
    formula (SolarizeAdd)."""
    names = dra_policy.DRA_OPS + (dra_policy.DESTRUCTIVE,)
    rng = np.random.default_rng(4)
    n, size = len(names), 8
    xi = rng.integers(0, 256, (n, size, size, 3)).astype(np.float32)
    x = jnp.asarray(xi)
    r = rng.normal(size=(n, size, size, 3))
    op = jnp.arange(n, dtype=jnp.int32)
    sign = jnp.asarray(np.where(np.arange(n) % 2, -1.0, 1.0))
    m = jnp.asarray(rng.uniform(0.2, 0.9, n).astype(np.float32))
    key = jax.random.PRNGKey(0)

    def objective(m):  # per image: <op_i(x_i, m_i), R_i>
        return jnp.sum(dra_policy.apply_ops(names, key, x, op, m, sign) * r, axis=(1, 2, 3))

    fn = jax.jit(lambda m: (dra_policy.apply_ops(names, key, x, op, m, sign),
                            jax.grad(lambda mm: jnp.sum(objective(mm)))(m)))
    out, g = (np.asarray(a, np.float64) for a in fn(m))
    mq = np.round(np.asarray(m, np.float64) * dra_policy.GRID) / dra_policy.GRID
    _, center = applier.slot_randomness(key, n, 1, size, size)
    center = np.asarray(center)[:, 0]
    for i, name in enumerate(names):
        s, mi, ri, xv = float(sign[i]), float(m[i]), r[i], xi[i].astype(np.float64)
        if name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
            # J 1 of the bilinear warp: the warp of an all-ones image (the in-image weight).
            ones = ops.apply(dra_policy.OUR_NAME[name], jnp.ones((size, size, 3)),
                             dra_policy.argument(name, s * mi), mode="bilinear")
            expected = np.sum(np.asarray(ones) * ri)
        elif name == "Brightness":
            f = 1 + 0.9 * s * mi
            inside = (f * xv >= 0) & (f * xv <= 255)  # TF's clip: gradient on the closed range
            expected = np.sum(np.where(inside, (f + 0.9 * s * xv) * ri, 0))
        elif name in ("Color", "Contrast", "Sharpness"):
            # degenerate(x + t) = degenerate(x) + t: J 1 = 1; plus 0.9 s (x - degenerate).
            planar = jnp.moveaxis(jnp.asarray(xv, jnp.float32), -1, 0)
            if name == "Color":
                deg = np.asarray(color.grayscale(planar, exact=False))[..., None]
            elif name == "Contrast":
                deg = float(jnp.mean(color.grayscale(planar, exact=False)))
            else:
                deg = np.moveaxis(np.asarray(color.smooth_and_blur(planar, exact=False)[0]),
                                  0, -1)
            f = 1 + 0.9 * s * mi
            value = deg + f * (xv - deg)
            inside = (value >= 0) & (value <= 255)
            expected = np.sum(np.where(inside, (1 + 0.9 * s * (xv - deg)) * ri, 0))
        elif name == "Cutout":
            side = dra_policy.argument(name, mq[i], size, size)
            top, left = center[i] - side // 2
            hole = np.zeros((size, size), bool)
            hole[max(top, 0):max(top + side, 0), max(left, 0):max(left + side, 0)] = True
            expected = np.sum(np.where(hole[..., None], 0, ri))
        elif name == "Solarize":
            expected = np.sum(np.where(xv < dra_policy.argument(name, mq[i]), ri, -ri))
        elif name in ("Posterize", "Equalize"):
            expected = np.sum(ri)
        elif name == "Invert":
            expected = -np.sum(ri)
        elif name == "AutoContrast":
            expected = 0.0  # invariant to a uniform shift of each channel
        elif name == "SolarizeAdd":
            added = xv + 110 * mi
            expected = np.sum(np.where(xv < 128, np.where(added <= 255, 111 * ri, 0), ri))
            np.testing.assert_allclose(out[i], np.where(xv < 128, np.minimum(added, 255), xv),
                                       rtol=1e-6, atol=1e-3)
        else:  # SamplePairing at alpha 1: the neighbour's image, nothing from this one's m
            expected = 0.0
        np.testing.assert_allclose(g[i], expected, rtol=1e-4, atol=1e-3 * np.abs(ri).sum(),
                                   err_msg=name)
        if name not in dra_policy.SIGNED | {"SolarizeAdd"}:  # not float in the search: Pillow exact
            arg = dra_policy.argument(name, mq[i], size, size)
            kwargs = {"center": tuple(center[i])} if name == "Cutout" else {}
            if name == dra_policy.DESTRUCTIVE:
                kwargs["other"] = xi[i - 1].astype(np.uint8)
            expected_image = pil_reference.apply_array(dra_policy.OUR_NAME[name], xi[i].astype(np.uint8),
                                                       arg, **kwargs)
            np.testing.assert_array_equal(out[i], expected_image, err_msg=name)


def _layer_draws(key, b, num_ops, layers, p_min=0.2, p_max=0.8):
    """The per-image draws of `search_augment` for each layer, read from its keys (the layout of
    its key splits): gumbel [L, B, A], p, fire-uniform, eps, negate [L, B], op keys [L]."""
    out = []
    for k in jax.random.split(key, layers):
        k_g, k_p, k_fire, k_eps, k_sign, k_op = jax.random.split(k, 6)
        out.append(dict(
            gumbel=np.asarray(jax.random.gumbel(k_g, (b, num_ops))),
            fired=np.asarray(jax.random.uniform(k_fire, (b,))
                             < jax.random.uniform(k_p, (b,), minval=p_min, maxval=p_max)),
            eps=np.asarray(jax.random.normal(k_eps, (b,))),
            sign=np.where(np.asarray(jax.random.bernoulli(k_sign, 0.5, (b,))), -1.0, 1.0),
            k_op=k_op))
    return out


def tf_blend(name, x, factor):
    """The authors' enhancers on one float image [H, W, C]: blend(degenerate, x, factor) =
    D + factor (x - D), clipped with TF's clip_by_value gradient (1 on the closed range)."""
    planar = jnp.moveaxis(x, -1, 0)
    gray = color.grayscale(planar, exact=False)
    deg = {"Brightness": 0.0, "Color": gray[..., None], "Contrast": jnp.mean(gray),
           "Sharpness": jnp.moveaxis(color.smooth_and_blur(planar, exact=False)[0], 0, -1)}[name]
    v = deg + factor * (x - deg)
    return jnp.where(v < 0, 0.0, jnp.where(v > 255, 255.0, v))


def slow_search_augment(params, key, images, names, tau, host, p_min=0.2, p_max=0.8):
    """The authors' DRA layer (auto_augment/dra.py, operations.py) applied image by image in a
    Python loop (as tf.map_fn does), each op written out on one image in float: per image and
    layer the hard Gumbel-softmax hardwts, m = clip(mu + eps sigma), x_m = x + m - sg(m), the
    chosen op on x_m if it fires (else x), times hardwts[j], plus hardwts[k] * 1 for the others.
    Exact ops: forward the library's single-image Pillow-exact op, gradient that of the TF op.
    ``host``: the same params as numpy arrays, for the draws that are integers (op, grid)."""
    params, host = dra_policy.clip_params(params), dra_policy.clip_params(host)
    b, size = images.shape[0], images.shape[1]
    layers, num_ops = params["W"].shape
    draws = _layer_draws(key, b, num_ops, layers, p_min, p_max)
    sg = jax.lax.stop_gradient
    x = [jnp.asarray(images[i], jnp.float32) for i in range(b)]
    for l, d in enumerate(draws):
        _, center = applier.slot_randomness(d["k_op"], b, 1, size, size)
        center = np.asarray(center)[:, 0]
        new = []
        for i in range(b):
            logits = params["W"][l] + d["gumbel"][i]
            soft = jax.nn.softmax(logits / tau)
            j = int(np.argmax(np.asarray(host["W"][l]) + d["gumbel"][i]))
            hard = jax.nn.one_hot(j, num_ops) + soft - sg(soft)
            name = names[j]
            m = jnp.clip(params["M_MEAN"][l, j] + d["eps"][i] * params["M_STD"][l, j], 0.0, 1.0)
            m_host = float(np.clip(host["M_MEAN"][l, j] + d["eps"][i] * host["M_STD"][l, j],
                                   0.0, 1.0))
            mq = round(m_host * dra_policy.GRID) / dra_policy.GRID
            s = d["sign"][i] if name in dra_policy.SIGNED else 1.0
            xi = x[i]
            x_m = xi + m - sg(m)
            rounded = jnp.clip(jnp.round(sg(xi)), 0, 255).astype(jnp.uint8)
            our = dra_policy.OUR_NAME[name]
            if name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
                y = ops.apply(our, x_m, dra_policy.argument(name, s * m_host), mode="bilinear")
            elif name in ("Brightness", "Color", "Sharpness", "Contrast"):
                y = tf_blend(name, x_m, 1 + 0.9 * s * m)
            elif name == "SolarizeAdd":
                added = x_m + 110 * m
                y = jnp.where(xi < 128, jnp.where(added > 255, 255.0, added), x_m)
            else:
                arg = dra_policy.argument(name, mq, size, size)
                if name == "Cutout":
                    exact = ops.apply(our, rounded, arg, center=tuple(center[i]))
                    hole = ops.apply(our, jnp.ones_like(rounded), arg, center=tuple(center[i]))
                    f = hole.astype(jnp.float32) * x_m
                elif name == dra_policy.DESTRUCTIVE:
                    neighbour = x[i - 1]
                    exact = jnp.clip(jnp.round(sg(neighbour)), 0, 255).astype(jnp.uint8)
                    f = neighbour
                else:
                    exact = ops.apply(our, rounded, arg)
                    if name == "Solarize":
                        f = jnp.where(rounded < arg, x_m, 255 - x_m)
                    elif name == "Invert":
                        f = 255 - x_m
                    elif name == "AutoContrast":
                        lo, hi = x_m.min(axis=(0, 1)), x_m.max(axis=(0, 1))
                        f = jnp.where(hi > lo, (x_m - lo) * 255 / jnp.where(hi > lo, hi - lo, 1),
                                      x_m)
                    else:  # Posterize, Equalize: identity gradients
                        f = x_m
                y = exact.astype(jnp.float32) + f - sg(f)
            y = y if d["fired"][i] else xi
            new.append(hard[j] * y + (jnp.sum(hard) - hard[j]))
        x = new
    return jnp.stack(x)


def test_search_step_equals_slow_per_image_loop():
    """search_augment's images and its W, M_MEAN, M_STD gradients of <out, R> equal the authors'
    formula computed image by image (`slow_search_augment`), 2 layers, 17 ops (the 16 DRA ops
    and the planted one; about 80 s: the loop runs eagerly). Apply probability U(0.7, 1) so
    that the fired ops cover every kind (asserted): geometric, enhancer, SolarizeAdd, Cutout,
    Solarize, the no-magnitude LUT ops, SamplePairing."""
    names = dra_policy.DRA_OPS + (dra_policy.DESTRUCTIVE,)
    rng = np.random.default_rng(7)
    b = 10
    images = jnp.asarray(rng.integers(0, 256, (b, 8, 8, 3), np.uint8))
    r = jnp.asarray(rng.normal(size=(b, 8, 8, 3)).astype(np.float32))
    params = {"W": jnp.asarray(rng.normal(0, 0.5, (2, len(names))), jnp.float32),
              "M_MEAN": jnp.asarray(rng.uniform(0.1, 0.9, (2, len(names))), jnp.float32),
              "M_STD": jnp.asarray(rng.uniform(0.0, 0.3, (2, len(names))), jnp.float32)}
    key = jax.random.PRNGKey(0)

    def fast(p):
        out, aux = dra_policy.search_augment(p, key, images, names=names, tau=0.5, p_min=0.7,
                                      p_max=1.0)
        return jnp.sum(out * r), (out, aux)

    (_, (out, aux)), grads = jax.jit(jax.value_and_grad(fast, has_aux=True))(params)
    host = jax.device_get(params)

    def slow(p):
        out = slow_search_augment(p, key, images, names, 0.5, host, 0.7, 1.0)
        return jnp.sum(out * r), out

    expected, expected_out = jax.grad(slow, has_aux=True)(params)
    # Several different ops in the batch, per layer (a per-batch draw would give one), and
    # every kind of op among those that fired.
    assert all(len(set(np.asarray(aux["op"][:, l]).tolist())) > 3 for l in range(2))
    fired = {names[j] for j in np.asarray(aux["op"])[np.asarray(aux["fired"])]}
    for kind in ({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"},
                 {"Brightness", "Color", "Sharpness", "Contrast"}, {"SolarizeAdd"}, {"Cutout"},
                 {"Solarize"}, {"Equalize", "AutoContrast", "Invert", "Posterize"},
                 {dra_policy.DESTRUCTIVE}):
        assert kind & fired, kind
    np.testing.assert_allclose(out, expected_out, atol=2e-3)
    for k in ("W", "M_MEAN", "M_STD"):
        scale = np.abs(np.asarray(expected[k])).max()
        assert scale > 0, k
        np.testing.assert_allclose(grads[k], expected[k], rtol=2e-3, atol=2e-4 * scale,
                                   err_msg=k)


def test_search_draws_per_image_with_softmax_frequencies():
    """Per image: op ~ softmax(W) (chi-square), fires with probability E[p] = 1/2, and the
    images of one batch get different ops (one batch of 3000 images, one layer)."""
    names = dra_policy.DRA_OPS
    w = jnp.asarray(np.random.default_rng(8).normal(0, 0.7, (1, 16)), jnp.float32)
    params = {**dra_policy.init_params(16, layers=1), "W": w}
    n = 3000
    images = jnp.asarray(np.random.default_rng(9).integers(0, 256, (n, 4, 4, 1), np.uint8))
    _, aux = jax.jit(lambda k: dra_policy.search_augment(params, k, images, names=names))(
        jax.random.PRNGKey(3))
    op, fired = np.asarray(aux["op"][:, 0]), np.asarray(aux["fired"][:, 0])
    soft = np.exp(np.asarray(w[0], np.float64))
    soft /= soft.sum()
    assert stats.chisquare(np.bincount(op, minlength=16), n * soft).pvalue > 1e-3
    assert stats.binomtest(int(fired.sum()), n, 0.5).pvalue > 1e-3
    magnitude = np.asarray(aux["magnitude"][:, 0])
    assert len(np.unique(magnitude)) > n // 2  # eps drawn per image


def test_search_augment_same_key_same_batch():
    names = dra_policy.DRA_OPS + (dra_policy.DESTRUCTIVE,)
    images = jnp.asarray(np.random.default_rng(6).integers(0, 256, (4, 8, 8, 3), np.uint8))
    params = dra_policy.init_params(len(names))
    fn = jax.jit(lambda k: dra_policy.search_augment(params, k, images, names=names)[0])
    a, b = fn(jax.random.PRNGKey(11)), fn(jax.random.PRNGKey(11))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, fn(jax.random.PRNGKey(12)))


def test_pipelines_in_the_authors_order(tmp_path):
    """Search: the policy half gets no crop / flip (its clean images are the batch itself), the
    weight half does. Training: crop/flip -> DRA -> Cutout. A policy that inverts every image
    (layer 1: Invert; layer 2: Brightness at m = 0, the identity; p = 1) on a constant-100 batch:
    inverted crop padding is 255 and the Cutout hole, made after the inversion, is 0; the old
    order (DRA, then crop and Cutout) leaves no 255, Cutout before DRA no 0."""
    from gar_jax.methods import dra as method

    config = config_files.load("digits_dra")
    config.standard.pad, config.standard.cutout, config.standard.fill_mean = 2, 3, False
    config.dra.p_min = config.dra.p_max = 1.0
    images = jnp.full((64, 8, 8, 1), 100, jnp.uint8)
    params = dra_policy.init_params(16)
    params["W"] = params["W"].at[0, dra_policy.DRA_OPS.index("Invert")].set(50.0)
    params["W"] = params["W"].at[1, dra_policy.DRA_OPS.index("Brightness")].set(50.0)
    params["M_MEAN"] = params["M_MEAN"].at[1].set(0.0)
    params["M_STD"] = params["M_STD"].at[1].set(0.0)
    key = jax.random.PRNGKey(4)
    for crop_flip in (False, True):
        pipeline = method.make_search_pipeline(config, dra_policy.DRA_OPS, crop_flip=crop_flip)
        clean = np.asarray(jax.jit(lambda k: pipeline(params, k, images)[0])(key))
        # No crop: the batch itself; crop: some images show the zero padding.
        assert (clean == 0).any() == crop_flip
        if not crop_flip:
            np.testing.assert_array_equal(clean, images)
    path = tmp_path / "invert.json"
    path.write_text(dra_policy.to_json(params, dra_policy.DRA_OPS))
    out = np.asarray(jax.jit(method.make_replay_augment(config, str(path), None))(key, images))
    assert set(np.unique(out).tolist()) == {0, 155, 255}
    holes = (out == 0).reshape(64, -1).sum(1)
    assert holes.max() <= 9 and (holes > 0).mean() > 0.5


def test_replay_reproduces_published_policy_statistics():
    policy = policies.get_policy("dra", policy="WRN-28-10 on CIFAR-10")
    params = dra_policy.PUBLISHED["WRN-28-10 on CIFAR-10"]
    n = 40000
    op, levels, active = (np.asarray(a) for a in jax.jit(policy.sample, static_argnums=1)(
        jax.random.PRNGKey(0), n))
    m = np.abs(levels - dra_policy.GRID) / dra_policy.GRID
    for layer in range(2):
        w = np.asarray(params["W"][layer])
        expected = n * np.exp(w) / np.exp(w).sum()
        expected *= n / expected.sum()
        counts = np.bincount(op[:, layer], minlength=16)
        assert stats.chisquare(counts, expected).pvalue > 1e-3, layer
        for j in range(16):  # magnitudes: the clipped normal, in 5 equal-probability bins
            mu, sd = params["M_MEAN"][layer][j], params["M_STD"][layer][j]
            mj = m[op[:, layer] == j, layer]
            if sd < 0.02:
                np.testing.assert_allclose(mj, np.clip(mu, 0, 1), atol=0.1 if sd else 1e-3)
                continue
            edges = stats.norm.ppf(np.linspace(0, 1, 6)[1:-1], mu, sd)
            bins = np.bincount(np.searchsorted(edges, mj), minlength=5)
            assert stats.chisquare(bins).pvalue > 1e-3, (layer, j, bins)
    # Fires with p ~ U(0.2, 0.8): probability 1/2; signed ops negative half of the time.
    assert stats.binomtest(int(active.sum()), active.size, 0.5).pvalue > 1e-3
    signed = np.isin(op, [dra_policy.DRA_OPS.index(s) for s in dra_policy.SIGNED]) & (m > 0)
    negative = int((levels[signed] < dra_policy.GRID).sum())
    assert stats.binomtest(negative, int(signed.sum()), 0.5).pvalue > 1e-3


def test_replay_same_key_same_batch_and_searched_json_roundtrip(tmp_path):
    params = dra_policy.init_params(17)
    params["W"] = params["W"].at[:, 16].set(-3.0)
    params["M_MEAN"] = params["M_MEAN"].at[0, 3].set(1.7)  # clipped to 1 in the JSON
    path = tmp_path / "policy.json"
    path.write_text(dra_policy.to_json(params, dra_policy.DRA_OPS + (dra_policy.DESTRUCTIVE,)))
    data = json.loads(path.read_text())
    assert set(data) >= {"ops", "policies"} and set(data["policies"]["searched"]) == {
        "W", "M_MEAN", "M_STD"}
    loaded, names = dra_policy.load_policy(str(path))
    assert names[-1] == dra_policy.DESTRUCTIVE and loaded["M_MEAN"][0, 3] == 1.0
    np.testing.assert_allclose(loaded["W"], params["W"], atol=1e-6)
    policy = policies.get_policy("dra", policy=str(path))
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (6, 8, 8, 1), np.uint8))
    fn = jax.jit(policy)
    a, b = fn(jax.random.PRNGKey(1), images), fn(jax.random.PRNGKey(1), images)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, fn(jax.random.PRNGKey(2), images))
    # op_probability by hand: 1 - prod_l (1 - 0.5 softmax(W[l])_j).
    w = np.asarray(loaded["W"], np.float64)
    soft = np.exp(w) / np.exp(w).sum(1, keepdims=True)
    np.testing.assert_allclose(dra_policy.op_probability(loaded), 1 - np.prod(1 - 0.5 * soft, 0),
                               rtol=1e-5)


def test_bad_input_one_line_errors(tmp_path):
    from gar_jax.methods import dra as method

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    cases = [
        lambda: dra_policy.load_policy("nope"),
        lambda: dra_policy.load_policy(str(bad)),
        lambda: dra_policy.load_policy({"W": np.zeros((2, 16)), "M_MEAN": np.zeros((2, 15)),
                                 "M_STD": np.zeros((2, 16))}),
        lambda: dra_policy.check_ops(["ShearX"]),
        lambda: policies.get_policy("dra", policy="cifar10", tau=1),
        lambda: policies.get_policy("dra", policy="cifar10", p_min=0.9, p_max=0.1),
        lambda: dra_policy.replay_policy("cifar10", grid=0),
        lambda: dra_policy.search_augment(dra_policy.init_params(), jax.random.PRNGKey(0),
                                   jnp.zeros((8, 8, 3), jnp.uint8)),
        lambda: dra_policy.init_params(0),
    ]
    config = config_files.load("digits_dra")
    for field, value in [("fraction", 0.0), ("fraction", 0.01), ("tau", 0.0)]:
        c = config_files.load("digits_dra")
        c.dra.search[field] = value
        cases.append(lambda c=c: method.validate(c))
    c = config_files.load("digits_dra_destructive")
    c.dra.policy = "cifar10"
    cases.append(lambda: method.validate(c))
    c = config_files.load("digits_dra")
    c.dra.policy = "no-such-policy"
    cases.append(lambda: method.validate(c))
    method.validate(config)
    for case in cases:
        with pytest.raises(ConfigError) as e:
            case()
        assert "\n" not in str(e.value)


def test_extra_ops_forward_pillow_gradient_permuted_and_refusals():
    """The ops a search may add (dra.extra_ops): forward = Pillow's mirror / flip / rotate(90,
    180, 270) and SamplePairing's neighbour; the magnitude's gradient through x_m = x + m - sg(m)
    is the op's input Jacobian applied to a uniform shift: for a pixel permutation, sum(R);
    SamplePairing passes no gradient to the image's own m."""
    import ml_collections
    from PIL import Image, ImageOps

    from gar_jax.methods import dra as dra_method

    extra = ("SamplePairing", "FlipLR", "FlipUD", "Rotate90", "Rotate180", "Rotate270")
    names = dra_policy.DRA_OPS + extra
    rng = np.random.default_rng(7)
    n, size = len(extra), 8
    xi = rng.integers(0, 256, (n, size, size, 3)).astype(np.float32)
    r = rng.normal(size=(n, size, size, 3))
    op = jnp.arange(len(dra_policy.DRA_OPS), len(names), dtype=jnp.int32)
    m = jnp.asarray(rng.uniform(0.2, 0.9, n).astype(np.float32))
    sign = jnp.ones(n)
    key = jax.random.PRNGKey(0)
    def objective(mm):
        y = dra_policy.apply_ops(names, key, jnp.asarray(xi), op, mm, sign)
        return jnp.sum(y * r), y

    (_, out), g = jax.jit(jax.value_and_grad(objective, has_aux=True))(m)  # one compilation
    out, g = np.asarray(out), np.asarray(g)
    pil = {"FlipLR": ImageOps.mirror, "FlipUD": ImageOps.flip,
           "Rotate90": lambda im: im.rotate(90), "Rotate180": lambda im: im.rotate(180),
           "Rotate270": lambda im: im.rotate(270)}
    for i, name in enumerate(extra):
        if name == "SamplePairing":
            np.testing.assert_array_equal(out[i], xi[i - 1])
            assert g[i] == 0.0
            continue
        ref = np.asarray(pil[name](Image.fromarray(xi[i].astype(np.uint8))), np.float32)
        np.testing.assert_array_equal(out[i], ref, err_msg=name)
        assert g[i] == pytest.approx(float(np.sum(r[i])), rel=1e-4), name
    # Config: extra ops after the 16 (and SamplePairing), once each; published policies refuse.
    cfg = ml_collections.ConfigDict({"dra": {"destructive_op": True, "extra_ops": "flip_ud"}})
    assert dra_method.op_names(cfg) == dra_policy.DRA_OPS + ("SamplePairing", "FlipUD")
    for bad, message in (("invert", "unknown op 'invert'"), ("sample_pairing", "twice")):
        cfg.dra.extra_ops = bad
        with pytest.raises(ConfigError, match=message):
            dra_method.op_names(cfg)
    with pytest.raises(ConfigError, match="each once"):
        dra_policy.check_ops(dra_policy.DRA_OPS + ("FlipLR", "FlipLR"))
    with pytest.raises(ConfigError, match="each once"):
        dra_policy.check_ops(("FlipLR",) + dra_policy.DRA_OPS)
