"""Fast AutoAugment: op semantics vs Pillow, policy files, replay statistics, the search."""
import dataclasses
import json

import numpy as np
import pytest
import jax
import jax.numpy as jnp
from PIL import Image
from scipy import stats

from gar_jax.augment import faa_policy
from gar_jax.augment import pil_reference
from gar_jax.errors import ConfigError

LEVELS = (0.0, 0.13, 0.5, 0.77, 1.0)


@pytest.mark.parametrize("shape", [(32, 32, 3), (8, 8, 1)])
def test_every_op_at_several_levels_equals_pillow(shape):
    """One sub-policy per (op, level); each image gets one fired step; Pillow per image."""
    policy = [[(op, 1.0, lv)] for op in faa_policy.ALL_OPS for lv in LEVELS]
    n = len(policy)
    h, w, c = shape
    rng = np.random.RandomState(0)
    # Smooth-ish images with structure (so that warps, cutouts and histograms all matter).
    images = rng.randint(0, 256, (n, h, w, c)).astype(np.uint8)
    images[: n // 2] = (images[: n // 2] // 64) * 64 + 10
    negate = rng.rand(n, 1) < 0.5
    centre = rng.rand(n, 1, 2).astype(np.float32)
    pol = faa_policy.FaaPolicy(policy)
    draws = {"sub": jnp.arange(n), "fire": jnp.ones((n, 1), bool), "negate": jnp.asarray(negate),
             "centre": jnp.asarray(centre)}
    out = np.asarray(faa_policy.apply_draws(pol.device_tables(h, w), pol.names, jnp.asarray(images),
                                     draws))

    def pil(a):
        return Image.fromarray(a[..., 0] if c == 1 else a)

    for i, ((op, _, level),) in enumerate(policy):
        ref = np.asarray(pil_reference.faa_apply(
            op, pil(images[i]), level, negate=bool(negate[i, 0]), centre=centre[i, 0],
            other=pil(images[i - 1])))
        ref = ref[..., None] if c == 1 else ref
        np.testing.assert_array_equal(out[i], ref, err_msg=f"{op} level {level} "
                                      f"negate {negate[i, 0]} centre {centre[i, 0]}")


def test_cutout_centre_is_numpys_reading_of_faas_uniform_call():
    """FAA's ``np.random.uniform(w)`` is numpy's uniform(low=w, high=1.0): w + (1 - w) u on
    (1, w] (checked against numpy itself); cutout_box and the Pillow reference place the hole
    from that centre, never from u * w."""
    for w in (8, 32):
        rs_a, rs_b = np.random.RandomState(5), np.random.RandomState(5)
        drawn = np.array([rs_a.uniform(w) for _ in range(2000)])
        u = rs_b.random_sample(2000)
        np.testing.assert_allclose(drawn, w + (1 - w) * u, rtol=1e-12)
        assert drawn.min() > 1 and drawn.max() <= w
    # Corners by hand, side v = 4.8 px (level 0.6 on 40 px... here 8 px: v = 0.2 * 8 * 0.6).
    v = 0.2 * 8 * 0.6
    for u, corner in ((0.0, int(8 - v / 2)), (0.5, int(8 - 7 * 0.5 - v / 2)), (0.999, 0)):
        side, top, left = (int(a) for a in faa_policy.cutout_box(v, jnp.asarray([u, u]), 8, 8))
        assert (top, left, side) == (corner, corner, int(v) + 1), u
        ref = np.asarray(pil_reference.faa_apply("Cutout", Image.new("L", (8, 8), 200), 0.6,
                                                 centre=(u, u)))
        hole = np.argwhere(ref != 200)
        assert tuple(hole.min(0)) == (corner, corner), u


# ---- Policies as data ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["fa_reduced_cifar10", "fa_resnet50_rimagenet", "fa_reduced_svhn"])
def test_published_policy_replay_op_frequencies_chi_square(name):
    """Sampled draws of a published policy: per step slot, the op (or no op) of 100k images is
    multinomial with the probabilities of the sub-policy table; and op_probability (P(image
    gets op)) matches the Monte-Carlo frequency."""
    pol = faa_policy.fast_autoaugment(name)
    assert len(pol.policy) == {"fa_reduced_cifar10": 493, "fa_resnet50_rimagenet": 498,
                               "fa_reduced_svhn": 497}[name]
    n = 100_000
    draws = jax.device_get(pol.sample(jax.random.PRNGKey(1), n))
    ops = list(faa_policy.FAA_OPS)
    op_index = np.array([[ops.index(o) for o, _, _ in sub] for sub in pol.policy])
    prob = np.array([[p for _, p, _ in sub] for sub in pol.policy])
    s = len(pol.policy)
    fired_op = np.where(draws["fire"], op_index[draws["sub"]], len(ops))  # [n, K]; 15 = none
    for k in range(2):
        expected = np.bincount(op_index[:, k], weights=prob[:, k], minlength=len(ops)) / s
        expected = np.append(expected, 1 - expected.sum()) * n
        observed = np.bincount(fired_op[:, k], minlength=len(ops) + 1)
        assert stats.chisquare(observed, expected).pvalue > 1e-4
    table = faa_policy.op_probability(pol.policy)
    for i, o in enumerate(ops):
        freq = np.mean(np.any(fired_op == i, axis=1))
        p = table[faa_policy.OP_NAME[o]]
        assert abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-9, o


def test_policy_json_round_trip_and_bad_files(tmp_path):
    pol = faa_policy.resolve("fa_reduced_svhn")
    path = str(tmp_path / "p.json")
    faa_policy.save(path, {"mine": pol, "other": pol[:3]}, source="test")
    assert faa_policy.load(path, "mine") == pol
    assert faa_policy.resolve(f"{path}:other") == pol[:3]
    with pytest.raises(ConfigError, match="holds 2 policies"):
        faa_policy.load(path)
    bad = str(tmp_path / "bad.json")
    faa_policy.save(bad, {"x": [[("Rotate", 0.5, 0.5), ("Rotate", 0.5, 0.5)]]}, source="t")
    data = json.load(open(bad))
    data["policies"]["x"][0][1][0] = "Wobble"
    json.dump(data, open(bad, "w"))
    for call in (lambda: faa_policy.load(bad), lambda: faa_policy.resolve(bad),
                 lambda: __import__("gar_jax").augment.get_policy("faa", policy=bad)):
        with pytest.raises(ConfigError, match="unknown op 'Wobble'") as e:
            call()
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="probability must be a number in"):
        faa_policy.check_policy([[("Rotate", 1.5, 0.5)]])


