"""smart_augmentation: augmentation learned by a meta-gradient through unrolled SGD steps
(``experiment = "smart_aug"``; Harlé-Collette et al., AntoineHX/smart_augmentation;
docs/algorithms.md §7).

``python -m gar_jax.main --config=configs/digits_smart_aug.py --workdir=DIR``. The augmentation
parameters (`gar_jax.augment.smart_augment`: a logit and a magnitude per op) are learned
jointly with the model. One call of the jitted `make_meta_step` does K (``smart_aug.inner_steps``) SGD steps and
one meta step:

1. for k = 0..K-1, batch t+k: the standard pipeline (uint8, as configured), then each image's
   N learned ops (differentiable float ops); the "mixed" training loss
   CE(clean) + mean(w * CE(aug)) + mean(w * KL(p_clean || p_aug)) with the per-image weights w of
   the sampled ops; the model's real optimizer update (``setup.tx``: clip, weight decay, SGD
   Nesterov, schedule) as an optax update inside the differentiated function;
2. meta loss: CE of the un-augmented model after the K updates on one held-out batch (a
   ``smart_aug.heldout_fraction`` of the training set, never trained on) + 0.001 * MSE(mag, 1);
3. its gradient w.r.t. the augmentation parameters is ``jax.grad`` through the K optax updates
   (exact: second order through the training loss); clip at global norm 1; Adam lr 1e-2; clamp
   ``mag`` to [0.01, 1].
The model state the meta-gradient differentiated through *is* the new model state (the aux output
of the same `value_and_grad`): no copy of the model is kept, and the next call starts from plain
arrays, so the graph is truncated after every meta step by construction and memory is constant
(the authors' PyTorch/higher code needs ``detach_()`` for that).

Choices where the paper's code is silent or differs (README of experiments/smart_aug):
- The standard pipeline (pad-crop, flip, Cutout) runs *before* the learned ops, on uint8 (the
  authors had none; OLA and the fixed policies apply it after their ops). "clean" is the image
  after the standard pipeline only.
- The held-out loss uses BatchNorm in train mode (batch statistics of the held-out batch): it is
  then a differentiable function of the parameters alone. The authors call ``model.eval()``
  (running averages, which higher does not differentiate).
- Draws (ops, signs, cutout centres) are constants of the meta-gradient, as in the authors' code.

What was learned is written at every evaluation: ``policy.json`` (replay with
`gar_jax.augment.smart_augment.replay` or ``get_policy("smart_aug", path=...)``),
``policy_history.jsonl`` and ``policy_over_training.png`` (op probabilities and magnitudes over training).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from gar_jax import report
from gar_jax.augment import smart_augment, spaces
from gar_jax.errors import ConfigError
from gar_jax.train import steps
from gar_jax.mesh import DATA_AXIS, check_batch_size, replicated
from gar_jax.train.state import TrainState
from gar_jax.models import variables


@flax.struct.dataclass
class SmartAugState(TrainState):
    """`TrainState` plus the augmentation parameters (`gar_jax.augment.smart_augment`) and their
    Adam state; checkpointed whole."""
    aug_params: Any
    aug_opt_state: Any


@dataclasses.dataclass(frozen=True)
class Options:
    """The static choices of a meta step (from ``config.smart_aug``)."""
    inner_steps: int = 1
    num_ops: int = 3
    temperature: float = smart_augment.TEMPERATURE
    unsup_factor: float = 1.0
    mag_reg: float = 1e-3


def make_space(config) -> spaces.SearchSpace:
    """The space of ``config.smart_aug`` (ops subset, plus the planted destructive op)."""
    c = config.smart_aug
    space = spaces.get_space(c.space)
    if c.ops:
        space = smart_augment.subspace(space, [n.strip() for n in c.ops.split(",") if n.strip()])
    if c.destructive_op:
        space = spaces.with_destructive_op(space)
    return space


def options(config) -> Options:
    c = config.smart_aug
    return Options(inner_steps=c.inner_steps, num_ops=c.num_ops, temperature=c.temperature,
                   unsup_factor=c.unsup_factor, mag_reg=c.mag_reg)


def meta_optimizer(config) -> optax.GradientTransformation:
    c = config.smart_aug
    parts = [optax.clip_by_global_norm(c.meta_clip)] if c.meta_clip else []
    return optax.chain(*parts, optax.adam(c.meta_learning_rate))


def heldout_batch_size(config) -> int:
    return config.smart_aug.heldout_batch_size or config.batch_size


def validate(config) -> None:
    """ConfigError on a bad config, before any data is loaded or compiled."""
    from gar_jax.train import engine

    if "smart_aug" not in config:
        raise ConfigError("a smart_aug config needs a `smart_aug` section "
                          "(see configs/digits_smart_aug.py)")
    engine.validate(config)
    c = config.smart_aug
    if config.augment not in ("standard", "none"):
        raise ConfigError(f"config.augment={config.augment!r}: smart_aug learns the policy "
                          "itself; use 'standard' (the standard pipeline first) or 'none'")
    if isinstance(c.inner_steps, bool) or not isinstance(c.inner_steps, int) or \
            c.inner_steps < 1:
        raise ConfigError(f"config.smart_aug.inner_steps={c.inner_steps!r} (K) must be an "
                          "integer >= 1")
    space = make_space(config)
    smart_augment.check_num_ops(space, c.num_ops)
    if not 0 < c.heldout_fraction < 1:
        raise ConfigError(f"config.smart_aug.heldout_fraction={c.heldout_fraction} must be in "
                          "(0, 1)")
    if not c.temperature > 0 or not c.meta_learning_rate > 0 or c.meta_clip < 0 or \
            c.mag_reg < 0 or c.unsup_factor < 0 or c.heldout_batch_size < 0:
        raise ConfigError("config.smart_aug needs temperature > 0, meta_learning_rate > 0 and "
                          "meta_clip, mag_reg, unsup_factor, heldout_batch_size >= 0")
    check_batch_size("smart_aug.heldout_batch_size", heldout_batch_size(config),
                     jax.device_count())


def init_state(state: TrainState, config, space: spaces.SearchSpace) -> SmartAugState:
    """`SmartAugState` from a fresh `TrainState` (replicated like the rest)."""
    aug = smart_augment.init_params(space)
    extra = dict(aug_params=aug, aug_opt_state=meta_optimizer(config).init(aug))
    sharding = jax.tree.leaves(state.params)[0].sharding
    extra = jax.tree.map(lambda x: jax.device_put(np.array(x), sharding), extra)
    return SmartAugState(**vars(state), **extra)


def split_heldout(train: dict, fraction: float, seed: int):
    """``(train part, held-out part)`` of a ``{"image", "label"}`` split: a seeded random
    ``fraction`` of the examples (at least one) is held out."""
    n = len(train["label"])
    held = max(1, int(round(fraction * n)))
    order = np.random.default_rng(seed).permutation(n)
    pick = lambda idx: {k: np.asarray(v)[np.sort(idx)] for k, v in train.items()}
    return pick(order[held:]), pick(order[:held])


# --------------------------------------------------------------------------------- the step


def make_mixed_grad_fn(model, mesh, unsup_factor: float) -> Callable:
    """``fn(params, batch_stats, clean, aug, weights, labels, key) -> (grads, stats, metrics)``:
    the gradient of the mixed loss (module docstring), data parallel like
    `gar_jax.train.steps.make_grad_fn` (per-device BatchNorm; the clean forward runs first and
    the augmented one continues from its running statistics, as the authors' two calls)."""
    def local(params, batch_stats, clean, aug, weights, labels, key):
        key = jax.random.fold_in(key, jax.lax.axis_index(DATA_AXIS))
        k_clean, k_aug = jax.random.split(key)
        has_bn = bool(batch_stats)
        mutable = ["batch_stats"] if has_bn else []

        def loss_fn(p):
            logits_c, upd = model.apply(variables(p, batch_stats), clean, train=True,
                                        rngs={"dropout": k_clean}, mutable=mutable)
            stats = upd["batch_stats"] if has_bn else batch_stats
            logits_a, upd = model.apply(variables(p, stats), aug, train=True,
                                        rngs={"dropout": k_aug}, mutable=mutable)
            log_c, log_a = jax.nn.log_softmax(logits_c), jax.nn.log_softmax(logits_a)
            ce_clean = jnp.mean(steps.cross_entropy(logits_c, labels))
            ce_aug = jnp.mean(weights * steps.cross_entropy(logits_a, labels))
            kl = jnp.mean(weights * jnp.sum(jnp.exp(log_c) * (log_c - log_a), axis=-1))
            loss = jax.lax.pmean(ce_clean + unsup_factor * (ce_aug + kl), DATA_AXIS)
            parts = jax.lax.pmean({"loss_clean": ce_clean, "loss_aug": ce_aug, "kl": kl,
                                   "accuracy": jnp.mean(jnp.argmax(logits_a, -1) == labels)},
                                  DATA_AXIS)
            return loss, ((upd["batch_stats"] if has_bn else batch_stats), parts)

        (loss, (stats, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        stats = jax.lax.pmean(stats, DATA_AXIS) if has_bn else stats
        return grads, stats, {"loss": loss, **parts}

    return jax.shard_map(local, mesh=mesh, out_specs=P(),
                         in_specs=(P(), P(), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS),
                                   P(DATA_AXIS), P()))


def make_heldout_loss(model, mesh) -> Callable:
    """``fn(params, batch_stats, images, labels, key) -> mean CE`` of the un-augmented model on a
    held-out batch, BatchNorm in train mode (per device; its new statistics are discarded)."""
    def local(params, batch_stats, images, labels, key):
        key = jax.random.fold_in(key, jax.lax.axis_index(DATA_AXIS))
        mutable = ["batch_stats"] if batch_stats else []
        logits, _ = model.apply(variables(params, batch_stats), images, train=True,
                                rngs={"dropout": key}, mutable=mutable)
        return jax.lax.pmean(jnp.mean(steps.cross_entropy(logits, labels)), DATA_AXIS)

    return jax.shard_map(local, mesh=mesh, out_specs=P(),
                         in_specs=(P(), P(), P(DATA_AXIS), P(DATA_AXIS), P()))


def make_unrolled_loss(model, tx, mesh, space: spaces.SearchSpace, opts: Options) -> Callable:
    """``loss(aug_params, model_state, inner, heldout) -> (meta_loss, (model_state, metrics))``.

    model_state: ``(params, batch_stats, opt_state)``. inner: a tuple of K
    ``(clean uint8/float [B,H,W,C], labels [B], smart_augment.Sample, key)``, the inputs of the K
    unrolled steps (standard pipeline applied, ops drawn). heldout: ``(images, labels, key)``.
    The returned model state is that after the K real updates; differentiate w.r.t. aug_params.
    """
    grad_fn = make_mixed_grad_fn(model, mesh, opts.unsup_factor)
    heldout_loss = make_heldout_loss(model, mesh)

    def loss(aug_params, model_state, inner, heldout):
        params, batch_stats, opt_state = model_state
        metrics = []
        for clean, labels, drawn, key in inner:
            aug, weights = smart_augment.augment(aug_params, space, clean, drawn)
            dtype = aug.dtype
            grads, batch_stats, m = grad_fn(params, batch_stats, clean.astype(dtype), aug,
                                            weights, labels, key)
            m["grad_norm"] = optax.tree.norm(grads)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            metrics.append(m)
        held = heldout_loss(params, batch_stats, *heldout)
        reg = smart_augment.magnitude_regularizer(aug_params, space)
        metrics = jax.tree.map(lambda *v: jnp.mean(jnp.stack(v)), *metrics)
        metrics["heldout_loss"] = held
        return held + opts.mag_reg * reg, ((params, batch_stats, opt_state), metrics)

    return loss


def draw_inputs(state, batches, space: spaces.SearchSpace, opts: Options,
                standard: Optional[Callable]):
    """The K unrolled steps' inputs (see `make_unrolled_loss`) from the K train batches of
    steps state.step .. state.step + K - 1: the standard pipeline and the op draws, from
    ``step_key(state.rng, step)``."""
    inner = []
    for k, batch in enumerate(batches):
        key = steps.step_key(state.rng, state.step + k)
        k_standard, k_draw, k_model = jax.random.split(key, 3)
        images = batch["image"]
        if standard is not None:
            images = standard(k_standard, images)
        b, h, w, _ = images.shape
        drawn = smart_augment.sample(state.aug_params, k_draw, b, opts.num_ops, h, w,
                                     opts.temperature)
        inner.append((images, batch["label"], drawn, k_model))
    return tuple(inner)


def make_meta_step(model, tx, mesh, space: spaces.SearchSpace, meta_tx, opts: Options, *,
                   standard: Optional[Callable] = None, schedule: Optional[Callable] = None,
                   jit: bool = True) -> Callable:
    """``meta_step(state, batches, heldout) -> (state, metrics)``: K SGD steps + one meta step.

    state: `SmartAugState` (donated when jitted); batches: a tuple of K train batches
    ``{"image": uint8 [B,H,W,C], "label": int32 [B]}`` (steps state.step ...), heldout: one such
    batch of the held-out split, all sharded ``P('data')``. Metrics (replicated scalars): loss,
    loss_clean, loss_aug, kl, accuracy (on the augmented images), grad_norm (means over the K
    steps), heldout_loss, meta_grad_norm, learning_rate, and p/<op>, mag/<op>.
    """
    loss = make_unrolled_loss(model, tx, mesh, space, opts)
    grad = jax.value_and_grad(loss, has_aux=True)
    names = space.op_names

    def meta_step(state, batches, heldout):
        inner = draw_inputs(state, batches, space, opts, standard)
        held_key = jax.random.fold_in(steps.step_key(state.rng, state.step), 1 << 30)
        model_state = (state.params, state.batch_stats, state.opt_state)
        (_, ((params, batch_stats, opt_state), metrics)), meta_grads = grad(
            state.aug_params, model_state, inner, (heldout["image"], heldout["label"], held_key))
        metrics["meta_grad_norm"] = optax.tree.norm(meta_grads)
        updates, aug_opt_state = meta_tx.update(meta_grads, state.aug_opt_state, state.aug_params)
        aug_params = smart_augment.clamp(optax.apply_updates(state.aug_params, updates), space)
        if schedule is not None:
            metrics["learning_rate"] = schedule(state.step + opts.inner_steps - 1)
        p = smart_augment.distribution(aug_params, opts.temperature)
        metrics.update({f"p/{n}": p[i] for i, n in enumerate(names)})
        metrics.update({f"mag/{n}": aug_params["mag"][i] for i, n in enumerate(names)})
        new = state.replace(step=state.step + opts.inner_steps, params=params,
                            batch_stats=batch_stats, opt_state=opt_state, aug_params=aug_params,
                            aug_opt_state=aug_opt_state)
        return new, metrics

    if not jit:
        return meta_step
    return jax.jit(meta_step, donate_argnums=0, out_shardings=replicated(mesh))


# ------------------------------------------------------------------------------------ the run


def run(config, workdir: str) -> dict:
    """Trains (or resumes) a smart_aug run; writes results.json, policy.json and the plots."""
    from gar_jax.data import sources
    from gar_jax.data.device import DeviceDataset
    from gar_jax.train import engine

    validate(config)
    space = make_space(config)
    c = config.smart_aug
    full = sources.load(config.dataset, "train", data_dir=config.data_dir or None)
    train, heldout = split_heldout(full, c.heldout_fraction, config.seed)
    if len(heldout["label"]) < heldout_batch_size(config):
        raise ConfigError(f"the held-out split has {len(heldout['label'])} examples, fewer than "
                          f"one held-out batch ({heldout_batch_size(config)}); raise "
                          "smart_aug.heldout_fraction or lower smart_aug.heldout_batch_size")
    setup = engine.build(config, train=train)
    if setup.total_steps % c.inner_steps:
        raise ConfigError(f"smart_aug runs whole groups of K={c.inner_steps} steps: num_epochs * "
                          f"steps_per_epoch = {setup.total_steps} must be a multiple of K")
    held_data = DeviceDataset.create(heldout, setup.mesh, batch_size=heldout_batch_size(config),
                                     seed=config.seed + 1)
    meta_step = make_meta_step(setup.model, setup.tx, setup.mesh, space, meta_optimizer(config),
                               options(config), standard=setup.augment, schedule=setup.schedule)
    k = c.inner_steps

    def advance(state, step):
        batches = tuple(setup.train_data.batch(step + i) for i in range(k))
        return meta_step(state, batches, held_data.batch(step // k))

    return engine.train(config, workdir, setup, engine.Method(
        state=init_state(setup.state, config, space), advance=advance, steps_per_call=k,
        report=recorder(space, config)))


# ------------------------------------------------------------------- what was learned, shown


def recorder(space: spaces.SearchSpace, config) -> report.PolicyRecorder:
    """The run's ``report`` (`gar_jax.report.PolicyRecorder`): per epoch each op's draw
    probability and magnitude in policy_history.jsonl, ``policy.json`` (`smart.to_json`),
    ``policy_over_training.png``, and results.json's ``learned_policy`` and ``smart_aug``."""
    c = config.smart_aug

    def plot(history, workdir):
        from gar_jax import plots  # matplotlib: imported only when plotting
        plots.smart_aug_policy_figure(history, space, workdir)

    def results(policy, record):
        return {
            "learned_policy": {
                "op_probability": policy["op_probability"],
                "destructive_op": spaces.DESTRUCTIVE_OP.name if c.destructive_op else None,
                "distribution": dict(zip(space.op_names, policy["distribution"])),
                "magnitude": dict(zip(space.op_names, policy["magnitude"])),
                "policy_file": report.POLICY_FILE},
            "smart_aug": {"space": space.name, "ops": list(space.op_names),
                          **{k: c[k] for k in ("num_ops", "inner_steps", "temperature",
                                               "heldout_fraction", "meta_learning_rate")}}}

    return report.PolicyRecorder(
        policy_of=lambda state: smart_augment.to_json(jax.device_get(state.aug_params), space,
                                                      c.space, c.num_ops, c.temperature),
        record=lambda policy: {k: policy[k] for k in ("distribution", "magnitude",
                                                       "op_probability")},
        policy_json=lambda policy, epoch: policy, plot=plot, results=results)
