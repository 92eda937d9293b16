"""OLA on scikit-learn's digits (offline, CPU, minutes): WRN-10-2, 30 epochs, batch 64, the RA
search space (CIFAR magnitudes, harsh on 8x8 images: something to learn), GAR rewards.

``python -m gar_jax.main --config=configs/digits_ola.py --workdir=runs/digits_ola``
Variants: ``--config.ola.reward=nslr``, ``--config.ola.gar_method=jvp``,
``--config.ola.space=wide``; configs/digits_ola_destructive.py adds a destructive op.
"""
from gar_jax.methods.ola import digits_config


def get_config():
    return digits_config()
