"""OLA on digits32_small (the benchmark of experiments/compare): the protocol of
configs/digits32_supervised.py (WRN-10-1, batch 20, standard pipeline pad 4 / Cutout 16, no flip)
with OLA over the RA space (14 ops, CIFAR magnitudes), GAR rewards (layer-wise), 2 samplers of 10.

``python -m gar_jax.main --config=configs/digits32_ola.py --workdir=runs/digits32_ola_ra``
Variants: ``--config.ola.space=wide`` (ola_wl), ``--config.ola.reward=nslr`` (ola_nslr).
"""
from gar_jax.methods.ola import add_ola_section
from gar_jax.train import defaults


def get_config():
    config = add_ola_section(defaults.digits32_small("baseline"), "randaug")
    config.ola.ensemble_size = 2   # as on digits: 2 samplers of batch_size / 2 images each
    return config
