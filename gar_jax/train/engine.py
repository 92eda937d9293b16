"""The training engine: one host loop that every method plugs into.

A method (a fixed policy, OLA, the toy split learner, smart_augmentation, DRA, Fast AutoAugment)
supplies a `Method`: its initial state, a pure jitted ``advance`` and, optionally, a ``report`` of
what it learned. `train` does everything else, once, for all of them::

    setup = engine.build(config)                     # mesh, data on devices, WRN, SGD, state
    method = engine.Method(state=my_state,           # TrainState or a flax.struct subclass
                           advance=my_advance,       # (state, step) -> (state, {name: scalar})
                           steps_per_call=2,         # SGD steps per call (OLA: a step pair)
                           report=my_report)         # (workdir, state, epoch, eval) -> dict
    results = engine.train(config, workdir, setup, method)

`train`:
- refuses a workdir that holds a run of another config (`check_workdir`, the one such check:
  ``config.json``; the CLI runs it too, before any work);
- resumes from the newest orbax checkpoint in ``workdir/checkpoints`` (state + JSON progress
  record), printing ``resumed from step N (epoch E)``; the same command continues the same
  trajectory, and an epoch's train metrics cover the whole epoch even if the run resumed in it;
- calls ``advance`` until ``total_steps``; writes metrics (JSON lines + TensorBoard) every
  ``log_every_steps`` and at epoch ends; evaluates every ``eval_every_epochs``; checkpoints every
  ``checkpoint_every_steps`` and at the end; shows a progress bar (images/s, ETA);
- stops on a non-finite ``loss`` metric (or non-finite state at a checkpoint) before
  checkpointing it: `Diverged` (a FloatingPointError; the CLI exits `DIVERGED_EXIT`), keeping
  the metrics written so far and the last good checkpoint;
- resumes from the newest checkpoint that reads (an unreadable newer one is moved aside, see
  `gar_jax.train.checkpoint`); a checkpoint the storage refuses (disk full) raises
  `checkpoint.StorageError` (the CLI exits `STORAGE_EXIT`) with the previous ones intact;
- on SIGTERM (a cluster's preemption) or Ctrl-C: finishes the current call, checkpoints this
  step and raises `Preempted` (the CLI exits 128 + signal); a second Ctrl-C aborts at once.
  With several processes, JAX's preemption service (started by ``jax.distributed``) catches
  SIGTERM and `multihost_utils.reached_preemption_sync_point` makes every process stop at the
  same step (a signal to any one of them stops all);
- after each evaluation calls ``report`` (chief only) and merges the dict it returns into
  ``results.json`` (``{"learned_policy": {"op_probability": {op: p}, "destructive_op": ...}}``
  for methods that learn augmentation), written atomically by `write_json`.

A method that is not a WRN on a `Setup` (the toy split's nets, vmapped over seeds) passes
``setup=None`` and gives ``evaluate``, ``steps_per_epoch``, ``total_steps`` and
``images_per_step`` in its `Method`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gar_jax.files import write_json, write_text  # noqa: F401 (re-exported)
from gar_jax.data import sources, stats
from gar_jax.data.device import DeviceDataset, EvalBatches
from gar_jax.errors import ConfigError
from gar_jax.models.wrn import WideResNet
from gar_jax.train import checkpoint, metrics, optim, steps
from gar_jax.mesh import check_batch_size, initialize_distributed, make_mesh
from gar_jax.train.state import TrainState, create_state

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Exit statuses of the CLI besides 0, 2 (bad input) and 128 + signal (SIGTERM 143, Ctrl-C 130).
DIVERGED_EXIT = 3  # the loss (or the state) became NaN/inf: rerunning would not help
STORAGE_EXIT = 4   # a write the storage refused (disk full): free space, rerun to resume
# Loop settings a config may omit (the WRN configs set them all).
LOOP_DEFAULTS = {"eval_every_epochs": 1, "log_every_steps": 100, "checkpoint_every_steps": 2000,
                 "keep_checkpoints": 2, "progress_bar": True}


# ----------------------------------------------------------------------------- the WRN setup


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

    kwargs = config.augment_kwargs.to_dict()
    if config.augment == "standard" and kwargs:
        raise ConfigError("config.augment='standard' takes its settings from config.standard, "
                          f"not augment_kwargs={kwargs}")
    try:
        standard = make_standard(config)
        if config.augment == "standard":
            return standard
        return policies.compose(policies.get_policy(config.augment, **kwargs), standard)
    except ConfigError:
        raise
    except (KeyError, ValueError, TypeError) as e:
        raise ConfigError(f"config.augment={config.augment!r} with augment_kwargs={kwargs}: "
                          f"{e}") from e


def make_standard(config) -> Callable:
    """The standard pipeline of ``config.standard`` (pad-crop, flip unless ``flip=False``,
    Cutout)."""
    from gar_jax.augment import policies

    mean, _ = stats.mean_std(config.dataset)
    fill = tuple(int(round(255 * m)) for m in mean) if config.standard.fill_mean else 0
    return policies.get_policy("standard", pad=config.standard.pad,
                               cutout=config.standard.cutout, fill=fill,
                               flip=config.standard.get("flip", True))


def make_model(config, num_classes: int) -> WideResNet:
    """The config's WRN (``config.model``) with the dataset's normalization statistics."""
    mean, std = stats.mean_std(config.dataset)
    m = config.model
    return WideResNet(depth=m.depth, width=m.width, num_classes=num_classes, mean=mean, std=std,
                      dropout_rate=m.dropout_rate, norm=m.norm, groups=m.groups,
                      dtype=_DTYPES[m.dtype])


def validate(config) -> None:
    """ConfigError on a bad WRN training config, before any data is loaded or compiled.

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
    if not 0 <= config.get("momentum", 0.0) < 1:
        raise ConfigError(f"config.momentum={config.momentum} must be in [0, 1)")
    for name in ("weight_decay", "grad_clip_norm"):
        if config.get(name, 0.0) < 0:
            raise ConfigError(f"config.{name}={config[name]} must be >= 0 (0: off)")
    if not 0 <= config.warmup_epochs < config.num_epochs:
        raise ConfigError(f"config.warmup_epochs={config.warmup_epochs} must be in "
                          f"[0, num_epochs={config.num_epochs}): the cosine phase needs steps")
    validate_loop(config)
    make_augment(config)


