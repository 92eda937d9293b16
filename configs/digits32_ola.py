"""OLA on digits32_small (the benchmark of experiments/compare): the protocol of
configs/digits32_supervised.py (WRN-10-1, batch 20, 1000 steps, standard pipeline pad 4 /
Cutout 16, no flip) with the OLA section of configs/cifar10_ola.py over the RA space (14 ops,
CIFAR magnitudes), GAR rewards, 2 samplers of 10 images, rewards normalized over the batch (as on
digits).

``python -m gar_jax.main --config=configs/digits32_ola.py --workdir=runs/digits32_ola_ra``
Variants: ``--config.ola.space=wide`` (ola_wl), ``--config.ola.reward=nslr`` (ola_nslr).
"""
from gar_jax.train.defaults import sibling

supervised = sibling(__file__, "digits32_supervised")
ola = sibling(__file__, "cifar10_ola")


def get_config():
    c = supervised.get_config("baseline")
    c.experiment = "ola"
    c.ola = ola.get_config("randaug").ola  # the OLA fields, commented in configs/cifar10_ola.py
    c.ola.ensemble_size = 2        # 2 samplers of 10 images, rewards normalized over the
    c.ola.reward_normalization = "batch"  # whole batch (the digits protocol)
    return c
