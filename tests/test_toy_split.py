"""Toy split experiment: splits, sampling, nets, the vmapped training, AUC table and runner."""
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import config_files
from gar_jax import reinforce
from gar_jax.data import sources
from gar_jax.data import splits
from gar_jax.errors import ConfigError
from gar_jax.models import toy
from gar_jax.methods import toy_split

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name="toy_split.py", **overrides):
    config = config_files.load_path(os.path.join(REPO, "configs", name))
    config.update_from_flattened_dict(overrides)  # "ola.reward": "gar" sets config.ola.reward
    return config


# ---------------------------------------------------------------------------------------------
# Splits and sampling
# ---------------------------------------------------------------------------------------------
def test_make_splits_partitions_and_randomizes_only_split_0():
    n, s, c = 10_007, 10, 10
    labels = jnp.full((n,), 3, jnp.int32)  # every true label is 3
    members, noisy = splits.make_splits(jax.random.key(1), labels, num_splits=s, num_classes=c)
    members, noisy = np.asarray(members), np.asarray(noisy)
    assert members.shape == (s, n // s) and members.dtype == np.int32
    assert len(np.unique(members)) == s * (n // s)  # disjoint, equal splits
    outside = np.setdiff1d(np.arange(n), members[0])
    np.testing.assert_array_equal(noisy[outside], 3)  # splits 1.. (and the 7 left over) intact
    counts = np.bincount(noisy[members[0]], minlength=c)
    # 1000 uniform labels: every class ~100 (binomial sd 9.5; 5 sd tolerance).
    assert np.all(np.abs(counts - 100) < 48), counts
    # Seeded: the same key gives the same splits.
    again = splits.make_splits(jax.random.key(1), labels, num_splits=s, num_classes=c)
    np.testing.assert_array_equal(np.asarray(again[0]), members)


def test_sample_frequencies_match_p_and_examples_come_from_their_split():
    members = np.random.default_rng(0).permutation(200).reshape(4, 50).astype(np.int32)
    p = reinforce.inverted_softmax_probs(jnp.array([2.0, 0.0, -1.0, 0.5]))
    b = 40_000
    indices, choices = jax.jit(splits.sample, static_argnums=3)(
        jax.random.key(7), jnp.log(p), jnp.asarray(members), b)
    indices, choices = np.asarray(indices), np.asarray(choices)
    freq = np.bincount(choices, minlength=4) / b
    sd = np.sqrt(np.asarray(p) * (1 - np.asarray(p)) / b)
    assert np.all(np.abs(freq - np.asarray(p)) < 5 * sd), (freq, p)
    # Every drawn example lies in the split drawn for it ...
    assert all(indices[i] in members[choices[i]] for i in range(0, b, 97))
    # ... and is uniform within it: the 50 members of split 0 each ~ (#split-0 draws)/50.
    within = np.bincount(indices[choices == 0], minlength=200)[members[0]]
    expected = (choices == 0).sum() / 50
    assert np.all(np.abs(within - expected) < 5 * np.sqrt(expected)), within


# ---------------------------------------------------------------------------------------------
# Nets
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("net,num_params,num_stats", [
    ("fc", 64 * 200 + 200 + 200 * 10 + 10, 0),  # 15010
    ("fcbn", 64 * 200 + 2 * 200 + 200 * 10 + 10, 2 * 200),  # 15210
    ("cnnbn", 3 * 3 * 1 * 1 + 2 + 64 * 10 + 10, 2),  # 661
])
def test_toy_nets_shapes_and_parameter_counts(net, num_params, num_stats):
    # eval_shape: shapes and counts without compiling anything (the nets run for real below).
    model = toy.create(net, 10)
    x = jax.ShapeDtypeStruct((5, 8, 8, 1), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(1), x, train=False), x)
    count = lambda tree: sum(a.size for a in jax.tree.leaves(tree))
    assert count(variables["params"]) == num_params
    assert count(variables.get("batch_stats", {})) == num_stats
    logits, updated = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]), variables, x)
    assert logits.shape == (5, 10) and logits.dtype == jnp.float32
    assert count(updated.get("batch_stats", {})) == num_stats


# ---------------------------------------------------------------------------------------------
# Training (one compiled (fc, gar) trainer shared by the tests below)
# ---------------------------------------------------------------------------------------------
# Executing steps is cheap (compiling them is not): the default 40 epochs x 14 steps, compiled
# without backend optimizations (xla_opt_level=0 compiles fastest).
SMALL = {"net": "fc", "ola.reward": "gar", "seeds": 3, "num_epochs": 40, "batch_size": 100,
         "xla_opt_level": 0}


@pytest.fixture(scope="module")
def digits():
    return sources.load("digits", "train"), sources.load("digits", "test")


@pytest.fixture(scope="module")
def fc_gar(digits):
    config = load_config(**SMALL)
    toy_split.validate(config)
    return config, toy_split.train_seeds(config, "fc", "gar", *digits, [0, 1, 2])


