"""The repository's config files for tests: ``load("digits_dra")``, ``load("cifar10_ola:ra")``."""
import os

from gar_jax.train import defaults

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")


def load(spec: str):
    """The config of ``configs/<name>.py[:argument]`` (what ``--config=`` gives)."""
    name, sep, argument = spec.partition(":")
    return defaults.load_config(os.path.join(CONFIGS, name + ".py") + sep + argument)
