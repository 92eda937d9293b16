"""experiments/compare/run.py: statistics, reading cells, resuming, methods not yet available."""
import json
import math
import os

import numpy as np
import pytest

import config_files



@pytest.fixture(scope="module")
def compare():
    return config_files.experiment("compare/run")


def test_mean_ci_is_student_t_by_hand(compare):
    # [1..5]: mean 3, sample std sqrt(2.5), t(0.975, 4 dof) = 2.7764451 (tables).
    mean, half = compare.mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == pytest.approx(3.0)
    assert half == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert math.isnan(compare.mean_ci([0.5])[1])


def _write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def test_read_cell_times(compare, tmp_path):
    one = tmp_path / "standard_s0"
    assert compare.read_cell(str(one)) is None  # not started
    _write(str(one / "results.json"), {"test_accuracy": 0.9, "wall_time_s": 61.0})
    assert compare.read_cell(str(one)) == (0.9, 61.0, None)
    # A search method: per-phase results of the engine, or its own train_s / search_s.
    two = tmp_path / "faa_search_s0"
    _write(str(two / "search" / "results.json"), {"test_accuracy": 0.5, "wall_time_s": 300.0})
    assert compare.read_cell(str(two)) is None  # the search finished, the training did not
    _write(str(two / "train" / "results.json"), {"test_accuracy": 0.8, "wall_time_s": 70.0})
    _write(str(two / "results.json"), {"test_accuracy": 0.8, "wall_time_s": 400.0})
    assert compare.read_cell(str(two)) == (0.8, 70.0, 300.0)
    _write(str(two / "results.json"), {"test_accuracy": 0.8, "train_s": 71.0, "search_s": 9.0})
    assert compare.read_cell(str(two)) == (0.8, 71.0, 9.0)
    # FAA's report: fold models + TPE search; DRA's: its search phase.
    _write(str(two / "results.json"), {"test_accuracy": 0.8, "wall_time_s": 70.0, "faa": {
        "search_seconds": 20.0, "folds": {"seconds": 5.0}}})
    assert compare.read_cell(str(two)) == (0.8, 70.0, 25.0)
    _write(str(two / "results.json"), {"test_accuracy": 0.8, "dra": {"search_wall_time_s": 33.0}})
    assert compare.read_cell(str(two)) == (0.8, 70.0, 33.0)


def test_the_protocol_of_configs_compare_is_that_of_digits32_supervised(compare):
    """configs/compare.py writes the benchmark's protocol out: moved onto a digits config it
    gives exactly configs/digits32_supervised.py; every cell runs on it; the runner's cells are
    configs/compare.py's."""
    import runpy

    module = runpy.run_path(os.path.join(config_files.CONFIGS, "compare.py"))
    config = module["protocol"](config_files.load("digits_supervised:baseline"))
    assert config.to_dict() == config_files.load("digits32_supervised:baseline").to_dict()
    assert compare.method_table("digits32_small") == {
        m: (f"configs/compare.py:{m}", []) for m in module["CELLS"]
        if m not in module["HOSTILE_ONLY"]}
    assert list(compare.method_table("digits32_small", "hostile")) == list(module["HOSTILE"])
    for cell in module["CELLS"]:
        c = config_files.load(f"compare:{cell}")
        assert (c.dataset, c.model.width, c.num_epochs, c.batch_size, c.standard.flip) == (
            "digits32_small", 1, 200, 20, False), cell
    assert config_files.load("compare:dra_search").dra.search.epochs == 50
    assert config_files.load("compare:ola_nslr").ola.reward == "nslr"
    # The hostile cells: their counterparts over the hostile space (FAA / DRA: + the ops they lack)
    assert config_files.load("compare:ua_hostile").augment_kwargs.to_dict() == {"space": "hostile"}
    assert config_files.load("compare:ola_nslr_hostile").ola.to_dict() == dict(
        config_files.load("compare:ola_nslr").ola.to_dict(), space="hostile")
    assert config_files.load("compare:smart_aug_hostile").smart_aug.space == "hostile"
    extra = "flip_lr,flip_ud,rotate_90,rotate_180,rotate_270,sample_pairing"
    assert config_files.load("compare:faa_hostile").faa.extra_ops == extra
    assert config_files.load("compare:dra_hostile").dra.extra_ops == extra


