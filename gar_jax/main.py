"""Command line: ``python -m gar_jax.main --config=configs/<experiment>.py --workdir=DIR``.

Every field of the config can be overridden, e.g. ``--config.seeds=3``. The config's
``experiment`` field names the method: the module ``gar_jax.methods.<experiment>``, which exposes
``validate(config)`` (raises :class:`gar_jax.errors.ConfigError` on bad input before any compute)
and ``run(config, workdir) -> dict`` (writes ``workdir/results.json``).

Before any work the CLI checks that the workdir can be written and that it does not hold a run of
another config: a workdir remembers its config in ``config.json``, and a rerun with a different
config is refused (naming the fields that differ) rather than overwriting or mixing results.
Bad input ends the process with one line on stderr and exit status 2.
"""
import importlib
import importlib.util
import json
import logging
import os
import pkgutil
import sys
import tempfile

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
# Fields that cannot change a run's results: a rerun on the same workdir may change them.
IGNORED_FIELDS = ("progress_bar", "data_dir", "log_every_steps", "checkpoint_every_steps",
                  "keep_checkpoints")
# Config fields added after runs were made with this code: a saved config without one of them
# was run with the value given here (what reproduces it), so such a workdir resumes when the
# field has that value now (e.g. an OLA run from before `ola.gar_store` resumes with
# --config.ola.gar_store=activations), and the error for another value says which it was.
ADDED_FIELDS = {"ola.gar_store": "activations"}


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
    from gar_jax.train import engine  # (JAX is imported by then: the runner imports it)

    engine.write_json(os.path.join(workdir, CONFIG_FILE),
                      json.loads(json.dumps(config.to_dict(), default=str)))
    return created


def _undo_workdir(workdir: str) -> None:
    """Removes a workdir this process created, if it holds nothing but its config.json."""
    try:
        os.remove(os.path.join(workdir, CONFIG_FILE))
        os.rmdir(workdir)
    except OSError:
        pass


class _DropMissingDatasetInfo(logging.Filter):
    """tfds warns "Variant folder ... has no dataset_info.json" while it looks for a dataset that
    was never (completely) prepared; our own one-line error for that case says what to do."""

    def filter(self, record):
        return not (record.levelno == logging.WARNING and "tensorflow_datasets" in record.pathname
                    and "dataset_info" in str(record.msg) + str(record.args))


_TFDS_FILTER = _DropMissingDatasetInfo()


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}; use --config=... and --workdir=...")
    if not flags.FLAGS["config"].present:  # defined with no default
        _fail("--config is required, e.g. --config=configs/toy_split.py")
    logging.getLogger("absl").addFilter(_TFDS_FILTER)  # once, however often main runs
    try:
        config = _CONFIG.value
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
    from gar_jax.train import engine  # the runner has imported it (and jax) already

    try:
        runner.run(config, workdir)
    except ConfigError as e:  # A check that needs the data (e.g. a missing dataset).
        if created:
            _undo_workdir(workdir)
        _fail(str(e))
    except engine.Preempted as e:  # SIGTERM / Ctrl-C: the engine checkpointed the current step
        print(f"gar_jax: {e}", file=sys.stderr)
        sys.exit(128 + e.signum)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
