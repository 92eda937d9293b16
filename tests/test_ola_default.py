"""OLA's default GAR (frozen-statistics jvp, each device's batch in 2 chunks) gives the rewards,
policy and parameters of the layer-wise frozen method on a BatchNorm net (float64, 1 and 8
devices); `chunk_size_for`'s chunk sizes; `op_reward_metrics` against a loop over the images;
``reward_fraction`` (the default's half of the images rewarded): which examples, the full
rewards restricted to them, REINFORCE over them alone, and its one-line errors."""
import jax
import ml_collections
import jax.numpy as jnp
import numpy as np
import pytest

from gar_jax import reinforce
from gar_jax.errors import ConfigError
from gar_jax.augment import ola_sampler
from gar_jax.augment import spaces
from gar_jax.methods import ola
import config_files
from config_files import load as load_config

from test_ola_frozen_stats import SPACE, float64, pair_by_hand, pair_case  # noqa: F401 (fixture)

B = 32


@pytest.mark.parametrize("local_batch,chunk_size,num_chunks,want", [
    (128, None, 2, 64), (127, None, 2, 64), (8, None, 2, 4), (4, None, 3, 2),
    (1, None, 2, None),      # one example: nothing to cut
    (128, None, 1, None),    # one chunk = the whole batch
    (128, 48, 2, 48),        # an explicit chunk size wins
    (16, 32, 2, None),       # a chunk size >= the batch is no chunking
])
def test_chunk_size_for(local_batch, chunk_size, num_chunks, want):
    assert ola.chunk_size_for(local_batch, chunk_size, num_chunks) == want


@pytest.mark.parametrize("devices,fraction,num_chunks,want", [
    (1, 0.5, 2, (16, 8)),    # 32 images, half rewarded: 16, in 2 chunks of 8
    (1, 1.0, 2, (32, 16)),
    (8, 0.5, 2, (2, 1)),     # 4 images a device, 2 rewarded: chunks of 1
    (1, 0.5, 1, (16, None)),
])
def test_the_pair_chunks_the_rewarded_examples(monkeypatch, devices, fraction, num_chunks, want):
    """The jvp alignment is cut into `num_chunks` chunks of each device's *rewarded* examples
    (not of its whole batch: a regression of 2026-12-04 ran the default's 64 rewarded images
    of WRN-16-4 b128 as one chunk, +33% compiled memory over the fixed pair instead of +0%)."""
    model, mesh, tx, meta_tx, state, images, labels, sample, plain, _ = pair_case(devices)
    seen = []
    alignment = ola.gar.alignment

    def recording(per_example, params, batch, direction, **kw):
        seen.append((batch["image"].shape[0], kw.get("chunk_size")))
        return alignment(per_example, params, batch, direction, **kw)

    monkeypatch.setattr(ola.gar, "alignment", recording)
    core = ola.make_pair_core(model, tx, mesh, SPACE, meta_tx,
                              ola.Options(reward_fraction=fraction, num_chunks=num_chunks))
    jax.eval_shape(core, state, images, sample, labels, plain, jax.random.key(3))
    assert seen == [want]


def test_default_options_are_the_configs():
    for name in ("cifar10_ola", "cifar100_ola", "digits_ola", "digits_ola_destructive"):
        opts = ola.options(load_config(name))
        assert (opts.gar_method, opts.num_chunks, opts.chunk_size, opts.reward_fraction) == (
            "jvp", 2, None, 0.5), name
        assert (opts.gar_method, opts.num_chunks) == (ola.Options.gar_method,
                                                      ola.Options.num_chunks)
        # GAR against the next batch's gradient itself (the paper's): the target options are off
        assert (opts.target_ema, opts.gar_target) == (0.0, "next") == (
            ola.Options.target_ema, ola.Options.gar_target), name


@pytest.mark.parametrize("devices", [1, 8])
def test_default_pair_equals_layerwise_frozen(devices):
    """The default pair (jvp, 2 chunks per device: 16 images / 2 on 1 / 8 devices) against the
    layer-wise frozen pair (the previous default): the same rewards (GAR up to float64
    rounding), so the same policy update and parameters."""
    model, mesh, tx, meta_tx, state, images, labels, sample, plain, _ = pair_case(devices)
    policy = state.policy
    default = ola.make_pair_core(model, tx, mesh, SPACE, meta_tx, ola.Options())
    layerwise = ola.make_pair_core(model, tx, mesh, SPACE, meta_tx,
                                   ola.Options(gar_method="layerwise", gar_convention="frozen"))

    @jax.jit
    def both(state):
        args = (images, sample, labels, plain, jax.random.key(3))
        return default(state, *args), layerwise(state, *args)

    (new, m_new), (old, m_old) = both(state)
    assert float(m_new["reward_std"]) > 0
    for name in ("reward_mean", "reward_std", "loss_aug", "loss_plain"):
        np.testing.assert_allclose(m_new[name], m_old[name], rtol=1e-10, err_msg=name)
    assert np.abs(new.policy["keep_logits"] - policy["keep_logits"]).max() > 1e-3
    for got, want in ((new.policy, old.policy), (new.params, old.params),
                      (new.batch_stats, old.batch_stats)):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13),
                     got, want)


