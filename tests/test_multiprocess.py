"""Multi-process runs, for real: 2 processes x 4 CPU devices on this machine (gloo collectives),
each a ``python -m gar_jax.main`` started as a cluster launcher would start it.

- An OLA digits run on 2 processes equals the same run on 1 process x 8 devices
  whose training set is split in 2 shards as the 2 processes split it (tests/cli_data_shards.py):
  the same metrics and final parameters to float tolerance; the checkpoint is one (process 0
  writes its metadata and the replicated arrays once), results.json and policy.json one.
- With the cheap method of tests/fake_method.py (state ``w0 + t`` after t steps): a killed pair
  resumes; SIGTERM to the processes (or to one of them) stops both at the same step with a
  checkpoint and exit 143, and the rerun resumes; a double-submitted pair is refused as a whole;
  ``distributed=auto`` finds the processes under SLURM, Open MPI and JAX_COORDINATOR_ADDRESS
  environments (the variables a launcher sets, set by hand here).

Every subprocess has a hard timeout; a test kills what it started.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import jax
import pytest

import fake_method

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE = os.path.join(REPO, "tests", "fake_method.py")
SHARDS = os.path.join(REPO, "tests", "cli_data_shards.py")
FAKE_STEPS = 12
W0_MEAN = float(np.mean(fake_method.initial_w(fake_method.get_config())))
# WRN-10-1 (GroupNorm), one epoch of digits (22 steps of 64), no warm-up.
TINY = ["--config.model.depth=10", "--config.model.width=1", "--config.model.norm=group",
        "--config.model.groups=4", "--config.num_epochs=1", "--config.warmup_epochs=0",
        "--config.batch_size=64", "--config.progress_bar=False"]
TIMEOUT = 600
LAUNCH_VARS = ("SLURM_", "OMPI_", "JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
               "TPU_WORKER_HOSTNAMES")
EPHEMERAL = 65535 - 2 ** 12 + 1  # SLURM / Open MPI launches: JAX derives the port from the job


def _free_port(low=None):
    """A free TCP port (with `low`: one in [low, 65535], as the SLURM / Open MPI ports are)."""
    for port in ([0] if low is None else range(low, 65536)):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def _env(devices):
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCH_VARS)}
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if "xla_force_host_platform_device_count" not in f]
    env.update(XLA_FLAGS=" ".join(flags + [f"--xla_force_host_platform_device_count={devices}"]),
               JAX_PLATFORMS="cpu", PJRT_NPROC="32", PYTHONPATH=REPO)
    return env


def _launch_env(launcher, port, process, processes):
    """The variables a launcher sets for `process` (SLURM / Open MPI: JAX's own detection)."""
    if launcher == "jax":
        return {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "JAX_NUM_PROCESSES": str(processes), "JAX_PROCESS_ID": str(process)}
    if launcher == "slurm":  # JAX's port: job id % 4096 + 61440, on the first node listed
        return {"SLURM_JOB_ID": str(port - EPHEMERAL), "SLURM_STEP_NODELIST": "localhost",
                "SLURM_NTASKS": str(processes), "SLURM_PROCID": str(process),
                "SLURM_LOCALID": str(process)}
    if launcher == "ompi":  # JAX's port: (job id // 4096) % 4096 + 61440, on the launcher's IP
        job = (port - EPHEMERAL) * 2 ** 12
        return {"OMPI_MCA_orte_hnp_uri": f"{job}.0;tcp://127.0.0.1:40000",
                "OMPI_COMM_WORLD_SIZE": str(processes), "OMPI_COMM_WORLD_RANK": str(process),
                "OMPI_COMM_WORLD_LOCAL_RANK": str(process)}
    raise ValueError(launcher)


def _start_pair(workdir, args, *, program=None, launcher="jax", processes=2):
    """`processes` processes x 8/`processes` devices of ``python -m gar_jax.main`` (or of
    `program`, e.g. the fake method) on one workdir."""
    port = _free_port(EPHEMERAL if launcher in ("slurm", "ompi") else None)
    cmd = [sys.executable, *([program] if program else ["-m", "gar_jax.main"]),
           f"--workdir={workdir}", *args]
    return [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**_env(8 // processes),
                                  **_launch_env(launcher, port, i, processes)})
            for i in range(processes)]