def validate_loop(config) -> None:
    """ConfigError on a bad loop setting (`LOOP_DEFAULTS`)."""
    for name in ("eval_every_epochs", "log_every_steps", "checkpoint_every_steps",
                 "keep_checkpoints"):
        if _setting(config, name) < 1:
            raise ConfigError(f"config.{name}={_setting(config, name)} must be >= 1")


@dataclasses.dataclass
class Setup:
    """Everything a WRN training run needs, built from a config by `build`."""
    config: Any
    mesh: Any
    model: WideResNet
    train_data: DeviceDataset
    eval_data: EvalBatches
    tx: Any
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


def build(config, *, train: Optional[dict] = None, test: Optional[dict] = None,
          mesh=None) -> Setup:
    """Loads the data onto the devices and initializes model, optimizer and state.

    Args:
      config: a WRN training config (configs/cifar10_baseline.py's fields).
      train, test: ``{"image": uint8 [N,H,W,C], "label": int32 [N]}`` replacing the config's
        dataset splits (a search's subset, a held-out split); default: ``sources.load``.
      mesh: default all devices (`make_mesh`).

    Raises ConfigError for a dataset that is not available (before any compilation).
    """
    initialize_distributed(config.distributed)
    num_classes, image_shape = sources.info(config.dataset)
    data_dir = config.data_dir or None
    train = sources.load(config.dataset, "train", data_dir=data_dir) if train is None else train
    test = sources.load(config.dataset, "test", data_dir=data_dir) if test is None else test
    mesh = make_mesh() if mesh is None else mesh
    train_data = DeviceDataset.create(train, mesh, batch_size=config.batch_size, seed=config.seed)
    eval_data = EvalBatches(test, mesh, config.eval_batch_size)
    model = make_model(config, num_classes)
    tx, schedule = optim.make_optimizer(config, train_data.steps_per_epoch)
    state = create_state(model, tx, image_shape=image_shape, seed=config.seed, mesh=mesh)
    return Setup(config, mesh, model, train_data, eval_data, tx, schedule, state,
                 make_augment(config), steps.make_eval_step(model))


def describe(config) -> dict:
    """The results.json fields that name a WRN run."""
    return {"dataset": config.dataset, "augment": config.augment,
            "model": f"WRN-{config.model.depth}-{config.model.width} ({config.model.norm} norm)"}


# ---------------------------------------------------------------------------- the plug-in


