"""CIFAR-10, Table 2 "ra": RandAugment N=3, M=5 (0..30 scale; the RandAugment paper's WRN-28-10
setting), then the standard pipeline.

Everything else is configs/cifar10_baseline.py (WRN-28-10, 200 epochs, batch 256).
Run: ``python -m gar_jax.main --config=configs/cifar10_ra.py --workdir=runs/cifar10_ra_s0``
"""
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "cifar10_baseline.py"))["get_config"]


def get_config():
    c = base()
    c.augment = "ra"
    c.augment_kwargs = dict(space="randaug", n=3, m=5)
    return c
