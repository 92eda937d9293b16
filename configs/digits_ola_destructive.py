"""OLA on digits with a destructive op added to the RA space: ``sample_pairing`` at alpha = 1
replaces the image by its batch neighbour (label kept: about 90% label noise for those images).
OLA should drive its probability down (policy_over_training.png in the workdir). Everything else
is configs/digits_ola.py.

``python -m gar_jax.main --config=configs/digits_ola_destructive.py --workdir=runs/digits_destr``
"""
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "digits_ola.py"))["get_config"]


def get_config():
    c = base()
    c.ola.destructive_op = True
    return c