# ---- The search ---------------------------------------------------------------------------------

from gar_jax.data import sources  # noqa: E402
from gar_jax.methods import faa as method  # noqa: E402


def digits_faa_config():
    """configs/digits_faa.py (the search variant)."""
    import config_files
    return config_files.load("digits_faa")


def tiny_config(**overrides):
    c = digits_faa_config()
    c.faa.destructive_op = True
    c.model.width = 1
    c.progress_bar = False
    c.faa.update(dict(folds=2, repeats=1, trials=6, asks_per_batch=3, n_startup_trials=3,
                      top_n=2, copies=2, num_sub_policies=2, score_chunk=2, fold_epochs=1))
    c.faa.update(overrides)
    return c


@pytest.fixture(scope="module")
def search_setup():
    """Two untrained WRN-10-1 fold models, D_A of 12 digits per fold, and the jitted scorer."""
    config = tiny_config()
    from gar_jax.train import engine, optim
    model = engine.make_model(config, 10)
    tx, _ = optim.make_optimizer(config, 10)
    states = method.init_fold_states(model, tx, (8, 8, 1), 0, 2)
    # Untrained nets predict one class whatever the augmentation; a large random classifier
    # makes the scores depend on the candidates (something for TPE to rank).
    params = jax.tree_util.tree_map_with_path(
        lambda path, v: jax.random.normal(jax.random.PRNGKey(len(v.shape)), v.shape) * 3.0
        if "Dense" in jax.tree_util.keystr(path) else v, states.params)
    variables = {"params": params, "batch_stats": states.batch_stats}
    data = sources.load("digits", "train")
    da = np.stack([np.arange(8), np.arange(100, 108)])
    return {"config": config, "model": model, "variables": variables,
            "images": jnp.asarray(data["image"][da]), "labels": jnp.asarray(data["label"][da]),
            "scorer": method.make_scorer(config, model)}


