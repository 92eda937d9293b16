"""Learning a data mixture online (``experiment = "mixture"``): GAR and the baselines.

``python -m gar_jax.main --config=configs/digits_mixture.py --workdir=DIR``. A small net is
trained on K sources (`gar_jax.data.mixture_digits`: clean, random-label, 50%-noise, corrupted,
duplicated and shifted digits); each example's source is drawn from the method's mixture, and the
method adapts that mixture during the run (`gar_jax.mixture` has the update rules):

  gar           REINFORCE on softmax logits with GAR: example n of batch t gets
                ⟨∇ℓ_n(θ_t), ∇L_{t+1}(θ_{t+1})⟩, normalized over the batch (GAR paper §3, §4.1);
  gar_target    the same with the target set's mean-loss gradient at θ_{t+1} as direction;
  nslr          REINFORCE with the paper's Next-Step-Loss Reward −L_{t+1}, normalized across steps;
  odm           EXP3 on per-source training loss (Albalak et al. 2023; `mixture.odm_update`),
                updated after every step;
  dga           exponentiated-gradient weights on per-source gradient alignment with the target
                set, with an EMA (Fan et al. 2024; `mixture.dga_update`);
  uniform, proportional (to source size), oracle (uniform over the sources known to be good).

GAR's alignments (``mixture.gar_method``): "jvp" (forward mode, `gar.alignment`), "vmap" (explicit
per-example gradients, the reference) or "layerwise" (`gar_jax.gar_layerwise`: step t keeps each
layer's input and output-gradient, the reward is one forward with G as the kernels); BatchNorm
nets use frozen batch statistics. Settings: ``configs/digits_mixture.py`` (the learner's fields in
``mixture``, with OLA's names; ``mixture.learning_rate`` 0.06 for gar (seeds 100-104), 0.1 for
gar_target, ``dga.learning_rate`` 0.3 (seeds 100-101): experiments/mixture/README.md).

One call of the jitted step runs ``mixture.reward_every`` = k SGD steps (k >= 2): steps t and
t+1 form the reward pair (batch t is rewarded once step t+1's gradient exists; θ_t lives only
inside the call), then the mixture is updated, then k − 2 plain steps follow with the new
mixture. k trades
the learner's signal (B rewards per k steps) for cost (one alignment per k steps); ODM updates
after every step (its signal, the training loss, is free). Nothing crosses a call boundary but the
state, so a killed run resumes to the same weights bit for bit (the engine's checkpoints).

Reported (``results.json["learned_mixture"]``): the final mixture per source, the sources built to
hurt, the mixture at the start of every call (``weights_over_training``), and
``mixture_over_training.png``.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gar_jax import batchnorm, gar, gar_layerwise, mixture
from gar_jax.data import mixture_digits, stats
from gar_jax.errors import ConfigError
from gar_jax.models import toy, variables
from gar_jax.train import engine, optim

METHODS = ("gar", "gar_target", "uniform", "proportional", "odm", "dga", "nslr", "oracle")
_FIELDS = ("experiment", "scenario", "method", "net", "seed", "data_seed", "batch_size",
           "num_steps", "steps_per_eval", "learning_rate", "momentum", "weight_decay", "mixture",
           "odm", "dga", "xla_opt_level")
# The fields of each group: the mixture learner's have OLA's names (configs/cifar10_ola.py's
# ``ola`` section, as the toy split's); ODM's and DGA's are their baselines' knobs.
_GROUPS = {
    "mixture": ("reward_every", "gar_method", "reward_examples", "learning_rate", "b1", "clip",
                "meta_every", "nslr_decay"),
    "odm": ("reward_scale", "decay"),
    "dga": ("learning_rate", "ema", "probe"),
}
HISTORY_DIGITS = 5


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(config) -> None:
    """ConfigError (one line) for a config `run` cannot run, before any data or compilation."""
    missing = [f for f in _FIELDS if f not in config]
    extra = [f for f in config if f not in _FIELDS and f not in engine.LOOP_DEFAULTS]
    for group, fields in _GROUPS.items():
        if group in config:
            missing += [f"{group}.{f}" for f in fields if f not in config[group]]
            extra += [f"{group}.{f}" for f in config[group] if f not in fields]
    _check(not missing, f"mixture config lacks fields {missing}; start from "
                        "configs/digits_mixture.py")
    known = "; ".join(f"{g}: {', '.join(fs)}" for g, fs in _GROUPS.items())
    _check(not extra, f"mixture config has unknown fields {extra}; known: {', '.join(_FIELDS)} "
                      f"({known}) and the engine's {', '.join(engine.LOOP_DEFAULTS)}")
    m, odm, dga = config.mixture, config.odm, config.dga
    _check(config.scenario in mixture_digits.SCENARIOS,
           f"config.scenario={config.scenario!r}; choose from "
           f"{', '.join(mixture_digits.SCENARIOS)}")
    _check(config.method in METHODS,
           f"config.method={config.method!r}; choose from {', '.join(METHODS)}")
    _check(config.net in toy.NETS, f"config.net={config.net!r}; choose from {', '.join(toy.NETS)}")
    _check(m.gar_method in gar.METHODS,
           f"config.mixture.gar_method={m.gar_method!r}; choose from {', '.join(gar.METHODS)}")
    for name, value in (("batch_size", config.batch_size), ("num_steps", config.num_steps),
                        ("steps_per_eval", config.steps_per_eval), ("dga.probe", dga.probe),
                        ("mixture.meta_every", m.meta_every)):
        _check(isinstance(value, int) and value >= 1,
               f"config.{name}={value!r} must be a positive integer")
    every = m.reward_every
    _check(isinstance(every, int) and every >= 2,
           f"config.mixture.reward_every={every!r} must be an integer >= 2 (steps t and t+1 "
           "form the reward pair)")
    _check(config.num_steps % every == 0 and config.steps_per_eval % every == 0,
           f"config.num_steps={config.num_steps} and steps_per_eval={config.steps_per_eval} "
           f"must be multiples of mixture.reward_every={every}")
    _check(config.num_steps % config.steps_per_eval == 0,
           f"config.num_steps={config.num_steps} must be a multiple of steps_per_eval="
           f"{config.steps_per_eval}")
    _check(isinstance(m.reward_examples, int) and (
        m.reward_examples == 0 or 2 <= m.reward_examples <= config.batch_size),
           f"config.mixture.reward_examples={m.reward_examples!r} must be 0 (the whole batch) "
           f"or an integer in [2, batch_size={config.batch_size}] (rewards are normalized over "
           "them)")
    for name, value in (("learning_rate", config.learning_rate),
                        ("mixture.learning_rate", m.learning_rate),
                        ("dga.learning_rate", dga.learning_rate),
                        ("odm.reward_scale", odm.reward_scale)):
        _check(value > 0, f"config.{name}={value!r} must be > 0")
    for name, value in (("momentum", config.momentum), ("mixture.b1", m.b1),
                        ("mixture.nslr_decay", m.nslr_decay), ("dga.ema", dga.ema)):
        _check(0 <= value < 1, f"config.{name}={value!r} must be in [0, 1)")
    _check(0 < odm.decay <= 1, f"config.odm.decay={odm.decay!r} must be in (0, 1]")
    _check(config.weight_decay >= 0, f"config.weight_decay={config.weight_decay!r} must be >= 0")
    _check(m.clip >= 0, f"config.mixture.clip={m.clip!r} must be >= 0 (0: off)")
    _check(isinstance(config.xla_opt_level, int) and -1 <= config.xla_opt_level <= 3,
           f"config.xla_opt_level={config.xla_opt_level!r} must be -1 (XLA's default) or 0..3")
    engine.validate_loop(config)


# --------------------------------------------------------------------------------------------
# The state and the step
# --------------------------------------------------------------------------------------------
@flax.struct.dataclass
class MixtureTrainState:
    """Everything a run learns (checkpointed whole by the engine).

    step: int32 [] SGD steps done; params / batch_stats / opt_state: the net; rng: the run's key;
    learner: the method's mixture state (`mixture.MixtureState`, `ODMState`, `DGAState`, or
    fixed log-probabilities); history: float32 [calls, K], the mixture at the start of each call;
    finite: bool [], False once a loss or reward was NaN/inf.
    """
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    learner: Any
    history: jax.Array
    finite: jax.Array


def _example_loss(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


class Runner:
    """The jitted pieces of one (scenario, method, config) run; `run` and the benchmark reuse
    one per configuration (the compiled call does not depend on the seed)."""

    def __init__(self, config, data: dict):
        self.config = config
        self.method = config.method
        self.names = tuple(data["sources"])
        self.k = len(self.names)
        self.harmful = list(data["harmful"])
        self.good = list(data["good"])
        self.sources = mixture.DeviceSources.create(data["sources"])
        self.sizes = np.asarray(self.sources.sizes)
        mean, std = stats.mean_std("digits")
        self.mean, self.std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
        self.target = {k: jnp.asarray(v) for k, v in data["target"].items()}
        self.test = {k: jnp.asarray(v) for k, v in data["test"].items()}
        self.image_shape = tuple(data["test"]["image"].shape[1:])
        self.model = toy.create(config.net, mixture_digits.NUM_CLASSES)
        self.tx = optim.pytorch_sgd(config.learning_rate, momentum=config.momentum, nesterov=True,
                                    weight_decay=config.weight_decay)
        self.mix = mixture.Mixture(
            self.k, learning_rate=config.mixture.learning_rate, b1=config.mixture.b1,
            clip=config.mixture.clip or None, every_k=config.mixture.meta_every,
            normalization="running" if self.method == "nslr" else "batch",
            running_decay=config.mixture.nslr_decay)
        self.calls = config.num_steps // config.mixture.reward_every
        self.reward_examples = config.mixture.reward_examples or config.batch_size
        options = (None if config.xla_opt_level < 0
                   else {"xla_backend_optimization_level": config.xla_opt_level})
        self.call = jax.jit(self._call, donate_argnums=0, compiler_options=options)
        self.evaluate_fn = jax.jit(self._evaluate, compiler_options=options)
        self.init = jax.jit(self._init, compiler_options=options)

    # -- the mixture of each method -----------------------------------------------------------
    def fixed_probs(self) -> np.ndarray:
        if self.method == "proportional":
            return self.sizes / self.sizes.sum()
        if self.method == "oracle":
            good = np.array([n in self.good for n in self.names], np.float64)
            return good / good.sum()
        return np.full(self.k, 1.0 / self.k)

    def _init_learner(self):
        m = self.method
        if m in ("gar", "gar_target", "nslr"):
            return self.mix.init()
        if m == "odm":
            return mixture.odm_init(self.k)
        if m == "dga":
            return mixture.dga_init(self.k)
        # The probabilities, not their logs: the oracle's zeros would be -inf in the state,
        # which the engine refuses to checkpoint as a diverged state.
        return jnp.asarray(self.fixed_probs(), jnp.float32)

    def log_probs(self, learner) -> jax.Array:
        m = self.method
        if m in ("gar", "gar_target", "nslr"):
            return self.mix.log_probs(learner)
        if m == "odm":
            return jnp.log(learner.probs)
        if m == "dga":
            return jnp.log(learner.ema)
        return jnp.log(learner)

    # -- pieces -------------------------------------------------------------------------------
    def _normalize(self, images):
        return (images.astype(jnp.float32) / 255.0 - self.mean) / self.std

    def _batch(self, raw):
        return {"image": self._normalize(raw["image"]), "label": raw["label"]}

    def _init(self, key):
        init_key, rng = jax.random.split(key)
        v = self.model.init(init_key, jnp.zeros((1,) + self.image_shape), train=False)
        params = v["params"]
        return MixtureTrainState(
            step=jnp.zeros((), jnp.int32), params=params, batch_stats=v.get("batch_stats", {}),
            opt_state=self.tx.init(params), rng=rng, learner=self._init_learner(),
            history=jnp.zeros((self.calls, self.k), jnp.float32), finite=jnp.bool_(True))

    def _mean_loss(self, params, batch_stats, batch):
        logits, updated = self.model.apply(variables(params, batch_stats), batch["image"],
                                           train=True, mutable=["batch_stats"])
        losses = _example_loss(logits, batch["label"])
        return jnp.mean(losses), (losses, updated.get("batch_stats", {}))

    def _sgd(self, params, batch_stats, opt_state, batch, before_update=None):
        """One training step; returns (params, batch_stats, opt_state, loss, losses [B], G) or,
        with `before_update`, G replaced by ``before_update(G)``, computed before the update."""
        (loss, (losses, new_stats)), grads = jax.value_and_grad(
            self._mean_loss, has_aux=True)(params, batch_stats, batch)
        out = grads
        if before_update is not None:
            out = before_update(grads)
            # The update waits for before_update's result: XLA then frees what it holds
            # (θ_t or the tape) before the update's temporaries (a lower compiled peak).
            grads, out = jax.lax.optimization_barrier((grads, out))
        updates, opt_state = self.tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, loss, losses, out

    def _sgd_capture(self, params, batch_stats, opt_state, batch):
        """`_sgd` through `gar_layerwise.capture`; the last output is the tape."""
        captured = gar_layerwise.capture(self.model, variables(params, batch_stats), batch,
                                         _example_loss, train=True)
        updates, opt_state = self.tx.update(captured.grads, opt_state, params)
        losses = _example_loss(captured.logits, batch["label"])
        new_stats = captured.model_state.get("batch_stats", {}) if batch_stats else batch_stats
        return (optax.apply_updates(params, updates), new_stats, opt_state, captured.loss,
                losses, captured.tape)

    def _draw(self, key, log_probs, batch_size):
        k_ids, k_ex = jax.random.split(key)
        ids = jax.random.categorical(k_ids, log_probs, shape=(batch_size,)).astype(jnp.int32)
        return ids, self._batch(self.sources.draw(k_ex, ids))

    def _alignment(self, params, batch_stats, batch, direction, stats_batch=None):
        """GAR of each example of `batch` at `params`, BatchNorm statistics frozen at those of
        `stats_batch` (default `batch`; the whole batch when `batch` is a subset of it)."""
        v = variables(params, batch_stats)
        if self.config.mixture.gar_method == "layerwise":
            assert stats_batch is None
            return gar_layerwise.alignment(self.model, v, batch, direction, _example_loss,
                                           train=True)
        per_example = batchnorm.frozen_bn_loss_fn(
            self.model, v, batch if stats_batch is None else stats_batch, _example_loss,
            train=True)
        return gar.alignment(per_example, params, batch, direction,
                             method=self.config.mixture.gar_method)

    def _target_grad(self, params, batch_stats):
        return jax.grad(lambda p: self._mean_loss(p, batch_stats, self._batch(self.target))[0])(
            params)

    # -- one call: reward_every SGD steps -----------------------------------------------------
    def _call(self, state: MixtureTrainState):
        c = self.config
        b = c.batch_size
        key = jax.random.fold_in(state.rng, state.step)
        keys = jax.random.split(key, c.mixture.reward_every + 1)
        learner = state.learner
        logp = self.log_probs(learner)
        history = jax.lax.dynamic_update_slice_in_dim(
            state.history, jnp.exp(logp)[None], state.step // c.mixture.reward_every, 0)

        # Step t: batch t from the current mixture, trained at θ_t.
        ids_t, batch_t = self._draw(keys[0], logp, b)
        params_t, stats_t = state.params, state.batch_stats
        tape = None
        if self.method in ("gar", "gar_target") and c.mixture.gar_method == "layerwise":
            # The layer-wise GAR keeps each layer's input and output-gradient of this step
            # (gar_layerwise.capture); the reward is then one forward with G as the kernels.
            params, stats_, opt_state, loss_t, losses_t, tape = self._sgd_capture(
                params_t, stats_t, state.opt_state, batch_t)
            tape = mixture.first_examples(tape, self.reward_examples)
        else:
            params, stats_, opt_state, loss_t, losses_t, _ = self._sgd(
                params_t, stats_t, state.opt_state, batch_t)
        if self.method == "odm":
            learner = mixture.odm_update(learner, ids_t, losses_t,
                                         reward_scale=c.odm.reward_scale, decay=c.odm.decay)
            logp = self.log_probs(learner)
        # Step t+1: its gradient G at θ_{t+1} trains the net and rewards batch t.
        ids_n, batch_n = self._draw(keys[1], logp, b)
        params_n, stats_n = params, stats_
        m = self.method
        # Rewards for the first `reward_examples` examples of batch t only: its examples are
        # i.i.d. draws, so these are a uniformly random subset of them (`first_examples`).
        n_r = self.reward_examples
        sub_t, sub_ids = mixture.first_examples(batch_t, n_r), ids_t[:n_r]

        def gar_rewards(grad_n):
            direction = grad_n if m == "gar" else self._target_grad(params_n, stats_n)
            if tape is None:
                return self._alignment(params_t, stats_t, sub_t, direction,
                                       stats_batch=None if n_r == b else batch_t)
            return gar_layerwise.alignment_from_tape(
                self.model, variables(params_t, stats_t), tape, direction, sub_t["image"],
                train=True)

        params, stats_, opt_state, loss_n, losses_n, out_n = self._sgd(
            params_n, stats_n, opt_state, batch_n,
            before_update=gar_rewards if m in ("gar", "gar_target") else None)
        finite = jnp.isfinite(loss_t) & jnp.isfinite(loss_n)
        if m in ("gar", "gar_target"):
            rewards = out_n
            finite &= jnp.all(jnp.isfinite(rewards))
            learner = self.mix.update(learner, sub_ids, rewards)
        elif m == "nslr":
            learner = self.mix.update(learner, ids_t, gar.nslr_reward(loss_n, b))
        elif m == "odm":
            learner = mixture.odm_update(learner, ids_n, losses_n,
                                         reward_scale=c.odm.reward_scale, decay=c.odm.decay)
        elif m == "dga":
            # Per-source alignment with the target gradient, both at θ_{t+1}: a probe batch of
            # dga_probe examples of every source, per-example alignments averaged per source.
            probe_ids = jnp.repeat(jnp.arange(self.k, dtype=jnp.int32), c.dga.probe)
            probe = self._batch(self.sources.draw(keys[-1], probe_ids))
            align = self._alignment(params_n, stats_n, probe,
                                    self._target_grad(params_n, stats_n))
            finite &= jnp.all(jnp.isfinite(align))
            per_source, _ = mixture.per_source_mean(align, probe_ids, self.k)
            learner = mixture.dga_update(learner, per_source, learning_rate=c.dga.learning_rate,
                                         ema=c.dga.ema)
        logp = self.log_probs(learner)

        # Steps t+2 .. t+k-1: plain steps with the updated mixture (ODM keeps updating).
        losses_sum = loss_t + loss_n
        for i in range(2, c.mixture.reward_every):
            ids_i, batch_i = self._draw(keys[i], logp, b)
            params, stats_, opt_state, loss_i, losses_i, _ = self._sgd(
                params, stats_, opt_state, batch_i)
            finite &= jnp.isfinite(loss_i)
            losses_sum += loss_i
            if m == "odm":
                learner = mixture.odm_update(learner, ids_i, losses_i,
                                             reward_scale=c.odm.reward_scale, decay=c.odm.decay)
                logp = self.log_probs(learner)

        probs = jnp.exp(self.log_probs(learner))
        finite &= jnp.all(jnp.isfinite(probs))
        new = state.replace(step=state.step + c.mixture.reward_every, params=params,
                            batch_stats=stats_, opt_state=opt_state, learner=learner, history=history,
                            finite=state.finite & finite)
        metrics = {"loss": jnp.where(finite, losses_sum / c.mixture.reward_every, jnp.nan),
                   **{f"p/{n}": probs[i] for i, n in enumerate(self.names)}}
        return new, metrics

    def _evaluate(self, state: MixtureTrainState):
        logits = self.model.apply(variables(state.params, state.batch_stats),
                                  self._normalize(self.test["image"]), train=False)
        return (jnp.mean(jnp.argmax(logits, -1) == self.test["label"]),
                jnp.mean(_example_loss(logits, self.test["label"])))

    # -- host side ----------------------------------------------------------------------------
    def initial_state(self, seed: int) -> MixtureTrainState:
        return self.init(jax.random.key(seed))

    def final_weights(self, state) -> np.ndarray:
        return np.asarray(jnp.exp(self.log_probs(state.learner)), np.float64)


_RUNNERS: dict = {}


def _fingerprint(config) -> str:
    relevant = {k: (config[k].to_dict() if k in _GROUPS else config[k])
                for k in _FIELDS if k != "seed"}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


def runner(config, data=None) -> Runner:
    """The `Runner` of this config (built once per process; the seed is not part of it)."""
    key = _fingerprint(config)
    if key not in _RUNNERS:
        if data is None:
            data = mixture_digits.build(config.scenario, config.data_seed)
        _RUNNERS[key] = Runner(config, data)
    return _RUNNERS[key]


def method_for(config) -> engine.Method:
    """The run as an engine `Method` (one call = `reward_every` steps; an "epoch" of the
    engine = `steps_per_eval` steps, after which the test set is evaluated)."""
    r = runner(config)

    def advance(state, step):
        del step  # the state knows its step
        return r.call(state)

    def evaluate(state):
        accuracy, loss = (float(x) for x in r.evaluate_fn(state))
        return {"accuracy": accuracy, "loss": loss, "count": float(len(r.test["label"]))}

    def report(workdir, state, epoch, evaluation):
        return report_for(r, workdir, state)

    return engine.Method(state=r.initial_state(config.seed), advance=advance,
                         steps_per_call=config.mixture.reward_every, evaluate=evaluate,
                         report=report,
                         steps_per_epoch=config.steps_per_eval, total_steps=config.num_steps,
                         images_per_step=config.batch_size,
                         describe={"dataset": "digits (mixture_digits)", "net": config.net,
                                   "scenario": config.scenario, "method": config.method})


def report_for(r: Runner, workdir: str, state: MixtureTrainState) -> dict:
    if not bool(state.finite):
        raise FloatingPointError(f"mixture {r.method}: a loss, reward or mixture weight became "
                                 f"NaN/inf before step {int(state.step)}")
    calls_done = int(state.step) // r.config.mixture.reward_every
    history = np.asarray(state.history[:calls_done], np.float64)
    weights = r.final_weights(state)
    learned = {
        "weights": {n: round(float(w), 6) for n, w in zip(r.names, weights)},
        "harmful_sources": r.harmful,
        "good_sources": r.good,
        "source_sizes": {n: int(s) for n, s in zip(r.names, r.sizes)},
        "method": r.method,
        "scenario": r.config.scenario,
        "history_every_steps": r.config.mixture.reward_every,
        "weights_over_training": np.round(history, HISTORY_DIGITS).tolist(),
    }
    if r.method in ("gar", "gar_target", "nslr"):
        learned["skipped_updates"] = int(state.learner.skipped)
    if int(state.step) >= r.config.num_steps:  # the figure once, at the end (matplotlib is slow)
        from gar_jax import plots  # matplotlib takes a second to import: only when plotting

        plots.mixture_figure({r.method: history[None]}, r.names,
                             os.path.join(workdir, "mixture_over_training.png"),
                             steps_per_point=r.config.mixture.reward_every, highlight=r.harmful,
                             title=f"{r.config.scenario}: mixture over training ({r.method})")
    return {"learned_mixture": learned}


def run(config, workdir: str) -> dict:
    """Trains and evaluates the config's run in `workdir` (resuming if possible)."""
    validate(config)
    return engine.train(config, workdir, None, method_for(config))
