"""OLA's jvp/vmap GAR takes its frozen BatchNorm statistics from step t's own training forward
(`steps.make_grad_fn(..., bn_stats=True)`) instead of a second forward at θ_t: in float64 the
rewards, and the whole step pair, equal those of the old extra-forward path
(`batchnorm.frozen_bn_loss_fn` per device), on 1 and on 8 devices (per-device statistics)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from gar_jax import batchnorm, gar, reinforce
from gar_jax.augment import ola_sampler
from gar_jax.augment import spaces
from gar_jax.methods import ola
from gar_jax.mesh import DATA_AXIS, make_mesh
from gar_jax.models import variables
from gar_jax.train import steps
from gar_jax.train.state import TrainState

B = 32
F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)
SPACE = spaces.SearchSpace("tiny", (spaces.Op("invert"), spaces.Op("auto_contrast")))


@pytest.fixture(scope="module", autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


class Net(nn.Module):
    """A small float64 conv net with two train-mode BatchNorms (one with its flag as a call
    argument)."""
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(4, (3, 3), **F64)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, **F64)(x))
        x = nn.Conv(5, (3, 3), strides=2, **F64)(x)
        x = nn.relu(nn.BatchNorm(momentum=0.9, **F64)(x, use_running_average=not train))
        return nn.Dense(3, **F64)(x.mean((1, 2)))


def _case(seed=0):
    """(model, variables, images, labels, direction): weights drawn with numpy, BatchNorm scale
    1 + noise and bias noise (so that they matter), running averages non-trivial."""
    model = Net()
    rng = np.random.default_rng(seed)
    images = jnp.asarray(rng.normal(size=(B, 6, 6, 2)) * 2 + 0.5)
    labels = jnp.asarray(rng.integers(0, 3, B), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))

    def draw(path, s):
        value = rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]) if s.ndim > 1 else 1)
        name = jax.tree_util.keystr(path)
        return jnp.asarray(1.0 + 0.3 * value if "scale" in name or "var" in name else value)

    v = jax.tree_util.tree_map_with_path(draw, shapes)
    direction = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape)), shapes["params"])
    return model, v, images, labels, direction


def pair_case(devices):
    """The setting of the step-pair tests: `_case(1)`'s net and batch on the first `devices`
    devices, SGD with momentum, the paper's meta optimizer, a zero 2-sampler policy in an
    OLAState at step 0, a sample of it and a plain batch. Returns (model, mesh, tx, meta_tx,
    state, images, labels, sample, plain, direction)."""
    model, v, images, labels, direction = _case(1)
    mesh = make_mesh(jax.devices()[:devices])
    tx, meta_tx = optax.sgd(0.1, momentum=0.9), reinforce.meta_optimizer(0.1, b1=0.0, clip=5.0)
    policy = ola_sampler.init_params(len(SPACE), max_ops=2, ensemble_size=2)
    base = TrainState(step=jnp.zeros((), jnp.int32), params=v["params"],
                      batch_stats=v["batch_stats"], opt_state=tx.init(v["params"]),
                      rng=jax.random.PRNGKey(0))
    state = ola.OLAState(**vars(base), policy=policy, policy_opt_state=meta_tx.init(policy),
                         reward_stats=reinforce.RunningNormalizer().init())
    sample = ola_sampler.sample(policy, jax.random.key(1), B)
    rng = np.random.default_rng(2)
    plain = {"image": jnp.asarray(rng.normal(size=images.shape)),
             "label": jnp.asarray(rng.integers(0, 3, B), jnp.int32)}
    return model, mesh, tx, meta_tx, state, images, labels, sample, plain, direction


def pair_by_hand(model, mesh, tx, state, images, labels, plain, key):
    """The pair's first steps one by one (trace it inside a jit): the augmented step at θ_t, the
    SGD update, G at θ_{t+1}. Returns (G, the augmented batch's BatchNorm statistics, a
    function (params, batch_stats, direction) -> jvp GAR of the augmented batch, and
    grad_plain(params, batch_stats) -> the plain batch's gradient there)."""
    _, k_drop_aug, k_drop_plain = jax.random.split(key, 3)  # the core's split
    grads, stats, _, bn_stats = steps.make_grad_fn(model, mesh, bn_stats=True)(
        state.params, state.batch_stats, images, labels, k_drop_aug)
    mid = steps.apply_gradients(state, grads, stats, tx)

    def grad_plain(params, batch_stats):
        return steps.make_grad_fn(model, mesh)(params, batch_stats, plain["image"],
                                               plain["label"], k_drop_plain)[0]

    def gar_against(direction):
        return ola._alignment_fn(model, mesh, "jvp", None)(
            state.params, state.batch_stats, bn_stats, images, labels, direction)

    return grad_plain(mid.params, mid.batch_stats), gar_against, grad_plain


def _old_alignment_fn(model, mesh, method, chunk_size, num_chunks=1, subset=None):
    """The old path (an explicit extra forward at θ_t per device to capture the statistics),
    with the new signature; the statistics handed in are ignored (every example rewarded)."""
    assert subset is None
    def local(params, batch_stats, _bn_stats, images, labels, direction):
        params, batch_stats, images, labels, direction = jax.lax.optimization_barrier(
            (params, batch_stats, images, labels, direction))
        batch = {"image": images, "label": labels}
        per_example = batchnorm.frozen_bn_loss_fn(model, variables(params, batch_stats), batch,
                                                  steps.cross_entropy, train=True)
        return gar.alignment(per_example, params, batch, direction, method=method,
                             chunk_size=ola.chunk_size_for(images.shape[0], chunk_size,
                                                           num_chunks))

    return jax.shard_map(local, mesh=mesh,
                         in_specs=(P(), P(), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS), P()),
                         out_specs=P(DATA_AXIS))


