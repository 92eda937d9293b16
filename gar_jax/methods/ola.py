"""OLA: online-learned augmentation with GAR in the training loop (``experiment = "ola"``).

``python -m gar_jax.main --config=configs/cifar100_ola.py --workdir=DIR``. GAR paper §6
("Online-Learned Augmentation-Strategy"), docs/algorithms.md §4. SGD steps come in pairs, jitted
as one function (`make_pair_step`):

1. augmented step t (even state.step): every image draws a configuration from the learned policy
   (`gar_jax.augment.ola_sampler`, an ensemble of E samplers), gets it applied and then the standard
   pipeline; the model takes an ordinary SGD step on this batch;
2. plain step t+1: the next batch with the standard pipeline only; its batch gradient
   G = ∇L_{t+1}(θ_{t+1}) (raw, all-reduced over devices) is what the model's update uses;
3. reward: GAR_n = ⟨∇ℓ_n(θ_t), G⟩ for each augmented example n (``ola.gar_method``: "jvp"
   (default) or "vmap" (`gar_jax.gar.alignment`; they keep θ_t, the augmented batch and step t's
   own BatchNorm batch statistics, frozen; each device's batch in ``ola.num_chunks`` chunks, 2
   by default, or chunks of ``ola.chunk_size``), or "layerwise" (`gar_jax.gar_layerwise`: the
   augmented step keeps each layer's input and output-gradient, or its per-example gradients
   where smaller: ``ola.gar_store``; BatchNorm nets: ``ola.gar_convention`` frozen, the same
   numbers as jvp, or contribution); or, approximately, "fd": a one-sided finite difference of
   the per-example losses, (ℓ_n(θ_t + εG) - ℓ_n(θ_t)) / ε, ε = ``ola.fd_step`` ||θ|| / ||G||,
   from step t's own losses and one forward of the rewarded images (about 1% off in float32:
   `gar.finite_difference_alignment`)),
   normalized over the batch; or NSLR (−L_{t+1} for every example, normalized across steps).
   With ``ola.target_ema`` = β > 0 (an extension, not the paper's), GAR is taken against an
   exponential moving average of the plain steps' G instead of this step's G alone (the model's
   update still uses G): a less noisy target, at the price of looking a few steps into the past
   (experiments/ola/README.md section 6i: it loses the planted op's signal on digits). With
   ``ola.gar_target = "response"`` (an extension), GAR is taken against the step's response
   G - ∇L_{t+1}(θ_t), the plain batch's gradient after the step minus before it (one more
   gradient of the plain batch per pair): on digits the planted op's signal is there, and the
   rest of G is noise for it (section 6i); ``ola.before_weight`` = α adds α ∇L_{t+1}(θ_t) back
   (α = 1 is G itself, plain GAR); ``ola.gar_target = "both"`` rewards with GAR and the
   response each normalized as REINFORCE normalizes (per sampler or per batch), then summed (two
   alignments of the rewarded images; section 6l);
4. REINFORCE update of the policy (Adam, lr 0.1, b1 = 0, gradient value clipping at 5; the lr
   constant, or following the model's schedule: ``ola.lr_schedule``).

BatchNorm statistics are per device (as the training stack and PyTorch DDP), and so is the
frozen-statistics convention of the per-example gradients; a GroupNorm model gives the same
numbers on 1 or 8 devices. The policy and its Adam state live in the checkpointed `OLAState`, so a
killed run resumes the same trajectory.

What was learned is written to the workdir at every evaluation: ``policy.json`` (replay it with
`gar_jax.augment.ola_sampler.replay`), ``policy_history.jsonl`` (the policy after each epoch),
``policy_over_training.png`` (p(k) and each op's keep probability over training) and
``policy_strengths.png`` (each op's strength distribution over training, the paper-style figure).
"""
from __future__ import annotations

import dataclasses
import fractions
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from gar_jax import batchnorm, gar, gar_layerwise, reinforce, report
from gar_jax.augment import ola_sampler, spaces
from gar_jax.errors import ConfigError
from gar_jax.models import variables
from gar_jax.train import engine, steps
from gar_jax.mesh import DATA_AXIS
from gar_jax.train.state import TrainState

REWARDS = ("gar", "nslr")
REWARD_NORMALIZATIONS = ("batch", "sampler")
# What GAR is taken against: the next batch's gradient after the step (the paper's), or its
# change by the step (the "response"; one more gradient a pair).
# "both": the two rewards, each normalized, summed.
GAR_TARGETS = ("next", "response", "both")


@flax.struct.dataclass
class OLAState(TrainState):
    """`TrainState` plus the policy (`gar_jax.augment.ola_sampler` params), its Adam state and the
    running reward statistics (used by NSLR)."""
    policy: Any
    policy_opt_state: Any
    reward_stats: Any


@flax.struct.dataclass
class OLATargetState(OLAState):
    """`OLAState` plus `reward_target`, the moving average of the plain steps' gradients that GAR
    is taken against (params-shaped): the state of runs with ``ola.target_ema`` > 0 (a subclass,
    so that OLAState and its checkpoints keep their structure)."""
    reward_target: Any


