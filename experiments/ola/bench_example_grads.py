"""How to build one conv layer's per-example kernel gradients (the tape of
`gar_layerwise.capture(..., store="gradients")`): time and XLA temporaries, side by side.

One 3x3 stride-1 SAME conv layer, 64 -> 64 channels on 32x32 images, batch 128 (a WRN-16-4
first-stage layer at OLA's benchmark batch), float32, on the default device:

  forward      the layer's forward convolution (the replay cost it replaces);
  batch_wgrad  the ordinary batch kernel gradient (what the training step computes anyway);
  scan         `gar_layerwise._example_grads`: one kernel offset at a time in a `lax.scan`,
               a strided window of the padded input times δ (a batched matmul);
  unrolled     the same nine windows unrolled in the program;
  vmap_conv    vmap over examples of the per-example kernel gradient (grouped convolutions).

Each is compiled once, run once (warm-up), then timed `--reps` times; the minimum is printed with
XLA's temporaries. The unrolled and vmap forms are checked against `scan` (max abs difference).

Usage: python experiments/ola/bench_example_grads.py [--reps 5]
"""
import argparse
import itertools
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gar_jax import gar_layerwise  # noqa: E402

B, H, C = 128, 32, 64
DN = ("NHWC", "HWIO", "NHWC")
GEOMETRY = ("conv", (3, 3), (1, 1), (1, 1), ((1, 1), (1, 1)), False)


def conv(a, w):
    return jax.lax.conv_general_dilated(a, w, (1, 1), "SAME", dimension_numbers=DN)


def forward(a, d):
    return conv(a, jnp.ones((3, 3, C, C), a.dtype))


def batch_wgrad(a, d):
    return jax.grad(lambda w: jnp.sum(conv(a, w) * d))(jnp.zeros((3, 3, C, C), a.dtype))


def scan(a, d):
    return gar_layerwise._example_grads(GEOMETRY, a, d)["g"]


def unrolled(a, d):
    padded = jnp.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)))
    dims = (((1,), (1,)), ((0,), (0,)))
    per_offset = [jax.lax.dot_general(padded[:, i:i + H, j:j + H].reshape(B, -1, C),
                                      d.reshape(B, -1, C), dims)
                  for i, j in itertools.product(range(3), range(3))]
    return jnp.stack(per_offset, 1).reshape(B, 3, 3, C, C)


def vmap_conv(a, d):
    def one(x, dx):
        return jax.grad(lambda w: jnp.sum(conv(x[None], w) * dx[None]))(
            jnp.zeros((3, 3, C, C), a.dtype))
    return jax.vmap(one)(a, d)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(B, H, H, C)).astype(np.float32))
    d = jnp.asarray(rng.normal(size=(B, H, H, C)).astype(np.float32))
    print(f"device: {jax.devices()[0].device_kind} (JAX {jax.__version__}); layer 3x3 {C}->{C}, "
          f"{H}x{H}, batch {B}; load average {os.getloadavg()[0]:.2f}", flush=True)
    reference = None
    for name, fn in (("forward", forward), ("batch_wgrad", batch_wgrad), ("scan", scan),
                     ("unrolled", unrolled), ("vmap_conv", vmap_conv)):
        compiled = jax.jit(fn).lower(a, d).compile()
        temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
        out = jax.block_until_ready(compiled(a, d))
        times = []
        for _ in range(args.reps):
            start = time.perf_counter()
            jax.block_until_ready(compiled(a, d))
            times.append(time.perf_counter() - start)
        check = ""
        if name == "scan":
            reference = np.asarray(out)
        elif reference is not None:
            check = f", max |diff| vs scan {np.abs(np.asarray(out) - reference).max():.1e}"
        print(f"  {name:12s} {min(times) * 1e3:7.0f} ms   temporaries {temp:6.0f} MiB{check}",
              flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
