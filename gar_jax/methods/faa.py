"""Fast AutoAugment (Lim et al. 2019, "Fast AutoAugment", NeurIPS): a policy searched by density
matching with TPE, then a training run with it.

``python -m gar_jax.main --config=configs/digits_faa.py --workdir=DIR`` runs four phases; a
killed run resumes where it stopped when the same command is run again:

1. Fold models: an engine run in ``DIR/search/folds``. K stratified splits of the (optionally
   reduced) training set into D_M and D_A (``faa.test_fraction`` of it, 40% in the paper,
   section 3.2). One model per D_M, trained with the default augmentation (the standard
   pipeline). The K models are ONE engine state (`FoldStates`) trained by one jitted program per
   SGD step, vmapped over the folds or unrolled over them (``faa.fold_batching``, `over_folds`),
   so the engine checkpoints them mid-training and stops them on SIGTERM like any run; its
   "test" evaluation is each fold model's accuracy on its own clean D_A.
2. Search: ``DIR/search/study.db``. For every fold and repeat t < T (paper: T = 2), an Optuna
   study with ``TPESampler(constant_liar=True)`` over candidates of ``num_sub_policies``
   sub-policies x ``num_ops`` steps (op, probability U[0, 1], level U[0, 1]). Each round asks
   ``asks_per_batch`` trials of every study and scores all of them in one pass (`Scorer`): D_A
   augmented ``copies`` times, each image by a random sub-policy of its candidate; the reward is
   the fraction of D_A correct in at least one copy (FAA's max over copies). The study resumes
   from its own database (`run_search`).
3. Policy: ``DIR/policy.json``: the ``top_n`` candidates of every study, duplicate sub-policies
   (same op sequence) dropped within a candidate, pooled (the paper's final policy, section 3.3).
4. Training: an engine run in ``DIR`` itself (the config's supervised protocol with
   ``augment="faa"`` and that policy, then the standard pipeline), whose ``results.json`` adds
   ``learned_policy`` and ``faa`` (the search's report, also in ``DIR/search/report.json``).
   ``faa.train_final=False`` stops after phase 3 (no ``DIR/results.json``).

Determinism: fold f is initialized from fold_in(PRNGKey(seed), f); each asked batch of a study
uses a TPE sampler seeded from (seed, fold, repeat, batch index), and each candidate an
augmentation key from (seed, fold, repeat, its index); so the same seed gives the same fold
models, trials and policy, whether or not the run was killed on the way.
"""
import dataclasses
import functools
import os
import time
from typing import Callable, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gar_jax.augment import faa_policy  # FAA's ops, policy files and on-device replay
from gar_jax.augment import spaces
from gar_jax.data import sources
from gar_jax.errors import ConfigError
from gar_jax.methods import supervised
from gar_jax.train import checkpoint, engine, optim
from gar_jax.train import steps as train_steps
from gar_jax.train.state import INIT_STREAM, TrainState, initial_state
from gar_jax.models import variables

SEARCH_DIR = "search"                        # phases 1-3: DIR/search
FOLDS_DIR = os.path.join(SEARCH_DIR, "folds")  # phase 1's engine run
POLICY_FILE = "policy.json"                  # phase 3's output, replayed by phase 4
POLICY_NAME = "faa_searched"                 # its name inside policy.json
FOLD_BATCHING = ("vmap", "unroll")


# ----------------------------------------------------------------------------------------------
# Configs: the FAA config is a supervised config (the final training) plus ``config.faa``
# (configs/digits_faa.py documents every field).

def search_ops(config) -> tuple:
    """FAA op names of the search space: the 15, plus SamplePairing if ``destructive_op``, plus
    ``extra_ops`` (comma-separated library names of `faa_policy.EXTRA_OPS`: sample_pairing,
    flip_lr, flip_ud, rotate_90/180/270); ConfigError for an unknown or repeated one."""
    out = faa_policy.FAA_OPS + ((faa_policy.DESTRUCTIVE,) if config.faa.destructive_op else ())
    return spaces.add_extra_ops(out, config.faa.get("extra_ops", ""),
                                {v: k for k, v in faa_policy.EXTRA_OPS.items()},
                                "config.faa.extra_ops", "FAA")


