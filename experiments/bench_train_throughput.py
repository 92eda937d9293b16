"""Throughput of the WRN-28-10 train step, and how close it gets to the machine's matmul peak.

Measures, in one run on whatever devices JAX sees (CPU here, GPUs/TPUs elsewhere):
1. peak: FLOP/s of a large square matmul in the benchmark dtype (best of several timed runs);
2. for each global batch size: the production train step (`gar_jax.train.steps.make_train_step`:
   on-device standard augmentation, forward/backward with per-device BatchNorm, SGD update) on
   random CIFAR-shaped uint8 data: seconds per step (best and median of the timed steps after one
   warm-up step), images/s, the step's FLOPs from XLA's cost analysis of the compiled step
   (per-device program x devices), achieved FLOP/s, and its fraction of the matmul peak of all
   devices (the one-device peak x the device count).

Usage::

    python experiments/bench_train_throughput.py                       # CPU: batches 8, 16, 32
    python experiments/bench_train_throughput.py --batch_sizes=128,256,512 --dtype=bfloat16  # GPU

A fraction well below 1 is normal for convolutions (the matmul is the best case); it is a
comparison point for the same code on other hardware, not an absolute score.
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gar_jax.augment import policies
from gar_jax.data import stats
from gar_jax.models.wrn import WideResNet
from gar_jax.train import optim, steps
from gar_jax.mesh import data_sharding, make_mesh
from gar_jax.train.state import create_state

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def matmul_peak(size: int, dtype, repeats: int) -> float:
    """Best FLOP/s of ``[size, size] @ [size, size]`` on the default device (2 size^3 FLOPs)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, b).block_until_ready()  # compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def bench_step(batch_size: int, args, mesh) -> dict:
    """Times the train step at one global batch size; returns the measured figures."""
    num_classes = 100
    mean, std = stats.mean_std("cifar100")
    model = WideResNet(depth=args.depth, width=args.width, num_classes=num_classes, mean=mean,
                       std=std, dtype=_DTYPES[args.dtype])
    config = ml_collections.ConfigDict(dict(
        learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
        decay_all_params=True, grad_clip_norm=5.0, warmup_epochs=5, num_epochs=200))
    tx, schedule = optim.make_optimizer(config, steps_per_epoch=195)
    state = create_state(model, tx, image_shape=(32, 32, 3), seed=0, mesh=mesh)
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8),
             "label": rng.integers(0, num_classes, (batch_size,)).astype(np.int32)}
    batch = jax.device_put(batch, data_sharding(mesh))
    fill = tuple(int(round(255 * m)) for m in mean)
    augment = policies.get_policy("standard", pad=4, cutout=16, fill=fill)
    train_step = steps.make_train_step(model, tx, mesh, augment=augment, schedule=schedule)
    start = time.perf_counter()
    compiled = train_step.lower(state, batch, jax.random.PRNGKey(0)).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    # XLA reports the FLOPs of the per-device (SPMD-partitioned) program; all devices run it.
    flops = float(cost["flops"]) * mesh.devices.size
    times = []
    for i in range(args.steps + 1):  # the first call also transfers and warms caches
        start = time.perf_counter()
        state, metrics = compiled(state, batch, jax.random.PRNGKey(i))
        jax.block_until_ready((state, metrics))
        if i:
            times.append(time.perf_counter() - start)
    best, median = min(times), statistics.median(times)
    return {"batch": batch_size, "compile_s": compile_s, "step_s": best, "median_s": median,
            "images_per_s": batch_size / median, "gflop_per_step": flops / 1e9,
            "flops_per_s": flops / median}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_sizes", default="8,16,32")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per batch size")
    parser.add_argument("--dtype", default="float32", choices=sorted(_DTYPES))
    parser.add_argument("--depth", type=int, default=28)
    parser.add_argument("--width", type=int, default=10)
    parser.add_argument("--matmul_size", type=int, default=2048)
    args = parser.parse_args()
    mesh = make_mesh()
    device = jax.devices()[0]
    dtype = _DTYPES[args.dtype]
    print(f"devices: {jax.device_count()} x {device.device_kind} ({device.platform}); "
          f"model WRN-{args.depth}-{args.width}, CIFAR-100 shapes, dtype {args.dtype}; "
          f"matmul {args.matmul_size}^2 {args.dtype} on one device, x{jax.device_count()}")
    # The peak is re-measured before each batch size (a shared machine's load changes); each
    # row's fraction is against the best peak seen in the whole run.
    rows, peaks = [], []
    for b in (int(x) for x in args.batch_sizes.split(",")):
        peaks.append(jax.device_count() * matmul_peak(args.matmul_size, dtype, repeats=5))
        rows.append(bench_step(b, args, mesh))
        rows[-1]["peak"] = peaks[-1]
    peak = max(peaks)
    print(f"{'batch':>6} {'compile s':>9} {'best s':>8} {'median s':>9} {'images/s':>9} "
          f"{'GFLOP/step':>11} {'GFLOP/s':>9} {'peak GFLOP/s':>13} {'of peak':>8}")
    for r in rows:
        print(f"{r['batch']:>6} {r['compile_s']:>9.1f} {r['step_s']:>8.3f} {r['median_s']:>9.3f} "
              f"{r['images_per_s']:>9.2f} {r['gflop_per_step']:>11.1f} "
              f"{r['flops_per_s'] / 1e9:>9.1f} {r['peak'] / 1e9:>13.1f} "
              f"{r['flops_per_s'] / peak:>8.1%}")
    print(f"best matmul peak in this run: {peak / 1e9:.1f} GFLOP/s (all devices)")


if __name__ == "__main__":
    main()
