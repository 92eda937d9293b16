"""What learning the mixture costs per SGD step: each method's call vs a plain (uniform) call.

Every entry is the benchmark's own jitted call (`gar_jax.methods.mixture.Runner.call`: the
config's ``mixture.reward_every`` SGD steps of the same net on the same batch size, drawing from
the same sources) for one method; ``uniform`` is the plain step (a fixed mixture: sampling, the SGD
steps, nothing learned), with as many SGD steps per call as the first method (``gar``: 4 by
default; ``--plain_every`` to choose). Reported relative to ``uniform``:

  time    after compiling and one untimed call, ``--rounds`` interleaved rounds (each round runs
          every entry for ``--calls`` consecutive calls, the first entry rotating); the median
          over rounds of each round's ratio to uniform, and the ratio of the fastest rounds. The
          load average is printed at the start, after every round and at the end: run it with
          nothing else running on the machine.
  memory  XLA's compiled memory analysis of one call (arguments + outputs + temporaries −
          donated/aliased), relative to uniform's.

  --static  no timing at all: compiled memory per call, and XLA's flop count (`cost_analysis`),
          bytes accessed and number of kernels per SGD step, relative to uniform's;
          deterministic, so it may run on a loaded machine.

Usage: python experiments/mixture/bench_cost.py [--set mixture.reward_every=4
       --set mixture.gar_method=layerwise]
       [--methods gar,gar_target,nslr,odm,dga] [--rounds 7] [--calls 50] [--json out.json]
       [--static]
The JSON (``{"ratios": {method: {"time", "time_fastest", "memory"}}, ...}``) is what
``experiments/mixture/run.py --bench`` reads into results.json's step_cost / step_memory.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import jax  # noqa: E402
import numpy as np  # noqa: E402

import run as bench_run  # noqa: E402  (experiments/mixture/run.py: the cell configs)
from gar_jax.data import mixture_digits  # noqa: E402
from gar_jax.methods import mixture  # noqa: E402


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


class Entry:
    def __init__(self, name, runner, seed=0):
        self.name, self.runner = name, runner
        self.state = runner.initial_state(seed)
        t0 = time.perf_counter()
        self.compiled = runner.call.lower(self.state).compile()
        self.compile_s = time.perf_counter() - t0
        m = self.compiled.memory_analysis()
        self.bytes = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                      - m.alias_size_in_bytes)
        cost = self.compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        self.flops = float(cost.get("flops", float("nan")))
        self.bytes_accessed = float(cost.get("bytes accessed", float("nan")))
        # Kernels XLA runs per call: the entry computation's instructions that do work.
        entry = self.compiled.as_text().split("ENTRY", 1)[1]
        self.kernels = sum(1 for line in entry.splitlines()[1:] if " = " in line and not any(
            op in line for op in (" parameter(", " get-tuple-element(", " tuple(", " bitcast(",
                                  " constant(")))
        self.seconds = []

    def run(self, calls: int) -> float:
        """Seconds per SGD step over `calls` consecutive calls."""
        t0 = time.perf_counter()
        for _ in range(calls):
            self.state, metrics = self.compiled(self.state)
        jax.block_until_ready((self.state, metrics))
        return (time.perf_counter() - t0) / (calls * self.runner.config.mixture.reward_every)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="noisy")
    parser.add_argument("--methods", default="gar,gar_target,nslr,odm,dga")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--json", default=None)
    parser.add_argument("--plain_every", type=int, default=None,
                        help="SGD steps per call of the plain (uniform) call; default: the "
                             "reward_every of the first method (the same steps per call)")
    parser.add_argument("--static", action="store_true",
                        help="no timing: compiled memory, XLA's flop count and the number of "
                             "kernels per call only (deterministic; any machine, any load)")
    args = parser.parse_args()
    overrides = dict(kv.split("=", 1) for kv in args.set)
    print(f"load average at start: {load()}  ({os.cpu_count()} CPUs, {jax.devices()[0]})",
          flush=True)
    data = mixture_digits.build(args.scenario)
    names = ["uniform"] + [m for m in args.methods.split(",") if m and m != "uniform"]
    entries = []
    first = bench_run.cell_config(args.scenario, names[min(1, len(names) - 1)], 0, overrides)
    plain_every = args.plain_every or first.mixture.reward_every
    for name in names:
        config = bench_run.cell_config(args.scenario, name, 0, overrides)
        if name == "uniform":
            config.mixture.reward_every = plain_every
        mixture.validate(config)
        entries.append(Entry(name, mixture.Runner(config, data)))
        e = entries[-1]
        print(f"  {name:11s} compiled in {e.compile_s:5.1f} s, {e.bytes / 2**10:9.1f} KiB "
              f"per call", flush=True)
    if args.static:
        base = entries[0]
        c = base.runner.config
        print(f"\nrelative to uniform (plain, {c.mixture.reward_every} SGD steps per call): "
              f"memory per call, flops / bytes accessed / kernels per SGD step; overrides "
              f"{overrides or 'none'}")
        out = {"settings": {"scenario": args.scenario, "overrides": overrides}, "static": {}}
        def per_step(e, value):
            return value / e.runner.config.mixture.reward_every

        for e in entries:
            r = {"memory": e.bytes / base.bytes,
                 "flops": per_step(e, e.flops) / per_step(base, base.flops),
                 "bytes_accessed": (per_step(e, e.bytes_accessed)
                                    / per_step(base, base.bytes_accessed)),
                 "kernels": per_step(e, e.kernels) / per_step(base, base.kernels),
                 "bytes_per_call": int(e.bytes), "flops_per_call": e.flops,
                 "kernels_per_call": e.kernels,
                 "steps_per_call": e.runner.config.mixture.reward_every}
            out["static"][e.name] = r
            print(f"  {e.name:11s} memory x{r['memory']:.3f} ({e.bytes / 2**10:.1f} KiB)  "
                  f"flops x{r['flops']:.3f}  bytes accessed x{r['bytes_accessed']:.3f}  "
                  f"kernels {e.kernels} (x{r['kernels']:.3f})")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=1)
        return
    for e in entries:
        e.run(1)  # untimed: first execution
    ratios = {e.name: [] for e in entries}
    for r in range(args.rounds):
        order = entries[r % len(entries):] + entries[:r % len(entries)]
        times = {e.name: e.run(args.calls) for e in order}
        for e in entries:
            e.seconds.append(times[e.name])
            ratios[e.name].append(times[e.name] / times["uniform"])
        print(f"round {r}: " + "  ".join(f"{n} {1e6 * t:.0f} us" for n, t in times.items())
              + f"   load {load()}", flush=True)
    base = entries[0]
    out = {"ratios": {}, "settings": {"scenario": args.scenario, "overrides": overrides,
                                      "rounds": args.rounds, "calls": args.calls},
           "per_step_us": {}, "bytes_per_call": {}}
    shown = entries[min(1, len(entries) - 1)].runner.config
    m = shown.mixture
    print(f"\nper SGD step, relative to uniform (plain, "
          f"{base.runner.config.mixture.reward_every} steps per call); {shown.method}: "
          f"reward_every={m.reward_every}, gar_method={m.gar_method}, reward_examples="
          f"{m.reward_examples}, net={shown.net}, batch={shown.batch_size}")
    for e in entries:
        fastest = min(e.seconds) / min(base.seconds)
        ratio = {"time": float(np.median(ratios[e.name])), "time_fastest": float(fastest),
                 "memory": e.bytes / base.bytes}
        out["ratios"][e.name] = ratio
        out["per_step_us"][e.name] = 1e6 * float(np.median(e.seconds))
        out["bytes_per_call"][e.name] = int(e.bytes)
        print(f"  {e.name:11s} {1e6 * np.median(e.seconds):8.1f} us/step  time x{ratio['time']:.3f}"
              f" (fastest rounds x{fastest:.3f})  memory x{ratio['memory']:.3f} "
              f"({e.bytes / 2**10:.1f} KiB)")
    print(f"load average at end: {load()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
