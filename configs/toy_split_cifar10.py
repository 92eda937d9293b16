"""Toy split experiment on CIFAR-10 with the GAR paper's exact hyper-parameters (§6).

Usage (CIFAR-10 must have been prepared once as tfds array_record files, see README):
``python -m gar_jax.main --config=configs/toy_split_cifar10.py --workdir=runs/toy_cifar10``.

Paper: 10 splits of 5000 images, split 0 with random labels; FC, FCBN, CNNBN; batch 1000,
10 epochs (500 steps), SGD with Nesterov momentum 0.9, L2 5e-4, constant lr 0.1; meta: inverted
softmax, REINFORCE with rewards normalized per step, gradients aggregated over 10 steps, Adam
lr 0.1; 10 seeds. Every other field is the digits default (configs/toy_split.py).
"""
from gar_jax.train.defaults import sibling

base = sibling(__file__, "toy_split")


def get_config():
    c = base.get_config()
    c.dataset = "cifar10"
    c.net = "fc,fcbn,cnnbn"
    c.seeds = 10
    c.num_splits = 10
    c.distribution = "inverted_softmax"
    c.batch_size = 1000
    c.epochs = 10
    c.lr = 0.1
    c.momentum = 0.9
    c.weight_decay = 5e-4
    c.meta_lr = 0.1
    c.meta_every = 10
    c.xla_opt_level = -1  # XLA's default: 500 steps of batch-1000 CIFAR dominate the compile
    return c
