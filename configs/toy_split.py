"""Toy split experiment on scikit-learn's digits (offline; a few minutes on a 2-core CPU).

Usage: ``python -m gar_jax.main --config=configs/toy_split.py --workdir=runs/toy_split``, with
any field overridden, e.g. ``--config.net=fcbn --config.seeds=3 --config.ola.reward=gar``.

The train set (1437 digits) is cut into 10 splits of 143; split 0 gets uniformly random labels.
The distribution over splits is learned online with GAR and, for comparison, NSLR; 10 seeds of
FC, FCBN and CNNBN. The paper's CIFAR-10 setting is configs/toy_split_cifar10.py.
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "toy_split"     # the method (its module: methods/toy_split.py)
    c.dataset = "digits"           # digits | cifar10 | cifar100 | svhn (tfds, prepared once)
    c.data_dir = ""                # tfds data_dir ("" = tfds' default); unused for digits
    c.net = "fc,fcbn,cnnbn"        # one net or a comma list: fc | fcbn | cnnbn
    c.seeds = 10                   # seeds per (net, reward), vmapped: one compiled run
    c.seed = 0                     # seed i uses fold_in(key(seed), i)
    c.num_splits = 10              # split 0 has random labels
    c.distribution = "inverted_softmax"  # p over splits: inverted_softmax | softmax

    # Training the net. Digits has 1437 images instead of CIFAR's 50000: the paper's batch of
    # 1000 would give one step per epoch, so the batch is 100 (14 steps per epoch) and the run
    # has 40 epochs = 560 steps, about the paper's 500 steps (and so about as many meta-steps).
    c.batch_size = 100
    c.num_epochs = 40
    c.learning_rate = 0.1          # SGD, constant
    c.momentum = 0.9               # Nesterov
    c.weight_decay = 5e-4          # added to the gradient before momentum (PyTorch style)

    # Learning the split distribution: REINFORCE + Adam, as in the paper. The fields have OLA's
    # names (configs/cifar10_ola.py's ola section): the same learner, over splits.
    c.ola = ml_collections.ConfigDict()
    c.ola.reward = "gar,nslr"      # reward(s), each its own run: gar (alignment) | nslr
    c.ola.gar_method = "jvp"       # GAR computation: jvp (forward mode) | vmap (reference)
    c.ola.learning_rate = 0.1      # Adam on the split logits
    c.ola.b1 = 0.9                 # Adam's beta1
    c.ola.clip = 5.0               # clip meta-gradient values to [-5, 5] (authors); 0 = off
    c.ola.meta_every = 10          # meta-gradients averaged over this many steps per update
    c.ola.reward_normalization = "auto"  # auto: GAR per step, NSLR across steps | batch |
                                   # running
    c.ola.nslr_decay = 0.9         # across-step normalizer's EMA decay (NSLR with auto)

    # XLA backend optimization level of the compiled steps (-1: XLA's default, 0..3). Level 1
    # compiles the digits step ~2x faster than the default and runs it about as fast; level 0
    # compiles fastest and runs slowest (experiments/toy_split/bench_compile.py). CIFAR: -1.
    c.xla_opt_level = 1

    # The engine's loop settings (gar_jax.train.engine.LOOP_DEFAULTS for the rest).
    c.checkpoint_every_steps = 140  # 10 digits epochs; and at the end, and on SIGTERM / Ctrl-C
    c.progress_bar = True
    return c
