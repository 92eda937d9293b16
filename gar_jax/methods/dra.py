"""Differentiable RandAugment (``experiment = "dra"``): search a policy, then train with it.

``python -m gar_jax.main --config=configs/digits_dra.py --workdir=DIR`` runs two phases, each an
engine run (checkpoints, resume, SIGTERM, results.json):

1. ``DIR/search`` (when ``config.dra.policy == "search"``): the paper's search (§III,
   docs/algorithms.md §8; ainieli/DRA ``search_CIFAR.py``) on a random ``search.fraction`` of the
   training set, cut in two halves (model weights / policy). Every step does, with no unrolling:
   a. a policy update on a batch of the policy half, which gets no crop or flip (the authors'
      ``datasets/split.py``): the relaxed DRA layers
      (`gar_jax.augment.dra_policy.search_augment`: per image a hard Gumbel-softmax op, apply probability, firing, magnitude noise and sign, the
      straight-through term at the op's input, only the chosen op computed), Cutout; loss
      CE(aug) + kl_weight * KL(softmax(clean) || softmax(aug)) with the model in train mode
      (its batch statistics updates dropped), AdamW (lr 5e-3, b1 0.5, weight decay 0) on
      {W, M_MEAN, M_STD}, then M_MEAN, M_STD clipped to [0, 1];
   b. a weight update on a batch of the weight half: pad-crop + flip, the same relaxed layers
      under the updated policy (no gradient to it), Cutout: SGD Nesterov, cosine lr from
      search.learning_rate, weight decay, gradient-norm clip.
   Writes ``policy.json`` (the layout of ``tests/data/dra_policies.json``), ``policy_history.jsonl``
   and the plots ``policy_weights.png`` (softmax(W) per layer over the search) and
   ``policy_magnitudes.png`` (each op's clipped-normal magnitude density at the end).
2. ``DIR`` itself: ordinary training (the supervised protocol of the config) whose augmentation
   is, in the authors' order (``train_phase/train_CIFAR.py``), pad-crop + flip, the learned (or a
   published) policy (``DIR/policy.json``) replayed as a fixed policy (`dra.replay_policy`: per
   image and layer op ~ Categorical(W), m ~ N(M_MEAN, M_STD) clipped, fires with
   p ~ U(0.2, 0.8)), then Cutout.

A killed run resumes the phase it was in (a finished search resumes at its end: it is evaluated,
not redone). ``DIR/results.json`` is the training's, with ``learned_policy`` (op_probability: the
probability that an image gets each op under the policy used for training) and ``dra`` (the
search's summary).

The search estimator is the authors' only (augment/dra_policy.py): earlier versions drew one op per
batch by default (not theirs: their layer runs image by image) or ran every op on every image.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from gar_jax import report
from gar_jax.augment import color, dra_policy, policies, spaces
from gar_jax.data import sources, stats
from gar_jax.data.device import DeviceDataset
from gar_jax.errors import ConfigError
from gar_jax.methods import supervised
from gar_jax.train import engine, steps
from gar_jax.mesh import DATA_AXIS
from gar_jax.train.state import TrainState


@flax.struct.dataclass
class DRAState(TrainState):
    """`TrainState` of the search model plus the DRA policy {"W", "M_MEAN", "M_STD"} [L, A] and
    its AdamW state."""
    policy: Any
    policy_opt_state: Any


# ------------------------------------------------------------------------------------ checks


def op_names(config) -> tuple:
    """The search's ops: DRA's 16, SamplePairing if ``destructive_op``, then ``extra_ops``
    (comma-separated library names of `dra_policy.EXTRA_OPS`: sample_pairing, flip_lr, flip_ud,
    rotate_90/180/270); ConfigError for an unknown or repeated one."""
    names = dra_policy.DRA_OPS + ((dra_policy.DESTRUCTIVE,) if config.dra.destructive_op else ())
    return spaces.add_extra_ops(names, config.dra.get("extra_ops", ""),
                                {dra_policy.OUR_NAME[n]: n for n in dra_policy.EXTRA_OPS},
                                "config.dra.extra_ops", "DRA")


def searches(config) -> bool:
    return config.dra.policy == "search"


def validate(config) -> None:
    """ConfigError on a bad config, before any data is loaded or compiled."""
    engine.validate(config)
    if "dra" not in config:
        raise ConfigError("a DRA config needs a `dra` section (see configs/digits_dra.py)")
    c, s = config.dra, config.dra.search
    if config.augment not in ("standard", "none"):
        raise ConfigError(f"config.augment={config.augment!r}: DRA supplies the policy itself; "
                          "use 'standard' (the standard pipeline after it) or 'none'")
    dra_policy.check_probability_range(c.p_min, c.p_max)
    if c.grid < 1:
        raise ConfigError(f"config.dra.grid={c.grid} must be >= 1")
    if not searches(config):
        if c.destructive_op or c.get("extra_ops", ""):
            raise ConfigError("config.dra.destructive_op / extra_ops need config.dra.policy="
                              "'search' (a published policy has no weight for those ops)")
        dra_policy.load_policy(c.policy, c.policy_name or None)
        return
    if s.layers < 1 or s.epochs < 1:
        raise ConfigError("config.dra.search.layers and .epochs must be >= 1")
    op_names(config)
    if not 0 < s.fraction <= 1:
        raise ConfigError(f"config.dra.search.fraction={s.fraction} must be in (0, 1]")
    half = int(round(s.fraction * sources.num_examples(config.dataset, "train"))) // 2
    if half < s.batch_size:
        raise ConfigError(f"config.dra.search.fraction={s.fraction} gives halves of {half} "
                          f"examples, fewer than search.batch_size={s.batch_size}")
    from gar_jax.mesh import check_batch_size
    check_batch_size("dra.search.batch_size", s.batch_size, jax.device_count())
    if not (s.learning_rate > 0 and s.policy_learning_rate > 0 and s.tau > 0):
        raise ConfigError("config.dra.search needs learning_rate, policy_learning_rate, tau > 0")
    if s.kl_weight < 0 or s.weight_decay < 0 or s.policy_weight_decay < 0 or s.grad_clip_norm < 0:
        raise ConfigError("config.dra.search: kl_weight, weight decays and grad_clip_norm "
                          "must be >= 0")
    if not (0 <= s.policy_b1 < 1 and 0 <= s.policy_b2 < 1 and 0 <= s.dropout_rate < 1):
        raise ConfigError("config.dra.search: policy_b1, policy_b2, dropout_rate in [0, 1)")


# ------------------------------------------------------------------------------------ search


def search_config(config) -> ml_collections.ConfigDict:
    """The search phase as a supervised config: its batch, epochs and SGD settings."""
    s = config.dra.search
    c = copy.deepcopy(config)
    with c.unlocked():
        c.experiment = "dra_search"
        c.batch_size = s.batch_size
        c.num_epochs = s.epochs
        c.learning_rate = s.learning_rate
        c.warmup_epochs = 0.0
        c.weight_decay = s.weight_decay
        c.grad_clip_norm = s.grad_clip_norm
        c.model.dropout_rate = s.dropout_rate
        c.eval_every_epochs = 1
    return c


def search_split(config) -> tuple:
    """(weight half, policy half, test): `search.fraction` of the training set drawn with the
    run's seed, cut in two halves; host dicts {"image", "label"}."""
    data_dir = config.data_dir or None
    train = sources.load(config.dataset, "train", data_dir=data_dir)
    n = len(train["label"])
    count = int(round(config.dra.search.fraction * n)) // 2 * 2
    order = np.random.default_rng(config.seed).permutation(n)[:count]
    halves = order[:count // 2], order[count // 2:]
    pick = (lambda idx: {k: v[np.sort(idx)] for k, v in train.items()})
    return pick(halves[0]), pick(halves[1]), sources.load(config.dataset, "test",
                                                          data_dir=data_dir)


def policy_optimizer(config) -> optax.GradientTransformation:
    s = config.dra.search
    return optax.adamw(s.policy_learning_rate, b1=s.policy_b1, b2=s.policy_b2,
                       weight_decay=s.policy_weight_decay)


def init_state(state: TrainState, config) -> DRAState:
    """`DRAState` from a fresh `TrainState`: the paper's initial policy (replicated)."""
    policy = dra_policy.init_params(len(op_names(config)), config.dra.search.layers)
    extra = dict(policy=policy, policy_opt_state=policy_optimizer(config).init(policy))
    sharding = jax.tree.leaves(state.params)[0].sharding
    extra = jax.tree.map(lambda x: jax.device_put(np.array(x), sharding), extra)
    return DRAState(**vars(state), **extra)


def _fill(config):
    mean, _ = stats.mean_std(config.dataset)
    return tuple(int(round(255 * m)) for m in mean) if config.standard.fill_mean else 0


def make_search_pipeline(config, names: tuple, *, crop_flip: bool):
    """``fn(policy, key, images uint8 [B,H,W,C]) -> (clean uint8, augmented float32, aux)``: as
    the authors' search (search_CIFAR.py, datasets/split.py, models/preact_resnet.py): pad-crop +
    flip only when `crop_flip` (the weight half; the policy half gets none), then the relaxed DRA
    layers, then Cutout (config.standard); ``clean`` is the input of the DRA layers."""
    # Read the settings now: the step is traced later, and the config may have changed since.
    pad, cutout, fill = config.standard.pad, config.standard.cutout, _fill(config)
    flip = config.standard.get("flip", True)
    kwargs = dict(names=names, tau=config.dra.search.tau, p_min=config.dra.p_min,
                  p_max=config.dra.p_max)

    def pipeline(policy, key, images):
        k_crop, k_dra, k_cut = jax.random.split(key, 3)
        clean = images
        if crop_flip:
            clean = policies.standard(k_crop, images, pad=pad, cutout=0, flip=flip)
        aug, aux = dra_policy.search_augment(policy, k_dra, clean, **kwargs)
        if cutout:
            b, h, w, _ = aug.shape
            k_cy, k_cx = jax.random.split(k_cut)
            planar = jnp.moveaxis(aug, -1, 1)
            cy = jax.random.randint(k_cy, (b,), 0, h)
            cx = jax.random.randint(k_cx, (b,), 0, w)
            aug = jnp.moveaxis(color.cutout(planar, jnp.full((b,), cutout), cy, cx, fill),
                               1, -1)
        return clean, aug, aux

    return pipeline


def make_replay_augment(config, policy: str, name: Optional[str]):
    """The final training's augmentation in the authors' order (train_phase/train_CIFAR.py):
    pad-crop + flip, the DRA policy replayed (`dra.replay_policy`), then Cutout."""
    mean, _ = stats.mean_std(config.dataset)
    fill = tuple(int(round(255 * m)) for m in mean) if config.standard.fill_mean else 0
    replay = dra_policy.replay_policy(policy, name=name, p_min=config.dra.p_min,
                               p_max=config.dra.p_max, grid=config.dra.grid)
    pad, cutout = config.standard.pad, config.standard.cutout
    flip = config.standard.get("flip", True)

    def augment(key, images):
        k_crop, k_dra, k_cut = jax.random.split(key, 3)
        images = policies.standard(k_crop, images, pad=pad, cutout=0, flip=flip)
        images = replay(k_dra, images)
        return policies.standard(k_cut, images, pad=0, cutout=cutout, fill=fill, flip=False)

    return augment


def make_policy_loss(model, mesh, kl_weight: float):
    """Sharded ``fn(params, batch_stats, clean, aug, labels, key) -> (loss, (ce, kl))``: the
    search loss CE(aug) + kl_weight KL(softmax(clean) || softmax(aug)), means over the global
    batch, the model in train mode (batch statistics per device, updates dropped)."""
    def local(params, batch_stats, clean, aug, labels, key):
        key = jax.random.fold_in(key, jax.lax.axis_index(DATA_AXIS))
        variables = {"params": params, "batch_stats": batch_stats} if batch_stats else {
            "params": params}
        mutable = ["batch_stats"] if batch_stats else []
        k_clean, k_aug = jax.random.split(key)
        logits_clean, _ = model.apply(variables, clean, train=True, rngs={"dropout": k_clean},
                                      mutable=mutable)
        logits_aug, _ = model.apply(variables, aug, train=True, rngs={"dropout": k_aug},
                                    mutable=mutable)
        log_p_clean = jax.nn.log_softmax(logits_clean)
        kl = jnp.sum(jnp.exp(log_p_clean) * (log_p_clean - jax.nn.log_softmax(logits_aug)), -1)
        ce = steps.cross_entropy(logits_aug, labels)
        mean = (lambda v: jax.lax.pmean(jnp.mean(v), DATA_AXIS))
        return mean(ce + kl_weight * kl), (mean(ce), mean(kl))

    return jax.shard_map(local, mesh=mesh, out_specs=(P(), (P(), P())),
                         in_specs=(P(), P(), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS), P()))