@dataclasses.dataclass(frozen=True)
class Options:
    """The static choices of an OLA step pair (from ``config.ola``)."""
    reward: str = "gar"
    gar_method: str = "jvp"
    gar_convention: str = "frozen"
    gar_remat: bool = False
    gar_store: str = "auto"
    chunk_size: Optional[int] = None
    num_chunks: int = 2
    replace: bool = True
    nslr_decay: float = 0.9
    reward_normalization: str = "batch"
    reward_fraction: float = 1.0
    target_ema: float = 0.0
    gar_target: str = "next"
    before_weight: float = 0.0
    fd_step: float = 1e-5


def _field(c, name: str):
    """``config.ola.<name>``, or `Options`' default (the paper's) in configs from before it."""
    return c.get(name, getattr(Options, name))


def options(config) -> Options:
    c = config.ola
    return Options(reward=c.reward, gar_method=c.gar_method, chunk_size=c.chunk_size or None,
                   num_chunks=c.num_chunks,
                   gar_convention=c.gar_convention, gar_remat=c.gar_remat,
                   gar_store=c.gar_store,
                   replace=c.replace, nslr_decay=c.nslr_decay,
                   reward_normalization=c.reward_normalization,
                   reward_fraction=c.reward_fraction,
                   target_ema=_field(c, "target_ema"), gar_target=_field(c, "gar_target"),
                   before_weight=_field(c, "before_weight"), fd_step=_field(c, "fd_step"))


def make_space(config) -> spaces.SearchSpace:
    """``config.ola.space`` ("wide" / "randaug" / ...), plus `spaces.DESTRUCTIVE_OP` when
    ``config.ola.destructive_op``."""
    space = spaces.get_space(config.ola.space)
    if config.ola.destructive_op:
        space = spaces.with_destructive_op(space)
    return space


LR_SCHEDULES = ("constant", "model")


def _lr_schedule(c) -> str:
    """``config.ola.lr_schedule`` (``"constant"`` in configs from before it existed), checked."""
    kind = c.get("lr_schedule", "constant")
    if kind not in LR_SCHEDULES:
        raise ConfigError(f"config.ola.lr_schedule={kind!r} must be one of {LR_SCHEDULES}")
    return kind


def policy_learning_rate(config, schedule: Optional[Callable] = None):
    """The policy's Adam learning rate: ``config.ola.learning_rate`` (``ola.lr_schedule =
    "constant"``, the paper's), or that times the model's schedule relative to its peak
    (``"model"``: the same warm-up and cosine decay to 0 as the model's SGD, as a function of the
    policy update count c, which happens at the model's step 2c). ``schedule``: the model's
    learning rate per step (`gar_jax.train.optim.make_schedule`), needed by ``"model"``."""
    c = config.ola
    if _lr_schedule(c) == "constant":
        return c.learning_rate
    if schedule is None:
        raise ConfigError("config.ola.lr_schedule='model' needs the model's learning-rate "
                          "schedule: pass schedule= (engine.build(config).schedule)")
    peak, lr = float(config.learning_rate), float(c.learning_rate)
    return lambda count: lr * schedule(2 * count) / peak


def meta_optimizer(config, schedule: Optional[Callable] = None) -> optax.GradientTransformation:
    """The policy's optimizer (`reinforce.meta_optimizer`) at `policy_learning_rate`."""
    c = config.ola
    return reinforce.meta_optimizer(policy_learning_rate(config, schedule), b1=c.b1,
                                    clip=c.clip or None)