def _start_one(workdir, args, *, program):
    return subprocess.Popen([sys.executable, program, *args, f"--workdir={workdir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(8))


def _finish(procs, timeout=TIMEOUT):
    """[(exit status, stderr)] of `procs`; on timeout kills them all and fails."""
    deadline = time.time() + timeout
    results = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=max(1, deadline - time.time()))
            results.append((p.returncode, err))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"processes still running after {timeout} s")
    return results


def _read(workdir, name):
    with open(os.path.join(workdir, name)) as f:
        return json.load(f)


def _state(workdir, step):
    """The checkpointed train state of `step` as numpy arrays (whatever the devices)."""
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    reader = ocp.PyTreeCheckpointer()
    tree = reader.metadata(path)
    tree = getattr(getattr(tree, "item_metadata", tree), "tree", tree)
    restore = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return reader.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore))


def _assert_same_run(multi, single, steps, *, state_atol=1e-5, moments=True):
    """The two runs' results and final states agree: to float tolerance (rtol 1e-4, `state_atol`;
    moments=False: the optimizers' moment sums are not compared)."""
    a, b = _read(multi, "results.json"), _read(single, "results.json")
    assert (a["num_processes"], a["num_devices"], b["num_processes"], b["num_devices"]) == (
        2, 8, 1, 8)
    assert a["steps"] == b["steps"] == steps
    assert a["test_examples"] == b["test_examples"] == 360
    # The same training up to the order of the cross-process sums (an all-reduce over two
    # processes adds in another order than one over 8 devices of one process).
    sa, sb = _state(multi, steps), _state(single, steps)
    assert jax.tree.structure(sa) == jax.tree.structure(sb)
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(sa)[0], jax.tree.leaves(sb)):
        name = jax.tree_util.keystr(path)
        if not moments and "opt_state" in name:
            continue
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                   rtol=1e-4, atol=state_atol, err_msg=name)
    for name in ("test_loss", "train_loss"):
        np.testing.assert_allclose(a["curves"][name], b["curves"][name], rtol=1e-4, err_msg=name)
    # Train accuracy: a count over the steps' 64 examples; an argmax may flip.
    np.testing.assert_allclose(a["curves"]["train_accuracy"], b["curves"]["train_accuracy"],
                               atol=2.0 / (steps * 64), rtol=0)
    # Test accuracy: a count of the same 360 examples by a near-chance model whose top two
    # logits are close for many of them (the test loss above agrees to 1e-4): a few may flip.
    assert abs(a["test_accuracy"] - b["test_accuracy"]) * 360 <= 5, (a["test_accuracy"],
                                                                      b["test_accuracy"])
    # One checkpoint: process 0 wrote the metadata and the (replicated) arrays once; each
    # process has its own OCDBT directory, as orbax requires.
    step_dir = os.path.join(multi, "checkpoints", str(steps))
    assert sorted(os.listdir(os.path.join(step_dir, "state"))) == sorted(
        os.listdir(os.path.join(single, "checkpoints", str(steps), "state")) + ["ocdbt.process_1"])
    assert os.listdir(os.path.join(multi, "checkpoints")) == [str(steps)]
    leftovers = [n for n in os.listdir(multi) if ".tmp" in n]
    assert not leftovers, leftovers


def _run_real_pair(tmp_path, config, extra=()):
    multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
    args = [f"--config={os.path.join(REPO, 'configs', config)}", *TINY, *extra]
    # The reference: 1 process, the training set in 2 shards (the shard count comes first).
    procs = _start_pair(multi, args) + [_start_one(single, ["2", *args], program=SHARDS)]
    results = _finish(procs)
    for code, err in results:
        assert code == 0, err[-3000:]
    return multi, single, results


