"""Faults a run meets at scale, through the real command line (``python -m gar_jax.main``'s
parser, workdir checks, lock, engine, checkpoints and exit statuses) with a method that costs
nothing to compute (tests/fake_method.py: after t steps its state is ``w0 + t`` exactly, so a
resumed run is checked against a hand computation): a second run on a used workdir, a crashed
run's lock, a corrupt or partial newest checkpoint, no readable checkpoint, a write the storage
refuses while checkpointing, a diverging run, and a NaN in the config."""
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import fake_method
from gar_jax.train import checkpoint, engine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE = os.path.join(REPO, "tests", "fake_method.py")
STEPS = 12  # the fake config: 3 epochs of 4 steps, a checkpoint every 2 steps (all kept)
W0_MEAN = float(np.mean(fake_method.initial_w(fake_method.get_config())))


def _start(workdir, *args, env=None, real_config=None):
    """The CLI on the fake method (or, with `real_config`, ``python -m gar_jax.main`` on that
    config file)."""
    program = ["-m", "gar_jax.main", f"--config={real_config}"] if real_config else [
        FAKE, f"--config={FAKE}"]
    return subprocess.Popen([sys.executable, *program, f"--workdir={workdir}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": REPO, **(env or {})})


def _finish(proc, timeout=240):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err


def _run(workdir, *args, **kwargs):
    return _finish(_start(workdir, *args, **kwargs))


def _one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gar_jax: error: "), err
    assert "Traceback" not in err
    return lines[0][len("gar_jax: error: "):]


def _results(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def _steps(workdir):
    return sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())


