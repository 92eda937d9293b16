"""Candidates scored per second by FAA's density-matching score: vectorized vs one by one.

All in the same run, on the same fold model (WRN-10-2 of configs/digits_faa.py, D_A of 575
digits, 5 copies, candidates of 5 x 2 random steps from the 15 FAA ops):

- ``vectorized``: C candidates in one jitted call (`gar_jax.methods.faa.Scorer`, chunks of
  ``--chunk`` candidates as one flat image batch);
- ``one-by-one``: the same jitted scorer called once per candidate (C = 1 per call);
- ``pillow``: the way the original code scores a candidate: Pillow per image on the host (FAA's
  own op functions, `pil_reference.faa_apply`), then the jitted model on the augmented D_A
  copies (measured on a few candidates only).

``python experiments/bench_faa_score.py --batches=16,32,64 --reps=2``
"""
import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from gar_jax.augment import faa_policy  # noqa: E402
from gar_jax.augment import pil_reference  # noqa: E402
from gar_jax.data import sources  # noqa: E402
from gar_jax.methods import faa as method  # noqa: E402
from gar_jax.train import defaults, engine, optim  # noqa: E402

DIGITS_FAA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                          "digits_faa.py")


def random_candidates(rng, count, f):
    return [tuple(tuple((faa_policy.FAA_OPS[rng.randint(15)], rng.rand(), rng.rand())
                        for _ in range(f.num_ops)) for _ in range(f.num_sub_policies))
            for _ in range(count)]


def stacked_tables(candidates, h, w):
    tabs = [faa_policy.tables(c, h, w) for c in candidates]
    return {k: jnp.asarray(np.stack([t[k] for t in tabs]))[None] for k in tabs[0]}


def timed(fn, reps):
    jax.block_until_ready(fn())  # compile / warm up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="16,32,64")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--pillow_candidates", type=int, default=2)
    parser.add_argument("--only", default="", help="'asks': only the Optuna ask/tell cost of a "
                        "200-trial study; 'flops': only the FLOPs per image of the score's "
                        "forward (digits WRN-10-2 vs CIFAR WRN-40-2)")
    args = parser.parse_args()
    if args.only == "asks":
        return bench_asks()
    if args.only == "flops":
        return flops_per_image()

    config = defaults.load_config(DIGITS_FAA)
    f = config.faa
    data = sources.load("digits", "train")
    dm, da = method.make_folds(data["label"], f.folds, f.test_fraction, 0)
    model = engine.make_model(config, 10)
    tx, _ = optim.make_optimizer(config, 10)
    states = method.init_fold_states(model, tx, (8, 8, 1), 0, 1)
    variables = {"params": states.params, "batch_stats": states.batch_stats}
    images = jnp.asarray(data["image"][da[:1]])
    labels = jnp.asarray(data["label"][da[:1]])
    h, w = images.shape[2:4]
    scorer = method.Scorer(model, frozenset(faa_policy.OP_NAME[o] for o in faa_policy.FAA_OPS), f.copies,
                           engine.make_augment(method.fold_config(config)), args.chunk)
    rng = np.random.RandomState(0)
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; load average "
          f"{os.getloadavg()[0]:.1f}; D_A {images.shape[1]} images x {f.copies} copies, "
          f"{f.num_sub_policies}x{f.num_ops} steps, WRN-{config.model.depth}-"
          f"{config.model.width}, chunk {args.chunk}")

    one_tab = stacked_tables(random_candidates(rng, 1, f), h, w)
    one_key = jax.random.split(jax.random.PRNGKey(0), 1)[None]
    t_one = timed(lambda: scorer(variables, images, labels, one_tab, one_key), args.reps)
    print(f"one-by-one: {t_one:.3f} s per candidate = {1 / t_one:.2f} candidates/s")
    print(f"{'batch':>6} {'vectorized s':>13} {'cand/s':>8} {'one-by-one cand/s':>18} "
          f"{'speed-up':>9}")
    for c in [int(b) for b in args.batches.split(",")]:
        tab = stacked_tables(random_candidates(rng, c, f), h, w)
        keys = jax.random.split(jax.random.PRNGKey(1), c)[None]
        t = timed(lambda: scorer(variables, images, labels, tab, keys), args.reps)
        # One by one over the same C candidates (the C = 1 program is already compiled).
        t0 = time.perf_counter()
        for i in range(c):
            sub = jax.tree.map(lambda v: v[:, i:i + 1], tab)
            jax.block_until_ready(scorer(variables, images, labels, sub, keys[:, i:i + 1]))
        t_loop = time.perf_counter() - t0
        print(f"{c:>6} {t:>13.3f} {c / t:>8.2f} {c / t_loop:>18.2f} {t_loop / t:>8.1f}x")

    # The original's way: Pillow per image on the host, then the model on the copies.
    forward = jax.jit(lambda im: model.apply(jax.tree.map(lambda v: v[0], variables), im,
                                             train=False))
    np_images = np.asarray(images[0])
    candidates = random_candidates(rng, args.pillow_candidates, f)
    jax.block_until_ready(forward(images[0]))
    t0 = time.perf_counter()
    prng = np.random.RandomState(1)
    for cand in candidates:
        for _ in range(f.copies):
            out = []
            for im in np_images:
                pil = Image.fromarray(im[..., 0])
                for op, p, level in cand[prng.randint(len(cand))]:
                    if prng.rand() < p:
                        pil = pil_reference.faa_apply(op, pil, level, negate=prng.rand() < 0.5,
                                                      centre=prng.rand(2), other=pil)
                out.append(np.asarray(pil)[..., None])
            jax.block_until_ready(forward(jnp.asarray(np.stack(out))))
    t_pil = (time.perf_counter() - t0) / len(candidates)
    print(f"pillow (original's way, standard pipeline not included): {t_pil:.3f} s per "
          f"candidate = {1 / t_pil:.2f} candidates/s")


