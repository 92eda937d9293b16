"""Fast AutoAugment (Lim et al. 2019): density-matching policy search with TPE, then training.

``python -m gar_jax.main --config=configs/digits_faa.py --workdir=DIR`` runs, resumably:

1. Folds (``DIR/search``). K stratified splits of the (optionally reduced) training set into
   D_M and D_A (``faa.test_fraction`` of it, 40% in the paper). One model per D_M, trained with
   the config's default augmentation (the standard pipeline), all K in ONE jitted program per
   SGD step, vmapped over the folds or unrolled over them (``faa.fold_batching``; "auto": unroll
   on CPUs, where XLA runs per-fold-weight convs vmapped ~5x and convs inside loops ~25x slower
   than plain ones; `over_folds`). The fold models are saved (``folds.msgpack``) and reused on
   resume.
2. Search (``DIR/search/study.db``). For every fold and repeat t < T, an Optuna study (RDB
   storage on SQLite) with ``TPESampler(constant_liar=True)`` over candidates of
   ``num_sub_policies`` sub-policies x ``num_ops`` steps (op, probability U[0,1], level U[0,1]).
   Trials are asked in batches of ``asks_per_batch`` per study; every batch of every study is
   scored in one jitted pass: D_A augmented ``copies`` times, each image by a random sub-policy
   of its candidate; the reward is the fraction of images correct in at least one copy (FAA's
   max over copies), the minimum loss is recorded too. Candidates x copies x images are one flat
   image batch (which is what a vmap over candidates computes, without vmapping the augmentation
   pipeline's fusion barriers), the fold models run over the folds as in training, one jitted
   call per chunk of ``score_chunk`` candidates (memory).
3. Policy (``DIR/policy.json``): the ``top_n`` candidates of every study, duplicate sub-policies
   (same op sequence) dropped within a candidate, pooled (FAA's final policy).
4. Training (``DIR/train``): the config's supervised run with ``augment="faa"`` and that policy
   (then the standard pipeline); ``DIR/results.json`` = its results + ``learned_policy`` + ``faa``.

Determinism and resume. Every asked batch uses a sampler seeded from (seed, fold, repeat, batch
index), and a candidate's augmentation key from (seed, fold, repeat, its index), so the same
seed gives the same trials. A killed search resumes its studies: trials left RUNNING by a kill
before their batch was scored are marked FAIL and the batch is asked again (the same sampler
seed and the same completed trials give the same candidates); scores computed but not yet told
are kept in ``search/pending.json`` and told on resume. So a resumed study ends with the same
completed trials as an uninterrupted one.
"""
import dataclasses
import functools
import json
import os
import time
from typing import Callable, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gar_jax.augment import faa
from gar_jax.augment import spaces
from gar_jax.data import sources
from gar_jax.errors import ConfigError
from gar_jax.methods import supervised
from gar_jax.train import defaults
from gar_jax.train import engine
from gar_jax.train import optim
from gar_jax.train import steps as train_steps
from gar_jax.train.state import INIT_STREAM, TrainState, initial_state
from gar_jax.models import variables

SEARCH_DIR = "search"
TRAIN_DIR = "train"
POLICY_NAME = "faa_searched"


# ----------------------------------------------------------------------------------------------
# Configs.

