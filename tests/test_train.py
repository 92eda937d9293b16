"""The training stack on 8 simulated CPU devices with tiny WRNs (WRN-10-1) on 8x8 digits."""
import glob
import json
import math
import os
import signal

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from gar_jax.data import sources
from gar_jax.data.device import DeviceDataset
from gar_jax.errors import ConfigError
from gar_jax.models.wrn import WideResNet
from gar_jax.methods import supervised
from gar_jax.train import defaults, engine, optim, steps
from gar_jax.train.checkpoint import Checkpointer
from gar_jax.mesh import data_sharding, make_mesh, replicated

import config_files


def _tiny_config(**overrides):
    c = config_files.load("digits_supervised:baseline")
    c.model.depth, c.model.width, c.model.groups = 10, 1, 4
    c.batch_size, c.eval_batch_size = 64, 128
    c.num_epochs, c.warmup_epochs = 2, 1.0
    c.progress_bar = False
    for k, v in overrides.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return c


def _copy(state):
    # The engine's steps donate the state: hand each run its own buffers.
    return jax.tree.map(jnp.copy, state)


def _fit(config, workdir, setup, *, advance, state, **kwargs):
    return engine.train(config, workdir, setup, engine.Method(state=state, advance=advance),
                        **kwargs)


@pytest.fixture(scope="module")
def resumable():
    """A 2-epoch digits run (GroupNorm WRN-10-1, 5 steps/epoch) on 8 devices, with a train step
    that may be traced only once (shared by the tests below to compile it once)."""
    config = _tiny_config(batch_size=256, checkpoint_every_steps=3, log_every_steps=2,
                          **{"model.norm": "group"})
    setup = engine.build(config)
    pure = steps.make_train_step(setup.model, setup.tx, setup.mesh, augment=setup.augment,
                                 schedule=setup.schedule, jit=False)
    train_step = steps.jit_step(chex.assert_max_traces(pure, n=1), setup.mesh)

    def advance(state, step):
        return train_step(state, setup.train_data.batch(step), steps.step_key(state.rng, step))

    return config, setup, advance


def test_eight_devices_match_one_device_groupnorm(resumable):
    config, setup8, advance8 = resumable
    mesh1 = make_mesh(jax.devices()[:1])
    data1 = DeviceDataset.create(sources.load("digits", "train"), mesh1,
                                 batch_size=config.batch_size, seed=config.seed)
    step1 = steps.make_train_step(setup8.model, setup8.tx, mesh1, augment=setup8.augment,
                                  schedule=setup8.schedule)
    state1 = jax.device_put(jax.device_get(setup8.state), replicated(mesh1))
    state8 = _copy(setup8.state)
    for t in range(3):  # crop/flip/Cutout included: augmentation is device-count invariant too
        state1, metrics1 = step1(state1, data1.batch(t), steps.step_key(state1.rng, t))
        state8, metrics8 = advance8(state8, t)
    assert state8.params["Conv_0"]["kernel"].sharding.is_fully_replicated
    chex.assert_trees_all_close(jax.device_get(state1.params), jax.device_get(state8.params),
                                atol=2e-5, rtol=2e-5)
    assert abs(float(metrics1["loss"]) - float(metrics8["loss"])) < 1e-5
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                         jax.device_get(state8.params), jax.device_get(setup8.state.params))
    assert min(jax.tree.leaves(moved)) > 0


