"""``ola.target_ema``: GAR against an exponential moving average of the plain steps' gradients.
The pair's rewards, policy update and new average against the same computation by hand (the
first and a later update, 1 and 8 devices, float64); the model's update still uses G; with the
option off the state is the plain `OLAState` (so checkpoints written before the option restore);
both states survive a checkpoint round trip; bad values are refused in one line. And
``ola.gar_target = "response"``: GAR against the plain batch's gradient after the step minus
before it, and ``"both"``: GAR and that, each normalized, summed, against the same by hand."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from gar_jax import reinforce
from gar_jax.augment import ola_sampler
from gar_jax.errors import ConfigError
from gar_jax.methods import ola
from gar_jax.train.checkpoint import Checkpointer
from config_files import load as load_config

from test_ola_frozen_stats import SPACE, float64, pair_by_hand, pair_case  # noqa: F401 (fixture)

B = 32


@pytest.mark.parametrize("devices,first", [(1, True), (1, False), (8, False)])
def test_rewards_are_gar_against_the_moving_average(devices, first):
    model, mesh, tx, meta_tx, state, images, labels, sample, plain, direction = pair_case(
        devices)
    policy, beta = state.policy, 0.75
    # the first update starts from zeros (init_state); a later one from an earlier average
    before = jax.tree.map(lambda d: jnp.zeros_like(d) if first else 0.3 * d, direction)
    state = ola.OLATargetState(**vars(state), reward_target=before)
    key = jax.random.key(3)
    core = ola.make_pair_core(model, tx, mesh, SPACE, meta_tx, ola.Options(target_ema=beta))
    plain_core = ola.make_pair_core(model, tx, mesh, SPACE, meta_tx, ola.Options())

    @jax.jit
    def by_hand(state):  # the pair's steps, one by one
        g, gar_against, _ = pair_by_hand(model, mesh, tx, state, images, labels, plain, key)
        target = jax.tree.map(lambda m, x: beta * m + (1 - beta) * x, state.reward_target, g)
        return gar_against(target), gar_against(g), target, g

    rewards, rewards_g, target, g = by_hand(state)
    assert np.corrcoef(rewards, rewards_g)[0, 1] < 0.999 or first  # a different target
    want_policy, *_ = reinforce.reward_update(
        meta_tx, policy, state.policy_opt_state, state.reward_stats,
        lambda p: ola_sampler.log_prob(p, sample), rewards)
    (new, m), (new_plain, _) = jax.jit(lambda s: (
        core(s, images, sample, labels, plain, key),
        plain_core(s, images, sample, labels, plain, key)))(state)
    np.testing.assert_allclose(m["reward_mean"], np.mean(rewards), rtol=1e-10)
    np.testing.assert_allclose(m["reward_std"], np.std(rewards), rtol=1e-10)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12),
                 new.policy, want_policy)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14),
                 new.reward_target, target)
    if first:  # (1 - beta) G: the same direction as G, so the same normalized rewards
        np.testing.assert_allclose(m["target_cosine"], 1.0, rtol=1e-12)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-11),
                     new.policy, new_plain.policy)
    else:
        cos = optax.tree.vdot(g, target) / (optax.tree.norm(g) * optax.tree.norm(target))
        np.testing.assert_allclose(m["target_cosine"], cos, rtol=1e-10)
        assert float(cos) < 0.999
    # the model's update is the plain pair's: SGD on G, not on the average
    for got, want in ((new.params, new_plain.params), (new.batch_stats, new_plain.batch_stats)):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14),
                     got, want)


def test_state_holds_the_average_only_when_on(tmp_path):
    config = load_config("digits_ola_destructive")
    from gar_jax.train import engine
    setup = engine.build(config)
    space = ola.make_space(config)
    off = ola.init_state(setup.state, config, space, setup.schedule)
    assert type(off) is ola.OLAState  # the structure of checkpoints from before target_ema
    config.ola.target_ema = 0.9
    on = ola.init_state(setup.state, config, space, setup.schedule)
    jax.tree.map(lambda a, p: (np.testing.assert_array_equal(a, np.zeros_like(p)),
                               a.shape == p.shape or pytest.fail("shape")),
                 on.reward_target, setup.state.params)
    # a checkpoint round trip keeps the average (and a state without one stays without)
    on = on.replace(reward_target=jax.tree.map(lambda p: p + 1.5, on.reward_target))
    for name, state in (("on", on), ("off", off)):
        ckpt = Checkpointer(str(tmp_path / name))
        ckpt.save(2, state, {"step": 2})
        ckpt.wait()
        template = ola.init_state(setup.state, config if name == "on" else load_config(
            "digits_ola_destructive"), space, setup.schedule)
        restored, _ = ckpt.restore(template)
        ckpt.close()
        jax.tree.map(np.testing.assert_array_equal, restored, state)
        assert type(restored) is type(state)
    # the pair refuses a state without the average in one line
    with pytest.raises(TypeError, match="needs an OLATargetState"):
        core = ola.make_pair_core(setup.model, setup.tx, setup.mesh, space,
                                  ola.meta_optimizer(config), ola.Options(target_ema=0.9))
        core(off, None, None, jnp.zeros(64, jnp.int32), None, jax.random.key(0))


@pytest.mark.parametrize("value,reward,needle", [
    (1.0, "gar", "must be a number in [0, 1)"), (-0.1, "gar", "must be a number in [0, 1)"),
    (True, "gar", "must be a number in [0, 1)"), ("0.9", "gar", "must be a number in [0, 1)"),
    (0.9, "nslr", "needs config.ola.reward='gar'")])
def test_target_ema_is_checked_in_one_line(value, reward, needle):
    fields = load_config("digits_ola").to_dict()
    fields["ola"]["target_ema"], fields["ola"]["reward"] = value, reward
    with pytest.raises(ConfigError) as e:
        ola.validate(ml_collections.ConfigDict(fields))
    assert str(e.value).startswith(f"config.ola.target_ema={value!r}")
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("devices,alpha", [(1, 0.0), (8, 0.0), (1, 0.25), (1, 1.0)])
def test_response_rewards_are_gar_against_the_steps_response(devices, alpha):
    """GAR against G - (1 - alpha) G0 (G0: the plain batch's gradient before the step);
    alpha = 1 is plain GAR."""
    model, mesh, tx, meta_tx, state, images, labels, sample, plain, _ = pair_case(devices)
    policy = state.policy
    key = jax.random.key(3)
    core = ola.make_pair_core(model, tx, mesh, SPACE, meta_tx,
                              ola.Options(gar_target="response", before_weight=alpha))
    next_core = ola.make_pair_core(model, tx, mesh, SPACE, meta_tx, ola.Options())

    @jax.jit
    def by_hand(state):
        after, gar_against, grad_plain = pair_by_hand(model, mesh, tx, state, images, labels,
                                                      plain, key)
        before = grad_plain(state.params, state.batch_stats)
        response = jax.tree.map(lambda a, b: a - (1 - alpha) * b, after, before)
        return gar_against(response), optax.tree.norm(response) / optax.tree.norm(after)

    rewards, ratio = by_hand(state)
    want_policy, *_ = reinforce.reward_update(
        meta_tx, policy, state.policy_opt_state, state.reward_stats,
        lambda p: ola_sampler.log_prob(p, sample), rewards)
    (new, m), (new_next, m_next) = jax.jit(lambda s: (
        core(s, images, sample, labels, plain, key),
        next_core(s, images, sample, labels, plain, key)))(state)
    np.testing.assert_allclose(m["reward_mean"], np.mean(rewards), rtol=1e-10)
    np.testing.assert_allclose(m["reward_std"], np.std(rewards), rtol=1e-10)
    np.testing.assert_allclose(m["response_ratio"], ratio, rtol=1e-10)
    assert 0 < float(ratio) < 1 or alpha == 1.0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12),
                 new.policy, want_policy)
    # other rewards than GAR against G (alpha = 1: the same), the same model update
    if alpha == 1.0:
        np.testing.assert_allclose(m["reward_mean"], m_next["reward_mean"], rtol=1e-10)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12),
                     new.policy, new_next.policy)
    else:
        assert abs(float(m["reward_mean"]) - float(m_next["reward_mean"])) > 1e-6
    for got, want in ((new.params, new_next.params), (new.batch_stats, new_next.batch_stats)):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14),
                     got, want)


@pytest.mark.parametrize("devices,normalization", [(1, "sampler"), (8, "sampler"), (1, "batch")])
def test_both_rewards_are_gar_plus_the_response_each_normalized(devices, normalization):
    """gar_target = "both": GAR against G and GAR against G - G0, each normalized as REINFORCE
    normalizes (per sampler, n - 1 std; or over the batch), summed; the model's update is
    plain GAR's."""
    model, mesh, tx, meta_tx, state, images, labels, sample, plain, _ = pair_case(devices)
    policy = state.policy
    key = jax.random.key(3)
    opts = dict(reward_normalization=normalization)
    core = ola.make_pair_core(model, tx, mesh, SPACE, meta_tx,
                              ola.Options(gar_target="both", **opts))
    next_core = ola.make_pair_core(model, tx, mesh, SPACE, meta_tx, ola.Options(**opts))
    groups = ola_sampler.ensemble_size(policy) if normalization == "sampler" else 1
    assert groups > 1 or normalization == "batch"

    @jax.jit
    def by_hand(state):
        after, gar_against, grad_plain = pair_by_hand(model, mesh, tx, state, images, labels,
                                                      plain, key)
        before = grad_plain(state.params, state.batch_stats)
        return gar_against(after), gar_against(jax.tree.map(jnp.subtract, after, before))

    gar_rewards, response_rewards = (np.asarray(r, np.float64) for r in by_hand(state))

    def unit(r):  # numpy, by hand: per sampler with the n - 1 std, or the batch's population std
        r, ddof = r.reshape(groups, -1), 1 if normalization == "sampler" else 0
        return ((r - r.mean(1, keepdims=True)) / r.std(1, ddof=ddof, keepdims=True)).reshape(-1)

    rewards = unit(gar_rewards) + unit(response_rewards)
    assert abs(np.corrcoef(gar_rewards, response_rewards)[0, 1]) < 0.99  # two rewards
    want_policy, *_ = reinforce.reward_update(
        meta_tx, policy, state.policy_opt_state, state.reward_stats,
        lambda p: ola_sampler.log_prob(p, sample), jnp.asarray(rewards),
        groups=groups if normalization == "sampler" else None)
    (new, m), (new_next, _) = jax.jit(lambda s: (
        core(s, images, sample, labels, plain, key),
        next_core(s, images, sample, labels, plain, key)))(state)
    np.testing.assert_allclose(m["reward_mean"], np.mean(rewards), atol=1e-10)
    np.testing.assert_allclose(m["reward_std"], np.std(rewards), rtol=1e-10)
    # What each op was told (the REINFORCE weights, by value: Adam's first step below only
    # sees their signs), then the policy (float32: within an ulp, the reductions' order
    # differs on 8 devices).
    weights = unit(rewards) if normalization == "sampler" else (
        (rewards - rewards.mean()) / rewards.std())
    want = ola.op_reward_metrics(sample, jnp.asarray(weights), SPACE)
    for name in SPACE.op_names:
        np.testing.assert_allclose(m[f"op_weight/{name}"], want[f"op_weight/{name}"],
                                   rtol=1e-6, atol=1e-7, err_msg=name)
    assert max(abs(float(want[f"op_weight/{n}"])) for n in SPACE.op_names) > 0.05
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9),
                 new.policy, want_policy)
    assert np.abs(new.policy["keep_logits"] - new_next.policy["keep_logits"]).max() > 1e-4
    for got, want in ((new.params, new_next.params), (new.batch_stats, new_next.batch_stats)):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14),
                     got, want)


@pytest.mark.parametrize("fields,needle", [
    ({"gar_target": "before"}, "must be one of ('next', 'response', 'both')"),
    ({"gar_target": "both", "before_weight": 0.5}, "needs config.ola.gar_target='response'"),
    ({"gar_target": "response", "reward": "nslr"}, "needs config.ola.reward='gar'"),
    ({"gar_target": "response", "target_ema": 0.5}, "and config.ola.target_ema=0"),
    ({"gar_target": "response", "before_weight": 1.5}, "must be a number in [0, 1]"),
    ({"gar_target": "response", "before_weight": True}, "must be a number in [0, 1]"),
    ({"gar_target": "next", "before_weight": 0.5}, "needs config.ola.gar_target='response'")])
def test_gar_target_is_checked_in_one_line(fields, needle):
    config = load_config("digits_ola").to_dict()
    config["ola"].update(fields)
    with pytest.raises(ConfigError) as e:
        ola.validate(ml_collections.ConfigDict(config))
    field = "before_weight" if "before_weight" in fields else "gar_target"
    assert str(e.value).startswith(f"config.ola.{field}={fields[field]!r}")
    assert needle in str(e.value) and "\n" not in str(e.value)
