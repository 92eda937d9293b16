"""What every in-loop method costs per SGD step, side by side in one run: time and compiled memory.

One model, one batch size, one device, random CIFAR-shaped data (the cost does not depend on the
values). Every entry is one jitted program, compiled first; its cost is reported per SGD step
(per image scored for FAA) relative to `plain`:

  plain             one ordinary SGD step with the standard pipeline (pad-crop, flip, Cutout);
  ua                one SGD step with UniformAugment over the RA space, then the standard
                    pipeline (what a fixed policy costs: the Pillow-exact ops on the batch);
  ola[_<gar>]       OLA's step pair (`gar_jax.methods.ola.make_pair_step`: the learned policy's
                    ops, the augmented step, the plain step, the rewards, REINFORCE) / 2, for
                    each GAR method and convention of ``--gar`` (`bench_ola_cost.GAR_VARIANTS`,
                    "jvp", "jvp:C"); ``ola_nslr``: the same pair with NSLR rewards (no GAR);
  direct            bench_ola_cost's direct meta-gradient pair (reverse-over-reverse through the
                    SGD update w.r.t. per-op magnitudes) / 2;
  smart_aug         one smart_augmentation call with K = 1 (`gar_jax.methods.smart_aug`): mixed
                    loss (clean + augmented), the SGD update, and the meta step through it;
  dra_search        one DRA search step (`gar_jax.methods.dra.make_search_step`): a policy update
                    through the relaxed layers and a weight update, op, apply probability,
                    magnitude noise and sign drawn per image and only each image's op computed
                    (the authors' estimator);
  dra_replay        one SGD step of DRA's final training (crop/flip, the published CIFAR-10
                    policy replayed, Cutout: `gar_jax.methods.dra.make_replay_augment`);
  faa_score         FAA's density-matching score (`gar_jax.methods.faa.Scorer`): ``--faa``
                    C:N = C candidates x 5 copies x N held-out images in one call; reported per
                    image scored, relative to `plain` per image trained.

Time: after compiling, every entry runs once untimed, then ``--reps`` interleaved rounds (each
round runs every entry once, the first entry rotating). Reported: the median over rounds of each
round's ratio to `plain` (one load for all entries of a round) and the ratio of the fastest
rounds; the load average is printed at the start, after every round and at the end. Run it with
nothing else running on the machine. Memory: XLA's compiled memory analysis (arguments + outputs
+ temporaries - donated), per call, relative to `plain`'s call.

Usage: python experiments/bench_cost.py [--model 16-4:64] [--reps 5] [--gar ...] [--only ...]
       [--json out.json]
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
CONFIGS = os.path.join(HERE, "..", "configs")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import bench_ola_cost  # noqa: E402
from gar_jax.augment import faa_policy, policies, spaces  # noqa: E402
from gar_jax.data import stats  # noqa: E402
from gar_jax.mesh import data_sharding, make_mesh, replicated  # noqa: E402
from gar_jax.methods import dra, ola, smart_aug  # noqa: E402
from gar_jax.methods import faa as faa_method  # noqa: E402
from gar_jax.models.wrn import WideResNet  # noqa: E402
from gar_jax.train import defaults, optim, steps  # noqa: E402
from gar_jax.train.state import create_state  # noqa: E402

DEFAULT_GAR = "layerwise_frozen,layerwise_contrib,layerwise_lean,jvp,jvp:64"
ENTRIES = ("plain", "ua", "ola", "ola_nslr", "direct", "smart_aug", "dra_search",
           "dra_replay", "faa_score")


def standard(key, images):
    return policies.standard(key, images)


class Entry:
    """One jitted program: ``fn(carry, *args(carry)) -> (carry, metrics)``; `units` SGD steps
    (or images, for `faa_score`) per call."""

    def __init__(self, name, fn, carry, args, units, unit="step"):
        self.name, self.fn, self.carry, self.args = name, fn, carry, args
        self.units, self.unit = units, unit
        self.seconds = []

    def compile(self):
        t0 = time.perf_counter()
        self.compiled = self.fn.lower(self.carry, *self.args(self.carry)).compile()
        self.compile_s = time.perf_counter() - t0
        mem = self.compiled.memory_analysis()
        self.bytes = (mem.argument_size_in_bytes + mem.output_size_in_bytes
                      + mem.temp_size_in_bytes - mem.alias_size_in_bytes)

    def call(self):
        t0 = time.perf_counter()
        self.carry, metrics = self.compiled(self.carry, *self.args(self.carry))
        jax.block_until_ready((self.carry, metrics))
        return (time.perf_counter() - t0) / self.units


def build_entries(depth, width, batch, names, gar, faa_spec, seed=0):
    mesh = make_mesh(jax.devices()[:1])
    mean, std = stats.mean_std("cifar10")
    model = WideResNet(depth=depth, width=width, num_classes=10, mean=mean, std=std)
    base_config = defaults.load_config(os.path.join(CONFIGS, "cifar10_ola.py:ra"))
    tx, schedule = optim.make_optimizer(base_config, steps_per_epoch=50000 // batch)
    state = create_state(model, tx, image_shape=(32, 32, 3), seed=seed, mesh=mesh)
    rng = np.random.default_rng(seed)
    batches = [{"image": jax.device_put(rng.integers(0, 256, (batch, 32, 32, 3), np.uint8),
                                        data_sharding(mesh)),
                "label": jax.device_put(rng.integers(0, 10, batch).astype(np.int32),
                                        data_sharding(mesh))} for _ in range(3)]
    key = jax.random.key(1)
    fresh = lambda: jax.tree.map(jnp.copy, state)  # noqa: E731
    ra_space = spaces.get_space("randaug")
    out = []

    def train_step(name, augment):
        fn = steps.make_train_step(model, tx, mesh, augment=augment, schedule=schedule)
        out.append(Entry(name, fn, fresh(), lambda c: (batches[0], key), 1))

    def ola_pair(name, gar_method, convention, remat, store, chunk, reward="gar"):
        oc = defaults.load_config(os.path.join(CONFIGS, "cifar10_ola.py:ra"))
        oc.ola.ensemble_size = 8 if batch % 8 == 0 else 1
        oc.ola.reward = reward
        oc.ola.gar_method, oc.ola.gar_convention, oc.ola.gar_remat = gar_method, convention, remat
        oc.ola.gar_store = store
        oc.ola.chunk_size = chunk
        oc.ola.num_chunks = 1  # "jvp" without ":C" is the whole batch at once
        oc.ola.reward_fraction = 1.0  # GAR for every image
        fn = ola.make_pair_step(model, tx, mesh, ra_space, ola.meta_optimizer(oc, schedule),
                                ola.options(oc), standard=standard, schedule=schedule)
        carry = ola.init_state(fresh(), oc, ra_space, schedule)
        out.append(Entry(name, fn, carry, lambda c: (batches[0], batches[1]), 2))

    for name in names:
        if name == "plain":
            train_step(name, standard)
        elif name == "ua":
            train_step(name, policies.compose(policies.uniform_augment(ra_space), standard))
        elif name == "ola":
            for variant in gar.split(","):
                method, _, chunk = variant.partition(":")
                if chunk and batch % int(chunk):
                    print(f"  ola_{variant}: skipped (chunk {chunk} does not divide batch {batch})")
                    continue
                gm, conv, remat, store = bench_ola_cost.GAR_VARIANTS.get(
                    method, (method, "frozen", False, "auto"))
                ola_pair(f"ola_{variant}", gm, conv, remat, store, int(chunk or 0))
        elif name == "ola_nslr":
            ola_pair(name, "layerwise", "frozen", False, "auto", 0, reward="nslr")
        elif name == "direct":
            core, init = bench_ola_cost.direct_core(model, tx, mesh)

            def pair(carry, batch_aug, batch_plain, core=core):
                images = standard(jax.random.fold_in(key, 7), batch_aug["image"])
                return core(carry, images, batch_aug["label"], batch_plain, key)

            fn = jax.jit(pair, donate_argnums=0, out_shardings=replicated(mesh))
            out.append(Entry(name, fn, init(fresh()), lambda c: (batches[0], batches[1]), 2))
        elif name == "smart_aug":
            sc = defaults.load_config(os.path.join(CONFIGS, "cifar10_smart_aug.py"))
            sc.smart_aug.inner_steps = 1
            space = smart_aug.make_space(sc)
            fn = smart_aug.make_meta_step(model, tx, mesh, space, smart_aug.meta_optimizer(sc),
                                          smart_aug.options(sc), standard=standard,
                                          schedule=schedule)
            carry = smart_aug.init_state(fresh(), sc, space)
            out.append(Entry(name, fn, carry, lambda c: ((batches[0],), batches[2]), 1))
        elif name == "dra_search":
            dc = defaults.load_config(os.path.join(CONFIGS, "cifar10_dra_search.py"))
            dc.dra.search.batch_size = batch
            dc.batch_size = batch
            fn = dra.make_search_step(dc, model, tx, mesh, schedule=schedule)
            out.append(Entry(name, fn, dra.init_state(fresh(), dc),
                             lambda c: (batches[0], batches[1]), 1))
        elif name == "dra_replay":
            published = defaults.load_config(os.path.join(CONFIGS, "cifar10_dra.py"))
            train_step(name, dra.make_replay_augment(published, "cifar10", None))
        elif name == "faa_score":
            candidates, images = (int(v) for v in faa_spec.split(":"))
            copies = 5
            scorer = faa_method.Scorer(model, frozenset(faa_policy.OP_NAME[o] for o in faa_policy.FAA_OPS),
                                       copies, None, candidates)
            folds = jax.tree.map(lambda v: v[None], {"params": state.params,
                                                     "batch_stats": state.batch_stats})
            prng = np.random.RandomState(seed)
            tabs = [faa_policy.tables(tuple(tuple((faa_policy.FAA_OPS[prng.randint(15)], prng.rand(),
                                            prng.rand()) for _ in range(2)) for _ in range(5)),
                               32, 32) for _ in range(candidates)]
            tabs = {k: jnp.asarray(np.stack([t[k] for t in tabs]))[None] for k in tabs[0]}
            da = {"image": jnp.asarray(rng.integers(0, 256, (1, images, 32, 32, 3), np.uint8)),
                  "label": jnp.asarray(rng.integers(0, 10, (1, images)).astype(np.int32))}
            keys = jax.random.split(jax.random.PRNGKey(2), candidates)[None]

            def score(carry, variables, da_images, da_labels, tabs, keys):
                acc, loss = scorer.score(variables, da_images, da_labels, tabs, keys)
                return carry, {"accuracy": acc, "loss": loss}

            out.append(Entry(name, jax.jit(score), jnp.zeros(()),
                             lambda c: (folds, da["image"], da["label"], tabs, keys),
                             candidates * copies * images, unit="image"))
        else:
            raise SystemExit(f"unknown entry {name!r}; known: {', '.join(ENTRIES)}")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="16-4:64", help="DEPTH-WIDTH:BATCH")
    parser.add_argument("--reps", type=int, default=5, help="interleaved rounds (0: memory only)")
    parser.add_argument("--gar", default=DEFAULT_GAR,
                        help="OLA's GAR variants (bench_ola_cost.GAR_VARIANTS names, jvp[:C])")
    parser.add_argument("--only", default=",".join(ENTRIES), help="comma-separated entries")
    parser.add_argument("--faa", default="4:32", help="FAA score call: CANDIDATES:IMAGES")
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args()
    arch, batch = args.model.split(":")
    depth, width = (int(v) for v in arch.split("-"))
    batch = int(batch)
    names = args.only.split(",")
    if "plain" not in names:
        raise SystemExit("--only must include 'plain' (every figure is relative to it)")
    load = load_start = os.getloadavg()
    started = time.perf_counter()
    device = jax.devices()[0]
    print(f"device: {device.device_kind} x1 (JAX {jax.__version__}), {os.cpu_count()} CPUs; "
          f"WRN-{depth}-{width}, batch {batch}, 32x32x3; {args.reps} rounds; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    entries = build_entries(depth, width, batch, names, args.gar, args.faa)
    for e in entries:
        e.compile()
        print(f"  {e.name:24s} compiled in {e.compile_s:6.1f} s: {e.bytes / 2**20:8.1f} MiB "
              f"per call ({e.units} {e.unit}s)", flush=True)
    for e in entries:  # untimed warm-up call of each
        e.call()
    for r in range(args.reps):
        order = entries[r % len(entries):] + entries[:r % len(entries)]
        for e in order:
            e.seconds.append(e.call())
        timings = ", ".join(f"{e.name} {e.seconds[-1] * (1e3 if e.unit == 'image' else 1):.3f}"
                            for e in entries)
        print(f"  round {r + 1} (s per step, ms per image): {timings}  "
              f"(load {os.getloadavg()[0]:.2f})", flush=True)
    plain = next(e for e in entries if e.name == "plain")
    rows = {}
    print(f"  {'entry':24s} {'per unit':>12s} {'time vs plain (median / fastest)':>34s} "
          f"{'memory vs plain':>16s}")
    for e in entries:
        row = {"unit": e.unit, "units_per_call": e.units, "bytes": e.bytes,
               "compile_s": e.compile_s, "seconds_all": e.seconds,
               "memory_relative": e.bytes / plain.bytes}
        per_unit_plain = [s / (batch if e.unit == "image" else 1) for s in plain.seconds]
        if e.seconds:
            ratios = np.array(e.seconds) / np.array(per_unit_plain)
            row.update(seconds_median=float(np.median(e.seconds)), seconds_min=min(e.seconds),
                       time_relative_median=float(np.median(ratios)),
                       time_relative_fastest=min(e.seconds) / min(per_unit_plain))
            per = (f"{1e3 * row['seconds_median']:8.3f} ms/im" if e.unit == "image" else
                   f"{row['seconds_median']:8.3f} s/st")
            timing = f"{row['time_relative_median']:8.2f}x / {row['time_relative_fastest']:6.2f}x"
        else:
            per, timing = "(not timed)", ""
        rows[e.name] = row
        print(f"  {e.name:24s} {per:>12s} {timing:>34s} {row['memory_relative']:15.2f}x")
    load = os.getloadavg()
    print(f"total run time {time.perf_counter() - started:.0f} s; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"device": device.device_kind, "model": f"WRN-{depth}-{width}",
                       "batch": batch, "reps": args.reps, "faa": args.faa,
                       "load_average_start": list(load_start), "load_average_end": list(load),
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