def make_search_step(config, model, tx, mesh, *, schedule=None, jit: bool = True):
    """``step(state, batch_weights, batch_policy) -> (state, metrics)`` (module docstring), key
    ``step_key(state.rng, state.step)``; `state` a `DRAState` (donated when jitted).

    Metrics: loss / accuracy of the weight update, policy_loss / policy_ce / policy_kl,
    learning_rate, and p_op/<op> (softmax(W) averaged over the layers).
    """
    names = op_names(config)
    policy_pipeline = make_search_pipeline(config, names, crop_flip=False)
    weight_pipeline = make_search_pipeline(config, names, crop_flip=True)
    policy_loss_fn = make_policy_loss(model, mesh, config.dra.search.kl_weight)
    grad_fn = steps.make_grad_fn(model, mesh)
    policy_tx = policy_optimizer(config)

    def step(state, batch_weights, batch_policy):
        k_policy, k_loss, k_weights, k_drop = jax.random.split(
            steps.step_key(state.rng, state.step), 4)

        def policy_loss(policy):
            clean, aug, aux = policy_pipeline(policy, k_policy, batch_policy["image"])
            loss, parts = policy_loss_fn(state.params, state.batch_stats, clean, aug,
                                         batch_policy["label"], k_loss)
            return loss, (parts, aux)

        (p_loss, ((ce, kl), aux)), grads = jax.value_and_grad(policy_loss, has_aux=True)(
            state.policy)
        updates, policy_opt_state = policy_tx.update(grads, state.policy_opt_state, state.policy)
        policy = dra_policy.clip_params(optax.apply_updates(state.policy, updates))
        _, images, _ = weight_pipeline(jax.lax.stop_gradient(policy), k_weights,
                                       batch_weights["image"])
        g, batch_stats, metrics = grad_fn(state.params, state.batch_stats,
                                          jax.lax.stop_gradient(images), batch_weights["label"],
                                          k_drop)
        new = steps.apply_gradients(state, g, batch_stats, tx).replace(
            policy=policy, policy_opt_state=policy_opt_state)
        metrics.update(policy_loss=p_loss, policy_ce=ce, policy_kl=kl)
        if schedule is not None:
            metrics["learning_rate"] = schedule(state.step)
        p_op = jnp.mean(jax.nn.softmax(policy["W"], axis=-1), axis=0)
        metrics.update({f"p_op/{dra_policy.OUR_NAME[n]}": p_op[j] for j, n in enumerate(names)})
        return new, metrics

    return steps.jit_step(step, mesh) if jit else step