def test_ola_two_processes_equal_one_process(tmp_path):
    """The real multi-process path (one test: an OLA run covers the supervised steps' path too,
    since its plain steps are supervised steps, plus the rewards' and the policy's all-reduce).

    The policy's learning rate is 1e-9 here: its meta-gradient is all-reduced and applied as in
    any run, but Adam's step, lr g / (|g| + eps), turns gradient components at the noise level
    of the sums' order (those of ops not drawn: the normalized rewards sum to 0) into moves of a
    sizeable fraction of lr (lr/10 at |g| = 1e-9), which then change which ops are drawn: at
    lr 0.1 the two runs' policies part by ~1e-3 in 20 steps (seen), by the order of the sums
    alone. With the policy held, the draws are the same and the rest is compared to tolerance.

    That tolerance is wider than the supervised path's (a digits_supervised.py pair's states
    agree to 1e-5, moments included: seen, not a test here): the parameters after 22 steps agree
    to 3e-4 (of values ~0.3), the momentum sums to 7e-3 (not compared), the losses to 1e-5, the
    test accuracy to 3 of 360, the rewards' mean over the 32 rewarded images to 1.3% of their
    std (seen on one CPU). The gap is not about processes: one process
    with 8 or 4 devices gives the same draws and parameters 4.7e-4 apart (a supervised run's:
    1.2e-7), equal to 1.2e-7 through step 10 and apart after the pair of steps 10-11, with NSLR
    rewards too: a jump on the common path, not located (README, "Multi-host")."""
    multi, single, _ = _run_real_pair(tmp_path, "digits_ola.py",
                                      extra=["--config.ola.learning_rate=1e-9"])
    _assert_same_run(multi, single, steps=22, state_atol=2e-3, moments=False)
    logged = []
    for workdir in (multi, single):
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            logged.append([m for m in map(json.loads, f) if "train/loss" in m])
    assert [m["step"] for m in logged[0]] == [m["step"] for m in logged[1]] == [20, 22]
    for ma, mb in zip(*logged):  # the same draws, the same rewards
        assert sorted(ma) == sorted(mb)
        for name in ma:
            if name.startswith(("train/op_applied/", "train/ops_applied", "train/keep/")):
                assert ma[name] == pytest.approx(mb[name], abs=1e-6), name
            elif name.startswith("train/reward_"):  # relative to the rewards' spread
                assert ma[name] == pytest.approx(mb[name], abs=3e-2 * mb["train/reward_std"]), name
    a, b = _read(multi, "policy.json"), _read(single, "policy.json")
    assert a["ops"] == b["ops"]
    np.testing.assert_allclose(a["p_keep"], b["p_keep"], rtol=1e-5)


# --------------------------------------------------------- faults, with the cheap method


def _fake_args(go, *extra):
    return [f"--config={FAKE}", f"--config.wait_for_file={go}", *extra]


def _assert_fake_finished(workdir):
    results = _read(workdir, "results.json")
    assert results["steps"] == FAKE_STEPS and results["num_processes"] == 2
    assert results["num_devices"] == 8
    np.testing.assert_allclose(results["test_accuracy"], W0_MEAN + FAKE_STEPS, atol=1e-5)


def _wait_for(predicate, what, procs, timeout=TIMEOUT):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline or any(p.poll() is not None for p in procs):
            for p in procs:
                p.kill()
            outs = [p.communicate()[1][-2000:] for p in procs]
            pytest.fail(f"waiting for {what}: {outs}")
        time.sleep(0.05)


def _checkpointed(workdir, step):
    return lambda: os.path.isdir(os.path.join(workdir, "checkpoints", str(step)))


def test_killed_pair_resumes(tmp_path):
    workdir, go = str(tmp_path / "run"), str(tmp_path / "go")
    pair = _start_pair(workdir, _fake_args(go), program=FAKE)  # waits at step 3
    _wait_for(_checkpointed(workdir, 2), "checkpoint 2", pair)
    for p in pair:
        p.send_signal(signal.SIGKILL)
    assert [code for code, _ in _finish(pair)] == [-signal.SIGKILL] * 2
    open(go, "w").close()
    (code0, err0), (code1, err1) = _finish(_start_pair(workdir, _fake_args(go), program=FAKE))
    assert code0 == code1 == 0, (err0, err1)
    assert "resumed from step 2 (epoch 0)" in err0 and "resumed" not in err1  # process 0 speaks
    _assert_fake_finished(workdir)


