"""smart_augmentation on scikit-learn's digits (offline, minutes on a CPU): WRN-10-2,
batch 64, the protocol of configs/digits_supervised.py and digits_ola.py but 10 epochs instead of
30 (a step with its exact meta step costs many plain ones, about 16 on a CPU, see
experiments/smart_aug; ``--config.num_epochs=30`` for the full protocol). The augmentation
distribution and magnitudes over the RA space are learned by the exact meta-gradient through
K = 1 unrolled SGD step, on a held-out 10% of the training set. Every field is written here.

``python -m gar_jax.main --config=configs/digits_smart_aug.py --workdir=runs/digits_smart_aug``
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "smart_aug"     # the method (its module: methods/smart_aug.py)
    c.dataset = "digits"           # scikit-learn's 8x8 digits, bundled (offline)
    c.data_dir = ""                # tfds data_dir (unused for digits)

    c.model = ml_collections.ConfigDict()
    c.model.depth = 10             # WRN-10-2: the code path of WRN-28-10, small
    c.model.width = 2
    c.model.dropout_rate = 0.0
    c.model.norm = "batch"         # "batch" (per-device statistics) or "group"
    c.model.groups = 32            # GroupNorm groups
    c.model.dtype = "float32"      # compute dtype; "bfloat16" = mixed precision

    # The standard pipeline, before the learned ops ("none": off).
    c.augment = "standard"
    c.augment_kwargs = ml_collections.ConfigDict()
    c.standard = ml_collections.ConfigDict()
    c.standard.pad = 1             # zero padding before the random crop back to full size
    c.standard.cutout = 4          # Cutout square side in pixels (0 = no Cutout)
    c.standard.flip = True         # random horizontal flip
    c.standard.fill_mean = True    # fill Cutout with the dataset mean, else black

    # SGD (the inner optimizer the meta-gradient differentiates through): batch 64, Nesterov,
    # lr 0.05 with a 2-epoch linear warm-up then cosine decay to 0, weight decay on every
    # parameter, gradient clipping. 10 epochs instead of the digits protocol's 30: a step with
    # its exact meta step costs many plain ones (--config.num_epochs=30 for the full protocol).
    c.num_epochs = 10
    c.batch_size = 64              # global, split over all devices of all hosts
    c.eval_batch_size = 128
    c.learning_rate = 0.05         # peak, reached after the warm-up
    c.warmup_epochs = 2.0
    c.momentum = 0.9
    c.nesterov = True
    c.weight_decay = 5e-4          # added to the gradient before momentum (PyTorch SGD)
    c.decay_all_params = True      # also decay norm scales/biases and biases
    c.grad_clip_norm = 1.0         # the authors' inner clip (max_grad = 1); 0 = none

    # smart_augmentation: the distribution over N i.i.d. ops and their magnitudes, learned by
    # the exact meta-gradient through K unrolled SGD steps on a held-out split. The settings of
    # one code path of the authors, the one their invScale_wide jobs ran (jobs/dataug.sh ->
    # test_dataug.py -> train_utils.run_dist_dataugV3): N = 3, K = 1, temperature 0.5, Adam lr
    # 1e-2 on (prob, mag), reg_loss(0.001) (the -mr default) and max_grad = 1: the meta-gradient
    # AND the inner gradients (grad_clip_norm above) clipped at global norm 1.
    c.smart_aug = ml_collections.ConfigDict()
    c.smart_aug.space = "randaug"     # search space of gar_jax.augment.spaces ("randaug", "wide")
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

    c.seed = 0                     # model init, data order, augmentation, the held-out split
    c.eval_every_epochs = 1
    c.log_every_steps = 20
    c.checkpoint_every_steps = 200  # and at the end; rerunning on the same workdir resumes
    c.keep_checkpoints = 2
    c.progress_bar = True
    c.distributed = "auto"         # multi-host: "auto" (detect SLURM/MPI/TPU pods), "on", "off"
    return c
