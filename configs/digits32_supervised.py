"""Supervised WRN-10-1 on digits32_small (100 labeled 32x32 digits, 1697 test images; offline,
about 1.5 minutes on an idle 2-core CPU): the benchmark of experiments/compare, on which
augmentation matters.

The protocol of configs/cifar10_baseline.py (the policies keep their CIFAR settings; the images
have CIFAR's shape), with a small model and many small steps for 100 images: WRN-10-1, 200
epochs at batch 20 (1000 steps), lr 0.03. The standard pipeline (pad 4, Cutout 16) does not flip:
digits are not mirror-symmetric (a mirrored 2 or 7 is no digit; with the flip the standard
pipeline scored 4.6 points below no augmentation, experiments/compare/README.md).
``python -m gar_jax.main --config=configs/digits32_supervised.py:ra --workdir=DIR``; baselines:
none, baseline (the default: standard pipeline only), ua_ra, ua_wl, ra, ta, aa.
"""
import os
import runpy

from gar_jax.train import defaults

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "cifar10_baseline.py"))["get_config"]


def get_config(baseline: str = "baseline"):
    c = base()
    c.dataset = "digits32_small"
    # (policy, keyword arguments) of the baseline, with the CIFAR-10 magnitudes.
    c.augment, c.augment_kwargs = defaults.baseline_policy("digits32_small", baseline)
    c.model.depth = 10
    c.model.width = 1
    c.num_epochs = 200
    c.batch_size = 20
    c.eval_batch_size = 400
    c.learning_rate = 0.03
    c.warmup_epochs = 5.0
    c.standard.flip = False        # digits are not mirror-symmetric
    c.eval_every_epochs = 50       # the test set is 17x the training set
    c.log_every_steps = 100
    c.checkpoint_every_steps = 250
    return c