def validate(config) -> None:
    """ConfigError on a bad config, before any data is loaded or compiled."""
    engine.validate(config)
    if "ola" not in config:
        raise ConfigError("an OLA config needs an `ola` section (see configs/cifar10_ola.py)")
    c = config.ola
    if config.augment not in ("standard", "none"):
        raise ConfigError(f"config.augment={config.augment!r}: OLA learns the policy itself; "
                          "use 'standard' (the standard pipeline after it) or 'none'")
    if config.model.dropout_rate:
        raise ConfigError("config.model.dropout_rate must be 0 for OLA: per-example gradients "
                          "(GAR) would see other dropout masks than the training step")
    methods = gar.METHODS + gar.APPROXIMATE_METHODS
    if c.gar_method not in methods:
        raise ConfigError(f"config.ola.gar_method={c.gar_method!r} must be one of {methods}")
    fd_step = _field(c, "fd_step")
    if isinstance(fd_step, bool) or not isinstance(fd_step, (int, float)) or not 0 < fd_step < 1:
        raise ConfigError(f"config.ola.fd_step={fd_step!r} must be a number in (0, 1) (the "
                          f"finite difference's move, relative to the parameters' norm)")
    if c.gar_method == "fd" and config.get("model", {}).get("dtype", "float32") != "float32":
        raise ConfigError(f"config.ola.gar_method='fd' needs float32 losses; "
                          f"config.model.dtype={config.model.dtype!r} (use 'jvp')")
    gar_layerwise.check_convention(c.gar_convention)
    if c.gar_store not in gar_layerwise.STORES:
        raise ConfigError(f"config.ola.gar_store={c.gar_store!r} must be one of "
                          f"{list(gar_layerwise.STORES)}")
    if c.reward_normalization not in REWARD_NORMALIZATIONS:
        raise ConfigError(f"config.ola.reward_normalization={c.reward_normalization!r} must be "
                          f"one of {REWARD_NORMALIZATIONS}")
    if c.reward_normalization == "sampler" and config.batch_size // c.ensemble_size < 2:
        raise ConfigError("config.ola.reward_normalization='sampler' needs >= 2 images per "
                          f"sampler (batch_size={config.batch_size}, "
                          f"ensemble_size={c.ensemble_size})")
    if c.reward not in REWARDS:
        raise ConfigError(f"config.ola.reward={c.reward!r} must be one of {REWARDS}")
    for field, low in (("max_ops", 1), ("ensemble_size", 1), ("num_chunks", 1),
                       ("chunk_size", 0)):
        value = c[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"config.ola.{field}={value!r} must be an integer >= {low}"
                              + (" (0 = use num_chunks)" if field == "chunk_size" else ""))
    if config.batch_size % c.ensemble_size:
        raise ConfigError(f"config.batch_size={config.batch_size} must be a multiple of "
                          f"config.ola.ensemble_size={c.ensemble_size} (B/E images per sampler)")
    if not c.learning_rate > 0 or not 0 <= c.b1 < 1 or c.clip < 0:
        raise ConfigError("config.ola needs learning_rate > 0, 0 <= b1 < 1 and clip >= 0")
    _lr_schedule(c)
    if not 0 <= c.nslr_decay < 1:
        raise ConfigError(f"config.ola.nslr_decay={c.nslr_decay} must be in [0, 1)")
    ema = _field(c, "target_ema")
    if isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0 <= ema < 1:
        raise ConfigError(f"config.ola.target_ema={ema!r} must be a number in [0, 1) "
                          "(0: GAR against the next step's gradient alone, the paper's)")
    if ema and c.reward != "gar":
        raise ConfigError(f"config.ola.target_ema={ema} needs config.ola.reward='gar' "
                          f"({c.reward!r} takes no gradient target)")
    target = _field(c, "gar_target")
    if target not in GAR_TARGETS:
        raise ConfigError(f"config.ola.gar_target={target!r} must be one of {GAR_TARGETS}")
    if target != "next" and (c.reward != "gar" or ema):
        raise ConfigError(f"config.ola.gar_target={target!r} needs config.ola.reward='gar' and "
                          "config.ola.target_ema=0")
    alpha = _field(c, "before_weight")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ConfigError(f"config.ola.before_weight={alpha!r} must be a number in [0, 1]")
    if alpha and target != "response":
        raise ConfigError(f"config.ola.before_weight={alpha} needs "
                          "config.ola.gar_target='response'")
    fraction = c.reward_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
            0 < fraction <= 1):
        raise ConfigError(f"config.ola.reward_fraction={fraction!r} must be a number in (0, 1]")
    if c.reward == "gar" and fraction < 1:
        rewarded_examples(config.batch_size, c.ensemble_size, jax.device_count(), fraction,
                          at_least=2 if c.reward_normalization == "sampler" else 1)
    space = make_space(config)
    if not c.replace and c.max_ops > len(space):
        raise ConfigError(f"config.ola.max_ops={c.max_ops} ops cannot be drawn without "
                          f"replacement from the {len(space)} ops of {space.name!r}")


def init_state(state: TrainState, config, space: spaces.SearchSpace,
               schedule: Optional[Callable] = None) -> OLAState:
    """`OLAState` from a fresh `TrainState`: zero policy logits (replicated like the rest);
    with ``ola.target_ema`` > 0 an `OLATargetState` whose moving average starts at zero.
    ``schedule``: the model's, as for `meta_optimizer` (``ola.lr_schedule = "model"``)."""
    policy = ola_sampler.init_params(len(space), num_levels=space.num_levels,
                             max_ops=config.ola.max_ops, ensemble_size=config.ola.ensemble_size)
    extra = dict(policy=policy, policy_opt_state=meta_optimizer(config, schedule).init(policy),
                 reward_stats=reinforce.RunningNormalizer().init())
    with_target = bool(_field(config.ola, "target_ema"))
    if with_target:
        extra["reward_target"] = jax.tree.map(np.zeros_like, state.params)
    sharding = jax.tree.leaves(state.params)[0].sharding
    # One buffer per leaf (RunningStats starts with one zero twice): the pair step donates them.
    extra = jax.tree.map(lambda x: jax.device_put(np.array(x), sharding), extra)
    return (OLATargetState if with_target else OLAState)(**vars(state), **extra)


