"""OLA on digits32_small (the benchmark of experiments/compare): the protocol of
configs/digits32_supervised.py (WRN-10-1, batch 20, 1000 steps, standard pipeline pad 4 /
Cutout 16, no flip) with the OLA section of configs/digits_ola.py: the RA space (14 ops, CIFAR
magnitudes), GAR rewards (jvp, 2 chunks), 2 samplers (here of 10 images), rewards normalized
over the batch.

``python -m gar_jax.main --config=configs/digits32_ola.py --workdir=runs/digits32_ola_ra``
Variants: ``--config.ola.space=wide`` (ola_wl), ``--config.ola.reward=nslr`` (ola_nslr).
"""
import os
import runpy


def _base(name):
    return runpy.run_path(os.path.join(os.path.dirname(__file__), name))["get_config"]()


def get_config():
    c = _base("digits32_supervised.py")   # the benchmark's protocol, field for field
    c.experiment = "ola"                  # the method (its module: methods/ola.py)
    c.ola = _base("digits_ola.py").ola    # OLA's section, field for field
    return c
