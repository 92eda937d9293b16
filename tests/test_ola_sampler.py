"""The OLA sampler: exact log-probabilities by enumeration, sampling frequencies, ensembles,
the policy gradient toward a planted reward, and the JSON round trip."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gar_jax.augment import ola_sampler

# Jitted once per shape (eager dispatch compiles every small op separately, which is slow).
sample = jax.jit(ola_sampler.sample, static_argnums=2, static_argnames="replace")
log_prob = jax.jit(ola_sampler.log_prob, static_argnames="replace")


def _random_params(key, num_ops, num_levels, max_ops, scale=1.0, ensemble_size=None):
    params = ola_sampler.init_params(num_ops, num_levels=num_levels, max_ops=max_ops,
                             ensemble_size=ensemble_size)
    rng = np.random.default_rng(key)
    return {name: jnp.asarray(scale * rng.normal(size=p.shape), jnp.float32)
            for name, p in params.items()}


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _enumerate(params, replace):
    """Every configuration of a single policy with its exact probability, by hand (numpy).

    Yields (op_indices [K], levels [K], active [K], num_ops, probability)."""
    p_k = _softmax(np.asarray(params["k_logits"], np.float64))
    p_level = np.stack([_softmax(r) for r in np.asarray(params["level_logits"], np.float64)])
    p_keep = 1 / (1 + np.exp(-np.asarray(params["keep_logits"], np.float64)))
    num_ops, num_levels = p_level.shape
    max_ops = p_k.shape[0]
    for k in range(1, max_ops + 1):
        op_seqs = (itertools.product(range(num_ops), repeat=k) if replace
                   else itertools.permutations(range(num_ops), k))
        p_ops = (num_ops ** -k if replace
                 else 1 / math.prod(num_ops - j for j in range(k)))
        for ops in op_seqs:
            for keep in itertools.product([False, True], repeat=k):
                kept = [a for a, kp in zip(ops, keep) if kp]
                for kept_levels in itertools.product(range(num_levels), repeat=len(kept)):
                    prob = p_k[k - 1] * p_ops
                    for a, kp in zip(ops, keep):
                        prob *= p_keep[a] if kp else 1 - p_keep[a]
                    for a, m in zip(kept, kept_levels):
                        prob *= p_level[a, m]
                    levels = iter(kept_levels)
                    row_levels = [next(levels) if kp else 0 for kp in keep]
                    pad = max_ops - k
                    yield (list(ops) + [0] * pad, row_levels + [0] * pad,
                           list(keep) + [False] * pad, k, prob)


@pytest.mark.parametrize("num_ops,num_levels,max_ops,replace",
                         [(2, 3, 3, True), (3, 2, 2, False)])
def test_log_prob_is_exact_probability_by_enumeration(num_ops, num_levels, max_ops, replace):
    params = _random_params(num_ops * 10 + num_levels, num_ops, num_levels,
                            max_ops)
    rows = list(_enumerate(params, replace))
    ops, levels, active, k, prob = (np.array(c) for c in zip(*rows))
    configs = ola_sampler.PolicySample(jnp.asarray(ops, jnp.int32), jnp.asarray(levels, jnp.int32),
                               jnp.asarray(active), jnp.zeros(len(rows)),
                               jnp.asarray(k, jnp.int32))
    log_p = np.asarray(log_prob(params, configs, replace=replace), np.float64)
    np.testing.assert_allclose(log_p, np.log(prob), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(prob.sum(), 1.0, rtol=1e-12)  # the enumeration is complete

    # The sampler draws configurations with those probabilities, and reports the same log pi.
    n = 60000
    s = sample(params, jax.random.key(7), n, replace=replace)
    np.testing.assert_allclose(s.log_prob, log_prob(params, s, replace=replace), atol=1e-6)
    # Each configuration as one integer (mixed radix), to look sampled ones up in the table.
    radix = max(num_ops, num_levels, max_ops + 1)
    code = lambda o, lv, a, kk: np.concatenate([o, lv, a, kk[:, None]], 1).astype(np.int64) @ (
        radix ** np.arange(3 * max_ops + 1))
    table = code(ops, levels, active, k)
    drawn = code(*(np.asarray(x) for x in (s.op_indices, s.levels, s.active, s.num_ops)))
    order = np.argsort(table)
    which = order[np.searchsorted(table[order], drawn)]
    np.testing.assert_array_equal(table[which], drawn)  # each sample is a canonical config
    np.testing.assert_allclose(s.log_prob, np.log(prob)[which], rtol=1e-5, atol=1e-5)
    counts = np.bincount(which, minlength=len(rows))
    expected = n * prob
    # Pearson chi-square; its 99.9% quantile for df <= 400 is below df + 4.5 sqrt(2 df).
    chi2 = np.sum((counts - expected) ** 2 / expected)
    df = len(rows) - 1
    assert chi2 < df + 4.5 * math.sqrt(2 * df), (chi2, df)


def test_ensemble_groups_use_their_own_policy():
    params = _random_params(1, 3, 4, 4, ensemble_size=4)
    s = sample(params, jax.random.key(2), 12)
    lp = log_prob(params, s)
    # Examples 3m..3m+2 belong to member m: evaluate each member alone on its three.
    parts = jax.tree.map(lambda a: a.reshape((4, 3) + a.shape[1:]), s)
    alone = jax.jit(jax.vmap(ola_sampler.log_prob))(params, parts)
    np.testing.assert_allclose(lp, alone.reshape(-1), rtol=1e-6)
    with pytest.raises(ola_sampler.ConfigError, match="divisible"):
        ola_sampler.sample(params, jax.random.key(2), 10)


def test_policy_gradient_moves_toward_planted_op():
    """Reward: op 2 applied at level 5. REINFORCE (rewards normalized per batch, Adam lr 0.1,
    b1 = 0, as the authors) must raise op 2's keep probability, its level 5 and p(k = 4)."""
    num_ops, planted, level = 4, 2, 5
    params = ola_sampler.init_params(num_ops, ensemble_size=2)
    opt = optax.adam(0.1, b1=0.0)
    opt_state = opt.init(params)

    def step(carry, key):
        params, opt_state = carry
        s = ola_sampler.sample(params, key, 64)
        hits = s.active & (s.op_indices == planted) & (s.levels == level)
        rewards = jnp.sum(hits, axis=1).astype(jnp.float32)
        w = (rewards - rewards.mean()) / (rewards.std() + 1e-8)
        grads = jax.grad(lambda p: -jnp.mean(w * ola_sampler.log_prob(p, s)))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    train = jax.jit(lambda carry, keys: jax.lax.scan(step, carry, keys)[0])
    params, _ = train((params, opt_state), jax.random.split(jax.random.key(0), 150))
    learned = ola_sampler.summary(params)
    others = [a for a in range(num_ops) if a != planted]
    assert learned["p_keep"][planted] > 0.9
    assert learned["p_keep"][planted] > learned["p_keep"][others].max() + 0.2
    assert learned["p_level"][planted, level] > 0.5  # from 1/31
    assert learned["p_k"][3] > 0.5  # more slots, more chances to draw op 2


