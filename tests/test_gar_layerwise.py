"""Layer-wise GAR equals gar.alignment (vmap and jvp) under frozen batch statistics, in float64.

The references are `gar.alignment(batchnorm.frozen_bn_loss_fn(...), method="vmap" | "jvp")`, which
tests/test_gar.py checks against a hand-written per-example loop; the layer-wise path shares no
code with them except flax's BatchNorm-statistics rule.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from gar_jax import batchnorm, gar
from gar_jax import gar_layerwise
from gar_jax.errors import ConfigError
from gar_jax.models.wrn import WideResNet
from gar_jax.mesh import DATA_AXIS, make_mesh

B = 8
F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)
loss_fn = optax.softmax_cross_entropy_with_integer_labels


@pytest.fixture(scope="module", autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


class Zoo(nn.Module):
    """Every supported layer kind, with strides, padding, groups, dilation, biases, a BatchNorm
    flag as attribute and as call argument, and one conv called twice (shared weights)."""
    norm: str

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(4, (3, 3), strides=2, padding=((1, 0), (0, 1)), **F64)(x)
        if self.norm == "batch":
            x = nn.BatchNorm(use_running_average=not train, **F64)(x)
        else:
            x = nn.GroupNorm(num_groups=2, **F64)(x)
        shared = nn.Conv(4, (3, 3), feature_group_count=2, kernel_dilation=2, padding="SAME",
                         **F64)
        x = shared(nn.relu(x))
        x = nn.LayerNorm(**F64)(x)
        x = shared(jnp.tanh(x))
        if self.norm == "batch":
            x = nn.BatchNorm(**F64)(x, use_running_average=not train)
        x = nn.RMSNorm(**F64)(nn.relu(x))
        x = nn.Dense(5, use_bias=False, **F64)(x.mean((1, 2)))
        return nn.Dense(3, **F64)(nn.relu(x))


def _case(model, image_shape, seed, num_classes=3):
    """(model, float64 variables, batch, direction) drawn with numpy (eager init compiles slowly).

    Weights are normal / sqrt(fan-in); norm scales 1 + noise and biases noise, so that every
    parameter's gradient matters."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.uniform(0, 255, (B,) + image_shape))
    batch = {"image": x, "label": jnp.asarray(rng.integers(0, num_classes, B), jnp.int32)}
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))

    def draw(path, s):
        fan_in = np.prod(s.shape[:-1]) if len(s.shape) > 1 else 1.0
        value = rng.normal(size=s.shape) / np.sqrt(fan_in)
        if "scale" in jax.tree_util.keystr(path) or "var" in jax.tree_util.keystr(path):
            value = 1.0 + 0.3 * value
        return jnp.asarray(value)

    variables = jax.tree_util.tree_map_with_path(draw, shapes)
    direction = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape)), shapes["params"])
    return model, variables, batch, direction


# WRN-10-1 in float64 (its logits are cast to float32 at the end, hence looser tolerances).
CASES = {
    "zoo_batch": lambda: _case(Zoo("batch"), (7, 7, 2), 0),
    "zoo_group": lambda: _case(Zoo("group"), (7, 7, 2), 1),
    "wrn_batch": lambda: _case(WideResNet(10, 1, 3, norm="batch", dtype=jnp.float64), (8, 8, 1), 2),
}


