"""reinforce.py: reward normalization, the score-function estimator, meta optimizer, split
distributions — against numpy formulas, enumeration and hand-derived gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gar_jax import gar
from gar_jax import reinforce
from gar_jax.errors import ConfigError

DISTRIBUTIONS = ["softmax", "inverted_softmax"]


# ---- normalization ---------------------------------------------------------------------------
def test_normalize_rewards_matches_numpy_and_is_zero_for_constant_rewards():
    r = np.random.default_rng(0).normal(3.0, 2.0, size=(4, 64)).astype(np.float32)
    expected = (r - r.mean(1, keepdims=True)) / r.std(1, keepdims=True)
    r[1], expected[1] = -2.3456, 0.0  # one constant row (NSLR-like)
    normalize = jax.jit(reinforce.normalize_rewards, static_argnames="axis")
    got = normalize(r, axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.all(got[1] == 0.0)
    np.testing.assert_allclose(normalize(r[0]), expected[0], rtol=1e-5, atol=1e-5)

    # NSLR rewards of a large float32 batch: the mean of 1000 copies is rounded, yet exactly 0.
    assert np.all(normalize(gar.nslr_reward(jnp.float32(2.3456), 1000)) == 0.0)


def test_constant_rewards_give_a_finite_zero_update():
    logits = jnp.array([0.3, -0.2, 1.0, 0.0, 0.5])
    choices = jnp.array([0, 2, 2, 4, 1, 3, 0, 2])
    nslr = gar.nslr_reward(jnp.float32(1.7), choices.shape[0])
    for name in DISTRIBUTIONS:
        dist = reinforce.split_distribution(name)
        grad = jax.jit(jax.grad(lambda phi: reinforce.score_function_loss(
            dist.log_probs(phi)[choices], nslr)))(logits)
        assert np.all(np.isfinite(grad)) and np.all(grad == 0.0), (name, grad)


def test_running_normalizer_pools_steps_exactly_and_never_nans():
    rng = np.random.default_rng(1)
    steps = [rng.normal(-t / 5.0, 0.5 + 0.1 * t, size=16).astype(np.float32) for t in range(12)]

    # decay=None: the exact mean/variance of all rewards so far.
    exact = reinforce.RunningNormalizer(decay=None)
    state = exact.init()
    for r in steps:
        state = jax.jit(exact.update)(state, r)
    pooled = np.concatenate(steps).astype(np.float64)
    np.testing.assert_allclose([state.mean, state.var], [pooled.mean(), pooled.var()], rtol=1e-5)
    np.testing.assert_allclose(exact.normalize(state, steps[0]),
                               (steps[0] - pooled.mean()) / pooled.std(), rtol=1e-4)

    # decay=0.9: step s has mixture weight α_s Π_{u>s} (1 − α_u), α_t = max(1/t, 0.1).
    ema = reinforce.RunningNormalizer(decay=0.9)
    update, normalize = jax.jit(ema.update), jax.jit(ema.normalize)
    state = ema.init()
    for r in steps:
        state = update(state, r)
    alphas = np.array([max(1.0 / t, 0.1) for t in range(1, len(steps) + 1)])
    weights = np.array([alphas[s] * np.prod(1.0 - alphas[s + 1:]) for s in range(len(steps))])
    assert abs(weights.sum() - 1.0) < 1e-12
    means = np.array([r.astype(np.float64).mean() for r in steps])
    second = np.array([(r.astype(np.float64) ** 2).mean() for r in steps])
    mean = weights @ means
    np.testing.assert_allclose([state.mean, state.var], [mean, weights @ second - mean ** 2],
                               rtol=1e-5)

    # NSLR: one value per step. No steps or zero spread -> exactly 0; then finite values.
    state = ema.init()
    assert np.all(normalize(state, jnp.full(8, -2.0)) == 0.0)
    r = gar.nslr_reward(jnp.float32(2.0), 8)  # a constant loss: variance 0 forever
    for t in range(30):
        w = normalize(state, r)
        assert np.all(w == 0.0), t
        state = update(state, r)
    for loss in 2.0 * 0.9 ** np.arange(20):
        r = gar.nslr_reward(jnp.float32(loss), 8)
        w = normalize(state, r)
        assert np.all(np.isfinite(w))
        state = update(state, r)
    assert float(w[0]) > 0.0  # a lower loss than the running mean is rewarded


# ---- REINFORCE -------------------------------------------------------------------------------
PHI = np.array([0.3, -0.5, 1.0, 0.0])
REWARD = np.array([1.0, -2.0, 0.5, 3.0])  # fixed reward of each of the 4 choices


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_score_function_gradient_is_the_gradient_of_expected_reward(name):
    dist = reinforce.split_distribution(name)
    with jax.enable_x64(True):
        phi, reward = jnp.asarray(PHI), jnp.asarray(REWARD)
        exact = jax.grad(lambda p: dist(p) @ reward)(phi)
        # Enumeration: each choice once, weighted by N·p_i (constants) -> Σ p_i r_i ∇log p_i.
        probs = dist(phi)
        weights = 4 * probs * reward
        enumerated = jax.grad(lambda p: reinforce.score_function_loss(
            dist.log_probs(p), weights, normalize=False))(phi)
        np.testing.assert_allclose(-enumerated, exact, rtol=1e-12)
        reward_std = float(jnp.sqrt(probs @ reward ** 2 - (probs @ reward) ** 2))

    # Monte Carlo with many samples, raw and normalized rewards (normalizing divides by std(r)).
    samples = 200_000

    @jax.jit
    def mc(phi, key):
        choices = reinforce.sample_categorical(key, dist.log_probs(phi), (samples,))
        r = jnp.asarray(REWARD, jnp.float32)[choices]
        per_sample = jax.vmap(jax.grad(lambda p, c: dist.log_probs(p)[c]), (None, 0))(phi, choices)
        raw = jax.grad(lambda p: reinforce.score_function_loss(
            dist.log_probs(p)[choices], r, normalize=False))(phi)
        normalized = jax.grad(lambda p: reinforce.score_function_loss(
            dist.log_probs(p)[choices], r))(phi)
        return raw, normalized, jnp.std(r[:, None] * per_sample, axis=0)

    raw, normalized, spread = mc(jnp.asarray(PHI, jnp.float32), jax.random.key(0))
    stderr = np.asarray(spread) / np.sqrt(samples)
    exact = np.asarray(exact)
    assert np.all(np.abs(-np.asarray(raw) - exact) < 5 * stderr + 1e-6), (raw, exact, stderr)
    np.testing.assert_allclose(-np.asarray(normalized) * reward_std, exact,
                               atol=float(5 * stderr.max() + 1e-3))


# ---- split distributions ---------------------------------------------------------------------
def test_inverted_softmax_is_a_distribution_with_the_right_gradient():
    probs_fn = jax.jit(reinforce.inverted_softmax_probs)
    log_probs_fn = jax.jit(reinforce.inverted_softmax_log_probs)
    np.testing.assert_allclose(probs_fn(jnp.zeros(10)), np.full(10, 0.1), rtol=1e-6)
    with jax.enable_x64(True):
        phi = jnp.asarray([0.7, -1.2, 0.1, 2.0, -0.3])
        n = phi.shape[0]
        s = np.exp(np.asarray(phi)) / np.exp(np.asarray(phi)).sum()
        p = probs_fn(phi)
        np.testing.assert_allclose(p, (1.0 - s) / (n - 1), rtol=1e-13)
        assert np.all(p >= 0) and abs(float(p.sum()) - 1.0) < 1e-14
        # Hand-derived Jacobian: ∂p_i/∂φ_j = −s_i (δ_ij − s_j) / (N − 1).
        hand = -(s[:, None] * (np.eye(n) - s[None, :])) / (n - 1)
        np.testing.assert_allclose(jax.jit(jax.jacobian(probs_fn))(phi), hand,
                                   rtol=1e-12, atol=1e-15)
        # Central finite differences of the log-probabilities.
        h = 1e-6
        fd = np.stack([(log_probs_fn(phi + h * e) - log_probs_fn(phi - h * e)) / (2 * h)
                       for e in np.eye(n)], axis=1)
        np.testing.assert_allclose(jax.jit(jax.jacobian(log_probs_fn))(phi), fd,
                                   rtol=1e-7, atol=1e-8)

    # One dominant logit: 1 − softmax underflows in float32, the log-probability does not.
    logp = log_probs_fn(jnp.array([40.0, 0.0, 0.0]))
    np.testing.assert_allclose(logp, [-40.0, np.log(0.5), np.log(0.5)], rtol=1e-6)
    assert abs(float(jnp.exp(logp).sum()) - 1.0) < 1e-6

    np.testing.assert_allclose(reinforce.split_distribution("softmax")(jnp.array([0.0, 1.0])),
                               [1 / (1 + np.e), np.e / (1 + np.e)], rtol=1e-6)
    with pytest.raises(ConfigError, match="unknown split distribution 'sparsemax'"):
        reinforce.split_distribution("sparsemax")
    with pytest.raises(ConfigError, match="at least 2 choices"):
        reinforce.inverted_softmax_probs(jnp.zeros(1))


# ---- meta optimizer --------------------------------------------------------------------------
def test_meta_optimizer_aggregates_clips_and_adams():
    lr, b1, b2, eps, k = 0.1, 0.5, 0.999, 1e-8, 3
    grads = np.array([[12.0, -0.5], [0.0, -0.5], [3.0, 2.0],     # mean [5, 1/3]
                      [30.0, 1.0], [6.0, 1.0], [0.0, 1.0]])      # mean [12, 1] -> clipped [5, 1]
    opt = reinforce.meta_optimizer(lr, b1=b1, clip=5.0, every_k=k)
    state = opt.init(jnp.zeros(2))
    update = jax.jit(opt.update)
    updates = []
    for g in grads:
        u, state = update(jnp.asarray(g, jnp.float32), state)
        updates.append(np.asarray(u))

    m = v = np.zeros(2)
    for step in range(2):  # Adam by hand on the clipped k-step means
        g = np.clip(grads[k * step:k * (step + 1)].mean(0), -5.0, 5.0)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g ** 2
        m_hat, v_hat = m / (1 - b1 ** (step + 1)), v / (1 - b2 ** (step + 1))
        expected = -lr * m_hat / (np.sqrt(v_hat) + eps)
        np.testing.assert_allclose(updates[k * step + k - 1], expected, rtol=1e-5)
        for i in range(k - 1):
            assert np.all(updates[k * step + i] == 0.0)

    with pytest.raises(ConfigError, match="every_k"):
        reinforce.meta_optimizer(0.1, every_k=0)
    with pytest.raises(ConfigError, match="log_probs and rewards must both be"):
        reinforce.score_function_loss(jnp.zeros(3), jnp.zeros(4))


def test_per_sampler_normalization_with_the_unbiased_std_by_hand():
    """OLA's authors' protocol: each sampler normalizes its own B/E rewards with torch.std's
    n - 1 std; a group of equal rewards gives exactly 0."""
    r = np.array([[1.0, 2.0, 4.0, 9.0], [3.0, 3.0, 3.0, 3.0]], np.float32)
    out = np.asarray(reinforce.normalize_rewards(jnp.asarray(r), axis=1, unbiased=True))
    first = r[0]
    np.testing.assert_allclose(out[0], (first - first.mean()) / first.std(ddof=1), rtol=1e-6)
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_allclose(np.std(out[0], ddof=1), 1.0, rtol=1e-6)


def test_normalize_in_groups_by_hand():
    """Per group with the n - 1 std ([1, 2, 3]: std 1; [10, 20, 30]: std 10), or the whole batch
    with the population std."""
    import numpy as np

    from gar_jax import reinforce

    r = jnp.array([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    np.testing.assert_allclose(reinforce.normalize_in_groups(r, 2), [-1, 0, 1, -1, 0, 1],
                               rtol=1e-6)
    x = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    np.testing.assert_allclose(reinforce.normalize_in_groups(r), (x - x.mean()) / x.std(),
                               rtol=1e-6)
