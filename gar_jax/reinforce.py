"""REINFORCE for the meta-parameters: reward normalization, the score-function loss, the meta
optimizer and the split distributions (docs/algorithms.md §2, §3; GAR paper §4, eqs. 2-3).

For each example n a choice c_n ~ π_φ was sampled (a data split, an augmentation) and got a
reward r_n (GAR or NSLR, ``gar_jax.gar``). The meta loss is

    −(1/B) Σ_n ŵ_n log π_φ(c_n),   ŵ = stop_gradient((r − mean r) / std r)   (per batch),

whose gradient is an estimate of −∇_φ E[r] / std(r). NSLR gives every example of a batch the
same reward, so per-batch normalization is 0/0: here it is exactly 0 (never NaN), and NSLR is
normalized across steps with :class:`RunningNormalizer` instead. Gradient value clipping at 5,
Adam and meta-gradient aggregation over k steps live in :func:`meta_optimizer`.

Public API
    normalize_rewards(r, axis=None, eps=1e-8) -> float[...]
    RunningNormalizer(decay=0.9, eps=1e-8): .init() / .update(state, r) / .normalize(state, r)
    score_function_loss(log_probs, rewards, *, normalize=True) -> float[]
    policy_update(meta_tx, params, opt_state, log_prob_fn, weights, *, at=None)
        -> (params, opt_state): the one REINFORCE step of every method that uses it
    reward_update(meta_tx, params, opt_state, reward_stats, log_prob_fn, rewards, *,
                  normalizer=None, groups=None, at=None)
        -> (params, opt_state, reward_stats, weights): raw rewards normalized, then policy_update
    meta_optimizer(learning_rate, b1=0.9, clip=5.0, every_k=1) -> optax.GradientTransformation
    softmax_probs / softmax_log_probs / inverted_softmax_probs / inverted_softmax_log_probs
        (logits float[..., N]) -> float[..., N]
    sample_categorical(key, log_probs, shape) -> int32[shape]
    split_distribution(name) -> SplitDistribution (callable: logits -> probs; .log_probs)
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gar_jax.errors import ConfigError


# --------------------------------------------------------------------------------------------
# Reward normalization
# --------------------------------------------------------------------------------------------
def _degenerate(spread: jax.Array, magnitude: jax.Array, eps: float) -> jax.Array:
    """True where rewards are (numerically) all equal: spread ≤ eps·max(1, |r|).

    The spread (max − min) is tested rather than the std because the std of identical float32
    values is not exactly 0 (the mean of B copies of x is rounded), which would turn
    round-off into ±1 rewards.
    """
    return spread <= eps * jnp.maximum(1.0, magnitude)


def normalize_rewards(r: jax.Array, axis: int | tuple[int, ...] | None = None,
                      eps: float = 1e-8, *, unbiased: bool = False) -> jax.Array:
    """(r − mean) / std over `axis` (None: all of r), the population std (``unbiased``: the
    n − 1 std, as ``torch.std`` in the authors' code).

    Where the rewards are all equal (up to eps relative to their magnitude: NSLR, or a constant
    reward) the result is exactly 0.0, never NaN; no division by zero happens, so the gradient
    through this function is finite too.

    Args:
      r: float[...] rewards, e.g. float[B].
      axis: the axis (axes) that form one batch; None = all.
      eps: relative tolerance for "all equal".

    Returns:
      float array shaped like r.
    """
    r = jnp.asarray(r, jnp.result_type(r, jnp.float32))
    mean = jnp.mean(r, axis=axis, keepdims=True)
    std = jnp.std(r, axis=axis, keepdims=True, ddof=1 if unbiased else 0)
    spread = jnp.max(r, axis=axis, keepdims=True) - jnp.min(r, axis=axis, keepdims=True)
    flat = _degenerate(spread, jnp.max(jnp.abs(r), axis=axis, keepdims=True), eps) | (std <= 0)
    safe_std = jnp.where(flat, 1.0, std)
    return jnp.where(flat, 0.0, (r - mean) / safe_std)


class RunningStats(NamedTuple):
    """State of :class:`RunningNormalizer`: steps seen, and the weighted mean/variance of all
    rewards seen so far (float32 scalars)."""
    count: jax.Array
    mean: jax.Array
    var: jax.Array


@dataclasses.dataclass(frozen=True)
class RunningNormalizer:
    """Normalizes rewards with statistics pooled across steps (for NSLR; docs/algorithms.md §1).

    Each step's rewards r_t (float[B]) enter as one component of a mixture with weight
    α_t = max(1/t, 1 − decay): the first steps are averaged exactly (α = 1/t, like Welford's
    algorithm, so no start-up bias), later steps form an exponential moving average with time
    constant 1/(1 − decay) steps, which follows a training loss that keeps decreasing.
    The update is the exact mixture formula (no E[r²] − E[r]² cancellation):

        mean' = mean + α (μ_t − mean)
        var'  = (1 − α) var + α σ²_t + α (1 − α) (μ_t − mean)²

    with μ_t, σ²_t the mean and population variance of r_t. ``decay=None`` keeps α = 1/t: the
    exact mean/variance of all rewards (equal-size steps).

    Use: ``w = norm.normalize(state, r); state = norm.update(state, r)`` — normalizing with the
    statistics of *previous* steps keeps the baseline independent of the current choices.
    ``normalize`` returns 0 while fewer than one step was seen or the variance is ~0; it never
    divides by zero and never returns NaN.
    """
    decay: float | None = 0.9
    eps: float = 1e-8

    def __post_init__(self):
        if self.decay is not None and not 0.0 <= self.decay < 1.0:
            raise ConfigError(f"RunningNormalizer: decay must be in [0, 1) or None, "
                              f"got {self.decay}")

    def init(self) -> RunningStats:
        zero = jnp.zeros((), jnp.float32)
        return RunningStats(count=jnp.zeros((), jnp.int32), mean=zero, var=zero)

    def update(self, state: RunningStats, rewards: jax.Array) -> RunningStats:
        """Adds one step's rewards (float[...], all of them one step)."""
        rewards = jnp.asarray(rewards, jnp.float32)
        count = state.count + 1
        alpha = 1.0 / count.astype(jnp.float32)
        if self.decay is not None:
            alpha = jnp.maximum(alpha, 1.0 - self.decay)
        step_mean = jnp.mean(rewards)
        step_var = jnp.mean(jnp.square(rewards - step_mean))
        delta = step_mean - state.mean
        mean = state.mean + alpha * delta
        var = (1.0 - alpha) * state.var + alpha * step_var + alpha * (1.0 - alpha) * delta ** 2
        return RunningStats(count=count, mean=mean, var=var)

    def normalize(self, state: RunningStats, rewards: jax.Array) -> jax.Array:
        """(r − mean) / std with the state's statistics; 0 where they are undefined or ~0."""
        rewards = jnp.asarray(rewards, jnp.float32)
        std = jnp.sqrt(state.var)
        flat = (state.count < 1) | _degenerate(std, jnp.abs(state.mean), self.eps) | (std <= 0)
        safe_std = jnp.where(flat, 1.0, std)
        return jnp.where(flat, 0.0, (rewards - state.mean) / safe_std)


# --------------------------------------------------------------------------------------------
# Score-function loss and the meta optimizer
# --------------------------------------------------------------------------------------------
def score_function_loss(log_probs: jax.Array, rewards: jax.Array, *,
                        normalize: bool = True) -> jax.Array:
    """REINFORCE loss −(1/B) Σ_n w_n log π(c_n), w = stop_gradient(normalized rewards).

    Args:
      log_probs: float[B], log π_φ(c_n) of the sampled choices (differentiable in φ).
      rewards: float[B]; normalized per batch with :func:`normalize_rewards` when `normalize`
        (pass already-normalized rewards, e.g. from :class:`RunningNormalizer`, with
        normalize=False).

    Returns:
      float[] loss; its φ-gradient estimates −∇_φ E[r] (divided by std(r) when normalized).
    """
    log_probs = jnp.asarray(log_probs)
    rewards = jnp.asarray(rewards)
    if log_probs.shape != rewards.shape or log_probs.ndim != 1:
        raise ConfigError(f"score_function_loss: log_probs and rewards must both be [B]; got "
                          f"{log_probs.shape} and {rewards.shape}")
    weights = normalize_rewards(rewards) if normalize else rewards
    return -jnp.mean(jax.lax.stop_gradient(weights) * log_probs)


def policy_update(meta_tx: optax.GradientTransformation, params, opt_state, log_prob_fn: Callable,
                  weights: jax.Array, *, at=None):
    """One REINFORCE update of the meta-parameters (toy split, OLA, any later method).

    Args:
      meta_tx: e.g. `meta_optimizer`.
      params, opt_state: the meta-parameters (any pytree) and their optimizer state.
      log_prob_fn: ``fn(params) -> float[B]``, log π(c_n) of the sampled choices.
      weights: float[B] normalized rewards (`normalize_rewards`, `RunningNormalizer`).
      at: the parameters that sampled the choices, where the gradient is taken (default
        `params`; the toy split samples batch t with φ_t and updates φ after step t+1).

    Returns:
      ``(new params, new opt_state)``.
    """
    at = params if at is None else at
    grads = jax.grad(lambda p: score_function_loss(log_prob_fn(p), weights, normalize=False))(at)
    updates, opt_state = meta_tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def normalize_in_groups(rewards: jax.Array, groups: int | None = None) -> jax.Array:
    """`reward_update`'s per-batch normalization of float[B] rewards: with `groups`, each of
    `groups` equal consecutive groups on its own with the n − 1 std (OLA's samplers, as the
    authors' ``torch.std``); without, the whole batch with the population std."""
    if groups:
        return normalize_rewards(rewards.reshape(groups, -1), axis=1, unbiased=True).reshape(-1)
    return normalize_rewards(rewards)


def reward_update(meta_tx: optax.GradientTransformation, params, opt_state, reward_stats,
                  log_prob_fn: Callable, rewards: jax.Array, *,
                  normalizer: RunningNormalizer | None = None, groups: int | None = None,
                  at=None):
    """Rewards -> one policy update: the meta step of every REINFORCE learner (OLA, the toy
    split, the data mixtures).

    The raw rewards (float[B]) are normalized across steps with `normalizer` (NSLR: the
    statistics of previous steps, then this step's rewards are added to them), or per batch
    (`normalize_rewards`; with `groups`, each of `groups` equal consecutive groups of the batch
    on its own, the n − 1 std: OLA's samplers), then `policy_update` takes one step.

    Returns:
      ``(params, opt_state, reward_stats, weights)``: the updated meta-parameters and optimizer
      state, the running statistics (unchanged without `normalizer`) and the weights ŵ used.
    """
    if normalizer is not None:
        weights = normalizer.normalize(reward_stats, rewards)
        reward_stats = normalizer.update(reward_stats, rewards)
    else:
        weights = normalize_in_groups(rewards, groups)
    params, opt_state = policy_update(meta_tx, params, opt_state, log_prob_fn, weights, at=at)
    return params, opt_state, reward_stats, weights


def meta_optimizer(learning_rate: float | optax.Schedule, b1: float = 0.9,
                   clip: float | None = 5.0, every_k: int = 1) -> optax.GradientTransformation:
    """Adam for the meta-parameters, with gradient *value* clipping and k-step aggregation.

    ``optax.MultiSteps(chain(clip_by_value(clip), adam(learning_rate, b1)), every_k)``: the
    meta-gradients of `every_k` consecutive steps are averaged, then clipped elementwise to
    [−clip, clip] and fed to Adam; the updates of the other steps are zero. clip=None: no
    clipping. ``learning_rate``: a number, or a schedule of Adam's update count (the
    aggregated updates; its state then counts them). (Toy split: lr 0.1, k = 10; OLA: lr 0.1,
    b1 = 0, k = 1.)
    """
    if not callable(learning_rate) and not learning_rate > 0:
        raise ConfigError(f"meta_optimizer: learning_rate must be > 0, got {learning_rate}")
    if not isinstance(every_k, int) or every_k < 1:
        raise ConfigError(f"meta_optimizer: every_k must be a positive int, got {every_k!r}")
    if clip is not None and not clip > 0:
        raise ConfigError(f"meta_optimizer: clip must be > 0 or None, got {clip}")
    parts = [] if clip is None else [optax.clip(clip)]
    inner = optax.chain(*parts, optax.adam(learning_rate, b1=b1))
    return optax.MultiSteps(inner, every_k_schedule=every_k).gradient_transformation()


# --------------------------------------------------------------------------------------------
# Split distributions
# --------------------------------------------------------------------------------------------
def softmax_probs(logits: jax.Array) -> jax.Array:
    """p_i = softmax(φ)_i over the last axis; float[..., N]."""
    return jax.nn.softmax(logits, axis=-1)


def softmax_log_probs(logits: jax.Array) -> jax.Array:
    """log softmax(φ)_i over the last axis; float[..., N]."""
    return jax.nn.log_softmax(logits, axis=-1)


def _num_choices(logits: jax.Array) -> int:
    n = jnp.shape(logits)[-1]
    if n < 2:
        raise ConfigError(f"inverted softmax needs at least 2 choices, got logits of shape "
                          f"{jnp.shape(logits)}")
    return n


def inverted_softmax_probs(logits: jax.Array) -> jax.Array:
    """p_i = (1 − softmax(φ)_i) / (N − 1) over the last axis; float[..., N], N ≥ 2.

    Raising one logit lowers that choice's probability: the distribution tends toward a single
    loser rather than a single winner. Zero logits give the uniform 1/N.
    """
    return jnp.exp(inverted_softmax_log_probs(logits))


def inverted_softmax_log_probs(logits: jax.Array) -> jax.Array:
    """log p_i of :func:`inverted_softmax_probs`, stable when one softmax_i → 1.

    log(1 − softmax_i) = logsumexp_{j≠i} φ_j − logsumexp_j φ_j, computed with a mask so that it
    stays accurate (and finite) where 1 − softmax_i underflows in floating point.
    """
    n = _num_choices(logits)
    logits = jnp.asarray(logits)
    others = 1.0 - jnp.eye(n, dtype=logits.dtype)  # row i: weight 0 on choice i, 1 elsewhere
    log_rest = jax.nn.logsumexp(logits[..., None, :], axis=-1, b=others)
    return log_rest - jax.nn.logsumexp(logits, axis=-1)[..., None] - jnp.log(n - 1.0)


def sample_categorical(key: jax.Array, log_probs: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """int32[shape] draws from the categorical with log-probabilities `log_probs` (float[N])."""
    return jax.random.categorical(key, log_probs, shape=shape).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class SplitDistribution:
    """A named distribution over N choices: ``dist(logits) -> probs``, ``dist.log_probs``."""
    name: str
    probs: Callable[[jax.Array], jax.Array]
    log_probs: Callable[[jax.Array], jax.Array]

    def __call__(self, logits: jax.Array) -> jax.Array:
        return self.probs(logits)


SPLIT_DISTRIBUTIONS = {
    "softmax": SplitDistribution("softmax", softmax_probs, softmax_log_probs),
    "inverted_softmax": SplitDistribution("inverted_softmax", inverted_softmax_probs,
                                          inverted_softmax_log_probs),
}


def split_distribution(name: str) -> SplitDistribution:
    """The distribution called `name` ("softmax" or "inverted_softmax"); ConfigError otherwise."""
    if name not in SPLIT_DISTRIBUTIONS:
        raise ConfigError(f"unknown split distribution {name!r}; use one of "
                          f"{sorted(SPLIT_DISTRIBUTIONS)}")
    return SPLIT_DISTRIBUTIONS[name]
