"""Command line: ``python -m gar_jax.main --config=configs/<experiment>.py --workdir=DIR``.

Every field of the config can be overridden, e.g. ``--config.seeds=3``. The config's
``experiment`` field names the runner (see ``EXPERIMENTS``); each runner module exposes
``validate(config)``, which raises :class:`gar_jax.errors.ConfigError` on bad input before any
compute, and ``run(config, workdir) -> dict``, which writes ``workdir/results.json``.
Bad input ends the process with one line on stderr and exit status 2.
"""
import importlib
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from gar_jax.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to an experiment config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics, plots and results.json; rerunning on "
    "the same workdir resumes. Default: runs/<config file name>[_<config argument>].")

# config.experiment -> module that implements it.
EXPERIMENTS = {
    "toy_split": "gar_jax.methods.toy_split",
    "supervised": "gar_jax.methods.supervised",
    "ola": "gar_jax.methods.ola",
    "faa": "gar_jax.methods.faa",
}


def _fail(message: str) -> None:
    print(f"gar_jax: error: {message}", file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv):
    """Like absl's parser, but every flag or config error is one line and exit status 2."""
    try:
        argv = flags.FLAGS(argv)
        if not flags.FLAGS["verbosity"].present:  # keep orbax/absl INFO lines off the progress bar
            flags.FLAGS.verbosity = -1
        return argv
    except flags.Error as e:
        _fail(" ".join(str(e).split()))
    except (KeyError, AttributeError) as e:  # --config.<field> that the config does not have.
        field = str(e.args[0] if e.args else e)
        while field[:1] in "'\"" and field[-1:] == field[:1]:
            field = field[1:-1]
        _fail(f"unknown config field {field!r} in a --config.<field>=... override; "
              "see the config file for the fields it has")
    except (TypeError, ValueError) as e:  # e.g. a value of the wrong type.
        _fail(f"bad --config override: {' '.join(str(e).split())}")


def get_runner(config):
    """Returns the module that runs `config.experiment`, or raises ConfigError."""
    name = config.get("experiment", None)
    if name not in EXPERIMENTS:
        raise ConfigError(f"config.experiment={name!r} is not one of {sorted(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[name])


def _config_argument() -> str:
    """The --config value as typed (``path[:argument]``)."""
    spec = config_flags.get_config_filename(flags.FLAGS["config"])
    for arg in sys.argv:
        if arg.startswith("--config="):
            spec = arg[len("--config="):]
    return spec


def default_workdir(config_path: str) -> str:
    """``configs/cifar100_ola.py:ra`` -> ``runs/cifar100_ola_ra``."""
    path, _, arg = config_path.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    return os.path.join("runs", f"{name}_{arg}" if arg else name)


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}; use --config=... and --workdir=...")
    if not flags.FLAGS["config"].present:  # defined with no default
        _fail("--config is required, e.g. --config=configs/toy_split.py")
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
    if not _WORKDIR.value:
        print(f"gar_jax: no --workdir given; using {workdir}", file=sys.stderr)
    try:
        runner.run(config, workdir)
    except ConfigError as e:  # A check that needs the data (e.g. a missing dataset).
        _fail(str(e))


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
