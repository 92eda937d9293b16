"""gar_jax.mixture (the library) and gar_jax.methods.mixture (the engine method).

Every value is checked against an independent computation: chi-square frequencies, exact
enumeration of the REINFORCE expectation, a per-example-gradient loop, numpy transcriptions of
the ODM / DGA update rules, an uninterrupted run.
"""
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats as scipy_stats

from gar_jax import mixture, reinforce
from gar_jax.data import mixture_digits
from gar_jax.errors import ConfigError
from gar_jax.methods import mixture as method
from gar_jax.models import toy
from gar_jax.train import engine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import digits_mixture  # noqa: E402


def small_config(method_name="gar", scenario="noisy", mixture=None, **overrides):
    """A 40-step run of the config's method; `mixture`: fields of the learner's group."""
    c = digits_mixture.get_config(f"{method_name},{scenario}")
    c.update({"num_steps": 40, "steps_per_eval": 20, "checkpoint_every_steps": 20,
              "progress_bar": False, "xla_opt_level": 0, **overrides})
    c.mixture.update(mixture or {})
    return c


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------
def _chi_square_p(counts, probs):
    counts = np.asarray(counts, np.float64)
    return scipy_stats.chisquare(counts, counts.sum() * np.asarray(probs, np.float64)).pvalue


def test_sampled_source_frequencies_match_the_weights():
    probs = np.array([0.5, 0.25, 0.15, 0.07, 0.03])
    mix = mixture.Mixture(num_sources=5, init_probs=tuple(probs))
    state = mix.init()
    np.testing.assert_allclose(mix.probs(state), probs, rtol=1e-6)
    ids = np.asarray(mix.sample(state, jax.random.key(3), 40_000))
    counts = np.bincount(ids, minlength=5)
    assert _chi_square_p(counts, probs) > 1e-3
    # The test has power: the same counts reject a mixture 0.02 away on two sources.
    wrong = probs + np.array([0.02, -0.02, 0, 0, 0])
    assert _chi_square_p(counts, wrong) < 1e-6


def test_device_sources_draw_each_source_uniformly_within_it():
    sizes = [3, 7, 1, 12]
    srcs = [{"x": np.arange(n, dtype=np.int32) + 100 * i, "y": np.full(n, i, np.int32)}
            for i, n in enumerate(sizes)]
    sources = mixture.DeviceSources.create(srcs)
    assert sources.names == ("source_0", "source_1", "source_2", "source_3")
    ids = jnp.asarray(np.repeat(np.arange(4), 6000).astype(np.int32))
    batch = jax.jit(sources.draw)(jax.random.key(0), ids)
    x, y = np.asarray(batch["x"]), np.asarray(batch["y"])
    np.testing.assert_array_equal(y, np.asarray(ids))  # every example from its own source
    for i, n in enumerate(sizes):
        within = x[y == i] - 100 * i
        assert within.min() >= 0 and within.max() < n
        if n > 1:
            assert _chi_square_p(np.bincount(within, minlength=n), np.full(n, 1 / n)) > 1e-3


def test_host_sources_draw_like_a_random_access_source():
    class RandomAccess:  # a tfds.data_source-like object: len() and [i] -> dict
        def __init__(self, i, n):
            self.i, self.n = i, n

        def __len__(self):
            return self.n

        def __getitem__(self, j):
            return {"image": np.full((2, 2), 10 * self.i + j, np.uint8),
                    "label": np.int32(self.i)}

    sources = mixture.HostSources([RandomAccess(0, 4), RandomAccess(1, 2), RandomAccess(2, 9)],
                                  names=["a", "b", "c"])
    ids = np.repeat(np.arange(3), 3000)
    batch = sources.draw(jax.random.key(1), ids)
    assert batch["image"].shape == (9000, 2, 2) and batch["label"].dtype == np.int32
    np.testing.assert_array_equal(batch["label"], ids)
    for i, n in enumerate([4, 2, 9]):
        within = batch["image"][ids == i, 0, 0].astype(int) - 10 * i
        assert _chi_square_p(np.bincount(within, minlength=n), np.full(n, 1 / n)) > 1e-3
    # Device and host sources pick the same examples for the same key.
    dev = mixture.DeviceSources.create([{"v": np.arange(n)} for n in (4, 2, 9)])
    np.testing.assert_array_equal(
        np.asarray(dev.indices(jax.random.key(1), jnp.asarray(ids))) - np.repeat([0, 4, 6], 3000),
        sources.indices(jax.random.key(1), ids))


