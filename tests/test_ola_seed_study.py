"""experiments/ola/seed_study.py and diagnose.py on hand-made run directories: rank, ratio to
the median op and the keep curve of the destructive op (a resumed run's repeated epochs counted
once), each variant's section written once and labelled partial; diagnose's pooled per-op
weights against a hand computation."""
import json
import math
import os

import pytest

import config_files


def _module(name):
    return config_files.experiment(f"ola/{name}")


def _run(path, probs, keeps, acc=0.98, finished=True, ola=None):
    """A run dir: results.json (op probabilities), metrics.jsonl with one record per epoch of
    the destructive op's keep probability; `keeps` may repeat an epoch (a resumed run)."""
    os.makedirs(path)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for epoch, keep in keeps:
            f.write(json.dumps({"step": 22 * epoch, "epoch": epoch,
                                "train/keep/sample_pairing": keep}) + "\n")
            f.write(json.dumps({"step": 22 * epoch - 11, "epoch": epoch - 0.5,
                                "train/keep/sample_pairing": 0.9}) + "\n")  # not an epoch end
    if finished:
        with open(os.path.join(path, "results.json"), "w") as f:
            json.dump({"test_accuracy": acc, "learned_policy": {
                "op_probability": probs, "destructive_op": "sample_pairing"},
                "config": {"ola": ola or {"reward": "gar", "gar_method": "jvp"}}}, f)


def test_seed_study_table(tmp_path):
    study = _module("seed_study")
    runs = tmp_path / "runs"
    low = {"a": 0.04, "b": 0.05, "c": 0.06, "sample_pairing": 0.01}   # median 0.045
    mid = {"a": 0.04, "b": 0.05, "c": 0.06, "sample_pairing": 0.055}  # median 0.0525
    _run(str(runs / "gar_s100"), low, [(1, 0.4), (2, 0.3), (2, 0.2), (3, 0.1)], acc=0.99)
    _run(str(runs / "gar_s101"), mid, [(1, 0.5)], acc=0.97)
    _run(str(runs / "gar_s102"), low, [(1, 0.5)], finished=False)      # still running
    _run(str(runs / "gar_contribution_s100"), low, [(1, 0.4)])
    table = study.collect(str(runs))
    assert sorted(table) == ["gar", "gar_contribution"] and sorted(table["gar"]) == [100, 101]
    r = table["gar"][100]
    assert (r["rank"], r["num_ops"]) == (1, 4)
    assert r["ratio_to_median"] == pytest.approx(0.01 / 0.045)
    assert (r["keep_epochs"], r["keep_curve"], r["keep_end"]) == ([1, 2, 3], [0.4, 0.2, 0.1], 0.1)
    assert table["gar"][101]["rank"] == 3
    s = study.summary(table["gar"])
    assert (s["seeds"], s["lowest3"], s["lowest"], s["below_0.6_median"]) == (2, 2, 1, 1)
    assert s["acc_mean"] == pytest.approx(98.0) and s["acc_std"] == pytest.approx(math.sqrt(2))
    out = tmp_path / "out"
    study.main(["--runs", str(runs), "--out", str(out), "--seeds-planned", "20",
                "--header", "# Seed study"])
    md = (out / "seed_study.md").read_text()
    assert md.count("### gar (partial: 2 of 20 seeds)") == 1
    assert md.count("### gar_contribution (partial: 1 of 20 seeds)") == 1
    assert md.count("### ") == 2 and md.startswith("# Seed study")
    assert "| 100 | 0.100 | 0.0100 | 1 of 4 | 0.22 | 99.00 |" in md
    assert set(json.loads((out / "seed_study.json").read_text())) == {"gar", "gar_contribution"}
    study.main(["--runs", str(runs), "--out", str(out), "--seeds", "101"])
    md = (out / "seed_study.md").read_text()
    assert "| 101 |" in md and "| 100 |" not in md and "gar_contribution" not in md


