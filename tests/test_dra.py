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

from gar_jax.augment import applier, dra, ops, pil_reference, policies
from gar_jax.errors import ConfigError

REFERENCE = "/work/shared/reference/dra_policies.json"


def hand_argument(name, m, sign, size):
    """The mapping written out from reference/dra_policies.json's magnitude_to_argument."""
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
    names = dra.DRA_OPS + (dra.DESTRUCTIVE,)
    grid, size = dra.GRID, 32
    cases = [(j, m, s) for j in range(len(names)) for m in (0.0, 0.137, 0.5, 0.803, 1.0)
             for s in (1, -1) if s == 1 or names[j] in dra.SIGNED]
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (len(cases), size, size, 3), np.uint8)
    op = np.array([[j] for j, _, _ in cases], np.int32)
    levels = np.array([[grid + round(s * m * grid)] for _, m, s in cases], np.int32)
    key = jax.random.PRNGKey(3)
    out = np.asarray(applier.apply_sequence(dra.replay_space(names, size, size), key, images,
                                            op, levels, np.ones_like(op, bool)))
    _, center = applier.slot_randomness(key, len(cases), 1, size, size)
    center = np.asarray(center)
    for i, (j, m, s) in enumerate(cases):
        name = names[j]
        arg = hand_argument(name, m, s, size)
        assert arg == pytest.approx(dra.argument(name, s * m, size, size)) if arg is not None \
            else dra.argument(name, s * m) is None
        kwargs = {}
        if name == "Cutout":
            kwargs["center"] = tuple(center[i, 0])
        if name == dra.DESTRUCTIVE:
            kwargs["other"] = images[i - 1]
        expected = pil_reference.apply_array(dra.OUR_NAME[name], images[i], arg, **kwargs)
        if name in ("Brightness", "Color", "Sharpness", "Contrast"):
            # The batched applier's blends may differ from Pillow by one level (its own
            # tests allow the same); everything else is exact.
            diff = np.abs(out[i].astype(int) - expected.astype(int))
            assert diff.max() <= 1 and np.mean(diff > 0) < 0.02, (name, m, s)
        else:
            np.testing.assert_array_equal(out[i], expected, err_msg=f"{name} m={m} sign={s}")


def test_argument_table_matches_reference_file():
    if not os.path.exists(REFERENCE):
        pytest.skip("reference/dra_policies.json not present")
    with open(REFERENCE, encoding="utf-8") as f:
        data = json.load(f)
    assert tuple(data["ops"]) == dra.DRA_OPS
    text = json.dumps(data["magnitude_to_argument"])
    for piece in ("m * 0.3", "m * 10 pixels", "m * 30 degrees", "1 + s * 0.9 * m",
                  "max(H, W) * 0.2 * m", "ceil(256 - 256 * m)", "ceil(8 - 4 * m)",
                  "int(110 * m)"):
        assert piece in text, piece
    for name in ("WRN-28-10 on CIFAR-10", "WRN-28-10 on CIFAR-100"):
        params, names = dra.load_policy(REFERENCE, name)
        assert names == dra.DRA_OPS
        for k in ("W", "M_MEAN", "M_STD"):
            np.testing.assert_allclose(params[k], np.asarray(dra.PUBLISHED[name][k]), atol=1e-7)


def test_gumbel_one_hot_frequencies_and_straight_through_gradient():
    logits = jnp.asarray(np.random.default_rng(2).normal(0, 0.8, 16), jnp.float32)
    n = 40000
    _, index = jax.vmap(lambda k: dra.gumbel_one_hot(k, logits, 0.5))(
        jax.random.split(jax.random.PRNGKey(0), n))
    counts = np.bincount(np.asarray(index), minlength=16)
    p = np.exp(np.asarray(logits, np.float64))
    expected = n * p / p.sum()
    assert stats.chisquare(counts, expected).pvalue > 1e-3, (counts, expected)
    # Forward: an exact one-hot; backward: the gradient of softmax((logits + g) / tau).
    key, c = jax.random.PRNGKey(5), jnp.arange(16.0)
    onehot, idx = dra.gumbel_one_hot(key, logits, 0.5)
    np.testing.assert_array_equal(onehot, jax.nn.one_hot(idx, 16))
    grad = jax.grad(lambda w: jnp.sum(dra.gumbel_one_hot(key, w, 0.5)[0] * c))(logits)
    g = jax.random.gumbel(key, logits.shape)
    soft = jax.nn.softmax((logits + g) / 0.5)
    np.testing.assert_allclose(grad, soft * (c - jnp.sum(soft * c)) / 0.5, rtol=1e-5, atol=1e-6)