def test_batchnorm_uses_per_device_statistics():
    """One sharded gradient on 8 devices == the mean of 8 single-shard gradients (PyTorch DDP)."""
    model = WideResNet(depth=10, width=1, num_classes=10, mean=(0.3,), std=(0.4,))
    rng = np.random.default_rng(0)
    # Random parameters and running statistics straight from the shapes (no init to compile).
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               jnp.zeros((1, 8, 8, 1), jnp.uint8), train=False))
    variables = jax.tree.map(
        lambda s: (1 + 0.2 * rng.random(s.shape) if len(s.shape) == 1
                   else 0.3 * rng.normal(size=s.shape)).astype(np.float32), shapes)
    params, batch_stats = variables["params"], variables["batch_stats"]
    images = rng.integers(0, 256, (64, 8, 8, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, (64,)).astype(np.int32)
    mesh = make_mesh()
    grads, stats, _ = jax.jit(steps.make_grad_fn(model, mesh))(
        params, batch_stats, jax.device_put(images, data_sharding(mesh)),
        jax.device_put(labels, data_sharding(mesh)), jax.random.PRNGKey(5))

    @jax.jit
    def shard_grad(x, y):
        def loss_fn(p):
            logits, upd = model.apply({"params": p, "batch_stats": batch_stats}, x,
                                      train=True, mutable=["batch_stats"])
            return steps.cross_entropy(logits, y).mean(), upd["batch_stats"]
        return jax.grad(loss_fn, has_aux=True)(params)

    # Device d holds rows [8d, 8d + 8) of the global batch of 64.
    per_shard = [shard_grad(images[8 * d:8 * (d + 1)], labels[8 * d:8 * (d + 1)])
                 for d in range(8)]
    mean_grads = jax.tree.map(lambda *g: np.mean(g, axis=0), *[g for g, _ in per_shard])
    mean_stats = jax.tree.map(lambda *s: np.mean(s, axis=0), *[s for _, s in per_shard])
    chex.assert_trees_all_close(grads, mean_grads, atol=1e-5, rtol=1e-4)
    chex.assert_trees_all_close(stats, mean_stats, atol=1e-6, rtol=1e-5)
    # ... and differs from whole-batch statistics (the check above is not vacuous).
    whole, _ = shard_grad(images, labels)
    assert max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                                            whole, mean_grads))) > 1e-3