# --------------------------------------------------------------------------------------------
# REINFORCE
# --------------------------------------------------------------------------------------------
def test_reinforce_gradient_equals_exact_enumeration():
    """E over all K^B choices of the REINFORCE gradient (raw rewards) = −∇_φ E[mean reward]."""
    k, b = 3, 2
    logits = jnp.array([0.3, -0.5, 1.1])
    reward_of = jnp.array([1.0, -2.0, 0.5])  # a deterministic reward per source
    probs = np.asarray(jax.nn.softmax(logits), np.float64)
    expected = np.zeros(k)
    for choice in itertools.product(range(k), repeat=b):
        ids = jnp.asarray(choice, jnp.int32)
        grad = np.asarray(mixture.reinforce_gradient(logits, ids, reward_of[ids]), np.float64)
        # the closed form equals autodiff of the score-function loss
        auto = jax.grad(lambda p: reinforce.score_function_loss(
            jax.nn.log_softmax(p)[ids], reward_of[ids], normalize=False))(logits)
        np.testing.assert_allclose(grad, auto, rtol=1e-5, atol=1e-7)
        expected += np.prod(probs[list(choice)]) * grad
    exact = -np.asarray(jax.grad(lambda p: jnp.sum(jax.nn.softmax(p) * reward_of))(logits))
    np.testing.assert_allclose(expected, exact, rtol=1e-5, atol=1e-7)


def test_update_is_one_adam_step_on_the_normalized_reinforce_gradient():
    mix = mixture.Mixture(num_sources=4, learning_rate=0.1, clip=5.0)
    state = mix.init()
    ids = jnp.array([0, 1, 1, 3, 2, 0], jnp.int32)
    rewards = jnp.array([2.0, -1.0, -3.0, 0.5, 1.0, 4.0])
    r = np.asarray(rewards, np.float64)
    w = (r - r.mean()) / r.std()
    p = np.full(4, 0.25)
    grad = -np.mean(w[:, None] * (np.eye(4)[np.asarray(ids)] - p[None]), axis=0)
    new = jax.jit(mix.update)(state, ids, rewards)
    # Adam's first step moves each logit by -lr * g / (|g| + eps).
    np.testing.assert_allclose(new.logits, -0.1 * grad / (np.abs(grad) + 1e-8), rtol=1e-4,
                               atol=1e-6)
    assert int(new.updates) == 1 and int(new.skipped) == 0


