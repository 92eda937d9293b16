"""OLA on CIFAR-10 (Table 2): WRN-28-10, 200 epochs, batch 256, learned augmentation over the
WideLong space (``:ra`` or ``--config.ola.space=randaug`` for the RandAugment space), GAR rewards
computed by the exact layer-wise method.

``python -m gar_jax.main --config=configs/cifar10_ola.py --workdir=runs/cifar10_ola_wl``
``python -m gar_jax.main --config=configs/cifar10_ola.py:ra --workdir=runs/cifar10_ola_ra``
"""
from gar_jax.methods.ola import cifar_config


def get_config(space: str = "wide"):
    return cifar_config("cifar10", space)
