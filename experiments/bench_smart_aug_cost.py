"""What a smart_augmentation step costs, side by side in one run: time and compiled memory per
SGD step, relative to a plain step (sibling of bench_ola_cost.py).

For each model it compiles, on one device, and times:

  plain       one ordinary SGD step with the standard pipeline (`gar_jax.train.steps`);
  smart_aug   one smart_augmentation call with K = 1 (`gar_jax.methods.smart_aug`): the
              standard pipeline, N = 3 learned differentiable ops per image, the mixed loss
              (clean + augmented forward/backward), the optax update, and the meta step (held-out
              forward/backward and the reverse-over-reverse pass through the update);
  smart_aug:K the same with K unrolled steps per meta step (cost per SGD step = call / K);
  ola         OLA's step pair with layer-wise GAR (`gar_jax.methods.ola`), per SGD step = pair / 2;
  direct      bench_ola_cost.py's direct meta-gradient pair (per-op magnitudes, one vjp through
              the SGD update with G as the cotangent), per SGD step = pair / 2.

Each method's whole call (augmentation included) is one jitted program, compiled first; then the
methods run round-robin for `--reps` rounds, so a change in the machine's load hits all alike;
the minimum over rounds is reported. Memory: XLA's compiled memory analysis, argument + output +
temporaries - aliased (donated) bytes, besides the resident dataset.

Timings are comparable within one run only (the same `plain` row is its reference); on a loaded
machine, run the expensive methods in separate processes, each with `plain`, e.g.
``--methods plain,smart_aug`` and ``--methods plain,ola,direct``.

Usage: python experiments/bench_smart_aug_cost.py [--models 16-4:128,28-10:8]
       [--methods plain,smart_aug,smart_aug:2,ola,direct] [--reps 3] [--quick] [--json out.json]
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gar_jax.augment import policies, spaces  # noqa: E402
from gar_jax.data import stats  # noqa: E402
from gar_jax.methods import ola, smart_aug  # noqa: E402
from gar_jax.models.wrn import WideResNet  # noqa: E402
from gar_jax.train import defaults, optim, steps  # noqa: E402
from gar_jax.mesh import data_sharding, make_mesh, replicated  # noqa: E402
from gar_jax.train.state import create_state  # noqa: E402


def standard(key, images):
    return policies.standard(key, images)


def compiled_bytes(compiled):
    mem = compiled.memory_analysis()
    return (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes)


def build(depth, width, batch, seed=0):
    """Model, optimizer, config and state, and random CIFAR-shaped batches on one device."""
    mesh = make_mesh(jax.devices()[:1])
    config = defaults.load_config(os.path.join(CONFIGS, "cifar10_smart_aug.py"))
    mean, std = stats.mean_std("cifar10")
    model = WideResNet(depth=depth, width=width, num_classes=10, mean=mean, std=std)
    tx, schedule = optim.make_optimizer(config, steps_per_epoch=50000 // batch)
    state = create_state(model, tx, image_shape=(32, 32, 3), seed=seed, mesh=mesh)
    rng = np.random.default_rng(seed)
    batches = [{"image": jax.device_put(rng.integers(0, 256, (batch, 32, 32, 3), np.uint8),
                                        data_sharding(mesh)),
                "label": jax.device_put(rng.integers(0, 10, batch).astype(np.int32),
                                        data_sharding(mesh))} for _ in range(3)]
    return mesh, config, model, tx, schedule, state, batches


def methods_for(names, mesh, config, model, tx, schedule, state, batches):
    """{name: (jitted fn, initial carry, args(carry), SGD steps per call)}."""
    fresh = lambda: jax.tree.map(jnp.copy, state)  # noqa: E731
    out = {}
    for name in names:
        kind, _, arg = name.partition(":")
        if kind == "plain":
            fn = steps.make_train_step(model, tx, mesh, augment=standard, schedule=schedule)
            out[name] = (fn, fresh(), lambda c: (c, batches[0], jax.random.key(0)), 1)
        elif kind == "smart_aug":
            k = int(arg or 1)
            config.smart_aug.inner_steps = k
            space = smart_aug.make_space(config)
            fn = smart_aug.make_meta_step(model, tx, mesh, space,
                                          smart_aug.meta_optimizer(config),
                                          smart_aug.options(config), standard=standard,
                                          schedule=schedule)
            carry = smart_aug.init_state(fresh(), config, space)
            inner = tuple(batches[i % 2] for i in range(k))
            out[name] = (fn, carry, lambda c, inner=inner: (c, inner, batches[2]), k)
        elif kind == "ola":
            oc = defaults.load_config(os.path.join(CONFIGS, "cifar10_ola.py:ra"))
            oc.ola.ensemble_size = 8 if batches[0]["label"].shape[0] % 8 == 0 else 1
            space = spaces.get_space("randaug")
            fn = ola.make_pair_step(model, tx, mesh, space, ola.meta_optimizer(oc, schedule),
                                    ola.options(oc), standard=standard, schedule=schedule)
            carry = ola.init_state(fresh(), oc, space, schedule)
            out[name] = (fn, carry, lambda c: (c, batches[0], batches[1]), 2)
        elif kind == "direct":
            try:
                import bench_ola_cost
                core, init = bench_ola_cost.direct_core(model, tx, mesh)
            except (ImportError, AttributeError) as e:
                print(f"  direct: skipped (bench_ola_cost.direct_core not available: {e})")
                continue

            def pair(carry, batch, batch_plain, key, core=core):
                images = standard(jax.random.fold_in(key, 7), batch["image"])
                return core(carry, images, batch["label"], batch_plain, key)

            fn = jax.jit(pair, donate_argnums=0, out_shardings=replicated(mesh))
            out[name] = (fn, init(fresh()),
                         lambda c: (c, batches[0], batches[1], jax.random.key(0)), 2)
        else:
            raise SystemExit(f"unknown method {name!r}")
    return out


def bench_model(depth, width, batch, reps, names):
    mesh, config, model, tx, schedule, state, batches = build(depth, width, batch)
    todo = methods_for(names, mesh, config, model, tx, schedule, state, batches)
    rows, compiled, carries = {}, {}, {}
    for name, (fn, carry, args, per_call) in todo.items():
        t0 = time.perf_counter()
        compiled[name] = fn.lower(*args(carry)).compile()
        seconds = time.perf_counter() - t0
        carries[name] = carry
        rows[name] = {"bytes": compiled_bytes(compiled[name]), "compile_s": seconds,
                      "steps_per_call": per_call, "seconds_all": []}
        print(f"  {name:12s} compiled in {seconds:6.1f} s: "
              f"{rows[name]['bytes'] / 2**20:9.1f} MiB per call", flush=True)
    for r in range(reps):
        for name, (_, _, args, per_call) in todo.items():
            t0 = time.perf_counter()
            carries[name], metrics = compiled[name](*args(carries[name]))
            jax.block_until_ready((carries[name], metrics))
            rows[name]["seconds_all"].append((time.perf_counter() - t0) / per_call)
        print(f"  round {r + 1}: " + ", ".join(
            f"{n} {rows[n]['seconds_all'][-1]:.3f} s/step" for n in todo), flush=True)
    for row in rows.values():
        row["seconds_per_step"] = min(row["seconds_all"]) if row["seconds_all"] else None
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="16-4:128,28-10:8",
                        help="comma-separated DEPTH-WIDTH:BATCH")
    parser.add_argument("--methods", default="plain,smart_aug,smart_aug:2,ola,direct")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="WRN-10-1 at batch 16 (smoke test)")
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args()
    models = "10-1:16" if args.quick else args.models
    started = time.perf_counter()
    print(f"device: {jax.devices()[0].device_kind} x1 (JAX {jax.__version__}), "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.reps} rounds")
    results = {}
    for spec in models.split(","):
        arch, batch = spec.split(":")
        depth, width = map(int, arch.split("-"))
        print(f"WRN-{depth}-{width}, batch {batch}:", flush=True)
        rows = bench_model(depth, width, int(batch), args.reps, args.methods.split(","))
        results[f"WRN-{depth}-{width}:{batch}"] = rows
        base = rows.get("plain")
        if base:
            print("  per SGD step, relative to 'plain' (memory: per call):")
            for name, r in rows.items():
                if name == "plain":
                    continue
                t = ("   (not timed)" if r["seconds_per_step"] is None else
                     f"{100 * (r['seconds_per_step'] / base['seconds_per_step'] - 1):+8.1f}% time")
                print(f"  {name:12s} {t}  {100 * (r['bytes'] / base['bytes'] - 1):+8.1f}% memory")
    print(f"total run time {time.perf_counter() - started:.0f} s, "
          f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
