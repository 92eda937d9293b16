"""A tiny run of every experiment kind through the real entry point (``gar_jax.main``'s own flag
parser and ``main``, in this process), on digits (offline): supervised, the toy split, OLA,
smart_aug, DRA and the data mixture; Fast AutoAugment's is tests/test_faa_engine.py (a tiny FAA
run through the same entry point, uninterrupted and killed in fold training, with its search,
policy and final training checked). Each run's results.json is checked
against what its settings imply: step counts by hand, accuracies in range and consistent with
the per-seed values, learned distributions of the right shape that sum to 1, the policy a
training used equal to the one its search wrote; the toy split, stopped by SIGTERM and resumed,
ends where an uninterrupted run ends."""
import json
import os
import signal

import numpy as np
import pytest

from test_e2e import CONFIGS, run_cli

# WRN-10-1 (GroupNorm: one program whatever the batch statistics), one epoch, no warm-up.
TINY_WRN = ["--config.model.depth=10", "--config.model.width=1", "--config.model.norm=group",
            "--config.model.groups=4", "--config.num_epochs=1", "--config.warmup_epochs=0",
            "--config.progress_bar=False"]
DIGITS_TRAIN, DIGITS_TEST = 1437, 360


def _run(config, workdir, *overrides, monkeypatch, capsys):
    code, err = run_cli([f"--config={CONFIGS}/{config}", f"--workdir={workdir}", *overrides],
                        monkeypatch, capsys)
    assert code == 0, err[-3000:]
    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        saved = json.load(f)  # the workdir remembers the config it ran ...
    assert saved == results["config"]  # ... and results.json names it
    return results


def _check_wrn_run(results, steps):
    assert results["steps"] == steps and results["epochs"] == 1.0
    assert 0.0 <= results["test_accuracy"] <= 1.0
    assert results["test_error"] == pytest.approx(1.0 - results["test_accuracy"])
    assert results["test_examples"] == DIGITS_TEST  # every test image counted once
    assert results["curves"]["epoch"] == [1]
    assert results["curves"]["test_accuracy"] == [results["test_accuracy"]]


def test_supervised(tmp_path, monkeypatch, capsys):
    results = _run("digits_supervised.py:ra", tmp_path, *TINY_WRN,
                   monkeypatch=monkeypatch, capsys=capsys)
    _check_wrn_run(results, DIGITS_TRAIN // 64)
    assert results["augment"] == "ra" and results["model"] == "WRN-10-1 (group norm)"
    assert np.isfinite(results["curves"]["train_loss"][0])


TOY = ["--config.net=fc", "--config.ola.reward=gar", "--config.seeds=2",
       "--config.num_epochs=3", "--config.batch_size=500", "--config.xla_opt_level=0",
       "--config.progress_bar=False"]


def test_toy_split_and_its_resumption(tmp_path, monkeypatch, capsys):
    from gar_jax.methods import toy_split
    from gar_jax.train import engine

    full = _run("toy_split.py", tmp_path / "full", *TOY, monkeypatch=monkeypatch, capsys=capsys)
    probs = np.asarray(full["gar"]["split_probs"])
    assert probs.shape == (2, 3 * 2, 10)  # [seeds][steps][splits]: 3 epochs x 1430 // 500
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs[:, 0], 0.1, atol=1e-6)  # uniform before any update
    noisy, clean = toy_split.auc(probs)
    np.testing.assert_allclose(full["gar"]["auc_noisy"], noisy, atol=1e-6)
    np.testing.assert_allclose(full["gar"]["auc_clean"], clean, atol=1e-6)
    assert full["test_accuracy"] == pytest.approx(np.mean(full["gar"]["test_acc"]))
    assert all(0.0 <= a <= 1.0 for a in full["gar"]["test_acc"])
    assert full["net"] == "fc" and full["steps"] == 6

    # SIGTERM after epoch 1 (in-process, as a cluster's preemption), then the same command.
    train = engine.train

    def train_stopped_at_step_2(*args, on_step=(), **kwargs):
        def sigterm(step, state):
            if step == 2:
                os.kill(os.getpid(), signal.SIGTERM)
        return train(*args, on_step=(*on_step, sigterm), **kwargs)

    workdir = tmp_path / "stopped"
    monkeypatch.setattr(engine, "train", train_stopped_at_step_2)
    code, err = run_cli([f"--config={CONFIGS}/toy_split.py", f"--workdir={workdir}", *TOY],
                        monkeypatch, capsys)
    assert code == 128 + signal.SIGTERM, err
    monkeypatch.setattr(engine, "train", train)
    resumed = _run("toy_split.py", workdir, *TOY, monkeypatch=monkeypatch, capsys=capsys)
    assert resumed["gar"] == full["gar"]
    assert resumed["curves"]["train_loss"] == full["curves"]["train_loss"]


