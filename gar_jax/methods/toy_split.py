"""The toy split experiment (GAR paper §6, Table 1, Figure 2; docs/algorithms.md §3).

A train set is cut into S splits; split 0 gets random labels. Every example of a batch comes from
a split drawn from p_φ (inverted softmax or softmax of S logits φ), and φ is learned online by
REINFORCE with the Gradient-Alignment Reward (GAR) or the Next-Step-Loss Reward (NSLR). A good
method stops sampling the noisy split.

One training step t (per seed; pure jnp, `_step`):
1. draw batch t from p_φ (the split of each example, then an example within its split);
2. G = ∇L_t(θ_t), the mean train-mode loss gradient; SGD with Nesterov momentum and PyTorch-style
   weight decay (added to the gradient before momentum) gives θ_{t+1};
3. for t > 0, reward batch t−1 with this G (the gradient at the updated parameters on the next
   batch): GAR_n = ⟨∇ℓ_n(θ_{t−1}), G⟩ with batch t−1's BatchNorm statistics at θ_{t−1} frozen
   (`batchnorm.frozen_bn_loss_fn`, forward-mode `gar.alignment`), or NSLR = −L_t; normalize the
   rewards (GAR per step, NSLR across steps); REINFORCE loss on the log-probabilities of batch
   t−1's sampled splits under the φ that sampled them; Adam (aggregated over ``meta_every``
   steps by `reinforce.meta_optimizer`) updates φ.

Seeds are cheap: the whole per-seed state (parameters, φ, optimizer states, keys, even each
seed's own splits and random labels) is vmapped over seeds and one epoch is a jitted
``lax.scan`` over steps, compiled once per (net, method) (`_Trainer`).

The run (`run`) is one engine run (`gar_jax.train.engine`): its state is a `ToyRun` holding
every (net, method)'s `ToyState` (all seeds, plus the per-step history of split probabilities),
and one engine call is one epoch of each; checkpoints, resume, SIGTERM, metrics and results.json
are the engine's. Outputs in ``workdir`` (besides the engine's checkpoints/, metrics.jsonl,
tensorboard/):
- ``results.json``: for a single net, the contract form ``{"gar": {"split_probs":
  [seeds][steps][splits], "auc_noisy": [seeds], "auc_clean": [seeds], "test_acc": [seeds],
  "train_loss": [seeds][steps]}, "nslr": {...}, "net": name, ...}``; for several nets
  ``{net: {"gar": ..., "nslr": ...}, ...}``; with the engine's fields and ``config`` either way
  (`load_results` reads both forms);
- ``table.md``: the Table-1-style AUC table (also printed); ``split_probs.png``: Figure 2.

AUC (Table 1): the area under a split's probability curve over training divided by the number of
steps, i.e. the mean probability over steps (uniform sampling gives 1/S). ``auc_noisy`` is split
0's, ``auc_clean`` the mean over the other splits; both per seed.
"""
import hashlib
import json
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gar_jax import batchnorm
from gar_jax import gar
from gar_jax import reinforce
from gar_jax.data import sources
from gar_jax.data import splits
from gar_jax.data import stats
from gar_jax.errors import ConfigError
from gar_jax.models import toy
from gar_jax.models import variables
from gar_jax.train import engine
from gar_jax.train import optim

METHODS = ("gar", "nslr")
REWARD_NORMS = ("auto", "batch", "running")
_FIELDS = ("experiment", "dataset", "data_dir", "net", "seeds", "seed", "num_splits",
           "distribution", "batch_size", "num_epochs", "learning_rate", "momentum",
           "weight_decay", "ola", "xla_opt_level")
# The policy learner's fields: OLA's names (configs/cifar10_ola.py's ``ola`` section) for the
# same knobs; the policy here is over splits.
_OLA_FIELDS = ("reward", "gar_method", "learning_rate", "b1", "clip", "meta_every",
               "reward_normalization", "nslr_decay")


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
def _names(value: str) -> list:
    return [v.strip() for v in str(value).split(",") if v.strip()]


def nets_of(config) -> list:
    """The nets of ``config.net`` ("fc" or a comma list like "fc,fcbn,cnnbn")."""
    return _names(config.net)


