"""OLA on scikit-learn's digits (offline, a few minutes on a CPU): the digits protocol of
configs/digits_supervised.py (WRN-10-2, 30 epochs, batch 64) with the OLA section of
configs/cifar10_ola.py, over the RA space (CIFAR magnitudes, harsh on 8x8 images: something to
learn) with 2 samplers of 32 images each.

``python -m gar_jax.main --config=configs/digits_ola.py --workdir=runs/digits_ola``
Variants: ``--config.ola.reward=nslr``, ``--config.ola.gar_method=layerwise``,
``--config.ola.space=wide``; configs/digits_ola_destructive.py adds a destructive op.
"""
from gar_jax.train.defaults import sibling

digits = sibling(__file__, "digits_supervised")
ola = sibling(__file__, "cifar10_ola")


def get_config():
    c = digits.get_config("baseline")
    c.experiment = "ola"
    c.ola = ola.get_config("randaug").ola  # the OLA fields, commented in configs/cifar10_ola.py
    c.ola.ensemble_size = 2        # 2 samplers of 32 images, rewards normalized over the
    c.ola.reward_normalization = "batch"  # whole batch (the recorded digits runs' protocol)
    return c
