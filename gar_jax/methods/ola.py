"""OLA: online-learned augmentation with GAR in the training loop (``experiment = "ola"``).

``python -m gar_jax.main --config=configs/cifar100_ola.py --workdir=DIR``. Paper §6,
ALGORITHMS.md §4. SGD steps come in pairs, jitted as one function (`make_pair_step`):

1. augmented step t (even state.step): every image draws a configuration from the learned policy
   (`gar_jax.augment.ola`, an ensemble of E samplers), gets it applied and then the standard
   pipeline; the model takes an ordinary SGD step on this batch;
2. plain step t+1: the next batch with the standard pipeline only; its batch gradient
   G = ∇L_{t+1}(θ_{t+1}) (raw, all-reduced over devices) is what the model's update uses;
3. reward: GAR_n = ⟨∇ℓ_n(θ_t), G⟩ for each augmented example n (``ola.gar_method``: "layerwise"
   (default, `gar_jax.gar_layerwise`: the augmented step keeps each layer's input and output-
   gradient), "jvp" or "vmap" (`gar_jax.gar.alignment`; they keep θ_t and the augmented batch)),
   normalized over the batch; or NSLR (−L_{t+1} for every example, normalized across steps);
4. REINFORCE update of the policy (Adam, lr 0.1, b1 = 0, gradient value clipping at 5).

BatchNorm statistics are per device (as the training stack and PyTorch DDP), and so is the
frozen-statistics convention of the per-example gradients; a GroupNorm model gives the same
numbers on 1 or 8 devices. The policy and its Adam state live in the checkpointed `OLAState`, so a
killed run resumes the same trajectory.

What was learned is written to the workdir at every evaluation: ``policy.json`` (replay it with
`gar_jax.augment.ola.replay`), ``policy_history.jsonl`` (the policy after each epoch),
``policy_over_training.png`` (p(k) and each op's keep probability over training) and
``policy_strengths.png`` (each op's strength distribution over training, the paper-style figure).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from gar_jax import gar, gar_layerwise, reinforce
from gar_jax.augment import ola, spaces
from gar_jax.errors import ConfigError
from gar_jax.train import loop, steps
from gar_jax.train.mesh import DATA_AXIS
from gar_jax.train.state import TrainState

GAR_METHODS = ("layerwise", "jvp", "vmap")
REWARDS = ("gar", "nslr")


@flax.struct.dataclass
class OLAState(TrainState):
    """`TrainState` plus the policy (`gar_jax.augment.ola` params), its Adam state and the
    running reward statistics (used by NSLR)."""
    policy: Any
    policy_opt_state: Any
    reward_stats: Any


@dataclasses.dataclass(frozen=True)
class Options:
    """The static choices of an OLA step pair (from ``config.ola``)."""
    reward: str = "gar"
    gar_method: str = "layerwise"
    gar_convention: str = "frozen"
    gar_remat: bool = False
    chunk_size: Optional[int] = None
    replace: bool = True
    nslr_decay: float = 0.9


def add_ola_section(config, space: str = "wide") -> ml_collections.ConfigDict:
    """Turns a supervised config (`gar_jax.train.defaults`) into an OLA one, with the paper's
    meta hyper-parameters (ALGORITHMS.md §4). Returns the config (changed in place)."""
    config.experiment = "ola"
    config.augment = "standard"    # the standard pipeline after the policy, and alone on plain
    config.augment_kwargs = ml_collections.ConfigDict()  # steps
    c = config.ola = ml_collections.ConfigDict()
    c.space = space                # "wide" (WL, 19 ops) or "randaug" (RA, 14 ops)
    c.destructive_op = False       # add an op that replaces the image by its batch neighbour
    c.max_ops = 4                  # k in 1..max_ops ops per image
    c.replace = True               # draw the k ops with replacement (authors' code)
    c.ensemble_size = 8            # independent samplers; the batch is cut into as many groups
    c.reward = "gar"               # "gar" or "nslr" (next-step loss, normalized across steps)
    c.gar_method = "layerwise"     # "layerwise", "jvp" or "vmap" (all exact, same numbers)
    c.gar_convention = "frozen"    # layerwise, BatchNorm nets: or "contribution" (cheaper)
    c.gar_remat = False            # layerwise: recompute layer inputs at step t+1 (less memory)
    c.chunk_size = 0               # jvp/vmap: examples per chunk (bounds memory); 0 = all
    c.learning_rate = 0.1          # Adam on the policy logits
    c.b1 = 0.0
    c.clip = 5.0                   # gradient value clipping (0 = none)
    c.nslr_decay = 0.9             # NSLR: running reward statistics' decay
    return config


def cifar_config(dataset: str, space: str = "wide") -> ml_collections.ConfigDict:
    """Table 2's OLA runs (configs/cifar10_ola.py, cifar100_ola.py): the RandAugment protocol
    (WRN-28-10, 200 epochs, batch 256) with OLA over `space` ("wide"/"wl" or "randaug"/"ra")."""
    from gar_jax.train import defaults

    return add_ola_section(defaults.supervised(dataset),
                           {"wl": "wide", "ra": "randaug"}.get(space, space))


def digits_config(*, destructive_op: bool = False) -> ml_collections.ConfigDict:
    """The digits OLA run (configs/digits_ola*.py): WRN-10-2, 30 epochs, batch 64 (a few minutes
    on a CPU), the RA space with CIFAR magnitudes (harsh on 8x8 images: something to learn),
    2 samplers of 32 images each."""
    from gar_jax.train import defaults

    c = add_ola_section(defaults.digits("baseline"), "randaug")
    c.ola.ensemble_size = 2
    c.ola.destructive_op = destructive_op
    return c


def options(config) -> Options:
    c = config.ola
    return Options(reward=c.reward, gar_method=c.gar_method, chunk_size=c.chunk_size or None,
                   gar_convention=c.get("gar_convention", "frozen"),
                   gar_remat=c.get("gar_remat", False),
                   replace=c.replace, nslr_decay=c.nslr_decay)


DESTRUCTIVE_OP = spaces.DESTRUCTIVE_OP


def make_space(config) -> spaces.SearchSpace:
    """``config.ola.space`` ("wide" / "randaug" / ...), plus `DESTRUCTIVE_OP` when
    ``config.ola.destructive_op``."""
    space = spaces.get_space(config.ola.space)
    if config.ola.destructive_op:
        space = spaces.with_destructive_op(space)
    return space


def meta_optimizer(config) -> optax.GradientTransformation:
    c = config.ola
    return reinforce.meta_optimizer(c.learning_rate, b1=c.b1, clip=c.clip or None)


def validate(config) -> None:
    """ConfigError on a bad config, before any data is loaded or compiled."""
    loop.validate(config)
    if "ola" not in config:
        raise ConfigError("an OLA config needs an `ola` section (see configs/cifar10_ola.py)")
    c = config.ola
    if config.augment not in ("standard", "none"):
        raise ConfigError(f"config.augment={config.augment!r}: OLA learns the policy itself; "
                          "use 'standard' (the standard pipeline after it) or 'none'")
    if config.model.dropout_rate:
        raise ConfigError("config.model.dropout_rate must be 0 for OLA: per-example gradients "
                          "(GAR) would see other dropout masks than the training step")
    if c.gar_method not in GAR_METHODS:
        raise ConfigError(f"config.ola.gar_method={c.gar_method!r} must be one of {GAR_METHODS}")
    gar_layerwise.check_convention(c.get("gar_convention", "frozen"))
    if c.reward not in REWARDS:
        raise ConfigError(f"config.ola.reward={c.reward!r} must be one of {REWARDS}")
    if c.max_ops < 1 or c.ensemble_size < 1:
        raise ConfigError("config.ola.max_ops and config.ola.ensemble_size must be >= 1")
    if config.batch_size % c.ensemble_size:
        raise ConfigError(f"config.batch_size={config.batch_size} must be a multiple of "
                          f"config.ola.ensemble_size={c.ensemble_size} (B/E images per sampler)")
    if c.chunk_size < 0:
        raise ConfigError(f"config.ola.chunk_size={c.chunk_size} must be >= 0 (0 = no chunks)")
    if not c.learning_rate > 0 or not 0 <= c.b1 < 1 or c.clip < 0:
        raise ConfigError("config.ola needs learning_rate > 0, 0 <= b1 < 1 and clip >= 0")
    if not 0 <= c.nslr_decay < 1:
        raise ConfigError(f"config.ola.nslr_decay={c.nslr_decay} must be in [0, 1)")
    space = make_space(config)
    if not c.replace and c.max_ops > len(space):
        raise ConfigError(f"config.ola.max_ops={c.max_ops} ops cannot be drawn without "
                          f"replacement from the {len(space)} ops of {space.name!r}")


def init_state(state: TrainState, config, space: spaces.SearchSpace) -> OLAState:
    """`OLAState` from a fresh `TrainState`: zero policy logits (replicated like the rest)."""
    policy = ola.init_params(len(space), num_levels=space.num_levels,
                             max_ops=config.ola.max_ops, ensemble_size=config.ola.ensemble_size)
    extra = dict(policy=policy, policy_opt_state=meta_optimizer(config).init(policy),
                 reward_stats=reinforce.RunningNormalizer().init())
    sharding = jax.tree.leaves(state.params)[0].sharding
    # One buffer per leaf (RunningStats starts with one zero twice): the pair step donates them.
    extra = jax.tree.map(lambda x: jax.device_put(np.array(x), sharding), extra)
    return OLAState(**vars(state), **extra)


# ------------------------------------------------------------------------------- the step pair


def _variables(params, batch_stats):
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def _layerwise_fns(model, mesh, convention="frozen", remat=False):
    """Sharded (capture, replay) of `gar_layerwise` with the stack's grad_fn conventions."""
    def capture_local(params, batch_stats, images, labels):
        captured = gar_layerwise.capture(
            model, _variables(params, batch_stats), {"image": images, "label": labels},
            steps.cross_entropy, axis_name=DATA_AXIS, convention=convention, remat=remat,
            train=True)
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
        return gar_layerwise.alignment_from_tape(model, _variables(direction, batch_stats), tape,
                                                 direction, images, train=True)

    replay = jax.shard_map(replay_local, mesh=mesh,
                           in_specs=(P(), tape_spec, P(DATA_AXIS), P()), out_specs=P(DATA_AXIS))
    return capture, replay