def test_op_reward_metrics_equal_a_loop():
    space = spaces.SearchSpace("three", (spaces.Op("invert"), spaces.Op("auto_contrast"),
                                         spaces.Op("equalize")))
    policy = ola_sampler.init_params(len(space), max_ops=3, ensemble_size=2)
    sample = ola_sampler.sample(policy, jax.random.key(0), 40)
    weights = jnp.asarray(np.random.default_rng(0).normal(size=40), jnp.float32)
    ranks = jnp.asarray(np.random.default_rng(1).normal(size=40), jnp.float32)
    got = jax.jit(lambda s, w, u: ola.op_reward_metrics(s, w, space, rank_weights=u))(
        sample, weights, ranks)
    ops, active = np.asarray(sample.op_indices), np.asarray(sample.active)
    w, u = np.asarray(weights), np.asarray(ranks)
    for a, name in enumerate(space.op_names):
        # image n "got" op a when some applied (active) slot holds a; repeats count once
        hit = np.array([any(active[n, j] and ops[n, j] == a for j in range(ops.shape[1]))
                        for n in range(40)], float)
        assert 0 < hit.sum() < 40
        np.testing.assert_allclose(got[f"op_applied/{name}"], hit.mean(), rtol=1e-6)
        np.testing.assert_allclose(got[f"op_weight/{name}"], (w * hit).mean(), rtol=1e-5)
        np.testing.assert_allclose(got[f"op_weight_sq/{name}"], (w * w * hit).mean(), rtol=1e-5)
        np.testing.assert_allclose(got[f"op_rank_weight/{name}"], (u * hit).mean(), rtol=1e-5)
        np.testing.assert_allclose(got[f"op_rank_weight_sq/{name}"], (u * u * hit).mean(),
                                   rtol=1e-5)
    assert len(got) == 5 * len(space)
    assert len(ola.op_reward_metrics(sample, weights, space)) == 3 * len(space)


def test_rank_weights():
    r = jnp.array([3.0, 1.0, 2.0, 10.0])
    # ranks 2 0 1 3, centred (-1.5) and divided by the std of 0..3, sqrt(15 / 12)
    np.testing.assert_allclose(ola.rank_weights(r), np.array([0.5, -1.5, -0.5, 1.5]) /
                               np.sqrt(15 / 12), rtol=1e-6)
    # two groups [3, 1], [2, 10]: ranks 1 0 | 0 1, centred -0.5, std 0.5
    np.testing.assert_allclose(ola.rank_weights(r, 2), [1.0, -1.0, -1.0, 1.0], rtol=1e-6)


def _bench_ola_cost():
    """experiments/bench_ola_cost.py as a module (experiments/ is no package)."""
    return config_files.experiment("bench_ola_cost")


def test_bench_default_row_copies_every_gar_choice():
    """`bench_ola_cost.py --methods default` copies GAR_FIELDS from configs/cifar10_ola.py: they
    must be exactly the options that choose how GAR is computed (a new one must be added)."""
    import dataclasses

    bench = _bench_ola_cost()
    not_gar = {"reward", "replace", "nslr_decay", "reward_normalization"}
    assert set(bench.GAR_FIELDS) == {f.name for f in dataclasses.fields(ola.Options)} - not_gar
    config = load_config("cifar10_ola")
    assert all(field in config.ola for field in bench.GAR_FIELDS)


@pytest.mark.parametrize("field,value,low", [
    ("num_chunks", 0, 1), ("num_chunks", 1.5, 1), ("num_chunks", True, 1),
    ("chunk_size", -1, 0), ("chunk_size", 2.0, 0), ("ensemble_size", 0, 1),
    ("max_ops", 0, 1), ("max_ops", "2", 1)])
def test_integer_fields_are_refused_in_one_line(field, value, low):
    fields = load_config("digits_ola").to_dict()
    fields["ola"][field] = value  # (a typed ConfigDict would refuse some of these itself)
    config = ml_collections.ConfigDict(fields)
    with pytest.raises(ConfigError) as e:
        ola.validate(config)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"config.ola.{field}={value!r} must be an integer >= {low}")


