"""Supervised training (``experiment = "supervised"``) and the host loop other steps plug into.

``python -m gar_jax.main --config=configs/cifar10_baseline.py --workdir=DIR`` calls `validate` then
`run`, which is::

    setup = build(config)                          # mesh, data on devices, model, optimizer, state
    fit(config, workdir, setup, advance=supervised_advance(setup))

`fit` is the loop: it resumes from the newest checkpoint in ``workdir/checkpoints`` (the same
command continues the same trajectory), calls ``advance(state, step)`` until
``num_epochs * steps_per_epoch`` steps are done, writes metrics (JSON lines, TensorBoard) every
``log_every_steps`` and at epoch ends, evaluates on the whole test split every
``eval_every_epochs``, checkpoints every ``checkpoint_every_steps`` and at the end, shows a
progress bar (images/s, ETA), stops on a non-finite loss before saving it, and writes
``workdir/results.json``.

Plugging in another step (OLA): build the pieces, extend the state, and give `fit` an ``advance``
that performs ``steps_per_call`` SGD steps::

    setup = build(config)
    state = OLAState(**vars(setup.state), meta_params=..., meta_opt_state=...)
    pair = jax.jit(ola_pair_step, donate_argnums=0)    # built from gar_jax.train.steps pieces
    def advance(state, step):                          # step = SGD steps done so far (even)
        return pair(state, setup.train_data.batch(step), setup.train_data.batch(step + 1),
                    step_key(state.rng, step))         # -> (state, {name: scalar})
    return fit(config, workdir, setup, advance=advance, state=state, steps_per_call=2,
               on_epoch_end=write_policy_plots)

``advance`` must increase ``state.step`` by ``steps_per_call`` and return scalar metrics;
metrics named ``loss`` are checked for NaN/inf. Everything else (resume, checkpoints of the
extended state, evaluation, logging, results) is shared.
"""
import dataclasses
import json
import os
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gar_jax.data import sources, stats
from gar_jax.data.device import DeviceDataset, EvalBatches
from gar_jax.errors import ConfigError
from gar_jax.models.wrn import WideResNet
from gar_jax.train import checkpoint, metrics, optim, steps
from gar_jax.train.mesh import check_batch_size, initialize_distributed, make_mesh
from gar_jax.train.state import TrainState, create_state

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def make_augment(config) -> Optional[Callable]:
    """``fn(key, images uint8) -> uint8``: the config's policy then the standard pipeline.

    ``augment="none"``: None (no augmentation); ``"standard"``: the standard pipeline only;
    otherwise ``get_policy(augment, **augment_kwargs)`` followed by the standard pipeline
    (``config.standard``: pad, cutout, Cutout fill = dataset mean or black).
    """
    if config.augment == "none":
        if config.augment_kwargs.to_dict():
            raise ConfigError("config.augment='none' takes no augment_kwargs")
        return None
    from gar_jax.augment import policies

    mean, _ = stats.mean_std(config.dataset)
    fill = tuple(int(round(255 * m)) for m in mean) if config.standard.fill_mean else 0
    kwargs = config.augment_kwargs.to_dict()
    if config.augment == "standard" and kwargs:
        raise ConfigError("config.augment='standard' takes its settings from config.standard, "
                          f"not augment_kwargs={kwargs}")
    try:
        standard = policies.get_policy("standard", pad=config.standard.pad,
                                       cutout=config.standard.cutout, fill=fill,
                                       flip=config.standard.get("flip", True))
        if config.augment == "standard":
            return standard
        return policies.compose(policies.get_policy(config.augment, **kwargs), standard)
    except ConfigError:
        raise
    except (KeyError, ValueError, TypeError) as e:
        raise ConfigError(f"config.augment={config.augment!r} with augment_kwargs={kwargs}: "
                          f"{e}") from e


