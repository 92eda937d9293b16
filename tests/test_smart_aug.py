"""smart_augmentation: the meta-gradient equals finite differences (float64, K = 1 and 2), memory
does not grow, ops land on the images whose weights are used, same key -> same batch, the
replayed policy, bad configs."""
import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gar_jax.augment import ops, smart_augment, spaces
from gar_jax.data import sources
from gar_jax.errors import ConfigError
from gar_jax.methods import smart_aug
from gar_jax.train import optim
from gar_jax.mesh import make_mesh, replicated
from gar_jax.train.state import TrainState

import config_files

# Differentiable ops with magnitudes (geometric and colour), ops without (identity, flip) and a
# LUT op whose magnitude gets no gradient (solarize).
FD_SPACE = spaces.SearchSpace("fd", tuple(
    op for op in spaces.RANDAUG.ops
    if op.name in ("identity", "rotate", "solarize", "contrast", "brightness", "shear_x",
                   "translate_y")) + (spaces.Op("flip_lr"),))


class TinyNet(nn.Module):
    """Conv 3x3 (2 channels) -> BatchNorm -> ReLU -> Dense(10), in ``dtype``."""
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, images, train: bool):
        kw = dict(dtype=self.dtype, param_dtype=self.dtype)
        x = images.astype(self.dtype) / 255.0
        x = nn.Conv(2, (3, 3), use_bias=False, **kw)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, **kw)(x)
        x = nn.relu(x).reshape((x.shape[0], -1))
        return nn.Dense(10, **kw)(x)


def _config(**smart_overrides):
    c = config_files.load("digits_smart_aug")
    c.grad_clip_norm = 10.0    # inner: lr 0.1, momentum 0.9, wd 5e-4; a clip that rarely binds
    c.learning_rate, c.warmup_epochs, c.num_epochs = 0.1, 0.0, 2
    for k, v in smart_overrides.items():
        c.smart_aug[k] = v
    return c


@pytest.fixture(scope="module")
def digits():
    data = sources.load("digits", "train")
    return data["image"][:48], data["label"][:48]


def _model_state(model, tx, image, dtype):
    variables = model.init(jax.random.PRNGKey(1), jnp.zeros((1,) + image.shape[1:], dtype), False)
    params = variables["params"]
    return params, variables["batch_stats"], tx.init(params)


@pytest.mark.parametrize("k", [1, 2])
def test_meta_gradient_equals_finite_differences(digits, k):
    images, labels = digits
    config = _config(inner_steps=k)
    opts = smart_aug.options(config)
    mesh = make_mesh(jax.devices()[:1])
    with jax.enable_x64(True):
        model = TinyNet(dtype=jnp.float64)
        tx, _ = optim.make_optimizer(config, steps_per_epoch=10)
        model_state = _model_state(model, tx, images, jnp.float64)
        # Not the initial values: distinct logits (non-trivial weights) and magnitudes.
        aug = {"prob": jnp.asarray(np.linspace(0.5, 2.0, len(FD_SPACE))),
               "mag": jnp.asarray(np.linspace(0.3, 0.8, len(FD_SPACE)))}
        inner = []
        for s in range(k):
            key = jax.random.PRNGKey(10 + s)
            drawn = smart_augment.sample(aug, key, 16, 3, 8, 8)
            sl = slice(16 * s, 16 * s + 16)
            inner.append((jnp.asarray(images[sl]), jnp.asarray(labels[sl]), drawn, key))
        heldout = (jnp.asarray(images[32:48]), jnp.asarray(labels[32:48]), jax.random.PRNGKey(3))
        loss = smart_aug.make_unrolled_loss(model, tx, mesh, FD_SPACE, opts)
        value = jax.jit(lambda a: loss(a, model_state, tuple(inner), heldout)[0])
        grads = jax.jit(jax.grad(lambda a: loss(a, model_state, tuple(inner), heldout)[0]))(aug)
        eps = 1e-6
        names = FD_SPACE.op_names
        checked = 0
        for leaf in ("mag", "prob"):
            for i, name in enumerate(names):
                e = jnp.zeros(len(names)).at[i].set(eps)
                plus = {**aug, leaf: aug[leaf] + e}
                minus = {**aug, leaf: aug[leaf] - e}
                fd = (value(plus) - value(minus)) / (2 * eps)
                np.testing.assert_allclose(grads[leaf][i], fd, rtol=2e-4, atol=1e-9,
                                           err_msg=f"{leaf}/{name}, K={k}")
                checked += abs(float(fd)) > 1e-7
        # Magnitude-free ops and solarize get nothing; the rest (and every logit) do.
        for name in ("identity", "flip_lr", "solarize"):
            assert grads["mag"][names.index(name)] == 0
        assert checked >= 12


