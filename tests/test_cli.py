"""The command line: bad input is one line on stderr with exit status 2, before any compute;
a tiny real toy split run writes results.json in the DESIGN contract form."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BAD = {
    "unknown_field": (["--config.nosuch=1"], "unknown config field 'nosuch'"),
    "unknown_dataset": (["--config.dataset=mnist"], "unknown dataset 'mnist'"),
    "unknown_net": (["--config.net=fc,resnet"], "unknown net 'resnet'"),
    "impossible_batch": (["--config.batch_size=5000"], "batch_size=5000 must be an integer in"),
}
# FCBN with GAR: the frozen-BatchNorm per-example path (the notebook test runs NSLR).
TINY = ["--config.net=fcbn", "--config.methods=gar", "--config.seeds=2",
        "--config.epochs=2", "--config.batch_size=500", "--config.meta_every=1",
        "--config.xla_opt_level=0"]


def _start(workdir, args):
    command = [sys.executable, "-m", "gar_jax.main", "--config=configs/toy_split.py",
               f"--workdir={workdir}", *args]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": REPO})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """All CLI processes, started together (they are independent) and then awaited."""
    root = tmp_path_factory.mktemp("cli")
    procs = {name: (_start(root / name, args), root / name) for name, (args, _) in BAD.items()}
    procs["tiny"] = (_start(root / "tiny", TINY), root / "tiny")
    results = {}
    for name, (proc, workdir) in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (proc.returncode, out, err, workdir)
    return results


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line_exit_2_before_compute(runs, name):
    code, out, err, workdir = runs[name]
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gar_jax: error: "), err
    assert BAD[name][1] in lines[0]
    assert not os.path.exists(workdir)  # rejected before the run made its workdir


def test_tiny_run_writes_contract_results(runs):
    code, out, err, workdir = runs["tiny"]
    assert code == 0, err[-2000:]
    with open(workdir / "results.json") as f:
        results = json.load(f)
    assert set(results) == {"gar", "net", "config"} and results["net"] == "fcbn"
    probs = np.asarray(results["gar"]["split_probs"])
    assert probs.shape == (2, 4, 10)  # [seeds][steps][splits]: 2 epochs x 1430 // 500
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs[:, 0], 0.1, atol=1e-6)  # uniform at the start
    assert not np.allclose(probs[:, -1], 0.1)  # ... and learned from the rewards after
    assert len(results["gar"]["auc_noisy"]) == len(results["gar"]["test_acc"]) == 2
    assert results["config"]["batch_size"] == 500
    assert "| fcbn | gar | 2 |" in out  # the table is printed
    for name in ("table.md", "split_probs.png", "fcbn_gar/metrics.jsonl"):  # engine run: subdir
        assert (workdir / name).exists()


def test_default_workdir_is_named_after_the_config():
    from gar_jax.main import default_workdir
    assert default_workdir("configs/cifar100_ola.py") == os.path.join("runs", "cifar100_ola")
    assert default_workdir("configs/cifar10_ola.py:ra") == os.path.join("runs", "cifar10_ola_ra")
    assert default_workdir("/abs/x/toy_split.py") == os.path.join("runs", "toy_split")