def make_model(config, num_classes: int) -> WideResNet:
    """The config's WRN (``config.model``) with the dataset's normalization statistics."""
    mean, std = stats.mean_std(config.dataset)
    m = config.model
    return WideResNet(depth=m.depth, width=m.width, num_classes=num_classes, mean=mean, std=std,
                      dropout_rate=m.dropout_rate, norm=m.norm, groups=m.groups,
                      dtype=_DTYPES[m.dtype])


def validate(config) -> None:
    """Raises ConfigError on a bad config, before any data is loaded or compiled.

    Starts multi-host JAX first when ``config.distributed`` asks for it (the device count of a
    multi-host run is only known afterwards).
    """
    initialize_distributed(config.distributed)
    sources.info(config.dataset)
    stats.mean_std(config.dataset)
    check_batch_size("batch_size", config.batch_size, jax.device_count())
    check_batch_size("eval_batch_size", config.eval_batch_size, jax.device_count())
    if config.batch_size % jax.process_count():
        raise ConfigError(f"config.batch_size={config.batch_size} must be a multiple of the "
                          f"{jax.process_count()} processes")
    m = config.model
    if m.depth < 10 or (m.depth - 4) % 6:
        raise ConfigError(f"config.model.depth={m.depth}: WRN depth must be 6n + 4 (10, 16, 22, "
                          "28, ...)")
    if m.width < 1:
        raise ConfigError(f"config.model.width={m.width} must be >= 1")
    if m.norm not in ("batch", "group"):
        raise ConfigError(f"config.model.norm={m.norm!r} must be 'batch' or 'group'")
    if m.dtype not in _DTYPES:
        raise ConfigError(f"config.model.dtype={m.dtype!r} must be one of {sorted(_DTYPES)}")
    if not 0.0 <= m.dropout_rate < 1.0:
        raise ConfigError(f"config.model.dropout_rate={m.dropout_rate} must be in [0, 1)")
    if config.num_epochs < 1 or config.learning_rate <= 0:
        raise ConfigError("config.num_epochs must be >= 1 and config.learning_rate > 0")
    if not 0 <= config.warmup_epochs < config.num_epochs:
        raise ConfigError(f"config.warmup_epochs={config.warmup_epochs} must be in "
                          f"[0, num_epochs={config.num_epochs}): the cosine phase needs steps")
    for name in ("eval_every_epochs", "log_every_steps", "checkpoint_every_steps",
                 "keep_checkpoints"):
        if config[name] < 1:
            raise ConfigError(f"config.{name}={config[name]} must be >= 1")
    make_augment(config)


@dataclasses.dataclass
class Setup:
    """Everything a training loop needs, built from a config by `build`."""
    config: object
    mesh: object
    model: WideResNet
    train_data: DeviceDataset
    eval_data: EvalBatches
    tx: object
    schedule: Callable
    state: TrainState
    augment: Optional[Callable]
    eval_step: Callable

    @property
    def steps_per_epoch(self) -> int:
        return self.train_data.steps_per_epoch

    @property
    def total_steps(self) -> int:
        return self.config.num_epochs * self.train_data.steps_per_epoch


def build(config, mesh=None) -> Setup:
    """Loads the data onto the devices and initializes model, optimizer and state.

    `mesh` defaults to all devices (`make_mesh`). Raises ConfigError for a dataset that is not
    available (before any compilation).
    """
    initialize_distributed(config.distributed)
    num_classes, image_shape = sources.info(config.dataset)
    data_dir = config.data_dir or None
    train = sources.load(config.dataset, "train", data_dir=data_dir)
    test = sources.load(config.dataset, "test", data_dir=data_dir)
    mesh = make_mesh() if mesh is None else mesh
    train_data = DeviceDataset.create(train, mesh, batch_size=config.batch_size, seed=config.seed)
    eval_data = EvalBatches(test, mesh, config.eval_batch_size)
    model = make_model(config, num_classes)
    tx, schedule = optim.make_optimizer(config, train_data.steps_per_epoch)
    state = create_state(model, tx, image_shape=image_shape, seed=config.seed, mesh=mesh)
    return Setup(config, mesh, model, train_data, eval_data, tx, schedule, state,
                 make_augment(config), steps.make_eval_step(model))


