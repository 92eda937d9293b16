"""CIFAR-100, Table 2 "baseline": the standard pipeline only (pad-4 crop, flip, Cutout 16).

The protocol (WRN-28-10, 200 epochs, batch 256, ...) is configs/cifar10_baseline.py; only the
dataset differs. Every CIFAR-100 config starts from this file.
Run: ``python -m gar_jax.main --config=configs/cifar100_baseline.py
--workdir=runs/cifar100_baseline_s0`` (repeat with --config.seed=1, 2, ... for more runs).
"""
import os
import runpy

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "cifar10_baseline.py"))["get_config"]


def get_config():
    c = base()
    c.dataset = "cifar100"
    return c
