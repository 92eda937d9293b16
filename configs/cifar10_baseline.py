"""CIFAR-10, Table 2 "baseline": the paper's supervised protocol (the RandAugment protocol,
docs/algorithms.md §4) with the standard pipeline only (pad-4 crop, flip, Cutout 16).

Every other supervised config starts from this file and changes a few fields.
Run: ``python -m gar_jax.main --config=configs/cifar10_baseline.py
--workdir=runs/cifar10_baseline_s0`` (repeat with --config.seed=1, 2, ... for more runs).
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "supervised"    # the method (its module: methods/<experiment>.py)
    c.dataset = "cifar10"          # gar_jax.data.sources name: cifar10, cifar100, svhn, digits
    c.data_dir = ""                # tfds data_dir ("" = tfds' default, ~/tensorflow_datasets)

    c.model = ml_collections.ConfigDict()
    c.model.depth = 28             # WRN-d-k: d
    c.model.width = 10             # WRN-d-k: k
    c.model.dropout_rate = 0.0
    c.model.norm = "batch"         # "batch" (per-device statistics, as PyTorch DDP) or "group"
    c.model.groups = 32            # GroupNorm groups
    c.model.dtype = "float32"      # compute dtype; "bfloat16" = mixed precision (fp32 params)

    # Augmentation on device, per example: the policy (gar_jax.augment.policies.get_policy name:
    # "none", "standard", "ua", "ra", "ta", "aa" or a search space = UniformAugment over it),
    # then the standard pipeline (pad-crop, flip, Cutout), as in the papers. "none" applies
    # nothing at all, "standard" only the standard pipeline (this baseline).
    c.augment = "standard"
    c.augment_kwargs = ml_collections.ConfigDict()  # keyword arguments of get_policy
    c.standard = ml_collections.ConfigDict()
    c.standard.pad = 4             # zero padding before the random crop back to full size
    c.standard.cutout = 16         # Cutout square side in pixels (0 = no Cutout)
    c.standard.flip = True         # random horizontal flip (digits32_small: off, digits are not
                                   # mirror-symmetric)
    c.standard.fill_mean = True    # fill Cutout with the dataset mean (0 after normalization,
                                   # as the authors' Cutout after normalization), else black

    # SGD: 200 epochs of batch 256, Nesterov momentum, lr 0.1 with a 5-epoch linear warm-up then
    # cosine decay to 0, weight decay on every parameter, gradient clipping.
    c.num_epochs = 200
    c.batch_size = 256             # global, split over all devices of all hosts
    c.eval_batch_size = 512        # global; the last batch is padded and masked
    c.learning_rate = 0.1          # peak, reached after the warm-up
    c.warmup_epochs = 5.0          # linear warm-up from 0, then cosine decay to 0
    c.momentum = 0.9
    c.nesterov = True
    c.weight_decay = 5e-4          # added to the gradient before momentum (PyTorch SGD)
    c.decay_all_params = True      # also decay norm scales/biases and biases (PyTorch reference)
    c.grad_clip_norm = 5.0         # global norm of the raw gradient; 0 = no clipping

    c.seed = 0                     # model init, data order and augmentation all derive from it
    c.eval_every_epochs = 1
    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000  # and at the end; rerunning on the same workdir resumes
    c.keep_checkpoints = 2
    c.progress_bar = True
    c.distributed = "auto"         # multi-host: "auto" (detect SLURM/MPI/TPU pods), "on", "off"
    return c