# ------------------------------------------------------------------------------- the step pair


def _layerwise_fns(model, mesh, convention="frozen", remat=False, store="auto"):
    """Sharded (capture, replay) of `gar_layerwise` with the stack's grad_fn conventions."""
    def capture_local(params, batch_stats, images, labels):
        captured = gar_layerwise.capture(
            model, variables(params, batch_stats), {"image": images, "label": labels},
            steps.cross_entropy, axis_name=DATA_AXIS, convention=convention, remat=remat,
            store=store, train=True)
        accuracy = jax.lax.pmean(jnp.mean(jnp.argmax(captured.logits, -1) == labels), DATA_AXIS)
        new_stats = (jax.lax.pmean(captured.model_state["batch_stats"], DATA_AXIS)
                     if batch_stats else batch_stats)
        metrics = {"loss": captured.loss, "accuracy": accuracy}
        return captured.grads, new_stats, metrics, captured.tape

    tape_spec = gar_layerwise.Tape(layers=P(DATA_AXIS), scale=P(), params=P(), stats=P(DATA_AXIS))
    capture = jax.shard_map(capture_local, mesh=mesh,
                            in_specs=(P(), P(), P(DATA_AXIS), P(DATA_AXIS)),
                            out_specs=(P(), P(), P(), tape_spec))

    def replay_local(batch_stats, tape, images, direction):
        return gar_layerwise.alignment_from_tape(model, variables(direction, batch_stats), tape,
                                                 direction, images, train=True)

    replay = jax.shard_map(replay_local, mesh=mesh,
                           in_specs=(P(), tape_spec, P(DATA_AXIS), P()), out_specs=P(DATA_AXIS))
    return capture, replay


