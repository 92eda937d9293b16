"""OLA on CIFAR-100 (Table 2): WRN-28-10, 200 epochs, batch 256, learned augmentation over the
WideLong space (``:ra`` or ``--config.ola.space=randaug`` for the RandAugment space), GAR rewards
computed by the exact layer-wise method.

``python -m gar_jax.main --config=configs/cifar100_ola.py --workdir=runs/cifar100_ola_wl``
``python -m gar_jax.main --config=configs/cifar100_ola.py:ra --workdir=runs/cifar100_ola_ra``
"""
from gar_jax.methods.ola import cifar_config


def get_config(space: str = "wide"):
    return cifar_config("cifar100", space)