CANDIDATES = [  # 2 folds x 3 candidates of 2 sub-policies x 2 steps, every op kind covered
    [[[("SamplePairing", 0.9, 0.3), ("Rotate", 0.7, 0.9)], [("Cutout", 1.0, 0.8), ("Solarize", 0.6, 0.4)]],
     [[("TranslateX", 0.8, 1.0), ("Posterize", 0.5, 0.1)], [("Equalize", 0.7, 0.5), ("ShearY", 0.9, 0.2)]],
     [[("Contrast", 0.8, 0.1), ("Sharpness", 0.9, 0.9)], [("Invert", 0.5, 0.5), ("Cutout", 0.8, 0.3)]]],
    [[[("AutoContrast", 0.9, 0.5), ("TranslateY", 1.0, 0.1)], [("Brightness", 0.9, 0.05), ("ShearX", 0.6, 0.9)]],
     [[("Color", 0.5, 0.5), ("SamplePairing", 0.5, 0.5)], [("Rotate", 0.9, 0.0), ("Invert", 0.3, 0.3)]],
     [[("Solarize", 1.0, 0.9), ("Cutout", 0.9, 1.0)], [("Posterize", 0.9, 0.9), ("Equalize", 0.2, 0.2)]]],
]


def test_vectorized_score_equals_slow_loop(search_setup):
    """The jitted batched score of 2 folds x 3 candidates (chunks of 2: one padded) equals a slow
    loop that takes one candidate and one image at a time: Pillow for the FAA ops, the standard
    pipeline and the model on that single image, max correct / min loss over the copies."""
    s = search_setup
    scorer, copies = s["scorer"], s["config"].faa.copies
    tabs = [[faa_policy.tables(c, 8, 8) for c in fold] for fold in CANDIDATES]
    stacked = {k: jnp.asarray(np.stack([np.stack([t[k] for t in fold]) for fold in tabs]))
               for k in tabs[0][0]}
    keys = jax.random.split(jax.random.PRNGKey(7), 6).reshape(2, 3, 2)
    acc, loss = jax.device_get(scorer(s["variables"], s["images"], s["labels"], stacked, keys))
    # The fold models unrolled in the program (the CPU default of make_scorer) or vmapped over
    # the folds: the same scores.
    other = dataclasses.replace(scorer, fold_batching="vmap")
    assert scorer.fold_batching == "unroll"  # make_scorer on a CPU ("auto")
    acc2, loss2 = jax.device_get(other(s["variables"], s["images"], s["labels"], stacked, keys))
    np.testing.assert_array_equal(acc2, acc)
    np.testing.assert_allclose(loss2, loss, rtol=1e-5)

    draw = jax.jit(faa_policy.draw)
    std = jax.jit(lambda k, im: scorer.standard(k, im[None])[0])
    forward = jax.jit(lambda v, im: s["model"].apply(v, im[None], train=False)[0])
    images, labels = np.asarray(s["images"]), np.asarray(s["labels"])
    n = images.shape[1]
    for f in range(2):
        v = jax.tree.map(lambda a: a[f], s["variables"])
        for c in range(3):
            cand = faa_policy.check_policy(CANDIDATES[f][c])
            prob = jnp.asarray(tabs[f][c]["probability"])
            correct, losses = np.zeros((copies, n), bool), np.zeros((copies, n))
            for r, copy_key in enumerate(jax.random.split(keys[f, c], copies)):
                pairs = [jax.random.split(k) for k in jax.random.split(copy_key, n)]
                ds = [jax.device_get(draw(kp, prob)) for kp, _ in pairs]
                state = [Image.fromarray(images[f, i, ..., 0]) for i in range(n)]
                for step in range(2):  # one step of every image, then the next (pairing)
                    state = [pil_reference.faa_apply(
                        cand[int(d["sub"])][step][0], state[i], cand[int(d["sub"])][step][2],
                        negate=bool(d["negate"][step]), centre=d["centre"][step],
                        other=state[i - 1]) if d["fire"][step] else state[i]
                        for i, d in enumerate(ds)]
                for i in range(n):
                    x = std(pairs[i][1], jnp.asarray(np.asarray(state[i])[..., None]))
                    logits = np.asarray(forward(v, x))
                    correct[r, i] = np.argmax(logits) == labels[f, i]
                    losses[r, i] = -jax.nn.log_softmax(logits)[labels[f, i]]
            assert acc[f, c] == pytest.approx(np.mean(correct.max(0)), abs=1e-6), (f, c)
            assert loss[f, c] == pytest.approx(np.mean(losses.min(0)), rel=1e-4), (f, c)


class Killed(Exception):
    pass