def chunk_size_for(local_batch: int, chunk_size: Optional[int], num_chunks: int = 1
                   ) -> Optional[int]:
    """Examples per chunk of the jvp/vmap alignment on a device holding `local_batch` examples:
    `chunk_size` when given, else ceil(local_batch / num_chunks); None (no chunking) where that
    is the whole batch. OLA's default cuts each device's batch in 2: at WRN-16-4 batch 128 the
    pair then needs no more compiled memory than the fixed-policy pair (experiments/ola/README.md
    section 7)."""
    size = chunk_size or -(-local_batch // num_chunks)
    return None if size >= local_batch else size


def rewarded_examples(batch_size: int, ensemble_size: int, num_devices: int, fraction: float,
                      *, at_least: int = 1) -> Optional[np.ndarray]:
    """The examples whose GAR rewards are computed (``ola.reward_fraction`` = p / q < 1), int
    [M], ascending; None for all of them.

    Example i is rewarded where i mod q < p: the first p of every q consecutive examples. q must
    divide each sampler's B / E images and each device's B / D, so every sampler and every device
    gets the same share, the subset's rewards stay in sampler order (``reward_normalization =
    "sampler"`` normalizes each sampler's M / E), each device computes its own, and the subset is
    the same on any number of devices. Batches are shuffled and every image draws its
    configuration independently, so these are a uniformly random subset in distribution.
    ConfigError (one line) where q does not divide both, or a sampler would get fewer than
    `at_least` rewards."""
    if fraction >= 1:
        return None
    p, q = _as_ratio(fraction)
    per_sampler = p * (batch_size // ensemble_size) // q
    if (batch_size // ensemble_size) % q or (batch_size // num_devices) % q or (
            per_sampler < at_least):
        raise ConfigError(
            f"config.ola.reward_fraction={fraction} ({p}/{q}) rewards the first {p} of every {q} "
            f"examples: {q} must divide each sampler's {batch_size // ensemble_size} images "
            f"(batch {batch_size}, {ensemble_size} samplers) and each device's "
            f"{batch_size // num_devices} ({num_devices} devices)"
            + (f", giving >= {at_least} rewards per sampler" if at_least > 1 else ""))
    starts = np.arange(0, batch_size, q)
    return (starts[:, None] + np.arange(p)[None, :]).reshape(-1)


def _as_ratio(fraction: float) -> tuple[int, int]:
    """``fraction`` as p / q in lowest terms (q <= 1024)."""
    ratio = fractions.Fraction(fraction).limit_denominator(1024)
    return ratio.numerator, ratio.denominator


def _alignment_fn(model, mesh, method: str, chunk_size: Optional[int], num_chunks: int = 1,
                  subset: Optional[tuple[int, int]] = None):
    """Sharded ``fn(params_t, batch_stats_t, bn_stats, images, labels, direction) -> GAR [B]``
    with `gar.alignment` under per-device frozen BatchNorm statistics: `bn_stats` are those of
    step t's own training forward (``steps.make_grad_fn(..., bn_stats=True)``, leading device
    axis, ``P('data')``), so no forward at θ_t is spent on capturing them again. `subset`
    ``(q, p)``: only the first p of every q consecutive examples (`rewarded_examples`), GAR [M];
    the statistics stay those of the whole batch."""
    def local(params, batch_stats, bn_stats, images, labels, direction):
        # Nothing of this may start before G exists: otherwise XLA may run the forward at θ_t
        # early and keep its activations alive through the plain step (memory). It also returns
        # params typed varying over devices (they pass with the sharded images), which "vmap"
        # needs: per-example gradients w.r.t. unvarying params would get shard_map's implicit
        # psum over devices (tests/test_ola_frozen_stats.py checks 8 devices).
        params, batch_stats, bn_stats, images, labels, direction = jax.lax.optimization_barrier(
            (params, batch_stats, bn_stats, images, labels, direction))
        per_example, batch = _frozen_local(model, params, batch_stats, bn_stats, images,
                                           labels, subset)
        rewarded = batch["image"].shape[0]  # this device's rewarded examples, chunked
        return gar.alignment(per_example, params, batch, direction, method=method,
                             chunk_size=chunk_size_for(rewarded, chunk_size, num_chunks))

    return jax.shard_map(local, mesh=mesh,
                         in_specs=(P(), P(), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS), P()),
                         out_specs=P(DATA_AXIS))


def _local_subset(x, subset: Optional[tuple[int, int]]):
    """The first p of every q consecutive rows of this device's `x` (`rewarded_examples`;
    q divides B / D, so each device takes its own); all of `x` if `subset` is None."""
    if subset is None:
        return x
    block, per_block = subset
    return x.reshape(-1, block, *x.shape[1:])[:, :per_block].reshape(-1, *x.shape[1:])


def _frozen_local(model, params, batch_stats, bn_stats, images, labels, subset):
    """Inside the alignment functions' shard_map: this device's (rewarded) examples as a batch
    and their per-example loss under this device's frozen statistics of step t."""
    bn_stats = jax.tree.map(lambda s: s[0], bn_stats)  # this device's statistics
    images, labels = (_local_subset(x, subset) for x in (images, labels))
    per_example = batchnorm.frozen_bn_loss_fn_from_stats(
        model, variables(params, batch_stats), bn_stats, steps.cross_entropy, train=True)
    return per_example, {"image": images, "label": labels}


def _fd_alignment_fn(model, mesh, step: float, subset: Optional[tuple[int, int]] = None):
    """Sharded ``fn(params_t, batch_stats_t, bn_stats, images, labels, losses, direction) ->
    GAR [B or M]`` by `gar.finite_difference_alignment` under step t's frozen BatchNorm
    statistics, from `losses`, step t's per-example losses (its training forward, the same
    statistics): one forward pass of the (rewarded) images at θ_t + εG."""
    def local(params, batch_stats, bn_stats, images, labels, losses, direction):
        # As in _alignment_fn: nothing before G exists; params typed varying over devices.
        params, batch_stats, bn_stats, images, labels, losses, direction = (
            jax.lax.optimization_barrier((params, batch_stats, bn_stats, images, labels,
                                          losses, direction)))
        per_example, batch = _frozen_local(model, params, batch_stats, bn_stats, images,
                                           labels, subset)
        return gar.finite_difference_alignment(per_example, params, batch, direction, step=step,
                                               base_losses=_local_subset(losses, subset))

    return jax.shard_map(local, mesh=mesh,
                         in_specs=(P(), P(), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS),
                                   P(DATA_AXIS), P()),
                         out_specs=P(DATA_AXIS))


def _reward_fns(model, mesh, opts: Options, grad_fn, subset=None) -> tuple[Callable, Callable]:
    """The one place where ``opts.reward`` / ``opts.gar_method`` choose the computation:
    ``augmented_step(params, batch_stats, images, labels, key) -> (grads, batch_stats, metrics,
    kept)`` (step t, keeping what the rewards need) and ``rewards(state, kept, images, labels, G,
    plain_loss) -> float[B]`` (after the plain step; `state` is the pair's input, at θ_t).
    `subset` (GAR only): ``(q, p, indices)`` of `rewarded_examples`; the rewards
    are then those examples' only, float[M] (jvp/vmap compute no others; layer-wise replays the
    whole batch and keeps them)."""
    if opts.reward == "nslr":
        def augmented_step(params, batch_stats, images, labels, key):
            return (*grad_fn(params, batch_stats, images, labels, key), None)

        def rewards(state, kept, images, labels, g, plain_loss):
            return gar.nslr_reward(plain_loss, labels.shape[0])
    elif opts.gar_method == "layerwise":  # step t keeps its tape
        capture, replay = _layerwise_fns(model, mesh, opts.gar_convention, opts.gar_remat,
                                         opts.gar_store)

        def augmented_step(params, batch_stats, images, labels, key):
            return capture(params, batch_stats, images, labels)  # no dropout under OLA

        def rewards(state, tape, images, labels, g, plain_loss):
            out = replay(state.batch_stats, tape, images, g)
            return out if subset is None else out[subset[2]]
    elif opts.gar_method == "fd":  # step t also returns its statistics and per-example losses
        step_fn = steps.make_grad_fn(model, mesh, bn_stats=True, example_losses=True)
        align = _fd_alignment_fn(model, mesh, opts.fd_step,
                                 subset=None if subset is None else subset[:2])

        def augmented_step(params, batch_stats, images, labels, key):
            grads, stats, metrics, bn_stats, losses = step_fn(params, batch_stats, images,
                                                              labels, key)
            return grads, stats, metrics, (bn_stats, losses)

        def rewards(state, kept, images, labels, g, plain_loss):
            return align(state.params, state.batch_stats, kept[0], images, labels, kept[1], g)
    else:  # step t also returns its BatchNorm statistics, frozen for GAR
        augmented_step = steps.make_grad_fn(model, mesh, bn_stats=True)
        align = _alignment_fn(model, mesh, opts.gar_method, opts.chunk_size, opts.num_chunks,
                              subset=None if subset is None else subset[:2])

        def rewards(state, bn_stats, images, labels, g, plain_loss):
            return align(state.params, state.batch_stats, bn_stats, images, labels, g)
    return augmented_step, rewards


