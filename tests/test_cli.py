"""The command line as a new user meets it (real ``python -m gar_jax.main`` processes): bad
input, a bad workdir or a bad config argument is one line on stderr with exit status 2, before
any compute; a tiny real toy split run writes results.json in the DESIGN contract form; a workdir
remembers its config and refuses another one (issue 8's defects, each tested)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(REPO, "configs", "toy_split.py")

# name -> (arguments after the module, expected text of the one error line). Every process
# runs in its own empty directory (its cwd) with `--workdir=run` unless the arguments name one.
BAD = {
    "unknown_field": (["--config.nosuch=1"], "unknown config field 'nosuch'"),
    "unknown_dataset": (["--config.dataset=mnist"], "unknown dataset 'mnist'"),
    "unknown_net": (["--config.net=fc,resnet"], "unknown net 'resnet'"),
    "impossible_batch": (["--config.batch_size=5000"], "batch_size=5000 must be an integer in"),
    # A workdir that is a file, or that cannot be created (/proc is not writable).
    "workdir_is_a_file": (["--workdir=afile"], "--workdir=afile is an existing file"),
    "workdir_not_writable": (["--workdir=/proc/gar_jax_test"],
                             "--workdir=/proc/gar_jax_test cannot be created or written"),
    # get_config's own message, not the traceback config_flags wraps around it.
    "bad_config_argument": ([f"--config={REPO}/configs/digits_supervised.py:nope"],
                            "unknown baseline 'nope'; choose one of none, baseline"),
    "argument_not_taken": ([f"--config={TOY}:x"], "its get_config does not take that argument"),
    "bad_gar_store": ([f"--config={REPO}/configs/digits_ola.py", "--config.ola.gar_store=lean"],
                      "config.ola.gar_store='lean' must be one of ['auto', 'activations', "
                      "'gradients']"),
    # A dataset folder that a killed download left without dataset_info.json: tfds warns about
    # it before our error unless the CLI silences that warning.
    "missing_dataset": ([f"--config={REPO}/configs/cifar10_baseline.py",
                         "--config.data_dir=tfds"], "tfds dataset 'cifar10' (train) is not"),
}
# FCBN with GAR: the frozen-BatchNorm per-example path (the notebook test runs NSLR). No
# --workdir: runs/toy_split under the process's cwd.
TINY = ["--config.net=fcbn", "--config.ola.reward=gar", "--config.seeds=2",
        "--config.num_epochs=2", "--config.batch_size=500", "--config.ola.meta_every=1",
        "--config.xla_opt_level=0"]
TINY_ARGS = [f"--config={TOY}", *TINY]


def _start(cwd, args, workdir="run"):
    """``python -m gar_jax.main`` with `args` (the toy split config unless they name one) and
    ``--workdir=<workdir>`` unless they name one or `workdir` is None."""
    if not any(a.startswith("--config=") for a in args):
        args = [f"--config={TOY}", *args]
    if workdir and not any(a.startswith("--workdir=") for a in args):
        args = [*args, f"--workdir={workdir}"]
    return subprocess.Popen([sys.executable, "-m", "gar_jax.main", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": REPO})


def _finish(proc):
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """All CLI processes, started together (they are independent) and then awaited."""
    root = tmp_path_factory.mktemp("cli")
    procs = {}
    for name, (args, _) in BAD.items():
        cwd = root / name
        cwd.mkdir()
        (cwd / "afile").write_text("not a directory\n")
        (cwd / "tfds" / "cifar10" / "3.0.2").mkdir(parents=True)  # no dataset_info.json
        procs[name] = (_start(cwd, args), cwd)
    (root / "tiny").mkdir()
    procs["tiny"] = (_start(root / "tiny", TINY_ARGS, workdir=None), root / "tiny")
    return {name: (*_finish(proc), cwd) for name, (proc, cwd) in procs.items()}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line_exit_2_before_compute(runs, name):
    code, out, err, cwd = runs[name]
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gar_jax: error: "), err
    assert BAD[name][1] in lines[0]
    assert not os.path.exists(cwd / "run")  # rejected before the run made its workdir
    assert not os.path.exists(cwd / "runs")
    assert (cwd / "afile").read_text() == "not a directory\n"


def test_tiny_run_writes_contract_results(runs):
    code, out, err, cwd = runs["tiny"]
    assert code == 0, err[-2000:]
    workdir = cwd / "runs" / "toy_split"  # no --workdir: named after the config file
    assert f"no --workdir given; using {os.path.join('runs', 'toy_split')}" in err
    with open(workdir / "results.json") as f:
        results = json.load(f)
    assert {"gar", "net", "config", "test_accuracy"} <= set(results) and "nslr" not in results
    assert results["net"] == "fcbn"  # the contract form, with the engine's fields
    assert results["test_accuracy"] == pytest.approx(np.mean(results["gar"]["test_acc"]))
    probs = np.asarray(results["gar"]["split_probs"])
    assert probs.shape == (2, 4, 10)  # [seeds][steps][splits]: 2 epochs x 1430 // 500
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs[:, 0], 0.1, atol=1e-6)  # uniform at the start
    assert not np.allclose(probs[:, -1], 0.1)  # ... and learned from the rewards after
    assert len(results["gar"]["auc_noisy"]) == len(results["gar"]["test_acc"]) == 2
    assert results["config"]["batch_size"] == 500
    assert "| fcbn | gar | 2 |" in out  # the table is printed
    for name in ("table.md", "split_probs.png", "metrics.jsonl"):  # one engine run
        assert (workdir / name).exists()
    with open(workdir / "config.json") as f:  # the workdir remembers its config
        assert json.load(f) == results["config"]


def test_another_config_on_a_used_workdir_is_refused_without_touching_it(runs):
    """`--config.seeds=1` without --workdir used to overwrite the quick start's results."""
    code, _, _, cwd = runs["tiny"]
    assert code == 0
    workdir = cwd / "runs" / "toy_split"
    before = {p.name: p.stat().st_mtime_ns for p in workdir.iterdir()}
    changed = [a for a in TINY_ARGS if not a.startswith("--config.seeds=")] + [
        "--config.seeds=1", "--config.distribution=softmax"]
    code, out, err = _finish(_start(cwd, changed, workdir=None))
    assert code == 2, err
    (line,) = err.strip().splitlines()[-1:]
    assert line.startswith("gar_jax: error: --workdir=runs/toy_split holds a run of another "
                           'config (distribution="inverted_softmax" there, "softmax" now; '
                           "seeds=2 there, 1 now); use another --workdir"), line
    assert {p.name: p.stat().st_mtime_ns for p in workdir.iterdir()} == before


