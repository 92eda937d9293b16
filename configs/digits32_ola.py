"""OLA on digits32_small (the benchmark of experiments/compare): the protocol of
configs/digits32_supervised.py (WRN-10-1, batch 20, 1000 steps, standard pipeline pad 4 /
Cutout 16, no flip) with the OLA section of configs/cifar10_ola.py over the RA space (14 ops,
CIFAR magnitudes), GAR rewards, 2 samplers of 10 images, rewards normalized over the batch (as on
digits). Every field is written here.

``python -m gar_jax.main --config=configs/digits32_ola.py --workdir=runs/digits32_ola_ra``
Variants: ``--config.ola.space=wide`` (ola_wl), ``--config.ola.reward=nslr`` (ola_nslr).
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "ola"           # the method (its module: methods/ola.py)
    c.dataset = "digits32_small"   # 100 labeled 32x32 digits, 1697 test images (offline)
    c.data_dir = ""                # tfds data_dir (unused for digits)

    c.model = ml_collections.ConfigDict()
    c.model.depth = 10             # WRN-10-1: the code path of WRN-28-10, small
    c.model.width = 1
    c.model.dropout_rate = 0.0
    c.model.norm = "batch"         # "batch" (per-device statistics) or "group"
    c.model.groups = 32            # GroupNorm groups
    c.model.dtype = "float32"      # compute dtype; "bfloat16" = mixed precision

    # The standard pipeline after the learned policy, and alone on the plain (unaugmented)
    # steps: CIFAR's (the images have CIFAR's shape), without the flip.
    c.augment = "standard"
    c.augment_kwargs = ml_collections.ConfigDict()
    c.standard = ml_collections.ConfigDict()
    c.standard.pad = 4             # zero padding before the random crop back to full size
    c.standard.cutout = 16         # Cutout square side in pixels (0 = no Cutout)
    c.standard.flip = False        # digits are not mirror-symmetric
    c.standard.fill_mean = True    # fill Cutout with the dataset mean, else black

    # SGD: 200 epochs of batch 20 (1000 steps), Nesterov, lr 0.03 with a 5-epoch linear warm-up
    # then cosine decay to 0, weight decay on every parameter, gradient clipping.
    c.num_epochs = 200
    c.batch_size = 20              # global, split over all devices of all hosts
    c.eval_batch_size = 400
    c.learning_rate = 0.03         # peak, reached after the warm-up
    c.warmup_epochs = 5.0
    c.momentum = 0.9
    c.nesterov = True
    c.weight_decay = 5e-4          # added to the gradient before momentum (PyTorch SGD)
    c.decay_all_params = True      # also decay norm scales/biases and biases
    c.grad_clip_norm = 5.0         # global norm of the raw gradient; 0 = no clipping

    # OLA: the policy over ops learned online by REINFORCE on GAR rewards.
    c.ola = ml_collections.ConfigDict()
    c.ola.space = "randaug"        # "randaug" (RA, 14 ops) or "wide" (WL, 19 ops)
    c.ola.destructive_op = False   # add an op that replaces the image by its batch neighbour
    c.ola.max_ops = 4              # k in 1..max_ops ops per image
    c.ola.replace = True           # draw the k ops with replacement (authors' code)
    c.ola.ensemble_size = 2        # 2 independent samplers of 10 images (CIFAR: 32 of 8)
    c.ola.reward_normalization = "batch"  # rewards normalized over the global batch ("batch"),
                                   # or per sampler over its B/E images ("sampler", CIFAR's)
    c.ola.reward = "gar"           # "gar" or "nslr" (next-step loss, normalized across steps)
    c.ola.gar_method = "jvp"       # "jvp", "vmap" or "layerwise" (all exact, same numbers);
                                   # jvp in num_chunks chunks: configs/cifar10_ola.py
    c.ola.num_chunks = 2           # jvp/vmap: cut each device's batch into this many chunks
    c.ola.gar_convention = "frozen"  # layerwise on BatchNorm nets: frozen batch statistics
                                   # (== jvp/vmap), or "contribution" (the authors'; see
                                   # configs/cifar10_ola.py)
    c.ola.gar_remat = False        # layerwise: recompute layer inputs at step t+1 (less memory)
    c.ola.gar_store = "auto"       # layerwise: per layer keep "activations" or per-example
                                   # "gradients"; "auto": whichever is smaller
    c.ola.chunk_size = 0           # jvp/vmap: examples per chunk instead (0: use num_chunks)
    c.ola.learning_rate = 0.1      # Adam on the policy logits
    c.ola.b1 = 0.0                 # Adam's beta1
    c.ola.clip = 5.0               # gradient value clipping (0 = none)
    c.ola.nslr_decay = 0.9         # NSLR: running reward statistics' decay

    c.seed = 0                     # model init, data order, augmentation and the policy's draws
    c.eval_every_epochs = 50       # the test set is 17x the training set
    c.log_every_steps = 100
    c.checkpoint_every_steps = 250  # and at the end; rerunning on the same workdir resumes
    c.keep_checkpoints = 2
    c.progress_bar = True
    c.distributed = "auto"         # multi-host: "auto" (detect SLURM/MPI/TPU pods), "on", "off"
    return c
