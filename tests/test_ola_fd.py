"""``ola.gar_method = "fd"``: GAR by a one-sided finite difference of the per-example losses,
(ℓ_n(θ_t + εG) - ℓ_n(θ_t)) / ε, with ℓ_n(θ_t) from step t's own training forward
(`steps.make_grad_fn(..., example_losses=True)`) and one forward at θ_t + εG under the same
frozen BatchNorm statistics. Against the exact (jvp) GAR: in float64 with a small step to 1e-5,
in the whole pair too (rewards, policy update; 1 and 8 devices; every image and half of them
rewarded); in float32 at the default step to the few per cent the probe found; bad settings are
refused in one line."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gar_jax import batchnorm, gar, reinforce
from gar_jax.augment import ola_sampler
from gar_jax.errors import ConfigError
from gar_jax.methods import ola
from gar_jax.models import variables
from gar_jax.train import steps
from config_files import load as load_config

from test_ola_frozen_stats import (SPACE, _case, float64, pair_by_hand,  # noqa: F401 (fixture)
                                   pair_case)

B = 32


def _relative_error(got, want):
    return float(np.linalg.norm(np.asarray(got) - np.asarray(want)) / np.linalg.norm(want))


def test_finite_difference_is_the_alignment_float64():
    model, v, images, labels, direction = _case(0)
    batch = {"image": images, "label": labels}
    loss_fn = batchnorm.frozen_bn_loss_fn(model, v, batch, steps.cross_entropy, train=True)
    exact = gar.alignment(loss_fn, v["params"], batch, direction, method="jvp")
    fd = gar.finite_difference_alignment(loss_fn, v["params"], batch, direction, step=1e-8)
    assert _relative_error(fd, exact) < 1e-5
    # the step's size: the error is the curvature along G, so ~100x larger at a 100x step
    coarse = gar.finite_difference_alignment(loss_fn, v["params"], batch, direction, step=1e-6)
    assert 30 * _relative_error(fd, exact) < _relative_error(coarse, exact) < 1e-3
    # known losses at θ give the same numbers as computing them
    with_base = gar.finite_difference_alignment(loss_fn, v["params"], batch, direction,
                                                step=1e-8, base_losses=loss_fn(v["params"], batch))
    np.testing.assert_allclose(with_base, fd, rtol=1e-12, atol=1e-14)
    # a zero direction (G = 0 happens at a minimum) gives zero rewards, not 0 / 0
    zero = jax.tree.map(jnp.zeros_like, direction)
    np.testing.assert_array_equal(
        gar.finite_difference_alignment(loss_fn, v["params"], batch, zero), np.zeros(B))


class _Mlp32(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(32, dtype=jnp.float32, param_dtype=jnp.float32)(x))
        return nn.Dense(3, dtype=jnp.float32, param_dtype=jnp.float32)(x)


def test_finite_difference_in_float32_at_the_default_step():
    """At the default step (1e-5 of the parameters' norm), float32: within a few per cent of
    the exact float64 alignment, correlation > 0.999 (probe on digits checkpoints: 0.5%)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 10)).astype(np.float32)
    y = rng.integers(0, 3, 64).astype(np.int32)
    model = _Mlp32()
    params = model.init(jax.random.key(0), x[:1])["params"]
    direction = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32),
                             params)

    def loss_fn(p, batch):
        return steps.cross_entropy(model.apply({"params": p}, batch["image"]), batch["label"])

    batch = {"image": jnp.asarray(x), "label": jnp.asarray(y)}
    fd = gar.finite_difference_alignment(loss_fn, params, batch, direction)
    assert fd.dtype == jnp.float32
    to64 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), t)
    exact = gar.alignment(lambda p, b: loss_fn(p, b).astype(jnp.float64), to64(params),
                          {"image": jnp.asarray(x, jnp.float64), "label": batch["label"]},
                          to64(direction))
    assert _relative_error(fd, exact) < 0.03
    assert np.corrcoef(fd, exact)[0, 1] > 0.999


def test_finite_difference_refuses_low_precision_and_bad_steps():
    model, v, images, labels, direction = _case(0)
    batch = {"image": images, "label": labels}
    loss_fn = batchnorm.frozen_bn_loss_fn(model, v, batch, steps.cross_entropy, train=True)
    for step in (0, 1, -1e-5, "1e-5"):
        with pytest.raises(ConfigError, match="step must be a number in"):
            gar.finite_difference_alignment(loss_fn, v["params"], batch, direction, step=step)
    half = lambda p, b: loss_fn(p, b).astype(jnp.bfloat16)
    with pytest.raises(ConfigError, match="the losses are bfloat16; a finite difference needs"):
        gar.finite_difference_alignment(half, v["params"], batch, direction)
    with pytest.raises(ConfigError, match="base_losses must have shape"):
        gar.finite_difference_alignment(loss_fn, v["params"], batch, direction,
                                        base_losses=jnp.zeros(B - 1))


