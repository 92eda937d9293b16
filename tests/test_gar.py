"""gar.alignment against a plain per-example loop of jax.grad, in float64.

The reference networks below are written again in plain jax.numpy / lax (their BatchNorm
statistics computed by hand, two-pass), independently of gar.py's flax interceptor; a check that
they reproduce flax's train-mode logits pins that both describe the same function.
"""
import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import optax
import pytest

from gar_jax import batchnorm, gar
from gar_jax.errors import ConfigError

B = 7          # batch; chunk size 3 does not divide it
CHUNK = 3
EPS = 1e-5     # flax BatchNorm's default epsilon
CLASSES = 3
METHODS = [("jvp", None), ("vmap", None), ("vmap", CHUNK), ("jvp", CHUNK)]


@pytest.fixture(scope="module", autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


class MLP(nn.Module):
    """Dense(6) → [BatchNorm] → ReLU → Dense(3) on flattened images."""
    bn: bool

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(6)(x.reshape(x.shape[0], -1))
        if self.bn:
            x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dense(CLASSES)(nn.relu(x))


class ConvNet(nn.Module):
    """Conv3x3(3) → [BN] → ReLU → Conv3x3/2(2) → [BN] → ReLU → Dense(3): BN at two depths."""
    bn: bool

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(3, (3, 3))(x)
        if self.bn:
            x = nn.BatchNorm()(x, use_running_average=not train)  # flag as call argument
        x = nn.Conv(2, (3, 3), strides=2)(nn.relu(x))
        if self.bn:
            x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dense(CLASSES)(nn.relu(x).reshape(x.shape[0], -1))


# ---- independent reference: the same nets in plain jnp, BN statistics by hand ----------------
def _ref_bn(h, p, stats, i):
    if stats[i] is None:  # two-pass biased variance over all non-feature axes
        axes = tuple(range(h.ndim - 1))
        mean = h.mean(axes)
        stats[i] = (mean, ((h - mean) ** 2).mean(axes))
    mean, var = stats[i]
    return (h - mean) / jnp.sqrt(var + EPS) * p["scale"] + p["bias"]


def _ref_conv(x, p, stride):
    y = jax.lax.conv_general_dilated(x, p["kernel"], (stride, stride), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["bias"]


def ref_forward(kind, bn, params, x, stats):
    """Logits of MLP/ConvNet; `stats` is a list whose None entries are filled from this batch."""
    if kind == "mlp":
        h = x.reshape(x.shape[0], -1) @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
        if bn:
            h = _ref_bn(h, params["BatchNorm_0"], stats, 0)
        d = params["Dense_1"]
        return jax.nn.relu(h) @ d["kernel"] + d["bias"]
    h = _ref_conv(x, params["Conv_0"], 1)
    if bn:
        h = _ref_bn(h, params["BatchNorm_0"], stats, 0)
    h = _ref_conv(jax.nn.relu(h), params["Conv_1"], 2)
    if bn:
        h = _ref_bn(h, params["BatchNorm_1"], stats, 1)
    d = params["Dense_0"]
    return jax.nn.relu(h).reshape(x.shape[0], -1) @ d["kernel"] + d["bias"]


def ref_alignment(kind, bn, params, batch, direction):
    """Loop over examples: jax.grad of that example's loss, dotted with direction in numpy."""
    stats = [None, None]
    ref_forward(kind, bn, params, batch["image"], stats)  # fills the batch statistics
    stats = [jax.tree.map(np.asarray, s) for s in stats]

    @jax.jit
    def example_grad(p, x, y):
        def loss(p):
            logits = ref_forward(kind, bn, p, x[None], list(stats))[0]
            return jax.nn.logsumexp(logits) - logits[y]
        return jax.grad(loss)(p)

    d = [np.asarray(a) for a in jax.tree.leaves(direction)]
    out = []
    for n in range(B):
        g = jax.tree.leaves(example_grad(params, batch["image"][n], batch["label"][n]))
        out.append(sum(float(np.sum(np.asarray(a) * b)) for a, b in zip(g, d)))
    return np.array(out)


MODELS = {"mlp": MLP, "conv": ConvNet}
CASES = [("mlp", False), ("mlp", True), ("conv", False), ("conv", True)]


def _make_case(kind, bn):
    """(model, float64 variables, batch, direction), drawn with numpy (threefry compiles slowly).

    Parameters are standard normal scaled by 1/sqrt(fan-in), BN scales around 1: every
    parameter, biases included, matters for the gradients."""
    model = MODELS[kind](bn=bn)
    rng = np.random.default_rng(CASES.index((kind, bn)))
    x = rng.normal(size=(B, 5, 5, 2))
    batch = {"image": jnp.asarray(x), "label": jnp.asarray(rng.integers(0, CLASSES, B), jnp.int32)}
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))

    def draw(path, s):
        fan_in = np.prod(s.shape[:-1]) if len(s.shape) > 1 else 1.0
        value = rng.normal(size=s.shape) / np.sqrt(fan_in)
        return jnp.asarray(value + 1.0 if "scale" in jax.tree_util.keystr(path) else value)

    variables = jax.tree_util.tree_map_with_path(draw, shapes)
    direction = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape)), shapes["params"])
    return model, variables, batch, direction


