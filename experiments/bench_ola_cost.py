"""What an OLA step pair costs, side by side in one run: time and compiled memory.

For each model (WRN-16-4 at batch 128, WRN-28-10 at a batch a CPU holds) it compiles, on one
device, and times these step pairs (two SGD steps, t on an augmented batch, t+1 on a plain one):

  fixed      the baseline: a fixed policy (UniformAugment over the same space, then the standard
             pipeline) on step t, the standard pipeline on step t+1 (`gar_jax.train.steps`);
  layerwise_frozen, layerwise_contrib, layerwise_lean
             OLA (`gar_jax.methods.ola`): the learned policy on step t, the plain step t+1, GAR by
             the layer-wise method (`gar_jax.gar_layerwise`) under frozen BatchNorm statistics,
             under the contribution convention, or contribution with `remat` (the tape keeps
             output-gradients only); `layerwise` = OLA's default; REINFORCE update of the policy;
  jvp, vmap  the same with `gar.alignment(..., method="jvp" | "vmap")` ("jvp:C": in chunks of C
             examples, bounding the memory of the forward-mode pass);
  NAME/F     any of these with GAR for a share F of the batch (``ola.reward_fraction``: e.g.
             "jvp/0.5", "jvp:32/0.5": the first half of every sampler's images, in chunks of 32);
  default    OLA as configs/cifar10_ola.py computes GAR (its gar_method, convention, store,
             chunks, reward fraction: printed); `response`: the default with
             ``ola.gar_target = "response"`` (one more gradient of the plain batch a pair),
             `both`: with ``ola.gar_target = "both"`` (that and a second alignment);
  direct     a direct meta-gradient through the SGD update (the paper's cheaper variant: re-use
             G and apply the chain rule through the update): per-op magnitudes of the
             differentiable (bilinear) ops of `gar_jax.augment.ops`, d L_{t+1}(θ_t - lr g_t(m))/dm
             by one vjp with G as the cotangent (reverse-over-reverse through step t), then Adam.

Each pair runs as two jitted calls: the augmentation of step t (the policy's ops + the standard
pipeline; for `direct` only the standard pipeline, its differentiable op is inside the step)
and the rest. The augmentation programs are compiled once per policy and shared (compiling the
Pillow-exact ops dominates compile time on a CPU); the reported time is the sum of both calls.

Time: everything is compiled and called once (untimed warm-up), then `--reps` interleaved
rounds (default 5; each round runs
every method once, the first method rotating), state donated and fed back, so that a change in
the machine's load hits all methods alike. Reported: the median over rounds of each round's time
ratio to "fixed", and the ratio of the fastest rounds; the load average (os.getloadavg) is printed
at the start, after every round and at the end. Run it with nothing else running.
FLOPs: XLA's cost analysis of the core program (the step pair without the augmentation of
step t), a load-independent count of the work (how XLA:CPU counts; not a time). XLA counts a
loop body once: a chunked method's alignment (`lax.map`, B/C chunks) is counted as one chunk.
Memory: XLA's compiled memory analysis, argument + output + temporaries - aliased (donated) bytes,
the larger of the two calls (the augmented batch passes from one to the other): what the pair
needs on the device besides the resident dataset.

Usage: python experiments/bench_ola_cost.py [--models 16-4:128,28-10:8] [--norm batch]
       [--methods fixed,default,exact,direct] [--reps 5] [--quick] [--json out.json]
`exact` = every exact GAR method and convention fast enough to time on a CPU (`EXACT`: not the
chunked vmap). `--reps 0`: memory only.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
# The default OLA configuration: what `python -m gar_jax.main --config=configs/cifar10_ola.py` runs.
CIFAR10_OLA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                           "cifar10_ola.py")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from gar_jax.augment import ops, policies, spaces  # noqa: E402
from gar_jax.data import stats  # noqa: E402
from gar_jax.models.wrn import WideResNet  # noqa: E402
from gar_jax.methods import ola  # noqa: E402
from gar_jax.train import defaults, optim, steps  # noqa: E402
from gar_jax.mesh import data_sharding, make_mesh, replicated  # noqa: E402
from gar_jax.train.state import create_state  # noqa: E402

# Layer-wise variants: name -> config.ola.(gar_method, gar_convention, gar_remat, gar_store).
# The default store ("auto") keeps, layer by layer, the smaller of (input, output-gradient) and
# the per-example gradients; "_acts" variants keep activations everywhere (as before 2026-11-27).
GAR_VARIANTS = {"layerwise": ("layerwise", ola.Options.gar_convention, ola.Options.gar_remat,
                              ola.Options.gar_store),
                "layerwise_frozen": ("layerwise", "frozen", False, "auto"),
                "layerwise_contrib": ("layerwise", "contribution", False, "auto"),
                "layerwise_lean": ("layerwise", "contribution", True, "auto"),
                "layerwise_frozen_lean": ("layerwise", "frozen", True, "auto"),
                "layerwise_frozen_acts": ("layerwise", "frozen", False, "activations"),
                "layerwise_frozen_grads": ("layerwise", "frozen", False, "gradients"),
                "layerwise_contrib_acts": ("layerwise", "contribution", False, "activations"),
                "layerwise_lean_acts": ("layerwise", "contribution", True, "activations")}
# `--methods exact`: every exact GAR method and convention fast enough to time on a CPU (not
# vmap: its per-example conv gradients are ~10x slower here, experiments/alignment.md). Chunked
# jvp at 64 (not 16 as before): at batch 128 it already needs no more memory than "fixed"
# (+0.0%), and fewer, larger chunks run faster, so jvp:16 only costs time. A chunk size that
# does not divide the batch works (`gar.alignment` runs a smaller last chunk); one >= the batch
# is a single chunk, not chunking, and is skipped with a message.
# The config.ola fields that choose how GAR is computed (what `--methods default` copies).
GAR_FIELDS = ("gar_method", "gar_convention", "gar_remat", "gar_store", "chunk_size",
              "num_chunks", "reward_fraction", "target_ema", "gar_target",
              "before_weight", "fd_step")
EXACT = ("layerwise_frozen", "layerwise_contrib", "layerwise_lean", "jvp", "jvp:64")

# Differentiable ops for the direct meta-gradient: (name, initial magnitude, signed).
DIRECT_OPS = (("rotate", 15.0, True), ("shear_x", 0.15, True), ("shear_y", 0.15, True),
              ("translate_x", 5.0, True), ("translate_y", 5.0, True), ("color", 1.5, False),
              ("contrast", 1.5, False), ("brightness", 1.5, False), ("sharpness", 1.5, False))


def standard(key, images):
    return policies.standard(key, images)


def build(depth, width, batch, norm, seed=0):
    """Model, optimizer, OLA config and state, and two random CIFAR-shaped batches on 1 device."""
    mesh = make_mesh(jax.devices()[:1])
    config = defaults.load_config(CIFAR10_OLA)
    config.model.norm = norm
    # samplers of 16 images (batch 128: 8; 32: 2; 8: one of 8): room for a reward fraction
    config.ola.ensemble_size = batch // 16 if batch % 16 == 0 else 1
    mean, std = stats.mean_std("cifar10")
    model = WideResNet(depth=depth, width=width, num_classes=10, mean=mean, std=std, norm=norm)
    tx, schedule = optim.make_optimizer(config, steps_per_epoch=50000 // batch)
    state = create_state(model, tx, image_shape=(32, 32, 3), seed=seed, mesh=mesh)
    rng = np.random.default_rng(seed)
    batches = [{"image": jax.device_put(rng.integers(0, 256, (batch, 32, 32, 3), np.uint8),
                                        data_sharding(mesh)),
                "label": jax.device_put(rng.integers(0, 10, batch).astype(np.int32),
                                        data_sharding(mesh))} for _ in range(2)]
    return mesh, config, model, tx, schedule, state, batches


def fixed_core(model, tx, mesh):
    """Two stack train steps: step t on the already augmented images, step t+1 with standard."""
    first = steps.make_train_step(model, tx, mesh, augment=None, jit=False)
    second = steps.make_train_step(model, tx, mesh, augment=standard, jit=False)

    def core(state, images, labels, batch_plain, key):
        state, m1 = first(state, {"image": images, "label": labels}, key)
        state, m2 = second(state, batch_plain, jax.random.fold_in(key, 1))
        return state, {"loss": (m1["loss"] + m2["loss"]) / 2}

    return core


def direct_core(model, tx, mesh):
    """Direct meta-gradient w.r.t. per-op magnitudes of differentiable ops (module doc)."""
    grad_fn = steps.make_grad_fn(model, mesh)
    meta_tx = optax.adam(1e-2)
    names = [n for n, _, _ in DIRECT_OPS]
    signed = jnp.array([s for _, _, s in DIRECT_OPS])

    def augment(magnitudes, images, op, sign):
        branches = [lambda img, m, name=name: ops.apply(name, img, m, mode="bilinear")
                    for name in names]

        def one(img, a, s):
            return jax.lax.switch(a, branches, img,
                                  magnitudes[a] * jnp.where(signed[a], s, 1.0))

        return jax.vmap(one)(images, op, sign)

    def core(carry, images, labels, batch_plain, key):
        state, meta = carry
        k_op, k_sign, k_plain, k_d1, k_d2 = jax.random.split(key, 5)
        base = images.astype(jnp.float32)
        b = base.shape[0]
        op = jax.random.randint(k_op, (b,), 0, len(names))
        sign = jnp.where(jax.random.bernoulli(k_sign, 0.5, (b,)), 1.0, -1.0)

        def updated_params(magnitudes):
            grads, batch_stats, m = grad_fn(state.params, state.batch_stats,
                                            augment(magnitudes, base, op, sign), labels, k_d1)
            new = steps.apply_gradients(state, grads, batch_stats, tx)
            return new.params, (new, m)

        _, vjp_fn, (mid, m_aug) = jax.vjp(updated_params, meta["magnitudes"], has_aux=True)
        plain = standard(k_plain, batch_plain["image"])
        g, batch_stats, m_plain = grad_fn(mid.params, mid.batch_stats, plain,
                                          batch_plain["label"], k_d2)
        (meta_grad,) = vjp_fn(g)  # d L_{t+1} / d magnitudes, G as the cotangent of θ_{t+1}
        updates, opt_state = meta_tx.update(meta_grad, meta["opt_state"], meta["magnitudes"])
        meta = {"magnitudes": optax.apply_updates(meta["magnitudes"], updates),
                "opt_state": opt_state}
        new = steps.apply_gradients(mid, g, batch_stats, tx)
        return (new, meta), {"loss": (m_aug["loss"] + m_plain["loss"]) / 2}

    def init(state):
        magnitudes = jnp.array([m for _, m, _ in DIRECT_OPS], jnp.float32)
        meta = {"magnitudes": magnitudes, "opt_state": meta_tx.init(magnitudes)}
        meta = jax.tree.map(lambda x: jax.device_put(np.array(x), replicated(mesh)), meta)
        return (state, meta)

    return core, init


def compiled_bytes(compiled):
    mem = compiled.memory_analysis()
    total = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
             - mem.alias_size_in_bytes)
    return total, mem.temp_size_in_bytes


def _flops(cost):
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float(cost["flops"]) if cost and "flops" in cost else None


def compiled_flops(compiled, lowered=None):
    """A program's FLOPs by XLA's cost analysis, None where it gives none.

    Off the CPU it counts the lowered program (HLO before any backend pass): the GPU backend's
    analysis of the compiled program leaves out convolutions it hands to cuDNN as custom calls
    (WRN-28-10's train step counted 20 GFLOP instead of ~4 TFLOP on an H200). On the CPU, the
    compiled program's count (as every CPU figure recorded so far)."""
    import jax

    for program in ((compiled,) if lowered is None or jax.default_backend() == "cpu"
                    else (lowered, compiled)):
        try:
            flops = _flops(program.cost_analysis())
        except Exception:  # noqa: BLE001 - not every backend implements it
            flops = None
        if flops is not None:
            return flops
    return None


def compile_timed(fn, *args):
    """(compiled program, seconds to lower and compile, lowered program)."""
    t0 = time.perf_counter()
    lowered = fn.lower(*args)
    compiled = lowered.compile()
    return compiled, time.perf_counter() - t0, lowered


class Method:
    """One step pair: a shared augmentation program + its own core program."""

    def __init__(self, name, augment_name, core, carry, mesh):
        self.name, self.augment_name, self.carry = name, augment_name, carry
        self.core = jax.jit(core, donate_argnums=0, out_shardings=replicated(mesh))


def bench_model(depth, width, batch, norm, reps, methods):
    mesh, config, model, tx, schedule, state, batches = build(depth, width, batch, norm)
    space = spaces.get_space(config.ola.space)
    key = jax.random.key(1)
    fresh = lambda: jax.tree.map(jnp.copy, state)  # noqa: E731
    # The augmentation programs, compiled once each: (jitted fn, args builder).
    ua = policies.compose(policies.uniform_augment(space), standard)
    augments = {
        "ua": (jax.jit(ua), lambda carry: (key, batches[0]["image"])),
        "ola": (jax.jit(ola.make_policy_augment(space, ola.options(config), standard)),
                lambda carry: (carry.policy, key, batches[0]["image"])),
        "standard": (jax.jit(standard), lambda carry: (key, batches[0]["image"])),
    }
    todo = []
    for name in methods:
        # the paper's target for every OLA method ("default" / "response" / "both": their own)
        for field in ("target_ema", "gar_target", "before_weight", "fd_step"):
            config.ola[field] = getattr(ola.Options, field)
        if name == "fixed":
            todo.append(Method(name, "ua", fixed_core(model, tx, mesh), fresh(), mesh))
        elif name == "direct":
            core, init = direct_core(model, tx, mesh)
            todo.append(Method(name, "standard", core, init(fresh()), mesh))
        elif name == "nslr":  # OLA's pair without GAR (its reward is set below): the floor
            pass
        elif name in ("default", "response", "both"):  # whatever configs/cifar10_ola.py uses
            default = defaults.load_config(CIFAR10_OLA).ola
            for field in GAR_FIELDS:
                config.ola[field] = default[field]
            if name != "default":
                config.ola.gar_target = name
            print(f"  {name:12s} = " + ", ".join(f"{f}={config.ola[f]}" for f in GAR_FIELDS),
                  flush=True)
        else:  # "layerwise[_frozen|_contrib]", "jvp[:chunk]", "vmap[:chunk]", each "[/fraction]"
            name_chunk, _, fraction = name.partition("/")
            config.ola.reward_fraction = float(fraction or 1)  # GAR for that share of the batch
            method, _, chunk = name_chunk.partition(":")
            if chunk and int(chunk) >= batch:
                print(f"  {name:12s} skipped: chunk size {chunk} >= batch {batch} is a single "
                      f"chunk (use '{method}' or a smaller chunk)", flush=True)
                continue
            (config.ola.gar_method, config.ola.gar_convention, config.ola.gar_remat,
             config.ola.gar_store) = GAR_VARIANTS.get(method, (method, "frozen", False, "auto"))
            config.ola.chunk_size = int(chunk or 0)
            config.ola.num_chunks = 1  # "jvp" / "vmap": the whole batch at once
        if name not in ("fixed", "direct"):
            config.ola.reward = "nslr" if name == "nslr" else "gar"
            core = ola.make_pair_core(model, tx, mesh, space,
                                      ola.meta_optimizer(config, schedule),
                                      ola.options(config), standard=standard)
            todo.append(Method(name, "ola", core,
                               ola.init_state(fresh(), config, space, schedule), mesh))

    rows, compiled_augments = {}, {}
    for m in todo:
        if m.augment_name not in compiled_augments:
            fn, args = augments[m.augment_name]
            compiled, seconds, _ = compile_timed(fn, *args(m.carry))
            compiled_augments[m.augment_name] = compiled
            print(f"  augmentation '{m.augment_name}' compiled in {seconds:6.1f} s: "
                  f"{compiled_bytes(compiled)[0] / 2**20:8.1f} MiB", flush=True)
        augmented = compiled_augments[m.augment_name](*augments[m.augment_name][1](m.carry))
        images, sample = augmented if m.augment_name == "ola" else (augmented, None)
        m.inputs = lambda aug, m=m: ((aug[0], aug[1], batches[0]["label"], batches[1], key)
                                     if m.augment_name == "ola" else
                                     (aug, batches[0]["label"], batches[1], key))
        m.compiled, seconds, lowered = compile_timed(m.core, m.carry, *m.inputs(augmented))
        aug_bytes = compiled_bytes(compiled_augments[m.augment_name])[0]
        core_bytes, temp = compiled_bytes(m.compiled)
        flops = compiled_flops(m.compiled, lowered)
        rows[m.name] = {"bytes": max(aug_bytes, core_bytes), "core_bytes": core_bytes,
                        "core_temp_bytes": temp, "core_flops": flops, "compile_s": seconds,
                        "seconds_all": [], "augment_seconds_all": []}
        print(f"  {m.name:12s} compiled in {seconds:6.1f} s: {max(aug_bytes, core_bytes) / 2**20:8.1f}"
              f" MiB (temporaries {temp / 2**20:8.1f} MiB), core "
              f"{flops / 1e9 if flops is not None else float('nan'):7.1f} GFLOP", flush=True)
        del images, sample, augmented
    for r in range(-1 if reps else 0, reps):  # round -1: an untimed warm-up call of each
        # Interleaved: every round runs each method once, starting one later each round, so
        # that a change in the machine's load and the position in the round hit all alike.
        order = todo[r % len(todo):] + todo[:r % len(todo)]
        for m in order:
            aug_fn = compiled_augments[m.augment_name]
            t0 = time.perf_counter()
            augmented = jax.block_until_ready(aug_fn(*augments[m.augment_name][1](m.carry)))
            t1 = time.perf_counter()
            m.carry, out = m.compiled(m.carry, *m.inputs(augmented))
            jax.block_until_ready((m.carry, out))
            t2 = time.perf_counter()
            if r >= 0:
                rows[m.name]["seconds_all"].append(t2 - t0)
                rows[m.name]["augment_seconds_all"].append(t1 - t0)
        if r < 0:
            continue
        print(f"  round {r + 1}: " + ", ".join(
            f"{m.name} {rows[m.name]['seconds_all'][-1]:.2f} s" for m in todo) +
            f"  (load {os.getloadavg()[0]:.2f})", flush=True)
    for row in rows.values():  # None with --reps 0: memory only
        row["seconds"] = min(row["seconds_all"]) if row["seconds_all"] else None
        row["seconds_median"] = (float(np.median(row["seconds_all"])) if row["seconds_all"]
                                 else None)
    return rows


def relative(rows, base="fixed"):
    """{method: {"time_median", "time_min", "memory"}} relative to `base` (fractions): the
    median over rounds of each round's time ratio (one load for all methods of a round), the
    ratio of the fastest rounds, and the ratio of compiled bytes."""
    out = {}
    b = rows[base]
    for method, r in rows.items():
        if method == base:
            continue
        entry = {"memory": r["bytes"] / b["bytes"] - 1}
        if r.get("core_flops") and b.get("core_flops"):
            entry["flops"] = r["core_flops"] / b["core_flops"] - 1
        if r["seconds_all"]:
            ratios = np.array(r["seconds_all"]) / np.array(b["seconds_all"])
            entry.update(time_median=float(np.median(ratios)) - 1,
                         time_min=r["seconds"] / b["seconds"] - 1)
        out[method] = entry
    return out


def expand(methods: str) -> list:
    """The --methods list with `exact` expanded to `EXACT` (duplicates dropped)."""
    out = []
    for name in methods.split(","):
        for m in (EXACT if name == "exact" else (name,)):
            if m not in out:
                out.append(m)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="16-4:128,28-10:8",
                        help="comma-separated DEPTH-WIDTH:BATCH")
    parser.add_argument("--norm", default="batch", choices=["batch", "group"])
    parser.add_argument("--methods", default="fixed,exact,direct",
                        help="fixed, nslr (OLA's pair without GAR), default, response, both, "
                             "exact, layerwise[_frozen|_contrib|_lean], "
                             "jvp[:chunk], vmap[:chunk], direct")
    parser.add_argument("--reps", type=int, default=5, help="interleaved rounds (0: memory only)")
    parser.add_argument("--quick", action="store_true", help="WRN-10-1 at batch 16 (smoke test)")
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args()
    # A CPU benchmark unless told otherwise (experiments/bench_gpu.py imports this module and
    # runs its programs on the accelerator); read when JAX first initializes its backends.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    models = "10-1:16" if args.quick else args.models
    methods = expand(args.methods)
    started = time.perf_counter()
    load = os.getloadavg()
    print(f"device: {jax.devices()[0].device_kind} x1 (JAX {jax.__version__}), "
          f"{os.cpu_count()} CPUs; norm: {args.norm}; {args.reps} rounds; methods "
          f"{','.join(methods)}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
          flush=True)
    results = {"load_average_start": load, "norm": args.norm, "reps": args.reps}
    for spec in models.split(","):
        arch, batch = spec.split(":")
        depth, width = map(int, arch.split("-"))
        print(f"WRN-{depth}-{width}, batch {batch}:", flush=True)
        rows = bench_model(depth, width, int(batch), args.norm, args.reps, methods)
        results[f"WRN-{depth}-{width}:{batch}"] = rows
        if "fixed" in rows:
            rel = relative(rows)
            for method, r in rel.items():
                rows[method]["relative"] = r
            print("  relative to 'fixed' (time: median of the rounds' ratios / fastest vs "
                  "fastest):")
            for method, r in rel.items():
                timing = (f"{100 * r['time_median']:+7.1f}% / {100 * r['time_min']:+7.1f}% time"
                          if "time_median" in r else "       (not timed)       ")
                flops = f"  {100 * r['flops']:+7.1f}% FLOPs" if "flops" in r else ""
                print(f"  {method:18s} {timing}  {100 * r['memory']:+7.1f}% memory{flops}")
    load = os.getloadavg()
    results["load_average_end"] = load
    print(f"total run time {time.perf_counter() - started:.0f} s; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
