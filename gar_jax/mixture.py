"""Online data mixtures learned with GAR, for any JAX training loop.

A model is trained on K data *sources* (datasets, crawls, synthetic sets, noisy labels, ...). Each
example of a batch comes from a source drawn from p = softmax(φ) (φ: K logits); the mixture is
learned online, during the one ordinary training run, by REINFORCE with the Gradient-Alignment
Reward (GAR paper §3; `gar_jax.gar`):

    r_n = ⟨∇_θ ℓ_n(θ_t), G⟩,     G = ∇_θ L_{t+1}(θ_{t+1})   (the next batch's mean-loss gradient)

or, for users who know what they want to be good at, G = the gradient of a small *target set*'s
mean loss. Rewards are normalized over the batch (r − mean) / std (the paper's per-batch
normalization, `reinforce.normalize_rewards`; or across steps with `reinforce.RunningNormalizer`
for NSLR's one-reward-per-step), and the REINFORCE loss −(1/B) Σ_n ŵ_n log p(c_n) is minimized
with Adam with gradient value clipping (`reinforce.meta_optimizer`). Everything here is a pure
function of explicit state and keys: it jits, vmaps and checkpoints like any pytree.

Use in your own jitted step (see README "GAR in your own training loop")::

    mix = mixture.Mixture(num_sources=K, learning_rate=0.1)
    sources = mixture.DeviceSources.create([src_0, src_1, ...])   # dicts of arrays, on device
    mstate = mix.init()
    ids = mix.sample(mstate, key, batch_size)                      # int32 [B] source of each ex.
    batch = sources.draw(key2, ids)                                # examples from those sources
    ... SGD step t on batch; keep (θ_t, batch, ids) until step t+1's gradient G exists ...
    rewards = mixture.example_rewards(per_example_loss, params_t, batch_t, G)   # GAR, float[B]
    mstate = mix.update(mstate, ids_t, rewards)                    # REINFORCE

Sources too large for the device: `HostSources` draws the same way on the host from random-access
sources (anything with ``len()`` and ``[i] -> {"image": ..., "label": ...}``, e.g. a
``tfds.data_source``).

The baselines of the benchmark (experiments/mixture/) are here too, as pure update rules on their
own small states: `odm_update` (EXP3 on per-source training loss, Albalak et al. 2023) and
`dga_update` (per-domain gradient alignment with a target set, Fan et al. 2024).

Public API
    Mixture(num_sources, learning_rate=0.1, b1=0.9, clip=5.0, every_k=1,
            normalization="batch", running_decay=0.9, init_probs=None)
        .init() -> MixtureState; .probs(state) / .log_probs(state) -> float[K]
        .sample(state, key, batch_size) -> int32[B]
        .update(state, source_ids, rewards, *, logits_at=None) -> MixtureState
    reinforce_gradient(logits, source_ids, weights) -> float[K]   (the update's gradient)
    example_rewards(per_example_loss_fn, params, batch, direction, *, method="jvp") -> float[B]
    first_examples(batch_or_tape, num) -> the first num examples (rewards for a subset)
    per_source_mean(values, source_ids, num_sources) -> (float[K] means, float[K] counts)
    DeviceSources.create(sources, names=None); .draw(key, source_ids) -> batch; .sizes
    HostSources(sources, names=None); .draw(key, source_ids) -> numpy batch
    odm_init(num_sources) / odm_update(state, source_ids, losses, ...) / odm_probs(state)
    dga_init(num_sources) / dga_update(state, alignments, *, learning_rate, ema)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gar_jax import gar, gar_layerwise
from gar_jax import reinforce
from gar_jax.errors import ConfigError

NORMALIZATIONS = ("batch", "running")


def check_num_sources(num_sources) -> None:
    """ConfigError unless ``num_sources`` is an int >= 2 (a mixture needs two sources)."""
    if not isinstance(num_sources, (int, np.integer)) or num_sources < 2:
        raise ConfigError(f"a mixture needs at least 2 sources, got num_sources={num_sources!r}")


def _is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _check_rewards(source_ids, rewards) -> None:
    """Shape checks always; a NaN/inf check where the values are concrete (eager calls)."""
    if jnp.ndim(rewards) != 1 or jnp.shape(rewards) != jnp.shape(source_ids):
        raise ConfigError(f"mixture update: rewards must be float[B] like source_ids; got "
                          f"{jnp.shape(rewards)} and {jnp.shape(source_ids)}")
    if not _is_traced(rewards) and not np.all(np.isfinite(np.asarray(rewards))):
        bad = int(np.sum(~np.isfinite(np.asarray(rewards))))
        raise ConfigError(f"mixture update: {bad} of {len(np.asarray(rewards))} rewards are "
                          f"NaN or inf (a diverged model or loss?); the mixture was not updated")


# --------------------------------------------------------------------------------------------
# The learned mixture (REINFORCE)
# --------------------------------------------------------------------------------------------
@flax.struct.dataclass
class MixtureState:
    """What a `Mixture` learns; a pytree (checkpoint it with the model's state).

    logits: float32 [K], φ (p = softmax(φ)); opt_state: Adam's state for φ; reward_stats: the
    running normalizer's statistics (``normalization="running"``); updates: int32 [], REINFORCE
    updates applied; skipped: int32 [], updates skipped inside jit because a reward was NaN/inf
    (eager calls raise instead) — check it is 0.
    """
    logits: jax.Array
    opt_state: Any
    reward_stats: Any
    updates: jax.Array
    skipped: jax.Array


def reinforce_gradient(logits: jax.Array, source_ids: jax.Array,
                       weights: jax.Array) -> jax.Array:
    """∇_φ of the REINFORCE loss −(1/B) Σ_n w_n log softmax(φ)_{c_n}, in closed form.

    Equals −(1/B) Σ_n w_n (onehot(c_n) − softmax(φ)); `Mixture.update` takes it by autodiff of
    `reinforce.score_function_loss` (tests/test_mixture.py checks the two agree, and that its
    expectation over the choices is −∇_φ E[r] by exact enumeration).
    """
    probs = jax.nn.softmax(logits)
    onehot = jax.nn.one_hot(source_ids, logits.shape[-1], dtype=probs.dtype)
    return -jnp.mean(weights[:, None] * (onehot - probs[None, :]), axis=0)


@dataclasses.dataclass(frozen=True)
class Mixture:
    """A mixture over K sources learned by REINFORCE (the static settings; state is separate).

    Args:
      num_sources: K >= 2.
      learning_rate, b1, clip, every_k: the meta optimizer (`reinforce.meta_optimizer`: Adam,
        gradient value clipping, meta-gradients averaged over every_k updates). The GAR paper's
        toy split uses lr 0.1, b1 0.9, clip 5.
      normalization: "batch" (GAR: (r − mean) / std over the batch) or "running" (statistics of
        previous updates, `reinforce.RunningNormalizer(running_decay)`: for rewards that are
        equal within a batch, such as NSLR's −L_{t+1}).
      init_probs: initial mixture (K positive numbers, normalized here); default uniform.
    """
    num_sources: int
    learning_rate: float = 0.1
    b1: float = 0.9
    clip: float | None = 5.0
    every_k: int = 1
    normalization: str = "batch"
    running_decay: float = 0.9
    init_probs: tuple | None = None

    def __post_init__(self):
        check_num_sources(self.num_sources)
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"Mixture: normalization={self.normalization!r} must be one of "
                              f"{NORMALIZATIONS}")
        if self.init_probs is not None:
            p = np.asarray(self.init_probs, np.float64)
            if p.shape != (self.num_sources,) or not np.all(p > 0) or not np.all(np.isfinite(p)):
                raise ConfigError(f"Mixture: init_probs must be {self.num_sources} positive "
                                  f"numbers, got {self.init_probs!r}")
            object.__setattr__(self, "init_probs", tuple(float(x) for x in p / p.sum()))
        self.meta_tx  # validates the optimizer settings now

    @property
    def meta_tx(self) -> optax.GradientTransformation:
        tx = reinforce.meta_optimizer(self.learning_rate, b1=self.b1, clip=self.clip,
                                      every_k=self.every_k)  # validates the settings
        if self.every_k == 1:
            # The same updates without optax.MultiSteps' accumulator and conditional (which
            # are a fifth of a mixture step's kernels on a small net).
            parts = [] if self.clip is None else [optax.clip(self.clip)]
            tx = optax.chain(*parts, optax.adam(self.learning_rate, b1=self.b1))
        return tx

    @property
    def normalizer(self) -> reinforce.RunningNormalizer:
        return reinforce.RunningNormalizer(decay=self.running_decay)

    def init(self) -> MixtureState:
        if self.init_probs is None:
            logits = jnp.zeros((self.num_sources,), jnp.float32)
        else:
            logits = jnp.log(jnp.asarray(self.init_probs, jnp.float32))
        zero = jnp.zeros((), jnp.int32)
        return MixtureState(logits=logits, opt_state=self.meta_tx.init(logits),
                            reward_stats=self.normalizer.init(), updates=zero, skipped=zero)

    def probs(self, state: MixtureState) -> jax.Array:
        """float[K]: the current mixture p = softmax(φ)."""
        return jax.nn.softmax(state.logits)

    def log_probs(self, state: MixtureState) -> jax.Array:
        return jax.nn.log_softmax(state.logits)

    def sample(self, state: MixtureState, key: jax.Array, batch_size: int) -> jax.Array:
        """int32 [batch_size]: the source of each example, i.i.d. from p under `key`."""
        return reinforce.sample_categorical(key, self.log_probs(state), (batch_size,))

    def weights(self, state: MixtureState, rewards: jax.Array) -> jax.Array:
        """The normalized REINFORCE weights ŵ of `rewards` (float[B]) under this mixture's
        normalization (with the running statistics *before* this batch)."""
        if self.normalization == "batch":
            return reinforce.normalize_rewards(rewards)
        return self.normalizer.normalize(state.reward_stats, rewards)

    def update(self, state: MixtureState, source_ids: jax.Array, rewards: jax.Array, *,
               logits_at: jax.Array | None = None) -> MixtureState:
        """One REINFORCE update from the batch's sources and raw rewards (float[B]).

        ``logits_at``: the logits that sampled ``source_ids`` when they differ from
        ``state.logits`` (an update delayed by a step); the score function is taken there.
        Eager calls raise ConfigError on NaN/inf rewards; inside jit such an update is skipped
        (state unchanged except ``skipped`` + 1).
        """
        _check_rewards(source_ids, rewards)
        rewards = jnp.asarray(rewards, jnp.float32)
        logits, opt_state, stats, _ = reinforce.reward_update(
            self.meta_tx, state.logits, state.opt_state, state.reward_stats,
            lambda phi: jax.nn.log_softmax(phi)[source_ids], rewards,
            normalizer=self.normalizer if self.normalization == "running" else None,
            at=logits_at)
        new = state.replace(logits=logits, opt_state=opt_state, reward_stats=stats,
                            updates=state.updates + 1)
        ok = jnp.all(jnp.isfinite(rewards))
        return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new,
                            state.replace(skipped=state.skipped + 1))


# --------------------------------------------------------------------------------------------
# Rewards
# --------------------------------------------------------------------------------------------
def example_rewards(per_example_loss_fn: Callable, params, batch: dict, direction, *,
                    method: str = "jvp") -> jax.Array:
    """GAR of each example: ⟨∇ℓ_n(params), direction⟩, float[B] (`gar.alignment`).

    ``params`` = θ_t (the parameters batch t was trained at), ``direction`` = G, the gradient of
    the next batch's (or the target set's) *mean* loss, at θ_{t+1}. "jvp" is exact and costs
    about one forward pass; "vmap" materializes per-example gradients (the reference). For the
    layer-wise method (cheaper for conv nets: one forward from stored activations) use
    ``gar_layerwise.capture`` in step t and ``gar_layerwise.alignment_from_tape`` in step t+1.
    """
    return gar.alignment(per_example_loss_fn, params, batch, direction, method=method)


def first_examples(batch, num: int | None):
    """The first `num` examples of a batch (every leaf's leading axis), or of a layer-wise GAR
    tape (`gar_layerwise.Tape`: its per-example entries; the per-example rewards of the rest are
    unchanged, `tape.scale` stays the batch size); ``None`` = all of them.

    Rewarding only these (``mix.update(state, ids[:num], rewards)``) costs num/B of the
    alignment. When the batch's examples are i.i.d. draws (`Mixture.sample` then
    `DeviceSources.draw` / `HostSources.draw`: every example's source and index drawn
    independently), the first `num` of them are distributed as a uniformly random subset of
    `num` examples, independent of the others: REINFORCE on them alone is an unbiased estimate
    of the same gradient with raw rewards; with rewards normalized over the subset, the
    normalization is the subset's mean and spread. Batches that are not i.i.d. in their order
    (sorted, or grouped by source) need a random subset instead.
    """
    if num is None:
        return batch
    if isinstance(batch, gar_layerwise.Tape):
        return batch._replace(layers=jax.tree.map(lambda x: x[:num], batch.layers))
    return jax.tree.map(lambda x: x[:num], batch)


def per_source_mean(values: jax.Array, source_ids: jax.Array,
                    num_sources: int) -> tuple[jax.Array, jax.Array]:
    """(float[K] mean of `values` over the examples of each source (0 where none),
    float[K] the number of examples of each source)."""
    onehot = jax.nn.one_hot(source_ids, num_sources, dtype=jnp.float32)
    counts = onehot.sum(0)
    sums = onehot.T @ jnp.asarray(values, jnp.float32)
    return jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), 0.0), counts


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------
def _as_list(sources, names):
    if isinstance(sources, Mapping):
        names = list(sources) if names is None else list(names)
        sources = list(sources.values())
    else:
        sources = list(sources)
        names = [f"source_{i}" for i in range(len(sources))] if names is None else list(names)
    check_num_sources(len(sources))
    if len(names) != len(sources) or len(set(names)) != len(names):
        raise ConfigError(f"sources: need {len(sources)} distinct names, got {names}")
    return sources, tuple(names)


@flax.struct.dataclass
class DeviceSources:
    """K device-resident sources of different sizes, concatenated (one array per field).

    data: ``{field: [N_1 + ... + N_K, ...]}``; offsets / sizes: int32 [K]; names: static.
    `draw` picks, for each requested source id, an example uniformly at random within that
    source (with replacement), so a source of any size is sampled at the mixture's rate.
    """
    data: dict
    offsets: jax.Array
    sizes: jax.Array
    names: tuple = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, sources, names: Sequence[str] | None = None) -> "DeviceSources":
        """From a list (or dict name -> source) of dicts of arrays with a common leading axis.

        Raises ConfigError (one line) for fewer than 2 sources, an empty source, or sources
        whose fields, per-example shapes or dtypes differ.
        """
        sources, names = _as_list(sources, names)
        fields = None
        for name, src in zip(names, sources):
            if not isinstance(src, Mapping) or not src:
                raise ConfigError(f"source {name!r} must be a non-empty dict of arrays like "
                                  f"{{'image': [N, ...], 'label': [N]}}")
            shapes = {k: (tuple(np.shape(v)[1:]), np.asarray(v).dtype) for k, v in src.items()}
            lengths = {np.shape(v)[0] if np.ndim(v) else None for v in src.values()}
            if len(lengths) != 1 or None in lengths:
                raise ConfigError(f"source {name!r}: every field needs the same leading axis, "
                                  f"got {sorted(map(str, lengths))}")
            if lengths == {0}:
                raise ConfigError(f"source {name!r} is empty (0 examples)")
            if fields is None:
                fields, first = shapes, name
            elif shapes != fields:
                raise ConfigError(f"source {name!r} has fields {_describe(shapes)} but source "
                                  f"{first!r} has {_describe(fields)}; all sources need the same")
        sizes = np.array([len(next(iter(s.values()))) for s in sources], np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        data = {k: jnp.asarray(np.concatenate([np.asarray(s[k]) for s in sources]))
                for k in fields}
        return cls(data=data, offsets=jnp.asarray(offsets, jnp.int32),
                   sizes=jnp.asarray(sizes, jnp.int32), names=names)

    @property
    def num_sources(self) -> int:
        return len(self.names)

    def indices(self, key: jax.Array, source_ids: jax.Array) -> jax.Array:
        """int32 [B]: an example index (into the concatenation) for each source id."""
        u = jax.random.uniform(key, jnp.shape(source_ids))
        sizes = self.sizes[source_ids]
        within = jnp.minimum(jnp.floor(u * sizes).astype(jnp.int32), sizes - 1)
        return self.offsets[source_ids] + within

    def gather(self, indices: jax.Array) -> dict:
        return {k: v[indices] for k, v in self.data.items()}

    def draw(self, key: jax.Array, source_ids: jax.Array) -> dict:
        """The batch ``{field: [B, ...]}``: example n uniform within source source_ids[n]."""
        return self.gather(self.indices(key, source_ids))


def _describe(shapes: dict) -> str:
    return "{" + ", ".join(f"{k}: {s} {d}" for k, (s, d) in sorted(shapes.items())) + "}"


class HostSources:
    """K random-access sources read on the host (for sources that do not fit on the device).

    Each source is anything with ``len(source)`` and ``source[i] -> {field: array}`` (a
    ``tfds.data_source``, a list of dicts, a numpy-backed wrapper). ``draw(key, source_ids)``
    reads one example per id, uniform within its source (with replacement), and stacks them
    into numpy arrays; the randomness comes from the JAX key, so a run is reproducible. The
    per-example shapes and dtypes are checked on the first example of each source.
    """

    def __init__(self, sources, names: Sequence[str] | None = None):
        self.sources, self.names = _as_list(sources, names)
        self.sizes = np.array([len(s) for s in self.sources], np.int64)
        for name, size in zip(self.names, self.sizes):
            if size == 0:
                raise ConfigError(f"source {name!r} is empty (0 examples)")
        first = None
        for name, src in zip(self.names, self.sources):
            example = src[0]
            shapes = {k: (tuple(np.shape(v)), np.asarray(v).dtype) for k, v in example.items()}
            if first is None:
                first, first_name = shapes, name
            elif shapes != first:
                raise ConfigError(f"source {name!r} has fields {_describe(shapes)} but source "
                                  f"{first_name!r} has {_describe(first)}; all sources need the "
                                  f"same")

    @property
    def num_sources(self) -> int:
        return len(self.names)

    def indices(self, key: jax.Array, source_ids) -> np.ndarray:
        """int64 [B]: the index within its source of each drawn example."""
        ids = np.asarray(source_ids)
        u = np.asarray(jax.random.uniform(key, ids.shape), np.float64)
        sizes = self.sizes[ids]
        return np.minimum(np.floor(u * sizes).astype(np.int64), sizes - 1)

    def draw(self, key: jax.Array, source_ids) -> dict:
        """``{field: np.ndarray [B, ...]}``."""
        ids = np.asarray(source_ids)
        within = self.indices(key, ids)
        examples = [self.sources[c][int(i)] for c, i in zip(ids, within)]
        return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}


# --------------------------------------------------------------------------------------------
# Baseline: ODM (EXP3 on per-source training loss)
# --------------------------------------------------------------------------------------------
def _initial_probs(num_sources: int, init_probs) -> jax.Array:
    """The baselines' starting mixture: `init_probs` normalized (default uniform), float32[K]."""
    check_num_sources(num_sources)
    p = (jnp.full((num_sources,), 1.0 / num_sources) if init_probs is None
         else jnp.asarray(init_probs, jnp.float32) / jnp.sum(jnp.asarray(init_probs)))
    return p.astype(jnp.float32)


class ODMState(flax.struct.PyTreeNode):
    """EXP3 state of ODM: estimated rewards R̂ float[K], probabilities π float[K], the
    exploration rate ε of the previous update, and the update count t (int32)."""
    estimates: jax.Array
    probs: jax.Array
    eps: jax.Array
    t: jax.Array


def odm_init(num_sources: int, init_probs=None) -> ODMState:
    """R̂ = 0, π = init_probs (default uniform), ε = 1/K, t = 0."""
    p = _initial_probs(num_sources, init_probs)
    return ODMState(estimates=jnp.zeros((num_sources,), jnp.float32), probs=p,
                    eps=jnp.float32(1.0 / num_sources), t=jnp.zeros((), jnp.int32))


def odm_update(state: ODMState, source_ids: jax.Array, losses: jax.Array, *,
               reward_scale: float = 0.1, decay: float = 1.0) -> ODMState:
    """One EXP3 update of Online Data Mixing (Albalak et al. 2023, arXiv 2312.02406, §3 and
    Algorithm 1; the authors' ``Exp3WeightUpdater`` in alon-albalak/online-data-mixing).

    The reward of a source is its training loss (a source the model has not learned yet pays
    more), scaled by `reward_scale` (the authors' code divides by 10) and importance-weighted by
    1/π_i, so that it is an unbiased estimate whichever π sampled it. With mixed batches (each
    example from its own source, as here) the estimate for source i is
    r̂_i = reward_scale · (1/B) Σ_{n: c_n = i} ℓ_n / π_i (0 for sources not drawn; its expectation
    is reward_scale × source i's mean loss). Then, with t the update count (from 1) and K sources:

        R̂_i ← decay · R̂_i + r̂_i                        (decay = 1: the cumulative sum of EXP3)
        ε_t = min(1/K, sqrt(ln K / (K t)))
        π_i = (1 − K ε_t) · exp(ε_{t−1} R̂_i) / Σ_j exp(ε_{t−1} R̂_j) + ε_t

    Args:
      state: `odm_init` or a previous update.
      source_ids: int[B], the source of each example of the batch (drawn from ``state.probs``).
      losses: float[B], the examples' training losses at the parameters of that step.
    """
    k = state.probs.shape[0]
    losses = jnp.asarray(losses, jnp.float32)
    onehot = jax.nn.one_hot(source_ids, k, dtype=jnp.float32)
    r_hat = reward_scale * (onehot.T @ losses) / losses.shape[0] / state.probs
    estimates = decay * state.estimates + r_hat
    t = state.t + 1
    eps = jnp.minimum(1.0 / k, jnp.sqrt(jnp.log(float(k)) / (k * t.astype(jnp.float32))))
    soft = jax.nn.softmax(state.eps * estimates)
    probs = (1.0 - k * eps) * soft + eps
    return ODMState(estimates=estimates, probs=probs / jnp.sum(probs), eps=eps, t=t)


# --------------------------------------------------------------------------------------------
# Baseline: DGA (per-domain gradient alignment with a target set)
# --------------------------------------------------------------------------------------------
class DGAState(flax.struct.PyTreeNode):
    """DGA's domain weights: ``alpha`` (the exponentiated-gradient iterate, on the simplex) and
    ``ema`` (its exponential moving average, the mixture that is sampled), float[K] each."""
    alpha: jax.Array
    ema: jax.Array


def dga_init(num_sources: int, init_probs=None) -> DGAState:
    p = _initial_probs(num_sources, init_probs)
    return DGAState(alpha=p, ema=p)


def dga_update(state: DGAState, alignments: jax.Array, *, learning_rate: float,
               ema: float) -> DGAState:
    """One DGA update (Fan, Grangier & Ablin 2024, arXiv 2410.02498, §3 "Dynamic Gradient
    Alignment", with the EMA of §3.2).

    The mixture α minimizes the target loss after a step on the α-weighted generic loss,
    L_target(θ − η Σ_i α_i ∇L_i(θ)); its gradient w.r.t. α_i is −η ⟨∇L_i(θ), ∇L_target(θ)⟩, so
    an exponentiated-gradient (mirror descent on the simplex) step is

        α_i ← α_i exp(learning_rate · a_i) / Σ_j α_j exp(learning_rate · a_j),
        a_i = ⟨∇L_i(θ), ∇L_target(θ)⟩                    (the `alignments`, float[K])

    (η folded into learning_rate), and the sampled mixture is the moving average
    ema ← ema_coef · ema + (1 − ema_coef) · α, which keeps the weights from collapsing onto one
    domain after a few noisy steps. Here a_i is computed exactly, as the mean over a probe batch
    of source i's examples of their per-example alignments with the target gradient
    (`gar.alignment`), which by linearity is ⟨∇L_i, ∇L_target⟩ on that batch.
    """
    a = jnp.asarray(alignments, jnp.float32)
    logits = jnp.log(state.alpha) + learning_rate * a
    alpha = jax.nn.softmax(logits)
    return DGAState(alpha=alpha, ema=ema * state.ema + (1.0 - ema) * alpha)
