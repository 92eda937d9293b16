"""One-command accelerator benchmark: train step, OLA step-pair cost, augmentation throughput.

    python experiments/bench_gpu.py                  # one GPU, about 8 minutes on an H100
    python experiments/bench_gpu.py --quick          # CPU smoke test at tiny sizes

It measures, on the first device JAX sees, and writes ``<out>/bench_gpu_<device>.json`` plus
``.md`` (a markdown table; the device is named in both):

1. **Train step** (`gar_jax.train.steps.make_train_step`: standard augmentation, forward/backward
   with BatchNorm, SGD) of WRN-28-10 at batch 256 (CIFAR shapes), in bfloat16 and float32:
   images/s (median of the timed steps after a warm-up step), the step's FLOPs from XLA's cost
   analysis of the lowered program (the GPU backend's analysis of the compiled program leaves
   out the convolutions it runs in cuDNN: 20 GFLOP for a ~4 TFLOP step), and MFU = achieved FLOP/s / the device's peak (bf16 dense tensor-core peak for
   bfloat16; TF32 peak for float32, which XLA uses for float32 convolutions on NVIDIA GPUs by
   default). Peaks come from `PEAK_TFLOPS` by device name or from ``--peak_tflops``.
2. **OLA step pair** (`experiments/bench_ola_cost.py`'s programs) of WRN-28-10 (BatchNorm,
   float32, batch 256) for the fixed-policy baseline, OLA's default (configs/cifar10_ola.py's GAR
   settings) and every exact GAR method and convention (`bench_ola_cost.EXACT`; `--ola_methods`
   picks others), each in its own process (so that the device's peak memory is that
   method's): seconds (median and minimum of the rounds), XLA's compiled memory analysis and the
   device's ``peak_bytes_in_use``, each also relative to "fixed". Processes share JAX's
   persistent compilation cache (the augmentation programs compile once).
3. **Augmentation policies** (`experiments/bench_augment.POLICIES` and the OLA sampler at its
   initial policy): images/s of the jitted policy on a batch of 256 uint8 32x32 crops.

Sections (``--sections``, default all three) run in that order within ``--budget_s`` (default 450 s of the 8 minutes: compile times
vary); what does not fit is recorded as skipped.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

import bench_ola_cost  # noqa: E402 - after the paths above

# Dense peak TFLOP/s per device kind (vendor data sheets): {"bfloat16": ..., "float32": ...}
# (float32 = TF32 tensor cores on NVIDIA, as XLA computes float32 convolutions by default).
PEAK_TFLOPS = {
    "H100 80GB HBM3": {"bfloat16": 989.4, "float32": 494.7},     # H100 SXM
    "H100 PCIe": {"bfloat16": 756.0, "float32": 378.0},
    "H200": {"bfloat16": 989.4, "float32": 494.7},
    "A100": {"bfloat16": 312.0, "float32": 156.0},
}


def peak_for(device_kind: str, dtype: str, override: float):
    if override:
        return override * 1e12
    for name, peaks in PEAK_TFLOPS.items():
        if name in device_kind:
            return peaks[dtype] * 1e12
    return None


def train_step_rows(args):
    import jax
    import ml_collections
    import numpy as np

    from gar_jax.augment import policies
    from gar_jax.data import stats
    from gar_jax.models.wrn import WideResNet
    from gar_jax.train import optim, steps
    from gar_jax.mesh import data_sharding, make_mesh
    from gar_jax.train.state import create_state
    import jax.numpy as jnp

    mesh = make_mesh(jax.devices()[:1])
    kind = jax.devices()[0].device_kind
    mean, std = stats.mean_std("cifar10")
    rows = []
    for dtype in ("bfloat16", "float32"):
        model = WideResNet(args.depth, args.width, 10, mean=mean, std=std,
                           dtype={"bfloat16": jnp.bfloat16, "float32": jnp.float32}[dtype])
        config = ml_collections.ConfigDict(dict(
            learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
            decay_all_params=True, grad_clip_norm=5.0, warmup_epochs=5, num_epochs=200))
        tx, schedule = optim.make_optimizer(config, steps_per_epoch=195)
        state = create_state(model, tx, image_shape=(32, 32, 3), seed=0, mesh=mesh)
        rng = np.random.default_rng(0)
        batch = jax.device_put(
            {"image": rng.integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8),
             "label": rng.integers(0, 10, (args.batch,)).astype(np.int32)}, data_sharding(mesh))
        step = steps.make_train_step(model, tx, mesh, augment=policies.get_policy("standard"),
                                     schedule=schedule)
        compiled, compile_s, lowered = bench_ola_cost.compile_timed(
            step, state, batch, jax.random.key(0))
        # The lowered program's count off the CPU: the GPU backend's count of the compiled
        # program leaves out the convolutions it runs in cuDNN (bench_ola_cost.compiled_flops).
        flops = bench_ola_cost.compiled_flops(compiled, lowered)
        flops_compiled = bench_ola_cost.compiled_flops(compiled)
        times = []
        for i in range(args.steps + 1):  # the first call warms up
            t0 = time.perf_counter()
            state, metrics = compiled(state, batch, jax.random.key(i))
            jax.block_until_ready((state, metrics))
            if i:
                times.append(time.perf_counter() - t0)
        median = statistics.median(times)
        peak = peak_for(kind, dtype, args.peak_tflops)
        row = {"dtype": dtype, "model": f"WRN-{args.depth}-{args.width}", "batch": args.batch,
               "compile_s": compile_s, "step_s_median": median, "step_s_min": min(times),
               "images_per_s": args.batch / median, "gflop_per_step": flops / 1e9,
               "gflop_per_step_compiled_analysis": flops_compiled / 1e9,
               "tflops_per_s": flops / median / 1e12,
               "peak_tflops": peak / 1e12 if peak else None,
               "mfu": flops / median / peak if peak else None}
        print(f"  train step {dtype}: {row['images_per_s']:.0f} img/s, "
              f"{row['tflops_per_s']:.1f} TFLOP/s, MFU "
              f"{'%.1f%%' % (100 * row['mfu']) if peak else 'n/a (unknown peak)'}", flush=True)
        rows.append(row)
        del state, compiled
    return rows


def ola_child(args):
    """One OLA method in this process: compile, time `--reps` rounds, report memory."""
    import jax

    depth, width = map(int, args.ola_model.split(":")[0].split("-"))
    batch = int(args.ola_model.split(":")[1])
    rows = bench_ola_cost.bench_model(depth, width, batch, "batch", args.reps, [args.child])
    row = rows[args.child]
    stats_ = jax.devices()[0].memory_stats() or {}
    row["device_peak_bytes"] = stats_.get("peak_bytes_in_use")
    with open(args.child_json, "w") as f:
        json.dump(row, f)


def ola_rows(args, deadline):

    # EXACT's chunk sizes are for batch 128: scaled to this batch (same number of chunks).
    batch = int(args.ola_model.split(":")[1])
    methods = []
    for m in args.ola_methods.split(","):
        name, _, chunk = m.partition(":")
        methods.append(f"{name}:{max(1, int(chunk) * batch // 128)}" if chunk else m)
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(),
                                                             "gar_jax_bench_cache"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    rows = {}
    for method in methods:
        if time.perf_counter() > deadline:
            rows[method] = {"skipped": "time budget"}
            print(f"  {method}: skipped (time budget)", flush=True)
            continue
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            path = f.name
        cmd = [sys.executable, os.path.abspath(__file__), "--child", method, "--child_json",
               path, "--ola_model", args.ola_model, "--reps", str(args.reps)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            rows[method] = {"error": proc.stderr.strip().splitlines()[-1:]}
            print(f"  {method}: failed: {proc.stderr[-2000:]}", flush=True)
            continue
        with open(path) as f:
            row = json.load(f)
        os.unlink(path)
        row["process_s"] = time.perf_counter() - t0
        row["seconds_median"] = statistics.median(row["seconds_all"])
        rows[method] = row
        print(f"  {method}: {row['seconds_median'] * 1e3:.1f} ms/pair (median), "
              f"XLA {row['bytes'] / 2**30:.2f} GiB, device peak "
              f"{(row['device_peak_bytes'] or 0) / 2**30:.2f} GiB ({row['process_s']:.0f} s)",
              flush=True)
    base = rows.get("fixed", {})
    if "seconds_all" in base:
        for method, row in rows.items():
            if method == "fixed" or "seconds_all" not in row:
                continue
            row["relative"] = {
                "time_median": row["seconds_median"] / base["seconds_median"] - 1,
                "time_min": row["seconds"] / base["seconds"] - 1,
                "memory_xla": row["bytes"] / base["bytes"] - 1,
                "memory_device_peak": (row["device_peak_bytes"] / base["device_peak_bytes"] - 1
                                       if row.get("device_peak_bytes")
                                       and base.get("device_peak_bytes") else None)}
    return rows


def augment_rows(args, deadline):
    import jax
    import jax.numpy as jnp

    import bench_augment
    from gar_jax.augment import get_policy, spaces
    from gar_jax.augment import ola_sampler
    from gar_jax.methods import ola

    images = jnp.asarray(bench_augment.photo_crops(args.batch))
    fns = {name: get_policy(**spec) for name, spec in bench_augment.POLICIES.items()}
    space = spaces.get_space("wide")
    sampler = ola.make_policy_augment(space, ola.Options())
    policy = ola_sampler.init_params(len(space), num_levels=space.num_levels, max_ops=4,
                                 ensemble_size=8 if args.batch % 8 == 0 else 1)
    fns["ola-wl (initial policy)"] = lambda key, x: sampler(policy, key, x)[0]
    rows = {}
    for name, fn in fns.items():
        if time.perf_counter() > deadline:
            rows[name] = {"skipped": "time budget"}
            continue
        jitted = jax.jit(fn)
        t0 = time.perf_counter()
        jax.block_until_ready(jitted(jax.random.key(0), images))
        compile_s = time.perf_counter() - t0
        times = []
        for i in range(args.steps):
            t0 = time.perf_counter()
            jax.block_until_ready(jitted(jax.random.key(i + 1), images))
            times.append(time.perf_counter() - t0)
        median = statistics.median(times)
        rows[name] = {"images_per_s": args.batch / median, "compile_s": compile_s}
        print(f"  {name}: {args.batch / median:,.0f} img/s", flush=True)
    return rows


def markdown(result) -> str:
    lines = [f"# bench_gpu on {result['device']} ({result['platform']}, JAX {result['jax']})",
             "", f"Command: `{result['command']}`; total {result['total_s']:.0f} s.", "",
             "## Train step", "", "| model | dtype | batch | img/s | TFLOP/s | MFU (peak) |",
             "|---|---|---|---|---|---|"]
    for r in result["train_step"]:
        mfu = (f"{100 * r['mfu']:.1f}% ({r['peak_tflops']:.0f})" if r["mfu"] is not None
               else "n/a")
        lines.append(f"| {r['model']} | {r['dtype']} | {r['batch']} | {r['images_per_s']:,.0f} "
                     f"| {r['tflops_per_s']:.1f} | {mfu} |")
    lines += ["", f"## OLA step pair ({result['ola_model']}, BatchNorm, float32)", "",
              "| pair | ms (median) | ms (min) | time vs fixed (median / min) | XLA GiB | "
              "device peak GiB | memory vs fixed (XLA / device) |", "|---|---|---|---|---|---|---|"]
    for name, r in result["ola"].items():
        if "seconds_all" not in r:
            lines.append(f"| {name} | {r.get('skipped') or r.get('error')} | | | | | |")
            continue
        rel = r.get("relative")
        dev = r.get("device_peak_bytes")
        rel_t = (f"{100 * rel['time_median']:+.1f}% / {100 * rel['time_min']:+.1f}%"
                 if rel else "—")
        rel_m = (f"{100 * rel['memory_xla']:+.1f}% / " + (
            f"{100 * rel['memory_device_peak']:+.1f}%" if rel["memory_device_peak"] is not None
            else "n/a")) if rel else "—"
        dev = f"{dev / 2**30:.2f}" if dev else "n/a"
        lines.append(f"| {name} | {1e3 * r['seconds_median']:.1f} | {1e3 * r['seconds']:.1f} | "
                     f"{rel_t} | {r['bytes'] / 2**30:.2f} | {dev} | {rel_m} |")
    lines += ["", f"## Augmentation policies (batch {result['batch']}, 32x32x3 uint8)", "",
              "| policy | img/s |", "|---|---|"]
    for name, r in result["augment"].items():
        lines.append(f"| {name} | " + (f"{r['images_per_s']:,.0f}" if "images_per_s" in r
                                       else r["skipped"]) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (WRN-10-1, batch 16) on whatever device: a smoke test")
    parser.add_argument("--out", default=os.path.join(HERE, "gpu"))
    parser.add_argument("--budget_s", type=float, default=0,
                        help="seconds for the train-step and OLA sections (default 450; "
                             "--quick: no limit)")
    parser.add_argument("--steps", type=int, default=10, help="timed train steps / policy calls")
    parser.add_argument("--reps", type=int, default=5, help="timed OLA rounds per method")
    parser.add_argument("--peak_tflops", type=float, default=0,
                        help="override the device's peak TFLOP/s (both dtypes)")
    parser.add_argument("--ola_model", default="28-10:256", help="DEPTH-WIDTH:BATCH")
    parser.add_argument("--ola_methods", default=",".join(("fixed", "default") + bench_ola_cost.EXACT),
                        help="bench_ola_cost methods ('default': configs/cifar10_ola.py's GAR "
                             "settings; chunk sizes are for batch 128, scaled to the batch)")
    parser.add_argument("--sections", default="train,ola,augment",
                        help="which of train,ola,augment to run")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--child_json", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.depth, args.width, args.batch = 28, 10, 256
    if args.quick:
        args.depth, args.width, args.batch, args.steps = 10, 1, 16, 2
        args.reps, args.ola_model = 2, "10-1:16"
    args.budget_s = args.budget_s or (1e9 if args.quick else 450)
    if args.child:
        return ola_child(args)

    import jax

    started = time.perf_counter()
    deadline = started + args.budget_s
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({device.platform}), JAX {jax.__version__}; "
          f"budget {args.budget_s:.0f} s", flush=True)
    result = {"device": device.device_kind, "platform": device.platform, "jax": jax.__version__,
              "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
              "batch": args.batch, "ola_model": args.ola_model, "quick": args.quick}
    print("train step:", flush=True)
    sections = set(args.sections.split(","))
    result["train_step"] = train_step_rows(args) if "train" in sections else []
    print("OLA step pairs (one process each):", flush=True)
    result["ola"] = ola_rows(args, deadline) if "ola" in sections else {}
    print("augmentation policies:", flush=True)
    result["augment"] = augment_rows(args, deadline + 60) if "augment" in sections else {}
    result["total_s"] = time.perf_counter() - started
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "bench_gpu_" + "".join(
        c if c.isalnum() else "_" for c in device.device_kind) + ("_quick" if args.quick else ""))
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown(result))
    print(markdown(result))
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
