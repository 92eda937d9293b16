"""DRA on digits with the planted destructive op added to its 16 ops: ``sample_pairing`` at
alpha 1 replaces the image by its batch neighbour (spaces.DESTRUCTIVE_OP, as in OLA's
digits_ola_destructive.py). The search should drive its probability softmax(W) down
(search/policy_weights.png; results.json learned_policy.op_probability["sample_pairing"]).

The search is the authors' (per-image op, apply probability, firing, magnitude noise and sign;
only each image's own op computed; the straight-through term at the op's input), the default
of every DRA config; results in experiments/dra/README.md.

``python -m gar_jax.main --config=configs/digits_dra_destructive.py --workdir=runs/digits_dra_d``
"""
from gar_jax.methods.dra import digits_config


def get_config():
    return digits_config(destructive_op=True)
