"""OLA on digits with a destructive op added to the RA space: ``sample_pairing`` at alpha = 1
replaces the image by its batch neighbour (label kept: about 90% label noise for those images).
OLA should drive its keep probability down (policy_over_training.png in the workdir).

``python -m gar_jax.main --config=configs/digits_ola_destructive.py --workdir=runs/digits_destr``
"""
from gar_jax.methods.ola import digits_config


def get_config():
    return digits_config(destructive_op=True)
