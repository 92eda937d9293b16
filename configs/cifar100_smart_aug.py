"""smart_augmentation on CIFAR-100 at the Table 2 protocol: WRN-28-10, 200 epochs, batch 256,
SGD Nesterov 0.9 (the inner optimizer the meta-gradient differentiates through), weight decay
5e-4, lr 0.1 with 5-epoch warm-up then cosine, gradient clip 1 (the authors'); the standard
pipeline, then N = 3 learned ops over the RA space (``:wl`` for the WideLong space), K = 1,
10% of the training set held out.

``python -m gar_jax.main --config=configs/cifar100_smart_aug.py --workdir=runs/cifar100_smart_aug_ra``
``python -m gar_jax.main --config=configs/cifar100_smart_aug.py:wl --workdir=runs/cifar100_smart_aug_wl``
"""
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "cifar10_smart_aug.py"))[
    "get_config"]


def get_config(space: str = "randaug"):
    c = base(space)  # every field, commented, in configs/cifar10_smart_aug.py
    c.dataset = "cifar100"
    return c