def make_pair_step(model, tx, mesh, space: spaces.SearchSpace, meta_tx, opts: Options, *,
                   standard: Optional[Callable] = None, schedule: Optional[Callable] = None,
                   jit: bool = True) -> Callable:
    """``pair(state, batch_aug, batch_plain) -> (state, metrics)``: two SGD steps + one policy
    update (module docstring). `state` is an `OLAState` at an even step (donated when jitted);
    batches ``{"image": uint8 [B,H,W,C], "label": int32 [B]}`` sharded ``P('data')`` are those
    of steps t and t+1; the key is ``step_key(state.rng, t)``. `standard` is the pipeline applied
    after the policy and alone on the plain step (None: nothing).

    Metrics (replicated scalars): loss / accuracy (mean of the two steps), loss_aug, loss_plain,
    grad_norm (of G), learning_rate, reward_mean / reward_std (raw rewards), ops_applied (mean
    active slots per image), p_k<k> and keep/<op> (the policy, averaged over the ensemble),
    op_applied/<op>, op_weight/<op>, op_weight_sq/<op> and, for GAR, op_rank_weight[_sq]/<op>
    (`op_reward_metrics`: what the policy was told about each op); with ``ola.target_ema``,
    target_cosine (cos of G and the moving average); with ``ola.gar_target = "response"`` or
    ``"both"``, response_ratio (the norm of the response's direction over G's).
    """
    augment = make_policy_augment(space, opts, standard)
    core = make_pair_core(model, tx, mesh, space, meta_tx, opts, standard=standard,
                          schedule=schedule)

    def pair(state, batch_aug, batch_plain):
        k_policy, k_rest = jax.random.split(steps.step_key(state.rng, state.step))
        images, sample = augment(state.policy, k_policy, batch_aug["image"])
        return core(state, images, sample, batch_aug["label"], batch_plain, k_rest)

    return steps.jit_step(pair, mesh) if jit else pair


def make_policy_augment(space: spaces.SearchSpace, opts: Options,
                        standard: Optional[Callable] = None) -> Callable:
    """``fn(policy, key, images) -> (augmented images, PolicySample)``: the policy's ops, then
    `standard` (the first half of the augmented step)."""
    def augment(policy, key, images):
        return ola_sampler.augment(policy, space, key, images, standard=standard,
                                   replace=opts.replace)

    return augment