def add_faa_section(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds ``config.faa`` (the paper's search protocol) to a supervised config."""
    c.experiment = "faa"
    c.augment = "faa"              # the final training replays the searched policy ...
    c.augment_kwargs = ml_collections.ConfigDict({"policy": ""})  # ... set by the search
    f = c.faa = ml_collections.ConfigDict()
    f.folds = 5                    # K stratified D_M / D_A splits
    f.test_fraction = 0.4          # |D_A| / |training set|
    f.reduced_size = 0             # stratified subset of the training set first (0: all;
                                   # reduced CIFAR-10: 4000)
    f.fold_epochs = c.num_epochs   # epochs of each fold model (same optimizer protocol)
    f.fold_augment = "standard"    # the default augmentation of the fold models
    f.num_sub_policies = 5         # sub-policies per candidate
    f.num_ops = 2                  # steps per sub-policy
    f.copies = 5                   # augmented copies of D_A per candidate (max correct over them)
    f.score_with_standard = True   # D_A copies also get the standard pipeline (as FAA's loader)
    f.trials = 200                 # TPE trials per fold and repeat
    f.asks_per_batch = 16          # trials asked per study before scoring (constant liar)
    f.n_startup_trials = 10        # random trials before TPE (Optuna's default)
    f.top_n = 10                   # best candidates kept per fold and repeat
    f.repeats = 2                  # T: independent TPE searches per fold
    f.destructive_op = False       # add the planted SamplePairing (alpha 1) to the 15 ops
    f.score_chunk = 8              # candidates per chunk of the scoring pass (memory)
    f.fold_batching = "auto"       # the K fold models in one program: "vmap" (batched over the
                                   # folds) or "unroll" (one call per fold in the program);
                                   # "auto": unroll on CPUs, vmap elsewhere (`over_folds`)
    f.train_final = True           # train with the searched policy after the search
    return c


def digits_config(*, destructive_op: bool = False) -> ml_collections.ConfigDict:
    """Search + final training on digits (minutes on a CPU); see configs/digits_faa.py."""
    c = add_faa_section(defaults.digits("baseline"))
    c.faa.folds = 3                # 3 folds of 862 / 575 images (5 in the paper)
    c.faa.fold_epochs = 15
    c.faa.trials = 48
    c.faa.asks_per_batch = 16
    c.faa.n_startup_trials = 16    # the first batch is random, TPE from the second on
    c.faa.top_n = 5
    c.faa.repeats = 1
    c.faa.score_chunk = 2          # 3 folds x 2 x 5 copies x 575 = 17k images per chunk (the
                                   # 8 of the default took 6 GB on the CPU)
    c.faa.destructive_op = destructive_op
    return c


def cifar_search_config() -> ml_collections.ConfigDict:
    """The paper's search: reduced CIFAR-10 (4000 images), WRN-40-2, K=5, 200 trials, T=2."""
    c = add_faa_section(defaults.supervised("cifar10", "standard"))
    c.model.depth = 40
    c.model.width = 2
    c.faa.reduced_size = 4000
    c.faa.fold_epochs = 200
    c.faa.score_chunk = 1          # 5 folds x 5 copies x 1600 D_A images = 40k per chunk
    return c


# ----------------------------------------------------------------------------------------------
# Validation.

def search_ops(config) -> tuple:
    """FAA op names of the search space (15, plus SamplePairing if destructive_op)."""
    return faa.FAA_OPS + ((faa.DESTRUCTIVE,) if config.faa.destructive_op else ())


def _fold_config(config) -> ml_collections.ConfigDict:
    """The fold models' supervised config: default augmentation, fold_epochs."""
    c = ml_collections.ConfigDict(config.to_dict())
    del c["faa"]
    c.experiment = "supervised"
    c.augment = config.faa.fold_augment
    c.augment_kwargs = ml_collections.ConfigDict({})
    c.num_epochs = config.faa.fold_epochs
    c.warmup_epochs = min(c.warmup_epochs, max(0.0, c.num_epochs - 1))
    return c


def _train_config(config, policy_path: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(config.to_dict())
    del c["faa"]
    c.experiment = "supervised"
    c.augment = "faa"
    c.augment_kwargs = ml_collections.ConfigDict({"policy": policy_path})
    return c


def validate(config) -> None:
    """ConfigError (one line) for a bad search or training config, before any compute."""
    f = config.faa
    if isinstance(f.folds, bool) or not isinstance(f.folds, int) or f.folds < 2:
        raise ConfigError(f"config.faa.folds={f.folds!r}: need K >= 2 folds")
    if not 0.0 < f.test_fraction < 1.0:
        raise ConfigError(f"config.faa.test_fraction={f.test_fraction}: the D_A fraction must "
                          "lie in (0, 1)")
    for name in ("num_sub_policies", "num_ops", "copies", "trials", "asks_per_batch", "top_n",
                 "repeats", "fold_epochs", "score_chunk"):
        v = f[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"config.faa.{name}={v!r} must be an integer >= 1")
    if f.get("fold_batching", "auto") not in ("auto",) + FOLD_BATCHING:
        raise ConfigError(f"config.faa.fold_batching={f.fold_batching!r}: use 'auto', 'vmap' "
                          "or 'unroll'")
    if f.n_startup_trials < 0 or f.reduced_size < 0:
        raise ConfigError("config.faa.n_startup_trials and reduced_size must be >= 0")
    if f.top_n > f.trials:
        raise ConfigError(f"config.faa.top_n={f.top_n} > trials={f.trials}")
    engine.validate(_fold_config(config))
    n_train = sources.num_examples(config.dataset, "train")
    if f.reduced_size > n_train:
        raise ConfigError(f"config.faa.reduced_size={f.reduced_size} exceeds the {n_train} "
                          f"training images of {config.dataset}")
    if config.augment_kwargs.get("policy"):
        engine.validate(_train_config(config, config.augment_kwargs.policy))


# ----------------------------------------------------------------------------------------------
# Folds and fold models.

def make_folds(labels, folds: int, test_fraction: float, seed: int, reduced_size: int = 0):
    """Stratified splits: (dm int64 [K, n_M], da int64 [K, n_A]) indices into ``labels``.

    ``reduced_size`` > 0 first takes a stratified subset of that size (reduced CIFAR-10 = 4000),
    then splits it K times (FAA: StratifiedShuffleSplit(n_splits=5, test_size=0.4)).
    """
    from sklearn.model_selection import StratifiedShuffleSplit
    labels = np.asarray(labels)
    pool = np.arange(len(labels))
    try:
        if reduced_size and reduced_size < len(labels):
            keep, _ = next(StratifiedShuffleSplit(1, train_size=reduced_size,
                                                  random_state=seed).split(pool, labels))
            pool = np.sort(keep)
        splitter = StratifiedShuffleSplit(folds, test_size=test_fraction, random_state=seed)
        pairs = list(splitter.split(pool, labels[pool]))
    except ValueError as e:
        raise ConfigError(f"cannot split {len(pool)} images (reduced_size={reduced_size}) into "
                          f"D_M/D_A with test_fraction={test_fraction}: {e}") from e
    return (np.stack([pool[np.sort(m)] for m, _ in pairs]),
            np.stack([pool[np.sort(a)] for _, a in pairs]))


def init_fold_states(model, tx, image_shape, seed: int, folds: int) -> TrainState:
    """K initial states stacked on a leading fold axis (fold f: key fold_in(PRNGKey(seed), f))."""
    def init(rng):
        return initial_state(model, tx, image_shape, rng)

    keys = jax.vmap(lambda f: jax.random.fold_in(jax.random.PRNGKey(seed), f))(jnp.arange(folds))
    with jax.threefry_partitionable(False):
        return jax.jit(jax.vmap(init))(keys)


FOLD_BATCHING = ("vmap", "unroll")


def fold_batching(config) -> str:
    """`config.faa.fold_batching` ("vmap" or "unroll"), "auto" resolved for the default backend:
    "unroll" on CPUs, "vmap" elsewhere (see `over_folds`)."""
    return _resolve_batching(config.faa.get("fold_batching", "auto"))


def _resolve_batching(mode: str) -> str:
    """"auto" -> "unroll" on CPUs, "vmap" elsewhere; other modes unchanged."""
    if mode == "auto":
        return "unroll" if jax.default_backend() == "cpu" else "vmap"
    return mode


def over_folds(fn: Callable, batching: str, in_axes) -> Callable:
    """``fn`` applied to every fold in one program: `jax.vmap` over the leading fold axis of the
    arguments whose ``in_axes`` entry is 0 ("vmap"), or one call per fold, unrolled in the
    program, results stacked ("unroll": no batched per-fold weights and no loop; XLA:CPU runs a
    conv vmapped over per-fold weights ~5x slower per fold, and a conv inside a while loop
    (`lax.map`, `lax.scan`) ~25x slower, than the plain conv: experiments/faa/README.md)."""
    batching = _resolve_batching(batching)
    if batching == "vmap":
        return jax.vmap(fn, in_axes=in_axes)
    if batching != "unroll":
        raise ConfigError(f"fold batching {batching!r}: use one of {list(FOLD_BATCHING)} or 'auto'")

    def unrolled(*args):
        folds = next(jax.tree.leaves(a)[0].shape[0] for a, ax in zip(args, in_axes) if ax == 0)
        outs = [fn(*[jax.tree.map(lambda v: v[f], a) if ax == 0 else a
                     for a, ax in zip(args, in_axes)]) for f in range(folds)]
        return jax.tree.map(lambda *vs: jnp.stack(vs), *outs)

    return unrolled


def make_fold_epoch(model, tx, augment: Optional[Callable], batch_size: int,
                    steps_per_epoch: int, batching: str = "auto") -> Callable:
    """``epoch(states, images, labels, dm, epoch) -> (states, metrics [K])``.

    One epoch of SGD for all K fold models: one jitted program per SGD step trains every fold
    (``batching``: "vmap" over the folds or "unroll", `over_folds`; the same numbers), called
    ``steps_per_epoch`` times from the host (no loop around the convolutions in the program).
    Fold f draws a permutation of its D_M rows ``dm[f]`` from fold_in(fold_in(state.rng,
    INIT_STREAM - 1), epoch) (a stream no step key uses) and trains on
    ``images[dm[f][perm[i*B:(i+1)*B]]]``; step keys are ``step_key(state.rng, step)`` (augment,
    dropout), as the supervised loop.
    """
    def permutation(state, dm, epoch):
        return jax.random.permutation(
            jax.random.fold_in(jax.random.fold_in(state.rng, INIT_STREAM - 1), epoch),
            dm.shape[0])

    def one_fold(state, images, labels, dm, perm, i):
        idx = dm[jax.lax.dynamic_slice(perm, (i * batch_size,), (batch_size,))]
        x, y = images[idx], labels[idx]
        k_aug, k_drop = jax.random.split(train_steps.step_key(state.rng, state.step))
        if augment is not None:
            x = augment(k_aug, x)

        def loss_fn(p):
            logits, updates = model.apply(
                variables(p, state.batch_stats), x, train=True, rngs={"dropout": k_drop},
                mutable=["batch_stats"] if state.batch_stats else [])
            return jnp.mean(train_steps.cross_entropy(logits, y)), (logits, updates)

        (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        stats = updates["batch_stats"] if state.batch_stats else state.batch_stats
        state = train_steps.apply_gradients(state, grads, stats, tx)
        return state, jnp.stack([loss, jnp.mean(jnp.argmax(logits, -1) == y)])

    perms = jax.jit(jax.vmap(permutation, in_axes=(0, 0, None)))
    step = jax.jit(over_folds(one_fold, batching, (0, None, None, 0, 0, None)),
                   donate_argnums=0)

    def epoch_fn(states, images, labels, dm, epoch):
        perm = perms(states, dm, epoch)
        metrics = []
        for i in range(steps_per_epoch):
            states, m = step(states, images, labels, dm, perm, i)
            metrics.append(m)
        m = jnp.mean(jnp.stack(metrics), axis=0)  # [K, 2]
        return states, {"loss": m[:, 0], "accuracy": m[:, 1]}

    return epoch_fn


def train_fold_models(config, data: dict, dm, search_dir: str, *, progress: bool = True):
    """Trains (or loads from ``search_dir/folds.msgpack``) the K fold models.

    Returns (model, variables stacked [K, ...] (params and batch_stats), info dict).
    """
    fc = _fold_config(config)
    num_classes, image_shape = sources.info(config.dataset)
    model = engine.make_model(fc, num_classes)
    spe = dm.shape[1] // fc.batch_size
    if spe < 1:
        raise ConfigError(f"D_M has {dm.shape[1]} images, fewer than batch_size={fc.batch_size}")
    tx, _ = optim.make_optimizer(fc, spe)
    states = init_fold_states(model, tx, image_shape, fc.seed, dm.shape[0])
    path = os.path.join(search_dir, "folds.msgpack")
    info_path = os.path.join(search_dir, "folds.json")
    target = {"params": states.params, "batch_stats": states.batch_stats}
    if os.path.exists(path):
        with open(path, "rb") as f:
            variables = flax.serialization.from_bytes(target, f.read())
        with open(info_path, encoding="utf-8") as f:
            return model, variables, json.load(f)
    epoch_fn = make_fold_epoch(model, tx, engine.make_augment(fc), fc.batch_size, spe,
                               fold_batching(config))
    images, labels, dm_dev = jnp.asarray(data["image"]), jnp.asarray(data["label"]), jnp.asarray(dm)
    from tqdm.auto import tqdm
    started = time.time()
    history = []
    for epoch in tqdm(range(fc.num_epochs), desc=f"fold models (K={dm.shape[0]}, "
                      f"{fold_batching(config)})",
                      disable=not progress, unit="epoch"):
        states, m = epoch_fn(states, images, labels, dm_dev, epoch)
        history.append(jax.tree.map(lambda v: np.asarray(v).tolist(), m))
    jax.block_until_ready(states)
    variables = {"params": states.params, "batch_stats": states.batch_stats}
    info = {"seconds": time.time() - started, "epochs": fc.num_epochs, "steps_per_epoch": spe,
            "folds": int(dm.shape[0]), "dm_size": int(dm.shape[1]),
            "final_train_loss": history[-1]["loss"], "final_train_accuracy":
            history[-1]["accuracy"]}
    _write_bytes(path, flax.serialization.to_bytes(variables))
    engine.write_json(info_path, info)
    return model, variables, info


# ----------------------------------------------------------------------------------------------
# Scoring candidates.

@dataclasses.dataclass(frozen=True)
class Scorer:
    """Scores candidate policies on D_A with the frozen fold models (FAA's density matching).

    ``scorer(variables, images uint8 [F, N, H, W, C], labels int32 [F, N], tabs, keys)``:
    variables of the F fold models stacked [F, ...]; ``tabs`` = `faa.tables` of C candidates per
    fold stacked [F, C, S, K, ...]; keys [F, C] (one per candidate). Returns (accuracy [F, C]:
    fraction of D_A correct in at least one of the ``copies`` augmented copies, loss [F, C]: mean
    over D_A of the minimum loss over the copies), in one jitted call.

    Vectorization: a chunk of ``chunk`` candidates of every fold is ONE flat image batch of
    F x chunk x copies x N images for the augmentation (what a vmap over folds and candidates
    would compute, without turning the slot pipeline's fusion barriers into selects), then the
    fold models run on their F x (chunk x copies x N) images, vmapped over folds or one fold
    after the other (``fold_batching``, see `fold_batching`).
    """
    model: object
    names: frozenset            # ops.apply names of the search space
    copies: int
    standard: Optional[Callable]  # fn(key, images [B,...]) -> images: applied per image
    chunk: int
    fold_batching: str = "auto"   # the fold models: "vmap", "unroll" or "auto" (`over_folds`)

    def candidate_images(self, tab_rows, images, keys):
        """Augmented D_A copies of G candidates: uint8 [G, copies, N, H, W, C].

        tab_rows: tables [G, S, K, ...]; images [G, N, ...] (each candidate's D_A); keys [G, 2].
        Image n of copy r of candidate g uses key split(split(keys[g], copies)[r], N)[n], split
        into (policy draws, standard pipeline).
        """
        g, s = tab_rows["probability"].shape[:2]
        n = images.shape[1]
        flat_tab = jax.tree.map(lambda v: v.reshape((g * s,) + v.shape[2:]), tab_rows)

        def image_keys(key):  # [copies, N, 2]
            return jax.vmap(lambda k: jax.random.split(k, n))(jax.random.split(key, self.copies))

        keys = jax.vmap(image_keys)(keys)                       # [G, copies, N, 2]
        cand = jnp.broadcast_to(jnp.arange(g)[:, None, None], keys.shape[:3])

        def one(key, ci):
            k_pol, k_std = jax.random.split(key)
            d = faa.draw(k_pol, tab_rows["probability"][ci])
            d["sub"] = d["sub"] + ci * s
            return d, k_std

        draws, std_keys = jax.vmap(one)(keys.reshape(-1, keys.shape[-1]), cand.reshape(-1))
        x = jnp.broadcast_to(images[:, None], (g, self.copies) + images.shape[1:])
        x = x.reshape((-1,) + images.shape[2:])
        x = faa.apply_draws(flat_tab, self.names, x, draws, group=n)
        if self.standard is not None:
            x = jax.vmap(lambda k, im: self.standard(k, im[None])[0])(std_keys, x)
        return x.reshape((g, self.copies, n) + images.shape[2:])

    def chunk_score(self, variables, fold_images, labels, tab, key):
        """One chunk of candidates of every fold (pure): tab / key [F * chunk, ...] (fold-major),
        fold_images [F * chunk, N, ...] -> (accuracy, loss) [F, chunk]."""
        f = labels.shape[0]
        chunk = key.shape[0] // f
        x = self.candidate_images(tab, fold_images, key)  # [F * chunk, copies, N, ...]
        x = x.reshape((f, -1) + x.shape[3:])
        forward = over_folds(lambda v, xx: self.model.apply(v, xx, train=False),
                             self.fold_batching, (0, 0))
        logits = forward(variables, x)
        logits = logits.reshape((f, chunk, self.copies) + labels.shape[1:] + (-1,))
        y = labels[:, None, None, :]
        correct = jnp.argmax(logits, -1) == y
        loss = train_steps.cross_entropy(logits, jnp.broadcast_to(y, correct.shape))
        return (jnp.mean(jnp.max(correct, axis=2), axis=-1),
                jnp.mean(jnp.min(loss, axis=2), axis=-1))

    def _chunks(self, images, tabs, keys):
        """(fold images [F * chunk, N, ...], [(tab, key) per chunk], C): the candidates in chunks
        of ``chunk`` (the last one padded by repeating the last candidate)."""
        f, c = keys.shape[:2]
        chunk = min(self.chunk, c)
        pad = (-c) % chunk
        if pad:  # repeat the last candidate; its extra scores are dropped
            tabs = jax.tree.map(
                lambda v: jnp.concatenate([v, jnp.repeat(v[:, -1:], pad, 1)], 1), tabs)
            keys = jnp.concatenate([keys, jnp.repeat(keys[:, -1:], pad, 1)], 1)

        def part(v, k):  # [F, C, ...] -> [F * chunk, ...] of chunk k
            v = v[:, k * chunk:(k + 1) * chunk]
            return v.reshape((f * chunk,) + v.shape[2:])

        parts = [(jax.tree.map(lambda v: part(v, k), tabs), part(keys, k))
                 for k in range((c + pad) // chunk)]
        return jnp.repeat(images, chunk, axis=0), parts, c

    def score(self, variables, images, labels, tabs, keys):
        """See the class docstring (pure: jit it whole, or call the instance, which runs one
        jitted program per chunk: no loop around the model in the program, XLA:CPU runs convs
        inside loops many times slower)."""
        fold_images, parts, c = self._chunks(images, tabs, keys)
        out = [self.chunk_score(variables, fold_images, labels, tab, key) for tab, key in parts]
        return tuple(jnp.concatenate(v, axis=1)[:, :c] for v in zip(*out))

    @functools.cached_property
    def jitted_chunk(self):
        return jax.jit(self.chunk_score)

    def __call__(self, variables, images, labels, tabs, keys):
        fold_images, parts, c = self._chunks(images, tabs, keys)
        out = [self.jitted_chunk(variables, fold_images, labels, tab, key) for tab, key in parts]
        return tuple(jnp.concatenate(v, axis=1)[:, :c] for v in zip(*out))


def make_scorer(config, model) -> Scorer:
    names = frozenset(faa.OP_NAME[o] for o in search_ops(config))
    standard = engine.make_augment(_fold_config(config)) if config.faa.score_with_standard else None
    return Scorer(model, names, config.faa.copies, standard, config.faa.score_chunk,
                  fold_batching(config))


# ----------------------------------------------------------------------------------------------
# TPE search with Optuna (ask and tell).

def study_name(fold: int, repeat: int) -> str:
    return f"fold{fold}_repeat{repeat}"


def _sampler_seed(seed: int, fold: int, repeat: int, batch: int) -> int:
    return int(np.random.SeedSequence([seed, fold, repeat, batch]).generate_state(1)[0] >> 1)


def candidate_key(seed: int, fold: int, repeat: int, index: int):
    """The augmentation key of a study's ``index``-th candidate (in order of completion of its
    batches; the trial's user attribute "index"): independent of batching and of failed trials."""
    key = jax.random.PRNGKey(seed)
    for v in (fold, repeat, index):
        key = jax.random.fold_in(key, v)
    return key


def suggest_policy(trial, ops: tuple, num_sub_policies: int, num_ops: int) -> tuple:
    """A candidate from an Optuna trial: 30 hyper-parameters for 5 x 2 steps."""
    return tuple(tuple((trial.suggest_categorical(f"op_{s}_{k}", ops),
                        trial.suggest_float(f"prob_{s}_{k}", 0.0, 1.0),
                        trial.suggest_float(f"level_{s}_{k}", 0.0, 1.0))
                       for k in range(num_ops)) for s in range(num_sub_policies))


def decode(params: dict, num_sub_policies: int, num_ops: int) -> tuple:
    """The candidate of a finished trial's params (inverse of suggest_policy)."""
    return tuple(tuple((params[f"op_{s}_{k}"], params[f"prob_{s}_{k}"], params[f"level_{s}_{k}"])
                       for k in range(num_ops)) for s in range(num_sub_policies))


def storage_url(search_dir: str) -> str:
    return f"sqlite:///{os.path.abspath(os.path.join(search_dir, 'study.db'))}"


def run_search(config, search_dir: str, scorer: Scorer, variables, da_images, da_labels, *,
               image_hw, progress: bool = True, hook: Optional[Callable] = None) -> dict:
    """Runs (or resumes) the K x T TPE studies.

    Returns ({study name: completed FrozenTrials}, timing dict of this call).

    variables: fold models stacked [K, ...]; da_images uint8 [K, N, H, W, C], da_labels [K, N].
    hook(event, batch): test hook called at "asked" (all trials of a round asked) and "told:i"
    (after i tells of a round), to simulate kills.
    """
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    f = config.faa
    ops = search_ops(config)
    os.makedirs(search_dir, exist_ok=True)
    storage = optuna.storages.RDBStorage(storage_url(search_dir))
    pending_path = os.path.join(search_dir, "pending.json")
    pending = {}
    if os.path.exists(pending_path):
        with open(pending_path, encoding="utf-8") as fh:
            pending = json.load(fh)
    names = [(fold, r) for r in range(f.repeats) for fold in range(f.folds)]
    studies = {}
    for fold, r in names:
        study = optuna.create_study(study_name=study_name(fold, r), storage=storage,
                                    direction="maximize", load_if_exists=True)
        # Finish what a kill interrupted: scored trials are told, unscored ones failed (their
        # batch is asked again with the same sampler seed, which gives the same candidates).
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            value = pending.get(study_name(fold, r), {}).get(str(t.number))
            if value is not None:
                storage.set_trial_user_attr(t._trial_id, "min_loss", value[1])
                study.tell(t.number, value[0])
            else:
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        studies[(fold, r)] = study
    if os.path.exists(pending_path):
        os.remove(pending_path)

    def completed(study):
        return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))

    from tqdm.auto import tqdm
    total = len(names) * f.trials
    done = sum(len(completed(s)) for s in studies.values())
    bar = tqdm(total=total, initial=done, desc="FAA search", unit="trial", disable=not progress,
               dynamic_ncols=True)
    timing = {"ask_s": 0.0, "score_s": 0.0, "tell_s": 0.0, "trials": 0}
    round_index = 0
    try:
        while True:
            asked = {}
            t0 = time.time()
            for key_fr in names:
                study = studies[key_fr]
                n_done = len(completed(study))
                n_new = min(f.asks_per_batch, f.trials - n_done)
                if n_new <= 0:
                    continue
                batch = n_done // f.asks_per_batch
                study.sampler = optuna.samplers.TPESampler(
                    seed=_sampler_seed(config.seed, *key_fr, batch), constant_liar=True,
                    n_startup_trials=f.n_startup_trials)
                asked[key_fr] = []
                for j in range(n_new):
                    t = study.ask()
                    t.set_user_attr("index", n_done + j)
                    asked[key_fr].append(
                        (t, suggest_policy(t, ops, f.num_sub_policies, f.num_ops)))
            if not asked:
                break
            timing["ask_s"] += time.time() - t0
            if hook:
                hook("asked", round_index)
            t0 = time.time()
            scores = _score_round(config, scorer, variables, da_images, da_labels, asked,
                                  image_hw)
            timing["score_s"] += time.time() - t0
            engine.write_json(pending_path, {study_name(*k): {str(t.number): v for (t, _), v in
                                                        zip(asked[k], scores[k])}
                                       for k in asked})
            t0 = time.time()
            told = 0
            for key_fr, items in asked.items():
                for (trial, _), (acc, loss) in zip(items, scores[key_fr]):
                    trial.set_user_attr("min_loss", loss)
                    studies[key_fr].tell(trial, acc)
                    told += 1
                    if hook:
                        hook(f"told:{told}", round_index)
            os.remove(pending_path)
            timing["tell_s"] += time.time() - t0
            n = sum(len(v) for v in asked.values())
            timing["trials"] += n
            bar.update(n)
            round_index += 1
    finally:
        bar.close()
    return {study_name(*k): completed(s) for k, s in studies.items()}, timing


def _score_round(config, scorer, variables, da_images, da_labels, asked: dict, image_hw):
    """Scores every asked candidate in one call: {(fold, repeat): [(accuracy, min loss)]}."""
    f = config.faa
    h, w = image_hw
    # One row per fold: the candidates of all its repeats (equal counts per fold: pad).
    rows = {fold: [] for fold in range(f.folds)}
    for (fold, r), items in asked.items():
        rows[fold] += [((fold, r), t, pol) for t, pol in items]
    width = max(len(v) for v in rows.values())
    tabs, keys = [], []
    for fold in range(f.folds):
        items = rows[fold] or [None]
        items = items + [items[-1]] * (width - len(items))
        fold_tabs = []
        for item in items:
            if item is None:  # a fold with nothing asked this round: a dummy candidate
                pol = (((faa.FAA_OPS[0], 0.0, 0.0),) * f.num_ops,) * f.num_sub_policies
                fold_tabs.append(faa.tables(pol, h, w))
                keys.append(jax.random.PRNGKey(0))
            else:
                (fo, r), trial, pol = item
                fold_tabs.append(faa.tables(pol, h, w))
                keys.append(candidate_key(config.seed, fo, r, trial.user_attrs["index"]))
        tabs.append({k: np.stack([t[k] for t in fold_tabs]) for k in fold_tabs[0]})
    tabs = {k: jnp.asarray(np.stack([t[k] for t in tabs])) for k in tabs[0]}
    keys = jnp.stack(keys).reshape(f.folds, width, -1)
    acc, loss = jax.device_get(scorer(variables, da_images, da_labels, tabs, keys))
    out = {k: [] for k in asked}
    for fold in range(f.folds):
        for j, item in enumerate(rows[fold]):
            out[item[0]].append((float(acc[fold, j]), float(loss[fold, j])))
    return out


def _index(trial) -> int:
    # Studies written before the "index" attribute existed numbered candidates by trial number.
    return trial.user_attrs.get("index", trial.number)


def final_policy(config, studies: dict) -> tuple:
    """(policy, top): the pooled top_n candidates of every study (duplicates dropped within a
    candidate), and per study the top candidates with their scores."""
    f = config.faa
    policy, top = [], {}
    for name in sorted(studies):
        trials = sorted(studies[name], key=lambda t: (-t.value, _index(t)))
        trials = trials[: f.top_n]
        top[name] = []
        for t in trials:
            cand = decode(t.params, f.num_sub_policies, f.num_ops)
            policy += faa.remove_duplicates(cand)
            top[name].append({"trial": _index(t), "accuracy": t.value,
                              "min_loss": t.user_attrs.get("min_loss"),
                              "policy": [[list(s) for s in sub] for sub in cand]})
    return tuple(policy), top


# ----------------------------------------------------------------------------------------------
# The whole method.

def _write_bytes(path, data: bytes):
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def search(config, workdir: str, *, progress: bool = True, scorer: Optional[Scorer] = None,
           hook: Optional[Callable] = None) -> dict:
    """Phases 1-3 (folds, TPE, policy); writes workdir/policy.json; returns the search report."""
    search_dir = os.path.join(workdir, SEARCH_DIR)
    os.makedirs(search_dir, exist_ok=True)
    data = sources.load(config.dataset, "train", data_dir=config.data_dir or None)
    dm, da = make_folds(data["label"], config.faa.folds, config.faa.test_fraction, config.seed,
                        config.faa.reduced_size)
    model, variables, fold_info = train_fold_models(config, data, dm, search_dir,
                                                    progress=progress)
    scorer = scorer or make_scorer(config, model)
    h, w = data["image"].shape[1:3]
    da_images = jnp.asarray(data["image"][da])
    da_labels = jnp.asarray(data["label"][da])
    started = time.time()
    studies, timing = run_search(config, search_dir, scorer, variables, da_images, da_labels,
                                 image_hw=(h, w), progress=progress, hook=hook)
    search_s = time.time() - started
    policy, top = final_policy(config, studies)
    policy_path = os.path.join(workdir, "policy.json")
    faa.save(policy_path, {POLICY_NAME: policy},
             source=f"gar_jax FAA search on {config.dataset} (seed {config.seed})")
    engine.write_json(os.path.join(search_dir, "top_candidates.json"), top)
    n_trials = timing["trials"]
    report = {
        "folds": fold_info, "dm_size": int(dm.shape[1]), "da_size": int(da.shape[1]),
        "search_seconds": search_s, "trials_this_run": n_trials,
        "trials_per_s": n_trials / search_s if n_trials and search_s > 0 else None,
        "timing": timing, "num_sub_policies_final": len(policy),
        "search_ops": list(search_ops(config)),
        "top_candidates": {k: [{"trial": c["trial"], "accuracy": c["accuracy"],
                                "min_loss": c["min_loss"]} for c in v] for k, v in top.items()},
    }
    engine.write_json(os.path.join(search_dir, "report.json"), report)
    return report


def learned_policy_report(config, policy) -> dict:
    probs = faa.op_probability(policy)
    return {"op_probability": probs,
            "destructive_op": (spaces.DESTRUCTIVE_OP.name if config.faa.destructive_op else None),
            "num_sub_policies": len(policy), "policy_file": "policy.json"}


def run(config, workdir: str) -> dict:
    """Search (resumable) then the final training in workdir/train; writes results.json.

    The final training is an ordinary engine run (`methods.supervised`'s step with
    ``augment="faa"``), whose report adds ``learned_policy`` and ``faa`` (the search's report)
    to its results. The fold models and the search are not engine runs: the engine trains one
    model per run, the K fold models are one vmapped program, and the TPE search is no SGD loop;
    they resume from ``search/folds.msgpack`` and the Optuna study instead.
    """
    validate(config)
    os.makedirs(workdir, exist_ok=True)
    report = search(config, workdir, progress=config.progress_bar)
    policy_path = os.path.join(workdir, "policy.json")
    policy = faa.load(policy_path, POLICY_NAME)
    from gar_jax import plots  # matplotlib: imported only when plotting
    plots.faa_policy_figure(policy, os.path.join(workdir, "policy.png"), title=config.dataset)
    extra = {"faa": report, "learned_policy": learned_policy_report(config, policy)}
    results = dict(extra)
    if config.faa.train_final:
        train_config = _train_config(config, os.path.abspath(policy_path))
        engine.validate(train_config)
        setup = engine.build(train_config)
        method = engine.Method(state=setup.state, advance=supervised.advance_fn(setup),
                               report=lambda *args: extra)
        results = engine.train(train_config, os.path.join(workdir, TRAIN_DIR), setup, method)
    engine.write_json(os.path.join(workdir, "results.json"), results)
    return results
