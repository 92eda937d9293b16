"""smart_augmentation on digits with the planted destructive op (shared with OLA:
``sample_pairing`` at alpha = 1 replaces the image by its batch neighbour, keeping the label).
The meta-gradient should drive its probability below the others (policy_over_training.png;
results.json's learned_policy.op_probability, destructive_op = "sample_pairing").
Everything else is configs/digits_smart_aug.py.

``python -m gar_jax.main --config=configs/digits_smart_aug_destructive.py
--workdir=runs/digits_smart_aug_destructive``
"""
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "digits_smart_aug.py"))[
    "get_config"]


def get_config():
    c = base()
    c.smart_aug.destructive_op = True
    return c
