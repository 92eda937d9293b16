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
from gar_jax.train.mesh import DATA_AXIS, make_mesh

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

        def train_loss(params):  # the ordinary training step
            logits, state = model.apply({**variables, "params": params}, batch["image"],
                                        train=True, mutable=["batch_stats"])
            return loss_fn(logits, batch["label"]).mean(), state

        return out, refs, cap, jax.value_and_grad(train_loss, has_aux=True)(variables["params"])

    got, (vmap, jvp), cap, ((loss, state), grads) = everything(variables, batch, direction)
    assert got.shape == (B,)
    rtol = 1e-9 if jvp.dtype == jnp.float64 else 1e-5
    for other in (got, jvp):
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
