"""Table 2 training on CIFAR-100 (WRN-28-10, 200 epochs) with the published Fast AutoAugment
policy ``fa_reduced_cifar10`` (the FAA paper uses its CIFAR-10 policy for CIFAR-100), followed by
the standard pipeline.

Everything else is configs/cifar100_baseline.py.
``python -m gar_jax.main --config=configs/cifar100_faa.py --workdir=runs/cifar100_faa``
"""
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "cifar100_baseline.py"))[
    "get_config"]


def get_config():
    c = base()
    c.augment = "faa"
    c.augment_kwargs = dict(policy="fa_reduced_cifar10")
    return c
