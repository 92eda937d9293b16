"""The baselines' constants that config files share, and `load_config` (a config file by path).

The configs live in ``configs/*.py``, one readable file per experiment with every field written
out; a variant loads its base with ``runpy.run_path`` (a path next to its own file) and changes
a few fields. This package never opens configs/ by itself.
"""
import importlib.util
import os
import types

import ml_collections

# RandAugment (N ops, magnitude M on the 0..30 scale) for WRN-28-10 (docs/algorithms.md §6).
RAND_AUGMENT = {"cifar10": (3, 5), "cifar100": (2, 14), "svhn": (3, 7), "digits": (3, 5),
                "digits32_small": (3, 5)}
# AutoAugment's published policy used per dataset (CIFAR-100 uses CIFAR-10's, as in the papers).
AUTO_AUGMENT = {"cifar10": "cifar10", "cifar100": "cifar10", "svhn": "svhn", "digits": "cifar10",
                "digits32_small": "cifar10"}
# The baselines of Table 2: config name -> gar_jax.augment.policies.get_policy name.
BASELINES = ("baseline", "ua_ra", "ua_wl", "ra", "ta", "aa")


def baseline_policy(dataset: str, name: str):
    """``(policy, kwargs)`` of a Table 2 baseline (`BASELINES`) on `dataset`.

    baseline: the standard pipeline only; ua_ra / ua_wl: UniformAugment over the RA / wide search
    space; ra: RandAugment(N, M); ta: TrivialAugment (wide ranges); aa: AutoAugment. All but
    "baseline" are followed by the standard pipeline (configs/cifar10_baseline.py). "none" is also accepted.
    """
    if name == "none":
        return "none", {}
    n, m = RAND_AUGMENT[dataset]
    table = {
        "baseline": ("standard", {}),
        "ua_ra": ("ua", {"space": "randaug"}),
        "ua_wl": ("ua", {"space": "wide"}),
        "ra": ("ra", {"space": "randaug", "n": n, "m": m}),
        "ta": ("ta", {"space": "ta_wide"}),
        "aa": ("aa", {"dataset": AUTO_AUGMENT[dataset]}),
    }
    if name not in table:
        raise ValueError(f"unknown baseline {name!r}; choose one of none, {', '.join(BASELINES)}")
    return table[name]


def load_config(spec: str) -> ml_collections.ConfigDict:
    """The config that ``--config=spec`` gives: ``path[:argument]``, the path of a config file
    (relative to the working directory or absolute), for code that builds runs in Python."""
    path, _, argument = spec.partition(":")
    module = load_module(path)
    return module.get_config(argument) if argument else module.get_config()


def load_module(path: str) -> types.ModuleType:
    """Executes the config file at `path` as a fresh module (not registered in sys.modules, so
    two files with the same name never shadow each other)."""
    name = "gar_jax_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or not os.path.isfile(path):
        raise FileNotFoundError(f"no config file {path!r}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

