"""The paper's DRA search on CIFAR-10 (search_CIFAR.py), then Table 2 training with the result.

Search (workdir/search): WRN-28-10 (dropout 0.3), 8% of the training set cut into halves (2000
images for the weights, 2000 for the policy), 20 epochs at batch 128; per step a policy update
(CE(aug) + 1.0 KL(clean || aug), AdamW lr 5e-3, b1 0.5, wd 0; hard Gumbel-softmax tau 0.5, one
op, apply probability, magnitude noise and sign drawn per image as the authors' tf.map_fn, the
straight-through term at each op's input; the policy half gets no crop/flip) and a weight update
(SGD Nesterov lr 0.1 cosine, wd 5e-4, clip 5). Training (workdir): WRN-28-10, 200 epochs
with the searched policy, crop/flip -> DRA -> Cutout.

``python -m gar_jax.main --config=configs/cifar10_dra_search.py --workdir=runs/cifar10_dra_search``
Every field is written here; configs/cifar10_dra.py and cifar100_dra.py change the policy.
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "dra"           # the method (its module: methods/dra.py)
    c.dataset = "cifar10"          # gar_jax.data.sources name: cifar10, cifar100, svhn, digits
    c.data_dir = ""                # tfds data_dir ("" = tfds' default, ~/tensorflow_datasets)

    c.model = ml_collections.ConfigDict()
    c.model.depth = 28             # WRN-d-k: d
    c.model.width = 10             # WRN-d-k: k
    c.model.dropout_rate = 0.0
    c.model.norm = "batch"         # "batch" (per-device statistics, as PyTorch DDP) or "group"
    c.model.groups = 32            # GroupNorm groups
    c.model.dtype = "float32"      # compute dtype; "bfloat16" = mixed precision (fp32 params)

    # The final training's augmentation: pad-crop + flip, the DRA policy, then Cutout (the
    # authors' order, train_phase/train_CIFAR.py; "none": off).
    c.augment = "standard"
    c.augment_kwargs = ml_collections.ConfigDict()
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

    # DRA: the paper's search (search_CIFAR.py), then the final training above with the policy
    # replayed as a fixed policy.
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
    c.dra.search.fraction = 0.08   # of the training set, cut in halves: weights / policy
    c.dra.search.epochs = 20       # over the weight half
    c.dra.search.batch_size = 128
    c.dra.search.learning_rate = 0.1  # SGD Nesterov 0.9, cosine to 0, no warm-up
    c.dra.search.weight_decay = 5e-4
    c.dra.search.grad_clip_norm = 5.0
    c.dra.search.dropout_rate = 0.3  # the search model's dropout (search_CIFAR.py's WRN-28-10)
    c.dra.search.policy_learning_rate = 5e-3  # AdamW on W, M_MEAN, M_STD
    c.dra.search.policy_b1 = 0.5
    c.dra.search.policy_b2 = 0.999
    c.dra.search.policy_weight_decay = 0.0
    c.dra.search.tau = 0.5         # Gumbel-softmax temperature
    c.dra.search.kl_weight = 1.0   # lambda of CE(aug) + lambda KL(p(clean) || p(aug))

    c.seed = 0                     # model init, data order and augmentation all derive from it
    c.eval_every_epochs = 1
    c.log_every_steps = 100
    c.checkpoint_every_steps = 2000  # and at the end; rerunning on the same workdir resumes
    c.keep_checkpoints = 2
    c.progress_bar = True
    c.distributed = "auto"         # multi-host: "auto" (detect SLURM/MPI/TPU pods), "on", "off"
    return c