def methods_of(config) -> list:
    """The rewards of ``config.ola.reward`` ("gar,nslr")."""
    return _names(config.ola.reward)


def split_size(config, n_train=None) -> int:
    """Examples per split: the train set's size (default: the dataset's) // num_splits."""
    if n_train is None:
        n_train = sources.num_examples(config.dataset, "train")
    return n_train // config.num_splits


def steps_per_epoch(config, n_train=None) -> int:
    """Steps per epoch: the examples in all splits // batch_size."""
    return config.num_splits * split_size(config, n_train) // config.batch_size


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_list(field: str, names: list, allowed) -> None:
    _check(bool(names), f"config.{field} is empty; use a comma list of {', '.join(allowed)}")
    for name in names:
        _check(name in allowed,
               f"config.{field}: unknown {field.rpartition('.')[2]} {name!r}; choose from "
               f"{', '.join(allowed)}")
    _check(len(set(names)) == len(names), f"config.{field}={','.join(names)!r} repeats a name")


def validate(config) -> None:
    """Raises ConfigError (one line, saying what to change) for a config `run` cannot run."""
    missing = [f for f in _FIELDS if f not in config]
    missing += [f"ola.{f}" for f in _OLA_FIELDS if "ola" in config and f not in config.ola]
    extra = [f for f in config if f not in _FIELDS and f not in engine.LOOP_DEFAULTS]
    extra += [f"ola.{f}" for f in (config.ola if "ola" in config else ())
              if f not in _OLA_FIELDS]
    _check(not missing, f"toy_split config lacks fields {missing}; start from configs/toy_split.py")
    _check(not extra, f"toy_split config has unknown fields {extra}; known: {', '.join(_FIELDS)}"
                      f" (ola: {', '.join(_OLA_FIELDS)}) and the engine's "
                      f"{', '.join(engine.LOOP_DEFAULTS)}")
    o = config.ola
    _check(config.dataset in sources.names(),
           f"config.dataset: unknown dataset {config.dataset!r}; choose from "
           f"{', '.join(sources.names())}")
    _check_list("net", nets_of(config), tuple(toy.NETS))
    _check_list("ola.reward", methods_of(config), METHODS)
    _check(config.distribution in reinforce.SPLIT_DISTRIBUTIONS,
           f"config.distribution: unknown distribution {config.distribution!r}; choose from "
           f"{', '.join(reinforce.SPLIT_DISTRIBUTIONS)}")
    _check(o.reward_normalization in REWARD_NORMS,
           f"config.ola.reward_normalization={o.reward_normalization!r}; choose from "
           f"{', '.join(REWARD_NORMS)}")
    _check(o.gar_method in gar.ALIGNMENT_METHODS,
           f"config.ola.gar_method={o.gar_method!r}; choose from "
           f"{', '.join(gar.ALIGNMENT_METHODS)}")
    for field, value in (("seeds", config.seeds), ("num_epochs", config.num_epochs),
                         ("ola.meta_every", o.meta_every)):
        _check(isinstance(value, int) and value >= 1,
               f"config.{field}={value!r} must be a positive integer")
    n_train = sources.num_examples(config.dataset, "train")
    _check(isinstance(config.num_splits, int) and 2 <= config.num_splits <= n_train,
           f"config.num_splits={config.num_splits!r} must be an integer in 2..{n_train}")
    usable = config.num_splits * split_size(config)
    _check(isinstance(config.batch_size, int) and 1 <= config.batch_size <= usable,
           f"config.batch_size={config.batch_size!r} must be an integer in 1..{usable} (the "
           f"{config.num_splits} splits of the {config.dataset} train set hold {usable} examples; "
           f"an epoch needs at least one step)")
    for field, value in (("learning_rate", config.learning_rate),
                         ("ola.learning_rate", o.learning_rate)):
        _check(value > 0, f"config.{field}={value!r} must be > 0")
    _check(0 <= config.momentum < 1, f"config.momentum={config.momentum!r} must be in [0, 1)")
    _check(0 <= o.b1 < 1, f"config.ola.b1={o.b1!r} must be in [0, 1)")
    _check(config.weight_decay >= 0, f"config.weight_decay={config.weight_decay!r} must be >= 0")
    _check(o.clip >= 0, f"config.ola.clip={o.clip!r} must be >= 0 (0: off)")
    _check(isinstance(config.xla_opt_level, int) and -1 <= config.xla_opt_level <= 3,
           f"config.xla_opt_level={config.xla_opt_level!r} must be -1 (XLA's default) or 0..3")
    _check(0 <= o.nslr_decay < 1, f"config.ola.nslr_decay={o.nslr_decay!r} must be in [0, 1)")
    engine.validate_loop(config)