def _per_shard_reference(model, v, images, labels, direction, devices):
    """Each device's shard with its own statistics from a separate forward (no shard_map)."""
    def one_shard(x, y):
        part = {"image": x, "label": y}
        pel = batchnorm.frozen_bn_loss_fn(model, v, part, steps.cross_entropy, train=True)
        return gar.alignment(pel, v["params"], part, direction, method="vmap")

    split = lambda a: a.reshape((devices, -1) + a.shape[1:])  # noqa: E731
    return jax.vmap(one_shard)(split(images), split(labels)).reshape(-1)


# (devices, method, chunk_size): chunks that divide the per-device batch and ones that do not.
CASES = [(1, "jvp", None), (1, "jvp", 5), (1, "vmap", 8), (8, "jvp", None), (8, "jvp", 3),
         (8, "vmap", None)]


@pytest.mark.parametrize("devices,method,chunk_size", CASES)
def test_rewards_from_training_step_stats_equal_extra_forward(devices, method, chunk_size):
    model, v, images, labels, direction = _case()
    mesh = make_mesh(jax.devices()[:devices])
    plain = steps.make_grad_fn(model, mesh)
    capturing = steps.make_grad_fn(model, mesh, bn_stats=True)
    align = ola._alignment_fn(model, mesh, method, chunk_size)
    key = jax.random.key(0)

    @jax.jit
    def everything(v, images, labels, direction):
        params, batch_stats = v["params"], v["batch_stats"]
        out = capturing(params, batch_stats, images, labels, key)
        new = align(params, batch_stats, out[3], images, labels, direction)
        old = _old_alignment_fn(model, mesh, method, chunk_size)(
            params, batch_stats, out[3], images, labels, direction)
        return new, old, out, plain(params, batch_stats, images, labels, key)

    new, old, (grads, stats, metrics, bn_stats), want = everything(v, images, labels, direction)
    # The references in their own program on unsharded inputs: on XLA:CPU, vmap(grad) over
    # shards of an input sharded P('data') (as it is next to the shard_map) gave wrong numbers.
    reference = jax.jit(_per_shard_reference, static_argnums=(0, 5))
    ref = reference(model, v, images, labels, direction, devices)
    glob = reference(model, v, images, labels, direction, 1)
    assert new.shape == (B,) and new.dtype == jnp.float64
    scale = np.abs(ref).max()
    np.testing.assert_allclose(new, old, rtol=1e-10, atol=1e-10 * scale)
    np.testing.assert_allclose(new, ref, rtol=1e-10, atol=1e-10 * scale)
    if devices > 1:  # per-device statistics matter: the global batch's give other rewards
        assert np.abs(glob - ref).max() > 1e-3 * scale
    # One entry per BatchNorm call and device; the training outputs are unchanged.
    assert sorted(bn_stats) == ["BatchNorm_0", "BatchNorm_1"]
    assert bn_stats["BatchNorm_1"]["var"].shape == (devices, 5)
    for got, expected in zip((grads, stats, metrics), want):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14),
                     got, expected)


@pytest.mark.parametrize("devices,chunk_size", [(1, None), (8, 3)])
def test_pair_equals_the_extra_forward_pair(devices, chunk_size, monkeypatch):
    """The whole jvp step pair (both SGD steps, rewards, REINFORCE) against the same pair
    built with the old extra-forward alignment: same rewards, policy and params."""
    model, mesh, tx, meta_tx, state, images, labels, sample, plain, _ = pair_case(devices)
    policy = state.policy
    opts = ola.Options(gar_method="jvp", chunk_size=chunk_size)

    new_core = ola.make_pair_core(model, tx, mesh, SPACE, meta_tx, opts)
    monkeypatch.setattr(ola, "_alignment_fn", _old_alignment_fn)
    old_core = ola.make_pair_core(model, tx, mesh, SPACE, meta_tx, opts)

    @jax.jit
    def both(state):
        args = (images, sample, labels, plain, jax.random.key(3))
        return new_core(state, *args), old_core(state, *args)

    (new, m_new), (old, m_old) = both(state)
    assert float(m_new["reward_std"]) > 0
    for name in ("reward_mean", "reward_std", "loss_aug", "loss_plain"):
        np.testing.assert_allclose(m_new[name], m_old[name], rtol=1e-10, err_msg=name)
    # REINFORCE moved the policy, identically (it sees the normalized rewards).
    assert np.abs(new.policy["keep_logits"] - policy["keep_logits"]).max() > 1e-3
    for got, want in ((new.policy, old.policy), (new.params, old.params),
                      (new.batch_stats, old.batch_stats)):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13),
                     got, want)
