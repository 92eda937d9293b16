"""The OLA sampler: a learned distribution over augmentation sequences (GAR paper §6;
docs/algorithms.md §4).

Per image, with logits psi [K], phi [A, L] and rho [A] (K = max ops, A = ops in the space,
L = strength levels, 4 / 14-19 / 31 in the paper):

1. k in {1..K} ~ Categorical(softmax(psi)).
2. k ops a_1..a_k drawn uniformly from the space's A ops: with replacement by default (the
   authors' code), without replacement as an option (what the paper's text says).
3. For each drawn op a strength level m in {0..L-1} ~ Categorical(softmax(phi_a)).
4. Each drawn op is kept with probability sigmoid(rho_a), else skipped.

log pi = log p(k) + log p(op choice) + sum_kept log p(m | a) + sum_drawn log p(keep or skip | a).
The op choice is uniform and has no parameters; its log-probability (-k log A with replacement,
-sum_{j<k} log(A - j) without) IS included, so that `exp(log_prob)` is the exact probability of the
sampled configuration (k, ops, keep flags, levels of the kept ops); it does not change gradients.
The level of a skipped op is never used, so it is not part of the configuration (and is stored as 0).

Parameters are a plain pytree `{"k_logits": [K], "level_logits": [A, L], "keep_logits": [A]}`
(float32, zero init = uniform, keep probability 1/2), or an ensemble of E independent policies
with a leading axis E on every leaf: the batch is cut into E contiguous groups of B / E examples and
group e uses policy e. (The authors ran 4 GPUs x 8 samplers x 8 images: 32 independent samplers
of 8 images, each normalizing its own rewards; `gar_jax.methods.ola` offers both that protocol and
normalization over the global batch.)

Public API
    init_params(num_ops, *, num_levels=31, max_ops=4, ensemble_size=None) -> params
    sample(params, key, batch_size, *, replace=True) -> PolicySample(op_indices [B,K],
        levels [B,K], active [B,K], log_prob [B], num_ops [B])
    log_prob(params, sample, *, replace=True) -> [B]          (differentiable in params)
    augment(params, space, key, images, *, standard=None, replace=True) -> (images, PolicySample)
    probabilities(params) / summary(params)                    (p_k, p_level, p_keep)
    op_probability(params, *, replace=True) -> [A]   P(an image gets op a applied)
    op_probability_from(p_k, p_keep, *, replace=True) -> [..., A]   the same from probabilities
    to_json(params, op_names) / params_from_json(text)
    replay(text, space, *, standard=None) -> policy(key, images) -> images   (fixed replay)
"""
from __future__ import annotations

import json
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gar_jax.augment.applier import apply_sequence
from gar_jax.errors import ConfigError

NUM_LEVELS = 31
MAX_OPS = 4


class PolicySample(NamedTuple):
    """A sampled augmentation configuration for a batch of B images (K = max ops).

    op_indices: int32 [B, K], op of each slot in application order (0 beyond k).
    levels: int32 [B, K], strength level 0..L-1 of each slot (0 where not active).
    active: bool [B, K], slot drawn (slot < k) and kept: the op is applied.
    log_prob: float32 [B], log pi of the configuration under the params that sampled it.
    num_ops: int32 [B], k, the number of drawn slots (needed to re-evaluate log pi, because a
      skipped last slot looks the same as an undrawn one in `active`).
    """
    op_indices: jax.Array
    levels: jax.Array
    active: jax.Array
    log_prob: jax.Array
    num_ops: jax.Array


def init_params(num_ops: int, *, num_levels: int = NUM_LEVELS, max_ops: int = MAX_OPS,
                ensemble_size: int | None = None) -> dict:
    """Zero logits (uniform levels and k, keep probability 1/2).

    Returns `{"k_logits": [K], "level_logits": [A, L], "keep_logits": [A]}` float32, with a leading
    axis E on every leaf when `ensemble_size=E` is given.
    """
    if num_ops < 1 or num_levels < 1 or max_ops < 1:
        raise ConfigError(f"OLA policy needs num_ops, num_levels, max_ops >= 1, got "
                          f"{num_ops}, {num_levels}, {max_ops}")
    lead = () if ensemble_size is None else (int(ensemble_size),)
    if ensemble_size is not None and ensemble_size < 1:
        raise ConfigError(f"ensemble_size must be >= 1, got {ensemble_size}")
    return {
        "k_logits": jnp.zeros(lead + (max_ops,), jnp.float32),
        "level_logits": jnp.zeros(lead + (num_ops, num_levels), jnp.float32),
        "keep_logits": jnp.zeros(lead + (num_ops,), jnp.float32),
    }