def _reference_augment(space, params, images, drawn):
    """Per image, per slot, in order: the op by `ops.apply` (bilinear where differentiable) at
    the magnitude of the space's level rule at level 30 * mag; weights by hand."""
    images = np.asarray(images, np.float32)
    op_indices, negate, center = map(np.asarray, drawn)
    mag = np.asarray(params["mag"], np.float64)
    learn = smart_augment.learnable_magnitude(space)
    out = images.copy()
    b, n = op_indices.shape
    for slot in range(n):
        entering = out.copy()
        for i in range(b):
            o = op_indices[i, slot]
            op = space.ops[o]
            level = mag[o] * (space.num_levels - 1)
            m = None
            if op.level is not None:
                rule = dataclasses.replace(op.level, integer=False) if learn[o] else op.level
                m = rule(level) * (-1 if op.signed and negate[i, slot] else 1)
            x = entering[i]
            if op.name == "solarize":
                y = np.where(x >= m, 255 - x, x)
            elif op.name == "invert":
                y = 255 - x
            elif op.name in ops.DIFFERENTIABLE_OPS:
                y = ops.apply(op.name, x, m, other=entering[i - 1], mode="bilinear")
            elif op.name == "cutout":
                y = ops.apply("cutout", np.rint(x).astype(np.uint8), m,
                              center=tuple(center[i, slot]))
            else:
                y = ops.apply(op.name, np.rint(np.clip(x, 0, 255)).astype(np.uint8), m)
            out[i] = np.asarray(y, np.float32)
    raw = np.asarray(params["prob"])[op_indices].mean(axis=1)
    return out, raw / raw.mean()


def test_ops_apply_to_the_images_whose_weights_are_used(digits):
    space = spaces.with_destructive_op(spaces.RANDAUG)   # every op kind, and the pairing
    images = jnp.asarray(np.concatenate([digits[0][:12]] * 1))
    rng = np.random.default_rng(0)
    params = {"prob": jnp.asarray(rng.uniform(0.2, 3.0, len(space)), jnp.float32),
              "mag": jnp.asarray(rng.uniform(0.05, 1.0, len(space)), jnp.float32)}
    drawn = smart_augment.sample(params, jax.random.PRNGKey(4), 12, 3, 8, 8)
    # Every op at least once across the batch: override the draws with a permutation.
    perm = rng.permutation(np.resize(np.arange(len(space)), 36)).reshape(12, 3)
    drawn = drawn._replace(op_indices=jnp.asarray(perm, jnp.int32))
    out, weights = jax.jit(lambda p, x, d: smart_augment.augment(p, space, x, d))(params, images, drawn)
    want, want_w = _reference_augment(space, params, images, drawn)
    np.testing.assert_allclose(np.asarray(weights), want_w, rtol=1e-6)
    # Pillow-valued ops round; the bilinear ones differ by float32 rounding only.
    np.testing.assert_allclose(np.asarray(out), want, atol=2e-3)
    assert np.abs(np.asarray(out) - np.asarray(images, np.float32)).max() > 50


def test_weights_are_shifted_non_negative_with_mean_one():
    params = {"prob": jnp.asarray([-2.0, 1.0, 3.0]), "mag": jnp.full(3, 0.5)}
    w = smart_augment.loss_weights(params, jnp.asarray([[0, 0], [1, 2], [0, 2]]))
    raw = np.array([-2.0, 2.0, 0.5])
    np.testing.assert_allclose(w, (raw + 2) / np.mean(raw + 2), rtol=1e-6)


