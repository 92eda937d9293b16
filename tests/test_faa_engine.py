"""Fast AutoAugment's phases through the engine, via ``gar_jax.main`` (in-process, as
tests/test_e2e.py): a tiny run's files agree with its settings and each other; a run stopped
by SIGTERM during fold training resumes from the fold models' checkpoint and ends with the fold
models and policy of the uninterrupted run; a workdir of the older layout is a one-line
error."""
import json
import os
import signal
import sys

import jax
import numpy as np
import pytest
from absl import flags

from gar_jax import main as cli_main
from gar_jax.augment import faa_policy
from gar_jax.train import engine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "digits_faa.py")
# 2 folds of 862 D_M images, batch 64: 13 steps per fold epoch, 2 fold epochs = 26 fold steps
# (a checkpoint every 5); 2 x 4 trials of 2 x 2 steps; WRN-10-1; the final training (when on)
# 1 epoch of 1437 images = 22 steps.
TINY = ["--config.model.width=1", "--config.num_epochs=1", "--config.warmup_epochs=0",
        "--config.progress_bar=False", "--config.checkpoint_every_steps=5",
        "--config.faa.folds=2", "--config.faa.fold_epochs=2", "--config.faa.trials=4",
        "--config.faa.asks_per_batch=2", "--config.faa.n_startup_trials=2",
        "--config.faa.top_n=2", "--config.faa.copies=2", "--config.faa.num_sub_policies=2",
        "--config.faa.train_final=False"]
FOLD_STEPS = 26


def run_cli(workdir, monkeypatch, capsys, *extra):
    """``python -m gar_jax.main --config=configs/digits_faa.py --workdir=... TINY extra`` in this
    process. Returns (exit status, stderr)."""
    argv = ["gar_jax.main", f"--config={CONFIG}", f"--workdir={workdir}", *TINY, *extra]
    monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides from sys.argv
    for name in [n for n in flags.FLAGS if n.startswith("config.")]:
        delattr(flags.FLAGS, name)  # the previous run's --config.<field> override flags
    flags.FLAGS.unparse_flags()
    code = 0
    try:
        cli_main.main(cli_main._parse_flags(argv))
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def fold_steps_of(monkeypatch, sigterm_at=None) -> list:
    """Records the fold models' engine steps of the next runs (and sends this process SIGTERM
    after fold step `sigterm_at`, as a cluster's preemption would)."""
    seen, train = [], engine.train

    def train_watching_folds(config, workdir, setup, method, *, on_step=()):
        def watch(step, state):
            seen.append(step)
            if step == sigterm_at:
                os.kill(os.getpid(), signal.SIGTERM)
        if workdir.endswith(os.path.join("search", "folds")):
            on_step = (*on_step, watch)
        return train(config, workdir, setup, method, on_step=on_step)

    monkeypatch.setattr(engine, "train", train_watching_folds)
    return seen


