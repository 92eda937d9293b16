"""One cell of the comparison of every augmentation method (experiments/compare) on the
digits32_small benchmark (100 labeled 32x32 digits), as a config of its own:

``python -m gar_jax.main --config=configs/compare.py:<cell> --workdir=DIR --config.seed=S``

with ``<cell>`` one of `CELLS` (no cell: ``standard``). experiments/compare/run.py runs exactly
these (every cell x seeds 0-4). The fixed policies are configs/digits32_supervised.py's; a
method config written for 8x8 digits (configs/digits_<method>.py) is moved onto the benchmark's
protocol (`protocol`: configs/digits32_supervised.py's dataset, model, schedule and standard
pipeline, written out here; tests/test_compare.py checks that the two agree), then the cell's
own settings below.
"""
import os
import runpy

CELLS = {
    # Fixed policies (then the standard pipeline, except none).
    "none": "no augmentation at all",
    "standard": "pad-crop 4, Cutout 16 (no flip)",
    "ua_ra": "UniformAugment over the RA space",
    "ua_wl": "UniformAugment over the wide space",
    "ra": "RandAugment N=3, M=5",
    "ta": "TrivialAugment (wide ranges)",
    "aa": "AutoAugment, published CIFAR-10 policy",
    # Published policies of the searches.
    "faa_published": "Fast AutoAugment, published reduced-CIFAR-10 policy",
    "dra_published": "DRA, published CIFAR-10 policy",
    # Searches (then training with the found policy, in the same workdir).
    "faa_search": "Fast AutoAugment search + training",
    "dra_search": "DRA search + training",
    # In-loop learned augmentation.
    "smart_aug": "smart augmentation (meta step)",
    "ola_ra": "OLA, RA space, GAR rewards",
    "ola_wl": "OLA, wide space, GAR rewards",
    "ola_nslr": "OLA, RA space, NSLR rewards",
    # The hostile-space comparison (experiments/compare/hostile): the RA space plus ops that hurt
    # on this benchmark (gar_jax.augment.spaces.HOSTILE), the same for every method.
    "ua_hostile": "UniformAugment over the hostile space",
    "ra_hostile": "RandAugment N=3, M=5 over the hostile space",
    "ola_hostile": "OLA, hostile space, GAR rewards",
    "ola_nslr_hostile": "OLA, hostile space, NSLR rewards",
    "faa_hostile": "Fast AutoAugment search over its ops + the hostile ops, + training",
    "dra_hostile": "DRA search over its ops + the hostile ops, + training",
    "smart_aug_hostile": "smart augmentation over the hostile space",
}
# The hostile-space comparison's cells (experiments/compare/run.py --suite=hostile), and those
# that only it runs.
HOSTILE = ("none", "ua_ra", "ua_hostile", "ra_hostile", "ola_hostile", "ola_nslr_hostile",
           "faa_hostile", "dra_hostile", "smart_aug_hostile")
HOSTILE_ONLY = tuple(c for c in HOSTILE if c.endswith("_hostile"))
# The hostile ops (gar_jax.augment.spaces.HOSTILE_OPS) that FAA's and DRA's own op lists lack
# (both hold Invert): added to their searches with the same semantics.
HOSTILE_EXTRA_OPS = ("flip_lr", "flip_ud", "rotate_90", "rotate_180", "rotate_270",
                     "sample_pairing")


def _config(name: str, *args):
    """configs/<name>.py's config (get_config(*args))."""
    return runpy.run_path(os.path.join(os.path.dirname(__file__), name + ".py"))["get_config"](
        *args)


def protocol(c):
    """The benchmark's protocol (configs/digits32_supervised.py) on config `c`, in place."""
    c.dataset = "digits32_small"
    c.model.depth = 10             # WRN-10-1
    c.model.width = 1
    c.num_epochs = 200             # of 100 images at batch 20: 1000 steps
    c.batch_size = 20
    c.eval_batch_size = 400
    c.learning_rate = 0.03
    c.warmup_epochs = 5.0
    c.eval_every_epochs = 50       # the test set is 17x the training set
    c.log_every_steps = 100
    c.checkpoint_every_steps = 250
    c.standard.pad = 4             # CIFAR's standard pipeline (the images have CIFAR's shape)
    c.standard.cutout = 16
    c.standard.flip = False        # digits are not mirror-symmetric
    return c