def test_json_round_trip_and_replay_distribution():
    params = _random_params(3, 3, 5, 4, ensemble_size=2)
    text = ola_sampler.to_json(params, ["a", "b", "c"])
    loaded, names, replace = ola_sampler.params_from_json(text)
    assert names == ["a", "b", "c"] and replace
    for name, probs in ola_sampler.probabilities(loaded).items():
        np.testing.assert_allclose(probs, ola_sampler.probabilities(params)[name], rtol=1e-5, atol=1e-7)
    with pytest.raises(ola_sampler.ConfigError, match="op names"):
        ola_sampler.to_json(params, ["a", "b"])


@pytest.mark.parametrize("replace", [True, False])
def test_op_probability_equals_enumeration(replace):
    """P(an image gets op a applied) of the uniform learned-policy report, against the exact
    enumeration of every configuration, for a 2-member ensemble (mixture of the members)."""
    members = [_random_params(seed, num_ops=3, num_levels=2, max_ops=3) for seed in (5, 6)]
    per_member = np.zeros((len(members), 3))
    for m, params in enumerate(members):
        for op_indices, _, active, _, probability in _enumerate(params, replace):
            for a in set(np.asarray(op_indices)[np.asarray(active)].tolist()):
                per_member[m, a] += probability
    ensemble = jax.tree.map(lambda *x: jnp.stack(x), *members)
    np.testing.assert_allclose(ola_sampler.op_probability(ensemble, replace=replace),
                               per_member.mean(0), rtol=1e-6)
    # The same from probabilities, with leading axes (here [2 copies, members]).
    probs = ola_sampler.probabilities(ensemble)
    twice = lambda x: np.stack([x, x])
    np.testing.assert_allclose(
        ola_sampler.op_probability_from(twice(probs["p_k"]), twice(probs["p_keep"]),
                                        replace=replace), twice(per_member), rtol=1e-6)
