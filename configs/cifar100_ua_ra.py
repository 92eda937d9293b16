"""CIFAR-100, Table 2 "ua_ra": UniformAugment over the RandAugment search space, then the standard
pipeline.

Everything else is configs/cifar100_baseline.py (WRN-28-10, 200 epochs, batch 256).
Run: ``python -m gar_jax.main --config=configs/cifar100_ua_ra.py --workdir=runs/cifar100_ua_ra_s0``
"""
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "cifar100_baseline.py"))["get_config"]


def get_config():
    c = base()
    c.augment = "ua"
    c.augment_kwargs = dict(space="randaug")
    return c