def test_reinforce_over_a_subset_equals_the_hand_formula_and_is_unbiased():
    """Rewards for the first M of B examples: the update is Adam on
    −(1/M) Σ_{n<M} ŵ_n (onehot(c_n) − p), ŵ normalized over those M; and with raw rewards the
    subset's REINFORCE gradient averaged over every M-subset is the whole batch's."""
    mix = mixture.Mixture(num_sources=4, learning_rate=0.1, clip=5.0)
    ids = jnp.array([0, 1, 1, 3, 2, 0, 3, 1], jnp.int32)
    rewards = jnp.array([2.0, -1.0, -3.0, 0.5, 1.0, 4.0, -0.5, 2.5])
    m = 5
    sub = mixture.first_examples({"ids": ids, "rewards": rewards}, m)
    np.testing.assert_array_equal(sub["ids"], ids[:m])
    r = np.asarray(rewards, np.float64)[:m]
    w = (r - r.mean()) / r.std()
    grad = -np.mean(w[:, None] * (np.eye(4)[np.asarray(ids)[:m]] - 0.25), axis=0)
    new = jax.jit(mix.update)(mix.init(), sub["ids"], sub["rewards"])
    np.testing.assert_allclose(new.logits, -0.1 * grad / (np.abs(grad) + 1e-8), rtol=1e-4,
                               atol=1e-6)
    logits = jnp.array([0.2, -0.4, 0.9, 0.0])
    full = np.asarray(mixture.reinforce_gradient(logits, ids, rewards), np.float64)
    subsets = list(itertools.combinations(range(len(ids)), m))
    mean = sum(np.asarray(mixture.reinforce_gradient(logits, ids[np.array(s)], rewards[np.array(s)]),
                          np.float64) for s in subsets) / len(subsets)
    np.testing.assert_allclose(mean, full, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------
# Rewards
# --------------------------------------------------------------------------------------------
def _net_and_batch(net="fc", b=6, seed=0):
    model = toy.create(net, 10)
    key = jax.random.key(seed)
    images = jax.random.normal(key, (b, 8, 8, 1))
    labels = jax.random.randint(jax.random.fold_in(key, 1), (b,), 0, 10)
    v = model.init(jax.random.fold_in(key, 2), images[:1], train=False)
    return model, v["params"], {"image": images, "label": labels}


def test_per_example_rewards_equal_a_per_example_gradient_loop():
    model, params, batch = _net_and_batch()
    direction = jax.tree.map(lambda p: jax.random.normal(jax.random.key(7), p.shape), params)

    def losses(p, bt):
        return optax.softmax_cross_entropy_with_integer_labels(
            model.apply({"params": p}, bt["image"], train=False), bt["label"])

    loop = []
    for n in range(6):
        one = {k: v[n:n + 1] for k, v in batch.items()}
        g = jax.grad(lambda p: losses(p, one)[0])(params)
        loop.append(sum(float(jnp.sum(a * d)) for a, d in
                        zip(jax.tree.leaves(g), jax.tree.leaves(direction))))
    for how in ("jvp", "vmap"):
        got = mixture.example_rewards(losses, params, batch, direction, method=how)
        np.testing.assert_allclose(got, loop, rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("gar_method", ["jvp", "layerwise"])
def test_engine_rewards_equal_the_loop(gar_method):
    """The method's alignment (frozen BatchNorm on FCBN, layer-wise or jvp) = the loop."""
    model, params, batch = _net_and_batch("fcbn")
    config = small_config(net="fcbn", mixture={"gar_method": gar_method})
    r = method.Runner(config, mixture_digits.build("noisy"))
    v = r.model.init(jax.random.key(2), batch["image"][:1], train=False)
    params, stats = v["params"], v["batch_stats"]
    direction = jax.tree.map(lambda p: jax.random.normal(jax.random.key(5), p.shape), params)
    got = r._alignment(params, stats, batch, direction)
    # Reference: per-example gradients with the batch's BatchNorm statistics held fixed.
    from gar_jax import batchnorm
    per_example = batchnorm.frozen_bn_loss_fn(model, {"params": params, "batch_stats": stats},
                                              batch, method._example_loss, train=True)
    ref = mixture.example_rewards(per_example, params, batch, direction, method="vmap")
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("gar_method", ["jvp", "layerwise"])
def test_subset_rewards_are_the_full_rewards_restricted(gar_method):
    """reward_examples = M: the method's rewards for batch t (the first M examples; the
    layer-wise tape's rows taken by `mixture.first_examples`) equal the whole batch's per-example
    rewards (a per-example-gradient reference, frozen BatchNorm) restricted to those M, and one
    call's mixture update is `Mixture.update` on them."""
    config = small_config(net="fcbn", mixture={"gar_method": gar_method,
                                                             "reward_examples": 5})
    r = method.Runner(config, mixture_digits.build("noisy"))
    state = r.initial_state(3)
    b, m = config.batch_size, 5
    # The call, reproduced step by step: its keys, batches, steps.
    keys = jax.random.split(jax.random.fold_in(state.rng, state.step), config.mixture.reward_every + 1)
    logp = r.log_probs(state.learner)
    ids_t, batch_t = r._draw(keys[0], logp, b)
    params_n, stats_n, opt_n, *_ = r._sgd(state.params, state.batch_stats, state.opt_state,
                                          batch_t)
    _, batch_n = r._draw(keys[1], logp, b)
    grad_n = r._sgd(params_n, stats_n, opt_n, batch_n)[-1]
    from gar_jax import batchnorm
    per_example = batchnorm.frozen_bn_loss_fn(
        r.model, {"params": state.params, "batch_stats": state.batch_stats}, batch_t,
        method._example_loss, train=True)
    full = mixture.example_rewards(per_example, state.params, batch_t, grad_n, method="vmap")
    if gar_method == "layerwise":
        captured = r._sgd_capture(state.params, state.batch_stats, state.opt_state, batch_t)
        tape = mixture.first_examples(captured[-1], m)
        got = method.gar_layerwise.alignment_from_tape(
            r.model, {"params": state.params, "batch_stats": state.batch_stats}, tape, grad_n,
            batch_t["image"][:m], train=True)
    else:
        got = r._alignment(state.params, state.batch_stats,
                           mixture.first_examples(batch_t, m), grad_n, stats_batch=batch_t)
    assert got.shape == (m,)
    np.testing.assert_allclose(got, full[:m], rtol=2e-4, atol=1e-5)
    want = r.mix.update(state.learner, ids_t[:m], full[:m])
    new, _ = r.call(state)  # donates `state`
    # Sources absent from the M examples have a zero REINFORCE gradient up to rounding (the
    # normalized weights sum to 0), which Adam's first step, -lr g / (|g| + eps), amplifies:
    # compared on the sources present.
    present = np.unique(np.asarray(ids_t[:m]))
    np.testing.assert_allclose(np.asarray(new.learner.logits)[present],
                               np.asarray(want.logits)[present], rtol=1e-4, atol=1e-6)
    assert np.abs(np.asarray(want.logits)[present]).min() > 0.5 * config.mixture.learning_rate
    assert int(new.learner.updates) == 1


def test_per_source_mean():
    means, counts = mixture.per_source_mean(jnp.array([1.0, 2.0, 4.0, 8.0]),
                                            jnp.array([2, 0, 2, 2]), 4)
    np.testing.assert_allclose(means, [2.0, 0.0, 13 / 3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(counts, [1, 0, 3, 0])


# --------------------------------------------------------------------------------------------
# Baselines' update rules, by hand
# --------------------------------------------------------------------------------------------
def test_odm_updates_equal_a_hand_computation():
    k = 3
    state = mixture.odm_init(k)
    rng = np.random.default_rng(0)
    # Six updates: the exploration rate falls below 1/K from t = 4 on (sqrt(ln 3 / 3t) < 1/3).
    batches = [(rng.integers(0, k, 8), rng.uniform(0.1, 3.0, 8)) for _ in range(6)]
    est, probs, eps = np.zeros(k), np.full(k, 1 / k), 1 / k
    for t, (ids, losses) in enumerate(batches, start=1):
        state = mixture.odm_update(state, jnp.asarray(ids), jnp.asarray(losses),
                                   reward_scale=0.1, decay=1.0)
        # Hand: importance-weighted mean loss of each drawn source, cumulative EXP3.
        r_hat = np.array([0.1 * losses[ids == i].sum() / len(ids) / probs[i] for i in range(k)])
        est = est + r_hat
        new_eps = min(1 / k, np.sqrt(np.log(k) / (k * t)))
        soft = np.exp(eps * est) / np.exp(eps * est).sum()
        probs = (1 - k * new_eps) * soft + new_eps
        eps = new_eps
        np.testing.assert_allclose(state.estimates, est, rtol=1e-5)
        np.testing.assert_allclose(state.probs, probs, rtol=1e-5)
        np.testing.assert_allclose(float(state.eps), eps, rtol=1e-6)
    assert abs(float(jnp.sum(state.probs)) - 1) < 1e-6


def test_dga_updates_equal_a_hand_computation():
    state = mixture.dga_init(4)
    alpha, ema = np.full(4, 0.25), np.full(4, 0.25)
    for a in ([0.5, -1.0, 2.0, 0.0], [1.0, 1.0, -3.0, 0.2]):
        state = mixture.dga_update(state, jnp.asarray(a), learning_rate=0.7, ema=0.9)
        alpha = alpha * np.exp(0.7 * np.asarray(a))
        alpha /= alpha.sum()
        ema = 0.9 * ema + 0.1 * alpha
        np.testing.assert_allclose(state.alpha, alpha, rtol=1e-5)
        np.testing.assert_allclose(state.ema, ema, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# The engine method: resume, results, bad input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method_name", ["gar", "odm"])
def test_killed_run_resumes_to_identical_weights(tmp_path, method_name):
    config = small_config(method_name)
    full = method.run(config, str(tmp_path / "full"))

    k = config.mixture.reward_every
    stop = -(-22 // k) * k  # the first call boundary from step 22 (not a checkpoint step)

    def sigterm(step, state):
        if step == stop:
            os.kill(os.getpid(), signal.SIGTERM)

    workdir = str(tmp_path / "stopped")
    with pytest.raises(engine.Preempted, match=f"at step {stop}"):
        engine.train(config, workdir, None, method.method_for(config), on_step=[sigterm])
    resumed = method.run(config, workdir)
    assert resumed["learned_mixture"] == full["learned_mixture"]
    assert resumed["test_accuracy"] == full["test_accuracy"]
    learned = full["learned_mixture"]
    assert set(learned["weights"]) == set(mixture_digits.SOURCE_NAMES)
    assert abs(sum(learned["weights"].values()) - 1) < 1e-4
    assert learned["harmful_sources"] == ["random_labels", "label_noise_50", "corrupted"]
    assert np.asarray(learned["weights_over_training"]).shape == (40 // k, 8)
    assert os.path.exists(tmp_path / "full" / "mixture_over_training.png")


def test_fixed_mixtures():
    data = mixture_digits.build("noisy")
    sizes = np.array([len(s["label"]) for s in data["sources"].values()])
    for name, want in (("uniform", np.full(8, 1 / 8)), ("proportional", sizes / sizes.sum()),
                       ("oracle", np.array([1, 1, 1, 0, 0, 0, 0, 0]) / 3)):
        r = method.Runner(small_config(name), data)
        state = r.initial_state(0)
        np.testing.assert_allclose(r.final_weights(state), want, atol=1e-7)
        # The oracle's zero weights are not -inf logits in the state (the engine refuses to
        # checkpoint a non-finite state as diverged).
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state)
                   if jnp.issubdtype(x.dtype, jnp.inexact))


def test_benchmark_data_is_what_it_says():
    noisy, target = mixture_digits.build("noisy"), mixture_digits.build("target")
    src = noisy["sources"]
    assert [len(s["label"]) for s in src.values()] == [220, 220, 220, 200, 200, 150, 40, 150]
    assert len(np.unique(src["duplicates"]["image"].reshape(40, -1), axis=0)) == 5
    clean = src["clean_a"]
    # the shifted source is inverted digits, the target scenario's test set too
    assert abs(src["shifted"]["image"].mean() - (255 - clean["image"].mean())) < 10
    assert clean["image"].mean() < 100
    np.testing.assert_array_equal(target["test"]["image"], 255 - noisy["test"]["image"])
    np.testing.assert_array_equal(target["test"]["label"], noisy["test"]["label"])
    assert target["good"] == ["shifted"] and noisy["good"] == ["clean_a", "clean_b", "clean_c"]


def _one_line_error(fn, match):
    with pytest.raises(ConfigError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


def test_bad_input_gets_one_line_errors():
    one = {"image": np.zeros((3, 2, 2), np.uint8), "label": np.zeros(3, np.int32)}
    _one_line_error(lambda: mixture.Mixture(num_sources=1), "at least 2 sources")
    _one_line_error(lambda: mixture.DeviceSources.create([one]), "at least 2 sources")
    empty = {"image": np.zeros((0, 2, 2), np.uint8), "label": np.zeros(0, np.int32)}
    _one_line_error(lambda: mixture.DeviceSources.create({"a": one, "b": empty}),
                    "source 'b' is empty")
    _one_line_error(lambda: mixture.HostSources([[one], []]), "is empty")
    other = {"image": np.zeros((3, 3, 2), np.uint8), "label": np.zeros(3, np.int32)}
    _one_line_error(lambda: mixture.DeviceSources.create({"a": one, "b": other}),
                    r"source 'b' has fields .*\(3, 2\).* but source 'a' has")
    _one_line_error(lambda: mixture.HostSources({"a": [one], "b": [other]}),
                    "source 'b' has fields")
    mix = mixture.Mixture(num_sources=3)
    _one_line_error(lambda: mix.update(mix.init(), jnp.array([0, 1]),
                                       jnp.array([1.0, jnp.nan])), "1 of 2 rewards are NaN")
    # Inside jit the update is skipped, and counted.
    skipped = jax.jit(mix.update)(mix.init(), jnp.array([0, 1]), jnp.array([1.0, jnp.nan]))
    np.testing.assert_array_equal(skipped.logits, mix.init().logits)
    assert int(skipped.skipped) == 1 and int(skipped.updates) == 0
    _one_line_error(lambda: method.validate(small_config(method="exp3")), "config.method='exp3'")
    _one_line_error(lambda: method.validate(small_config(mixture={"reward_every": 1})),
                    "mixture.reward_every")
    _one_line_error(lambda: method.validate(small_config(num_steps=41)), "multiples of")
    for bad in (1, 65, -2):
        _one_line_error(lambda: method.validate(small_config(mixture={"reward_examples": bad})),
                        f"config.mixture.reward_examples={bad} must be 0")


def test_cli_bad_method_exits_2_with_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "gar_jax.main", f"--config={REPO}/configs/digits_mixture.py",
         f"--workdir={tmp_path}/run", "--config.method=bogus"],
        capture_output=True, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("gar_jax: error: config.method='bogus'")


# --------------------------------------------------------------------------------------------
# The README example and the notebook
# --------------------------------------------------------------------------------------------
def readme_example() -> str:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("### GAR in your own training loop", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_and_suppresses_the_random_label_source():
    code = readme_example()
    assert 30 <= len(code.strip().splitlines()) <= 50
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": REPO,
                                        "JAX_PLATFORMS": "cpu"}, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    weights = eval(out.stdout.strip().splitlines()[-1])  # the printed {source: probability}
    assert set(weights) == {"a", "b", "c", "random"}
    assert weights["random"] < 0.05 and abs(sum(weights.values()) - 1) < 0.01


def test_notebook_runs_offline_inside_a_clone(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    clone = tmp_path / "clone"
    for part in ("gar_jax", "configs", "notebooks"):
        shutil.copytree(os.path.join(REPO, part), clone / part,
                        ignore=shutil.ignore_patterns("__pycache__", "*_run"))
    for part in ("setup.py", "README.md"):
        shutil.copy(os.path.join(REPO, part), clone / part)
    nb = nbformat.read(clone / "notebooks" / "mixture.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert readme_example().strip() in code  # the notebook runs the README's example
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    params.source = 'METHODS = ["gar", "uniform"]\nSTEPS = 40\nWORKDIR = "mixture_run"\n'
    monkeypatch.delenv("PYTHONPATH", raising=False)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(clone / "notebooks")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    weights = eval(re.search(r"(\{'a': .*?\})", text).group(1))
    assert weights["random"] < 0.05
    assert any("image/png" in o.get("data", {}) for o in outputs)
    with open(clone / "notebooks" / "mixture_run" / "gar" / "results.json") as f:
        learned = json.load(f)["learned_mixture"]
    every = digits_mixture.get_config("gar").mixture.reward_every  # 4: one point per call
    assert learned["history_every_steps"] == every
    assert len(learned["weights_over_training"]) == 40 // every