def _uses_running_norm(config, method: str) -> bool:
    # NSLR gives one reward per step: per-batch normalization would be 0/0 (exactly 0 here).
    if config.ola.reward_normalization == "auto":
        return method == "nslr"
    return config.ola.reward_normalization == "running"


# --------------------------------------------------------------------------------------------
# Per-seed training (pure functions; vmapped over seeds)
# --------------------------------------------------------------------------------------------
def _normalize(data, images):
    """uint8 [..., C] pixels -> float32 (x / 255 - mean) / std with the dataset's statistics."""
    return (images.astype(jnp.float32) / 255.0 - data["mean"]) / data["std"]


def _example_loss(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


@flax.struct.dataclass
class ToyState:
    """The whole run of one (net, method), every seed at once; checkpointed by the engine.

    step: int32 [], steps done (the same for every seed); seeds: per-seed state (parameters,
    φ, optimizer states, keys, batch t-1), leading axis S; seed_data: each seed's split members
    and (partly random) labels; history: per step and seed, ``split_probs`` [T, S, splits],
    ``train_loss``, ``noisy_weight``, ``finite`` [T, S] (T = total steps; filled as it runs).
    """
    step: jax.Array
    seeds: Any
    seed_data: Any
    history: Any


class _Trainer:
    """The jitted pieces of one (net, method) experiment, shared by all its seeds."""

    def __init__(self, config, net: str, method: str, image_shape, num_classes: int,
                 n_train: int):
        self.config = config
        self.method = method
        self.model = toy.create(net, num_classes)
        self.dist = reinforce.split_distribution(config.distribution)
        self.tx = optim.pytorch_sgd(config.learning_rate, momentum=config.momentum,
                                    nesterov=True, weight_decay=config.weight_decay)
        self.meta_tx = reinforce.meta_optimizer(config.ola.learning_rate, b1=config.ola.b1,
                                                clip=config.ola.clip or None,
                                                every_k=config.ola.meta_every)
        self.running = _uses_running_norm(config, method)
        self.normalizer = reinforce.RunningNormalizer(decay=config.ola.nslr_decay)
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.spe = steps_per_epoch(config, n_train)
        # XLA's full backend optimizations triple the compile time of these small programs; on
        # the digits nets that costs more than they save (see config.xla_opt_level).
        options = (None if config.xla_opt_level < 0
                   else {"xla_backend_optimization_level": config.xla_opt_level})
        self.init = jax.jit(self._initial_state, static_argnums=2, compiler_options=options)
        self.epoch = jax.jit(self._epoch, donate_argnums=0, compiler_options=options)
        self.test = jax.jit(self._test, compiler_options=options)

    # -- data --------------------------------------------------------------------------------
    def _batch(self, data, labels, indices):
        return {"image": _normalize(data, data["image"][indices]), "label": labels[indices]}

    # -- init --------------------------------------------------------------------------------
    def _init_seed(self, key, train_labels):
        """State of one seed: ``key`` -> (state, seed_data); train_labels int32 [N]."""
        init_key, split_key, train_key = jax.random.split(key, 3)
        variables = self.model.init(init_key, jnp.zeros((1,) + self.image_shape), train=False)
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})
        members, labels = splits.make_splits(split_key, train_labels,
                                             num_splits=self.config.num_splits,
                                             num_classes=self.num_classes)
        phi = jnp.zeros((self.config.num_splits,), jnp.float32)
        b = self.config.batch_size
        state = {
            "params": params, "batch_stats": batch_stats, "opt_state": self.tx.init(params),
            "phi": phi, "meta_opt_state": self.meta_tx.init(phi),
            "reward_stats": self.normalizer.init(), "key": train_key,
            # Batch t-1, kept until step t's gradient exists: θ_{t-1}, its examples, its splits
            # and the φ that sampled them.
            "prev_params": params, "prev_indices": jnp.zeros((b,), jnp.int32),
            "prev_choices": jnp.zeros((b,), jnp.int32), "prev_phi": phi,
        }
        return state, {"labels": labels, "members": members}

    # -- one step ----------------------------------------------------------------------------
    def _rewards(self, state, data, labels, grads, loss):
        """Raw rewards float[B] for batch t-1, given G = grads and L_t = loss."""
        b = self.config.batch_size
        if self.method == "nslr":
            return gar.nslr_reward(loss, b)
        prev_batch = self._batch(data, labels, state["prev_indices"])
        prev_variables = variables(state["prev_params"], state["batch_stats"])
        per_example = batchnorm.frozen_bn_loss_fn(self.model, prev_variables, prev_batch,
                                                  _example_loss, train=True)
        return gar.alignment(per_example, state["prev_params"], prev_batch, grads,
                             method=self.config.ola.gar_method)

    def _meta_update(self, state, data, labels, grads, loss):
        """REINFORCE on batch t-1's split choices; returns (state, mean weight of noisy picks)."""
        rewards = self._rewards(state, data, labels, grads, loss)
        choices = state["prev_choices"]
        # Batch t-1 was sampled with prev_phi: the score function is taken there.
        phi, meta_opt_state, stats_, weights = reinforce.reward_update(
            self.meta_tx, state["phi"], state["meta_opt_state"], state["reward_stats"],
            lambda p: self.dist.log_probs(p)[choices], rewards,
            normalizer=self.normalizer if self.running else None, at=state["prev_phi"])
        noisy = choices == splits.NOISY_SPLIT
        noisy_weight = jnp.sum(jnp.where(noisy, weights, 0.0)) / jnp.maximum(noisy.sum(), 1)
        state = {**state, "phi": phi, "meta_opt_state": meta_opt_state, "reward_stats": stats_}
        return state, noisy_weight, jnp.all(jnp.isfinite(rewards))

    def _step(self, state, seed_data, data, t):
        """One training step of one seed at step t (unbatched int32)."""
        labels, members = seed_data["labels"], seed_data["members"]
        probs = self.dist(state["phi"])
        key = jax.random.fold_in(state["key"], t)
        indices, choices = splits.sample(key, self.dist.log_probs(state["phi"]), members,
                                         self.config.batch_size)
        batch = self._batch(data, labels, indices)

        def loss_fn(params):
            logits, updated = self.model.apply(
                variables(params, state["batch_stats"]), batch["image"], train=True,
                mutable=["batch_stats"])
            return jnp.mean(_example_loss(logits, batch["label"])), updated

        (loss, updated), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        new = {**state, "params": optax.apply_updates(state["params"], updates),
               "opt_state": opt_state, "batch_stats": updated.get("batch_stats", {})}
        # The meta step needs the previous batch; t is the same for all seeds, so this cond is
        # a real branch (not a select) even under vmap.
        new, noisy_weight, finite = jax.lax.cond(
            t > 0, lambda s: self._meta_update(s, data, labels, grads, loss),
            lambda s: (s, jnp.float32(0.0), jnp.bool_(True)), new)
        new = {**new, "prev_params": state["params"], "prev_indices": indices,
               "prev_choices": choices, "prev_phi": state["phi"]}
        metrics = {"split_probs": probs, "train_loss": loss, "noisy_weight": noisy_weight,
                   "finite": finite & jnp.isfinite(loss)}
        return new, metrics

    def _epoch(self, state: "ToyState", data):
        """One epoch for all seeds: a scan over steps of the step vmapped over seeds, written
        into the state's history. Returns (state, scalar metrics for the engine)."""
        step = jax.vmap(self._step, in_axes=(0, 0, None, None))
        ts = state.step + jnp.arange(self.spe, dtype=jnp.int32)
        seeds, m = jax.lax.scan(lambda s, t: step(s, state.seed_data, data, t), state.seeds, ts)
        history = {k: jax.lax.dynamic_update_slice_in_dim(state.history[k], m[k], state.step, 0)
                   for k in state.history}
        finite = jnp.all(m["finite"])
        metrics = {"loss": jnp.where(finite, jnp.mean(m["train_loss"]), jnp.nan),
                   "p_noisy": jnp.mean(m["split_probs"][-1, :, splits.NOISY_SPLIT]),
                   "noisy_weight": jnp.mean(m["noisy_weight"])}
        return state.replace(step=state.step + self.spe, seeds=seeds, history=history), metrics

    def _initial_state(self, keys, train_labels, total_steps: int):
        seeds, seed_data = jax.vmap(self._init_seed, in_axes=(0, None))(keys, train_labels)
        n = keys.shape[0]
        history = {"split_probs": jnp.zeros((total_steps, n, self.config.num_splits)),
                   "train_loss": jnp.zeros((total_steps, n)),
                   "noisy_weight": jnp.zeros((total_steps, n)),
                   "finite": jnp.ones((total_steps, n), bool)}
        return ToyState(step=jnp.zeros((), jnp.int32), seeds=seeds, seed_data=seed_data,
                        history=history)

    def _test(self, state: "ToyState", data):
        """Per-seed test accuracy and mean loss (BatchNorm running averages)."""
        def one(seed):
            logits = self.model.apply(variables(seed["params"], seed["batch_stats"]),
                                      _normalize(data, data["image"]), train=False)
            return (jnp.mean(jnp.argmax(logits, -1) == data["label"]),
                    jnp.mean(_example_loss(logits, data["label"])))
        return jax.vmap(one)(state.seeds)


