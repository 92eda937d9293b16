"""Fast AutoAugment on scikit-learn's digits (offline, minutes on a CPU): the density-matching
search (3 stratified folds of 862 D_M / 575 D_A images, WRN-10-2 fold models trained 15 epochs
with the standard pipeline, vmapped over folds; 48 TPE trials per fold asked 16 at a time and
scored in one jitted pass; top 5 per fold pooled), then WRN-10-2 trained 30 epochs with the
searched policy followed by the standard pipeline (the digits protocol of
experiments/baselines).

``python -m gar_jax.main --config=configs/digits_faa.py --workdir=runs/digits_faa``
(rerun the same command to resume; ``--config.faa.trials=200`` for the paper's count).
Writes DIR/policy.json (reference layout, replayable with get_policy("faa", policy=...)),
DIR/policy.png, DIR/search/{study.db, top_candidates.json, report.json}, DIR/train/ and
DIR/results.json (with learned_policy.op_probability).

``--config=configs/digits_faa.py:published`` instead trains the same digits protocol with the
published FAA CIFAR-10 policy (``fa_reduced_cifar10``, no search).
"""
from gar_jax.methods import faa
from gar_jax.train import defaults


def get_config(variant: str = "search"):
    if variant == "published":
        return _published()
    if variant != "search":
        raise ValueError(f"unknown variant {variant!r}: use 'search' or 'published'")
    return faa.digits_config()


def _published():
    c = defaults.digits("baseline")
    c.augment = "faa"
    c.augment_kwargs.policy = "fa_reduced_cifar10"
    return c