def make_pair_core(model, tx, mesh, space: spaces.SearchSpace, meta_tx, opts: Options, *,
                   standard: Optional[Callable] = None,
                   schedule: Optional[Callable] = None) -> Callable:
    """The pair after the policy's augmentation (`make_pair_step` = `make_policy_augment` + this):
    ``core(state, images, sample, labels, batch_plain, key) -> (state, metrics)`` with `images`
    the augmented batch of step t, `sample` its `PolicySample`, `labels` its labels."""
    grad_fn = steps.make_grad_fn(model, mesh)
    normalizer = reinforce.RunningNormalizer(decay=opts.nslr_decay)
    standard = standard or (lambda key, images: images)
    fns = {}  # per (batch size, ensemble size), fixed at trace time

    def reward_fns(batch_size, num_samplers):
        if (batch_size, num_samplers) not in fns:
            subset = None
            if opts.reward == "gar":
                indices = rewarded_examples(batch_size, num_samplers, mesh.shape[DATA_AXIS],
                                            opts.reward_fraction)
                if indices is not None:
                    p, q = _as_ratio(opts.reward_fraction)
                    subset = (q, p, indices)
            fns[batch_size, num_samplers] = (*_reward_fns(model, mesh, opts, grad_fn, subset),
                                              None if subset is None else subset[2])
        return fns[batch_size, num_samplers]

    def core(state, images, sample, labels, batch_plain, key):
        if opts.target_ema and not isinstance(state, OLATargetState):
            raise TypeError("ola.target_ema > 0 needs an OLATargetState (ola.init_state with "
                            f"config.ola.target_ema set), got {type(state).__name__}")
        augmented_step, reward_fn, rewarded = reward_fns(
            labels.shape[0], ola_sampler.ensemble_size(state.policy))
        k_standard, k_drop_aug, k_drop_plain = jax.random.split(key, 3)
        plain = standard(k_standard, batch_plain["image"])
        if opts.gar_target != "next":  # the plain batch's gradient before the step
            g0, _, _ = grad_fn(state.params, state.batch_stats, plain, batch_plain["label"],
                               k_drop_plain)
        # 1. The augmented step (and what its rewards need: a tape, BatchNorm statistics).
        grads, batch_stats, m_aug, kept = augmented_step(state.params, state.batch_stats,
                                                         images, labels, k_drop_aug)
        mid = steps.apply_gradients(state, grads, batch_stats, tx)
        # 2. The plain step's batch gradient G at θ_{t+1}.
        g, batch_stats, m_plain = grad_fn(mid.params, mid.batch_stats, plain,
                                          batch_plain["label"], k_drop_plain)
        # 3. Rewards of the augmented examples against G, against the step's response
        # G - G0 (+ α G0), or against the moving average of the plain steps' G (no bias
        # correction: a positive factor common to a step's rewards cancels in their per-step
        # normalization); 4. REINFORCE update of the policy.
        target = None  # the moving average, carried in the state
        groups = (ola_sampler.ensemble_size(state.policy)  # each sampler its own B/E rewards
                  if opts.reward == "gar" and opts.reward_normalization == "sampler" else None)
        if opts.gar_target != "next":
            alpha = opts.before_weight
            direction = jax.tree.map(lambda a, b: a - (1 - alpha) * b, g, g0)
        elif opts.target_ema:
            beta = opts.target_ema
            target = jax.tree.map(lambda m, x: beta * m + (1 - beta) * x, state.reward_target, g)
            direction = target
        else:
            direction = g
        rewards = reward_fn(state, kept, images, labels, direction, m_plain["loss"])
        if opts.gar_target == "both":  # GAR and the response, each as REINFORCE normalizes it
            gar_rewards = reward_fn(state, kept, images, labels, g, m_plain["loss"])
            rewards = (reinforce.normalize_in_groups(gar_rewards, groups)
                       + reinforce.normalize_in_groups(rewards, groups))
        learned = (sample if rewarded is None  # the policy learns from the rewarded ones only
                   else jax.tree.map(lambda x: x[rewarded], sample))
        policy, policy_opt_state, reward_stats, weights = reinforce.reward_update(
            meta_tx, state.policy, state.policy_opt_state, state.reward_stats,
            lambda p: ola_sampler.log_prob(p, learned, replace=opts.replace), rewards,
            normalizer=normalizer if opts.reward == "nslr" else None, groups=groups)
        new = steps.apply_gradients(mid, g, batch_stats, tx).replace(
            policy=policy, policy_opt_state=policy_opt_state, reward_stats=reward_stats)
        if target is not None:
            new = new.replace(reward_target=target)

        metrics = {"loss": (m_aug["loss"] + m_plain["loss"]) / 2,
                   "accuracy": (m_aug["accuracy"] + m_plain["accuracy"]) / 2,
                   "loss_aug": m_aug["loss"], "loss_plain": m_plain["loss"],
                   "grad_norm": optax.tree.norm(g),
                   "reward_mean": jnp.mean(rewards), "reward_std": jnp.std(rewards),
                   "ops_applied": jnp.mean(jnp.sum(sample.active, axis=1))}
        if schedule is not None:
            metrics["learning_rate"] = schedule(state.step)
        if opts.gar_target != "next":  # the response's size relative to G
            metrics["response_ratio"] = optax.tree.norm(direction) / jnp.maximum(
                optax.tree.norm(g), 1e-30)
        if target is not None:  # how far the target has drifted from this step's G
            metrics["target_cosine"] = optax.tree.vdot(g, target) / jnp.maximum(
                optax.tree.norm(g) * optax.tree.norm(target), 1e-30)
        metrics.update(_policy_metrics(policy, space))
        metrics.update(op_reward_metrics(
            learned, weights, space, rank_weights=(rank_weights(rewards, groups or 1)
                                                  if opts.reward == "gar" else None)))
        return new, metrics

    return core


def rank_weights(rewards: jax.Array, groups: int = 1) -> jax.Array:
    """The rewards' ranks within each of `groups` contiguous groups, centred and scaled to
    mean 0 and (population) std 1 per group, float32 [B] (ties in arbitrary order). A
    diagnostic: what REINFORCE weights that ignore the rewards' magnitudes would be."""
    r = rewards.reshape(groups, -1)
    n = r.shape[1]
    ranks = jnp.argsort(jnp.argsort(r, axis=1), axis=1).astype(jnp.float32)
    scale = jnp.sqrt(jnp.maximum((n * n - 1) / 12.0, 1e-12))  # std of 0..n-1
    return ((ranks - (n - 1) / 2) / scale).reshape(-1)


