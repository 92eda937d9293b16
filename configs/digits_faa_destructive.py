"""Fast AutoAugment on digits with a planted destructive op: the search space is FAA's 15 ops
plus ``SamplePairing`` at alpha 1 (spaces.DESTRUCTIVE_OP: the image is replaced by its batch
neighbour). Density matching should rank candidates that use it low, so the final policy's
``learned_policy.op_probability["sample_pairing"]`` ends well below the 0.0625 of a random
candidate (2 steps x 1/16 x mean probability 1/2). Same protocol as configs/digits_faa.py.

``python -m gar_jax.main --config=configs/digits_faa_destructive.py --workdir=runs/digits_faa_d``
"""
from gar_jax.methods import faa


def get_config():
    return faa.digits_config(destructive_op=True)