def _as_ensemble(params: dict) -> dict:
    """Adds a leading ensemble axis of 1 to a single policy."""
    if params["k_logits"].ndim == 1:
        return jax.tree.map(lambda p: p[None], params)
    return params


def ensemble_size(params: dict) -> int:
    """E for an ensemble, 1 for a single policy."""
    return _as_ensemble(params)["k_logits"].shape[0]


def policy_of_example(batch_size: int, num_policies: int) -> jax.Array:
    """int32 [B]: the policy (ensemble member) that samples example i, i // (B / E)."""
    if batch_size % num_policies:
        raise ConfigError(f"batch size {batch_size} is not divisible by the OLA ensemble size "
                          f"{num_policies}; pick an ensemble size that divides the batch")
    return jnp.arange(batch_size, dtype=jnp.int32) // (batch_size // num_policies)


def _op_choice_log_prob(num_ops_drawn: jax.Array, num_ops: int, replace: bool) -> jax.Array:
    """log of the probability of the ordered uniform op choice, float32 [B]."""
    k = num_ops_drawn.astype(jnp.float32)
    if replace:
        return -k * math.log(num_ops)
    # log (A-k)!/A! = -sum_{j<k} log(A - j), via a cumulative table over j.
    table = jnp.concatenate([jnp.zeros(1), -jnp.cumsum(jnp.log(num_ops - jnp.arange(num_ops)))])
    return table[num_ops_drawn]


def _log_prob_groups(params: dict, group, op_indices, levels, active, num_ops, replace: bool
                     ) -> jax.Array:
    """log pi of given configurations, float32 [B]; example i uses ensemble member group[i]."""
    params = _as_ensemble(params)
    max_ops = op_indices.shape[1]
    group = group[:, None]  # [B, 1]
    log_pk = jax.nn.log_softmax(params["k_logits"], axis=-1)  # [E, K]
    log_pm = jax.nn.log_softmax(params["level_logits"], axis=-1)  # [E, A, L]
    keep_logit = params["keep_logits"][group, op_indices]  # [B, K]
    drawn = jnp.arange(max_ops)[None, :] < num_ops[:, None]
    lp = log_pk[group[:, 0], num_ops - 1]
    lp += _op_choice_log_prob(num_ops, params["keep_logits"].shape[-1], replace)
    lp += jnp.sum(jnp.where(active, log_pm[group, op_indices, levels], 0.0), axis=-1)
    keep_lp = jnp.where(active, jax.nn.log_sigmoid(keep_logit), jax.nn.log_sigmoid(-keep_logit))
    lp += jnp.sum(jnp.where(drawn, keep_lp, 0.0), axis=-1)
    return lp


def log_prob(params: dict, sample: PolicySample, *, replace: bool = True) -> jax.Array:
    """Re-evaluates log pi_params of `sample`'s configurations, float32 [B].

    Differentiable in `params` (the REINFORCE gradient); `replace` must match the sampling.
    """
    group = policy_of_example(sample.op_indices.shape[0], ensemble_size(params))
    return _log_prob_groups(params, group, sample.op_indices, sample.levels, sample.active,
                            sample.num_ops, replace)


def sample(params: dict, key: jax.Array, batch_size: int, *, replace: bool = True
           ) -> PolicySample:
    """Samples one augmentation configuration per image (module docstring), for B images.

    Example i uses ensemble member i // (B / E). `replace=False` draws the k ops without
    replacement (needs K <= A).
    """
    group = policy_of_example(batch_size, ensemble_size(params))
    return _sample_groups(params, key, group, replace)


