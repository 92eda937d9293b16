"""Shared defaults of the supervised configs (``configs/cifar10_*.py``, ``digits_*.py``, ...).

`supervised` returns the paper's Table 2 protocol (ALGORITHMS.md §4, the RandAugment protocol):
WRN-28-10, 200 epochs, batch 256, SGD Nesterov 0.9, weight decay 5e-4 on every parameter, lr 0.1
with a 5-epoch linear warm-up then cosine to 0, gradient-norm clipping at 5. A config file is then
a few lines naming the dataset and the augmentation policy; every field can be overridden on the
command line (``--config.num_epochs=10``).
"""
from typing import Optional

import ml_collections

# RandAugment (N ops, magnitude M on the 0..30 scale) for WRN-28-10 (ALGORITHMS.md §6).
RAND_AUGMENT = {"cifar10": (3, 5), "cifar100": (2, 14), "svhn": (3, 7), "digits": (3, 5),
                "digits32_small": (3, 5)}
# AutoAugment's published policy used per dataset (CIFAR-100 uses CIFAR-10's, as in the papers).
AUTO_AUGMENT = {"cifar10": "cifar10", "cifar100": "cifar10", "svhn": "svhn", "digits": "cifar10",
                "digits32_small": "cifar10"}
# The baselines of Table 2: config name -> gar_jax.augment.policies.get_policy name.
BASELINES = ("baseline", "ua_ra", "ua_wl", "ra", "ta", "aa")


def baseline_policy(dataset: str, name: str):
    """``(policy, kwargs)`` of a Table 2 baseline (`BASELINES`) on `dataset`.

    baseline: the standard pipeline only; ua_ra / ua_wl: UniformAugment over the RA / wide search
    space; ra: RandAugment(N, M); ta: TrivialAugment (wide ranges); aa: AutoAugment. All but
    "baseline" are followed by the standard pipeline (see `supervised`). "none" is also accepted.
    """
    if name == "none":
        return "none", {}
    n, m = RAND_AUGMENT[dataset]
    table = {
        "baseline": ("standard", {}),
        "ua_ra": ("ua", {"space": "randaug"}),
        "ua_wl": ("ua", {"space": "wide"}),
        "ra": ("ra", {"space": "randaug", "n": n, "m": m}),
        "ta": ("ta", {"space": "ta_wide"}),
        "aa": ("aa", {"dataset": AUTO_AUGMENT[dataset]}),
    }
    if name not in table:
        raise ValueError(f"unknown baseline {name!r}; choose one of none, {', '.join(BASELINES)}")
    return table[name]


def table2(dataset: str, baseline: str) -> ml_collections.ConfigDict:
    """The Table 2 protocol with one of the `BASELINES` augmentations, e.g. ("cifar100", "ra")."""
    policy, kwargs = baseline_policy(dataset, baseline)
    return supervised(dataset, policy, kwargs)


def supervised(dataset: str = "cifar10", augment: str = "standard",
               augment_kwargs: Optional[dict] = None) -> ml_collections.ConfigDict:
    """The Table 2 protocol on `dataset` with augmentation policy `augment`.

    `augment` and `augment_kwargs` are passed to ``gar_jax.augment.policies.get_policy``.
    """
    c = ml_collections.ConfigDict()
    c.experiment = "supervised"
    c.dataset = dataset            # gar_jax.data.sources name: cifar10, cifar100, svhn, digits
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
    # nothing at all, "standard" only the standard pipeline (the baseline).
    c.augment = augment
    c.augment_kwargs = ml_collections.ConfigDict(augment_kwargs or {})
    c.standard = ml_collections.ConfigDict()
    c.standard.pad = 4             # zero padding before the random crop back to full size
    c.standard.cutout = 16         # Cutout square side in pixels (0 = no Cutout)
    c.standard.flip = True         # random horizontal flip (False for digits: not symmetric)
    c.standard.fill_mean = True    # fill Cutout with the dataset mean (0 after normalization,
                                   # as the authors' Cutout after normalization), else black

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


def digits(baseline: str = "baseline") -> ml_collections.ConfigDict:
    """A small run on scikit-learn's digits (8x8, offline): a minute or two on a CPU.

    WRN-10-2 (the same code path as WRN-28-10), 30 epochs of 1437 images, batch 64, with one of
    the `BASELINES` (or "none"); the policies keep their CIFAR settings (absolute pixel ranges,
    e.g. translations up to 14 px, are harsh on 8x8 images), the standard pipeline is scaled.
    """
    c = table2("digits", baseline)
    c.model.depth = 10
    c.model.width = 2
    c.num_epochs = 30
    c.batch_size = 64
    c.eval_batch_size = 128
    c.learning_rate = 0.05
    c.warmup_epochs = 2.0
    c.standard.pad = 1             # the CIFAR pipeline scaled from 32 to 8 pixels
    c.standard.cutout = 4
    c.log_every_steps = 20
    c.checkpoint_every_steps = 200
    return c


def digits32_small(baseline: str = "baseline") -> ml_collections.ConfigDict:
    """The comparison benchmark (``digits32_small``: 100 labeled 32x32 digits, 1697 test images;
    experiments/compare): about a minute and a half per run on an idle 2-core CPU.

    WRN-10-1, 200 epochs of 100 images, batch 20 (1000 steps), lr 0.03 with a 5-epoch warm-up
    then cosine; everything else (policies with their CIFAR settings, the CIFAR standard pipeline
    pad 4 / Cutout 16, SGD, weight decay) is the Table 2 protocol, since the images have CIFAR's
    shape, except that the standard pipeline does not flip: digits are not mirror-symmetric (a
    flipped 2 or 7 is no digit), so flips cost the unaugmented-vs-standard comparison points
    (experiments/compare/README.md). Evaluation every 50 epochs.
    """
    c = table2("digits32_small", baseline)
    c.model.depth = 10
    c.model.width = 1
    c.num_epochs = 200
    c.batch_size = 20
    c.eval_batch_size = 400
    c.learning_rate = 0.03
    c.warmup_epochs = 5.0
    c.standard.flip = False        # digits are not mirror-symmetric
    c.eval_every_epochs = 50
    c.log_every_steps = 100
    c.checkpoint_every_steps = 250
    return c