@pytest.mark.parametrize("name", ["zoo_batch", "zoo_group"])
def test_layerwise_equals_vmap_and_jvp(name):
    model, variables, batch, direction = CASES[name]()

    @jax.jit
    def everything(variables, batch, direction):
        per_example = batchnorm.frozen_bn_loss_fn(model, variables, batch, loss_fn, train=True)
        refs = [gar.alignment(per_example, variables["params"], batch, direction, method=m)
                for m in ("vmap", "jvp")]
        cap = gar_layerwise.capture(model, variables, batch, loss_fn, train=True)
        out = gar_layerwise.alignment_from_tape(model, variables, cap.tape, direction,
                                                batch["image"], train=True)
        grads_tape = gar_layerwise.capture(model, variables, batch, loss_fn, store="gradients",
                                           train=True).tape
        refs.append(gar_layerwise.alignment_from_tape(model, variables, grads_tape, direction,
                                                      batch["image"], train=True))

        def train_loss(params):  # the ordinary training step
            logits, state = model.apply({**variables, "params": params}, batch["image"],
                                        train=True, mutable=["batch_stats"])
            return loss_fn(logits, batch["label"]).mean(), state

        return out, refs, cap, jax.value_and_grad(train_loss, has_aux=True)(variables["params"])

    got, (vmap, jvp, from_grads), cap, ((loss, state), grads) = everything(variables, batch,
                                                                          direction)
    assert got.shape == (B,)
    rtol = 1e-9 if jvp.dtype == jnp.float64 else 1e-5
    for other in (got, jvp, from_grads):  # from_grads: per-example gradients on the tape
        np.testing.assert_allclose(other, vmap, rtol=rtol, atol=rtol * np.abs(vmap).max())
    # The captured step is the ordinary training step: same loss, gradient and BN statistics.
    np.testing.assert_allclose(cap.loss, loss, rtol=1e-12)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12),
                 cap.grads, grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12),
                 cap.model_state, state)


