"""CIFAR-10, Table 2 "aa": AutoAugment (the published CIFAR-10 policy), then the standard pipeline.

Everything else is configs/cifar10_baseline.py (WRN-28-10, 200 epochs, batch 256).
Run: ``python -m gar_jax.main --config=configs/cifar10_aa.py --workdir=runs/cifar10_aa_s0``
"""
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "cifar10_baseline.py"))["get_config"]


def get_config():
    c = base()
    c.augment = "aa"
    c.augment_kwargs = dict(dataset="cifar10")
    return c
