"""The data-mixture benchmark: every method x scenario x seed, one command, resumable cells.

Usage:
  python experiments/mixture/run.py --workdir RUNS [--seeds 0-4] [--scenarios noisy,target]
      [--methods gar,...] [--set field=value ...] [--out experiments/mixture]
  python experiments/mixture/run.py --workdir RUNS --summarize [--bench bench_cost.json]
  python experiments/mixture/run.py --costs bench_cost.json --out experiments/mixture
      (only the cost columns: results.json's step_cost / step_memory from a newer benchmark
      run, the rest of results.json and the figures as they are)

Each cell (scenario, method, seed) is an engine run of ``configs/digits_mixture.py`` (the
`gar_jax.methods.mixture` method) in ``RUNS/<scenario>/<method>/seed_<s>``: a finished cell is read
back, an interrupted one resumes from its checkpoint, so rerunning the command continues the
benchmark. The compiled step of a (scenario, method) is shared by its seeds (one process).

Writes into ``--out``: ``results.json`` ``{scenario: {method: {"test_acc": [per seed],
"final_weights": {source: [per seed]}, "harmful_sources": [...], "step_cost": ratio or null,
"step_memory": ratio or null}}, "seeds": [...], "config": {overrides}}``; ``results.md`` (the
table, mean ± 95% CI over seeds, Student t); ``mixture_over_training_<scenario>.png`` (each
source's weight over training, mean ± std over seeds, one panel per method). ``step_cost`` /
``step_memory`` come from ``experiments/mixture/bench_cost.py --json`` (``--bench``): the time and
compiled-memory ratio of the method's call to the uniform (plain) call.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from ml_collections import ConfigDict  # noqa: E402

from configs import digits_mixture  # noqa: E402
from gar_jax import plots  # noqa: E402
from gar_jax.errors import ConfigError  # noqa: E402
from gar_jax.methods import mixture  # noqa: E402
from gar_jax.train import engine  # noqa: E402

# Student t quantiles t_{0.975, n-1} for n = 2..10 seeds (95% two-sided).
T975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306,
        10: 2.262}


def parse_seeds(text: str) -> list:
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    return out


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def cell_config(scenario: str, method: str, seed: int, overrides: dict):
    c = digits_mixture.get_config(f"{method},{scenario}")
    c.seed = seed
    c.progress_bar = False
    for k, v in overrides.items():
        *groups, field = k.split(".")  # a group's field: "mixture.learning_rate"
        node = c
        for g in groups:
            node = node[g] if g in node and isinstance(node[g], ConfigDict) else None
            if node is None:
                break
        if node is None or field not in node or isinstance(node[field], ConfigDict):
            raise ConfigError(f"--set {k}: not a field of configs/digits_mixture.py")
        old = node[field]
        node[field] = str(v) if isinstance(old, str) else (
            v.lower() in ("1", "true") if isinstance(old, bool) else type(old)(v))
    return c


def run_cell(config, cell_dir: str) -> dict:
    done = engine.finished_results(cell_dir)
    if done is not None:
        want = config.to_dict()
        changed = sorted(k for k in set(done["config"]) | set(want)
                         if k != "progress_bar" and done["config"].get(k) != want.get(k))
        if changed:
            raise ConfigError(f"{cell_dir} holds a finished run with other values of "
                              f"{', '.join(changed)}; use another --workdir")
        return done
    return mixture.run(config, cell_dir)


def ci95(values) -> tuple:
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    t = T975.get(len(v), 1.96)
    return float(v.mean()), float(t * v.std(ddof=1) / np.sqrt(len(v)))


def table(results: dict, names: list) -> str:
    lines = []
    for scenario, by_method in results.items():
        harmful = next(iter(by_method.values()))["harmful_sources"]
        short = {n: n.replace("label_noise_50", "noise50").replace("random_labels", "random")
                 for n in names}
        lines += [f"\n### scenario `{scenario}` (harmful: {', '.join(harmful)})\n",
                  "| method | seeds | test acc. (%) | " + " | ".join(
                      f"p({short[n]})" for n in names) + " | step time | step memory |",
                  "|---|---|---|" + "---|" * len(names) + "---|---|"]
        for method, r in by_method.items():
            m, h = ci95(np.asarray(r["test_acc"]) * 100)
            ws = " | ".join(f"{np.mean(r['final_weights'][n]):.3f}" for n in names)
            cost = "" if r.get("step_cost") is None else f"{r['step_cost']:.3f}x"
            mem = "" if r.get("step_memory") is None else f"{r['step_memory']:.3f}x"
            lines.append(f"| {method} | {len(r['test_acc'])} | {m:.2f} ± {h:.2f} | {ws} | "
                         f"{cost} | {mem} |")
    return "\n".join(lines) + "\n"


def fill_costs(bench_path: str, out_dir: str) -> None:
    """results.json's step_cost / step_memory of every method from `bench_path` (the others
    null), results.md rewritten with them; nothing else changes."""
    with open(bench_path) as f:
        bench = json.load(f)["ratios"]
    path = os.path.join(out_dir, "results.json")
    with open(path) as f:
        final = json.load(f)
    results = {k: v for k, v in final.items() if k not in ("seeds", "config")}
    for by_method in results.values():
        for method, r in by_method.items():
            cost = bench.get(method, {})
            r["step_cost"], r["step_memory"] = cost.get("time"), cost.get("memory")
    engine.write_json(path, final)
    names = list(next(iter(next(iter(results.values())).values()))["final_weights"])
    overrides = final.get("config") or {}
    seeds = final["seeds"]
    seeds_text = (f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1))
                  else ",".join(map(str, seeds)))
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(f"seeds {seeds_text}; overrides {overrides or 'none'}; cost columns from "
                f"{os.path.basename(bench_path)}\n" + table(results, names))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--scenarios", default=",".join(digits_mixture.SCENARIOS))
    parser.add_argument("--methods", default=",".join(digits_mixture.METHODS))
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field in every cell (e.g. "
                        "mixture.learning_rate=0.05)")
    parser.add_argument("--out", default=None, help="where results.json/.md and figures go "
                        "(default: the workdir)")
    parser.add_argument("--summarize", action="store_true",
                        help="only read finished cells (no training) and write the outputs")
    parser.add_argument("--bench", default=None,
                        help="bench_cost.py --json output: fills step_cost / step_memory")
    parser.add_argument("--costs", default=None,
                        help="bench_cost.py --json output: rewrite only the cost columns of "
                             "--out's results.json / results.md (no cells needed)")
    args = parser.parse_args()
    if args.costs:
        return fill_costs(args.costs, args.out or parser.error("--costs needs --out"))
    if not args.workdir:
        parser.error("--workdir is required (except with --costs)")
    overrides = dict(kv.split("=", 1) for kv in args.set)
    seeds = parse_seeds(args.seeds)
    scenarios = [s for s in args.scenarios.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    out_dir = args.out or args.workdir
    os.makedirs(out_dir, exist_ok=True)
    bench = {}
    if args.bench:
        with open(args.bench) as f:
            bench = json.load(f)["ratios"]

    results, histories, names = {}, {}, None
    for scenario in scenarios:
        results[scenario], histories[scenario] = {}, {}
        for method in methods:
            accs, weights, hist = [], {}, []
            for seed in seeds:
                config = cell_config(scenario, method, seed, overrides)
                mixture.validate(config)
                cell = os.path.join(args.workdir, scenario, method, f"seed_{seed}")
                if args.summarize:
                    r = engine.finished_results(cell)
                    if r is None:
                        raise SystemExit(f"--summarize: {cell} has not finished")
                else:
                    r = run_cell(config, cell)
                learned = r["learned_mixture"]
                names = list(learned["weights"])
                accs.append(r["test_accuracy"])
                for n, w in learned["weights"].items():
                    weights.setdefault(n, []).append(w)
                hist.append(learned["weights_over_training"])
                print(f"{scenario:7s} {method:12s} seed {seed:3d}: test acc "
                      f"{100 * r['test_accuracy']:.2f}%  " + " ".join(
                          f"{n}={w:.3f}" for n, w in learned["weights"].items()), flush=True)
            cost = bench.get(method, {})
            results[scenario][method] = {
                "test_acc": accs, "final_weights": weights,
                "harmful_sources": learned["harmful_sources"],
                "good_sources": learned["good_sources"],
                "step_cost": cost.get("time"), "step_memory": cost.get("memory")}
            histories[scenario][method] = np.asarray(hist)
    final = {**results, "seeds": seeds, "config": overrides}
    engine.write_json(os.path.join(out_dir, "results.json"), final)
    text = table(results, names)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(f"seeds {args.seeds}; overrides {overrides or 'none'}\n" + text)
    print(text)
    steps_per_point = {m: cell_config(scenarios[0], m, seeds[0], overrides).mixture.reward_every
                       for m in methods}
    for scenario in scenarios:
        plots.mixture_figure(
            histories[scenario], names,
            os.path.join(out_dir, f"mixture_over_training_{scenario}.png"),
            steps_per_point=steps_per_point, highlight=results[scenario][methods[0]][
                "harmful_sources"],
            title=f"scenario {scenario}: sampling probability of each source "
                  f"(mean ± std over seeds {args.seeds})")


if __name__ == "__main__":
    main()