def test_straight_through_and_analytic_magnitude_gradients():
    """d<op(x, m), R>/dm: analytic for ops differentiable in m (brightness: closed form; rotate:
    the bilinear op of the library, and finite differences), the straight-through sum(R) for
    the others."""
    names = dra.DRA_OPS
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.integers(0, 256, (3, 8, 8, 3)).astype(np.float32))
    r = jnp.asarray(rng.normal(size=(3, 8, 8, 3)).astype(np.float32))
    op = jnp.asarray([names.index("Brightness"), names.index("Rotate"),
                      names.index("Solarize")], jnp.int32)
    sign = jnp.asarray([-1.0, 1.0, 1.0])
    m = jnp.asarray([0.3, 0.41, 0.6])
    key = jax.random.PRNGKey(0)

    def objective(m):  # per image: <op_i(x_i, m_i), R_i>
        return jnp.sum(dra.apply_ops(names, key, x, op, m, sign) * r, axis=(1, 2, 3))

    # Images are independent, so the gradient of the sum is each image's own d/dm_i.
    fn = jax.jit(lambda m: (objective(m), jax.grad(lambda mm: jnp.sum(objective(mm)))(m)))
    value, g = (np.asarray(a, np.float64) for a in fn(m))
    # Brightness: y = clip(f x), f = 1 - 0.9 m: dy/dm = -0.9 x where 0 < f x < 255.
    f = 1 - 0.9 * 0.3
    inside = (f * x[0] > 0) & (f * x[0] < 255)
    np.testing.assert_allclose(g[0], float(jnp.sum(jnp.where(inside, -0.9 * x[0] * r[0], 0))),
                               rtol=1e-4)
    # Rotate: the library's bilinear op at 30 m degrees, and a central difference.
    ref = jax.jit(jax.grad(lambda mm: jnp.sum(ops.apply("rotate", x[1], 30 * mm,
                                                        mode="bilinear") * r[1])))(0.41)
    np.testing.assert_allclose(g[1], ref, rtol=1e-4)
    h = 1e-2
    fd = (fn(m.at[1].add(h))[0][1] - fn(m.at[1].add(-h))[0][1]) / (2 * h)
    np.testing.assert_allclose(g[1], fd, rtol=2e-2)
    # Solarize: a step function of m; straight-through: d/dm (y + m - sg(m)) = 1 per pixel.
    np.testing.assert_allclose(g[2], float(jnp.sum(r[2])), rtol=1e-5)
    expected = pil_reference.apply_array("solarize", np.asarray(x[2], np.uint8),
                                         math.ceil(256 - 256 * 0.6))
    np.testing.assert_allclose(value[2], np.sum(expected * np.asarray(r[2])), rtol=1e-5)


@pytest.fixture(scope="module")
def search_fn():
    """value_and_grad of <search_augment(params, key, images), R> (per batch), one layer."""
    names = dra.DRA_OPS + (dra.DESTRUCTIVE,)

    def objective(params, key, images, r):
        out, aux = dra.search_augment(params, key, images, names=names, tau=0.5)
        return jnp.sum(out * r), (out, aux)

    return names, jax.jit(jax.value_and_grad(objective, has_aux=True))