def test_paired_comparison_by_hand(tmp_path, capsys):
    """--paired x,gar: the bar per seed, the sign test of the discordant seeds and the paired
    accuracy difference, against a hand computation; a variant without runs is refused."""
    study = _module("seed_study")
    runs = tmp_path / "runs"
    low = {"a": 0.04, "b": 0.05, "c": 0.06, "sample_pairing": 0.01}   # meets the bar
    mid = {"a": 0.04, "b": 0.05, "c": 0.06, "sample_pairing": 0.055}  # 3rd, 1.05x: does not
    # seed: (x's policy, x's accuracy, gar's policy, gar's accuracy)
    cases = {1: (low, 0.99, low, 0.98), 2: (low, 0.97, mid, 0.98), 3: (low, 0.98, mid, 0.98),
             4: (mid, 0.96, low, 0.99), 5: (mid, 0.95, mid, 0.97)}
    for seed, (px, ax, pg, ag) in cases.items():
        _run(str(runs / f"x_s{seed}"), px, [(1, 0.5)], acc=ax)
        _run(str(runs / f"gar_s{seed}"), pg, [(1, 0.5)], acc=ag)
    _run(str(runs / "gar_s6"), low, [(1, 0.5)])  # no x run: not paired
    r = study.paired(study.collect(str(runs)), "x", "gar")
    assert (r["seeds"], r["both"], r["only_variant"], r["only_base"], r["neither"]) == (
        5, 1, 2, 1, 1)
    assert r["sign_p"] == pytest.approx(1.0)  # 3 discordant, 1 the other way: 2 (1 + 3) / 8
    # differences +1, -1, 0, -3, -2 points: mean -1, sample std sqrt(10 / 4), SE that / sqrt(5)
    assert r["acc_diff_mean"] == pytest.approx(-1.0)
    assert r["acc_diff_se"] == pytest.approx(math.sqrt(2.5 / 5))
    assert r["acc_diff_t"] == pytest.approx(-1.0 / math.sqrt(0.5))
    assert (r["better"], r["equal"], r["worse"]) == (1, 1, 3)
    one_sided = {seed: dict(row, rank=1, ratio_to_median=0.1) for seed, row in
                 study.collect(str(runs))["gar"].items()}
    table = {"x": one_sided, "gar": {s: dict(v, rank=9) for s, v in one_sided.items()}}
    assert study.paired(table, "x", "gar")["sign_p"] == pytest.approx(2 / 2 ** 6)  # 6 of 6
    out = tmp_path / "out"
    study.main(["--runs", str(runs), "--out", str(out), "--paired", "x,gar"])
    md = (out / "seed_study.md").read_text()
    assert "### x against gar, paired by seed" in md
    assert "both meet it on 1, only x on 2, only gar on 1, neither on 1" in md
    assert "-1.00 +- 0.71 points (mean +- SE; t = -1.4; 1 better, 1 equal, 3 worse)" in md
    with pytest.raises(SystemExit) as e:
        study.main(["--runs", str(runs), "--out", str(out), "--paired", "y,gar"])
    assert "--paired names 'y', which has no runs" in str(e.value)
    with pytest.raises(SystemExit):
        study.main(["--runs", str(runs), "--out", str(out), "--paired", "x"])
    assert "give two variants" in capsys.readouterr().err


def test_kept_rows_fill_missing_seeds_and_must_match_the_settings(tmp_path):
    """--keep: an earlier seed_study.json supplies the seeds without a run (marked *), a run
    wins over a kept row of its seed, and a kept row of other settings is refused in one line."""
    study = _module("seed_study")
    low = {"a": 0.04, "b": 0.05, "c": 0.06, "sample_pairing": 0.01}
    mid = {"a": 0.04, "b": 0.05, "c": 0.06, "sample_pairing": 0.055}
    earlier = tmp_path / "earlier"
    _run(str(earlier / "gar_s100"), mid, [(1, 0.5)], acc=0.95)   # redone below
    _run(str(earlier / "gar_s101"), low, [(1, 0.3)], acc=0.96)   # only here
    study.main(["--runs", str(earlier), "--out", str(tmp_path / "old")])
    kept = str(tmp_path / "old" / "seed_study.json")
    runs = tmp_path / "runs"
    _run(str(runs / "gar_s100"), low, [(1, 0.2)], acc=0.99)
    out = tmp_path / "out"
    study.main(["--runs", str(runs), "--out", str(out), "--keep", kept])
    rows = json.loads((out / "seed_study.json").read_text())["gar"]
    assert sorted(rows) == ["100", "101"]
    assert rows["100"]["test_accuracy"] == 0.99 and not rows["100"].get("carried")
    assert rows["101"]["test_accuracy"] == 0.96 and rows["101"]["carried"]
    md = (out / "seed_study.md").read_text()
    assert "| 101* | 0.300 | 0.0100 | 1 of 4 |" in md and "| 100 | 0.200 |" in md
    assert "2 seeds: destructive op among the 3 lowest in 2, the lowest in 2" in md
    other = tmp_path / "other"  # the default changed: the same variant name, other settings
    _run(str(other / "gar_s102"), low, [(1, 0.2)], ola={"reward": "gar", "gar_method": "vmap"})
    with pytest.raises(SystemExit) as e:
        study.main(["--runs", str(other), "--out", str(tmp_path / "x"), "--keep", kept])
    assert "gar seed 100 ran with settings" in str(e.value) and "\n" not in str(e.value)


