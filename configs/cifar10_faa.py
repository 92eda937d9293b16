"""Table 2 training (WRN-28-10, 200 epochs, RandAugment protocol) with the published Fast
AutoAugment policy ``fa_reduced_cifar10`` (493 sub-policies searched by the authors on reduced
CIFAR-10 with WRN-40-2), followed by the standard pipeline (pad-crop, flip, Cutout 16).

Everything else is configs/cifar10_baseline.py.
``python -m gar_jax.main --config=configs/cifar10_faa.py --workdir=runs/cifar10_faa``
Another policy: ``--config.augment_kwargs.policy=path/policy.json`` (e.g. a search's output).
"""
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "cifar10_baseline.py"))[
    "get_config"]


def get_config():
    c = base()
    c.augment = "faa"
    c.augment_kwargs = dict(policy="fa_reduced_cifar10")
    return c