def _alignment_fn(model, mesh, method: str, chunk_size: Optional[int]):
    """Sharded ``fn(params_t, batch_stats_t, images, labels, direction) -> GAR [B]`` with
    `gar.alignment` under per-device frozen BatchNorm statistics."""
    def local(params, batch_stats, images, labels, direction):
        # Nothing of this may start before G exists: otherwise XLA may run the forward at θ_t
        # early and keep its activations alive through the plain step (memory).
        params, batch_stats, images, labels, direction = jax.lax.optimization_barrier(
            (params, batch_stats, images, labels, direction))
        batch = {"image": images, "label": labels}
        per_example = gar.frozen_bn_loss_fn(model, _variables(params, batch_stats), batch,
                                            steps.cross_entropy, train=True)
        return gar.alignment(per_example, params, batch, direction, method=method,
                             chunk_size=chunk_size)

    return jax.shard_map(local, mesh=mesh,
                         in_specs=(P(), P(), P(DATA_AXIS), P(DATA_AXIS), P()),
                         out_specs=P(DATA_AXIS))


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
    active slots per image), p_k<k> and keep/<op> (the policy, averaged over the ensemble).
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
        return ola.augment(policy, space, key, images, standard=standard, replace=opts.replace)

    return augment


def make_pair_core(model, tx, mesh, space: spaces.SearchSpace, meta_tx, opts: Options, *,
                   standard: Optional[Callable] = None,
                   schedule: Optional[Callable] = None) -> Callable:
    """The pair after the policy's augmentation (`make_pair_step` = `make_policy_augment` + this):
    ``core(state, images, sample, labels, batch_plain, key) -> (state, metrics)`` with `images`
    the augmented batch of step t, `sample` its `PolicySample`, `labels` its labels."""
    grad_fn = steps.make_grad_fn(model, mesh)
    if opts.reward == "gar" and opts.gar_method == "layerwise":
        capture, replay = _layerwise_fns(model, mesh, opts.gar_convention, opts.gar_remat)
    elif opts.reward == "gar":
        align = _alignment_fn(model, mesh, opts.gar_method, opts.chunk_size)
    normalizer = reinforce.RunningNormalizer(decay=opts.nslr_decay)
    standard = standard or (lambda key, images: images)

    def core(state, images, sample, labels, batch_plain, key):
        k_standard, k_drop_aug, k_drop_plain = jax.random.split(key, 3)
        # 1. The augmented step.
        if opts.reward == "gar" and opts.gar_method == "layerwise":
            grads, batch_stats, m_aug, tape = capture(state.params, state.batch_stats, images,
                                                      labels)
        else:
            grads, batch_stats, m_aug = grad_fn(state.params, state.batch_stats, images, labels,
                                                k_drop_aug)
        mid = steps.apply_gradients(state, grads, batch_stats, tx)
        # 2. The plain step's batch gradient G at θ_{t+1}.
        plain = standard(k_standard, batch_plain["image"])
        g, batch_stats, m_plain = grad_fn(mid.params, mid.batch_stats, plain,
                                          batch_plain["label"], k_drop_plain)
        # 3. Rewards of the augmented examples.
        reward_stats = state.reward_stats
        if opts.reward == "gar":
            if opts.gar_method == "layerwise":
                rewards = replay(state.batch_stats, tape, images, g)
            else:
                rewards = align(state.params, state.batch_stats, images, labels, g)
            weights = reinforce.normalize_rewards(rewards)
        else:
            rewards = gar.nslr_reward(m_plain["loss"], labels.shape[0])
            weights = normalizer.normalize(reward_stats, rewards)
            reward_stats = normalizer.update(reward_stats, rewards)
        # 4. REINFORCE update of the policy.
        policy_grads = jax.grad(lambda p: reinforce.score_function_loss(
            ola.log_prob(p, sample, replace=opts.replace), weights, normalize=False))(
                state.policy)
        updates, policy_opt_state = meta_tx.update(policy_grads, state.policy_opt_state,
                                                   state.policy)
        policy = optax.apply_updates(state.policy, updates)
        new = steps.apply_gradients(mid, g, batch_stats, tx).replace(
            policy=policy, policy_opt_state=policy_opt_state, reward_stats=reward_stats)

        metrics = {"loss": (m_aug["loss"] + m_plain["loss"]) / 2,
                   "accuracy": (m_aug["accuracy"] + m_plain["accuracy"]) / 2,
                   "loss_aug": m_aug["loss"], "loss_plain": m_plain["loss"],
                   "grad_norm": optax.tree.norm(g),
                   "reward_mean": jnp.mean(rewards), "reward_std": jnp.std(rewards),
                   "ops_applied": jnp.mean(jnp.sum(sample.active, axis=1))}
        if schedule is not None:
            metrics["learning_rate"] = schedule(state.step)
        metrics.update(_policy_metrics(policy, space))
        return new, metrics

    return core


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
    setup = loop.build(config)
    if setup.total_steps % 2:
        raise ConfigError(f"OLA runs whole step pairs: num_epochs * steps_per_epoch = "
                          f"{setup.total_steps} must be even; change num_epochs or batch_size")
    state = init_state(setup.state, config, space)
    pair = make_pair_step(setup.model, setup.tx, setup.mesh, space, meta_optimizer(config),
                          options(config), standard=setup.augment, schedule=setup.schedule)

    def advance(state, step):
        return pair(state, setup.train_data.batch(step), setup.train_data.batch(step + 1))

    os.makedirs(workdir, exist_ok=True)
    recorder = PolicyRecorder(workdir, space, replace=config.ola.replace)
    results = loop.fit(config, workdir, setup, advance=advance, state=state, steps_per_call=2,
                       on_epoch_end=[recorder])
    if jax.process_index() == 0:
        results["ola"] = {"space": space.name, "ops": list(space.op_names),
                          **{k: config.ola[k] for k in ("reward", "gar_method",
                                                         "ensemble_size", "max_ops", "replace")},
                          "final_policy": recorder.history[-1] if recorder.history else None}
        with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return results


