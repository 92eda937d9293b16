"""Time and compiled memory of `gar.alignment` relative to one ordinary batch gradient.

    python experiments/bench_alignment.py                  # WRN-16-4 (2.75M params), batch 64
    python experiments/bench_alignment.py --what conv_loop  # XLA:CPU conv-in-loop slowdown

Model: `gar_jax.models.wrn.WideResNet` (BatchNorm), random uint8 32x32x3 images, 10 classes.
Every computation is one jitted function, compiled ahead of time, then run `--repeats` times
(median wall time, after a warm-up call), all in one process, side by side. Chunked vmap runs
`--chunked-repeats` times without warm-up: on XLA:CPU the per-example weight-gradient
convolutions inside its loop (lax.map) are not rewritten to the fast convolution layout that
XLA uses outside loops, so each run takes minutes on this CPU.

  batch_grad     jax.grad of the mean train-mode loss (what an ordinary SGD step computes)
  jvp            gar.alignment(method="jvp") under frozen BatchNorm statistics; includes the
                 one forward that captures the statistics (GAR's whole extra cost at step t+1
                 besides the batch gradient itself)
  vmap           method="vmap", all per-example gradients at once
  vmap_chunkK    method="vmap", chunk_size=K

Memory: XLA's compiled memory analysis, temp + argument + output bytes. Arguments (params, batch
statistics, batch, the direction) are the same for all alignment variants; "temp" is the
working memory.
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gar_jax import batchnorm, gar
from gar_jax.models.wrn import WideResNet

ce = optax.softmax_cross_entropy_with_integer_labels


def build(model):
    """The jitted functions to compare: name -> fn(variables, batch, direction)."""
    def batch_grad(variables, batch, direction):
        del direction

        def loss(params):
            logits, _ = model.apply({**variables, "params": params}, batch["image"], train=True,
                                    mutable=["batch_stats"])
            return ce(logits, batch["label"]).mean()
        return jax.grad(loss)(variables["params"])

    def aligned(method, chunk_size):
        def fn(variables, batch, direction):
            loss_fn = batchnorm.frozen_bn_loss_fn(model, variables, batch, ce, train=True)
            return gar.alignment(loss_fn, variables["params"], batch, direction, method=method,
                                 chunk_size=chunk_size)
        return fn

    return batch_grad, aligned


def memory_mb(compiled) -> tuple[float, float]:
    m = compiled.memory_analysis()
    total = m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
    return total / 2**20, m.temp_size_in_bytes / 2**20


def median_time(fn, args, repeats: int, warm_up: bool = True):
    """(median wall seconds of `repeats` calls of fn(*args), last output)."""
    if warm_up:
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def conv_loop(repeats: int):
    """A batch conv weight-gradient ([16,32,32,64] input, 3x3x64x64 kernel) at top level vs
    inside a one-iteration lax.scan: isolates why chunked vmap is slow on XLA:CPU."""
    x = jnp.ones((16, 32, 32, 64))
    kernel = jnp.ones((3, 3, 64, 64))

    def weight_grad(x):
        def loss(k):
            y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return jnp.sum(y ** 2)
        return jax.grad(loss)(kernel).sum()

    def in_scan(x):
        return jax.lax.scan(lambda c, xi: (c, weight_grad(xi)), None, x[None])[1][0]

    for name, fn in [("top level", weight_grad), ("inside lax.scan", in_scan)]:
        seconds, _ = median_time(jax.jit(fn).lower(x).compile(), (x,), repeats)
        print(f"  conv weight-gradient {name:<16} {seconds * 1e3:9.1f} ms", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--what", choices=["alignment", "conv_loop"], default="alignment")
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--chunks", default="16", help="comma list of vmap chunk sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunked-repeats", type=int, default=1,
                        help="timed runs of chunked vmap, without warm-up (minutes each on CPU)")
    args = parser.parse_args()
    if args.what == "conv_loop":
        print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}; median of "
              f"{args.repeats} runs after a warm-up")
        return conv_loop(args.repeats)

    model = WideResNet(depth=args.depth, width=args.width, num_classes=10)
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.integers(0, 256, (args.batch, 32, 32, 3), np.uint8)),
             "label": jnp.asarray(rng.integers(0, 10, args.batch), jnp.int32)}
    variables = jax.jit(lambda k: model.init(k, batch["image"], train=False))(jax.random.key(0))
    n_params = sum(a.size for a in jax.tree.leaves(variables["params"]))

    batch_grad, aligned = build(model)
    fns = {"batch_grad": batch_grad, "jvp": aligned("jvp", None), "vmap": aligned("vmap", None)}
    for c in [int(c) for c in args.chunks.split(",") if c]:
        fns[f"vmap_chunk{c}"] = aligned("vmap", c)

    print(f"WRN-{args.depth}-{args.width}: {n_params:,} parameters; batch {args.batch} of "
          f"32x32x3; {jax.devices()[0].device_kind} ({jax.device_count()} device), "
          f"jax {jax.__version__}; median of {args.repeats} runs after a warm-up "
          f"(chunked: {args.chunked_repeats} run(s), no warm-up; all compiled ahead of time)")
    # Compile everything first; the direction is a real batch gradient of another batch (the
    # batch in reverse order stands in for batch t+1).
    compiled, compile_s = {}, {}
    direction = None
    for name, fn in fns.items():
        t0 = time.perf_counter()
        compiled[name] = jax.jit(fn).lower(variables, batch, direction).compile()
        compile_s[name] = time.perf_counter() - t0
        if name == "batch_grad":
            next_batch = jax.tree.map(lambda a: a[::-1], batch)
            direction = compiled[name](variables, next_batch, None)

    results = {}
    for name, fn in compiled.items():
        arg = None if name == "batch_grad" else direction
        chunked = "chunk" in name
        seconds, out = median_time(fn, (variables, batch, arg),
                                   args.chunked_repeats if chunked else args.repeats,
                                   warm_up=not chunked)
        total_mb, temp_mb = memory_mb(fn)
        results[name] = (seconds, total_mb, out)
        ref_s, ref_mb = results["batch_grad"][:2]
        print(f"  {name:<13} {results[name][0] * 1e3:9.1f} ms ({results[name][0] / ref_s:5.2f}x)"
              f"   memory {total_mb:8.1f} MB ({total_mb / ref_mb:5.2f}x), temp {temp_mb:8.1f} MB"
              f"   compile {compile_s[name]:5.1f} s", flush=True)

    # The methods must agree (float32): report the largest deviation from jvp.
    jvp = np.asarray(results["jvp"][2])
    for name in fns:
        if name.startswith("vmap"):
            err = np.abs(np.asarray(results[name][2]) - jvp).max() / np.abs(jvp).max()
            print(f"  max |{name} - jvp| / max |jvp| = {err:.1e}")


if __name__ == "__main__":
    main()