def test_gar_learns_to_avoid_the_noisy_split(fc_gar):
    _, out = fc_gar
    probs = out["split_probs"]
    steps = 40 * toy_split.steps_per_epoch(load_config(**SMALL))
    chex.assert_shape(probs, (3, steps, 10))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs[:, 0], 0.1, atol=1e-6)  # φ = 0: uniform at step 0
    # The reward sign and timing are right: after 560 steps every seed samples the noisy split
    # far less than uniform (NSLR stays near 0.1), the clean ones more, and the noisy split's
    # examples get negative normalized rewards.
    assert np.all(probs[:, -1, 0] < 0.02), probs[:, -1, 0]
    noisy, clean = toy_split.auc(probs)
    assert np.all(noisy < 0.06) and np.all(clean > 0.1), (noisy, clean)
    assert np.all(probs[:, -1, 1:] > 0.1)
    assert out["noisy_weight"][:, 1:].mean() < -0.3
    assert np.all(out["test_acc"] > 0.8)


def test_same_seed_gives_bitwise_identical_results(fc_gar, digits):
    config, out = fc_gar
    again = toy_split.train_seeds(config, "fc", "gar", *digits, [0, 1, 2])
    for key in ("split_probs", "train_loss", "test_acc"):
        np.testing.assert_array_equal(again[key], out[key])
    assert not np.array_equal(out["split_probs"][0], out["split_probs"][1])  # seeds differ


def test_vmapped_seeds_equal_a_single_seed_run(fc_gar, digits):
    config, out = fc_gar
    config = load_config(**{**SMALL, "num_epochs": 2})
    single = toy_split.train_seeds(config, "fc", "gar", *digits, [2])
    steps = single["split_probs"].shape[1]
    np.testing.assert_allclose(single["split_probs"][0], out["split_probs"][2, :steps],
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(single["train_loss"][0], out["train_loss"][2, :steps],
                               rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# AUC and table
# ---------------------------------------------------------------------------------------------
def test_auc_by_hand_and_table():
    # One seed, two steps, three splits: AUC = mean over steps.
    probs = np.array([[[0.2, 0.4, 0.4], [0.0, 0.5, 0.5]]])
    noisy, clean = toy_split.auc(probs)
    np.testing.assert_allclose(noisy, [0.1])
    np.testing.assert_allclose(clean, [0.45])
    table = toy_split.auc_table({"fc": {"gar": {"auc_noisy": [0.1, 0.3], "auc_clean": [0.4, 0.4],
                                                "test_acc": [0.9, 0.8]}}})
    assert "| fc | gar | 2 | 0.200 ± 0.100 | 0.400 ± 0.000 | 85.0 ± 5.0 |" in table


# ---------------------------------------------------------------------------------------------
# Validation and the runner
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides,message", [
    (dict(dataset="mnist"), "unknown dataset 'mnist'"),
    (dict(net="fc,vgg"), "unknown net 'vgg'"),
    (dict(net="fc,fc"), "repeats"),
    ({"ola.reward": "gar,dgr"}, "unknown reward 'dgr'"),
    ({"ola.reward": ""}, "config.ola.reward is empty"),
    (dict(distribution="sparsemax"), "unknown distribution"),
    (dict(batch_size=1431), r"batch_size=1431 must be an integer in 1\.\.1430"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(num_splits=1), "num_splits=1"),
    (dict(seeds=0), "seeds=0"),
    ({"ola.reward_normalization": "none"}, "reward_normalization"),
    ({"ola.gar_method": "loop"}, "gar_method"),
    ({"ola.b1": 1.0}, r"config.ola.b1=1.0 must be in \[0, 1\)"),
    (dict(xla_opt_level=4), "xla_opt_level"),
])
def test_validate_rejects_bad_configs(overrides, message):
    config = load_config(**overrides)
    with pytest.raises(ConfigError, match=message):
        toy_split.validate(config)


def test_validate_rejects_unknown_and_missing_fields():
    config = load_config()
    with config.unlocked():
        config.nosuch = 1
    with pytest.raises(ConfigError, match="unknown fields"):
        toy_split.validate(config)
    config = load_config()
    del config["learning_rate"]
    with pytest.raises(ConfigError, match=r"lacks fields \['learning_rate'\]"):
        toy_split.validate(config)
    config = load_config()
    del config.ola["learning_rate"]
    with pytest.raises(ConfigError, match=r"lacks fields \['ola.learning_rate'\]"):
        toy_split.validate(config)
    config = load_config()
    with config.unlocked():
        config.ola.meta_lr = 0.1  # the toy split's old name
    with pytest.raises(ConfigError, match=r"unknown fields \['ola.meta_lr'\]"):
        toy_split.validate(config)


def test_paper_config_is_valid_and_has_the_paper_settings():
    config = load_config("toy_split_cifar10.py")
    toy_split.validate(config)
    assert (config.dataset, config.batch_size, config.num_epochs, config.learning_rate,
            config.momentum, config.weight_decay, config.ola.learning_rate,
            config.ola.meta_every, config.seeds) == (
        "cifar10", 1000, 10, 0.1, 0.9, 5e-4, 0.1, 10, 10)
    assert toy_split.steps_per_epoch(config) == 50


