"""Differentiable RandAugment on scikit-learn's digits (offline, CPU, about 4 minutes): the DRA
search (WRN-10-2, half the training set cut into weight / policy halves, 20 epochs of 5 steps),
then 30 epochs of WRN-10-2 training with the searched policy replayed as a fixed policy.

``python -m gar_jax.main --config=configs/digits_dra.py --workdir=runs/digits_dra``
Variants: ``--config.dra.policy=cifar10`` (no search: train with the published WRN-28-10
CIFAR-10 policy).
"""
from gar_jax.methods.dra import digits_config


def get_config():
    return digits_config()
