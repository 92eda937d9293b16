"""OLA on CIFAR-100 (Table 2): configs/cifar10_ola.py on CIFAR-100 (WRN-28-10, 200 epochs,
batch 256, WideLong space, or RandAugment's after a colon).

``python -m gar_jax.main --config=configs/cifar100_ola.py --workdir=runs/cifar100_ola_wl``
``python -m gar_jax.main --config=configs/cifar100_ola.py:ra --workdir=runs/cifar100_ola_ra``
"""
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "cifar10_ola.py"))["get_config"]


def get_config(space: str = "wide"):
    c = base(space)
    c.dataset = "cifar100"
    return c
