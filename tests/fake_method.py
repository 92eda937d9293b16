"""A cheap method for the CLI's fault tests (tests/test_reliability.py, tests/test_multiprocess.py):
the real command line, workdir lock, engine loop, checkpoints, exit statuses, with a state that
costs nothing to compute, so that a test can run it many times and inject faults.

It is both a config file (``--config=tests/fake_method.py``) and a program that runs the real
CLI with ``experiment="fake"`` registered (``python tests/fake_method.py --config=... ``; the
CLI's `EXPERIMENTS` table maps the name to this module).

State: ``w`` float32 ``[size]`` sharded over the devices (every process holds its slice), drawn
from ``seed``; each step adds 1 to ``w``; the loss is ``mean(w)`` (a reduction across all
devices and processes). So after t steps ``w = w0 + t`` exactly and a resumed run can be checked
against a hand computation. Faults, each at a data step (-1: never): ``nan_at`` (the loss of
that step is NaN), ``nan_state_at`` (``w`` becomes NaN there, the loss stays finite),
``sleep_s`` per step, ``wait_for_file`` (at step 3, wait until that file exists: a run that
stays alive until a test lets it go; on entering the wait, process i creates
``<wait_for_file>.waiting.<i>``, so that a test knows every process has polled step 3); and,
from the environment so that the rerun of the same config goes without it,
``FAKE_FSIZE_LIMIT_AT=<step>``: from that step on this process may not write a file larger
than 32 KiB (RLIMIT_FSIZE: a real write failure, EFBIG, inside orbax's writer threads), once
the previous checkpoint is complete.
"""
import os
import resource
import signal
import sys
import time

import ml_collections

if __name__ == "__main__":  # `python tests/fake_method.py`: this module is the "fake" method
    sys.modules["gar_jax_fake_method"] = sys.modules[__name__]


def get_config():
    c = ml_collections.ConfigDict()
    c.experiment = "fake"
    c.distributed = "auto"
    c.seed = 0
    c.size = 1 << 16           # 256 KiB of float32: more than the 32 KiB limit
    c.steps_per_epoch = 4
    c.num_epochs = 3
    c.batch_size = 8
    c.sleep_s = 0.0
    c.wait_for_file = ""
    c.nan_at = -1
    c.nan_state_at = -1
    c.log_every_steps = 1
    c.checkpoint_every_steps = 2
    c.keep_checkpoints = 10
    c.eval_every_epochs = 1
    c.progress_bar = False
    return c


def validate(config):
    from gar_jax.errors import ConfigError
    from gar_jax.mesh import initialize_distributed
    from gar_jax.train import engine

    initialize_distributed(config.distributed)
    engine.validate_loop(config)
    for name in ("size", "steps_per_epoch", "num_epochs"):
        if config[name] < 1:
            raise ConfigError(f"config.{name}={config[name]} must be >= 1")


def initial_w(config):
    import numpy as np
    return np.random.default_rng(config.seed).standard_normal(config.size).astype(np.float32)


def run(config, workdir):
    import flax
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gar_jax.mesh import data_sharding, make_mesh, replicated
    from gar_jax.train import engine

    validate(config)
    mesh = make_mesh()

    @flax.struct.dataclass
    class State:
        step: jax.Array
        w: jax.Array

    w0 = initial_w(config)
    state = State(step=jax.device_put(jnp.int32(0), replicated(mesh)),
                  w=jax.make_array_from_callback(w0.shape, data_sharding(mesh),
                                                 lambda index: w0[index]))

    @jax.jit
    def step_fn(state, nan_loss, nan_state):
        w = state.w + 1.0
        loss = jnp.where(nan_loss, jnp.nan, jnp.mean(w))
        w = jnp.where(nan_state, jnp.nan, w)  # (the loss of this step stays finite)
        return state.replace(step=state.step + 1, w=w), {"loss": loss}

    fsize_limit_at = int(os.environ.get("FAKE_FSIZE_LIMIT_AT", -1))

    def advance(state, step):
        if step == fsize_limit_at:
            # The previous checkpoint is complete (orbax renames it from its tmp name when it
            # is): the limit then only hits the saves that follow.
            saved = [s for s in range(step) if os.path.isdir(
                os.path.join(workdir, "checkpoints", str(s)))]
            deadline = time.time() + 120
            while jax.process_index() == 0 and not saved and time.time() < deadline:
                time.sleep(0.05)
                saved = [s for s in range(step) if os.path.isdir(
                    os.path.join(workdir, "checkpoints", str(s)))]
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
            resource.setrlimit(resource.RLIMIT_FSIZE,
                               (1 << 15, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        if step == 3 and config.wait_for_file:
            open(f"{config.wait_for_file}.waiting.{jax.process_index()}", "w").close()
            deadline = time.time() + 120
            while not os.path.exists(config.wait_for_file) and time.time() < deadline:
                time.sleep(0.05)
        if config.sleep_s:
            time.sleep(config.sleep_s)
        return step_fn(state, step == config.nan_at, step == config.nan_state_at)

    def evaluate(state):
        w = np.asarray(jax.jit(lambda w: jnp.mean(w), out_shardings=replicated(mesh))(
            state.w).addressable_data(0))
        return {"accuracy": float(w), "loss": float(w), "count": 1}

    return engine.train(config, workdir, None, engine.Method(
        state=state, advance=advance, evaluate=evaluate, steps_per_epoch=config.steps_per_epoch,
        total_steps=config.num_epochs * config.steps_per_epoch, images_per_step=config.batch_size,
        describe={"method": "fake", "num_processes": jax.process_count()}))


if __name__ == "__main__":
    from absl import app

    from gar_jax import main

    main.EXPERIMENTS["fake"] = "gar_jax_fake_method"
    app.run(main.main, flags_parser=main._parse_flags)
