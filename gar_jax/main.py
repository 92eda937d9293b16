"""Command line: ``python -m gar_jax.main --config=configs/<experiment>.py --workdir=DIR``.

Every field of the config can be overridden, e.g. ``--config.seeds=3``. The config's
``experiment`` field names the method: the module ``gar_jax.methods.<experiment>``, which exposes
``validate(config)`` (raises :class:`gar_jax.errors.ConfigError` on bad input before any compute)
and ``run(config, workdir) -> dict`` (writes ``workdir/results.json``).

Before any work the CLI checks that the workdir can be written and that it does not hold a run of
another config: a workdir remembers its config in ``config.json``, and a rerun with a different
config is refused (naming the fields that differ) rather than overwriting or mixing results.
Bad input ends the process with one line on stderr and exit status 2.

A workdir is used by one run at a time: the run holds an exclusive lock on ``workdir/.lock``
(flock; the kernel releases it when the process ends, however it ends, so a crashed run never
leaves it stuck), and a second run on the same workdir (a double-submitted job) is refused with
one line naming the process that holds it. With several processes (multi-host), process 0 takes
the lock and every process learns the outcome, so a whole job runs or a whole job is refused.

Exit statuses: 0 done, 2 bad input or an unusable workdir (before any compute), 3 the training
diverged (`engine.DIVERGED_EXIT`), 4 a write the storage refused, e.g. disk full
(`engine.STORAGE_EXIT`), 128 + signal when stopped by SIGTERM (143) or Ctrl-C (130).
"""
import errno
import fcntl
import importlib
import importlib.util
import json
import logging
import math
import os
import pkgutil
import socket
import sys
import tempfile
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from gar_jax.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to an experiment config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics, plots and results.json; rerunning the "
    "same config on the same workdir resumes. Default: runs/<config file name>[_<argument>].")

# config.experiment -> module, for a method that does not live at gar_jax.methods.<name> (none
# today: adding a method is adding its module there, with no edit here).
EXPERIMENTS = {}

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
# Fields that cannot change a run's results: a rerun on the same workdir may change them.
IGNORED_FIELDS = ("progress_bar", "data_dir", "log_every_steps", "checkpoint_every_steps",
                  "keep_checkpoints")
# Config fields added after runs were made with this code: a saved config without one of them
# was run with the value given here (what reproduces it), so such a workdir resumes when the
# field has that value now (e.g. an OLA run from before `ola.gar_store` resumes with
# --config.ola.gar_store=activations), and the error for another value says which it was.
# ola.num_chunks: before it, jvp/vmap GAR ran each device's batch in one piece.
ADDED_FIELDS = {"ola.gar_store": "activations", "ola.num_chunks": 1}


def _fail(message: str) -> None:
    print(f"gar_jax: error: {message}", file=sys.stderr)
    sys.exit(2)


def _config_file_error(message: str) -> str:
    """The last line of the traceback that config_flags puts in its message (the exception that
    the config file's get_config raised), without the exception's class name."""
    last = [line for line in message.splitlines() if line.strip()][-1].strip()
    kind, sep, text = last.partition(": ")
    if sep and kind.isidentifier() and kind.endswith(("Error", "Exception")):
        if kind == "TypeError" and "positional argument" in text:
            return f"its get_config does not take that argument ({text})"
        return text
    return last


def _parse_flags(argv):
    """Like absl's parser, but every flag or config error is one line and exit status 2."""
    try:
        argv = flags.FLAGS(argv)
        if not flags.FLAGS["verbosity"].present:  # keep orbax/absl INFO lines off the progress bar
            flags.FLAGS.verbosity = -1
        return argv
    except flags.Error as e:
        if "Error whilst parsing config file" in str(e):  # get_config(argument) raised
            _fail(f"cannot load --config={_config_argument(argv)}: "
                  f"{_config_file_error(str(e))}")
        _fail(" ".join(str(e).split()))
    except (KeyError, AttributeError) as e:  # --config.<field> that the config does not have.
        field = str(e.args[0] if e.args else e)
        while field[:1] in "'\"" and field[-1:] == field[:1]:
            field = field[1:-1]
        _fail(f"unknown config field {field!r} in a --config.<field>=... override; "
              "see the config file for the fields it has")
    except (TypeError, ValueError) as e:  # e.g. a value of the wrong type.
        _fail(f"bad --config override: {' '.join(str(e).split())}")
    except Exception as e:  # the config file itself failed to import (ImportError, NameError...)
        _fail(f"cannot load --config={_config_argument(argv)}: {type(e).__name__}: "
              f"{' '.join(str(e).split())}")


