"""Supervised WRN-10-1 on digits32_small (100 labeled 32x32 digits; offline, about 1.5 minutes on an
idle 2-core CPU): the benchmark of experiments/compare, on which augmentation matters.

Usage: ``python -m gar_jax.main --config=configs/digits32_supervised.py --workdir=DIR`` (standard
pipeline only), or name a policy after a colon: ``--config=configs/digits32_supervised.py:ra``.
Policies: none, baseline, ua_ra, ua_wl, ra, ta, aa (gar_jax.train.defaults.baseline_policy), and
the published policies faa (Fast AutoAugment) and dra (DRA), each then the standard pipeline.
"""
from gar_jax.train import defaults

# Published policies of the search methods (gar_jax.augment.policies.get_policy names).
PUBLISHED = ("faa", "dra")


def get_config(policy: str = "baseline"):
    if policy not in PUBLISHED:
        return defaults.digits32_small(policy)
    config = defaults.digits32_small("baseline")
    config.augment = policy        # the published CIFAR-10 policy, then the standard pipeline
    return config