def fold_config(config) -> ml_collections.ConfigDict:
    """The fold models' supervised config: the default augmentation, ``faa.fold_epochs``."""
    c = ml_collections.ConfigDict(config.to_dict())
    del c["faa"]
    c.experiment = "supervised"
    c.augment = config.faa.fold_augment
    c.augment_kwargs = ml_collections.ConfigDict({})
    c.num_epochs = config.faa.fold_epochs
    c.warmup_epochs = min(c.warmup_epochs, max(0.0, c.num_epochs - 1))
    return c


def train_config(config, policy_path: str) -> ml_collections.ConfigDict:
    """The final training's config: `config` with the searched policy file."""
    c = ml_collections.ConfigDict(config.to_dict())
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
    if f.fold_batching not in ("auto",) + FOLD_BATCHING:
        raise ConfigError(f"config.faa.fold_batching={f.fold_batching!r}: use 'auto', 'vmap' "
                          "or 'unroll'")
    if f.n_startup_trials < 0 or f.reduced_size < 0:
        raise ConfigError("config.faa.n_startup_trials and reduced_size must be >= 0")
    if f.top_n > f.trials:
        raise ConfigError(f"config.faa.top_n={f.top_n} > trials={f.trials}")
    search_ops(config)
    engine.validate(fold_config(config))
    n_train = sources.num_examples(config.dataset, "train")
    if f.reduced_size > n_train:
        raise ConfigError(f"config.faa.reduced_size={f.reduced_size} exceeds the {n_train} "
                          f"training images of {config.dataset}")
    # The final training's fields (its policy file does not exist yet: a published one stands in).
    engine.validate(train_config(config, "fa_reduced_cifar10"))


def check_workdir(workdir: str) -> None:
    """ConfigError for a workdir written by the FAA of an older gar_jax (fold models saved whole
    in search/folds.msgpack, final training in train/): it cannot be resumed."""
    for old in (os.path.join(SEARCH_DIR, "folds.msgpack"), os.path.join(SEARCH_DIR,
                "pending.json"), os.path.join("train", "checkpoints")):
        if os.path.exists(os.path.join(workdir, old)):
            raise ConfigError(f"{workdir} holds a Fast AutoAugment run of an older gar_jax "
                              f"({old}); use a new --workdir")


# ----------------------------------------------------------------------------------------------
# The whole method.

def run(config, workdir: str) -> dict:
    """Phases 1-4 (module doc) in `workdir`, each resuming where a kill stopped it. Returns the
    final training's results (written by the engine to workdir/results.json), or the search
    report if ``faa.train_final`` is False."""
    validate(config)
    check_workdir(workdir)
    report = search(config, workdir, progress=config.progress_bar)
    policy_path = os.path.abspath(os.path.join(workdir, POLICY_FILE))
    policy = faa_policy.load(policy_path, POLICY_NAME)
    from gar_jax import plots  # matplotlib: imported only when plotting
    plots.faa_policy_figure(policy, os.path.join(workdir, "policy.png"), title=config.dataset)
    if not config.faa.train_final:
        return report
    extra = {"faa": report, "learned_policy": learned_policy_report(config, policy)}
    final = train_config(config, policy_path)
    setup = engine.build(final)
    # The final training is the run in `workdir` itself: results.json names the FAA config the
    # user ran (the workdir's config.json) and the final training's augmentation.
    method = engine.Method(state=setup.state, advance=supervised.advance_fn(setup),
                           report=lambda *args: extra, describe=engine.describe(final))
    return engine.train(config, workdir, setup, method)