def supervised_advance(setup: Setup) -> Callable:
    """``advance(state, step) -> (state, metrics)``: one plain supervised step on batch `step`."""
    train_step = steps.make_train_step(setup.model, setup.tx, setup.mesh, augment=setup.augment,
                                       schedule=setup.schedule)

    def advance(state, step):
        return train_step(state, setup.train_data.batch(step), steps.step_key(state.rng, step))

    return advance


class _Pending:
    """Per-step metrics kept on device until the next log point (no per-step host sync)."""

    def __init__(self):
        self.items = []

    def add(self, step: int, values: dict):
        self.items.append((step, values))

    def fetch(self, last_good_checkpoint: Optional[int], workdir: str) -> dict:
        """Means over the pending steps; raises FloatingPointError at the first bad loss."""
        items, self.items = jax.device_get(self.items), []
        for step, values in items:
            loss = values.get("loss")
            if loss is not None and not np.isfinite(loss):
                where = ("no checkpoint yet" if last_good_checkpoint is None else
                         f"last good checkpoint: step {last_good_checkpoint} in {workdir}")
                raise FloatingPointError(
                    f"training loss is {float(loss)} at step {step}; stopped ({where}). "
                    "Lower config.learning_rate or check the data.")
        if not items:
            return {}
        return {k: float(np.mean([v[k] for _, v in items])) for k in items[0][1]}


def fit(config, workdir: str, setup: Setup, *, advance: Callable, state=None,
        steps_per_call: int = 1, on_epoch_end: Sequence[Callable] = (),
        on_step: Sequence[Callable] = ()) -> dict:
    """Runs (or resumes) the training loop described in the module doc; returns the results.

    Args:
      config: the run's config (uses num_epochs, the *_every_* fields, keep_checkpoints,
        progress_bar, batch_size).
      workdir: run directory (checkpoints/, metrics.jsonl, tensorboard/, results.json).
      setup: from `build`.
      advance: ``fn(state, step: int) -> (state, {name: scalar})`` doing `steps_per_call` steps.
      state: initial state (default ``setup.state``); its structure is the checkpoint's.
      on_epoch_end: callables ``fn(epoch: int, state, eval_metrics: dict)`` run after evaluation.
      on_step: callables ``fn(step: int, state)`` run after each call of `advance` (tests).

    Returns:
      The dict written to ``workdir/results.json`` (process 0 writes it).
    """
    state = setup.state if state is None else state
    spe, total = setup.steps_per_epoch, setup.total_steps
    chief = jax.process_index() == 0
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                   max_to_keep=config.keep_checkpoints)
    meta = {"steps_per_epoch": spe, "total_steps": total, "wall_time_s": 0.0,
            "curves": {"epoch": [], "test_accuracy": [], "test_loss": [], "train_loss": [],
                       "train_accuracy": []}}
    last_saved = ckpt.latest_step()
    if last_saved is not None:
        state, saved = ckpt.restore(state)
        if (saved["steps_per_epoch"], saved["total_steps"]) != (spe, total):
            ckpt.close()
            raise ConfigError(
                f"{workdir} holds a run with {saved['steps_per_epoch']} steps/epoch and "
                f"{saved['total_steps']} steps, this config has {spe} and {total}; use a new "
                "--workdir")
        meta = saved
    step = int(jax.device_get(state.step))
    writer = metrics.MetricsWriter(workdir, enabled=chief)
    bar = metrics.progress_bar(total_steps=total, start_step=step,
                               batch_size=config.batch_size,
                               enabled=chief and config.progress_bar)
    pending, epoch_train = _Pending(), []
    started = time.time()
    timed_steps, timed_s, mark = 0, 0.0, None  # throughput, excluding compilation and evaluation
    last_eval = None
    try:
        while step < total:
            state, values = advance(state, step)
            pending.add(step, values)
            before, step = step, step + steps_per_call
            bar.update(steps_per_call)
            for hook in on_step:
                hook(step, state)
            epoch_done = step // spe > before // spe
            save_now = step // config.checkpoint_every_steps > before // \
                config.checkpoint_every_steps or step >= total
            if step // config.log_every_steps > before // config.log_every_steps or \
                    epoch_done or save_now:
                n = len(pending.items)
                logged = pending.fetch(last_saved, workdir)
                now = time.time()
                if mark is not None:
                    timed_steps, timed_s = timed_steps + n * steps_per_call, timed_s + now - mark
                mark = now
                epoch_train.append((n, logged))
                scalars = {f"train/{k}": v for k, v in logged.items()}
                if timed_s > 0:
                    scalars["train/images_per_s"] = timed_steps * config.batch_size / timed_s
                writer.write(step, {"epoch": step / spe, **scalars})
            epoch = step // spe
            if epoch_done and (epoch % config.eval_every_epochs == 0 or step >= total):
                last_eval = steps.evaluate(setup.eval_step, state, setup.eval_data)
                _record_epoch(meta["curves"], epoch, last_eval, epoch_train)
                epoch_train = []
                writer.write(step, {"epoch": epoch, "test/accuracy": last_eval["accuracy"],
                                    "test/loss": last_eval["loss"]})
                bar.set_postfix(epoch=epoch, test_acc=f"{last_eval['accuracy']:.4f}")
                for hook in on_epoch_end:
                    hook(epoch, state, last_eval)
                mark = time.time()
            if save_now:
                meta["wall_time_s"] += time.time() - started
                started = time.time()
                # The data position is the step; epoch and position are recorded for people.
                meta["epoch"], meta["position"] = divmod(step, spe)
                ckpt.save(step, state, meta)
                last_saved = step
    finally:
        bar.close()
        writer.close()
        ckpt.close()
    if last_eval is None:  # resumed a finished run, or it ended between evaluations
        last_eval = steps.evaluate(setup.eval_step, state, setup.eval_data)
    meta["wall_time_s"] += time.time() - started
    results = _results(config, setup, meta, last_eval, step,
                       timed_steps * config.batch_size / timed_s if timed_s > 0 else None)
    if chief:
        with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return results