def _sample_groups(params: dict, key: jax.Array, group: jax.Array, replace: bool
                   ) -> PolicySample:
    """`sample` with an explicit ensemble member per example, group int32 [B]."""
    params = jax.tree.map(jax.lax.stop_gradient, _as_ensemble(params))
    _, num_ops_space, _ = params["level_logits"].shape
    max_ops = params["k_logits"].shape[-1]
    batch_size = group.shape[0]
    if not replace and max_ops > num_ops_space:
        raise ConfigError(f"cannot draw up to {max_ops} ops without replacement from a space of "
                          f"{num_ops_space} ops; use replace=True or fewer max ops")
    k_key, op_key, level_key, keep_key = jax.random.split(key, 4)
    num_ops = 1 + jax.random.categorical(k_key, params["k_logits"][group], axis=-1)  # [B]
    if replace:
        ops = jax.random.randint(op_key, (batch_size, max_ops), 0, num_ops_space)
    else:
        # The first K entries of a uniformly random permutation of the A ops.
        noise = jax.random.uniform(op_key, (batch_size, num_ops_space))
        ops = jnp.argsort(noise, axis=-1)[:, :max_ops]
    ops = ops.astype(jnp.int32)
    levels = jax.random.categorical(
        level_key, params["level_logits"][group[:, None], ops], axis=-1).astype(jnp.int32)
    keep = jax.random.bernoulli(keep_key, jax.nn.sigmoid(params["keep_logits"][group[:, None], ops]))
    drawn = jnp.arange(max_ops)[None, :] < num_ops[:, None]
    active = drawn & keep
    # Canonical form: nothing stored for slots that play no part in the configuration.
    ops = jnp.where(drawn, ops, 0)
    levels = jnp.where(active, levels, 0)
    num_ops = num_ops.astype(jnp.int32)
    lp = _log_prob_groups(params, group, ops, levels, active, num_ops, replace)
    return PolicySample(ops, levels, active, lp, num_ops)


def augment(params: dict, space, key: jax.Array, images: jax.Array, *,
            standard: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
            replace: bool = True) -> tuple[jax.Array, PolicySample]:
    """Samples a configuration per image and applies it, then the `standard` pipeline.

    images: uint8 [B, H, W, C]. `space` is a `gar_jax.augment.spaces.SearchSpace` whose op count
    matches the params. `standard(key, images) -> images` (e.g. `policies.standard`, pad-crop, flip,
    cutout) runs after the learned ops; None skips it. Returns the augmented images (uint8, same
    shape) and the `PolicySample` (its `log_prob` is the REINFORCE log pi).
    """
    if params["keep_logits"].shape[-1] != len(space):
        raise ConfigError(f"the OLA policy has {params['keep_logits'].shape[-1]} ops but space "
                          f"{space.name!r} has {len(space)}; init_params(len(space))")
    sample_key, apply_key = jax.random.split(key)
    s = sample(params, sample_key, images.shape[0], replace=replace)
    return _apply(space, apply_key, images, s, standard), s


def _apply(space, key, images, s: PolicySample, standard) -> jax.Array:
    apply_key, standard_key = jax.random.split(key)
    out = apply_sequence(space, apply_key, images, s.op_indices, s.levels, s.active)
    return out if standard is None else standard(standard_key, out)


def replay(text: str, space, *, standard: Callable | None = None
           ) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """A fixed policy from `to_json` text (e.g. a run's ``policy.json``): ``(key, images) -> images``.

    Each image draws one ensemble member uniformly (the mixture the ensemble trained with), then
    a configuration with that member's fixed probabilities, applied as in `augment` (then
    `standard`, if given). `space` must be the space the policy was learned on (same op names).
    """
    params, names, replace = params_from_json(text)
    if tuple(names) != tuple(space.op_names):
        raise ConfigError(f"policy ops {names} do not match space {space.name!r} ops "
                          f"{list(space.op_names)}")
    members = params["k_logits"].shape[0]

    def policy(key, images):
        member_key, sample_key, apply_key = jax.random.split(key, 3)
        group = jax.random.randint(member_key, (images.shape[0],), 0, members)
        s = _sample_groups(params, sample_key, group, replace)
        return _apply(space, apply_key, images, s, standard)

    return policy


