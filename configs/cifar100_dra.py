"""CIFAR-100, Table 2 protocol (WRN-28-10, 200 epochs, batch 256) trained with DRA's published
WRN-28-10 CIFAR-100 policy (ainieli/DRA policy.py) replayed as a fixed policy.

``python -m gar_jax.main --config=configs/cifar100_dra.py --workdir=runs/cifar100_dra``
"""
from gar_jax.methods.dra import cifar_config


def get_config():
    return cifar_config("cifar100", "WRN-28-10 on CIFAR-100")