def _train_steps_logged(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [m["step"] for m in map(json.loads, f) if "train/loss" in m]


def _assert_finished_exactly(workdir):
    """The run ended at step 12 with w = w0 + 12 (a resumed run too: same state, same data)."""
    results = _results(workdir)
    assert results["steps"] == STEPS
    np.testing.assert_allclose(results["test_accuracy"], W0_MEAN + STEPS, rtol=0, atol=1e-5)


def _wait_for(predicate, what, timeout=120):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _lock_text(workdir):
    try:
        with open(os.path.join(workdir, ".lock")) as f:
            return f.read()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished fake run (checkpoints 2, 4, ..., 12), to be copied by tests that damage it."""
    workdir = str(tmp_path_factory.mktemp("finished") / "run")
    code, err = _run(workdir)
    assert code == 0, err
    assert _steps(workdir) == [2, 4, 6, 8, 10, 12]
    _assert_finished_exactly(workdir)
    return workdir


def _copy_of(finished, tmp_path):
    import shutil
    workdir = str(tmp_path / "run")
    shutil.copytree(finished, workdir)
    return workdir


# -------------------------------------------------------------- two runs on one workdir


def test_second_run_on_a_workdir_is_refused_naming_the_holder(tmp_path):
    workdir = str(tmp_path / "run")
    go = str(tmp_path / "go")  # the first run waits at step 3 until this file exists
    first = _start(workdir, f"--config.wait_for_file={go}")
    _wait_for(lambda: f"process {first.pid} " in _lock_text(workdir) or first.poll() is not None,
              "the first run's lock")
    code, err = _run(workdir, f"--config.wait_for_file={go}")  # the double-submitted job
    open(go, "w").close()
    assert code == 2, err
    line = _one_error_line(err)
    assert line.startswith(f"--workdir={workdir} is in use by another run (process {first.pid} "
                           f"on host {socket.gethostname()}, since "), line
    assert line.endswith("wait for it to end or use another --workdir")
    assert first.poll() is None  # the refusal came while the first run was still training
    code, err = _finish(first)
    assert code == 0, err
    # One run's metrics only (each train step once, in order) and its results.
    assert _train_steps_logged(workdir) == list(range(1, STEPS + 1))
    _assert_finished_exactly(workdir)


def test_a_killed_run_leaves_no_stuck_lock_and_resumes(tmp_path):
    workdir = str(tmp_path / "run")
    go = str(tmp_path / "go")
    run = _start(workdir, f"--config.wait_for_file={go}")  # waits at step 3
    _wait_for(lambda: os.path.isdir(os.path.join(workdir, "checkpoints", "2"))
              or run.poll() is not None, "checkpoint 2")
    run.send_signal(signal.SIGKILL)  # a crash: no handler, no cleanup
    _finish(run)
    assert run.returncode == -signal.SIGKILL
    assert f"process {run.pid} " in _lock_text(workdir)  # the file stays, the lock does not
    open(go, "w").close()
    code, err = _run(workdir, f"--config.wait_for_file={go}")
    assert code == 0, err
    assert "resumed from step 2 (epoch 0)" in err
    _assert_finished_exactly(workdir)


# ----------------------------------------------------------------- checkpoint faults


def _overwrite_every_file(step_dir):
    rng = np.random.default_rng(0)
    for root, _, files in os.walk(step_dir):
        for name in files:
            path = os.path.join(root, name)
            size = os.path.getsize(path)
            with open(path, "r+b") as f:
                f.write(rng.integers(128, 256, size, dtype=np.uint8).tobytes())


def _remove_array_data(step_dir):
    for root, _, files in os.walk(os.path.join(step_dir, "state")):
        for name in files:
            if os.sep + "d" in root:
                os.remove(os.path.join(root, name))


def _truncate_metadata(step_dir):
    for root, _, files in os.walk(step_dir):
        for name in files:
            if "metadata" in name.lower():
                with open(os.path.join(root, name), "r+b") as f:
                    f.truncate(5)


DAMAGE = {"bytes_overwritten": _overwrite_every_file, "array_data_missing": _remove_array_data,
          "metadata_truncated": _truncate_metadata}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_unreadable_newest_checkpoint_resumes_from_the_previous(finished, tmp_path, damage):
    workdir = _copy_of(finished, tmp_path)
    os.remove(os.path.join(workdir, "results.json"))
    DAMAGE[damage](os.path.join(workdir, "checkpoints", "12"))
    code, err = _run(workdir)
    assert code == 0, err
    aside = os.path.join(workdir, "checkpoints_unreadable")
    assert (f"gar_jax: warning: checkpoint step 12 in {os.path.join(workdir, 'checkpoints')} "
            f"does not read (") in err, err
    assert f"moved to {aside}, resuming from step 10" in err
    assert "resumed from step 10 (epoch 2)" in err and "Traceback" not in err
    assert os.listdir(aside) == ["12"]
    assert _steps(workdir) == [2, 4, 6, 8, 10, 12]  # step 12 trained and saved again
    _assert_finished_exactly(workdir)


def test_no_readable_checkpoint_is_one_line_and_touches_nothing(finished, tmp_path):
    workdir = _copy_of(finished, tmp_path)
    for step in _steps(workdir):
        _overwrite_every_file(os.path.join(workdir, "checkpoints", str(step)))
    code, err = _run(workdir)
    assert code == 2
    line = _one_error_line(err)
    assert line.startswith(f"no checkpoint in {os.path.join(workdir, 'checkpoints')} reads "
                           "(step 12, 10, 8, 6, 4, 2: "), line
    assert line.endswith("move that directory away to start the run over, or restore it from "
                         "a backup")
    assert _steps(workdir) == [2, 4, 6, 8, 10, 12]
    assert not os.path.exists(os.path.join(workdir, "checkpoints_unreadable"))


def test_refused_checkpoint_write_is_one_line_keeps_the_previous_and_resumes(tmp_path):
    """From step 3 the process may not write a file over 32 KiB (RLIMIT_FSIZE): checkpoint 4's
    array data fails in orbax's writer threads, as on a full disk (EFBIG here, ENOSPC there:
    the same path; ENOSPC's message below)."""
    workdir = str(tmp_path / "run")
    code, err = _run(workdir, env={"FAKE_FSIZE_LIMIT_AT": "3"})
    assert code == engine.STORAGE_EXIT == 4
    line = _one_error_line(err)
    assert line == (f"file too large writing checkpoint step 4 in "
                    f"{os.path.join(workdir, 'checkpoints')} (step 2 is intact); free space and "
                    "rerun the same command to resume"), line
    assert os.listdir(os.path.join(workdir, "checkpoints")) == ["2"]  # no half-written step 4
    code, err = _run(workdir)
    assert code == 0, err
    assert "resumed from step 2 (epoch 0)" in err
    _assert_finished_exactly(workdir)


def test_a_full_disk_is_recognized_in_orbax_and_os_errors():
    # What orbax raised on a full tmpfs (tensorstore's message, errno 28 inside).
    real = ValueError(
        'RESOURCE_EXHAUSTED: Error writing "opt_state.2.0.trace.group0_block0.GroupNorm_1.bias/4"'
        ' in OCDBT database at local file "/w/checkpoints/20.orbax-checkpoint-tmp/state.orbax-'
        'checkpoint-tmp/ocdbt.process_0/": Failed writing: "/w/checkpoints/20.orbax-checkpoint-'
        'tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/d/93db": Failed to write 17542 bytes to '
        "file 8: No space left on device [os_error_code='28']")
    assert checkpoint.storage_errno(real) == errno.ENOSPC
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert checkpoint.storage_errno(wrapped) == errno.ENOSPC
    assert checkpoint.storage_errno(ValueError("os_error_code='2' (no such file)")) is None
    assert checkpoint.storage_errno(KeyError("x")) is None
    assert checkpoint.storage_message(errno.ENOSPC, "checkpoint step 4 in /w") == (
        "no space left on device writing checkpoint step 4 in /w; free space and rerun the same "
        "command to resume")


# ------------------------------------------------------------------- bad numbers


def test_diverging_loss_stops_with_one_line_keeping_metrics_and_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    code, err = _run(workdir, "--config.nan_at=5")
    assert code == engine.DIVERGED_EXIT == 3
    line = _one_error_line(err)
    assert line == (f"training diverged: the training loss is nan at step 5; stopped (last good "
                    f"checkpoint: step 4 in {workdir}; metrics so far in "
                    f"{os.path.join(workdir, 'metrics.jsonl')}). Lower the learning rate or check "
                    "the data."), line
    assert _steps(workdir) == [2, 4]
    # Metrics are logged at the step count after each call: 1..5 cover data steps 0..4; data
    # step 5's NaN loss (it would be logged at 6) is not.
    assert _train_steps_logged(workdir) == [1, 2, 3, 4, 5]
    assert not os.path.exists(os.path.join(workdir, "results.json"))


def test_a_non_finite_state_is_never_checkpointed(tmp_path):
    """The loss of step 5 is finite but its update makes w NaN: the checkpoint of step 6 is
    refused, the last good one (4) stays the newest."""
    workdir = str(tmp_path / "run")
    code, err = _run(workdir, "--config.nan_state_at=5")
    assert code == 3
    assert _one_error_line(err).startswith(
        f"training diverged: the state is not finite at step 6; stopped (last good checkpoint: "
        f"step 4 in {workdir}")
    assert _steps(workdir) == [2, 4]


def test_nan_learning_rate_is_rejected_before_compute(tmp_path):
    workdir = str(tmp_path / "run")
    code, err = _run(workdir, "--config.learning_rate=nan",
                     real_config=os.path.join(REPO, "configs", "digits_supervised.py"))
    assert code == 2
    assert _one_error_line(err) == "config.learning_rate=nan must be a finite number"
    assert not os.path.exists(workdir)