def _search(setup, workdir, hook=None, seed=None, **overrides):
    config = tiny_config(**overrides)
    if seed is not None:
        config.seed = seed
    studies, _ = method.run_search(config, str(workdir), setup["scorer"], setup["variables"],
                                   setup["images"], setup["labels"], image_hw=(8, 8),
                                   progress=False, hook=hook)
    trials = {name: [(t.user_attrs["index"], t.params, t.value, t.user_attrs["score"])
                     for t in sorted(ts, key=lambda t: t.user_attrs["index"])]
              for name, ts in studies.items()}
    return trials, method.final_policy(config, studies)[0]


def _kill_at(event_name, round_index):
    def hook(event, r):
        if event == event_name and r == round_index:
            raise Killed(event)
    return hook


def test_same_seed_same_policy_and_killed_search_resumes(search_setup, tmp_path):
    """An uninterrupted search and searches killed inside a round, resumed from their study
    database alone, end with the same completed trials (scores included) and the same final
    policy; another seed differs. Kills: after asking the second round (its trials unscored:
    failed and asked again), after storing 2 of the 6 scores of a round (fold 0's study
    partly scored: its 3 trials failed and asked again, fold 1's too), after 2 of 6 tells (the
    other 4 told from their stored scores)."""
    reference, policy = _search(search_setup, tmp_path / "a")
    assert [len(v) for v in reference.values()] == [6, 6]
    assert len(policy) == 2 * 2 * 2 and len({v[2] for v in reference["fold0_repeat0"]}) > 1
    kills = {"b": ("asked", 1), "c": ("told:2", 0), "e": ("scored:2", 1)}
    for name, (event, r) in kills.items():
        with pytest.raises(Killed):
            _search(search_setup, tmp_path / name, hook=_kill_at(event, r))
        resumed_trials, resumed_policy = _search(search_setup, tmp_path / name)
        assert resumed_trials == reference, name
        assert resumed_policy == policy, name  # the same sub-policies, probabilities, levels
    other_trials, other_policy = _search(search_setup, tmp_path / "d", seed=1)
    assert other_policy != policy and other_trials != reference
    import optuna
    for name, n_failed in {"b": 3, "c": 0, "e": 3}.items():
        for fold in (0, 1):
            trials = optuna.load_study(study_name=f"fold{fold}_repeat0",
                                       storage=method.storage_url(str(tmp_path / name))).trials
            assert sum(t.state == optuna.trial.TrialState.FAIL for t in trials) == n_failed


def test_final_policy_is_the_top_n_of_each_study_by_accuracy():
    """final_policy against a hand-ranked list: per study the top_n trials by accuracy (ties:
    the earlier trial), their sub-policies pooled in study order, duplicates (same op sequence)
    dropped within a candidate."""
    import types

    config = tiny_config(top_n=3, num_sub_policies=2, num_ops=1)

    def trial(index, value, op_a, op_b):
        params = {"op_0_0": op_a, "prob_0_0": 0.1 * index, "level_0_0": 0.5,
                  "op_1_0": op_b, "prob_1_0": 0.2, "level_1_0": 0.05 * index}
        return types.SimpleNamespace(value=value, params=params, number=100 + index,
                                     user_attrs={"index": index, "score": [value, 1.0 - value]})

    studies = {
        "fold1_repeat0": [trial(0, 0.2, "Invert", "Rotate"), trial(1, 0.6, "Color", "Color")],
        "fold0_repeat0": [trial(0, 0.5, "ShearX", "Rotate"), trial(1, 0.9, "Invert", "Solarize"),
                          trial(2, 0.7, "Equalize", "Equalize"), trial(3, 0.9, "Posterize",
                                                                       "Cutout"),
                          trial(4, 0.1, "Color", "Sharpness")],
    }
    policy, top = method.final_policy(config, studies)
    # Hand ranking: fold0 -> trials 1 (0.9), 3 (0.9, later), 2 (0.7); fold1 -> 1 (0.6), 0.
    assert [t["trial"] for t in top["fold0_repeat0"]] == [1, 3, 2]
    assert [t["trial"] for t in top["fold1_repeat0"]] == [1, 0]
    assert [t["accuracy"] for t in top["fold0_repeat0"]] == [0.9, 0.9, 0.7]
    assert [t["min_loss"] for t in top["fold1_repeat0"]] == pytest.approx([0.4, 0.8])
    expected = [
        (("Invert", 0.1, 0.5),), (("Solarize", 0.2, 0.05),),          # fold0 trial 1
        (("Posterize", 0.30000000000000004, 0.5),), (("Cutout", 0.2, 0.15000000000000002),),
        (("Equalize", 0.2, 0.5),),                                   # trial 2: duplicate dropped
        (("Color", 0.1, 0.5),),                                      # fold1 trial 1, duplicate
        (("Invert", 0.0, 0.5),), (("Rotate", 0.2, 0.0),),            # fold1 trial 0
    ]
    assert [tuple(tuple(step) for step in sub) for sub in policy] == expected


