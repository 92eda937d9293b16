"""End to end through the real entry point, as flax's imagenet example tests its real
`train_and_evaluate`: ``gar_jax.main``'s own flag parser and ``main`` (in-process: one import of
JAX for all runs) for every experiment kind at tiny settings, on digits (offline) and on the
CIFAR configs under ``tfds.testing.mock_data``; then the notebook as a new user runs it.

(The toy split's entry point runs as a real process in tests/test_cli.py.)"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags

from gar_jax import main as cli_main
from gar_jax.train.defaults import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
# WRN-10-1 (GroupNorm: one program whatever the batch statistics), one epoch, no warm-up.
TINY = ["--config.model.depth=10", "--config.model.width=1", "--config.model.norm=group",
        "--config.model.groups=4", "--config.num_epochs=1", "--config.warmup_epochs=0",
        "--config.progress_bar=False"]
MOCK_EXAMPLES = 32  # per split under tfds' mock data
# Each run compiles its own steps (~15-25 s of CPU for a supervised run, ~40 s for OLA), so CI
# runs one config per experiment kind (CIFAR-10 supervised, CIFAR-100 OLA; the toy split in
# tests/test_cli.py); the rest of the matrix (digits supervised and OLA, CIFAR-100 supervised,
# CIFAR-10 OLA: the same code paths on another dataset) runs with GAR_JAX_E2E_ALL=1.
FULL_MATRIX = pytest.mark.skipif(not os.environ.get("GAR_JAX_E2E_ALL"),
                                 reason="the full end-to-end matrix runs with GAR_JAX_E2E_ALL=1")


def run_cli(args, monkeypatch, capsys):
    """``python -m gar_jax.main *args`` in this process: absl's parse with the CLI's parser, then
    `main`. Returns (exit status, stderr)."""
    argv = ["gar_jax.main", *args]
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


def _read(workdir, name):
    with open(os.path.join(workdir, name), encoding="utf-8") as f:
        return json.load(f)


def _check_supervised(workdir, *, steps, n_test, depth=10):
    """results.json of a finished run: the overrides took effect, the step count is the hand
    count, the test accuracy counts each of the n_test examples once (padding masked), and the
    workdir remembers the config."""
    results = _read(workdir, "results.json")
    assert results["steps"] == steps
    assert results["config"]["model"]["depth"] == depth and results["config"]["num_epochs"] == 1
    assert results["curves"]["epoch"] == [1]
    correct = results["test_accuracy"] * n_test
    assert abs(correct - round(correct)) < 1e-4 and 0 <= correct <= n_test
    assert np.isfinite(results["curves"]["train_loss"]).all()
    assert _read(workdir, "config.json") == results["config"]
    return results


def _check_ola(workdir, space_size):
    """After exactly one meta-update (one step pair) from zero logits, Adam (b1 = 0) has moved
    every keep logit by lr * sign(gradient) = +-0.1, or not at all where the gradient is 0."""
    policy = _read(workdir, "policy.json")
    assert len(policy["ops"]) == space_size
    p_keep = np.asarray(policy["p_keep"], np.float64)  # [ensemble, ops]
    logits = np.log(p_keep) - np.log1p(-p_keep)
    moved = np.abs(logits)
    assert np.all((moved < 1e-4) | (np.abs(moved - 0.1) < 1e-4)), logits
    # many ops got a non-zero gradient (from the rewarded half of the images: an op drawn only
    # for the others gets none)
    assert (np.abs(moved - 0.1) < 1e-4).mean() > 0.3


@FULL_MATRIX
def test_supervised_digits(tmp_path, monkeypatch, capsys):
    workdir = str(tmp_path / "run")
    code, err = run_cli([f"--config={CONFIGS}/digits_supervised.py", f"--workdir={workdir}",
                         *TINY, "--config.batch_size=256", "--config.eval_batch_size=256"],
                        monkeypatch, capsys)
    assert code == 0, err
    results = _check_supervised(workdir, steps=1437 // 256, n_test=360)
    assert results["config"]["augment"] == "standard"
    assert results["test_accuracy"] > 0.1  # better than chance after 5 steps on real digits


@FULL_MATRIX
def test_ola_digits(tmp_path, monkeypatch, capsys):
    workdir = str(tmp_path / "run")
    # 1437 // 160 = 8 steps: OLA runs whole step pairs; 160 = 8 devices x 2 samplers x 10.
    code, err = run_cli([f"--config={CONFIGS}/digits_ola.py", f"--workdir={workdir}", *TINY,
                         "--config.batch_size=160", "--config.eval_batch_size=360"],
                        monkeypatch, capsys)
    assert code == 0, err
    _check_supervised(workdir, steps=8, n_test=360)
    policy = _read(workdir, "policy.json")
    assert len(policy["ops"]) == 14 and np.asarray(policy["p_keep"]).shape == (2, 14)


@pytest.mark.parametrize("name,num_ops", [
    ("cifar10_baseline", 0), ("cifar100_ola", 19),
    pytest.param("cifar100_baseline", 0, marks=FULL_MATRIX),
    pytest.param("cifar10_ola", 19, marks=FULL_MATRIX)])
def test_cifar_configs_under_mock_data(name, num_ops, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # configs load their base config from any working directory
    args = [f"--config={CONFIGS}/{name}.py", *TINY, "--config.batch_size=16",
            "--config.eval_batch_size=16"]
    if num_ops:
        args.append("--config.ola.ensemble_size=2")
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES,
                                policy=tfds.testing.MockPolicy.USE_CODE):
        code, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    workdir = os.path.join("runs", name)  # the default workdir, under the cwd
    assert f"no --workdir given; using {workdir}" in err
    results = _check_supervised(workdir, steps=MOCK_EXAMPLES // 16, n_test=MOCK_EXAMPLES)
    assert results["config"]["dataset"] == name.split("_")[0]
    if num_ops:
        _check_ola(workdir, num_ops)


def test_workdir_refuses_another_config_but_not_a_progress_bar_change(tmp_path, monkeypatch,
                                                                      capsys):
    """Checked before any work: the workdir holds only config.json (no data is loaded)."""
    workdir = str(tmp_path / "run")
    base = [f"--config={CONFIGS}/cifar10_baseline.py", f"--workdir={workdir}"]
    os.makedirs(workdir)
    with open(os.path.join(workdir, "config.json"), "w") as f:  # as a finished run leaves it
        json.dump(load_config(f"{CONFIGS}/cifar10_baseline.py").to_dict(), f)
    code, err = run_cli([*base, "--config.model.width=2", "--config.seed=3"], monkeypatch, capsys)
    assert code == 2
    assert err.strip() == (
        f"gar_jax: error: --workdir={workdir} holds a run of another config (model.width=10 "
        "there, 2 now; seed=0 there, 3 now); use another --workdir, or delete "
        f"{workdir} to start over (fields that cannot change results are not compared: "
        "progress_bar, data_dir, log_every_steps, checkpoint_every_steps, keep_checkpoints)")
    assert os.listdir(workdir) == ["config.json"]
    # Fields that cannot change results may differ: the run goes on (and fails, before any
    # compute, on the dataset that is not there, leaving the workdir as it was).
    code, err = run_cli([*base, "--config.progress_bar=False", f"--config.data_dir={tmp_path}"],
                        monkeypatch, capsys)
    assert code == 2 and "tfds dataset 'cifar10' (train) is not available" in err
    assert sorted(os.listdir(workdir)) == [".lock", "config.json"]  # (the run's lock file stays)


# ---------------------------------------------------------------------------------------------
# The notebook
# ---------------------------------------------------------------------------------------------
def _checkout_copy(root):
    """A copy of this checkout's files that the notebook needs (a fresh clone, offline)."""
    clone = root / "clone"
    for part in ("gar_jax", "configs", "notebooks"):
        shutil.copytree(os.path.join(REPO, part), clone / part,
                        ignore=shutil.ignore_patterns("__pycache__", "toy_split_run"))
    for part in ("setup.py", "README.md"):
        shutil.copy(os.path.join(REPO, part), clone / part)
    return clone