@pytest.fixture(scope="module")
def meta_run(digits):
    """The jitted meta step on 8 devices (tiny net), traced at most once in this module."""
    config = _config(ops="identity,rotate,contrast,solarize")
    space = smart_aug.make_space(config)
    mesh = make_mesh()
    model = TinyNet()
    tx, schedule = optim.make_optimizer(config, steps_per_epoch=50)
    params, stats, opt_state = _model_state(model, tx, digits[0], jnp.float32)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
                       opt_state=opt_state, rng=jax.random.PRNGKey(0))
    state = jax.device_put(smart_aug.init_state(state, config, space), replicated(mesh))
    pure = smart_aug.make_meta_step(model, tx, mesh, space, smart_aug.meta_optimizer(config),
                                    smart_aug.options(config), schedule=schedule, jit=False)
    step = jax.jit(chex.assert_max_traces(pure, n=1), donate_argnums=0,
                   out_shardings=replicated(mesh))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))

    def batch(lo):
        return jax.device_put({"image": digits[0][lo:lo + 16], "label": digits[1][lo:lo + 16]},
                              sharding)

    def reference(s, batches, held):
        """One meta step from its parts, the meta update written out by hand: the unrolled
        loss's meta-gradient (checked against finite differences above), clipped at global norm
        meta_clip, Adam (lr 1e-2, 0.9, 0.999, 1e-8) from the state's moments, clamped; the model
        state is the unrolled loss's aux (the real update)."""
        opts = smart_aug.options(config)
        loss = smart_aug.make_unrolled_loss(model, tx, mesh, space, opts)
        inner = smart_aug.draw_inputs(s, batches, space, opts, None)
        held_key = jax.random.fold_in(smart_aug.steps.step_key(s.rng, s.step), 1 << 30)
        (_, (model_state, _)), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(
            s.aug_params, (s.params, s.batch_stats, s.opt_state), inner,
            (held["image"], held["label"], held_key))
        g = jax.tree.map(lambda v: np.asarray(v, np.float64), g)
        norm = np.sqrt(sum(np.sum(v ** 2) for v in g.values()))
        g = {k: v * min(1.0, config.smart_aug.meta_clip / norm) for k, v in g.items()}
        adam = s.aug_opt_state[-1][0]  # chain(clip, adam): adam = (ScaleByAdamState, ...)
        t = int(adam.count) + 1
        new = {}
        for k in g:
            mu = 0.9 * np.asarray(adam.mu[k], np.float64) + 0.1 * g[k]
            nu = 0.999 * np.asarray(adam.nu[k], np.float64) + 0.001 * g[k] ** 2
            update = -1e-2 * (mu / (1 - 0.9 ** t)) / (np.sqrt(nu / (1 - 0.999 ** t)) + 1e-8)
            new[k] = (np.asarray(s.aug_params[k], np.float64) + update).astype(np.float32)
        return jax.device_get(smart_augment.clamp(new, space)), jax.device_get(model_state), norm

    return step, state, batch, space, reference


def test_memory_is_constant_over_training(meta_run):
    """100 meta steps: compiled memory and live arrays do not grow, and the 50th step (a long
    way into the donated loop) trains what it should: its new policy and model equal
    `reference`'s."""
    step, state, batch, space, reference = meta_run
    state = jax.tree.map(jnp.copy, state)  # the step donates it; other tests use the fixture's
    held = batch(32)
    args = lambda s: (s, (batch(0),), held)
    memory = lambda s: step.lower(*args(s)).compile().memory_analysis()
    state, metrics = step(*args(state))
    jax.block_until_ready(state)
    first = memory(state)
    live = {}
    for t in range(1, 100):
        if t == 50:
            expected_policy, expected_model, meta_norm = reference(
                jax.tree.map(jnp.copy, state), (batch(16 * (t % 2)),), held)
        state, metrics = step(state, (batch(16 * (t % 2)),), held)
        if t == 50:
            assert meta_norm > 0 and float(metrics["meta_grad_norm"]) == pytest.approx(
                meta_norm, rel=1e-4)
            for k in ("prob", "mag"):
                np.testing.assert_allclose(state.aug_params[k], expected_policy[k], rtol=1e-5,
                                           atol=1e-6, err_msg=k)
            chex.assert_trees_all_close(state.params, expected_model[0], rtol=1e-5, atol=1e-6)
            chex.assert_trees_all_close(state.batch_stats, expected_model[1], rtol=1e-5,
                                        atol=1e-6)
            del expected_policy, expected_model
        if t + 1 in (10, 100):
            jax.block_until_ready(state)
            live[t + 1] = len(jax.live_arrays())
    assert int(state.step) == 100
    last = memory(state)
    for field in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes"):
        assert getattr(first, field) == getattr(last, field), field
    # Nothing accumulates: as many device arrays after 100 steps as after 10.
    assert live[100] == live[10], live
    # The policy moved (the meta step does something) and stays in range.
    mag = np.asarray(state.aug_params["mag"])
    assert np.all((mag >= smart_augment.MAG_MIN) & (mag <= smart_augment.MAG_MAX))
    assert np.abs(mag - 0.5).max() > 0.05 and np.isfinite(float(metrics["loss"]))


