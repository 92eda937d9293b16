"""OLA on CIFAR-100 (Table 2): configs/cifar10_ola.py on CIFAR-100 (WRN-28-10, 200 epochs,
batch 256, WideLong space, or RandAugment's after a colon).

``python -m gar_jax.main --config=configs/cifar100_ola.py --workdir=runs/cifar100_ola_wl``
``python -m gar_jax.main --config=configs/cifar100_ola.py:ra --workdir=runs/cifar100_ola_ra``
"""
from gar_jax.train.defaults import sibling

base = sibling(__file__, "cifar10_ola")


def get_config(space: str = "wide"):
    c = base.get_config(space)
    c.dataset = "cifar100"
    return c
