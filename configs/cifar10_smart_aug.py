"""smart_augmentation on CIFAR-10 at the Table 2 protocol: WRN-28-10, 200 epochs, batch 256,
SGD Nesterov 0.9 (the inner optimizer the meta-gradient differentiates through), weight decay
5e-4, lr 0.1 with 5-epoch warm-up then cosine, gradient clip 1 (the authors'); the standard
pipeline, then N = 3 learned ops over the RA space (``:wl`` for the WideLong space), K = 1,
10% of the training set held out. Every field is written here.

``python -m gar_jax.main --config=configs/cifar10_smart_aug.py --workdir=runs/cifar10_smart_aug_ra``
``python -m gar_jax.main --config=configs/cifar10_smart_aug.py:wl --workdir=runs/cifar10_smart_aug_wl``
"""
import ml_collections

SPACES = {"randaug": "randaug", "ra": "randaug", "wide": "wide", "wl": "wide"}


def get_config(space: str = "randaug"):
    if space not in SPACES:
        raise ValueError(f"unknown smart_aug space {space!r}; use :ra (RandAugment) or :wl")
    c = ml_collections.ConfigDict()
    c.experiment = "smart_aug"     # the method (its module: methods/smart_aug.py)
    c.dataset = "cifar10"          # gar_jax.data.sources name: cifar10, cifar100, svhn, digits
    c.data_dir = ""                # tfds data_dir ("" = tfds' default, ~/tensorflow_datasets)

    c.model = ml_collections.ConfigDict()
    c.model.depth = 28             # WRN-d-k: d
    c.model.width = 10             # WRN-d-k: k
    c.model.dropout_rate = 0.0
    c.model.norm = "batch"         # "batch" (per-device statistics, as PyTorch DDP) or "group"
    c.model.groups = 32            # GroupNorm groups
    c.model.dtype = "float32"      # compute dtype; "bfloat16" = mixed precision (fp32 params)

    # The standard pipeline, before the learned ops ("none": off).
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
    c.grad_clip_norm = 1.0         # the authors' inner clip (max_grad = 1); 0 = none

    # smart_augmentation: the distribution over N i.i.d. ops and their magnitudes, learned by
    # the exact meta-gradient through K unrolled SGD steps on a held-out split. The settings of
    # one code path of the authors, the one their invScale_wide jobs ran (jobs/dataug.sh ->
    # test_dataug.py -> train_utils.run_dist_dataugV3): N = 3, K = 1, temperature 0.5, Adam lr
    # 1e-2 on (prob, mag), reg_loss(0.001) (the -mr default) and max_grad = 1: the meta-gradient
    # AND the inner gradients (grad_clip_norm above) clipped at global norm 1.
    c.smart_aug = ml_collections.ConfigDict()
    c.smart_aug.space = SPACES[space]  # gar_jax.augment.spaces: "randaug" (RA) or "wide" (WL)
    c.smart_aug.ops = ""           # comma-separated subset of the space's ops ("" = all)
    c.smart_aug.destructive_op = False  # plant sample_pairing at alpha 1
    c.smart_aug.num_ops = 3        # N ops per image, drawn i.i.d.
    c.smart_aug.temperature = 0.5  # draws from softmax(prob * temperature)
    c.smart_aug.inner_steps = 1    # K unrolled SGD steps per meta step
    c.smart_aug.unsup_factor = 1.0  # weight of the augmented CE + KL terms of the mixed loss
    c.smart_aug.heldout_fraction = 0.1  # share of the training set held out for the meta loss
    c.smart_aug.heldout_batch_size = 0  # held-out batch per meta step (0 = batch_size)
    c.smart_aug.meta_learning_rate = 1e-2  # Adam on (prob, mag)
    c.smart_aug.meta_clip = 1.0    # global-norm clip of the meta-gradient (0 = none); max_grad
    c.smart_aug.mag_reg = 1e-3     # weight of MSE(mag, 1) in the meta loss (-mr default)

    c.seed = 0                     # model init, data order and augmentation all derive from it
    c.eval_every_epochs = 1
    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000  # and at the end; rerunning on the same workdir resumes
    c.keep_checkpoints = 2
    c.progress_bar = True
    c.distributed = "auto"         # multi-host: "auto" (detect SLURM/MPI/TPU pods), "on", "off"
    return c