def test_sharded_wrn_is_per_device(float64):
    """A BatchNorm WRN inside shard_map over 8 devices: each device's alignments are those of
    its own statistics (the training stack's per-device BatchNorm). (GroupNorm, 8 devices ==
    1 device: through the OLA step pair in test_ola_train.py.)"""
    mesh = make_mesh()
    devices = mesh.devices.size
    model, variables, batch, direction = CASES["wrn_batch"]()

    def local(variables, images, labels, direction):
        cap = gar_layerwise.capture(model, variables, {"image": images, "label": labels},
                                    loss_fn, axis_name=DATA_AXIS, train=True)
        return gar_layerwise.alignment_from_tape(model, variables, cap.tape, direction, images,
                                                 train=True)

    sharded = jax.jit(jax.shard_map(local, mesh=mesh,
                                    in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P()),
                                    out_specs=P(DATA_AXIS)))
    got = sharded(variables, batch["image"], batch["label"], direction)

    @jax.jit
    def reference(variables, batch, direction):
        """Each device's shard with its own frozen statistics (vmap over shards)."""
        def one_shard(part):
            pel = batchnorm.frozen_bn_loss_fn(model, variables, part, loss_fn, train=True)
            return gar.alignment(pel, variables["params"], part, direction, method="jvp")
        shards = jax.tree.map(lambda a: a.reshape((devices, -1) + a.shape[1:]), batch)
        return jax.vmap(one_shard)(shards).reshape(-1)

    want = reference(variables, batch, direction)
    # The WRN's logits are float32: alignments agree to float32 rounding.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_unsupported_layer_is_a_config_error():
    class WithEmbed(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            x = nn.Dense(3)(x.reshape(x.shape[0], -1))
            return x + nn.Embed(3, 3)(jnp.zeros((x.shape[0],), jnp.int32))

    model, variables, batch, direction = _case(WithEmbed(), (2, 2, 1), 4)
    with pytest.raises(ConfigError, match="Embed_0.*method='jvp'"):
        gar_layerwise.capture(model, variables, batch, loss_fn, train=True)


# ------------------------------------------------------------------ the contribution convention
# Example n's contribution to the batch gradient: each layer's input a_n times the output-gradient
# δ_n of the ordinary train-mode backward (through the batch statistics), summed over positions.


class Explicit(nn.Module):
    """Conv -> BatchNorm -> Conv -> GroupNorm -> Dense -> Dense that exposes, by flax's own
    `sow` / `perturb`, every layer's input and output (for the output-gradients) and each norm's
    normalized input x̂, computed here by hand."""

    @nn.compact
    def __call__(self, x, train: bool):
        def linear(module, x):  # (sow / perturb names must differ from the module's)
            self.sow("inputs", "in_" + module.name, x)
            return self.perturb("out_" + module.name, module(x))

        def norm(module, x, xhat):
            self.sow("inputs", "in_" + module.name, xhat)
            return self.perturb("out_" + module.name, module(x))

        x = linear(nn.Conv(4, (3, 3), strides=2, padding=((1, 0), (0, 1)), name="conv0", **F64),
                   x)
        mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
        x = nn.relu(norm(nn.BatchNorm(use_running_average=not train, name="bn", **F64), x,
                         (x - mean) * jax.lax.rsqrt(var + 1e-5)))
        x = linear(nn.Conv(4, (3, 3), feature_group_count=2, padding="SAME", name="conv1",
                           **F64), x)
        g = x.reshape(x.shape[:3] + (2, 2))
        xhat = ((g - g.mean((1, 2, 4), keepdims=True)) *
                jax.lax.rsqrt(g.var((1, 2, 4), keepdims=True) + 1e-6)).reshape(x.shape)
        x = nn.relu(norm(nn.GroupNorm(num_groups=2, name="gn", **F64), x, xhat))
        x = nn.relu(linear(nn.Dense(5, name="dense0", **F64), x.mean((1, 2))))
        return linear(nn.Dense(3, name="dense1", **F64), x)


def _explicit_contributions(model, variables, batch):
    """{layer: {leaf: [B, *leaf shape]}}: every example's contribution to the batch gradient,
    built one example at a time from the captured inputs and output-gradients (the outer
    products, for a conv summed over its positions), and the ordinary batch gradient."""
    params = variables["params"]
    zeros = jax.tree.map(jnp.zeros_like, variables["perturbations"])

    def loss(params, perturbations):
        logits, state = model.apply({"params": params, "batch_stats": variables["batch_stats"],
                                     "perturbations": perturbations}, batch["image"],
                                    train=True, mutable=["batch_stats", "inputs"])
        return loss_fn(logits, batch["label"]).mean(), state["inputs"]

    (grads, deltas), inputs = jax.grad(loss, argnums=(0, 1), has_aux=True)(params, zeros)
    modules = {"conv0": nn.Conv(4, (3, 3), strides=2, padding=((1, 0), (0, 1)), **F64),
               "conv1": nn.Conv(4, (3, 3), feature_group_count=2, padding="SAME", **F64),
               "dense0": nn.Dense(5, **F64), "dense1": nn.Dense(3, **F64)}
    out = {}
    for key, (a,) in inputs.items():
        name = key[len("in_"):]
        d = deltas["out_" + name]
        if name in modules:  # per example: d/dW Σ_pos δ_n ⊙ layer(a_n; W)
            def one(a, d, module=modules[name], p=params[name]):
                return jax.grad(lambda p: jnp.sum(module.apply({"params": p}, a[None]) *
                                                  d[None]))(p)
            out[name] = jax.vmap(one)(a, d)
        else:  # norm layers: scale Σ_pos δ_n x̂_n, bias Σ_pos δ_n
            out[name] = {"scale": jnp.sum(d * a, axis=(1, 2)), "bias": jnp.sum(d, axis=(1, 2))}
    return out, grads


def _per_leaf(tape, model, variables, images, direction):
    """[leaves, B]: the tape's alignments with `direction` restricted to one parameter leaf at a
    time (vmapped over the restricted directions), leaves in jax.tree.leaves order."""
    leaves, treedef = jax.tree.flatten(direction)
    count = len(leaves)
    stacked = jax.tree.unflatten(treedef, [
        jnp.stack([leaf if i == j else jnp.zeros_like(leaf) for i in range(count)])
        for j, leaf in enumerate(leaves)])
    return jax.vmap(lambda d: gar_layerwise.alignment_from_tape(
        model, variables, tape, d, images, train=True))(stacked)


@pytest.fixture(scope="module")
def explicit_case():
    model, variables, batch, direction = _case(Explicit(), (7, 7, 2), 5)
    variables = {k: v for k, v in variables.items() if k != "inputs"}
    variables["perturbations"] = jax.tree.map(jnp.zeros_like, variables["perturbations"])
    return model, variables, batch, direction


def test_contribution_per_layer_equals_explicit_outer_products(explicit_case):
    model, variables, batch, direction = explicit_case

    kept = []  # each tape's {layer: entry keys}, recorded while tracing

    @jax.jit
    def run(variables, batch, direction):
        out = []
        for remat in (False, True):
            for store in ("activations", "gradients"):
                cap = gar_layerwise.capture(model, variables, batch, loss_fn, remat=remat,
                                            convention="contribution", store=store,
                                            train=True)
                out.append(_per_leaf(cap.tape, model, variables, batch["image"], direction))
                kept.append({name: sorted(entry) for name, entry in cap.tape.layers.items()})
        return out, _explicit_contributions(model, variables, batch)

    got, (contributions, grads) = run(variables, batch, direction)
    # store="gradients" keeps per-example gradients of the strided, asymmetrically padded conv
    # and the Dense layers; the grouped conv keeps its input (and output-gradient).
    assert kept[1] == {"conv0": ["g", "gb"], "bn": ["u", "v"], "conv1": ["a", "delta"],
                       "gn": ["u", "v"], "dense0": ["g", "gb"], "dense1": ["g", "gb"]}, kept[1]
    assert kept[3]["conv1"] == ["delta"] and kept[3]["conv0"] == ["g", "gb"]
    # The reference's contributions sum to the batch gradient.
    jax.tree.map(lambda c, g: np.testing.assert_allclose(c.sum(0), g, rtol=1e-10, atol=1e-12),
                 contributions, grads)
    # Each leaf's alignment: B ⟨c_n, G⟩ for every example n.
    want = np.stack(jax.tree.leaves(jax.tree.map(
        lambda c, g: B * jnp.sum(c * g, axis=tuple(range(1, c.ndim))), contributions,
        direction)))
    for per_leaf in got:  # without and with remat, activations or per-example gradients
        np.testing.assert_allclose(per_leaf, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


def _mlp_case():
    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            x = nn.relu(nn.Dense(6, **F64)(x.reshape(x.shape[0], -1)))
            return nn.Dense(3, **F64)(nn.tanh(nn.Dense(5, **F64)(x)))
    return _case(MLP(), (3, 2, 1), 6)


def _conv_case():
    class ConvNet(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            x = nn.relu(nn.Conv(3, (3, 3), strides=2, **F64)(x))
            x = nn.relu(nn.Conv(4, (2, 2), padding="VALID", use_bias=False, **F64)(x))
            return nn.Dense(3, **F64)(x.mean((1, 2)))
    return _case(ConvNet(), (6, 6, 2), 7)


SUM_CASES = {"mlp": _mlp_case, "conv": _conv_case, **CASES,
             "wrn_group": lambda: _case(WideResNet(10, 1, 3, norm="group", dtype=jnp.float64),
                                        (8, 8, 1), 8)}


@pytest.mark.parametrize("name", ["mlp", "conv", "zoo_group", "wrn_batch"])
def test_contributions_sum_to_the_batch_gradient(name):
    """Σ_n GAR_n = B ⟨∇L, G⟩ leaf by leaf (contribution convention; remat gives the same);
    without BatchNorm contribution == frozen (== vmap(grad), test above and here). (A net with
    BatchNorm and GroupNorm: the explicit reference above.)"""
    model, variables, batch, direction = SUM_CASES[name]()
    has_bn = "batch_stats" in variables

    @jax.jit
    def run(variables, batch, direction):
        cap = gar_layerwise.capture(model, variables, batch, loss_fn, convention="contribution",
                                    train=True)
        per_leaf = _per_leaf(cap.tape, model, variables, batch["image"], direction)
        remat = gar_layerwise.capture(model, variables, batch, loss_fn, remat=True,
                                      convention="contribution", train=True)
        others = [gar_layerwise.alignment_from_tape(model, variables, remat.tape, direction,
                                                    batch["image"], train=True)]
        if not has_bn:
            others.append(gar_layerwise.alignment(model, variables, batch, direction, loss_fn,
                                                  train=True))  # frozen
        if name in ("mlp", "conv"):
            others.append(gar.alignment(lambda p, b: loss_fn(model.apply(
                {"params": p}, b["image"], train=True), b["label"]), variables["params"], batch,
                direction, method="vmap"))
        return per_leaf, cap.grads, others

    per_leaf, grads, others = run(variables, batch, direction)
    want = B * np.array([np.sum(g * d) for g, d in zip(jax.tree.leaves(grads),
                                                       jax.tree.leaves(direction))])
    rtol = 1e-9 if name != "wrn_batch" else 1e-5  # the WRN's logits are float32
    np.testing.assert_allclose(per_leaf.sum(1), want, rtol=rtol, atol=rtol * np.abs(want).max())
    contribution = per_leaf.sum(0)
    close = lambda x: np.testing.assert_allclose(  # noqa: E731
        x, contribution, rtol=rtol, atol=rtol * np.abs(contribution).max())
    close(others[0])  # remat
    for other in others[1:]:  # BatchNorm-free: frozen, vmap
        close(other)


def test_sharded_groupnorm_wrn_equals_one_device():
    """GroupNorm WRN, contribution convention, remat tape: 8 devices (shard_map over the batch)
    give the numbers of one device."""
    remat = True
    mesh = make_mesh()
    model, variables, batch, direction = SUM_CASES["wrn_group"]()
    spec = gar_layerwise.Tape(layers=P(DATA_AXIS), scale=P(), params=P(), stats=P(DATA_AXIS))

    def capture(variables, images, labels, axis_name=None):
        return gar_layerwise.capture(model, variables, {"image": images, "label": labels},
                                     loss_fn, axis_name=axis_name, convention="contribution",
                                     remat=remat, train=True)

    sharded_capture = jax.shard_map(
        lambda v, x, y: (lambda c: (c.grads, c.tape))(capture(v, x, y, DATA_AXIS)), mesh=mesh,
        in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)), out_specs=(P(), spec))
    replay = lambda v, tape, x, d: gar_layerwise.alignment_from_tape(  # noqa: E731
        model, v, tape, d, x, train=True)
    sharded_replay = jax.shard_map(replay, mesh=mesh,
                                   in_specs=(P(), spec, P(DATA_AXIS), P()),
                                   out_specs=P(DATA_AXIS))

    @jax.jit
    def run(variables, batch, direction):
        grads, tape = sharded_capture(variables, batch["image"], batch["label"])
        one = capture(variables, batch["image"], batch["label"])
        return (grads, sharded_replay(variables, tape, batch["image"], direction), one.grads,
                replay(variables, one.tape, batch["image"], direction))

    grads8, got8, grads1, got1 = run(variables, batch, direction)
    np.testing.assert_allclose(got8, got1, rtol=1e-5, atol=1e-5 * np.abs(got1).max())
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 grads8, grads1)


