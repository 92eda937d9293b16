"""smart_augmentation on CIFAR-10 at the Table 2 protocol: WRN-28-10, 200 epochs, batch 256,
SGD Nesterov 0.9 (the inner optimizer the meta-gradient differentiates through), weight decay
5e-4, lr 0.1 with 5-epoch warm-up then cosine, gradient clip 1 (the authors'); the standard
pipeline, then N = 3 learned ops over the RA space (``:wl`` for the WideLong space), K = 1,
10% of the training set held out.

``python -m gar_jax.main --config=configs/cifar10_smart_aug.py --workdir=runs/cifar10_smart_aug_ra``
``python -m gar_jax.main --config=configs/cifar10_smart_aug.py:wl --workdir=runs/cifar10_smart_aug_wl``
"""
from gar_jax.methods.smart_aug import cifar_config


def get_config(space: str = "randaug"):
    return cifar_config("cifar10", space)