# ----------------------------------------------------------------------------- what was learned


def probabilities(params: dict) -> dict:
    """The policy as probabilities (numpy float64), per ensemble member.

    Returns {"p_k": [E, K], "p_level": [E, A, L], "p_keep": [E, A]}.
    """
    params = _as_ensemble(params)
    return {
        "p_k": np.asarray(jax.nn.softmax(params["k_logits"], axis=-1), np.float64),
        "p_level": np.asarray(jax.nn.softmax(params["level_logits"], axis=-1), np.float64),
        "p_keep": np.asarray(jax.nn.sigmoid(params["keep_logits"]), np.float64),
    }


def summary(params: dict) -> dict:
    """Ensemble-averaged (mixture-marginal) p(k) [K], keep probability [A], level dist [A, L]."""
    probs = probabilities(params)
    return {name: value.mean(axis=0) for name, value in probs.items()}


def op_probability(params: dict, *, replace: bool = True) -> np.ndarray:
    """float64 [A]: the probability that an image gets op a applied (at least once) under the
    policy (mixture over the ensemble, each member sampling B/E images).

    With replacement each of the k slots draws a with probability 1/A and keeps it with
    p_keep(a): P = Σ_k p(k) (1 − (1 − p_keep(a)/A)^k); without replacement a is among the k
    drawn ops with probability k/A: P = Σ_k p(k) (k/A) p_keep(a).
    """
    probs = probabilities(params)
    return op_probability_from(probs["p_k"], probs["p_keep"], replace=replace).mean(axis=0)


def op_probability_from(p_k, p_keep, *, replace: bool = True) -> np.ndarray:
    """`op_probability` of one policy given as probabilities: p(k) [..., K] and the keep
    probabilities [..., A] (any leading axes: members, epochs, runs) -> [..., A]."""
    p_k, p_keep = np.asarray(p_k), np.asarray(p_keep)
    num_ops = p_keep.shape[-1]
    k = np.arange(1, p_k.shape[-1] + 1, dtype=np.float64)       # [K]
    if replace:
        miss = (1.0 - p_keep / num_ops)[..., None] ** k           # [..., A, K]
        return np.einsum("...k,...ak->...a", p_k, 1.0 - miss)
    return (p_k @ k)[..., None] / num_ops * p_keep


def to_json(params: dict, op_names: list[str], *, replace: bool = True) -> str:
    """Serializes the policy's probabilities (every ensemble member) with the op names."""
    probs = probabilities(params)
    if len(op_names) != probs["p_keep"].shape[-1]:
        raise ConfigError(f"{len(op_names)} op names for a policy over "
                          f"{probs['p_keep'].shape[-1]} ops")
    return json.dumps({
        "format": "gar_jax.ola_policy/1",
        "ops": list(op_names),
        "replace": bool(replace),
        "p_k": probs["p_k"].tolist(),
        "p_level": probs["p_level"].tolist(),
        "p_keep": probs["p_keep"].tolist(),
    })


def params_from_json(text: str) -> tuple[dict, list[str], bool]:
    """Inverse of `to_json`: (logit params with ensemble axis, op names, replace).

    Logits are log-probabilities (softmax / sigmoid of them give back the stored probabilities).
    """
    data = json.loads(text)
    if data.get("format") != "gar_jax.ola_policy/1":
        raise ConfigError("not an OLA policy JSON (expected format 'gar_jax.ola_policy/1')")
    p_keep = np.clip(np.asarray(data["p_keep"], np.float64), 1e-12, 1 - 1e-12)
    tiny = 1e-30  # log(0) would give -inf logits; a level of probability 0 stays (almost) 0.
    params = {
        "k_logits": jnp.asarray(np.log(np.asarray(data["p_k"]) + tiny), jnp.float32),
        "level_logits": jnp.asarray(np.log(np.asarray(data["p_level"]) + tiny), jnp.float32),
        "keep_logits": jnp.asarray(np.log(p_keep) - np.log1p(-p_keep), jnp.float32),
    }
    return params, list(data["ops"]), bool(data["replace"])