def _torch_sgd_reference(params, grads_per_step, lr_of_step, *, momentum, wd, clip):
    """torch: clip_grad_norm_(clip) then SGD(lr, momentum, nesterov=True, weight_decay=wd)."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    buf = {}
    history = []
    for t, grads in enumerate(grads_per_step):
        norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
        coef = min(1.0, clip / (norm + 1e-6))
        for k in p:
            d = grads[k] * coef + wd * p[k]
            buf[k] = d if t == 0 else momentum * buf[k] + d
            p[k] = p[k] - lr_of_step(t) * (d + momentum * buf[k])
        history.append(dict(p))
    return history


def test_optimizer_matches_pytorch_sgd_semantics():
    config = _tiny_config(learning_rate=0.2, weight_decay=0.01, grad_clip_norm=1.5,
                          num_epochs=4, warmup_epochs=1.0)
    steps_per_epoch = 3
    tx, schedule = optim.make_optimizer(config, steps_per_epoch)
    warmup, total = 3, 12

    def lr_ref(t):
        if t < warmup:
            return 0.2 * t / warmup
        return 0.2 * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))

    for t in (0, 1, 3, 7, 11, 12):
        assert abs(float(schedule(t)) - lr_ref(t)) < 1e-7, t
    rng = np.random.default_rng(0)
    params = {"kernel": rng.normal(size=(3, 4)).astype(np.float32),
              "scale": rng.normal(size=(4,)).astype(np.float32)}
    # Gradient norms from ~0.2 to ~6: some steps are clipped, some not.
    grads = [{k: (rng.normal(size=v.shape) * s).astype(np.float32) for k, v in params.items()}
             for s in (0.1, 2.0, 0.05, 1.5, 0.3, 0.08)]
    expected = _torch_sgd_reference(params, grads, lr_ref, momentum=0.9, wd=0.01, clip=1.5)
    p, opt_state = params, tx.init(params)
    for t, g in enumerate(grads):
        updates, opt_state = tx.update(g, opt_state, p)
        p = jax.tree.map(lambda a, u: a + u, p, updates)
        for k in p:
            np.testing.assert_allclose(p[k], expected[t][k], rtol=2e-6, atol=2e-7)
    # decay_all_params=False decays kernels only.
    config.decay_all_params, config.warmup_epochs = False, 0.0
    tx_kernels, _ = optim.make_optimizer(config, steps_per_epoch)
    zero = jax.tree.map(np.zeros_like, params)
    updates, _ = tx_kernels.update(zero, tx_kernels.init(params), params)
    assert np.any(updates["kernel"]) and not np.any(updates["scale"])


def test_killed_run_resumes_to_identical_parameters(resumable, tmp_path):
    config, setup, advance = resumable
    full = _fit(config, str(tmp_path / "full"), setup, advance=advance,
                    state=_copy(setup.state))
    final_full = Checkpointer(str(tmp_path / "full" / "checkpoints"))

    class Killed(Exception):
        pass

    def kill_at_7(step, state):
        if step == 7:
            raise Killed()

    killed = str(tmp_path / "killed")
    with pytest.raises(Killed):
        _fit(config, killed, setup, advance=advance, state=_copy(setup.state),
                 on_step=[kill_at_7])
    at_kill = Checkpointer(os.path.join(killed, "checkpoints"))
    assert at_kill.latest_step() == 6
    meta = at_kill.restore(setup.state)[1]
    assert (meta["epoch"], meta["position"], meta["curves"]["epoch"]) == (1, 1, [1])
    resumed = _fit(config, killed, setup, advance=advance, state=_copy(setup.state))

    a, _ = final_full.restore(setup.state)
    b, _ = Checkpointer(os.path.join(killed, "checkpoints")).restore(setup.state)
    assert int(a.step) == int(b.step) == 10
    chex.assert_trees_all_equal(jax.device_get(a), jax.device_get(b))
    assert resumed["test_accuracy"] == full["test_accuracy"]
    assert resumed["curves"]["epoch"] == [1, 2] and full["test_examples"] == 360
    assert resumed["curves"]["test_accuracy"] == full["curves"]["test_accuracy"]
    with open(os.path.join(killed, "results.json")) as f:
        assert json.load(f)["steps"] == 10
    with open(os.path.join(killed, "metrics.jsonl")) as f:
        logged = [json.loads(line) for line in f]
    assert any("test/accuracy" in m for m in logged) and os.listdir(
        os.path.join(killed, "tensorboard"))
    # One trace of the step (chex) and one compilation of the batch gather across all three runs.
    assert setup.train_data._gather._cache_size() == 1


def test_sigterm_checkpoints_the_current_step_and_resumes_to_the_same_end(resumable, tmp_path,
                                                                          capsys):
    config, setup, advance = resumable
    full = _fit(config, str(tmp_path / "full"), setup, advance=advance, state=_copy(setup.state))
    workdir = str(tmp_path / "preempted")

    def sigterm_at_4(step, state):
        if step == 4:  # periodic checkpoints are at 3 and 6: 4 is saved only because of SIGTERM
            os.kill(os.getpid(), signal.SIGTERM)

    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(engine.Preempted, match="SIGTERM at step 4") as stopped:
        _fit(config, workdir, setup, advance=advance, state=_copy(setup.state),
             on_step=[sigterm_at_4])
    assert stopped.value.signum == signal.SIGTERM
    assert Checkpointer(os.path.join(workdir, "checkpoints")).latest_step() == 4
    assert signal.getsignal(signal.SIGTERM) == handler  # the engine's handler is gone again
    capsys.readouterr()
    resumed = _fit(config, workdir, setup, advance=advance, state=_copy(setup.state))
    assert "resumed from step 4 (epoch 0)" in capsys.readouterr().err
    a, _ = Checkpointer(str(tmp_path / "full" / "checkpoints")).restore(setup.state)
    b, _ = Checkpointer(os.path.join(workdir, "checkpoints")).restore(setup.state)
    chex.assert_trees_all_equal(jax.device_get(a), jax.device_get(b))
    # The epoch the run resumed in is covered whole by its train metrics.
    np.testing.assert_allclose(resumed["curves"]["train_loss"], full["curves"]["train_loss"],
                               rtol=1e-6)
    assert resumed["test_accuracy"] == full["test_accuracy"]


def test_nan_loss_stops_after_last_good_checkpoint(resumable, tmp_path):
    config, setup, _ = resumable
    config = config.copy_and_resolve_references()
    config.log_every_steps = 100

    def advance(state, step):
        loss = jnp.float32(np.nan if step == 4 else 1.0)
        return state.replace(step=state.step + 1), {"loss": loss}

    with pytest.raises(FloatingPointError, match=r"nan at step 4.*last good checkpoint: step 3"):
        _fit(config, str(tmp_path), setup, advance=advance, state=_copy(setup.state))
    assert Checkpointer(str(tmp_path / "checkpoints")).latest_step() == 3


def test_tfds_cifar10_path_trains_under_mock_data():
    config = config_files.load("cifar10_baseline")
    config.model.depth, config.model.width, config.model.groups = 10, 1, 4
    config.batch_size, config.eval_batch_size, config.num_epochs = 16, 16, 1
    config.warmup_epochs, config.progress_bar = 0.0, False
    with tfds.testing.mock_data(num_examples=32, policy=tfds.testing.MockPolicy.USE_CODE):
        engine.validate(config)
        setup = engine.build(config)
    assert setup.train_data.image_shape == (32, 32, 3) and setup.steps_per_epoch == 2
    assert setup.train_data.arrays["image"].dtype == jnp.uint8
    before = jax.device_get(setup.state.params)
    state, metrics = supervised.advance_fn(setup)(setup.state, 0)
    assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                         jax.device_get(state.params), before)
    assert min(jax.tree.leaves(moved)) > 0


@pytest.mark.parametrize("override,message", [
    ({"batch_size": 12}, "batch_size=12 must be a positive multiple of the 8 devices"),
    ({"eval_batch_size": 100}, "eval_batch_size=100"),
    ({"augment": "bogus"}, "unknown augmentation policy 'bogus'"),
    ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
    ({"model.depth": 12}, "depth must be 6n"),
    ({"model.dtype": "float16"}, "dtype"),
])
def test_bad_configs_fail_before_compute(override, message):
    with pytest.raises(ConfigError, match=message):
        engine.validate(_tiny_config(**override))


def test_missing_tfds_dataset_fails_with_instructions(tmp_path):
    config = config_files.load("cifar100_baseline")
    config.data_dir = str(tmp_path)
    engine.validate(config)
    with pytest.raises(ConfigError, match="download_and_prepare"):
        engine.build(config)


def _load_config(path, arg=None):
    return config_files.load_path(path, arg or "")


def test_every_supervised_config_validates():
    """The Table 2 configs of every method (fixed policies, the published DRA / FAA policies,
    smart_augmentation) validate with their method's checks and share the Table 2 protocol;
    the searches (*_search.py) have their own protocols; OLA: tests/test_ola_train.py."""
    from gar_jax import main

    configs = os.path.join(os.path.dirname(__file__), "..", "configs")
    paths = sorted(p for p in glob.glob(os.path.join(configs, "cifar10*_*.py"))
                   if not p.endswith(("_ola.py", "_search.py")))
    names = {os.path.basename(p)[:-3].split("_", 1)[1] for p in paths}
    assert names == set(defaults.BASELINES) | {"dra", "faa", "smart_aug"}, names
    assert len(paths) == 18
    for path in paths:
        config = _load_config(path)
        main.get_runner(config).validate(config)  # also builds the policy
        # smart_augmentation clips the inner (model) gradients at 1 as its authors' jobs do
        # (configs/cifar10_smart_aug.py); every other method clips at 5.
        clip = 1.0 if path.endswith("_smart_aug.py") else 5.0
        assert (config.model.depth, config.model.width, config.num_epochs, config.batch_size,
                config.learning_rate, config.weight_decay, config.warmup_epochs,
                config.grad_clip_norm) == (28, 10, 200, 256, 0.1, 5e-4, 5.0, clip), path
    ra100 = _load_config(os.path.join(configs, "cifar100_ra.py")).augment_kwargs
    assert (ra100.n, ra100.m) == (2, 14)
    for baseline in ("none",) + defaults.BASELINES:
        engine.validate(_load_config(os.path.join(configs, "digits_supervised.py"), baseline))