def run_search(config, workdir: str) -> dict:
    """Runs (or resumes) the search in `workdir` through the engine; returns its results."""
    sconfig = search_config(config)
    weights, policy_half, test = search_split(config)
    setup = engine.build(sconfig, train=weights, test=test)
    policy_data = DeviceDataset.create(policy_half, setup.mesh, batch_size=sconfig.batch_size,
                                       seed=config.seed + 1)
    step_fn = make_search_step(config, setup.model, setup.tx, setup.mesh,
                               schedule=setup.schedule)

    def advance(state, step):
        return step_fn(state, setup.train_data.batch(step), policy_data.batch(step))

    os.makedirs(workdir, exist_ok=True)
    extra = {"weight_examples": len(weights["label"]),
             "policy_examples": len(policy_half["label"]),
             "steps_per_epoch": setup.steps_per_epoch, "estimator": "per image (authors')"}
    return engine.train(sconfig, workdir, setup, engine.Method(
        state=init_state(setup.state, config), advance=advance, report=recorder(config, extra)))


# ------------------------------------------------------------------------------------ training


def train_config(config, policy: str, name: Optional[str]) -> ml_collections.ConfigDict:
    """The final training: the supervised config with augment = the DRA replay of `policy`."""
    c = copy.deepcopy(config)
    with c.unlocked():
        c.experiment = "supervised"
        if config.augment == "none":  # the DRA policy alone, no standard pipeline
            raise ConfigError("config.augment='none' is not supported by the DRA final training;"
                              " use 'standard'")
        c.augment = "dra"
        kwargs = {"policy": policy, "p_min": config.dra.p_min, "p_max": config.dra.p_max,
                  "grid": config.dra.grid}
        if name:
            kwargs["name"] = name
        c.augment_kwargs = ml_collections.ConfigDict(kwargs)
    return c