def test_bad_convention_is_a_config_error():
    model, variables, batch, _ = _mlp_case()
    with pytest.raises(ConfigError, match="convention='contrib'"):
        gar_layerwise.capture(model, variables, batch, loss_fn, convention="contrib",
                              train=True)


# ------------------------------------------------------- per-example gradients on the tape
CONVS = {  # (kernel, strides, padding, kernel_dilation, use_bias, image shape)
    "same_stride2": ((3, 3), 2, "SAME", 1, True, (9, 8, 3)),
    "valid_dilated": ((3, 2), (1, 2), "VALID", (2, 1), False, (9, 8, 3)),
    "explicit_pads": ((2, 3), 1, ((2, 0), (1, 3)), 1, True, (5, 6, 2)),
    "conv1d": ((4,), 3, 1, 1, True, (11, 2)),
    "conv3d_1x1": ((1, 1, 1), 1, "SAME", 1, False, (3, 4, 2, 5)),
}


@pytest.mark.parametrize("name", sorted(CONVS))
def test_example_grads_equal_per_example_autodiff(name):
    """`_example_grads` (strided windows x δ, summed) == jax.grad of each example's own
    Σ δ_n ⊙ conv(a_n; W), for several strides, paddings, dilations and ranks."""
    ksize, strides, padding, dilation, use_bias, shape = CONVS[name]
    conv = nn.Conv(5, ksize, strides=strides, padding=padding, kernel_dilation=dilation,
                   use_bias=use_bias, **F64)
    rng = np.random.default_rng(3)
    a = jnp.asarray(rng.normal(size=(B,) + shape))
    params = conv.init(jax.random.key(0), a)["params"]
    y = conv.apply({"params": params}, a)
    delta = jnp.asarray(rng.normal(size=y.shape))
    geometry = gar_layerwise._geometry(conv, a, y)
    assert geometry is not None and geometry[0] == "conv"
    got = jax.jit(lambda a, d: gar_layerwise._example_grads(geometry, a, d))(a, delta)
    want = jax.vmap(lambda a, d: jax.grad(lambda p: jnp.sum(
        conv.apply({"params": p}, a[None]) * d[None]))(params))(a, delta)
    assert sorted(got) == (["g", "gb"] if use_bias else ["g"])
    np.testing.assert_allclose(got["g"], want["kernel"], rtol=1e-12, atol=1e-12)
    if use_bias:
        np.testing.assert_allclose(got["gb"], want["bias"], rtol=1e-12, atol=1e-12)