def experiments() -> list:
    """The names ``config.experiment`` may take."""
    import gar_jax.methods

    found = {m.name for m in pkgutil.iter_modules(gar_jax.methods.__path__)
             if not m.name.startswith("_")}
    return sorted(found | set(EXPERIMENTS))


def get_runner(config):
    """The module that runs `config.experiment` (``gar_jax.methods.<experiment>``, else the
    `EXPERIMENTS` entry), or ConfigError."""
    name = config.get("experiment", None)
    module = None
    if isinstance(name, str) and name.isidentifier():
        if importlib.util.find_spec(f"gar_jax.methods.{name}") is not None:
            module = importlib.import_module(f"gar_jax.methods.{name}")
        elif name in EXPERIMENTS:
            module = importlib.import_module(EXPERIMENTS[name])
    if module is None or not (hasattr(module, "run") and hasattr(module, "validate")):
        raise ConfigError(f"config.experiment={name!r} is not one of {experiments()}")
    return module


def _config_argument(argv=None) -> str:
    """The --config value as typed (``path[:argument]``)."""
    spec = ""
    for arg in argv or sys.argv:
        if arg.startswith("--config="):
            spec = arg[len("--config="):]
    return spec or config_flags.get_config_filename(flags.FLAGS["config"])


def default_workdir(config_path: str) -> str:
    """``configs/cifar100_ola.py:ra`` -> ``runs/cifar100_ola_ra``."""
    path, _, arg = config_path.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    return os.path.join("runs", f"{name}_{arg}" if arg else name)


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


def _saved_fields(workdir: str):
    """The fields of the config the workdir's run was made with, or None (a fresh workdir).
    Runs made before config.json existed are recognized by the config in their results.json."""
    for name, key in ((CONFIG_FILE, None), ("results.json", "config")):
        path = os.path.join(workdir, name)
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    saved = json.load(f)
            except (OSError, ValueError) as e:
                raise ConfigError(f"cannot read {path} ({e}); delete it or use another --workdir")
            saved = saved.get(key) if key else saved
            if isinstance(saved, dict):
                return _flatten(saved)
    return None


def differing_fields(saved: dict, current: dict) -> list:
    """The dotted field names whose values differ (or that only one side has), except
    `IGNORED_FIELDS`; a field of `ADDED_FIELDS` absent from `saved` has its value there."""
    missing = object()
    return sorted(k for k in set(saved) | set(current)
                  if k.rpartition(".")[2] not in IGNORED_FIELDS
                  and saved.get(k, ADDED_FIELDS.get(k, missing)) != current.get(k, missing))


def _describe(saved: dict, current: dict, names: list, limit: int = 6) -> str:
    def value(fields, name):
        if name in fields:
            return json.dumps(fields[name])
        if fields is saved and name in ADDED_FIELDS:
            return f"(absent: {json.dumps(ADDED_FIELDS[name])} before the field existed)"
        return "(absent)"

    parts = [f"{n}={value(saved, n)} there, {value(current, n)} now" for n in names[:limit]]
    if len(names) > limit:
        parts.append(f"and {len(names) - limit} more")
    return "; ".join(parts)