def learned_policy_report(params: dict, names: tuple, p_min: float, p_max: float,
                          source: str) -> dict:
    """The uniform ``learned_policy`` entry of results.json for a DRA policy."""
    probability = dra_policy.op_probability(params, p_min, p_max)
    w = np.asarray(params["W"], np.float64)
    soft = np.exp(w - w.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    return {
        "op_probability": {dra_policy.OUR_NAME[n]: float(p) for n, p in zip(names, probability)},
        "destructive_op": "sample_pairing" if dra_policy.DESTRUCTIVE in names else None,
        "policy": source,
        "op_softmax_per_layer": soft.round(6).tolist(),
        "magnitude_mean": np.asarray(params["M_MEAN"]).round(6).tolist(),
        "magnitude_std": np.asarray(params["M_STD"]).round(6).tolist(),
        "apply_probability": [p_min, p_max],
    }


def run(config, workdir: str) -> dict:
    """Search (unless a policy is given), then training with the policy; see module doc."""
    validate(config)
    c = config.dra
    search = {}
    if searches(config):
        search_dir = os.path.join(workdir, "search")
        # An engine run: a finished search resumes at its last step and only evaluates.
        done = run_search(config, search_dir)
        search = {"dra": {"search_test_accuracy": done["test_accuracy"],
                          "search_wall_time_s": done["wall_time_s"],
                          "search_steps": done["steps"], **done.get("dra_search", {})}}
        policy, name = os.path.abspath(os.path.join(search_dir, "policy.json")), None
    else:
        policy, name = c.policy, c.policy_name or None
    params, names = dra_policy.load_policy(policy, name)
    tconfig = train_config(config, policy, name)
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        engine.write_text(os.path.join(workdir, report.POLICY_FILE),
                          dra_policy.to_json(params, names, name=name or "policy",
                                             source=str(policy)))
    engine.validate(tconfig)
    setup = engine.build(tconfig)
    # The authors' order, crop/flip -> DRA -> Cutout, in place of the engine's policy-then-
    # standard composition.
    setup = dataclasses.replace(setup, augment=make_replay_augment(config, policy, name))
    used = {"learned_policy": learned_policy_report(params, names, c.p_min, c.p_max,
                                                    str(policy)), **search}
    # The training is the run in `workdir` itself: results.json is its (with the DRA config).
    return engine.train(config, workdir, setup, engine.Method(
        state=setup.state, advance=supervised.advance_fn(setup), report=lambda *_: used,
        describe=engine.describe(tconfig)))


# ------------------------------------------------------------------- what was learned, shown


def recorder(config, extra: dict) -> report.PolicyRecorder:
    """The search's ``report`` (`gar_jax.report.PolicyRecorder`): per epoch the clipped W,
    M_MEAN, M_STD in policy_history.jsonl, ``policy.json`` (`dra.to_json`), the figures
    policy_weights.png and policy_magnitudes.png, and results.json's ``learned_policy`` and
    ``dra_search`` (`extra`)."""
    names, p_min, p_max = op_names(config), config.dra.p_min, config.dra.p_max

    def plot(history, workdir):
        from gar_jax import plots  # matplotlib: imported only when plotting
        plots.dra_policy_figures(history, names, workdir)

    return report.PolicyRecorder(
        policy_of=lambda state: dra_policy.clip_params(state.policy),
        record=lambda params: {k: np.asarray(v).tolist() for k, v in params.items()},
        policy_json=lambda params, epoch: dra_policy.to_json(
            params, names, source=f"gar_jax DRA search, epoch {epoch}"),
        plot=plot,
        results=lambda params, record: {
            "learned_policy": learned_policy_report(params, names, p_min, p_max, "search"),
            "dra_search": extra})
