"""OLA on scikit-learn's digits (offline, a few minutes on a CPU): the digits protocol of
configs/digits_supervised.py (WRN-10-2, 30 epochs, batch 64) with the OLA section of
configs/cifar10_ola.py, over the RA space (CIFAR magnitudes, harsh on 8x8 images: something to
learn) with 2 samplers of 32 images each. Every field is written here.

``python -m gar_jax.main --config=configs/digits_ola.py --workdir=runs/digits_ola``
Variants: ``--config.ola.reward=nslr``, ``--config.ola.gar_method=layerwise``,
``--config.ola.space=wide``; configs/digits_ola_destructive.py adds a destructive op.
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "ola"           # the method (its module: methods/ola.py)
    c.dataset = "digits"           # scikit-learn's 8x8 digits, bundled (offline)
    c.data_dir = ""                # tfds data_dir (unused for digits)

    c.model = ml_collections.ConfigDict()
    c.model.depth = 10             # WRN-10-2: the code path of WRN-28-10, small
    c.model.width = 2
    c.model.dropout_rate = 0.0
    c.model.norm = "batch"         # "batch" (per-device statistics) or "group"
    c.model.groups = 32            # GroupNorm groups
    c.model.dtype = "float32"      # compute dtype; "bfloat16" = mixed precision

    # The standard pipeline after the learned policy, and alone on the plain (unaugmented)
    # steps: the CIFAR pipeline scaled from 32 to 8 pixels.
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

    # OLA: the policy over ops learned online by REINFORCE on GAR rewards.
    c.ola = ml_collections.ConfigDict()
    c.ola.space = "randaug"        # "randaug" (RA, 14 ops) or "wide" (WL, 19 ops)
    c.ola.destructive_op = False   # add an op that replaces the image by its batch neighbour
    c.ola.max_ops = 4              # k in 1..max_ops ops per image
    c.ola.replace = True           # draw the k ops with replacement (authors' code)
    c.ola.ensemble_size = 2        # 2 independent samplers of 32 images (CIFAR: 32 of 8)
    c.ola.reward_normalization = "batch"  # rewards normalized over the global batch ("batch"),
                                   # or per sampler over its B/E images ("sampler", CIFAR's)
    c.ola.reward = "gar"           # "gar" or "nslr" (next-step loss, normalized across steps)
    c.ola.gar_method = "jvp"       # "jvp", "vmap" or "layerwise" (all exact, same numbers);
                                   # jvp in num_chunks chunks: configs/cifar10_ola.py; or "fd"
    c.ola.fd_step = 1e-5           # "fd": its move along G, relative to the params' norm
    c.ola.num_chunks = 2           # jvp/vmap: cut each device's batch into this many chunks
    c.ola.gar_convention = "frozen"  # layerwise on BatchNorm nets: frozen batch statistics
                                   # (== jvp/vmap), or "contribution" (the authors'; see
                                   # configs/cifar10_ola.py)
    c.ola.gar_remat = False        # layerwise: recompute layer inputs at step t+1 (less memory)
    c.ola.gar_store = "auto"       # layerwise: per layer keep "activations" or per-example
                                   # "gradients"; "auto": whichever is smaller
    c.ola.chunk_size = 0           # jvp/vmap: examples per chunk instead (0: use num_chunks)
    c.ola.reward_fraction = 0.5    # GAR for half of each sampler's images (configs/cifar10_ola.py)
    c.ola.target_ema = 0.0         # GAR against a moving average of the plain steps' G (decay;
                                   # 0 = this step's G alone, the paper's)
    c.ola.gar_target = "next"      # GAR against the next batch's gradient G (the paper's), or
                                   # "response": G minus that batch's gradient before the step
                                   # (one more gradient a pair; experiments/ola/README.md 6i),
                                   # or "both": the two rewards, each normalized, summed (6l)
    c.ola.before_weight = 0.0      # "response": plus this times that batch's gradient before
                                   # the step (1 = plain GAR)
    c.ola.learning_rate = 0.1      # Adam on the policy logits
    c.ola.b1 = 0.0                 # Adam's beta1
    c.ola.lr_schedule = "constant"  # the policy's lr: "constant" (the paper's) or "model" (the
                                   # model's warm-up + cosine decay, peak ola.learning_rate;
                                   # tried on digits, less robust: experiments/ola/README.md 6c)
    c.ola.clip = 5.0               # gradient value clipping (0 = none)
    c.ola.nslr_decay = 0.9         # NSLR: running reward statistics' decay

    c.seed = 0                     # model init, data order, augmentation and the policy's draws
    c.eval_every_epochs = 1
    c.log_every_steps = 20
    c.checkpoint_every_steps = 200  # and at the end; rerunning on the same workdir resumes
    c.keep_checkpoints = 2
    c.progress_bar = True
    c.distributed = "auto"         # multi-host: "auto" (detect SLURM/MPI/TPU pods), "on", "off"
    return c
