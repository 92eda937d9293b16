"""smart_augmentation on scikit-learn's digits (offline, minutes on a CPU): WRN-10-2,
batch 64, the protocol of configs/digits_supervised.py and digits_ola.py but 10 epochs instead of
30 (a step with its exact meta step costs many plain ones, about 16 on a CPU, see
experiments/smart_aug; ``--config.num_epochs=30`` for the full protocol). The augmentation distribution and magnitudes over the RA space are learned by
the exact meta-gradient through K = 1 unrolled SGD step, on a held-out 10% of the training set.

``python -m gar_jax.main --config=configs/digits_smart_aug.py --workdir=runs/digits_smart_aug``
"""
from gar_jax.methods.smart_aug import digits_config


def get_config():
    c = digits_config()
    # The smart_aug section, as set by digits_config: all from one code path of the authors, the
    # one their invScale_wide jobs ran (train_utils.run_dist_dataugV3):
    # c.smart_aug.space = "randaug"        # 14 ops, CIFAR ranges (harsh on 8x8 images)
    # c.smart_aug.num_ops = 3              # N ops per image, i.i.d.
    # c.smart_aug.inner_steps = 1          # K unrolled steps per meta step
    # c.smart_aug.temperature = 0.5        # draws from softmax(prob * 0.5)
    # c.smart_aug.heldout_fraction = 0.1   # held out of the training set for the meta loss
    # c.smart_aug.meta_learning_rate = 1e-2, c.smart_aug.mag_reg = 1e-3 (-mr default)
    # c.smart_aug.meta_clip = 1, c.grad_clip_norm = 1   # max_grad = 1: meta AND inner clip
    return c