def test_main_skips_finished_cells_reruns_others_and_reports_missing(compare, tmp_path,
                                                                    monkeypatch):
    root, out = tmp_path / "runs", tmp_path / "out"
    table = {"standard": ("configs/digits32_supervised.py:baseline", []),
             "ra": ("configs/digits32_supervised.py:ra", []),
             "later": ("configs/not_yet_written.py", [])}
    monkeypatch.setattr(compare, "method_table", lambda benchmark, suite="main": table)
    accuracy = {"standard": [0.90, 0.92], "ra": [0.95, 0.97]}
    calls = []

    def fake_run(argv, workdir, core=None):  # a "run" that writes what the engine writes
        name, seed = os.path.basename(workdir).rsplit("_s", 1)
        calls.append((name, int(seed)))
        _write(os.path.join(workdir, "results.json"),
               {"test_accuracy": accuracy[name][int(seed)], "wall_time_s": 10.0 + int(seed)})
        return None

    monkeypatch.setattr(compare, "run_cell", fake_run)
    # Seed 0 of "standard" finished before the comparison was killed: it is not rerun.
    _write(str(root / "standard_s0" / "results.json"),
           {"test_accuracy": 0.90, "wall_time_s": 10.0})
    bench = tmp_path / "bench.json"  # bench_cells.py's figures: ra's step costs 1.5 standard's
    _write(str(bench), {"seconds_per_call": {"standard": 0.02, "fixed:ra": 0.03},
                        "plans": {"standard": [["standard", 1000]], "ra": [["fixed:ra", 1000]]}})
    compare.main(["--methods=all", "--seeds=0,1", f"--root={root}", f"--out={out}",
                  f"--bench={bench}"])
    assert calls == [("ra", 0), ("standard", 1), ("ra", 1)]
    with open(out / "results.json", encoding="utf-8") as f:
        results = json.load(f)
    assert set(results) == {"standard", "ra"}
    assert results["ra"]["test_acc"] == [0.95, 0.97]
    assert results["ra"]["train_s"] == [10.0, 11.0] and results["ra"]["search_s"] == [None] * 2
    text = (out / "results.md").read_text()
    assert "| later | 0 | not available: configs/not_yet_written.py is not in the tree" in text
    # ra: 96.00 ± t(0.975, 1 dof) * std / sqrt(2) = 12.706 * 1.4142 / 1.4142 points; cost
    # 1000 x 0.03 / (1000 x 0.02).
    assert "| ra | 2 | 96.00 ± 12.71 | 95.00, 97.00 | 1.50x |" in text
    assert results["ra"]["cost"] == pytest.approx(1.5)
    assert (out / "results.png").stat().st_size > 1000
    # Run again: nothing left to do.
    calls.clear()
    compare.main(["--methods=standard,ra", "--seeds=0,1", f"--root={root}", f"--out={out}",
                  "--bench="])
    assert calls == []
    assert "| ra | 2 | 96.00 ± 12.71 | 95.00, 97.00 | - |" in (out / "results.md").read_text()
    np.testing.assert_allclose(json.load(open(out / "results.json"))["standard"]["test_acc"],
                               [0.90, 0.92])