@pytest.mark.parametrize("batch,samplers,devices,fraction,want", [
    (128, 32, 1, 0.5, [0, 2, 4, 6]),       # CIFAR: 2 of each sampler's 4 images
    (64, 2, 1, 0.5, [0, 2, 4, 6]),         # digits: 16 of each sampler's 32
    (64, 2, 8, 0.5, [0, 2, 4, 6]),         # the same on 8 devices of 8 images
    (64, 16, 2, 0.25, [0, 4, 8, 12]),      # 1 of 4
    (60, 5, 2, 2 / 3, [0, 1, 3, 4, 6, 7]),  # 2 of 3
    (128, 32, 1, 1.0, None)])              # every example
def test_rewarded_examples(batch, samplers, devices, fraction, want):
    got = ola.rewarded_examples(batch, samplers, devices, fraction)
    if want is None:
        assert got is None
        return
    assert len(got) == round(batch * fraction)
    np.testing.assert_array_equal(got[:len(want)], want)
    # each sampler and each device gets the same share
    for groups in (samplers, devices):
        counts = np.bincount(got // (batch // groups), minlength=groups)
        assert (counts == len(got) // groups).all()


@pytest.mark.parametrize("batch,samplers,devices,fraction,at_least", [
    (128, 32, 1, 0.3, 1),    # 3 of 10: 10 does not divide a sampler's 4 images
    (128, 32, 1, 0.25, 2),   # 1 of 4: one reward per sampler, "sampler" normalization needs 2
    (64, 2, 8, 1 / 16, 1),   # 16 does not divide a device's 8 images
])
def test_rewarded_examples_refuses_what_does_not_divide(batch, samplers, devices, fraction,
                                                        at_least):
    with pytest.raises(ConfigError) as e:
        ola.rewarded_examples(batch, samplers, devices, fraction, at_least=at_least)
    assert "\n" not in str(e.value) and "reward_fraction" in str(e.value)


@pytest.mark.parametrize("value", [0, 1.5, -0.5, True, "half"])
def test_reward_fraction_is_checked_in_one_line(value):
    fields = load_config("digits_ola").to_dict()
    fields["ola"]["reward_fraction"] = value
    with pytest.raises(ConfigError) as e:
        ola.validate(ml_collections.ConfigDict(fields))
    assert str(e.value).startswith(f"config.ola.reward_fraction={value!r} must be")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("devices", [1, 8])
def test_subset_rewards_are_the_full_rewards_restricted(devices):
    """``reward_fraction`` 0.5: the pair computes GAR for every second example only (jvp: each
    device its own, under the whole batch's frozen statistics); its rewards are the
    full batch's rewards at `rewarded_examples`, and its policy update is REINFORCE over those
    examples alone (`reinforce.reward_update` by hand). The layer-wise pair, which replays the
    whole batch and keeps the subset, gives the same."""
    model, mesh, tx, meta_tx, state, images, labels, sample, plain, _ = pair_case(devices)
    policy = state.policy
    key = jax.random.key(3)
    idx = ola.rewarded_examples(B, 2, devices, 0.5)
    assert len(idx) == B // 2
    half = ola.make_pair_core(model, tx, mesh, SPACE, meta_tx, ola.Options(reward_fraction=0.5))
    half_lw = ola.make_pair_core(model, tx, mesh, SPACE, meta_tx, ola.Options(
        reward_fraction=0.5, gar_method="layerwise", gar_convention="frozen"))

    @jax.jit
    def full_rewards(state):  # the whole batch's, step by step as the pair takes them
        g, gar_against, _ = pair_by_hand(model, mesh, tx, state, images, labels, plain, key)
        return gar_against(g)

    full = full_rewards(state)
    want_policy, *_ = reinforce.reward_update(
        meta_tx, policy, state.policy_opt_state, state.reward_stats,
        lambda p: ola_sampler.log_prob(p, jax.tree.map(lambda x: x[idx], sample)), full[idx])

    @jax.jit
    def both(state):
        args = (images, sample, labels, plain, key)
        return half(state, *args), half_lw(state, *args)

    (new, m), (new_lw, m_lw) = both(state)
    np.testing.assert_allclose(m["reward_mean"], np.mean(full[idx]), rtol=1e-10)
    np.testing.assert_allclose(m["reward_std"], np.std(full[idx]), rtol=1e-10)
    assert abs(float(m["reward_mean"]) - float(np.mean(full))) > 1e-6  # not the whole batch's
    for got in (new.policy, new_lw.policy):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12),
                     got, want_policy)
    assert np.abs(new.policy["keep_logits"] - policy["keep_logits"]).max() > 1e-3
    # what the policy was told about each op: the rewarded images only
    ops, active = np.asarray(sample.op_indices)[idx], np.asarray(sample.active)[idx]
    for a, name in enumerate(SPACE.op_names):
        hit = ((ops == a) & active).any(axis=1)
        np.testing.assert_allclose(m[f"op_applied/{name}"], hit.mean(), rtol=1e-12)
        np.testing.assert_allclose(m_lw[f"op_applied/{name}"], hit.mean(), rtol=1e-12)


