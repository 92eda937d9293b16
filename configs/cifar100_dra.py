"""CIFAR-100, Table 2 protocol (WRN-28-10, 200 epochs, batch 256) trained with DRA's published
WRN-28-10 CIFAR-100 policy (ainieli/DRA policy.py) replayed as a fixed policy.

``python -m gar_jax.main --config=configs/cifar100_dra.py --workdir=runs/cifar100_dra``
"""
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "cifar10_dra_search.py"))[
    "get_config"]


def get_config():
    c = base()  # every field, commented, in configs/cifar10_dra_search.py
    c.dataset = "cifar100"
    c.dra.policy = "WRN-28-10 on CIFAR-100"  # no search: the published policy, replayed
    return c