def _record_epoch(curves: dict, epoch: int, evaluation: dict, epoch_train) -> None:
    """Appends one epoch's test and (step-weighted mean) train metrics to `curves`."""
    curves["epoch"].append(epoch)
    curves["test_accuracy"].append(evaluation["accuracy"])
    curves["test_loss"].append(evaluation["loss"])
    for name in ("loss", "accuracy"):
        pairs = [(n, m[name]) for n, m in epoch_train if name in m]
        weight = sum(n for n, _ in pairs)
        curves[f"train_{name}"].append(sum(n * v for n, v in pairs) / weight if weight else None)


def _results(config, setup: Setup, meta: dict, evaluation: dict, step: int,
             images_per_s: Optional[float]) -> dict:
    device = jax.devices()[0]
    return {
        "dataset": config.dataset,
        "augment": config.augment,
        "model": f"WRN-{config.model.depth}-{config.model.width} ({config.model.norm} norm)",
        "test_accuracy": evaluation["accuracy"],
        "test_error": 1.0 - evaluation["accuracy"],
        "test_loss": evaluation["loss"],
        "test_examples": int(evaluation["count"]),
        "steps": step,
        "epochs": step / setup.steps_per_epoch,
        "curves": meta["curves"],
        "wall_time_s": meta["wall_time_s"],
        "train_images_per_s": images_per_s,
        "device_kind": device.device_kind,
        "platform": device.platform,
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        "config": config.to_dict(),
    }


def run(config, workdir: str) -> dict:
    """Trains and evaluates the config's supervised run in `workdir` (resuming if possible)."""
    validate(config)
    setup = build(config)
    return fit(config, workdir, setup, advance=supervised_advance(setup))