def op_reward_metrics(sample: ola_sampler.PolicySample, weights: jax.Array, space, *,
                      rank_weights: Optional[jax.Array] = None) -> dict:
    """Per op a, batch means of 1[a applied to image n], w_n 1[...] and w_n^2 1[...] (w: the
    normalized REINFORCE weights): ``op_applied/<a>``, ``op_weight/<a>``, ``op_weight_sq/<a>``;
    with `rank_weights` (u, `rank_weights`) also ``op_rank_weight/<a>``,
    ``op_rank_weight_sq/<a>`` (the same means of u_n 1[...] and u_n^2 1[...]).

    Batch means average correctly over any number of steps, so over a logging interval
    op_weight / op_applied is the mean weight of the images that got `a` (pooled over the
    interval's steps) and op_weight_sq / op_applied - (that mean)^2 their variance: what the
    policy was told about `a` (`experiments/ola/diagnose.py` reads them from metrics.jsonl).
    """
    hit = jnp.any(sample.active[:, :, None] & (sample.op_indices[:, :, None]
                                               == jnp.arange(len(space))), axis=1)  # [B, A]
    hit = hit.astype(jnp.float32)
    w = weights.astype(jnp.float32)[:, None]
    applied, weight, weight_sq = (jnp.mean(x, axis=0) for x in (hit, w * hit, w * w * hit))
    out = {}
    for i, name in enumerate(space.op_names):
        out.update({f"op_applied/{name}": applied[i], f"op_weight/{name}": weight[i],
                    f"op_weight_sq/{name}": weight_sq[i]})
    if rank_weights is not None:
        u = rank_weights.astype(jnp.float32)[:, None]
        rank, rank_sq = jnp.mean(u * hit, axis=0), jnp.mean(u * u * hit, axis=0)
        for i, name in enumerate(space.op_names):
            out.update({f"op_rank_weight/{name}": rank[i],
                        f"op_rank_weight_sq/{name}": rank_sq[i]})
    return out


def _policy_metrics(policy, space) -> dict:
    p_k = jnp.mean(jax.nn.softmax(policy["k_logits"], axis=-1), axis=0)
    keep = jnp.mean(jax.nn.sigmoid(policy["keep_logits"]), axis=0)
    out = {f"p_k{k + 1}": p_k[k] for k in range(p_k.shape[0])}
    out.update({f"keep/{name}": keep[i] for i, name in enumerate(space.op_names)})
    return out


# ------------------------------------------------------------------------------------ the run


def run(config, workdir: str) -> dict:
    """Trains (or resumes) an OLA run; writes results.json, policy.json and the plots."""
    validate(config)
    space = make_space(config)
    setup = engine.build(config)
    pair = make_pair_step(setup.model, setup.tx, setup.mesh, space,
                          meta_optimizer(config, setup.schedule), options(config),
                          standard=setup.augment, schedule=setup.schedule)

    def advance(state, step):
        return pair(state, setup.train_data.batch(step), setup.train_data.batch(step + 1))

    return engine.train(config, workdir, setup, engine.Method(
        state=init_state(setup.state, config, space, setup.schedule), advance=advance,
        steps_per_call=2, report=recorder(space, config)))


# ------------------------------------------------------------------- what was learned, shown


def recorder(space: spaces.SearchSpace, config) -> report.PolicyRecorder:
    """The run's ``report`` (`gar_jax.report.PolicyRecorder`): per epoch the policy's summary
    (`ola_sampler.summary`: p_k, p_level, p_keep) in policy_history.jsonl, ``policy.json``
    (`gar_jax.augment.ola_sampler.to_json`), the two figures, and results.json's
    ``learned_policy`` and ``ola`` sections."""
    c = config.ola

    def plot(history, workdir):
        from gar_jax import plots  # matplotlib: imported only when plotting
        plots.ola_policy_figures(history, space.op_names, workdir)

    def results(policy, record):
        op_probability = ola_sampler.op_probability(policy, replace=c.replace)
        return {
            "learned_policy": {
                "op_probability": dict(zip(space.op_names, op_probability.tolist())),
                "destructive_op": spaces.DESTRUCTIVE_OP.name if c.destructive_op else None,
                "policy_file": report.POLICY_FILE},
            "ola": {"space": space.name, "ops": list(space.op_names),
                    **{k: c[k] for k in ("reward", "gar_method", "ensemble_size", "max_ops",
                                         "replace", "reward_normalization",
                                         "reward_fraction")},
                    "final_policy": record}}

    return report.PolicyRecorder(
        policy_of=lambda state: state.policy,
        record=lambda policy: {k: v.tolist() for k, v in ola_sampler.summary(policy).items()},
        policy_json=lambda policy, epoch: ola_sampler.to_json(policy, list(space.op_names),
                                                      replace=c.replace),
        plot=plot, results=results)