@pytest.fixture(scope="module")
def cases(float64):
    return {case: _make_case(*case) for case in CASES}


def _alignment_jit(model, method, chunk_size):
    """alignment with the frozen-BN loss built inside jit, as training code does."""
    def f(variables, batch, direction):
        loss_fn = batchnorm.frozen_bn_loss_fn(model, variables, batch,
                                        optax.softmax_cross_entropy_with_integer_labels,
                                        train=True)
        return gar.alignment(loss_fn, variables["params"], batch, direction, method=method,
                             chunk_size=chunk_size)
    return jax.jit(f)


@pytest.mark.parametrize("case", CASES, ids=[f"{k}{'_bn' if b else ''}" for k, b in CASES])
def test_alignment_equals_per_example_grad_loop(cases, case):
    kind, bn = case
    model, variables, batch, direction = cases[case]
    params = variables["params"]

    # The reference net is flax's net: same train-mode logits on the batch.
    flax_logits, ref_logits = jax.jit(lambda v, x: (
        model.apply(v, x, train=True, mutable=["batch_stats"])[0],
        ref_forward(kind, bn, v["params"], x, [None, None])))(variables, batch["image"])
    np.testing.assert_allclose(flax_logits, ref_logits, rtol=1e-12, atol=1e-12)

    expected = ref_alignment(kind, bn, params, batch, direction)
    assert np.abs(expected).min() > 1e-3  # nonzero, so relative tolerances mean something
    # Chunked variants compile slowly on CPU: checked on the deepest case (BN at two depths).
    for method, chunk in METHODS if case == ("conv", True) else METHODS[:2]:
        got = _alignment_jit(model, method, chunk)(variables, batch, direction)
        assert got.shape == (B,) and got.dtype == jnp.float64
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12,
                                   err_msg=f"method={method} chunk_size={chunk}")


