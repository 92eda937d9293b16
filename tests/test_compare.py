"""experiments/compare/run.py: statistics, reading cells, resuming, methods not yet available."""
import importlib.util
import json
import math
import os

import numpy as np
import pytest

import config_files

_PATH = os.path.join(os.path.dirname(__file__), "..", "experiments", "compare", "run.py")


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare_run", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        m: (f"configs/compare.py:{m}", []) for m in module["CELLS"]}
    for cell in module["CELLS"]:
        c = config_files.load(f"compare:{cell}")
        assert (c.dataset, c.model.width, c.num_epochs, c.batch_size, c.standard.flip) == (
            "digits32_small", 1, 200, 20, False), cell
    assert config_files.load("compare:dra_search").dra.search.epochs == 50
    assert config_files.load("compare:ola_nslr").ola.reward == "nslr"


def test_main_skips_finished_cells_reruns_others_and_reports_missing(compare, tmp_path,
                                                                    monkeypatch):
    root, out = tmp_path / "runs", tmp_path / "out"
    table = {"standard": ("configs/digits32_supervised.py:baseline", []),
             "ra": ("configs/digits32_supervised.py:ra", []),
             "later": ("configs/not_yet_written.py", [])}
    monkeypatch.setattr(compare, "method_table", lambda benchmark: table)
    accuracy = {"standard": [0.90, 0.92], "ra": [0.95, 0.97]}
    calls = []

    def fake_run(argv, workdir):  # a "run" that writes what the engine writes
        name, seed = os.path.basename(workdir).rsplit("_s", 1)
        calls.append((name, int(seed)))
        _write(os.path.join(workdir, "results.json"),
               {"test_accuracy": accuracy[name][int(seed)], "wall_time_s": 10.0 + int(seed)})
        return None

    monkeypatch.setattr(compare, "run_cell", fake_run)
    # Seed 0 of "standard" finished before the comparison was killed: it is not rerun.
    _write(str(root / "standard_s0" / "results.json"),
           {"test_accuracy": 0.90, "wall_time_s": 10.0})
    compare.main(["--methods=all", "--seeds=0,1", f"--root={root}", f"--out={out}"])
    assert calls == [("ra", 0), ("standard", 1), ("ra", 1)]
    with open(out / "results.json", encoding="utf-8") as f:
        results = json.load(f)
    assert set(results) == {"standard", "ra"}
    assert results["ra"]["test_acc"] == [0.95, 0.97]
    assert results["ra"]["train_s"] == [10.0, 11.0] and results["ra"]["search_s"] == [None] * 2
    text = (out / "results.md").read_text()
    assert "| later | 0 | not available: configs/not_yet_written.py is not in the tree" in text
    # ra: 96.00 ± t(0.975, 1 dof) * std / sqrt(2) = 12.706 * 1.4142 / 1.4142 points; cost 1.00x.
    assert "| ra | 2 | 96.00 ± 12.71 | 95.00, 97.00 | 10 | - | 1.00x |" in text
    assert (out / "results.png").stat().st_size > 1000
    # Run again: nothing left to do.
    calls.clear()
    compare.main(["--methods=standard,ra", "--seeds=0,1", f"--root={root}", f"--out={out}"])
    assert calls == []
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
