"""Fast AutoAugment on digits with a planted destructive op: the search space is FAA's 15 ops
plus ``SamplePairing`` at alpha 1 (spaces.DESTRUCTIVE_OP: the image is replaced by its batch
neighbour). Density matching should rank candidates that use it low, so the final policy's
``learned_policy.op_probability["sample_pairing"]`` ends well below the 0.0625 of a random
candidate (2 steps x 1/16 x mean probability 1/2). Everything else is configs/digits_faa.py.

``python -m gar_jax.main --config=configs/digits_faa_destructive.py --workdir=runs/digits_faa_d``
"""
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "digits_faa.py"))[
    "get_config"]


def get_config():
    c = base()
    c.faa.destructive_op = True
    return c