def test_default_workdir_is_named_after_the_config():
    from gar_jax.main import default_workdir
    assert default_workdir("configs/cifar100_ola.py") == os.path.join("runs", "cifar100_ola")
    assert default_workdir("configs/cifar10_ola.py:ra") == os.path.join("runs", "cifar10_ola_ra")
    assert default_workdir("/abs/x/toy_split.py") == os.path.join("runs", "toy_split")


def test_a_workdir_of_an_older_version_is_refused_in_one_line(tmp_path):
    """A run made before workdirs recorded their config (checkpoints, no config.json) is not
    resumed with guessed values: one line, before any work; a fresh or matching one is fine."""
    from gar_jax.errors import ConfigError
    from gar_jax.train import defaults, engine

    config = defaults.load_config(TOY)
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"holds a run made by an older gar_jax \(no "
                                          r"config.json\); use another --workdir$"):
        engine.check_workdir(str(old), config)
    assert os.listdir(old) == ["checkpoints"]
    engine.check_workdir(str(tmp_path / "new"), config)  # records the config
    engine.check_workdir(str(tmp_path / "new"), config)  # the same config: resumes
    with open(tmp_path / "new" / "config.json") as f:
        assert json.load(f)["ola"]["reward"] == "gar,nslr"


def test_added_fields_are_the_options_defaults():
    """engine.ADDED_FIELDS (what an old workdir's missing field means) and ola.Options (what an
    old config's missing field means) give every added OLA option the same value."""
    import dataclasses

    from gar_jax.methods import ola
    from gar_jax.train import engine

    defaults_ = {f.name: f.default for f in dataclasses.fields(ola.Options)}
    added = {k.partition(".")[2]: v for k, v in engine.ADDED_FIELDS.items()}
    assert set(added) == {"target_ema", "gar_target", "before_weight", "fd_step"}
    assert all(k.startswith("ola.") for k in engine.ADDED_FIELDS)
    assert added == {k: defaults_[k] for k in added}


def test_a_run_recorded_before_an_option_existed_resumes_at_its_old_behaviour(tmp_path):
    """A workdir whose config.json predates an option (engine.ADDED_FIELDS) is the same run
    at the option's old-behaviour value, and another run at any other value (one line)."""
    from gar_jax.errors import ConfigError
    from gar_jax.train import defaults, engine

    config = defaults.load_config(os.path.join(REPO, "configs", "digits_ola.py"))
    engine.check_workdir(str(tmp_path), config)
    with open(tmp_path / "config.json") as f:
        recorded = json.load(f)
    for field in ("target_ema", "gar_target", "before_weight"):
        del recorded["ola"][field]  # as runs recorded before 2026-12-04 have it
    with open(tmp_path / "config.json", "w") as f:
        json.dump(recorded, f)
    engine.check_workdir(str(tmp_path), config)  # resumes, and records the fields now
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["ola"]["gar_target"] == "next"
    with open(tmp_path / "config.json", "w") as f:  # without the three again
        json.dump(recorded, f)
    config.ola.gar_target = "response"
    with pytest.raises(ConfigError, match=r'holds a run of another config \(ola.gar_target='
                                          r'"next" there, "response" now\); use another'):
        engine.check_workdir(str(tmp_path), config)
    config.ola.gar_target = "next"
    del recorded["ola"]["lr_schedule"]  # not an added field: absent is another run
    with open(tmp_path / "config.json", "w") as f:
        json.dump(recorded, f)
    with pytest.raises(ConfigError, match=r'ola.lr_schedule=\(absent\) there, "constant" now'):
        engine.check_workdir(str(tmp_path), config)
