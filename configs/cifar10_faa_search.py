"""Fast AutoAugment's search protocol (paper section 4): reduced CIFAR-10 (a stratified 4000
image subset), K=5 stratified folds with 40% held out as D_A, WRN-40-2 fold models trained
200 epochs with the standard pipeline (vmapped over the 5 folds), 200 TPE trials per fold and
repeat, T=2 repeats, top 10 per fold and repeat pooled (about 500 sub-policies), then the
Table 2 training (configs/cifar10_baseline.py, 200 epochs) with the searched policy, on the
search's WRN-40-2.

``python -m gar_jax.main --config=configs/cifar10_faa_search.py --workdir=runs/cifar10_faa_search``
Needs the tfds CIFAR-10 files (see README) and an accelerator; `--config.faa.train_final=False`
stops after the search (DIR/policy.json). Expected cost: experiments/faa/README.md. The fields
of ``config.faa`` are explained in configs/digits_faa.py.
"""
import os
import runpy
import ml_collections


base = runpy.run_path(os.path.join(os.path.dirname(__file__), "cifar10_baseline.py"))[
    "get_config"]


def get_config():
    c = base()
    c.experiment = "faa"
    c.model.depth = 40             # WRN-40-2, the paper's search model
    c.model.width = 2
    c.augment = "faa"
    c.augment_kwargs = ml_collections.ConfigDict({"policy": ""})  # set by the search

    f = c.faa = ml_collections.ConfigDict()
    f.folds = 5
    f.test_fraction = 0.4
    f.reduced_size = 4000          # reduced CIFAR-10
    f.fold_epochs = 200
    f.fold_augment = "standard"
    f.fold_batching = "auto"
    f.num_sub_policies = 5
    f.num_ops = 2
    f.copies = 5
    f.score_with_standard = True
    f.trials = 200
    f.asks_per_batch = 16
    f.n_startup_trials = 10        # Optuna's default
    f.top_n = 10
    f.repeats = 2
    f.destructive_op = False
    f.extra_ops = ""               # e.g. "flip_lr,flip_ud" (faa_policy.EXTRA_OPS)
    f.score_chunk = 1              # 5 folds x 5 copies x 1600 D_A images = 40k per call
    f.train_final = True
    return c
