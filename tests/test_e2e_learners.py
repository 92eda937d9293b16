"""Augmentation learners end to end through ``python -m gar_jax.main`` (a real process, as a
user runs them) on digits at tiny settings: DRA (search + training) and smart_augmentation
(Fast AutoAugment's: tests/test_faa_engine.py). Each run's files are checked against each
other and against what the settings imply (step counts, the policy the training used, the
reported probabilities recomputed from the written policy)."""
import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# WRN-10-1, one epoch of the final training, no warm-up.
TINY = ["--config.model.depth=10", "--config.model.width=1", "--config.num_epochs=1",
        "--config.warmup_epochs=0", "--config.progress_bar=False"]


def run_main(config: str, workdir, *overrides):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "gar_jax.main", f"--config={config}",
                           f"--workdir={workdir}", *TINY, *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]


def read(workdir, *path):
    with open(os.path.join(str(workdir), *path), encoding="utf-8") as f:
        return json.load(f)


def test_dra_search_then_training(tmp_path):
    from gar_jax.augment import dra

    run_main("configs/digits_dra.py", tmp_path, "--config.dra.search.epochs=2")
    results = read(tmp_path, "results.json")
    # Search: half of the 1437 training images per half (718 -> 359), batch 64: 5 steps/epoch.
    assert results["dra"]["search_steps"] == 10
    assert results["dra"]["estimator"] == "per image (authors')"
    assert 0.0 <= results["test_accuracy"] <= 1.0
    searched, names = dra.load_policy(str(tmp_path / "search" / "policy.json"))
    used, _ = dra.load_policy(str(tmp_path / "train" / "policy.json"))
    assert names == dra.DRA_OPS
    for k in ("W", "M_MEAN", "M_STD"):
        np.testing.assert_allclose(used[k], searched[k], atol=1e-6)  # trained with the search's
    # 10 AdamW steps (lr 0.015) moved the op logits away from their 1e-3 start.
    assert np.abs(np.asarray(searched["W"]) - 1e-3).max() > 0.01
    reported = results["learned_policy"]["op_probability"]
    np.testing.assert_allclose([reported[dra.OUR_NAME[n]] for n in names],
                               dra.op_probability(searched), rtol=1e-5)
    # The search's history: one record per epoch, the last one the written policy.
    with open(tmp_path / "search" / "policy_history.jsonl") as f:
        history = [json.loads(line) for line in f]
    assert [r["epoch"] for r in history] == [1, 2]
    for k in ("W", "M_MEAN", "M_STD"):
        np.testing.assert_allclose(history[-1][k], searched[k], atol=1e-6)


def test_smart_aug_training(tmp_path):
    from gar_jax.augment import smart

    run_main("configs/digits_smart_aug.py", tmp_path)
    results = read(tmp_path, "results.json")
    # 90 % of 1437 images (1293), batch 64: 20 steps, one meta step each (K = 1).
    assert results["steps"] == 20
    policy = read(tmp_path, "policy.json")
    learned = results["learned_policy"]
    assert learned["op_probability"] == policy["op_probability"]
    distribution = np.array(policy["distribution"])
    np.testing.assert_allclose(distribution.sum(), 1.0, rtol=1e-5)
    mag = np.array(policy["magnitude"])
    assert np.all((mag >= smart.MAG_MIN) & (mag <= smart.MAG_MAX))
    # 20 Adam steps (lr 1e-2) moved some learnable magnitude off its 0.5 start.
    assert np.abs(mag - smart.MAG_INIT).max() > 0.02
    history = [json.loads(line) for line in open(tmp_path / "policy_history.jsonl")]
    assert [r["epoch"] for r in history] == [1]
    assert history[0]["test_accuracy"] == results["test_accuracy"]
    for k in ("distribution", "magnitude", "op_probability"):
        assert history[0][k] == policy[k]