def test_benchmark_standard_pipeline_does_not_flip():
    """digits32_small's standard pipeline (flip=False): pad 0 / Cutout 0 leave images unchanged,
    while the CIFAR default (flip=True) mirrors about half of them."""
    import jax

    from gar_jax.augment import policies

    images = np.random.default_rng(0).integers(0, 256, (64, 6, 6, 1), dtype=np.uint8)
    key = jax.random.PRNGKey(0)
    kept = policies.get_policy("standard", pad=0, cutout=0, flip=False)(key, images)
    np.testing.assert_array_equal(np.asarray(kept), images)
    flipped = np.asarray(policies.get_policy("standard", pad=0, cutout=0)(key, images))
    mirrored = np.all(flipped == images[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(mirrored | np.all(flipped == images, axis=(1, 2, 3)))
    assert 16 <= mirrored.sum() <= 48
    assert config_files.load("digits32_supervised:ra").standard.flip is False
    assert config_files.load("cifar10_ra").standard.flip is True


def test_hostile_summary_gap_recovery_welch_and_learned_probabilities_by_hand(compare, tmp_path):
    from scipy.special import stdtr

    policy = {"identity": 0.1, "rotate": 0.2, "invert": 0.05, "flip_lr": 0.3, "flip_ud": 0.1,
              "rotate_90": 0.1, "rotate_180": 0.1, "rotate_270": 0.1, "sample_pairing": 0.01}
    results = {"ua_ra": {"test_acc": [0.96, 0.97, 0.95]},
               "ua_hostile": {"test_acc": [0.93, 0.94, 0.92]},
               "ola_hostile": {"test_acc": [0.95, 0.955, 0.94], "op_probability": [policy] * 3}}
    text = compare.hostile_markdown(results)
    # gap 96.00 - 93.00 = 3.00; OLA 94.83: recovers 1.83 / 3.00 = 61 %
    assert "**3.00 points**" in text
    row = next(line for line in text.splitlines() if line.startswith("| ola_hostile |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4] == "+61%"
    # Welch by hand: t = (mean_a - mean_b) / sqrt(var_a / 3 + var_b / 3), Satterthwaite dof.
    a, b = np.array([95.0, 95.5, 94.0]), np.array([93.0, 94.0, 92.0])
    va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 3
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    assert compare.welch_p(a, b) == pytest.approx(2 * stdtr(dof, -abs(t)), rel=1e-9)
    assert cells[2] == f"+1.83 ({2 * stdtr(dof, -abs(t)):.2g})"
    # hostile ops' mass 0.05+0.3+0.1+0.1+0.1+0.1+0.01 = 0.76 of 1.06 = 0.72; uniform 7/9 = 0.78
    assert cells[5] == "0.72 (0.78)" and cells[6] == "0.760"
    # invert 0.05 / median 0.1 = 0.50, rank 2 (only sample_pairing lower); sample_pairing 0.10x,
    # rank 1; flip_lr 3.00x, rank 9.
    assert cells[7] == "0.50 (2.0)" and cells[-1] == "0.10 (1.0)" and cells[8] == "3.00 (9.0)"
    assert compare.hostile_markdown({"ua_ra": results["ua_ra"]}) == ""
    compare.hostile_figure(results, str(tmp_path / "hostile_ops.png"))
    assert (tmp_path / "hostile_ops.png").stat().st_size > 1000


def test_cost_plans_count_every_program_by_hand():
    bench_cells = config_files.experiment("compare/bench_cells")
    plan = bench_cells.plan
    assert plan("standard") == [("standard", 1000)]          # 200 epochs x 100 / 20
    assert plan("none") == [("none", 1000)]
    assert plan("ua_hostile") == [("fixed:ua_hostile", 1000)]
    assert plan("ola_hostile") == [("ola:ola_hostile", 500)]  # step pairs
    assert plan("smart_aug_hostile") == [("smart_aug:smart_aug_hostile", 800)]  # 90 images: 4/epoch
    # DRA: 50 epochs over halves of 50 at batch 20 (2 steps) + the training
    assert plan("dra_hostile") == [("dra_search:dra_hostile", 100), ("dra_replay:dra_hostile", 1000)]
    assert plan("dra_published") == [("dra_replay:dra_published", 1000)]
    # FAA: 3 folds x 200 epochs x 3 steps of D_M (60 images), 3 x 48 candidates / 16 per call,
    # the training
    assert plan("faa_hostile") == [("standard", 1800), ("faa_score:faa_hostile", 9.0),
                                   ("fixed:faa_published", 1000)]
    bench = {"seconds_per_call": {"standard": 0.02, "dra_search:dra_hostile": 0.05,
                                  "dra_replay:dra_hostile": 0.022},
             "plans": {"dra_hostile": plan("dra_hostile")}}
    # (100 x 0.05 + 1000 x 0.022) / (1000 x 0.02) = 27 / 20
    assert bench_cells.relative_cost("dra_hostile", bench) == pytest.approx(1.35)
    assert bench_cells.relative_cost("faa_hostile", bench) is None  # not timed


def test_parallel_cells_run_once_each_on_their_own_core(compare, monkeypatch):
    """--jobs 2: every pending cell runs exactly once, cell slots 0 and 1 (one per core); a
    method the CLI rejects stops being scheduled."""
    import threading
    import time

    seen, lock = [], threading.Lock()

    def fake_run(argv, workdir, core=None):
        with lock:
            seen.append((os.path.basename(workdir), core))
        time.sleep(0.05)  # a cell takes time: both slots get work
        return "not available: no such config" if "bad" in workdir else None

    monkeypatch.setattr(compare, "run_cell", fake_run)
    monkeypatch.setattr(compare, "read_cell", lambda workdir: (0.5, 1.0, None))
    todo = [(m, s, [], f"{m}_s{s}") for s in range(3) for m in ("a", "b", "bad")]
    missing = {}
    compare.run_cells(todo, 2, missing)
    names = sorted(w for w, _ in seen)
    assert [w for w in names if not w.startswith("bad")] == [
        "a_s0", "a_s1", "a_s2", "b_s0", "b_s1", "b_s2"]
    assert {c for _, c in seen} <= {0, 1} and len({c for _, c in seen}) == 2
    assert "bad" in missing and sum(w.startswith("bad") for w in names) <= 2
