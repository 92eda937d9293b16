"""The OLA training loop on tiny WRNs (WRN-10-1, 8x8 digits): 8 devices == 1 device on a
GroupNorm model (layer-wise GAR on 8, the default jvp GAR in 2 chunks on 1), exact resume, the outputs of a run, the
policy replay, and bad configs."""
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gar_jax.augment import ola_sampler
from gar_jax.augment import spaces
from gar_jax.data import sources
from gar_jax.data.device import DeviceDataset
from gar_jax.errors import ConfigError
from gar_jax.methods import ola
from gar_jax.train import engine
from gar_jax.train.checkpoint import Checkpointer
from gar_jax.mesh import make_mesh, replicated

import config_files


# A small space keeps the compiled augmentation small (the applier only builds the passes its
# ops need): a LUT op, a geometric op with a level, and the destructive op of the digits run.
SPACE = spaces.SearchSpace("tiny", (spaces.Op("invert"),
                                    spaces.Op("translate_x", spaces.Level(4, integer=True),
                                              signed=True),
                                    spaces.DESTRUCTIVE_OP))


def _tiny_config(**overrides):
    c = config_files.load("digits_ola")
    c.model.depth, c.model.width, c.model.groups, c.model.norm = 10, 1, 4, "group"
    c.batch_size, c.eval_batch_size = 256, 360
    c.num_epochs, c.warmup_epochs = 2, 1.0   # 5 steps per epoch: pairs straddle epochs
    c.checkpoint_every_steps, c.log_every_steps = 4, 2
    c.progress_bar = False
    c.ola.space = "randaug"
    c.ola.destructive_op = True
    c.update_from_flattened_dict(overrides)
    return c


def _copy(state):
    return jax.tree.map(jnp.copy, state)  # each run gets its own buffers (the step donates)


@pytest.fixture(scope="module")
def run8():
    """8 devices, layer-wise GAR; the pair step may be traced only once in this module."""
    config = _tiny_config(**{"ola.gar_method": "layerwise"})
    ola.validate(config)
    setup = engine.build(config)
    space = SPACE
    state = ola.init_state(setup.state, config, space, setup.schedule)
    pure = ola.make_pair_step(setup.model, setup.tx, setup.mesh, space,
                              ola.meta_optimizer(config, setup.schedule),
                              ola.options(config), standard=setup.augment,
                              schedule=setup.schedule, jit=False)
    pair = jax.jit(chex.assert_max_traces(pure, n=1), donate_argnums=0,
                   out_shardings=replicated(setup.mesh))

    def advance(state, step):
        return pair(state, setup.train_data.batch(step), setup.train_data.batch(step + 1))

    return config, setup, space, state, advance


def test_eight_devices_layerwise_match_one_device_jvp(run8):
    config, setup8, space, state8, advance8 = run8
    mesh1 = make_mesh(jax.devices()[:1])
    data1 = DeviceDataset.create(sources.load("digits", "train"), mesh1,
                                 batch_size=config.batch_size, seed=config.seed)
    config1 = _tiny_config()  # the default: jvp, the batch in 2 chunks
    assert (config1.ola.gar_method, ola.options(config1).num_chunks) == ("jvp", 2)
    pair1 = ola.make_pair_step(setup8.model, setup8.tx, mesh1, space,
                               ola.meta_optimizer(config1, setup8.schedule),
                               ola.options(config1), standard=setup8.augment)
    state1 = jax.device_put(jax.device_get(state8), replicated(mesh1))
    state8 = _copy(state8)
    for t in (0, 2):
        state1, m1 = pair1(state1, data1.batch(t), data1.batch(t + 1))
        state8, m8 = advance8(state8, t)
        for name in ("loss_aug", "loss_plain", "reward_mean", "reward_std", "ops_applied"):
            np.testing.assert_allclose(m8[name], m1[name], rtol=2e-4, atol=1e-5, err_msg=name)
    a, b = jax.device_get(state1), jax.device_get(state8)
    chex.assert_trees_all_close(a.params, b.params, atol=2e-5, rtol=2e-5)
    # The policy moved (by ~lr = 0.1 per logit and step) and identically on both.
    chex.assert_trees_all_close(a.policy, b.policy, atol=2e-4)
    assert np.abs(b.policy["keep_logits"]).max() > 0.05
    assert float(m8["reward_std"]) > 0