_TRAINERS = {}


def _trainer(config, net: str, method: str, n_train: int) -> _Trainer:
    """The `_Trainer` of this (config, net, method), built once per process, so that repeated
    runs (a notebook, tests) reuse its compiled functions."""
    # The compiled step does not depend on how many seeds or epochs run, or which seeds.
    cache_key = (_fingerprint(config, net, method), n_train)
    if cache_key not in _TRAINERS:
        num_classes, image_shape = sources.info(config.dataset)
        _TRAINERS[cache_key] = _Trainer(config, net, method, image_shape, num_classes, n_train)
    return _TRAINERS[cache_key]


def seed_keys(config, seed_ids) -> jax.Array:
    """One PRNG key per seed id: fold_in(key(config.seed), i); seed i is the same run whichever
    other seeds it is vmapped with."""
    base = jax.random.key(config.seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(seed_ids, jnp.uint32))


def device_data(config, data: dict) -> dict:
    """A loaded split on the default device, with the dataset's normalization constants."""
    mean, std = stats.mean_std(config.dataset)
    return {"image": jnp.asarray(data["image"]), "label": jnp.asarray(data["label"], jnp.int32),
            "mean": jnp.asarray(mean, jnp.float32), "std": jnp.asarray(std, jnp.float32)}


def _initial_state(config, trainer: _Trainer, train_dev: dict, seed_ids) -> ToyState:
    return trainer.init(seed_keys(config, seed_ids), train_dev["label"],
                        config.num_epochs * trainer.spe)