def search(config, workdir: str, *, progress: bool = True, scorer=None,
           hook: Optional[Callable] = None) -> dict:
    """Phases 1-3: fold models, TPE search, policy. Writes workdir/policy.json and
    search/{top_candidates,report}.json; returns the search report."""
    search_dir = os.path.join(workdir, SEARCH_DIR)
    os.makedirs(search_dir, exist_ok=True)
    data = sources.load(config.dataset, "train", data_dir=config.data_dir or None)
    dm, da = make_folds(data["label"], config.faa.folds, config.faa.test_fraction, config.seed,
                        config.faa.reduced_size)
    da_images, da_labels = jnp.asarray(data["image"][da]), jnp.asarray(data["label"][da])
    model, fold_variables, fold_report = train_fold_models(
        config, data, dm, da_images, da_labels, os.path.join(workdir, FOLDS_DIR))
    scorer = scorer or make_scorer(config, model)
    started = time.time()
    studies, timing = run_search(config, search_dir, scorer, fold_variables, da_images,
                                 da_labels, image_hw=data["image"].shape[1:3],
                                 progress=progress, hook=hook)
    search_s = time.time() - started
    policy, top = final_policy(config, studies)
    faa_policy.save(os.path.join(workdir, POLICY_FILE), {POLICY_NAME: policy},
                    source=f"gar_jax FAA search on {config.dataset} (seed {config.seed})")
    engine.write_json(os.path.join(search_dir, "top_candidates.json"), top)
    n_trials = timing["trials"]
    report = {
        "folds": fold_report, "dm_size": int(dm.shape[1]), "da_size": int(da.shape[1]),
        "search_seconds": search_s, "trials_this_run": n_trials,
        "trials_per_s": n_trials / search_s if n_trials and search_s > 0 else None,
        "timing": timing, "num_sub_policies_final": len(policy),
        "search_ops": list(search_ops(config)),
        "top_candidates": {k: [{"trial": c["trial"], "accuracy": c["accuracy"],
                                "min_loss": c["min_loss"]} for c in v] for k, v in top.items()},
    }
    engine.write_json(os.path.join(search_dir, "report.json"), report)
    return report


# ----------------------------------------------------------------------------------------------
# Phase 1: the folds and their models.

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


@flax.struct.dataclass
class FoldStates:
    """The K fold models as one engine state: ``folds`` holds K `TrainState` stacked on a leading
    fold axis (each with its own step, key and optimizer state), ``step`` int32 [] the run's
    step (every fold takes the same steps)."""
    step: jax.Array
    folds: TrainState


def init_fold_states(model, tx, image_shape, seed: int, folds: int) -> TrainState:
    """K initial states stacked on a leading fold axis (fold f: key fold_in(PRNGKey(seed), f))."""
    def init(rng):
        return initial_state(model, tx, image_shape, rng)

    keys = jax.vmap(lambda f: jax.random.fold_in(jax.random.PRNGKey(seed), f))(jnp.arange(folds))
    with jax.threefry_partitionable(False):
        return jax.jit(jax.vmap(init))(keys)


def fold_batching(config) -> str:
    """`config.faa.fold_batching` ("vmap" or "unroll"), "auto" resolved for the default backend:
    "unroll" on CPUs, "vmap" elsewhere (see `over_folds`)."""
    return _resolve_batching(config.faa.fold_batching)


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