@pytest.mark.parametrize("to", ["both", "process_1"])
def test_sigterm_stops_the_pair_at_one_step_with_a_checkpoint_and_resumes(tmp_path, to):
    workdir, go = str(tmp_path / "run"), str(tmp_path / "go")
    args = _fake_args(go, "--config.sleep_s=0.2")  # steps slow enough for the notice to spread
    pair = _start_pair(workdir, args, program=FAKE)
    # Both wait at step 3, having polled step 3 for a preemption: the sync point is then >= 4.
    # (Signalled earlier, while a process is still in step 2, the pair rightly stops at 3.)
    _wait_for(lambda: all(os.path.exists(f"{go}.waiting.{i}") for i in range(2)),
              "both processes waiting at step 3", pair)
    for p in pair if to == "both" else pair[1:]:
        p.send_signal(signal.SIGTERM)
    time.sleep(1.0)  # the preemption notice reaches the coordination service
    open(go, "w").close()
    (code0, err0), (code1, err1) = _finish(pair)
    assert code0 == code1 == 128 + signal.SIGTERM, (err0, err1)
    match = re.search(r"stopped by SIGTERM at step (\d+)", err0)
    assert match, err0
    stopped = int(match.group(1))
    steps = sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")))
    assert 3 < stopped < FAKE_STEPS and steps[-1] == stopped, (stopped, steps)
    assert set(steps[:-1]) <= {2, 4, 6, 8, 10}, steps  # periodic ones, then the stop's
    for err in (err0, err1):  # the same step on both
        assert f"stopped by SIGTERM at step {stopped}; checkpoint saved in {workdir}" in err, err
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    (code0, err0), (code1, err1) = _finish(_start_pair(workdir, args, program=FAKE))
    assert code0 == code1 == 0, (err0, err1)
    assert f"resumed from step {stopped} " in err0
    _assert_fake_finished(workdir)


def test_double_submitted_pair_is_refused_as_a_whole(tmp_path):
    workdir, go = str(tmp_path / "run"), str(tmp_path / "go")
    first = _start_pair(workdir, _fake_args(go), program=FAKE)
    _wait_for(_checkpointed(workdir, 2), "checkpoint 2", first)
    second = _finish(_start_pair(workdir, _fake_args(go), program=FAKE))
    open(go, "w").close()
    for code, err in second:  # both processes of the second job: one line, exit 2
        assert code == 2, err
        (line,) = err.strip().splitlines()
        assert line.startswith(f"gar_jax: error: --workdir={workdir} is in use by another run "
                               f"(process {first[0].pid} on host {socket.gethostname()}"), line
    assert [code for code, _ in _finish(first)] == [0, 0]
    _assert_fake_finished(workdir)


@pytest.mark.parametrize("launcher", ["slurm", "ompi", "jax"])
def test_distributed_auto_finds_the_processes_of_a_launcher(tmp_path, launcher):
    """`--config.distributed=auto` (the fake config's value, as every config's) under the
    variables SLURM's srun, Open MPI's mpirun or a JAX_COORDINATOR_ADDRESS launch set."""
    workdir, go = str(tmp_path / "run"), str(tmp_path / "go")
    open(go, "w").close()
    results = _finish(_start_pair(workdir, _fake_args(go), program=FAKE, launcher=launcher))
    assert [code for code, _ in results] == [0, 0], results
    _assert_fake_finished(workdir)


def test_coordinator_address_without_process_count_is_one_line(tmp_path):
    env = {**_env(8), "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{_free_port()}"}
    proc = subprocess.run([sys.executable, FAKE, f"--config={FAKE}",
                           f"--workdir={tmp_path / 'run'}"], env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("gar_jax: error: cannot start multi-process JAX (") and line.endswith(
        "set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (or "
        "--config.distributed=off)"), line
    assert not os.path.exists(tmp_path / "run")