def prepare_workdir(workdir: str, config) -> bool:
    """Checks that `workdir` is (or can be made) a writable directory that holds no run of
    another config, and records the config there (``config.json``). Returns whether the
    directory was created. Raises ConfigError, before any work, otherwise."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir={workdir} is an existing file, not a directory")
    created = not os.path.exists(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):  # writable? (exists or makedirs says little)
            pass
    except OSError as e:
        raise ConfigError(f"--workdir={workdir} cannot be created or written "
                          f"({e.strerror or e}); choose another --workdir") from None
    current = config_fields(config)
    saved = _saved_fields(workdir)
    if saved is not None:
        names = differing_fields(saved, current)
        if names:
            raise ConfigError(
                f"--workdir={workdir} holds a run of another config "
                f"({_describe(saved, current, names)}); use another --workdir, or delete "
                f"{workdir} to start over (fields that cannot change results are not compared: "
                f"{', '.join(IGNORED_FIELDS)})")
    # Not undone on failure: a run started at the same moment may have created the directory.
    lock_workdir(workdir)
    import jax  # (imported by then: the runner imports it)
    from gar_jax.train import engine

    if jax.process_index() == 0:
        engine.write_json(os.path.join(workdir, CONFIG_FILE),
                          json.loads(json.dumps(config.to_dict(), default=str)))
    return created


INT_LIMIT = 2 ** 31 - 1  # JAX computes in 32-bit integers (seeds, sizes, step counts)


def check_numbers(config) -> None:
    """ConfigError for a NaN or infinite number in any field (no field takes one; a check like
    ``lr <= 0`` is False for NaN, so the methods' own checks would let it through), or an
    integer beyond 32 bits (JAX would overflow or silently truncate it)."""
    for name, value in config_fields(config).items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ConfigError(f"config.{name}={value} must be a finite number")
        if any(isinstance(v, int) and not isinstance(v, bool) and abs(v) > INT_LIMIT
               for v in values):
            raise ConfigError(f"config.{name}={value} is out of range: integers must be within "
                              f"+-{INT_LIMIT} (32 bits)")


_lock = None  # (workdir, open file) of the lock this process holds


def _lock_holder(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            holder = f.read().strip()
    except OSError:
        holder = ""
    return holder or "another process"


def lock_workdir(workdir: str) -> None:
    """Takes the workdir's lock (process 0 of a multi-process job; all processes agree on the
    outcome). ConfigError, naming the holder, if another run holds it."""
    global _lock
    import jax

    unlock_workdir()  # one run per process at a time (a test may run the CLI several times)
    error = ""
    if jax.process_index() == 0:
        path = os.path.join(workdir, LOCK_FILE)
        f = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.close()
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise ConfigError(f"--workdir={workdir}: cannot lock {path} ({e.strerror})")
            error = (f"--workdir={workdir} is in use by another run ({_lock_holder(path)}); "
                     "wait for it to end or use another --workdir")
        else:
            f.seek(0)
            f.truncate()
            f.write(f"process {os.getpid()} on host {socket.gethostname()}, since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
            f.flush()
            _lock = (workdir, f)
    if jax.process_count() > 1:  # every process of the job learns process 0's outcome
        import numpy as np
        from jax.experimental import multihost_utils

        text = np.frombuffer(error.encode()[:1024].ljust(1024, b"\0"), np.uint8)
        text = multihost_utils.broadcast_one_to_all(text)
        error = bytes(np.asarray(text)).rstrip(b"\0").decode(errors="replace")
    if error:
        raise ConfigError(error)


def unlock_workdir() -> None:
    """Releases the lock (also released by the kernel when the process ends)."""
    global _lock
    if _lock is not None:
        workdir, f = _lock
        _lock = None
        f.close()


def _undo_workdir(workdir: str) -> None:
    """Removes a workdir this process created, if it holds nothing but its config.json."""
    unlock_workdir()
    for name in (CONFIG_FILE, LOCK_FILE):
        try:
            os.remove(os.path.join(workdir, name))
        except OSError:
            pass
    try:
        os.rmdir(workdir)
    except OSError:
        pass


def _orphan_callback(kind, tb) -> bool:
    """Whether an exception is asyncio refusing a callback because its loop is closed: after
    a refused write, orbax's other writes of that checkpoint still finish (or fail) in
    tensorstore's threads and report to the loop orbax has closed, and Python prints each as a
    traceback; the refused write itself is reported in one line (`checkpoint.StorageError`)."""
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return (kind is RuntimeError and tb is not None
            and tb.tb_frame.f_code.co_name == "_check_closed"
            and tb.tb_frame.f_code.co_filename.endswith(os.path.join("asyncio", "base_events.py")))


def _drop_orphan_callbacks() -> None:
    """Installs a `sys.unraisablehook` (tensorstore reports a failed callback through it) that
    drops `_orphan_callback` exceptions and passes everything else on."""
    hook = sys.unraisablehook
    if getattr(hook, "__module__", None) == __name__:
        return

    def unraisablehook(unraisable):
        if not _orphan_callback(unraisable.exc_type, unraisable.exc_traceback):
            hook(unraisable)

    sys.unraisablehook = unraisablehook


class _DropStorageErrors(logging.Filter):
    """orbax logs a refused write (disk full) from each of its writer threads with a traceback,
    and a checkpoint whose metadata does not read once per step; the engine turns the former into
    `checkpoint.StorageError` and reports the latter (`Checkpointer.restore_readable`), each
    in one line."""

    def filter(self, record):
        if record.levelno < logging.ERROR or "orbax" not in record.pathname:
            return True
        from gar_jax.train import checkpoint

        text = str(record.msg) + str(record.args)
        if text.startswith("Failed to read Metadata file"):
            return False
        error = record.exc_info[1] if record.exc_info else None
        return (checkpoint.storage_errno(ValueError(text)) is None
                and (error is None or checkpoint.storage_errno(error) is None))


class _DropMissingDatasetInfo(logging.Filter):
    """tfds warns "Variant folder ... has no dataset_info.json" while it looks for a dataset that
    was never (completely) prepared; our own one-line error for that case says what to do."""

    def filter(self, record):
        return not (record.levelno == logging.WARNING and "tensorflow_datasets" in record.pathname
                    and "dataset_info" in str(record.msg) + str(record.args))


_TFDS_FILTER = _DropMissingDatasetInfo()
_STORAGE_FILTER = _DropStorageErrors()


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}; use --config=... and --workdir=...")
    if not flags.FLAGS["config"].present:  # defined with no default
        _fail("--config is required, e.g. --config=configs/toy_split.py")
    logging.getLogger("absl").addFilter(_TFDS_FILTER)  # once, however often main runs
    logging.getLogger("absl").addFilter(_STORAGE_FILTER)
    _drop_orphan_callbacks()
    try:
        config = _CONFIG.value
        check_numbers(config)
        runner = get_runner(config)
        runner.validate(config)
    except ConfigError as e:
        _fail(str(e))
    except OSError:  # config_flags reports an unreadable config file lazily.
        path = config_flags.get_config_filename(flags.FLAGS["config"])
        _fail(f"cannot load the config file {path!r}: it does not exist or does not import")
    workdir = _WORKDIR.value or default_workdir(_config_argument())
    try:
        created = prepare_workdir(workdir, config)
    except ConfigError as e:
        _fail(str(e))
    if not _WORKDIR.value:
        print(f"gar_jax: no --workdir given; using {workdir}", file=sys.stderr)
    from gar_jax.train import checkpoint, engine  # the runner has imported them (and jax)

    try:
        runner.run(config, workdir)
    except ConfigError as e:  # A check that needs the data (e.g. a missing dataset).
        if created and not os.path.exists(os.path.join(workdir, "checkpoints")):
            _undo_workdir(workdir)
        _fail(str(e))
    except engine.Preempted as e:  # SIGTERM / Ctrl-C: the engine checkpointed the current step
        print(f"gar_jax: {e}", file=sys.stderr)
        sys.exit(128 + e.signum)
    except engine.Diverged as e:  # NaN/inf: metrics and the last good checkpoint are kept
        print(f"gar_jax: error: {e}", file=sys.stderr)
        sys.exit(engine.DIVERGED_EXIT)
    except Exception as e:  # noqa: BLE001 - a write the storage refused is one line, not a bug
        code = checkpoint.storage_errno(e)
        if code is None:
            raise
        message = str(e) if isinstance(e, checkpoint.StorageError) else checkpoint.storage_message(
            code, getattr(e, "filename", None) or f"to {workdir}")
        print(f"gar_jax: error: {message}", file=sys.stderr)
        sys.exit(engine.STORAGE_EXIT)
    finally:
        unlock_workdir()


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
