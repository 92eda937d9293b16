"""Supervised WRN-10-2 on scikit-learn's digits (8x8, offline): about a minute on a CPU.

The protocol of configs/cifar10_baseline.py, shrunk: WRN-10-2 (the same code path as WRN-28-10),
30 epochs of 1437 images, batch 64. Name a Table 2 baseline after a colon:
``python -m gar_jax.main --config=configs/digits_supervised.py:ra --workdir=DIR``; baselines:
none, baseline (the default: standard pipeline only), ua_ra, ua_wl, ra, ta, aa. The policies keep
their CIFAR settings (absolute pixel ranges, e.g. translations up to 14 px, are harsh on 8x8
images); the standard pipeline is scaled.
"""
import os
import runpy

from gar_jax.train import defaults

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "cifar10_baseline.py"))["get_config"]


def get_config(baseline: str = "baseline"):
    c = base()
    c.dataset = "digits"
    # (policy, keyword arguments) of the baseline, with the CIFAR-10 magnitudes.
    c.augment, c.augment_kwargs = defaults.baseline_policy("digits", baseline)
    c.model.depth = 10
    c.model.width = 2
    c.num_epochs = 30
    c.batch_size = 64
    c.eval_batch_size = 128
    c.learning_rate = 0.05
    c.warmup_epochs = 2.0
    c.standard.pad = 1             # the CIFAR pipeline scaled from 32 to 8 pixels
    c.standard.cutout = 4
    c.log_every_steps = 20
    c.checkpoint_every_steps = 200
    return c