def get_config(cell: str = "standard"):
    if cell not in CELLS:
        raise ValueError(f"unknown comparison cell {cell!r}; choose one of {', '.join(CELLS)}")
    if cell in HOSTILE_ONLY:
        return hostile(cell)
    if cell in ("none", "standard", "ua_ra", "ua_wl", "ra", "ta", "aa"):
        return _config("digits32_supervised", "baseline" if cell == "standard" else cell)
    if cell == "faa_published":
        return protocol(_config("digits_faa", "published"))
    if cell == "faa_search":
        c = protocol(_config("digits_faa"))
        # The fold models get the benchmark's own schedule (200 epochs of their 60 D_M images =
        # 600 steps; the 8x8 config's 15 epochs were 45 steps here, fold models at ~35 %
        # training accuracy, whose density-matching scores are noise); D_A is only 40 images,
        # so candidates are scored 16 at a time.
        c.faa.fold_epochs = 200
        c.faa.score_chunk = 16
        return c
    if cell == "dra_published":
        c = protocol(_config("digits_dra"))
        c.dra.policy = "cifar10"
        return c
    if cell == "dra_search":
        c = protocol(_config("digits_dra"))
        # The search on all 100 images (halves of 50, batch 20, 2 steps per epoch): 50 epochs =
        # 100 steps, so that its policy lr x steps (0.015 x 100) stays the paper's 1.5.
        c.dra.search.fraction = 1.0
        c.dra.search.batch_size = 20
        c.dra.search.epochs = 50
        c.dra.search.learning_rate = 0.03
        return c
    if cell == "smart_aug":
        c = protocol(_config("digits_smart_aug"))
        # 10 % of the training set (10 images) is held out for the meta loss: a held-out batch
        # of 10 (the digits default, 20 = the protocol's batch, is more than the split).
        c.smart_aug.heldout_batch_size = 10
        return c
    # OLA: configs/digits32_ola.py (the protocol, 2 samplers of 10 images), over a space and
    # with a reward.
    c = _config("digits32_ola")
    c.ola.space = "wide" if cell == "ola_wl" else "randaug"
    c.ola.reward = "nslr" if cell == "ola_nslr" else "gar"
    return c


def hostile(cell: str):
    """A hostile-space cell: its RA-space (or own-ops) counterpart over the hostile space.

    UA, RA, OLA and smart_aug draw from gar_jax.augment.spaces.HOSTILE (the RA space's 14 ops
    plus spaces.HOSTILE_OPS). FAA and DRA search over their own op lists (FAA's 15, DRA's 16,
    which already hold Invert) plus the hostile ops they lack (``faa.extra_ops`` /
    ``dra.extra_ops``), with the same semantics (SamplePairing at alpha 1, the flips).
    """
    base = {"ua_hostile": "ua_ra", "ra_hostile": "ra", "ola_hostile": "ola_ra",
            "ola_nslr_hostile": "ola_nslr", "faa_hostile": "faa_search",
            "dra_hostile": "dra_search", "smart_aug_hostile": "smart_aug"}[cell]
    c = get_config(base)
    if cell in ("ua_hostile", "ra_hostile"):
        c.augment_kwargs.space = "hostile"
    elif cell.startswith("ola"):
        c.ola.space = "hostile"
    elif cell == "smart_aug_hostile":
        c.smart_aug.space = "hostile"
    elif cell == "faa_hostile":
        c.faa.extra_ops = ",".join(HOSTILE_EXTRA_OPS)
    elif cell == "dra_hostile":
        c.dra.extra_ops = ",".join(HOSTILE_EXTRA_OPS)
    return c
