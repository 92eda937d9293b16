"""Table 2 training (WRN-28-10, 200 epochs, RandAugment protocol) with the published Fast
AutoAugment policy ``fa_reduced_cifar10`` (493 sub-policies searched by the authors on reduced
CIFAR-10 with WRN-40-2), followed by the standard pipeline (pad-crop, flip, Cutout 16).

``python -m gar_jax.main --config=configs/cifar10_faa.py --workdir=runs/cifar10_faa``
Another policy: ``--config.augment_kwargs.policy=path/policy.json`` (e.g. a search's output).
"""
from gar_jax.train import defaults


def get_config():
    return defaults.supervised("cifar10", "faa", {"policy": "fa_reduced_cifar10"})