def test_auto_store_keeps_the_smaller_of_activations_and_gradients():
    """WRN-10-2 on 32x32 images: "auto" keeps a layer's per-example gradients where its kernel
    (and bias) is smaller than an example's input plus output-gradient (output-gradient only
    with remat), its activations elsewhere; the first stage (32x32 positions, 32 channels) keeps
    gradients, the last (8x8, 128) activations."""
    model, variables, batch, _ = _case(WideResNet(10, 2, 3, norm="batch", dtype=jnp.float64),
                                       (32, 32, 3), 9)

    def sizes(**kw):  # {layer: (per-example gradients kept, elements per example)}
        tape = jax.eval_shape(lambda v, b: gar_layerwise.capture(
            model, v, b, loss_fn, convention="contribution", train=True, **kw).tape,
            variables, batch)
        return {name: ("g" in entry, sum(x.size for x in entry.values()) // B)
                for name, entry in tape.layers.items() if "u" not in entry}

    kept = {}
    for remat in (False, True):
        auto, acts = sizes(remat=remat), sizes(remat=remat, store="activations")
        grads = sizes(remat=remat, store="gradients")
        assert all(g for g, _ in grads.values()) and not any(g for g, _ in acts.values())
        for name, (kept_grads, size) in auto.items():
            assert kept_grads == (grads[name][1] < acts[name][1]), (name, grads, acts)
            assert size == min(grads[name][1], acts[name][1])
        assert auto["group0_block0/Conv_1"][0] and not auto["group2_block0/Conv_1"][0]
        kept[remat] = sum(g for g, _ in auto.values())
    assert 0 < kept[True] < kept[False] < len(auto)
    # The frozen convention on this BatchNorm net: "auto" keeps activations (measured peak).
    frozen = jax.eval_shape(lambda v, b: gar_layerwise.capture(
        model, v, b, loss_fn, convention="frozen", train=True).tape, variables, batch)
    assert not any("g" in entry for entry in frozen.layers.values())