def test_settings_record_the_target_options_only_when_not_the_papers():
    """A run with ``ola.target_ema`` off records the settings of runs made before the option
    (their kept rows still match); one with it on differs from both."""
    study = _module("seed_study")
    before = {"reward": "gar", "gar_method": "jvp", "learning_rate": 0.1}
    off, on = dict(before, target_ema=0.0), dict(before, target_ema=0.9)
    assert study.settings_of(off) == study.settings_of(before)
    assert "target_ema" not in study.settings_of(off)
    assert study.settings_of(on) == dict(study.settings_of(before), target_ema=0.9)
    paper = dict(before, gar_target="next", before_weight=0.0)
    assert study.settings_of(paper) == study.settings_of(before)
    mix = dict(before, gar_target="response", before_weight=0.25)
    assert study.settings_of(mix) == dict(study.settings_of(before), gar_target="response",
                                          before_weight=0.25)
    fd = dict(before, gar_method="fd", fd_step=1e-5)  # the default step is not recorded
    assert study.settings_of(fd) == dict(study.settings_of(before), gar_method="fd")
    assert study.settings_of(dict(fd, fd_step=1e-6))["fd_step"] == 1e-6


def test_diagnose_pools_over_steps(tmp_path):
    diagnose = _module("diagnose")
    run = tmp_path / "run"
    os.makedirs(run)
    (run / "config.json").write_text(json.dumps({"batch_size": 10}))
    # Two records: 2 step pairs (steps 0-4, the first half) then 3 (steps 4-10), of one op.
    recs = [{"step": 4, "epoch": 1, "train/op_applied/x": 0.2, "train/op_weight/x": -0.1,
             "train/op_weight_sq/x": 0.3, "train/keep/x": 0.25,
             "train/op_rank_weight/x": 0.1, "train/op_rank_weight_sq/x": 0.2},
            {"step": 10, "epoch": 2, "train/op_applied/x": 0.4, "train/op_weight/x": 0.2,
             "train/op_weight_sq/x": 0.5, "train/keep/x": 0.2,
             "train/op_rank_weight/x": -0.3, "train/op_rank_weight_sq/x": 0.4}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    d = diagnose.diagnose(str(run))["ops"]["x"]
    n, s, s2 = 2 * 0.2 + 3 * 0.4, 2 * -0.1 + 3 * 0.2, 2 * 0.3 + 3 * 0.5  # pair-weighted
    assert d["applied_share"] == pytest.approx(n / 5)
    assert d["images"] == pytest.approx(n * 10)
    assert d["mean_weight"] == pytest.approx(s / n)
    assert d["std_weight"] == pytest.approx(math.sqrt(s2 / n - (s / n) ** 2))
    assert d["z"] == pytest.approx((s / n) / (d["std_weight"] / math.sqrt(n * 10)))
    assert d["mean_weight_first_half"] == pytest.approx(-0.1 / 0.2)
    assert d["mean_weight_second_half"] == pytest.approx(0.2 / 0.4)
    assert d["keep_logit_end"] == pytest.approx(math.log(0.2 / 0.8))
    u, u2 = 2 * 0.1 + 3 * -0.3, 2 * 0.2 + 3 * 0.4
    u_std = math.sqrt(u2 / n - (u / n) ** 2)
    assert d["rank_z"] == pytest.approx((u / n) / (u_std / math.sqrt(n * 10)))


def test_diagnose_by_part_pools_runs_and_parts(tmp_path):
    diagnose = _module("diagnose")
    paths = []
    for name, w in (("a", -0.1), ("b", 0.3)):
        run = tmp_path / name
        os.makedirs(run)
        (run / "config.json").write_text(json.dumps({"batch_size": 10}))
        # steps 4 (2 pairs, part 1 of 2) and 10 (3 pairs, part 2)
        recs = [{"step": 4, "epoch": 1, "train/op_applied/x": 0.2, "train/op_weight/x": w,
                 "train/op_weight_sq/x": 0.3},
                {"step": 10, "epoch": 2, "train/op_applied/x": 0.4, "train/op_weight/x": 0.2,
                 "train/op_weight_sq/x": 0.5}]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        paths.append(str(run))
    (n1, m1, z1), (n2, m2, z2) = diagnose.by_part(paths, parts=2)["x"]
    assert n1 == pytest.approx(2 * 2 * 0.2 * 10) and n2 == pytest.approx(2 * 3 * 0.4 * 10)
    s, s2 = 2 * 10 * (-0.1 + 0.3), 2 * 2 * 10 * 0.3     # part 1: both runs' sums
    assert m1 == pytest.approx(s / n1)
    assert z1 == pytest.approx(m1 / (math.sqrt(s2 / n1 - m1 ** 2) / math.sqrt(n1)))
    assert m2 == pytest.approx(0.2 / 0.4)
    assert "| x | 8, +0.500, " in diagnose.by_part_markdown(paths, 2)


def test_evidence_rank():
    diagnose = _module("diagnose")
    d = {"ops": {"a": {"z": -1.0, "rank_z": -3.0}, "b": {"z": -2.0, "rank_z": None},
                 "c": {"z": 0.5, "rank_z": -1.0}}}
    assert diagnose.evidence_rank(d, "a") == {"ops": 3, "z": 2, "rank_z": 1}
    assert diagnose.evidence_rank(d, "c") == {"ops": 3, "z": 3, "rank_z": 2}


def test_diagnose_refuses_a_path_that_is_not_a_run_in_one_line(tmp_path, capsys):
    """A shell glob over a runs folder catches the runs' log files too: refused, before any run
    is read (argparse's exit 2, one line of error)."""
    diagnose = _module("diagnose")
    log = tmp_path / "gar_s100.log"
    log.write_text("")
    with pytest.raises(SystemExit) as e:
        diagnose.main([str(log), "--rank-of", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(f"error: {log} is not an OLA run directory (no metrics.jsonl in it)"), err


def test_simulated_policy_gradient_is_reinforce_of_the_sampler():
    """simulate_keep's hand-written gradients == jax.grad of -mean(w log pi) with
    `ola_sampler.log_prob` (k and keep logits; 2 samplers, ops drawn with replacement)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from gar_jax.augment import ola_sampler

    sim = _module("simulate_keep")
    num_ops, max_ops, samplers, per_sampler = 15, 4, 2, 16
    rng = np.random.default_rng(3)
    params = ola_sampler.init_params(num_ops, num_levels=5, max_ops=max_ops,
                                     ensemble_size=samplers)
    params = {"k_logits": jnp.asarray(rng.normal(size=(samplers, max_ops)), jnp.float32),
              "keep_logits": jnp.asarray(rng.normal(size=(samplers, num_ops)), jnp.float32),
              "level_logits": params["level_logits"]}
    sample = ola_sampler.sample(params, jax.random.PRNGKey(0), samplers * per_sampler)
    w = jnp.asarray(rng.normal(size=samplers * per_sampler), jnp.float32)
    grads = jax.grad(lambda p: -jnp.mean(w * ola_sampler.log_prob(p, sample)))(params)

    shape = (1, samplers, per_sampler)
    k = np.asarray(sample.num_ops).reshape(shape)
    assert len(set(k.ravel())) > 1 and not np.asarray(sample.active).all()  # a real test
    p_k = np.asarray(jax.nn.softmax(params["k_logits"]))[None]
    keep = np.asarray(jax.nn.sigmoid(params["keep_logits"]))[None]
    g_psi, g_rho = sim.reinforce_gradients(
        p_k, keep, k, np.asarray(sample.op_indices).reshape(*shape, max_ops),
        np.asarray(sample.active).reshape(*shape, max_ops), np.asarray(w).reshape(shape))
    np.testing.assert_allclose(g_psi[0], grads["k_logits"], atol=1e-6)
    np.testing.assert_allclose(g_rho[0], grads["keep_logits"], atol=1e-6)


def _policy_run(path, epochs, planted_keeps, other_keep=0.5, p_k=(0.4, 0.3, 0.2, 0.1),
                replace=None):
    """A finished run: policy_history.jsonl with the planted op (last of 15) at keep
    planted_keeps[e] in epoch e + 1 (one epoch written twice, as a resumed run does) and
    results.json naming the ops."""
    os.makedirs(path)
    names = [f"op{i}" for i in range(14)] + ["sample_pairing"]
    with open(os.path.join(path, "policy_history.jsonl"), "w") as f:
        for epoch in range(1, epochs + 1):
            keep = [other_keep + 0.01 * i for i in range(14)] + [planted_keeps[epoch - 1]]
            record = {"epoch": epoch, "p_k": list(p_k), "p_keep": keep}
            if epoch == 2:  # the killed run's first record of epoch 2, then the resumed one
                f.write(json.dumps({**record, "p_keep": [0.0] * 15}) + "\n")
            f.write(json.dumps(record) + "\n")
    results = {"learned_policy": {"op_probability": {n: 0.1 for n in names[:-1]} | {
        "sample_pairing": 0.0}, "destructive_op": "sample_pairing"}}
    if replace is not None:
        results["config"] = {"ola": {"replace": replace}}
    with open(os.path.join(path, "results.json"), "w") as f:
        json.dump(results, f)


def test_polyak_readout_averages_the_second_half(tmp_path):
    import numpy as np
    from gar_jax.augment import ola_sampler

    readout = _module("polyak_readout")
    op_probability = ola_sampler.op_probability_from  # tested against enumeration

    # 4 epochs; the planted op's keep 0.1, 0.1, 0.9, 0.3 (the others 0.50-0.63): the final
    # readout sees 0.3 (the lowest, 0.55x the median), the mean of epochs 3-4 about 0.6 (11th).
    run = tmp_path / "run"
    _policy_run(str(run), 4, [0.1, 0.1, 0.9, 0.3])
    out = readout.readouts(str(run), 0.5)
    assert out["epochs"] == 4 and out["results_rank"] == 1
    assert out["final"]["rank"] == 1 and out["final"]["ok"]
    p_k = np.array([0.4, 0.3, 0.2, 0.1])
    keeps = lambda planted: np.array([0.5 + 0.01 * i for i in range(14)] + [planted])
    mean = (op_probability(p_k, keeps(0.9)) + op_probability(p_k, keeps(0.3))) / 2
    assert out["polyak"]["rank"] == int((mean < mean[-1]).sum()) + 1 == 11
    np.testing.assert_allclose(out["polyak"]["ratio"], mean[-1] / np.median(mean), rtol=1e-12)
    assert not out["polyak"]["ok"]
    # From the start (--from 0): epochs 1-4, the repeated epoch 2 counted once (its first,
    # killed record of keep 0 would pull the mean down to rank 1).
    out = readout.readouts(str(run), 0.0)
    mean = sum(op_probability(p_k, keeps(q)) for q in (0.1, 0.1, 0.9, 0.3)) / 4
    np.testing.assert_allclose(out["polyak"]["ratio"], mean[-1] / np.median(mean), rtol=1e-12)


def test_polyak_readout_follows_the_runs_draw_without_replacement(tmp_path):
    # ola.replace = False: P(a) = E[k] keep_a / A, proportional to keep_a, so the ratio to the
    # median op is the keep ratio: 0.3 / 0.56 (the 8th of 0.30, 0.50, ..., 0.63). With
    # replacement (the default, a run without the field) it is not.
    readout = _module("polyak_readout")
    _policy_run(str(tmp_path / "without"), 4, [0.1, 0.1, 0.9, 0.3], replace=False)
    _policy_run(str(tmp_path / "with"), 4, [0.1, 0.1, 0.9, 0.3])
    without = readout.readouts(str(tmp_path / "without"), 0.5)
    assert without["final"]["ratio"] == pytest.approx(0.3 / 0.56, rel=1e-12)
    # the mean of epochs 3-4: (0.9 + 0.3) / 2 = 0.6, now the median is the 8th of 0.50, ..., 0.59,
    # 0.60, 0.60, 0.61, ...: 0.57
    assert without["polyak"]["ratio"] == pytest.approx(0.6 / 0.57, rel=1e-12)
    assert abs(readout.readouts(str(tmp_path / "with"), 0.5)["final"]["ratio"]
               - 0.3 / 0.56) > 1e-3


def test_polyak_readout_refuses_an_unfinished_run_in_one_line(tmp_path, capsys):
    readout = _module("polyak_readout")
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit) as e:
        readout.main([str(tmp_path / "run")])
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert "is not a finished OLA run" in line