def _check_finite(state: ToyState, net: str, method: str, seed_ids) -> None:
    finite = np.asarray(state.history["finite"][:int(state.step)])
    if not finite.all():
        step, seed = np.argwhere(~finite)[0]
        raise FloatingPointError(f"toy_split {net}/{method}: non-finite loss or reward at step "
                                 f"{step}, seed {seed_ids[seed]}")


def _history(state: ToyState) -> dict:
    """numpy [seeds, steps done, ...] arrays of the state's history."""
    done = int(state.step)
    return {k: np.swapaxes(np.asarray(v[:done]), 0, 1) for k, v in state.history.items()}


def train_seeds(config, net: str, method: str, train, test, seed_ids) -> dict:
    """Trains one (net, method) for several seeds at once, in memory (no workdir).

    Args:
      config: a validated toy_split config.
      net, method: e.g. "fcbn", "gar".
      train, test: ``{"image": uint8 [N,H,W,C], "label": int32 [N]}`` (`sources.load`).
      seed_ids: ints; seed i's run depends only on (config, i).

    Returns:
      numpy arrays: ``split_probs`` float32 [seeds, steps, splits], ``train_loss`` [seeds, steps],
      ``noisy_weight`` [seeds, steps] (mean normalized reward of noisy-split picks of the
      previous batch; 0 where it had none), ``test_acc`` [seeds].

    Raises:
      FloatingPointError: a non-finite loss or reward, naming the step and seed.
    """
    trainer = _trainer(config, net, method, len(train["label"]))
    train_dev, test_dev = device_data(config, train), device_data(config, test)
    state = _initial_state(config, trainer, train_dev, seed_ids)
    for _ in range(config.num_epochs):
        state, _ = trainer.epoch(state, train_dev)
        _check_finite(state, net, method, seed_ids)
    out = _history(state)
    out["test_acc"] = np.asarray(trainer.test(state, test_dev)[0])
    return out


