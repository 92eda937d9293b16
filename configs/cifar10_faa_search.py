"""Fast AutoAugment's search protocol (paper section 4): reduced CIFAR-10 (a stratified 4000
image subset), K=5 stratified folds with 40% held out as D_A, WRN-40-2 fold models trained
200 epochs with the standard pipeline (vmapped over the 5 folds), 200 TPE trials per fold and
repeat, T=2 repeats, top 10 per fold and repeat pooled (about 500 sub-policies), then the
Table 2 training (WRN-28-10, 200 epochs) with the searched policy.

``python -m gar_jax.main --config=configs/cifar10_faa_search.py --workdir=runs/cifar10_faa_search``
Needs the tfds CIFAR-10 files (see README) and an accelerator; `--config.faa.train_final=False`
stops after the search (DIR/policy.json). Expected cost: experiments/faa/README.md.
"""
from gar_jax.methods import faa


def get_config():
    return faa.cifar_search_config()