def test_policy_lr_follows_the_models_schedule():
    """``ola.lr_schedule = "model"``: Adam's step on the policy at update c is ola.learning_rate
    times the model's lr at step 2c over its peak (warm-up, then cosine to 0). With b1 = 0 and a
    constant gradient, Adam's direction is exactly sign(g) (v_hat = g^2), so each update's size
    is the learning rate itself: checked against the schedule written out by hand."""
    from gar_jax.train import optim
    config = load_config("digits_ola")
    config.ola.lr_schedule = "model"
    config.learning_rate, config.warmup_epochs, config.num_epochs = 0.05, 2.0, 5
    steps_per_epoch = 4                                    # 20 model steps, 10 policy updates
    schedule = optim.make_schedule(config, steps_per_epoch)
    tx = ola.meta_optimizer(config, schedule)
    params = {"w": jnp.zeros(3)}
    state = tx.init(params)
    g = {"w": jnp.array([0.3, -2.0, 0.01])}
    sizes = []
    for _ in range(10):
        updates, state = tx.update(g, state, params)
        size = float(jnp.abs(updates["w"][1]))
        np.testing.assert_allclose(updates["w"], np.array([-1, 1, -1]) * size, rtol=1e-4,
                                   atol=1e-8)                # -lr * sign(g), every coordinate
        sizes.append(size)

    def by_hand(c):                                        # model step t = 2c
        t, warmup, total = 2 * c, 8, 20
        if t < warmup:
            return 0.1 * t / warmup
        return 0.1 * 0.5 * (1 + np.cos(np.pi * (t - warmup) / (total - warmup)))
    np.testing.assert_allclose(sizes, [by_hand(c) for c in range(10)], rtol=1e-4, atol=1e-7)
    assert sizes[0] == 0.0 and np.argmax(sizes) == 4 and sizes[4] == pytest.approx(0.1)  # t = 8
    # "constant" (the paper's): every update is ola.learning_rate.
    config.ola.lr_schedule = "constant"
    tx = ola.meta_optimizer(config)
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update(g, state, params)
        np.testing.assert_allclose(np.abs(updates["w"]), 0.1, rtol=1e-4)


def test_policy_lr_schedule_is_checked_in_one_line():
    fields = load_config("digits_ola").to_dict()
    fields["ola"]["lr_schedule"] = "cosine"
    with pytest.raises(ConfigError) as e:
        ola.validate(ml_collections.ConfigDict(fields))
    assert str(e.value) == ("config.ola.lr_schedule='cosine' must be one of "
                            "('constant', 'model')")
    fields["ola"]["lr_schedule"] = "model"
    config = ml_collections.ConfigDict(fields)
    ola.validate(config)
    with pytest.raises(ConfigError, match="needs the model's learning-rate schedule"):
        ola.meta_optimizer(config)       # "model" without the model's schedule


def test_bench_flops_count_convolutions_off_the_cpu(monkeypatch):
    """`bench_ola_cost.compiled_flops` (also bench_gpu's MFU): on the CPU the compiled program's
    count; off it the lowered program's, because the GPU's analysis of the compiled program
    leaves out the convolutions it runs in cuDNN (an H200 counted 20 GFLOP for a 7.3 TFLOP
    step). Checked against the hand count of a convolution's backward pass."""
    bench = _bench_ola_cost()

    def loss(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC")).sum()

    x, w = jnp.ones((4, 8, 8, 3)), jnp.ones((3, 3, 3, 5))
    compiled, seconds, lowered = bench.compile_timed(jax.jit(jax.grad(loss, argnums=1)), x, w)
    by_hand = 2 * 4 * 8 * 8 * 3 * 3 * 3 * 5  # the weight gradient: one conv's multiply-adds x2
    assert seconds > 0
    assert bench.compiled_flops(compiled, lowered) == pytest.approx(by_hand, rel=0.2)

    class GpuLike:  # a compiled program whose analysis lost the convolution
        def cost_analysis(self):
            return [{"flops": 12.0}]

    assert bench.compiled_flops(GpuLike(), lowered) == 12.0  # the CPU: the compiled count
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert bench.compiled_flops(GpuLike(), lowered) == pytest.approx(by_hand, rel=0.2)
    assert bench.compiled_flops(GpuLike()) == 12.0  # no lowered program: the compiled count