def test_step_t_returns_its_per_example_losses():
    """`make_grad_fn(example_losses=True)`: the training forward's per-example losses, which
    are the frozen-statistics losses at θ_t (so the finite difference's base), on 8 devices."""
    model, mesh, tx, meta_tx, state, images, labels, sample, plain, direction = pair_case(8)
    out = jax.jit(steps.make_grad_fn(model, mesh, bn_stats=True, example_losses=True))(
        state.params, state.batch_stats, images, labels, jax.random.key(0))
    grads, _, metrics, bn_stats, losses = out
    plain_out = jax.jit(steps.make_grad_fn(model, mesh, bn_stats=True))(
        state.params, state.batch_stats, images, labels, jax.random.key(0))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), grads, plain_out[0])
    np.testing.assert_allclose(np.mean(losses), metrics["loss"], rtol=1e-12)
    per_device = B // 8
    for d in range(8):  # each device's examples under that device's own statistics
        rows = slice(d * per_device, (d + 1) * per_device)
        stats = jax.tree.map(lambda s: s[d], bn_stats)
        want = batchnorm.frozen_bn_loss_fn_from_stats(
            model, variables(state.params, state.batch_stats), stats, steps.cross_entropy,
            train=True)(state.params, {"image": images[rows], "label": labels[rows]})
        np.testing.assert_allclose(losses[rows], want, rtol=1e-12)


@pytest.mark.parametrize("devices,fraction", [(1, 1.0), (1, 0.5), (8, 1.0), (8, 0.5)])
def test_fd_pair_is_the_gar_pair(devices, fraction):
    """The whole pair with gar_method='fd' (float64, a small step): its rewards and policy
    update are the jvp GAR's computed by hand, over the rewarded examples; the model's update
    does not depend on the method."""
    model, mesh, tx, meta_tx, state, images, labels, sample, plain, direction = pair_case(
        devices)
    key = jax.random.key(3)
    fd_core = ola.make_pair_core(model, tx, mesh, SPACE, meta_tx, ola.Options(
        gar_method="fd", fd_step=1e-8, reward_fraction=fraction))
    jvp_core = ola.make_pair_core(model, tx, mesh, SPACE, meta_tx, ola.Options(
        reward_fraction=fraction))

    @jax.jit
    def by_hand(state):
        g, gar_against, _ = pair_by_hand(model, mesh, tx, state, images, labels, plain, key)
        return gar_against(g)

    rewards = np.asarray(by_hand(state))
    learned = sample
    rewarded = ola.rewarded_examples(B, 2, devices, fraction)
    if rewarded is not None:
        rewards = rewards[rewarded]
        learned = jax.tree.map(lambda x: x[rewarded], sample)
        assert len(rewards) == B // 2
    want_policy, *_ = reinforce.reward_update(
        meta_tx, state.policy, state.policy_opt_state, state.reward_stats,
        lambda p: ola_sampler.log_prob(p, learned), jnp.asarray(rewards))
    (new, m), (new_jvp, _) = jax.jit(lambda s: (
        fd_core(s, images, sample, labels, plain, key),
        jvp_core(s, images, sample, labels, plain, key)))(state)
    np.testing.assert_allclose(m["reward_mean"], np.mean(rewards), rtol=1e-4,
                               atol=1e-5 * np.std(rewards))
    np.testing.assert_allclose(m["reward_std"], np.std(rewards), rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 new.policy, want_policy)
    for got, want in ((new.params, new_jvp.params), (new.batch_stats, new_jvp.batch_stats)):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14),
                     got, want)


@pytest.mark.parametrize("fields,needle", [
    ({"fd_step": 0.0}, "config.ola.fd_step=0.0 must be a number in (0, 1)"),
    ({"fd_step": 1.0}, "config.ola.fd_step=1.0 must be a number in (0, 1)"),
    ({"fd_step": True}, "config.ola.fd_step=True must be a number in (0, 1)"),
    ({"gar_method": "fd", "model.dtype": "bfloat16"},
     "config.ola.gar_method='fd' needs float32 losses; config.model.dtype='bfloat16'"),
    ({"gar_method": "finite"}, "config.ola.gar_method='finite' must be one of")])
def test_fd_settings_are_checked_in_one_line(fields, needle):
    data = load_config("digits_ola").to_dict()
    for name, value in fields.items():
        section, _, leaf = name.rpartition(".")
        (data[section] if section else data["ola"])[leaf] = value
    config = ml_collections.ConfigDict(data)
    with pytest.raises(ConfigError) as e:
        ola.validate(config)
    assert needle in str(e.value) and "\n" not in str(e.value)
