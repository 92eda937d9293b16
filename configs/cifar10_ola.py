"""OLA on CIFAR-10 (Table 2): the protocol of configs/cifar10_baseline.py (WRN-28-10, 200 epochs,
batch 256) with the augmentation policy learned online by REINFORCE on GAR rewards (exact,
forward mode, 2 chunks per device), over the WideLong space, or the RandAugment space after a
colon.

``python -m gar_jax.main --config=configs/cifar10_ola.py --workdir=runs/cifar10_ola_wl``
``python -m gar_jax.main --config=configs/cifar10_ola.py:ra --workdir=runs/cifar10_ola_ra``
(``:ra`` is the same as ``--config.ola.space=randaug``). Every OLA config starts from this file.
"""
import os
import runpy

import ml_collections

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "cifar10_baseline.py"))["get_config"]
SPACES = {"wide": "wide", "wl": "wide", "randaug": "randaug", "ra": "randaug"}


def get_config(space: str = "wide"):
    if space not in SPACES:
        raise ValueError(f"unknown OLA space {space!r}; use :wl (WideLong) or :ra (RandAugment)")
    c = base()
    c.experiment = "ola"
    c.augment = "standard"         # the standard pipeline after the learned policy, and alone on
                                   # the plain (unaugmented) steps
    c.ola = ml_collections.ConfigDict()
    c.ola.space = SPACES[space]    # "wide" (WL, 19 ops) or "randaug" (RA, 14 ops)
    c.ola.destructive_op = False   # add an op that replaces the image by its batch neighbour
    c.ola.max_ops = 4              # k in 1..max_ops ops per image
    c.ola.replace = True           # draw the k ops with replacement (authors' code)
    # The authors' protocol, which produced the paper's Table 2: 32 independent samplers of 8
    # images (their 4 GPUs x 8 samplers x 8 images), each normalizing its own 8 rewards with the
    # unbiased std and stepping its own Adam (Adam is elementwise, so one Adam over the stacked
    # samplers is the same). The alternative, fewer samplers with rewards normalized over the
    # global batch ("batch", used by configs/digits_ola.py), has lower-variance weights; it is
    # ours, not the paper's, so the CIFAR reproduction does not default to it.
    c.ola.ensemble_size = 32       # independent samplers; the batch is cut into as many groups
    c.ola.reward_normalization = "sampler"  # per sampler over its B/E images, unbiased std
                                   # ("sampler"), or over the global batch ("batch")
    c.ola.reward = "gar"           # "gar" or "nslr" (next-step loss, normalized across steps)
    # GAR: exact per-example alignments under step t's frozen BatchNorm statistics. "jvp"
    # (forward mode) over each device's batch in num_chunks chunks is the default because it is
    # the cheapest exact method with these numbers: at WRN-16-4 batch 128 (BatchNorm) 2 chunks
    # need no more compiled memory than the fixed-policy pair, where layer-wise frozen needs
    # +87% (experiments/ola/README.md section 7). "layerwise" + "frozen" gives the same rewards
    # (up to float rounding); "contribution" (the authors' convention, layer-wise only) differs.
    c.ola.gar_method = "jvp"       # "jvp", "vmap" or "layerwise" (all exact), or "fd": a
                                   # finite difference of the per-example losses (one forward,
                                   # ~1% error in float32; experiments/ola/README.md 7d)
    c.ola.fd_step = 1e-5           # "fd": its move along G, relative to the params' norm
    c.ola.num_chunks = 2           # jvp/vmap: cut each device's batch into this many chunks
    c.ola.chunk_size = 0           # jvp/vmap: examples per chunk instead (0: use num_chunks)
    # GAR for half of every sampler's images (the first half of each block of a sampler's images
    # on one device; batches are shuffled, so a random half), the policy learning from those:
    # the forward-mode pass is a quarter of the pair's work, and half of it brings the default
    # to the time goal (experiments/ola/README.md section 7). Here 2 of each sampler's 4 images.
    c.ola.reward_fraction = 0.5    # share of the batch whose GAR rewards are computed (GAR only)
    c.ola.target_ema = 0.0         # GAR against a moving average of the plain steps' G (decay;
                                   # 0 = this step's G alone, the paper's)
    c.ola.gar_target = "next"      # GAR against the next batch's gradient G (the paper's), or
                                   # "response": G minus that batch's gradient before the step
                                   # (one more gradient a pair; experiments/ola/README.md 6i),
                                   # or "both": the two rewards, each normalized, summed (6l)
    c.ola.before_weight = 0.0      # "response": plus this times that batch's gradient before
                                   # the step (1 = plain GAR)
    c.ola.gar_convention = "frozen"  # layerwise on BatchNorm nets: frozen batch statistics
                                   # (== jvp/vmap; a second backward), or "contribution": each
                                   # example's share of the batch gradient (the authors'; one
                                   # backward, less memory). Frozen: on digits it drove the
                                   # destructive op down more reliably (README section 4b)
    c.ola.gar_remat = False        # layerwise: recompute layer inputs at step t+1 (less memory)
    c.ola.gar_store = "auto"       # layerwise: per layer, keep its input + output-gradient
                                   # ("activations") or its per-example gradients
                                   # ("gradients"); "auto": whichever is smaller
    c.ola.learning_rate = 0.1      # Adam on the policy logits
    c.ola.b1 = 0.0                 # Adam's beta1
    c.ola.lr_schedule = "constant"  # the policy's lr: "constant" (the paper's) or "model" (the
                                   # model's warm-up + cosine decay, peak ola.learning_rate;
                                   # tried on digits, less robust: experiments/ola/README.md 6c)
    c.ola.clip = 5.0               # gradient value clipping (0 = none)
    c.ola.nslr_decay = 0.9         # NSLR: running reward statistics' decay
    return c
