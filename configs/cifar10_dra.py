"""CIFAR-10, Table 2 protocol (WRN-28-10, 200 epochs, batch 256, SGD Nesterov, cosine, Cutout 16)
trained with DRA's published WRN-28-10 CIFAR-10 policy (ainieli/DRA policy.py) replayed as a fixed
policy: per image and layer op ~ Categorical(W), m ~ N(M_MEAN, M_STD) clipped, p ~ U(0.2, 0.8).

``python -m gar_jax.main --config=configs/cifar10_dra.py --workdir=runs/cifar10_dra``
"""
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "cifar10_dra_search.py"))[
    "get_config"]


def get_config():
    c = base()  # every field, commented, in configs/cifar10_dra_search.py
    c.dra.policy = "WRN-28-10 on CIFAR-10"  # no search: the published policy, replayed
    return c