def bench_asks(trials: int = 200, batch: int = 16):
    """Seconds per trial of TPE ask + tell (SQLite, constant liar, 30 parameters, random
    values), per block of 50 trials: the search's host cost, which grows with the trials."""
    import tempfile

    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = defaults.load_config(DIGITS_FAA)
    f = config.faa
    with tempfile.TemporaryDirectory() as d:
        study = optuna.create_study(storage=method.storage_url(d), direction="maximize")
        rng = np.random.RandomState(0)
        t0, done, marks = time.perf_counter(), 0, []
        while done < trials:
            study.sampler = optuna.samplers.TPESampler(seed=done, constant_liar=True,
                                                       n_startup_trials=f.n_startup_trials)
            asked = [study.ask() for _ in range(batch)]
            for t in asked:
                method.suggest_policy(t, faa_policy.FAA_OPS, f.num_sub_policies, f.num_ops)
            for t in asked:
                study.tell(t, rng.rand())
            done += batch
            marks.append((done, time.perf_counter() - t0))
    print(f"Optuna TPE ask+tell, SQLite, batches of {batch}, load average "
          f"{os.getloadavg()[0]:.1f}:")
    prev_n, prev_t = 0, 0.0
    for n, t in marks:
        if n % 48 == 0 or n == marks[-1][0]:
            print(f"  trials {prev_n:>3}-{n:>3}: {(t - prev_t) / (n - prev_n):.3f} s/trial")
            prev_n, prev_t = n, t
    print(f"  total {marks[-1][1]:.1f} s for {marks[-1][0]} trials")


def flops_per_image():
    """XLA's FLOP count per image of the score's forward: digits WRN-10-2 (8x8x1) and the
    paper's search model WRN-40-2 on CIFAR (32x32x3)."""
    for name, (depth, width, shape, dataset) in {
            "digits WRN-10-2": (10, 2, (8, 8, 1), "digits"),
            "CIFAR WRN-40-2": (40, 2, (32, 32, 3), "cifar10")}.items():
        config = defaults.load_config(DIGITS_FAA)
        config.dataset = dataset
        config.model.depth, config.model.width = depth, width
        model = engine.make_model(config, 10)
        x = jnp.zeros((64,) + shape, jnp.uint8)
        variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x[:1], train=False))
        fn = jax.jit(lambda v, im: model.apply(v, im, train=False))
        cost = fn.lower(variables, x).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        print(f"{name}: {cost['flops'] / 64 / 1e6:.1f} MFLOP per image (forward)")


if __name__ == "__main__":
    main()