def read(*path):
    with open(os.path.join(*map(str, path)), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture
def compilation_cache(tmp_path):
    """JAX's persistent compilation cache in tmp_path while the test runs: its runs compile the
    same programs, later runs read them back (the test costs about one run's compilation)."""
    from jax.experimental.compilation_cache import compilation_cache as cc
    names = {"jax_compilation_cache_dir": str(tmp_path / "xla_cache"),
             "jax_persistent_cache_min_compile_time_secs": 0.0,
             "jax_persistent_cache_min_entry_size_bytes": 0}
    old = {name: getattr(jax.config, name) for name in names}
    for name, value in names.items():
        jax.config.update(name, value)
    cc.reset_cache()
    yield
    for name, value in old.items():
        jax.config.update(name, value)
    cc.reset_cache()


def test_a_run_killed_in_fold_training_resumes_to_the_uninterrupted_policy(
        tmp_path, monkeypatch, capsys, compilation_cache):
    """Run A, uninterrupted, then run B (search only), sent SIGTERM after fold step 7 (the
    engine's preemption path): B exits 143 with a checkpoint and no policy; its rerun resumes at
    fold step 7 (19 fold steps trained, not 26) and ends with A's fold models (the same D_A
    accuracies and train losses, to the bit), A's search and A's policy. A's files agree with
    its settings: the best candidates of each study pooled into policy.json, the final
    training's results.json written by the engine in the workdir (22 steps, the policy's op
    probabilities, the search report)."""
    run, a = tmp_path / "run", tmp_path / "a"
    steps_a = fold_steps_of(monkeypatch)
    code, err = run_cli(run, monkeypatch, capsys, "--config.faa.train_final=True")
    assert code == 0, err
    assert steps_a == list(range(1, FOLD_STEPS + 1))
    os.rename(run, a)  # B runs in the same directory as A (the same programs: cache hits)

    fold_steps_of(monkeypatch, sigterm_at=7)
    code, err = run_cli(run, monkeypatch, capsys)
    assert code == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM at step 7" in err
    assert not os.path.exists(run / "policy.json")
    steps_b = fold_steps_of(monkeypatch)
    code, err = run_cli(run, monkeypatch, capsys)
    assert code == 0, err
    assert f"resumed from step 7 (epoch 0) in {run / 'search' / 'folds'}" in err
    assert steps_b == list(range(8, FOLD_STEPS + 1))

    folds_a, folds_b = read(a, "search", "folds", "results.json"), read(
        run, "search", "folds", "results.json")
    assert folds_a["steps"] == folds_b["steps"] == FOLD_STEPS
    assert folds_a["da_accuracy_per_fold"] == folds_b["da_accuracy_per_fold"]
    # The train-loss curve is the step-weighted mean of the logged means; B's preemption at step
    # 7 logs steps 1-7 and 8-10 apart where A logs 1-10 at once: the same mean up to float32
    # rounding of the partial means (the models themselves are compared through D_A above).
    np.testing.assert_allclose(folds_a["curves"]["train_loss"], folds_b["curves"]["train_loss"],
                               rtol=1e-6)
    assert folds_a["test_accuracy"] == pytest.approx(np.mean(folds_a["da_accuracy_per_fold"]))
    top = read(a, "search", "top_candidates.json")
    assert top == read(run, "search", "top_candidates.json")
    policy = read(a, "policy.json")["policies"]
    assert policy == read(run, "policy.json")["policies"]
    assert not os.path.exists(run / "results.json")  # train_final=False: no final training

    # A's policy: the 2 best of 4 trials of each study, best first, their sub-policies pooled in
    # study order, duplicates (the same op sequence) dropped within each candidate.
    assert sorted(top) == ["fold0_repeat0", "fold1_repeat0"]
    expected = []
    for name in sorted(top):
        assert len(top[name]) == 2 and top[name][0]["accuracy"] >= top[name][1]["accuracy"]
        for cand in top[name]:
            expected += faa_policy.remove_duplicates(
                [tuple(tuple(step) for step in sub) for sub in cand["policy"]])
    (searched,) = policy.values()
    searched = [tuple(tuple(step) for step in sub) for sub in searched]
    assert searched == expected
    results = read(a, "results.json")  # the final training's, written by the engine
    assert results["steps"] == 1437 // 64 and results["config"]["experiment"] == "faa"
    # results.json names the config the user ran (the workdir's config.json) and the final
    # training's augmentation: the searched policy's FAA replay.
    assert results["config"] == read(a, "config.json") and results["augment"] == "faa"
    assert results["learned_policy"]["op_probability"] == faa_policy.op_probability(searched)
    assert results["faa"] == read(a, "search", "report.json")
    assert results["faa"]["num_sub_policies_final"] == len(searched)
    assert results["faa"]["folds"]["da_accuracy_per_fold"] == folds_a["da_accuracy_per_fold"]
    assert not os.path.exists(a / "train")


def test_an_older_workdir_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    """A workdir whose fold models were saved whole (search/folds.msgpack, before the fold
    models were an engine run) cannot be resumed: one line, exit 2, before any compute."""
    os.makedirs(tmp_path / "search")
    (tmp_path / "search" / "folds.msgpack").write_bytes(b"old")
    code, err = run_cli(tmp_path, monkeypatch, capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        f"gar_jax: error: {tmp_path} holds a Fast AutoAugment run of an older gar_jax "
        "(search/folds.msgpack); use a new --workdir"]
