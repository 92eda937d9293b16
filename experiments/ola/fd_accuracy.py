"""How close is OLA's finite-difference GAR (``ola.gar_method = "fd"``) to the exact one on a
Wide ResNet? (experiments/ola/README.md section 7d; the digits probe is `probe_rewards.py --fd`.)

WRN-DEPTH-WIDTH with BatchNorm, float32, CIFAR-shaped random batches (bench_ola_cost.build):
`--sgd-steps` ordinary steps on them first (away from the initialization), then step t's
per-example losses and frozen statistics on batch 0 (the augmented batch's role), G = batch 1's
gradient at the parameters after step t, and per fd_step the correlation and relative error of
`gar.finite_difference_alignment` (from step t's losses, as OLA computes it) against the exact
forward-mode alignment (`gar.alignment`, float32: its own error is rounding, ~1e-6).

    python experiments/ola/fd_accuracy.py --model 16-4:128 --steps 1e-3,1e-4,1e-5,1e-6
"""
import argparse
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench_ola_cost  # noqa: E402 (experiments/)

from gar_jax import batchnorm, gar  # noqa: E402
from gar_jax.models import variables  # noqa: E402
from gar_jax.train import steps  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="16-4:128", help="DEPTH-WIDTH:BATCH")
    parser.add_argument("--steps", default="1e-3,1e-4,1e-5,1e-6", help="fd_step values")
    parser.add_argument("--sgd-steps", type=int, default=20)
    args = parser.parse_args(argv)
    depth, width = map(int, args.model.split(":")[0].split("-"))
    batch = int(args.model.split(":")[1])
    mesh, config, model, tx, schedule, state, batches = bench_ola_cost.build(
        depth, width, batch, "batch")
    key = jax.random.key(0)
    images = [jax.jit(bench_ola_cost.standard)(jax.random.fold_in(key, i), b["image"])
              for i, b in enumerate(batches)]
    labels = [b["label"] for b in batches]
    grad_fn = jax.jit(steps.make_grad_fn(model, mesh))
    apply = jax.jit(lambda s, g, st: steps.apply_gradients(s, g, st, tx))
    metrics = {"loss": float("nan")}
    for i in range(args.sgd_steps):
        grads, stats, metrics = grad_fn(state.params, state.batch_stats, images[i % 2],
                                        labels[i % 2], key)
        state = apply(state, grads, stats)
    print(f"WRN-{depth}-{width}, batch {batch}, after {args.sgd_steps} SGD steps: loss "
          f"{float(metrics['loss']):.3f}", flush=True)
    grads, stats, _, bn_stats, losses = jax.jit(steps.make_grad_fn(
        model, mesh, bn_stats=True, example_losses=True))(state.params, state.batch_stats,
                                                          images[0], labels[0], key)
    mid = apply(state, grads, stats)
    g = grad_fn(mid.params, mid.batch_stats, images[1], labels[1], key)[0]
    per_example = batchnorm.frozen_bn_loss_fn_from_stats(
        model, variables(state.params, state.batch_stats), jax.tree.map(lambda s: s[0], bn_stats),
        steps.cross_entropy, train=True)
    one = {"image": images[0], "label": labels[0]}
    exact = np.asarray(jax.jit(lambda p, d: gar.alignment(per_example, p, one, d))(
        state.params, g))
    for step in (float(s) for s in args.steps.split(",")):
        fd = np.asarray(jax.jit(lambda p, d, base: gar.finite_difference_alignment(
            per_example, p, one, d, step=step, base_losses=base))(state.params, g, losses))
        print(f"fd_step {step:g}: correlation {np.corrcoef(fd, exact)[0, 1]:.6f}, relative "
              f"error {np.linalg.norm(fd - exact) / np.linalg.norm(exact):.2e}", flush=True)


if __name__ == "__main__":
    main()
