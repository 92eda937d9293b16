"""What DRA's search costs next to plain training: step time and compiled memory, side by side.

On one device, with the same model and batch size, it compiles and times:

  plain        one supervised SGD step with the standard pipeline (`gar_jax.train.steps`);
  replay       one SGD step of DRA's final training: crop/flip, a DRA policy replayed as a fixed
               policy (Pillow-exact ops on the magnitude grid), Cutout
               (`gar_jax.methods.dra.make_replay_augment`);
  search       one DRA search step (`gar_jax.methods.dra.make_search_step`): a policy update
               (relaxed DRA layers, two forwards + a backward through model and ops, AdamW) and
               a weight update on a second batch augmented by the relaxed layers; op, apply
               probability, magnitude noise and sign drawn per image, only each image's op
               computed (the authors' estimator).

Time: everything is compiled first, then the steps run round-robin for ``--reps`` rounds (so a
change in the machine's load hits all alike); the minimum over rounds is reported. Memory: XLA's
compiled memory analysis, argument + output + temporaries - aliased (donated) bytes.

The search's cost relative to a plain training epoch follows from the step times: with search
fraction f of N training images cut in halves, batch B_s and E_s epochs, the search makes
E_s * floor(f N / 2 / B_s) steps; a plain epoch at batch B makes floor(N / B) steps. Reported for
the paper's CIFAR-10 settings (N = 50000, f = 0.08, B_s = 128, E_s = 20 -> 300 search steps) at
the benchmark's batch size.

Usage: python experiments/bench_dra_cost.py [--model 10-2] [--batch 64] [--size 32]
       [--methods plain,replay,search] [--reps 3] [--json out.json]
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gar_jax.augment import policies  # noqa: E402
from gar_jax.data import stats  # noqa: E402
from gar_jax.methods import dra as method  # noqa: E402
from gar_jax.models.wrn import WideResNet  # noqa: E402
from gar_jax.train import defaults, optim, steps  # noqa: E402
from gar_jax.mesh import data_sharding, make_mesh  # noqa: E402
from gar_jax.train.state import create_state  # noqa: E402


def compiled_bytes(compiled) -> int:
    mem = compiled.memory_analysis()
    return (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="10-2", help="WRN depth-width")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="image side (3 channels)")
    parser.add_argument("--methods", default="plain,replay,search")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    depth, width = (int(v) for v in args.model.split("-"))
    b, size = args.batch, args.size

    mesh = make_mesh(jax.devices()[:1])
    config = defaults.load_config(os.path.join(CONFIGS, "cifar10_dra_search.py"))
    config.dra.search.batch_size = b
    config.batch_size = b
    mean, std = stats.mean_std("cifar10")
    model = WideResNet(depth=depth, width=width, num_classes=10, mean=mean, std=std)
    tx, schedule = optim.make_optimizer(config, steps_per_epoch=50000 // b)
    state = create_state(model, tx, image_shape=(size, size, 3), seed=0, mesh=mesh)
    rng = np.random.default_rng(0)
    batches = [{"image": jax.device_put(rng.integers(0, 256, (b, size, size, 3), np.uint8),
                                        data_sharding(mesh)),
                "label": jax.device_put(rng.integers(0, 10, b).astype(np.int32),
                                        data_sharding(mesh))} for _ in range(2)]
    key = jax.random.PRNGKey(1)
    fresh = lambda: jax.tree.map(jnp.copy, state)  # noqa: E731
    standard = policies.get_policy("standard")

    todo = {}
    for name in args.methods.split(","):
        if name == "plain":
            fn = steps.make_train_step(model, tx, mesh, augment=standard)
            todo[name] = (fn, fresh(), lambda s: (s, batches[0], key))
        elif name == "replay":
            published = defaults.load_config(os.path.join(CONFIGS, "cifar10_dra.py"))
            replay = method.make_replay_augment(published, "cifar10", None)
            fn = steps.make_train_step(model, tx, mesh, augment=replay)
            todo[name] = (fn, fresh(), lambda s: (s, batches[0], key))
        elif name == "search":
            fn = method.make_search_step(config, model, tx, mesh, schedule=schedule)
            todo[name] = (fn, method.init_state(fresh(), config),
                          lambda s: (s, batches[0], batches[1]))
        else:
            raise SystemExit(f"unknown method {name!r}")

    rows = {}
    for name, (fn, carry, make_args) in todo.items():
        t0 = time.perf_counter()
        compiled = fn.lower(*make_args(carry)).compile()
        rows[name] = {"compile_s": time.perf_counter() - t0, "bytes": compiled_bytes(compiled),
                      "times": []}
        todo[name] = (compiled, carry, make_args)
    for _ in range(args.reps + 1):  # the first round warms up and is dropped
        for name, (compiled, carry, make_args) in todo.items():
            t0 = time.perf_counter()
            carry, metrics = compiled(*make_args(carry))
            jax.block_until_ready(metrics)
            rows[name]["times"].append(time.perf_counter() - t0)
            todo[name] = (compiled, carry, make_args)
    for row in rows.values():
        row["times"] = row["times"][1:]
        row["best_s"] = min(row["times"])

    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({device.platform}); WRN-{depth}-{width}, batch {b}, "
          f"{size}x{size}x3; load average {os.getloadavg()[0]:.1f}")
    base = rows.get("plain")
    print(f"{'method':>13} {'compile s':>10} {'best s':>9} {'x plain':>8} {'MiB':>8} "
          f"{'x plain':>8}")
    for name, row in rows.items():
        rel_t = row["best_s"] / base["best_s"] if base else float("nan")
        rel_m = row["bytes"] / base["bytes"] if base else float("nan")
        print(f"{name:>13} {row['compile_s']:10.1f} {row['best_s']:9.3f} {rel_t:8.2f} "
              f"{row['bytes'] / 2**20:8.1f} {rel_m:8.2f}")
    summary = {}
    if base:
        search_steps = 20 * int(0.08 * 50000 / 2 // b)
        plain_steps = 50000 // b
        for name in ("search",):
            if name in rows:
                ratio = search_steps * rows[name]["best_s"] / (plain_steps * base["best_s"])
                summary[name] = ratio
                print(f"{name}: the paper's CIFAR-10 search ({search_steps} steps at batch {b}) "
                      f"costs {ratio:.2f} plain epochs ({plain_steps} steps at batch {b})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"device": device.device_kind, "model": args.model, "batch": b,
                       "size": size, "rows": rows, "search_cost_in_plain_epochs": summary,
                       "load_average": os.getloadavg()[0]}, f, indent=1)


if __name__ == "__main__":
    main()