def make_fold_step(model, tx, augment: Optional[Callable], batch_size: int,
                   batching: str = "auto"):
    """``(permutations, step)``: the two jitted programs of the fold models' SGD.

    ``permutations(folds, dm, epoch) -> int [K, n_M]``: fold f's order of its D_M rows ``dm[f]``
    in ``epoch``, drawn from fold_in(fold_in(rng_f, INIT_STREAM - 1), epoch) (a stream no step
    key uses). ``step(folds, images, labels, dm, perm, i) -> (folds, metrics [K, 2])``: SGD step
    ``i`` of the epoch for all K folds (stacked `TrainState`, donated; ``batching``: "vmap" over
    the folds or "unroll", `over_folds`; the same numbers); fold f trains on
    ``images[dm[f][perm[f, i*B:(i+1)*B]]]`` with step keys ``step_key(rng_f, step_f)`` (augment,
    dropout), as the supervised step. Metrics: (loss, accuracy) of each fold's batch.
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

    permutations = jax.jit(jax.vmap(permutation, in_axes=(0, 0, None)))
    step = jax.jit(over_folds(one_fold, batching, (0, None, None, 0, 0, None)),
                   donate_argnums=0)
    return permutations, step


def fold_method(config, images, labels, dm, da_images, da_labels) -> engine.Method:
    """Phase 1 as an engine `Method`: the K fold models (`FoldStates`), one SGD step of every
    fold per call; evaluation: each fold model's accuracy and loss on its clean D_A."""
    fc = fold_config(config)
    num_classes, image_shape = sources.info(config.dataset)
    model = engine.make_model(fc, num_classes)
    folds, dm_size = dm.shape
    spe = dm_size // fc.batch_size
    if spe < 1:
        raise ConfigError(f"D_M has {dm_size} images, fewer than batch_size={fc.batch_size}")
    tx, _ = optim.make_optimizer(fc, spe)
    permutations, fold_step = make_fold_step(model, tx, engine.make_augment(fc), fc.batch_size,
                                             fold_batching(config))
    dm = jnp.asarray(dm)
    perm = {}  # {epoch: its permutations}, drawn once per epoch (again after a resume)

    def advance(state, step):
        epoch, i = divmod(step, spe)
        if epoch not in perm:
            perm.clear()
            perm[epoch] = permutations(state.folds, dm, epoch)
        new, m = fold_step(state.folds, images, labels, dm, perm[epoch], i)
        return FoldStates(step=new.step[0], folds=new), {"loss": jnp.mean(m[:, 0]),
                                                         "accuracy": jnp.mean(m[:, 1])}

    forward = jax.jit(over_folds(lambda v, x: model.apply(v, x, train=False), fold_batching(
        config), (0, 0)))

    def evaluate(state):
        logits = forward({"params": state.folds.params,
                          "batch_stats": state.folds.batch_stats}, da_images)
        loss = train_steps.cross_entropy(logits, da_labels)
        accuracy = np.asarray(jnp.mean(jnp.argmax(logits, -1) == da_labels, axis=1))
        loss = np.asarray(jnp.mean(loss, axis=1))
        return {"accuracy": float(accuracy.mean()), "loss": float(loss.mean()),
                "count": int(da_labels.size), "per_fold": accuracy.tolist()}

    def report(workdir, state, epoch, evaluation):
        return {"da_accuracy_per_fold": evaluation["per_fold"]}

    return engine.Method(
        state=FoldStates(step=jnp.zeros((), jnp.int32),
                         folds=init_fold_states(model, tx, image_shape, fc.seed, folds)),
        advance=advance, evaluate=evaluate, report=report, steps_per_epoch=spe,
        total_steps=fc.num_epochs * spe, images_per_step=folds * fc.batch_size,
        describe={**engine.describe(fc), "folds": folds, "dm_size": dm_size,
                  "test_split": "each fold's D_A (no augmentation)"})


def train_fold_models(config, data: dict, dm, da_images, da_labels, folds_dir: str):
    """Trains (or resumes, or finds finished) the fold models' engine run in ``folds_dir``.

    Returns (model, variables stacked [K, ...] (params and batch_stats) read from the run's
    final checkpoint, report dict).
    """
    fc = fold_config(config)
    method = fold_method(config, jnp.asarray(data["image"]), jnp.asarray(data["label"]), dm,
                         da_images, da_labels)
    results = engine.train(fc, folds_dir, None, method)
    ckpt = checkpoint.Checkpointer(os.path.join(folds_dir, "checkpoints"))
    try:
        _, state, _ = ckpt.restore_readable(method.state)
    finally:
        ckpt.close()
    model = engine.make_model(fc, sources.info(config.dataset)[0])
    report = {"seconds": results["wall_time_s"], "epochs": fc.num_epochs,
              "steps_per_epoch": method.steps_per_epoch, "folds": int(dm.shape[0]),
              "dm_size": int(dm.shape[1]), "final_train_loss": results["curves"]["train_loss"][-1],
              "final_train_accuracy": results["curves"]["train_accuracy"][-1],
              "da_accuracy_per_fold": results["da_accuracy_per_fold"]}
    return model, {"params": state.folds.params, "batch_stats": state.folds.batch_stats}, report


