"""Toy split experiment on scikit-learn's digits (offline; a few minutes on a 2-core CPU).

Usage: ``python -m gar_jax.main --config=configs/toy_split.py --workdir=runs/toy_split``, with
any field overridden, e.g. ``--config.net=fcbn --config.seeds=3``.

The train set (1437 digits) is cut into 10 splits of 143; split 0 gets uniformly random labels.
The distribution over splits is learned online with GAR and, for comparison, NSLR; 10 seeds of
FC, FCBN and CNNBN. The fields, each commented, are in `gar_jax.methods.toy_split.default_config`
(kept in the library so that an installed package, e.g. the Colab notebook, has them too).
The paper's CIFAR-10 setting is configs/toy_split_cifar10.py.
"""
from gar_jax.methods import toy_split


def get_config():
    return toy_split.default_config()