def test_notebook_runs_offline_inside_a_clone(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    clone = _checkout_copy(tmp_path)
    nb = nbformat.read(clone / "notebooks" / "toy_split.ipynb", as_version=4)
    setup_source = nb.cells[1].source
    assert "<org>" not in setup_source and "git+" not in setup_source
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    params.source = ('NET = "cnnbn"\nREWARDS = "nslr"\nSEEDS = 2\nEPOCHS = 2\nBATCH_SIZE = 500\n'
                     'WORKDIR = "toy_split_run"\nOVERRIDES = {"xla_opt_level": 0}\n')
    # Which gar_jax the kernel imported, and how often its progress bars may print.
    nb.cells.append(nbformat.v4.new_code_cell(
        "import gar_jax, io, tqdm\n"
        "print('GAR_JAX', gar_jax.__file__)\n"
        "print('MININTERVAL', tqdm.tqdm(total=1, file=io.StringIO()).mininterval)"))
    # No PYTHONPATH: the kernel finds gar_jax through the clone it runs in, not this checkout.
    monkeypatch.delenv("PYTHONPATH", raising=False)
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(clone / "notebooks")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert f"GAR_JAX {clone / 'gar_jax' / '__init__.py'}" in text
    assert "MININTERVAL 15" in text  # a bar redraws at most every 15 s: no flood in the file
    assert len(text) < 20_000, text[-2000:]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("| cnnbn | nslr | 2 |" in o.get("data", {}).get("text/markdown", "")
               for o in outputs)
    run_dir = clone / "notebooks" / "toy_split_run"
    with open(run_dir / "results.json") as f:
        probs = np.asarray(json.load(f)["nslr"]["split_probs"])
    assert probs.shape == (2, 4, 10) and np.all(np.isfinite(probs))
    # The run directory is ignored by git in the real checkout (and wherever Jupyter starts).
    ignored = subprocess.run(["git", "check-ignore", "-q", "notebooks/toy_split_run/x.json"],
                             cwd=REPO)
    assert ignored.returncode == 0


def test_sigterm_exits_143_after_a_checkpoint_and_the_rerun_resumes(tmp_path, monkeypatch, capsys):
    """A cluster's preemption (SIGTERM) through the real entry point: the run checkpoints the
    step it is at, says so in one line and exits 128 + 15; the same command resumes there."""
    import signal

    from gar_jax.train import engine

    train = engine.train

    def train_with_sigterm_after_epoch_1(*args, on_step=(), **kwargs):
        def sigterm(step, state):
            if step == 2:
                os.kill(os.getpid(), signal.SIGTERM)
        return train(*args, on_step=(*on_step, sigterm), **kwargs)

    workdir = str(tmp_path / "run")
    args = [f"--config={CONFIGS}/toy_split.py", f"--workdir={workdir}", "--config.net=fc",
            "--config.ola.reward=gar", "--config.seeds=2", "--config.num_epochs=3",
            "--config.batch_size=500", "--config.xla_opt_level=0", "--config.progress_bar=False"]
    monkeypatch.setattr(engine, "train", train_with_sigterm_after_epoch_1)
    code, err = run_cli(args, monkeypatch, capsys)
    assert code == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM at step 2; checkpoint saved" in err.splitlines()[-1]
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    monkeypatch.setattr(engine, "train", train)
    code, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert "resumed from step 2 (epoch 1)" in err
    assert np.asarray(_read(workdir, "results.json")["gar"]["split_probs"]).shape == (2, 6, 10)