def test_make_folds_disjoint_stratified_deterministic():
    labels = np.repeat(np.arange(4), [50, 30, 15, 5])  # unbalanced classes
    n = len(labels)
    dm, da = method.make_folds(labels, folds=3, test_fraction=0.4, seed=7)
    assert dm.shape == (3, 60) and da.shape == (3, 40)
    overall = np.bincount(labels) / n
    for f in range(3):
        assert not set(dm[f]) & set(da[f])                      # D_M and D_A disjoint
        assert len(set(dm[f]) | set(da[f])) == n                # together the whole pool
        for part in (dm[f], da[f]):                             # class balance, within 1 image
            counts = np.bincount(labels[part], minlength=4)
            assert np.all(np.abs(counts - overall * len(part)) <= 1), counts
    assert len({tuple(a) for a in da}) == 3                     # the K splits differ
    again = method.make_folds(labels, folds=3, test_fraction=0.4, seed=7)
    np.testing.assert_array_equal(again[0], dm)
    np.testing.assert_array_equal(again[1], da)
    assert not np.array_equal(method.make_folds(labels, 3, 0.4, seed=8)[1], da)
    # reduced_size: a stratified subset first, every fold inside it.
    dm, da = method.make_folds(labels, folds=2, test_fraction=0.5, seed=1, reduced_size=40)
    pool = np.union1d(dm[0], da[0])
    assert len(pool) == 40 and np.array_equal(pool, np.union1d(dm[1], da[1]))
    assert np.all(np.abs(np.bincount(labels[pool], minlength=4) - overall * 40) <= 1)


def test_bad_search_configs_are_one_line_errors():
    for field, value, match in (("folds", 1, "K >= 2"), ("test_fraction", 1.0, r"\(0, 1\)"),
                                ("test_fraction", 0.0, r"\(0, 1\)"), ("trials", 0, "trials"),
                                ("reduced_size", 10**6, "exceeds"),
                                ("fold_batching", "map", "fold_batching")):
        config = tiny_config(**{field: value})
        with pytest.raises(ConfigError, match=match) as e:
            method.validate(config)
        assert "\n" not in str(e.value)



def _fold_models_vmapped_and_separately(dtype, batchings=("vmap",)):
    """3 WRN-10-1 fold models, 3 SGD steps of batch 16 each with the standard pipeline, trained
    vmapped over the folds in one program (init_fold_states + make_fold_step) and one fold at a
    time, one program per fold (the supervised train step on one device, fold f's key and D_M
    rows, the permutation make_fold_step draws). Returns ({batching: vmapped variables
    [K, ...]}, [fold f's separately trained variables for f < K]); float leaves of the
    states are cast to ``dtype`` after initialization."""
    from gar_jax.data import sources as data_sources
    from gar_jax.mesh import make_mesh
    from gar_jax.train import engine, optim
    from gar_jax.train import steps as train_steps
    from gar_jax.train.state import INIT_STREAM, initial_state

    c = method.fold_config(digits_faa_config())  # the standard pipeline only
    c.model.width, c.batch_size, c.num_epochs, c.warmup_epochs = 1, 16, 1, 0.0
    # No dropout (as the config): the fold step takes its dropout key as is, the supervised
    # step folds in the device index.
    assert c.model.dropout_rate == 0.0
    folds, steps, seed, shape = 3, 3, 0, (8, 8, 1)
    data = data_sources.load("digits", "train")
    dm, _ = method.make_folds(data["label"], folds, 0.4, seed)
    dm = dm[:, :64]  # 4 batches of D_M rows per fold (3 are used: permuted, so all matter)
    model = engine.make_model(c, 10).clone(dtype=dtype)
    tx, _ = optim.make_optimizer(c, steps)
    augment = engine.make_augment(c)
    images, labels = jnp.asarray(data["image"]), jnp.asarray(data["label"])

    def cast(tree):  # float leaves to dtype (scan carries need the BatchNorm stats in dtype too)
        return jax.tree.map(lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating)
                            else v, tree)

    def model_variables(state):
        return jax.device_get({"params": state.params, "batch_stats": state.batch_stats})

    states = cast(method.init_fold_states(model, tx, shape, seed, folds))
    vmapped = {}
    for batching in batchings:
        permutations, step = method.make_fold_step(model, tx, augment, c.batch_size, batching)
        fresh = jax.tree.map(jnp.copy, states)  # the step donates its states
        perm = permutations(fresh, jnp.asarray(dm), 0)
        for i in range(steps):
            fresh, _ = step(fresh, images, labels, jnp.asarray(dm), perm, i)
        vmapped[batching] = model_variables(fresh)

    train_step = train_steps.make_train_step(model, tx, make_mesh(jax.devices()[:1]),
                                             augment=augment)
    init = jax.jit(initial_state, static_argnums=(0, 1, 2))
    separate = []
    for f in range(folds):
        rng = jax.random.fold_in(jax.random.PRNGKey(seed), f)
        with jax.threefry_partitionable(False):  # as init_fold_states (and create_state)
            state = cast(init(model, tx, shape, rng))
        perm = np.asarray(jax.random.permutation(
            jax.random.fold_in(jax.random.fold_in(rng, INIT_STREAM - 1), 0), dm.shape[1]))
        for i in range(steps):
            idx = dm[f][perm[i * c.batch_size:(i + 1) * c.batch_size]]
            state, _ = train_step(state, {"image": images[idx], "label": labels[idx]},
                                  train_steps.step_key(state.rng, state.step))
        separate.append(model_variables(state))
    return vmapped, separate


