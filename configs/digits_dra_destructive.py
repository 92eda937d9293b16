"""DRA on digits with the planted destructive op added to its 16 ops: ``sample_pairing`` at
alpha 1 replaces the image by its batch neighbour (spaces.DESTRUCTIVE_OP, as in OLA's
digits_ola_destructive.py). The search should drive its probability softmax(W) down
(search/policy_weights.png; results.json learned_policy.op_probability["sample_pairing"]).
Everything else is configs/digits_dra.py.

``python -m gar_jax.main --config=configs/digits_dra_destructive.py --workdir=runs/digits_dra_d``
"""
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "digits_dra.py"))["get_config"]


def get_config():
    c = base()
    c.dra.destructive_op = True
    return c
