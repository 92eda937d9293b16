"""The repository's config files and experiment scripts for tests: ``load("digits_dra")``,
``load("cifar10_ola:ra")``, ``experiment("ola/seed_study")`` (experiments/ is no package)."""
import os

from gar_jax.train import defaults

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")


def load(spec: str):
    """The config of ``configs/<name>.py[:argument]`` (what ``--config=`` gives)."""
    name, sep, argument = spec.partition(":")
    return defaults.load_config(os.path.join(CONFIGS, name + ".py") + sep + argument)


def load_path(path: str, argument: str = ""):
    """The config of the config file at `path` (``get_config(argument)`` where one is given)."""
    return defaults.load_config(path + (":" + argument if argument else ""))


def experiment(name: str):
    """``experiments/<name>.py`` as a fresh module, e.g. ``experiment("bench_ola_cost")``."""
    return defaults.load_module(os.path.join(REPO, "experiments", name + ".py"))