def test_killed_run_resumes_exactly_and_writes_what_was_learned(run8, tmp_path):
    config, setup, space, state, advance = run8
    full_dir, killed_dir = str(tmp_path / "full"), str(tmp_path / "killed")

    def fit(workdir, **kwargs):
        method = engine.Method(state=_copy(state), advance=advance, steps_per_call=2,
                               report=ola.recorder(space, config))
        return engine.train(config, workdir, setup, method, **kwargs)

    full = fit(full_dir)

    class Killed(Exception):
        pass

    def kill_at_6(step, state):
        if step == 6:
            raise Killed()

    with pytest.raises(Killed):
        fit(killed_dir, on_step=[kill_at_6])
    assert Checkpointer(os.path.join(killed_dir, "checkpoints")).latest_step() == 4
    resumed = fit(killed_dir)
    a, _ = Checkpointer(os.path.join(full_dir, "checkpoints")).restore(state)
    b, _ = Checkpointer(os.path.join(killed_dir, "checkpoints")).restore(state)
    assert int(a.step) == int(b.step) == 10
    chex.assert_trees_all_equal(jax.device_get(a), jax.device_get(b))
    assert resumed["curves"]["test_accuracy"] == full["curves"]["test_accuracy"]

    # What was learned: one record per epoch, those of the uninterrupted run (a redone epoch's
    # record replaced, never duplicated); the last one is the final policy's summary.
    def history(workdir):
        with open(os.path.join(workdir, "policy_history.jsonl")) as f:
            return [json.loads(line) for line in f]

    assert [r["epoch"] for r in history(killed_dir)] == [1, 2]
    assert history(killed_dir) == history(full_dir)
    for k, v in ola_sampler.summary(jax.device_get(b.policy)).items():
        np.testing.assert_allclose(history(killed_dir)[-1][k], v, rtol=1e-6, err_msg=k)
    assert resumed["ola"]["final_policy"]["epoch"] == 2
    # The uniform learned-policy report: P(op applied) from p(k), the uniform op choice and the
    # keep probabilities of the final policy.
    learned = resumed["learned_policy"]
    assert learned["destructive_op"] == "sample_pairing"
    assert list(learned["op_probability"]) == list(space.op_names)
    np.testing.assert_allclose(list(learned["op_probability"].values()),
                               ola_sampler.op_probability(jax.device_get(b.policy)), rtol=1e-6)
    for name in ("policy.json", "policy_over_training.png", "policy_strengths.png"):
        assert os.path.getsize(os.path.join(killed_dir, name)) > 0
    with open(os.path.join(killed_dir, "policy.json")) as f:
        text = f.read()
    params, names, _ = ola_sampler.params_from_json(text)
    assert names == list(space.op_names)
    np.testing.assert_allclose(ola_sampler.summary(params)["p_keep"],
                               ola_sampler.summary(jax.device_get(b.policy))["p_keep"], rtol=1e-5)
    replay = ola_sampler.replay(text, space)
    images = setup.train_data.batch(0)["image"]
    out = jax.jit(replay)(jax.random.key(0), images)
    assert out.shape == images.shape and out.dtype == jnp.uint8


def test_replay_applies_the_stored_probabilities():
    """One op (invert), k = 1 surely; member 0 never keeps it, member 1 always does."""
    space = spaces.SearchSpace("inv", (spaces.Op("invert"),))
    params = {"k_logits": jnp.array([[30.0, -30, -30, -30]] * 2),
              "level_logits": jnp.zeros((2, 1, 31)),
              "keep_logits": jnp.array([[-40.0], [40.0]])}
    replay = ola_sampler.replay(ola_sampler.to_json(params, ["invert"]), space)
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (64, 4, 4, 1)), jnp.uint8)
    out = np.asarray(jax.jit(replay)(jax.random.key(1), images))
    inverted = np.all(out == 255 - np.asarray(images), axis=(1, 2, 3))
    unchanged = np.all(out == np.asarray(images), axis=(1, 2, 3))
    assert np.all(inverted | unchanged) and 16 < inverted.sum() < 48


@pytest.mark.parametrize("override,message", [
    ({"ola.gar_method": "backprop"}, "gar_method"),
    ({"ola.reward": "loss"}, "reward"),
    ({"ola.ensemble_size": 3}, "multiple of config.ola.ensemble_size"),
    ({"ola.reward_normalization": "global"}, "reward_normalization"),
    ({"ola.reward_normalization": "sampler", "ola.ensemble_size": 256}, ">= 2 images per"),
    ({"augment": "ra"}, "learns the policy itself"),
    ({"model.dropout_rate": 0.3}, "dropout_rate must be 0"),
    ({"ola.replace": False, "ola.max_ops": 16}, "without replacement"),
    ({"ola.space": "nope"}, "unknown search space"),
    ({"ola.num_chunks": 0}, "num_chunks"),
])
def test_bad_configs_fail_before_compute(override, message):
    with pytest.raises(ConfigError, match=message):
        ola.validate(_tiny_config(**override))


def _load_config(name, *args):
    return config_files.load(name[:-3] + "".join(":" + a for a in args))


def test_every_ola_config_validates():
    for dataset in ("cifar10", "cifar100"):
        for args, space in (((), "wide"), (("ra",), "randaug")):
            config = _load_config(f"{dataset}_ola.py", *args)
            ola.validate(config)
            assert (config.dataset, config.ola.space, config.model.depth, config.model.width,
                    config.num_epochs, config.batch_size) == (dataset, space, 28, 10, 200, 256)
            assert (config.ola.learning_rate, config.ola.b1, config.ola.ensemble_size,
                    config.ola.reward_normalization) == (
                        0.1, 0.0, 32, "sampler")  # the authors' protocol
            # GAR as frozen-statistics jvp in 2 chunks per device (the cheap exact default)
            assert (config.ola.gar_method, config.ola.num_chunks, config.ola.chunk_size) == (
                "jvp", 2, 0)
            assert config.batch_size // config.ola.ensemble_size == 8
    destructive = _load_config("digits_ola_destructive.py")
    ola.validate(destructive)
    assert ola.make_space(destructive).op_names[-1] == "sample_pairing"
    assert not _load_config("digits_ola.py").ola.destructive_op


def test_nslr_pair_traces(run8):
    """The NSLR variant of the pair (exercised end to end by the digits experiments) traces to
    the same state structure; its running reward statistics count steps."""
    config, setup, space, state, _ = run8
    nslr = _tiny_config(**{"ola.reward": "nslr"})
    pair = ola.make_pair_step(setup.model, setup.tx, setup.mesh, space,
                              ola.meta_optimizer(nslr, setup.schedule),
                              ola.options(nslr), standard=setup.augment, jit=False)
    batch = setup.train_data.batch(0)
    new, metrics = jax.eval_shape(pair, state, batch, batch)
    assert jax.tree.structure(new) == jax.tree.structure(state)
    assert metrics["reward_std"].shape == ()
