"""CIFAR-10, Table 2 "ta": TrivialAugment (wide ranges), then the standard pipeline.

Everything else is configs/cifar10_baseline.py (WRN-28-10, 200 epochs, batch 256).
Run: ``python -m gar_jax.main --config=configs/cifar10_ta.py --workdir=runs/cifar10_ta_s0``
"""
from gar_jax.train.defaults import sibling

base = sibling(__file__, "cifar10_baseline")


def get_config():
    c = base.get_config()
    c.augment = "ta"
    c.augment_kwargs = dict(space="ta_wide")
    return c