@dataclasses.dataclass
class Method:
    """What a method hands to `train` (see the module doc).

    state: the initial state (a `TrainState` or flax.struct subclass with a ``step`` field);
      checkpointed whole and restored on resume, so it must hold everything the run needs.
    advance: ``fn(state, step: int) -> (state, {name: scalar})`` doing `steps_per_call` steps
      from data step `step`; metric ``loss`` is checked for NaN/inf.
    report: ``fn(workdir, state, epoch, evaluation) -> dict`` (chief only) after each
      evaluation: writes what was learned (policy.json, plots); the dict goes into results.json.
    evaluate: ``fn(state) -> {"accuracy", "loss", "count", ...}``; default: the test split of
      the `Setup`. steps_per_epoch / total_steps / images_per_step: default from the `Setup`.
    describe: fields for results.json (default `describe(config)` with a `Setup`).
    """
    state: Any
    advance: Callable
    steps_per_call: int = 1
    report: Optional[Callable] = None
    evaluate: Optional[Callable] = None
    steps_per_epoch: Optional[int] = None
    total_steps: Optional[int] = None
    images_per_step: Optional[int] = None
    describe: Optional[dict] = None


class Diverged(FloatingPointError):
    """The loss or the state became NaN/inf; the run stopped before checkpointing it."""


class Preempted(Exception):
    """A run stopped by SIGTERM or Ctrl-C after checkpointing its current step."""

    def __init__(self, signum: int, step: int, workdir: str):
        self.signum, self.step, self.workdir = signum, step, workdir
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint "
                         f"saved in {workdir}: rerun the same command to resume")


def finished_results(workdir: str) -> Optional[dict]:
    """The results.json of a finished run in `workdir`, or None."""
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


CONFIG_FILE = "config.json"
# Fields that cannot change a run's results: a rerun on the same workdir may change them.
IGNORED_FIELDS = ("progress_bar", "data_dir", "log_every_steps", "checkpoint_every_steps",
                  "keep_checkpoints")


# Fields added after workdirs began recording their config, each with the value that does what
# the code did before it existed: a run recorded without the field is the same run as one with
# it at that value (so a run started before an upgrade resumes after it), and at any other
# value it is another run. A new option whose default keeps the old behaviour belongs here.
ADDED_FIELDS = {"ola.target_ema": 0.0, "ola.gar_target": "next", "ola.before_weight": 0.0,
                "ola.fd_step": 1e-5}


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_fields(config) -> dict:
    """``{"model.depth": 28, ...}``: the config's fields as JSON values (tuples become lists)."""
    return _flatten(json.loads(json.dumps(config.to_dict(), default=str)))


def check_workdir(workdir: str, config) -> None:
    """The one check of a workdir against a config (the CLI calls it before any work, `train`
    at its start): ConfigError if `workdir` holds a run of another config (its ``config.json``,
    comparing every field but `IGNORED_FIELDS`; a field of `ADDED_FIELDS` that it lacks counts
    as that field's old-behaviour value) or a run made before workdirs recorded their
    config; otherwise records the config there (process 0)."""
    path = os.path.join(workdir, CONFIG_FILE)
    current = config_fields(config)
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                saved = _flatten(json.load(f))
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read {path} ({e}); delete it or use another --workdir")
        missing = object()
        saved = {**{k: v for k, v in ADDED_FIELDS.items() if k in current}, **saved}
        names = sorted(k for k in set(saved) | set(current)
                       if k.rpartition(".")[2] not in IGNORED_FIELDS
                       and saved.get(k, missing) != current.get(k, missing))
        if names:
            value = (lambda fields, n: json.dumps(fields[n]) if n in fields else "(absent)")
            parts = [f"{n}={value(saved, n)} there, {value(current, n)} now" for n in names[:6]]
            if len(names) > 6:
                parts.append(f"and {len(names) - 6} more")
            raise ConfigError(
                f"--workdir={workdir} holds a run of another config ({'; '.join(parts)}); use "
                f"another --workdir, or delete {workdir} to start over (fields that cannot "
                f"change results are not compared: {', '.join(IGNORED_FIELDS)})")
    elif any(os.path.exists(os.path.join(workdir, n)) for n in ("checkpoints", "results.json")):
        raise ConfigError(f"--workdir={workdir} holds a run made by an older gar_jax (no "
                          f"{CONFIG_FILE}); use another --workdir")
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        write_json(path, json.loads(json.dumps(config.to_dict(), default=str)))


def _setting(config, name: str):
    return config.get(name, LOOP_DEFAULTS[name])