def test_same_key_same_batch(meta_run):
    _, state, batch, space, _ = meta_run
    opts = smart_aug.options(_config(ops="identity,rotate,contrast,solarize"))
    draw = jax.jit(lambda s, b: smart_aug.draw_inputs(s, b, space, opts, None))
    apply = jax.jit(lambda p, x, d: smart_augment.augment(p, space, x, d))
    state = jax.tree.map(jnp.copy, state)
    outs = []
    for step in (5, 5, 6):
        (clean, _, drawn, _), = draw(state.replace(step=jnp.int32(step)), (batch(0),))
        outs.append(np.asarray(apply(state.aug_params, clean, drawn)[0]))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.abs(outs[0] - outs[2]).max() > 1


def test_policy_json_replays_as_a_fixed_policy(tmp_path):
    space = spaces.with_destructive_op(spaces.RANDAUG)
    params = {"prob": jnp.asarray(np.linspace(-1, 3, len(space)), jnp.float32),
              "mag": jnp.asarray(np.linspace(0.01, 1, len(space)), jnp.float32)}
    policy = smart_augment.to_json(params, space, "randaug", 3)
    p = np.exp(0.5 * np.linspace(-1, 3, len(space)))
    p /= p.sum()
    np.testing.assert_allclose(policy["distribution"], p, rtol=1e-5)
    np.testing.assert_allclose(list(policy["op_probability"].values()), 1 - (1 - p) ** 3,
                               rtol=1e-5)
    path = tmp_path / "policy.json"
    path.write_text(__import__("json").dumps(policy))
    from gar_jax.augment import policies
    fixed = policies.get_policy("smart_aug", path=str(path))
    op_indices, levels, active = jax.jit(fixed.sample, static_argnums=1)(
        jax.random.PRNGKey(0), 4000)
    counts = np.bincount(np.asarray(op_indices).ravel(), minlength=len(space))
    expected = p * op_indices.size
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 40, chi2   # 14 degrees of freedom: p < 1e-3 above ~36
    want_levels = np.rint(np.linspace(0.01, 1, len(space)) * 30).astype(int)
    np.testing.assert_array_equal(np.asarray(levels), want_levels[np.asarray(op_indices)])
    assert np.asarray(active).all()
    out = fixed(jax.random.PRNGKey(1), jnp.zeros((4, 8, 8, 1), jnp.uint8) + 100)
    assert out.shape == (4, 8, 8, 1) and out.dtype == jnp.uint8


@pytest.mark.parametrize("overrides,message", [
    ({"inner_steps": 0}, "inner_steps=0"),
    ({"num_ops": 0}, "num_ops=0"),
    ({"num_ops": 15}, "num_ops=15"),
    ({"ops": "rotate,bogus"}, "unknown op(s) ['bogus']"),
    ({"heldout_fraction": 1.0}, "heldout_fraction"),
])
def test_bad_config_one_line_error(overrides, message):
    with pytest.raises(ConfigError) as err:
        smart_aug.validate(_config(**overrides))
    assert message in str(err.value) and "\n" not in str(err.value)
