"""Fast AutoAugment on scikit-learn's digits (offline, minutes on a CPU): the density-matching
search (3 stratified folds of 862 D_M / 575 D_A images, WRN-10-2 fold models trained 15 epochs
with the standard pipeline; 48 TPE trials per fold asked 16 at a time and scored in one jitted
pass; top 5 per fold pooled), then WRN-10-2 trained 30 epochs with the searched policy followed
by the standard pipeline (the digits protocol of configs/digits_supervised.py).

``python -m gar_jax.main --config=configs/digits_faa.py --workdir=runs/digits_faa``
(rerun the same command to resume; ``--config.faa.trials=200`` for the paper's count).
Writes DIR/policy.json (reference layout, replayable with get_policy("faa", policy=...)),
DIR/policy.png, DIR/search/{folds/ (the fold models' engine run), study.db,
top_candidates.json, report.json}, and the final training's checkpoints, metrics and
results.json (with learned_policy.op_probability) in DIR.

``--config=configs/digits_faa.py:published`` instead trains the same digits protocol with the
published FAA CIFAR-10 policy (``fa_reduced_cifar10``, no search).
"""
import os
import runpy

import ml_collections

base = runpy.run_path(os.path.join(os.path.dirname(__file__), "digits_supervised.py"))[
    "get_config"]


def get_config(variant: str = "search"):
    if variant not in ("search", "published"):
        raise ValueError(f"unknown variant {variant!r}: use 'search' or 'published'")
    c = base("baseline")
    c.augment = "faa"              # the final training replays an FAA policy ...
    if variant == "published":
        c.augment_kwargs = ml_collections.ConfigDict({"policy": "fa_reduced_cifar10"})
        return c
    c.experiment = "faa"           # methods/faa.py: search, then train with its policy
    c.augment_kwargs = ml_collections.ConfigDict({"policy": ""})  # ... the search's (set by it)

    f = c.faa = ml_collections.ConfigDict()
    f.folds = 3                    # K stratified D_M / D_A splits (5 in the paper)
    f.test_fraction = 0.4          # |D_A| / |training set| (the paper's 40%)
    f.reduced_size = 0             # stratified subset of the training set first (0: all;
                                   # reduced CIFAR-10: 4000)
    f.fold_epochs = 15             # epochs of each fold model (the config's optimizer protocol)
    f.fold_augment = "standard"    # the fold models' augmentation (the default pipeline)
    f.fold_batching = "auto"       # the K fold models in one program: "vmap" (batched over the
                                   # folds) or "unroll" (one call per fold in the program);
                                   # "auto": unroll on CPUs, vmap elsewhere
    f.num_sub_policies = 5         # sub-policies per candidate
    f.num_ops = 2                  # steps per sub-policy
    f.copies = 5                   # augmented copies of D_A per candidate (max correct over them)
    f.score_with_standard = True   # D_A copies also get the standard pipeline (as FAA's loader)
    f.trials = 48                  # TPE trials per fold and repeat (200 in the paper)
    f.asks_per_batch = 16          # trials asked per study before scoring (constant liar)
    f.n_startup_trials = 16        # random trials before TPE: the first batch is random
    f.top_n = 5                    # best candidates kept per fold and repeat (10 in the paper)
    f.repeats = 1                  # T: independent TPE searches per fold (2 in the paper)
    f.destructive_op = False       # add the planted SamplePairing (alpha 1) to the 15 ops
    f.extra_ops = ""               # more ops for the space: sample_pairing, flip_lr, flip_ud,
                                   # rotate_180 (comma-separated; experiments/compare hostile)
    f.score_chunk = 2              # candidates per scoring call: 3 folds x 2 x 5 copies x 575 =
                                   # 17k images (8 took 6 GB on a CPU)
    f.train_final = True           # train with the searched policy after the search
    return c