def test_fold_models_vmapped_equal_fold_models_trained_separately():
    """FAA's K fold models trained in one program per step, vmapped over the folds or unrolled
    over them (the CPU default), equal the same models trained one program per fold (same data,
    keys and initialization), in float64: the folds are independent and each gets its own key
    and D_M rows."""
    # float64 (states cast after the float32 init, the model computes in float64): the two
    # programs differ only in rounding (~1e-16 here). In float32 a fold's parameters differed
    # by up to 5e-3 after 3 steps (for one fold; the others ~2e-7): amplified rounding.
    with jax.enable_x64(True):
        by_batching, separate = _fold_models_vmapped_and_separately(jnp.float64,
                                                                    ("vmap", "unroll"))
    folds = len(separate)
    for batching, vmapped in by_batching.items():
        for f, alone in enumerate(separate):
            for g in range(folds):
                diff = jax.tree.map(lambda a, b: float(np.max(np.abs(a[g] - b))), vmapped, alone)
                worst = max(jax.tree.leaves(diff))
                if g == f:
                    assert worst < 1e-12, (batching, f, diff)
                else:  # the comparison can fail: another fold's model is far away
                    assert worst > 0.1, (batching, f, g, worst)


def test_extra_ops_extend_the_search_space_with_one_line_refusals():
    """faa.extra_ops adds the library's ops FAA lacks (in the order given, after SamplePairing
    if destructive_op); the report lists every op of the space, unused ones at 0."""
    from gar_jax.methods import faa as faa_method
    import ml_collections

    def cfg(extra, destructive=False):
        return ml_collections.ConfigDict({"faa": {"extra_ops": extra,
                                                  "destructive_op": destructive}})

    assert faa_method.search_ops(cfg("")) == faa_policy.FAA_OPS
    assert faa_method.search_ops(cfg("flip_lr, rotate_180", True)) == faa_policy.FAA_OPS + (
        "SamplePairing", "FlipLR", "Rotate180")
    for bad, message in (("invert", "unknown op 'invert'"), ("flip_lr,flip_lr", "twice"),
                         ("sample_pairing", "twice")):
        with pytest.raises(ConfigError, match=message):
            faa_method.search_ops(cfg(bad, destructive=bad == "sample_pairing"))
    policy = ((("FlipLR", 0.5, 0.0), ("Invert", 1.0, 0.0)), (("Rotate90", 1.0, 0.3),))
    # by hand: FlipLR in half the sub-policies at p 0.5 -> 0.25; Invert 0.5; Rotate90 0.5
    probability = faa_policy.op_probability(policy, faa_policy.FAA_OPS + ("FlipLR", "FlipUD",
                                                                          "Rotate90"))
    assert probability["flip_lr"] == pytest.approx(0.25)
    assert probability["invert"] == pytest.approx(0.5)
    assert probability["rotate_90"] == pytest.approx(0.5)
    assert probability["flip_ud"] == 0.0 and len(probability) == 18