def test_results_json_forms_round_trip(tmp_path):
    summary = {"split_probs": [[[0.5, 0.5]]], "auc_noisy": [0.5], "auc_clean": [0.5],
               "test_acc": [1.0]}
    one = toy_split.results_json({"fc": {"gar": summary, "nslr": summary}})
    assert one == {"gar": summary, "nslr": summary, "net": "fc"}
    two = toy_split.results_json({"fc": {"gar": summary}, "cnnbn": {"gar": summary}})
    assert two == {"fc": {"gar": summary}, "cnnbn": {"gar": summary}}
    engine_fields = {"dataset": "digits", "test_accuracy": 0.5, "curves": {}, "config": {}}
    for content, expected in [(one, {"fc": {"gar": summary, "nslr": summary}}),
                              (two, {"fc": {"gar": summary}, "cnnbn": {"gar": summary}})]:
        (tmp_path / "results.json").write_text(json.dumps({**engine_fields, **content}))
        assert toy_split.load_results(str(tmp_path)) == expected


def test_run_writes_outputs_and_a_rerun_resumes_the_finished_run(tmp_path, capsys):
    # The fixture's compiled trainer is reused (same config up to seeds/epochs): no compiling.
    config = load_config(**{**SMALL, "num_epochs": 2})
    workdir = str(tmp_path)
    first = toy_split.run(config, workdir)
    with open(os.path.join(workdir, "results.json")) as f:
        written = json.load(f)  # the contract form, with the engine's fields
    assert written == first and {"gar", "net", "config", "test_accuracy"} <= set(written)
    assert "nslr" not in written
    probs = np.asarray(written["gar"]["split_probs"])
    chex.assert_shape(probs, (3, 28, 10))  # [seeds][steps][splits]: 2 epochs x 1430 // 100
    noisy, clean = toy_split.auc(probs)
    np.testing.assert_allclose(written["gar"]["auc_noisy"], noisy, atol=1e-6)
    np.testing.assert_allclose(written["gar"]["auc_clean"], clean, atol=1e-6)
    assert written["net"] == "fc" and written["config"]["num_epochs"] == 2
    assert written["test_accuracy"] == pytest.approx(np.mean(written["gar"]["test_acc"]))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:  # the engine's metrics
        lines = [json.loads(line) for line in f]
    assert [(r["step"], r["epoch"]) for r in lines if "train/loss" in r] == [(14, 1), (28, 2)]
    np.testing.assert_allclose([r["train/fc_gar/loss"] for r in lines if "train/loss" in r],
                               np.asarray(written["gar"]["train_loss"]).reshape(3, 2, 14)
                               .mean(axis=(0, 2)), rtol=1e-4)
    assert [r["test/accuracy"] for r in lines if "test/accuracy" in r][-1] == pytest.approx(
        np.mean(written["gar"]["test_acc"]))
    table = open(os.path.join(workdir, "table.md")).read()
    assert f"| fc | gar | 3 | {noisy.mean():.3f} ± {noisy.std():.3f} |" in table
    assert table in capsys.readouterr().out
    png = Image.open(os.path.join(workdir, "split_probs.png"))
    assert png.format == "PNG" and png.size[0] > 300

    second = toy_split.run(config, workdir)  # the engine resumes the finished run: no steps
    assert "resumed from step 28" in capsys.readouterr().err
    assert {k: second[k] for k in ("gar", "net")} == {k: first[k] for k in ("gar", "net")}


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    """The toy split on the engine: a run of two nets stopped by SIGTERM after epoch 1
    checkpoints there and its resumption ends exactly where an uninterrupted run ends (vmapped
    seeds and all)."""
    import signal

    from gar_jax.train import engine

    config = load_config(**{**SMALL, "net": "fc,fcbn", "seeds": 2, "num_epochs": 3,
                            "progress_bar": False})
    digits = sources.load("digits", "train"), sources.load("digits", "test")
    full = engine.train(config, str(tmp_path / "full"), None,
                        toy_split.method_for(config, *digits))

    def sigterm_after_epoch_1(step, state):
        if step == 14:
            os.kill(os.getpid(), signal.SIGTERM)

    workdir = str(tmp_path / "stopped")
    with pytest.raises(engine.Preempted, match="at step 14"):
        engine.train(config, workdir, None, toy_split.method_for(config, *digits),
                     on_step=[sigterm_after_epoch_1])
    resumed = engine.train(config, workdir, None, toy_split.method_for(config, *digits))
    for net in ("fc", "fcbn"):
        assert resumed[net] == full[net]
        assert np.asarray(full[net]["gar"]["split_probs"]).shape == (2, 42, 10)
    assert resumed["curves"]["train_loss"] == full["curves"]["train_loss"]
