"""Table 2 training on CIFAR-100 (WRN-28-10, 200 epochs) with the published Fast AutoAugment
policy ``fa_reduced_cifar10`` (the FAA paper uses its CIFAR-10 policy for CIFAR-100), followed by
the standard pipeline.

``python -m gar_jax.main --config=configs/cifar100_faa.py --workdir=runs/cifar100_faa``
"""
from gar_jax.train import defaults


def get_config():
    return defaults.supervised("cifar100", "faa", {"policy": "fa_reduced_cifar10"})