# ------------------------------------------------------------------- what was learned, shown


class PolicyRecorder:
    """``on_epoch_end`` hook: appends the policy to ``policy_history.jsonl``, rewrites
    ``policy.json`` and the two plots. A resumed run keeps the epochs already recorded (the
    newest record of an epoch wins)."""

    def __init__(self, workdir: str, space: spaces.SearchSpace, *, replace: bool = True):
        self.workdir, self.space, self.replace = workdir, space, replace
        self.path = os.path.join(workdir, "policy_history.jsonl")
        self.history = []
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                by_epoch = {r["epoch"]: r for r in map(json.loads, f)}
            self.history = [by_epoch[e] for e in sorted(by_epoch)]

    def __call__(self, epoch: int, state, evaluation: dict) -> None:
        policy = jax.device_get(state.policy)
        summary = ola.summary(policy)
        record = {"epoch": epoch, "test_accuracy": evaluation["accuracy"],
                  **{k: v.tolist() for k, v in summary.items()}}
        self.history = [r for r in self.history if r["epoch"] < epoch] + [record]
        if jax.process_index() != 0:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        with open(os.path.join(self.workdir, "policy.json"), "w", encoding="utf-8") as f:
            f.write(ola.to_json(policy, list(self.space.op_names), replace=self.replace))
        plot_policy_history(self.history, self.space.op_names, self.workdir)