class _Pending:
    """Per-step metrics kept on device until the next log point (no per-step host sync)."""

    def __init__(self):
        self.items = []

    def add(self, step: int, values: dict):
        self.items.append((step, values))

    def fetch(self, last_good_checkpoint: Optional[int], workdir: str) -> dict:
        """Means over the pending steps; raises `Diverged` at the first bad loss."""
        items, self.items = jax.device_get(self.items), []
        for step, values in items:
            loss = values.get("loss")
            if loss is not None and not np.all(np.isfinite(loss)):
                raise Diverged(_diverged_message(f"the training loss is {loss} at step {step}",
                                                 last_good_checkpoint, workdir))
        if not items:
            return {}
        return {k: float(np.mean([v[k] for _, v in items])) for k in items[0][1]}


def _diverged_message(what: str, last_good_checkpoint: Optional[int], workdir: str) -> str:
    where = ("no checkpoint yet" if last_good_checkpoint is None else
             f"last good checkpoint: step {last_good_checkpoint} in {workdir}")
    return (f"training diverged: {what}; stopped ({where}; metrics so far in "
            f"{os.path.join(workdir, 'metrics.jsonl')}). Lower the learning rate or check the "
            "data.")


@jax.jit
def _all_finite(state) -> jax.Array:
    """Whether every floating-point leaf of `state` is finite (a replicated scalar)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(state)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _host_bool(x) -> bool:
    """A replicated scalar as a Python bool (on every process: its own copy)."""
    return bool(np.asarray(x.addressable_data(0)))


class _Signals:
    """SIGTERM / SIGINT set a flag that the loop checks between calls (main thread only)."""

    def __init__(self):
        self.received = None
        self._old = {}

    def poll(self, step: int) -> bool:
        """Whether to checkpoint and stop after `step` (the same answer on every process)."""
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            if multihost_utils.reached_preemption_sync_point(step):
                self.received = signal.SIGTERM
        return self.received is not None

    def __enter__(self):
        if jax.process_count() == 1 and _is_main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.received = signum
        print(f"\ngar_jax: {signal.Signals(signum).name}: saving a checkpoint, then stopping "
              "(Ctrl-C again to abort at once)", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _step_of(state) -> int:
    return int(jax.device_get(state.step))


# ---------------------------------------------------------------------------- the loop


def train(config, workdir: str, setup: Optional[Setup], method: Method, *,
          on_step: Sequence[Callable] = ()) -> dict:
    """Runs (or resumes) `method` in `workdir`; returns the dict written to results.json.

    Args:
      config: the run's config (loop settings: `LOOP_DEFAULTS`; ``batch_size``).
      workdir: run directory (checkpoints/, metrics.jsonl, tensorboard/, results.json).
      setup: from `build`, or None when `method` gives evaluate and the step counts.
      method: the plug-in (`Method`).
      on_step: callables ``fn(step, state)`` after each call of ``advance`` (tests).
    """
    evaluate = method.evaluate or (lambda s: steps.evaluate(setup.eval_step, s, setup.eval_data))
    spe = method.steps_per_epoch or setup.steps_per_epoch
    total = method.total_steps or setup.total_steps
    per_step = method.images_per_step or config.batch_size
    spc = method.steps_per_call
    if total % spc:
        raise ConfigError(f"this method runs {spc} steps per call: the run's {total} steps "
                          f"(num_epochs x {spe} steps per epoch) must be a multiple of {spc}")
    chief = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    check_workdir(workdir, config)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                   max_to_keep=_setting(config, "keep_checkpoints"))
    meta = {"steps_per_epoch": spe, "total_steps": total, "wall_time_s": 0.0, "epoch_train": [],
            "curves": {"epoch": [], "test_accuracy": [], "test_loss": [], "train_loss": [],
                       "train_accuracy": []}}
    state = method.state
    try:
        restored = ckpt.restore_readable(state)
    except BaseException:
        ckpt.close()
        raise
    last_saved = None
    if restored is not None:
        last_saved, state, saved = restored
        meta = {**meta, **saved}
    step = _step_of(state)
    if last_saved is not None and chief:
        print(f"gar_jax: resumed from step {step} (epoch {step // spe}) in {workdir}",
              file=sys.stderr)
    writer = metrics.MetricsWriter(workdir, enabled=chief)
    bar = metrics.progress_bar(total_steps=total, start_step=step, batch_size=per_step,
                               enabled=chief and _setting(config, "progress_bar"))
    log_every = _setting(config, "log_every_steps")
    save_every = _setting(config, "checkpoint_every_steps")
    eval_every = _setting(config, "eval_every_epochs")
    pending = _Pending()
    epoch_train = [tuple(x) for x in meta["epoch_train"]]  # (steps, means) since last eval
    started = time.time()
    timed_steps, timed_s, mark = 0, 0.0, None  # throughput, excluding compilation and evaluation
    last_eval, report, reported_at = None, {}, None

    def do_report(state, epoch, evaluation):
        nonlocal report, reported_at
        if method.report is not None and chief:
            report = method.report(workdir, state, epoch, evaluation) or {}
        reported_at = _step_of(state)

    def save(step, state):
        nonlocal started, last_saved
        meta["wall_time_s"] += time.time() - started
        started = time.time()
        # The data position is the step; epoch and position are recorded for people.
        meta["epoch"], meta["position"] = divmod(step, spe)
        meta["epoch_train"] = [list(x) for x in epoch_train]
        if not _host_bool(_all_finite(state)):
            raise Diverged(_diverged_message(f"the state is not finite at step {step}",
                                             last_saved, workdir))
        ckpt.save(step, state, meta)
        last_saved = step

    with _Signals() as signals:
        try:
            while step < total:
                state, values = method.advance(state, step)
                pending.add(step, values)
                before, step = step, step + spc
                bar.update(spc)
                for hook in on_step:
                    hook(step, state)
                stop = signals.poll(step)
                epoch_done = step // spe > before // spe
                save_now = step // save_every > before // save_every or step >= total or stop
                if step // log_every > before // log_every or epoch_done or save_now:
                    n = len(pending.items)
                    logged = pending.fetch(last_saved, workdir)
                    now = time.time()
                    if mark is not None:
                        timed_steps, timed_s = timed_steps + n * spc, timed_s + now - mark
                    mark = now
                    epoch_train.append((n, logged))
                    scalars = {f"train/{k}": v for k, v in logged.items()}
                    if timed_s > 0:
                        scalars["train/images_per_s"] = timed_steps * per_step / timed_s
                    writer.write(step, {"epoch": step / spe, **scalars})
                epoch = step // spe
                if epoch_done and (epoch % eval_every == 0 or step >= total):
                    last_eval = evaluate(state)
                    _record_epoch(meta["curves"], epoch, last_eval, epoch_train)
                    epoch_train = []
                    writer.write(step, {"epoch": epoch, "test/accuracy": last_eval["accuracy"],
                                        "test/loss": last_eval["loss"]})
                    bar.set_postfix(epoch=epoch, test_acc=f"{last_eval['accuracy']:.4f}")
                    do_report(state, epoch, last_eval)
                    mark = time.time()
                if save_now:
                    save(step, state)
                if stop and step < total:
                    raise Preempted(signals.received, step, workdir)
        finally:
            bar.close()
            writer.close()
            ckpt.close()
    if last_eval is None:  # resumed a finished run, or it ended between evaluations
        last_eval = evaluate(state)
    if reported_at != step:
        do_report(state, step // spe, last_eval)
    meta["wall_time_s"] += time.time() - started
    results = {
        **(method.describe if method.describe is not None else describe(config)),
        "test_accuracy": last_eval["accuracy"],
        "test_error": 1.0 - last_eval["accuracy"],
        "test_loss": last_eval["loss"],
        "test_examples": int(last_eval["count"]),
        "steps": step,
        "epochs": step / spe,
        "curves": meta["curves"],
        "wall_time_s": meta["wall_time_s"],
        "train_images_per_s": timed_steps * per_step / timed_s if timed_s > 0 else None,
        "device_kind": jax.devices()[0].device_kind,
        "platform": jax.devices()[0].platform,
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        **report,
        "config": config.to_dict(),
    }
    if chief:
        write_json(os.path.join(workdir, "results.json"), results)
    return results


def _record_epoch(curves: dict, epoch: int, evaluation: dict, epoch_train) -> None:
    """Appends one evaluation and the step-weighted mean train loss / accuracy of the steps
    since the previous evaluation (kept in the checkpoint, so a resumed epoch counts whole)."""
    curves["epoch"].append(epoch)
    curves["test_accuracy"].append(evaluation["accuracy"])
    curves["test_loss"].append(evaluation["loss"])
    for name in ("loss", "accuracy"):
        pairs = [(n, m[name]) for n, m in epoch_train if name in m]
        weight = sum(n for n, _ in pairs)
        curves[f"train_{name}"].append(sum(n * v for n, v in pairs) / weight if weight else None)
