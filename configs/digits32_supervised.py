"""Supervised WRN-10-1 on digits32_small (100 labeled 32x32 digits; offline, about 1.5 minutes on
an idle 2-core CPU): the benchmark of experiments/compare, on which augmentation matters.

Usage: ``python -m gar_jax.main --config=configs/digits32_supervised.py --workdir=DIR`` (standard
pipeline only), or name a baseline after a colon: ``--config=configs/digits32_supervised.py:ra``.
Baselines: none, baseline, ua_ra, ua_wl, ra, ta, aa (gar_jax.train.defaults.baseline_policy).
The standard pipeline (pad 4, Cutout 16) does not flip: digits are not mirror-symmetric.
"""
from gar_jax.train import defaults


def get_config(baseline: str = "baseline"):
    return defaults.digits32_small(baseline)