def plot_policy_history(history, op_names, workdir: str) -> None:
    """Writes policy_over_training.png and policy_strengths.png from `PolicyRecorder` records."""
    from gar_jax.plots import plt

    epochs = np.array([r["epoch"] for r in history])
    p_k = np.array([r["p_k"] for r in history])            # [T, K]
    p_keep = np.array([r["p_keep"] for r in history])      # [T, A]
    p_level = np.array([r["p_level"] for r in history])    # [T, A, L]

    fig, (ax_k, ax_keep) = plt.subplots(1, 2, figsize=(12, 4))
    for k in range(p_k.shape[1]):
        ax_k.plot(epochs, p_k[:, k], marker=".", label=f"k = {k + 1}")
    ax_k.axhline(1 / p_k.shape[1], color="grey", linestyle=":", linewidth=1)
    ax_k.set(xlabel="epoch", ylabel="p(k)", title="number of ops per image", ylim=(0, None))
    ax_k.legend(fontsize=8)
    colors = plt.cm.tab20(np.linspace(0, 1, len(op_names)))
    for a, name in enumerate(op_names):
        ax_keep.plot(epochs, p_keep[:, a], color=colors[a], label=name,
                     linewidth=2.5 if name == "sample_pairing" else 1.2)
    ax_keep.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax_keep.set(xlabel="epoch", ylabel="keep probability", title="keep probability per op",
                ylim=(0, 1))
    ax_keep.legend(fontsize=6, ncol=2, loc="best")
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "policy_over_training.png"), dpi=110)
    plt.close(fig)

    cols = 5
    rows = -(-len(op_names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.2 * rows), squeeze=False)
    vmax = max(p_level.max(), 1e-6)
    for a, ax in enumerate(axes.flat):
        if a >= len(op_names):
            ax.set_visible(False)
            continue
        ax.imshow(p_level[:, a, :].T, origin="lower", aspect="auto", cmap="viridis", vmin=0,
                  vmax=vmax, extent=(epochs[0] - 0.5, epochs[-1] + 0.5, -0.5,
                                     p_level.shape[2] - 0.5))
        ax.set_title(f"{op_names[a]}  keep {p_keep[-1, a]:.2f}", fontsize=8)
        ax.tick_params(labelsize=6)
        if a % cols == 0:
            ax.set_ylabel("strength level", fontsize=7)
        if a // cols == rows - 1:
            ax.set_xlabel("epoch", fontsize=7)
    fig.suptitle("strength distribution p(level | op) over training (colour: probability)")
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "policy_strengths.png"), dpi=110)
    plt.close(fig)