# --------------------------------------------------------------------------------------------
# AUC table
# --------------------------------------------------------------------------------------------
def auc(split_probs) -> tuple:
    """(auc_noisy [seeds], auc_clean [seeds]) from split_probs [seeds, steps, splits].

    The AUC of a split is the mean of its probability over the training steps (the area under
    the curve divided by the number of steps); auc_clean averages the splits other than 0.
    """
    p = np.asarray(split_probs, np.float64)
    per_split = p.mean(axis=1)
    noisy = per_split[:, splits.NOISY_SPLIT]
    clean = np.delete(per_split, splits.NOISY_SPLIT, axis=1).mean(axis=1)
    return noisy, clean


def _pm(values, scale=1.0, digits=3) -> str:
    v = np.asarray(values, np.float64) * scale
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def auc_table(results: dict) -> str:
    """Markdown Table 1 from ``{net: {method: {"auc_noisy", "auc_clean", "test_acc"}}}``."""
    lines = ["| net | method | seeds | AUC noisy split | AUC other splits (mean) | test acc. (%) |",
             "|---|---|---|---|---|---|"]
    for net, by_method in results.items():
        for method, r in by_method.items():
            lines.append(f"| {net} | {method} | {len(r['auc_noisy'])} | {_pm(r['auc_noisy'])} | "
                         f"{_pm(r['auc_clean'])} | {_pm(r['test_acc'], 100, 1)} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------
def _fingerprint(config, net: str, method: str) -> str:
    """A hash of the config fields that (net, method)'s compiled trainer depends on (not the
    number of seeds or epochs, nor which seeds, nor the other rewards)."""
    relevant = {k: config[k] for k in _FIELDS
                if k not in ("net", "ola", "seeds", "num_epochs", "seed")}
    relevant["ola"] = {k: v for k, v in config.ola.to_dict().items() if k != "reward"}
    text = json.dumps({"net": net, "method": method, **relevant}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _summarize(out: dict) -> dict:
    noisy, clean = auc(out["split_probs"])
    return {"split_probs": np.round(out["split_probs"], 6).tolist(),
            "auc_noisy": noisy.tolist(), "auc_clean": clean.tolist(),
            "test_acc": np.asarray(out["test_acc"]).tolist(),
            "train_loss": np.round(out["train_loss"], 5).tolist()}


def results_json(results: dict) -> dict:
    """results.json's toy split fields from ``{net: {method: summary}}`` (see the module doc):
    the contract form ``{method: ..., "net": net}`` for one net, else ``{net: {method: ...}}``
    (the engine adds its own fields and ``config``)."""
    if len(results) == 1:
        (net, by_method), = results.items()
        return {**by_method, "net": net}
    return dict(results)


def load_results(workdir: str) -> dict:
    """``{net: {method: {...}}}`` from ``workdir/results.json`` (either form, see module doc)."""
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    if "net" in results:
        return {results["net"]: {m: v for m, v in results.items() if m in METHODS}}
    return {net: v for net, v in results.items() if net in toy.NETS}


@flax.struct.dataclass
class ToyRun:
    """Every (net, method) of a run: ``runs["<net>_<method>"]`` a `ToyState` (all its seeds);
    they all step together, one epoch per engine call."""
    step: jax.Array
    runs: Any


def method_for(config, train: dict, test: dict) -> engine.Method:
    """Every (net, method) of the config, every seed, as one engine `Method`: one call = one
    epoch of each (net, method) (a jitted scan over steps of the step vmapped over seeds);
    evaluation = per-seed test accuracy; report = Table 1's numbers, and at the end the table
    and Figure 2."""
    pairs = [(net, method) for net in nets_of(config) for method in methods_of(config)]
    n_train = len(train["label"])
    trainers = {f"{n}_{m}": _trainer(config, n, m, n_train) for n, m in pairs}
    train_dev, test_dev = device_data(config, train), device_data(config, test)
    seed_ids = list(range(config.seeds))
    spe = steps_per_epoch(config, n_train)

    def advance(state, step):
        del step  # the state knows its step
        runs, metrics, losses = {}, {}, []
        for name, trainer in trainers.items():
            runs[name], m = trainer.epoch(state.runs[name], train_dev)
            metrics.update({f"{name}/{k}": v for k, v in m.items()})
            losses.append(m["loss"])
        metrics["loss"] = jnp.mean(jnp.stack(losses))  # NaN if any (net, method) diverged
        return ToyRun(step=state.step + spe, runs=runs), metrics

    def evaluate(state):
        tested = {name: [np.asarray(x) for x in trainer.test(state.runs[name], test_dev)]
                  for name, trainer in trainers.items()}
        return {"accuracy": float(np.mean([acc.mean() for acc, _ in tested.values()])),
                "loss": float(np.mean([loss.mean() for _, loss in tested.values()])),
                "count": float(len(test["label"])),
                "per_seed": {name: acc.tolist() for name, (acc, _) in tested.items()}}

    def report(workdir, state, epoch, evaluation):
        results = {net: {} for net in nets_of(config)}
        for net, method in pairs:
            name = f"{net}_{method}"
            _check_finite(state.runs[name], net, method, seed_ids)
            out = _history(state.runs[name])
            out["test_acc"] = np.asarray(evaluation["per_seed"][name])
            results[net][method] = _summarize(out)
        if int(state.step) == config.num_epochs * spe:
            write_table_and_figure(config, results, workdir)
        return results_json(results)

    runs = {name: _initial_state(config, trainer, train_dev, seed_ids)
            for name, trainer in trainers.items()}
    return engine.Method(
        state=ToyRun(step=jnp.zeros((), jnp.int32), runs=runs), advance=advance,
        steps_per_call=spe, evaluate=evaluate, report=report, steps_per_epoch=spe,
        total_steps=config.num_epochs * spe,
        images_per_step=config.batch_size * config.seeds * len(pairs),
        describe={"dataset": config.dataset})


def write_table_and_figure(config, results: dict, workdir: str) -> None:
    """``table.md`` (Table 1, also printed) and ``split_probs.png`` (Figure 2) in `workdir`."""
    table = auc_table(results)
    with open(os.path.join(workdir, "table.md"), "w") as f:
        f.write(table)
    print(table)
    from gar_jax import plots  # matplotlib takes a second to import: only when plotting

    plots.split_probs_figure(
        {net: {m: r["split_probs"] for m, r in by_method.items()}
         for net, by_method in results.items()},
        os.path.join(workdir, "split_probs.png"), noisy_split=splits.NOISY_SPLIT,
        title=f"toy split on {config.dataset}: split probabilities (mean ± std over seeds)")


def run(config, workdir: str) -> dict:
    """Runs every (net, method) of the config for ``config.seeds`` seeds as one engine run in
    `workdir` (see the module doc); returns the dict the engine wrote to results.json."""
    validate(config)
    train = sources.load(config.dataset, "train", data_dir=config.data_dir or None)
    test = sources.load(config.dataset, "test", data_dir=config.data_dir or None)
    return engine.train(config, workdir, None, method_for(config, train, test))
