"""Differentiable RandAugment on scikit-learn's digits (offline, CPU, about 4 minutes): the DRA
search (WRN-10-2, half the training set cut into weight / policy halves, 20 epochs of 5 steps),
then 30 epochs of WRN-10-2 training with the searched policy replayed as a fixed policy. Every
field is written here.

``python -m gar_jax.main --config=configs/digits_dra.py --workdir=runs/digits_dra``
Variants: ``--config.dra.policy=cifar10`` (no search: train with the published WRN-28-10
CIFAR-10 policy).
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "dra"           # the method (its module: methods/dra.py)
    c.dataset = "digits"           # scikit-learn's 8x8 digits, bundled (offline)
    c.data_dir = ""                # tfds data_dir (unused for digits)

    c.model = ml_collections.ConfigDict()
    c.model.depth = 10             # WRN-10-2: the code path of WRN-28-10, small
    c.model.width = 2
    c.model.dropout_rate = 0.0
    c.model.norm = "batch"         # "batch" (per-device statistics) or "group"
    c.model.groups = 32            # GroupNorm groups
    c.model.dtype = "float32"      # compute dtype; "bfloat16" = mixed precision

    # The final training's augmentation: pad-crop + flip, the DRA policy, then Cutout (the
    # authors' order; "none": off); the CIFAR pipeline scaled from 32 to 8 pixels.
    c.augment = "standard"
    c.augment_kwargs = ml_collections.ConfigDict()
    c.standard = ml_collections.ConfigDict()
    c.standard.pad = 1             # zero padding before the random crop back to full size
    c.standard.cutout = 4          # Cutout square side in pixels (0 = no Cutout)
    c.standard.flip = True         # random horizontal flip
    c.standard.fill_mean = True    # fill Cutout with the dataset mean, else black

    # SGD: 30 epochs of batch 64 (22 steps), Nesterov, lr 0.05 with a 2-epoch linear warm-up
    # then cosine decay to 0, weight decay on every parameter, gradient clipping.
    c.num_epochs = 30
    c.batch_size = 64              # global, split over all devices of all hosts
    c.eval_batch_size = 128
    c.learning_rate = 0.05         # peak, reached after the warm-up
    c.warmup_epochs = 2.0
    c.momentum = 0.9
    c.nesterov = True
    c.weight_decay = 5e-4          # added to the gradient before momentum (PyTorch SGD)
    c.decay_all_params = True      # also decay norm scales/biases and biases
    c.grad_clip_norm = 5.0         # global norm of the raw gradient; 0 = no clipping

    # DRA: the search's settings (the paper's search_CIFAR.py, scaled to digits), then the
    # final training above with the policy replayed as a fixed policy.
    c.dra = ml_collections.ConfigDict()
    c.dra.policy = "search"        # "search", a published policy ("cifar10", "cifar100", or a
                                   # name in gar_jax.augment.dra_policy.PUBLISHED) or a JSON path
    c.dra.policy_name = ""         # which policy of a JSON holding several ("" = its only one)
    c.dra.destructive_op = False   # search over the 16 DRA ops + sample_pairing (alpha 1)
    c.dra.extra_ops = ""           # more ops: sample_pairing, flip_lr, flip_ud, rotate_180
    c.dra.p_min = 0.2              # apply probability p ~ U(p_min, p_max) per layer
    c.dra.p_max = 0.8
    c.dra.grid = 1000              # replay: magnitudes quantized to 1 / (2 grid)
    c.dra.search = ml_collections.ConfigDict()
    c.dra.search.layers = 2        # DRA layers (ops in sequence)
    c.dra.search.fraction = 0.5    # of the training set, cut in halves (359 + 359 images):
                                   # weights / policy (CIFAR: 0.08)
    c.dra.search.epochs = 20       # over the weight half: 20 epochs of 5 steps
    c.dra.search.batch_size = 64   # (CIFAR: 128)
    c.dra.search.learning_rate = 0.05  # SGD Nesterov 0.9, cosine to 0, no warm-up (CIFAR: 0.1)
    c.dra.search.weight_decay = 5e-4
    c.dra.search.grad_clip_norm = 5.0
    c.dra.search.dropout_rate = 0.0  # the search model's dropout (authors' WRN-28-10: 0.3)
    # AdamW on W, M_MEAN, M_STD. The learning rate is scaled so that lr x search steps (the most
    # W can move) matches the paper's (5e-3 x 300 steps = 1.5 on CIFAR-10; here 0.015 x 100).
    c.dra.search.policy_learning_rate = 0.015
    c.dra.search.policy_b1 = 0.5
    c.dra.search.policy_b2 = 0.999
    c.dra.search.policy_weight_decay = 0.0
    c.dra.search.tau = 0.5         # Gumbel-softmax temperature
    c.dra.search.kl_weight = 1.0   # lambda of CE(aug) + lambda KL(p(clean) || p(aug))

    c.seed = 0                     # model init, data order, augmentation, the search's split
    c.eval_every_epochs = 1
    c.log_every_steps = 20
    c.checkpoint_every_steps = 200  # and at the end; rerunning on the same workdir resumes
    c.keep_checkpoints = 2
    c.progress_bar = True
    c.distributed = "auto"         # multi-host: "auto" (detect SLURM/MPI/TPU pods), "on", "off"
    return c