def test_ola(tmp_path, monkeypatch, capsys):
    results = _run("digits_ola.py", tmp_path, *TINY_WRN, monkeypatch=monkeypatch,
                   capsys=capsys)
    _check_wrn_run(results, DIGITS_TRAIN // 64 // 2 * 2)  # step pairs: 22
    final = results["ola"]["final_policy"]
    ops = results["ola"]["ops"]
    assert len(ops) == 14 and results["ola"]["space"] == "randaug"
    p_k = np.asarray(final["p_k"])
    assert p_k.shape == (4,)  # k = 1..max_ops
    np.testing.assert_allclose(p_k.sum(), 1.0, rtol=1e-5)
    p_keep, p_level = np.asarray(final["p_keep"]), np.asarray(final["p_level"])
    assert p_keep.shape == (14,) and np.all((p_keep > 0) & (p_keep < 1))
    assert p_level.shape[0] == 14
    np.testing.assert_allclose(p_level.sum(-1), 1.0, rtol=1e-5)  # a level distribution per op
    probability = results["learned_policy"]["op_probability"]
    assert list(probability) == ops and all(0.0 <= p <= 1.0 for p in probability.values())


def test_smart_aug(tmp_path, monkeypatch, capsys):
    from gar_jax.augment import smart_augment

    results = _run("digits_smart_aug.py", tmp_path, *TINY_WRN, monkeypatch=monkeypatch,
                   capsys=capsys)
    # 90 % of the 1437 images held in (1293), batch 64: 20 steps, one meta step each (K = 1).
    _check_wrn_run(results, 1293 // 64)
    learned = results["learned_policy"]
    distribution = np.array(list(learned["distribution"].values()))
    assert distribution.shape == (14,)
    np.testing.assert_allclose(distribution.sum(), 1.0, rtol=1e-5)
    with open(tmp_path / "policy.json", encoding="utf-8") as f:
        policy = json.load(f)
    assert policy["op_probability"] == learned["op_probability"]
    np.testing.assert_allclose(policy["distribution"], distribution, rtol=1e-6)
    mag = np.array(policy["magnitude"])
    assert np.all((mag >= smart_augment.MAG_MIN) & (mag <= smart_augment.MAG_MAX))
    # 20 Adam steps (lr 1e-2) moved some learnable magnitude off its 0.5 start.
    assert np.abs(mag - smart_augment.MAG_INIT).max() > 0.02
    with open(tmp_path / "policy_history.jsonl", encoding="utf-8") as f:
        history = [json.loads(line) for line in f]
    assert [r["epoch"] for r in history] == [1]
    assert history[0]["test_accuracy"] == results["test_accuracy"]
    for k in ("distribution", "magnitude", "op_probability"):
        assert history[0][k] == policy[k]


def test_dra(tmp_path, monkeypatch, capsys):
    from gar_jax.augment import dra_policy

    results = _run("digits_dra.py", tmp_path, *TINY_WRN, "--config.dra.search.fraction=0.2",
                   "--config.dra.search.epochs=2", monkeypatch=monkeypatch, capsys=capsys)
    _check_wrn_run(results, DIGITS_TRAIN // 64)
    # Search: 20 % of 1437 (287 -> 286) cut in halves of 143, batch 64: 2 steps per epoch.
    assert results["dra"]["search_steps"] == 4
    assert results["dra"]["estimator"] == "per image (authors')"
    assert 0.0 <= results["dra"]["search_test_accuracy"] <= 1.0
    searched, names = dra_policy.load_policy(str(tmp_path / "search" / "policy.json"))
    used, _ = dra_policy.load_policy(str(tmp_path / "policy.json"))
    assert names == dra_policy.DRA_OPS
    for k in ("W", "M_MEAN", "M_STD"):  # the training replayed what the search wrote
        np.testing.assert_allclose(used[k], searched[k], atol=1e-6)
    # 4 AdamW steps (lr 0.015) moved the op logits away from their 1e-3 start.
    assert np.abs(np.asarray(searched["W"]) - 1e-3).max() > 0.01
    learned = results["learned_policy"]
    soft = np.asarray(learned["op_softmax_per_layer"])
    assert soft.shape == (2, 16)
    np.testing.assert_allclose(soft.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose([learned["op_probability"][dra_policy.OUR_NAME[n]] for n in names],
                               dra_policy.op_probability(searched), rtol=1e-5)
    with open(tmp_path / "search" / "results.json", encoding="utf-8") as f:
        assert json.load(f)["steps"] == 4  # the search phase is an engine run of its own
    # The search's history: one record per epoch, the last one the written policy.
    with open(tmp_path / "search" / "policy_history.jsonl", encoding="utf-8") as f:
        history = [json.loads(line) for line in f]
    assert [r["epoch"] for r in history] == [1, 2]
    for k in ("W", "M_MEAN", "M_STD"):
        np.testing.assert_allclose(history[-1][k], searched[k], atol=1e-6)


def test_mixture(tmp_path, monkeypatch, capsys):
    results = _run("digits_mixture.py", tmp_path, "--config.num_steps=40",
                   "--config.steps_per_eval=20", "--config.progress_bar=False",
                   monkeypatch=monkeypatch, capsys=capsys)
    assert results["steps"] == 40 and results["curves"]["epoch"] == [1, 2]
    assert 0.0 <= results["test_accuracy"] <= 1.0
    learned = results["learned_mixture"]
    weights = np.array(list(learned["weights"].values()))
    assert len(weights) == len(learned["source_sizes"])
    np.testing.assert_allclose(weights.sum(), 1.0, atol=1e-5)
    history = np.asarray(learned["weights_over_training"])  # rounded to 5 decimals
    # One mixture per reward pair: every config.mixture.reward_every steps (4 for GAR's default).
    assert history.shape == (40 // results["config"]["mixture"]["reward_every"], len(weights))
    assert results["config"]["mixture"]["reward_every"] == 4
    np.testing.assert_allclose(history.sum(-1), 1.0, atol=len(weights) * 5e-6)