def test_search_augment_same_key_same_batch_and_w_gradient(search_fn):
    names, fn = search_fn
    rng = np.random.default_rng(6)
    images = jnp.asarray(rng.integers(0, 256, (4, 8, 8, 3), np.uint8))
    r = jnp.asarray(rng.normal(size=(4, 8, 8, 3)).astype(np.float32))
    params = dra.init_params(len(names), layers=1)
    params["W"] = jnp.asarray(rng.normal(0, 0.5, (1, len(names))), jnp.float32)
    key = jax.random.PRNGKey(11)
    (value, (out, aux)), grads = fn(params, key, images, r)
    (value2, (out2, _)), _ = fn(params, key, images, r)
    np.testing.assert_array_equal(out, out2)
    (_, (out3, _)), _ = fn(params, jax.random.PRNGKey(12), images, r)
    assert not np.array_equal(out, out3)
    # W's straight-through gradient: v_j = <R, y> for the chosen op, sum(R) for the others
    # (their terms are onehot_j * 1), through softmax((W + g) / tau).
    index = int(aux["op"][0])
    v = np.full(len(names), float(jnp.sum(r)))
    v[index] = float(value)
    k_layer = jax.random.split(key, 1)[0]
    g = jax.random.gumbel(jax.random.split(k_layer, 6)[0], (len(names),))
    soft = np.asarray(jax.nn.softmax((params["W"][0] + g) / 0.5), np.float64)
    assert int(np.argmax(np.asarray(params["W"][0] + g))) == index
    np.testing.assert_allclose(grads["W"][0], soft * (v - soft @ v) / 0.5, rtol=2e-3,
                               atol=1e-3 * np.abs(v).max())
    # Unchosen ops' magnitudes get no gradient.
    others = np.arange(len(names)) != index
    np.testing.assert_array_equal(np.asarray(grads["M_MEAN"][0])[others], 0.0)


def test_replay_reproduces_published_policy_statistics():
    policy = policies.get_policy("dra", policy="WRN-28-10 on CIFAR-10")
    params = dra.PUBLISHED["WRN-28-10 on CIFAR-10"]
    n = 40000
    op, levels, active = (np.asarray(a) for a in jax.jit(policy.sample, static_argnums=1)(
        jax.random.PRNGKey(0), n))
    m = np.abs(levels - dra.GRID) / dra.GRID
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
    signed = np.isin(op, [dra.DRA_OPS.index(s) for s in dra.SIGNED]) & (m > 0)
    negative = int((levels[signed] < dra.GRID).sum())
    assert stats.binomtest(negative, int(signed.sum()), 0.5).pvalue > 1e-3


def test_replay_same_key_same_batch_and_searched_json_roundtrip(tmp_path):
    params = dra.init_params(17)
    params["W"] = params["W"].at[:, 16].set(-3.0)
    params["M_MEAN"] = params["M_MEAN"].at[0, 3].set(1.7)  # clipped to 1 in the JSON
    path = tmp_path / "policy.json"
    path.write_text(dra.to_json(params, dra.DRA_OPS + (dra.DESTRUCTIVE,)))
    data = json.loads(path.read_text())
    assert set(data) >= {"ops", "policies"} and set(data["policies"]["searched"]) == {
        "W", "M_MEAN", "M_STD"}
    loaded, names = dra.load_policy(str(path))
    assert names[-1] == dra.DESTRUCTIVE and loaded["M_MEAN"][0, 3] == 1.0
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
    np.testing.assert_allclose(dra.op_probability(loaded), 1 - np.prod(1 - 0.5 * soft, 0),
                               rtol=1e-5)


def test_bad_input_one_line_errors(tmp_path):
    from gar_jax.methods import dra as method

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    cases = [
        lambda: dra.load_policy("nope"),
        lambda: dra.load_policy(str(bad)),
        lambda: dra.load_policy({"W": np.zeros((2, 16)), "M_MEAN": np.zeros((2, 15)),
                                 "M_STD": np.zeros((2, 16))}),
        lambda: dra.check_ops(["ShearX"]),
        lambda: policies.get_policy("dra", policy="cifar10", tau=1),
        lambda: policies.get_policy("dra", policy="cifar10", p_min=0.9, p_max=0.1),
        lambda: dra.replay_policy("cifar10", grid=0),
        lambda: dra.search_augment(dra.init_params(), jax.random.PRNGKey(0),
                                   jnp.zeros((8, 8, 3), jnp.uint8)),
        lambda: dra.init_params(0),
    ]
    config = method.digits_config()
    for field, value in [("fraction", 0.0), ("fraction", 0.01), ("tau", 0.0)]:
        c = method.digits_config()
        c.dra.search[field] = value
        cases.append(lambda c=c: method.validate(c))
    c = method.digits_config(policy="cifar10", destructive_op=True)
    cases.append(lambda: method.validate(c))
    c = method.digits_config(policy="no-such-policy")
    cases.append(lambda: method.validate(c))
    method.validate(config)
    for case in cases:
        with pytest.raises(ConfigError) as e:
            case()
        assert "\n" not in str(e.value)