# ----------------------------------------------------------------------------------------------
# Phase 2a: scoring candidates with the frozen fold models (density matching).

@dataclasses.dataclass(frozen=True)
class Scorer:
    """Scores candidate policies on D_A with the frozen fold models (FAA's density matching).

    ``scorer(variables, images uint8 [F, N, H, W, C], labels int32 [F, N], tabs, keys)``:
    variables of the F fold models stacked [F, ...]; ``tabs`` = `faa_policy.tables` of C
    candidates per fold stacked [F, C, S, K, ...]; keys [F, C] (one per candidate). Returns
    (accuracy [F, C]: fraction of D_A correct in at least one of the ``copies`` augmented
    copies, loss [F, C]: mean over D_A of the minimum loss over the copies), in one jitted call.

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
            d = faa_policy.draw(k_pol, tab_rows["probability"][ci])
            d["sub"] = d["sub"] + ci * s
            return d, k_std

        draws, std_keys = jax.vmap(one)(keys.reshape(-1, keys.shape[-1]), cand.reshape(-1))
        x = jnp.broadcast_to(images[:, None], (g, self.copies) + images.shape[1:])
        x = x.reshape((-1,) + images.shape[2:])
        x = faa_policy.apply_draws(flat_tab, self.names, x, draws, group=n)
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
    names = frozenset(faa_policy.OP_NAME[o] for o in search_ops(config))
    standard = engine.make_augment(fold_config(config)) if config.faa.score_with_standard else None
    return Scorer(model, names, config.faa.copies, standard, config.faa.score_chunk,
                  fold_batching(config))


# ----------------------------------------------------------------------------------------------
# Phase 2b: the TPE search with Optuna (ask and tell), resumable from its study database.

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


def _finish_interrupted(study) -> None:
    """Settles the trials a kill left RUNNING, so the study continues as if never killed.

    A round stores every trial's score (user attribute "score": [accuracy, min loss]) before
    telling any: if all of a study's running trials carry one, they are told it; otherwise none
    is (all are failed) and the next round asks that batch again, with the same sampler seed and
    the same completed trials, so the same candidates and the same scores."""
    import optuna
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    scored = all("score" in t.user_attrs for t in running)
    for t in running:
        if scored:
            study.tell(t.number, t.user_attrs["score"][0])
        else:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)


def run_search(config, search_dir: str, scorer: Scorer, variables, da_images, da_labels, *,
               image_hw, progress: bool = True, hook: Optional[Callable] = None) -> tuple:
    """Runs (or resumes) the K x T TPE studies in ``search_dir/study.db``.

    Returns ({study name: completed FrozenTrials}, timing dict of this call).

    variables: fold models stacked [K, ...]; da_images uint8 [K, N, H, W, C], da_labels [K, N].
    Each round asks up to ``asks_per_batch`` trials of every unfinished study, scores them all in
    one call (`_score_round`), stores every score in its trial, then tells them (a kill anywhere
    in a round is settled by `_finish_interrupted` on resume).
    hook(event, round): test hook called at "asked" (all trials of a round asked), "scored:i"
    (after i scores stored) and "told:i" (after i tells), to simulate kills.
    """
    import optuna
    from tqdm.auto import tqdm
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    f = config.faa
    ops = search_ops(config)
    os.makedirs(search_dir, exist_ok=True)
    storage = optuna.storages.RDBStorage(storage_url(search_dir))
    names = [(fold, r) for r in range(f.repeats) for fold in range(f.folds)]
    studies = {}
    for key_fr in names:
        studies[key_fr] = optuna.create_study(study_name=study_name(*key_fr), storage=storage,
                                              direction="maximize", load_if_exists=True)
        _finish_interrupted(studies[key_fr])

    def completed(study):
        return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))

    def event(name):
        if hook:
            hook(name, round_index)

    done = sum(len(completed(s)) for s in studies.values())
    bar = tqdm(total=len(names) * f.trials, initial=done, desc="FAA search", unit="trial",
               disable=not progress, dynamic_ncols=True)
    timing = {"ask_s": 0.0, "score_s": 0.0, "tell_s": 0.0, "trials": 0}
    round_index = 0
    try:
        while True:
            asked = {}  # {(fold, repeat): [(trial, candidate)]}
            t0 = time.time()
            for key_fr in names:
                study = studies[key_fr]
                n_done = len(completed(study))
                n_new = min(f.asks_per_batch, f.trials - n_done)
                if n_new <= 0:
                    continue
                study.sampler = optuna.samplers.TPESampler(
                    seed=_sampler_seed(config.seed, *key_fr, n_done // f.asks_per_batch),
                    constant_liar=True, n_startup_trials=f.n_startup_trials)
                asked[key_fr] = []
                for j in range(n_new):
                    t = study.ask()
                    t.set_user_attr("index", n_done + j)
                    asked[key_fr].append(
                        (t, suggest_policy(t, ops, f.num_sub_policies, f.num_ops)))
            if not asked:
                break
            timing["ask_s"] += time.time() - t0
            event("asked")
            t0 = time.time()
            scores = _score_round(config, scorer, variables, da_images, da_labels, asked,
                                  image_hw)
            timing["score_s"] += time.time() - t0
            t0 = time.time()
            pairs = [(trial, score) for k in asked
                     for (trial, _), score in zip(asked[k], scores[k])]
            for i, (trial, score) in enumerate(pairs):
                trial.set_user_attr("score", list(score))
                event(f"scored:{i + 1}")
            for i, (trial, (accuracy, _)) in enumerate(pairs):
                trial.study.tell(trial, accuracy)
                event(f"told:{i + 1}")
            timing["tell_s"] += time.time() - t0
            timing["trials"] += len(pairs)
            bar.update(len(pairs))
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
                pol = (((faa_policy.FAA_OPS[0], 0.0, 0.0),) * f.num_ops,) * f.num_sub_policies
                fold_tabs.append(faa_policy.tables(pol, h, w))
                keys.append(jax.random.PRNGKey(0))
            else:
                (fo, r), trial, pol = item
                fold_tabs.append(faa_policy.tables(pol, h, w))
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


# ----------------------------------------------------------------------------------------------
# Phase 3: the final policy, and what it says.

def final_policy(config, studies: dict) -> tuple:
    """(policy, top): the pooled top_n candidates of every study (duplicates dropped within a
    candidate), and per study the top candidates with their scores."""
    f = config.faa
    policy, top = [], {}
    for name in sorted(studies):
        trials = sorted(studies[name], key=lambda t: (-t.value, t.user_attrs["index"]))
        top[name] = []
        for t in trials[: f.top_n]:
            cand = decode(t.params, f.num_sub_policies, f.num_ops)
            policy += faa_policy.remove_duplicates(cand)
            top[name].append({"trial": t.user_attrs["index"], "accuracy": t.value,
                              "min_loss": t.user_attrs["score"][1],
                              "policy": [[list(s) for s in sub] for sub in cand]})
    return tuple(policy), top


def learned_policy_report(config, policy) -> dict:
    """results.json's ``learned_policy``: P(an image gets op) under the final policy."""
    ops_ = search_ops(config)
    return {"op_probability": faa_policy.op_probability(policy, ops_),
            "destructive_op": (spaces.DESTRUCTIVE_OP.name if faa_policy.DESTRUCTIVE in ops_
                               else None),
            "num_sub_policies": len(policy), "policy_file": POLICY_FILE}