def test_frozen_bn_helper_matches_flax_train_forward(cases):
    model, variables, batch, _ = cases[("conv", True)]
    loss_fn = batchnorm.frozen_bn_loss_fn(model, variables, batch,
                                    optax.softmax_cross_entropy_with_integer_labels, train=True)
    logits, _ = model.apply(variables, batch["image"], train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(
        loss_fn(variables["params"], batch),
        optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]), rtol=1e-13)

    stats = batchnorm.batch_norm_stats(model, variables, batch["image"], train=True)
    assert sorted(stats) == ["BatchNorm_0", "BatchNorm_1"]
    ref_stats = [None, None]
    ref_forward("conv", True, variables["params"], batch["image"], ref_stats)
    for name, (mean, var) in zip(sorted(stats), ref_stats):
        np.testing.assert_allclose(stats[name]["mean"], mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(stats[name]["var"], var, rtol=1e-12, atol=1e-14)

    # A repeated call of one BatchNorm module gets its own statistics ("path#1").
    class Twice(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            norm = nn.BatchNorm(use_running_average=not train)
            return norm(norm(x) * 2.0 + 1.0)
    x = batch["image"].reshape(B, -1)
    twice = Twice()
    v = jax.tree.map(lambda a: a.astype(jnp.float64), twice.init(jax.random.key(0), x, train=False))
    s = batchnorm.batch_norm_stats(twice, v, x, train=True)
    assert sorted(s) == ["BatchNorm_0", "BatchNorm_0#1"]
    ref_y, _ = twice.apply(v, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(batchnorm.apply_with_batch_stats(twice, v, x, s, train=True), ref_y,
                               rtol=1e-12, atol=1e-12)


def test_without_batchnorm_the_helper_changes_nothing(cases):
    model, variables, batch, direction = cases[("conv", False)]
    ce = optax.softmax_cross_entropy_with_integer_labels

    def plain(params, batch):
        return ce(model.apply({"params": params}, batch["image"], train=True), batch["label"])

    helper = batchnorm.frozen_bn_loss_fn(model, variables, batch, ce, train=True)
    assert batchnorm.batch_norm_stats(model, variables, batch["image"], train=True) == {}
    for method in ("jvp", "vmap"):
        with_helper, without = jax.jit(lambda p, b, d: [
            gar.alignment(f, p, b, d, method=method) for f in (helper, plain)])(
                variables["params"], batch, direction)
        np.testing.assert_allclose(with_helper, without, rtol=1e-14, atol=1e-14)

    # Eval-mode BatchNorm (running averages) is already per-example: it passes through.
    bn_model, bn_vars, _, _ = cases[("conv", True)]
    frozen = batchnorm.frozen_bn_loss_fn(bn_model, bn_vars, batch, ce, train=False)
    np.testing.assert_allclose(
        frozen(bn_vars["params"], batch),
        ce(bn_model.apply(bn_vars, batch["image"], train=False), batch["label"]), rtol=1e-14)


def test_nslr(cases):
    model, variables, batch, _ = cases[("mlp", False)]
    ce = optax.softmax_cross_entropy_with_integer_labels
    mean_loss = lambda p, b: ce(model.apply({"params": p}, b["image"], train=True),
                                b["label"]).mean()
    next_params = jax.tree.map(lambda a: a * 0.9, variables["params"])
    next_loss = mean_loss(next_params, jax.tree.map(lambda a: a[::-1], batch))

    nslr = gar.nslr_reward(next_loss, B)
    assert nslr.shape == (B,)
    np.testing.assert_array_equal(nslr, np.full(B, -float(next_loss)))


def test_bad_input_raises_config_error(cases):
    model, variables, batch, direction = cases[("mlp", False)]
    ce = optax.softmax_cross_entropy_with_integer_labels
    loss = lambda p, b: ce(model.apply({"params": p}, b["image"], train=True), b["label"])
    params = variables["params"]

    with pytest.raises(ConfigError, match="unknown method 'backprop'"):
        gar.alignment(loss, params, batch, direction, method="backprop")
    with pytest.raises(ConfigError, match="layerwise GAR: gar_jax.gar_layerwise"):
        gar.alignment(loss, params, batch, direction, method="layerwise")
    with pytest.raises(ConfigError, match="chunk_size"):
        gar.alignment(loss, params, batch, direction, method="vmap", chunk_size=0)
    missing = {"Dense_0": direction["Dense_0"]}
    with pytest.raises(ConfigError, match=r"missing \[\"\['Dense_1'\]\['bias'\]\""):
        gar.alignment(loss, params, batch, missing)
    wrong = jax.tree.map(lambda a: a, direction)
    wrong["Dense_1"] = {**wrong["Dense_1"], "kernel": wrong["Dense_1"]["kernel"].T}
    with pytest.raises(ConfigError, match=r"direction\['Dense_1'\]\['kernel'\] has shape"):
        gar.alignment(loss, params, batch, wrong)
    mean_loss = lambda p, b: loss(p, b).mean()
    for method in ("jvp", "vmap"):
        with pytest.raises(ConfigError, match="one loss per example|per-example losses"):
            jax.eval_shape(lambda: gar.alignment(mean_loss, params, batch, direction,
                                                 method=method))
