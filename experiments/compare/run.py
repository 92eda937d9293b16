"""One comparison of every augmentation method on one benchmark: runs, tables, figure.

Usage (from the repository root)::

    python experiments/compare/run.py                       # every method x seeds 0-4
    python experiments/compare/run.py --methods=none,standard,ra --seeds=0,1,2,3,4
    python experiments/compare/run.py --summarize_only      # tables/figure from what has run
    python experiments/compare/run.py --benchmark=cifar10 --dry_run   # the Table 2 commands

Each (method, seed) is one cell: one ``python -m gar_jax.main`` run in ``<root>/<method>_s<seed>``
(``--config=configs/compare.py:<method> --config.seed=<seed>``: every cell is a config of its
own, which a user can run alone). A cell whose ``results.json`` exists is
done and skipped; any other cell is (re)run with the same command, and the engine resumes it
from its checkpoints, so a killed comparison continues where it stopped when the same command is
run again. Cells run seed by seed (every method at seed 0, then seed 1, ...), so a partial
comparison covers every method. A method whose config is not in the tree, or which the CLI
rejects before computing (exit status 2, one line), is reported as "not available" and skipped.

Outputs (``--out``, default experiments/compare/ for the digits32_small benchmark):
- ``results.json``: ``{method: {"test_acc": [per seed], "train_s": [per seed],
  "search_s": [per seed or null], "seeds": [...], "command": "..."}}``; test_acc is the final
  test accuracy as a fraction, train_s the wall time of the (final) training run, search_s the
  wall time of a method's search phase (null for methods without one). Times come from the runs'
  results.json (`read_cell`).
- ``results.md``: mean ± 95 % confidence interval (Student t over seeds) per method, every seed,
  and the cost (train_s + search_s) relative to the standard pipeline's mean train_s.
- ``results.png``: accuracy per method (mean, 95 % CI, every seed) and relative cost.
"""
import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import runpy
import shutil
import threading
import time

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, ROOT)
COMPARE = "configs/compare.py"  # one config per cell: configs/compare.py:<method>
_CELLS = runpy.run_path(os.path.join(ROOT, COMPARE))
# method -> what it is (configs/compare.py's CELLS): the main comparison, and the hostile-space
# one (`--suite=hostile`, configs/compare.py's HOSTILE, experiments/compare/hostile).
METHODS = {m: d for m, d in _CELLS["CELLS"].items() if m not in _CELLS["HOSTILE_ONLY"]}
HOSTILE = {m: _CELLS["CELLS"][m] for m in _CELLS["HOSTILE"]}
COST_REFERENCE = "standard"
# The cost column's timing protocol (bench_cells.py): per-step seconds of every cell's programs,
# measured side by side on an idle machine, times the steps each cell runs.
BENCH = os.path.join(ROOT, "experiments", "compare", "bench_cells.json")
SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

# Table 2 on CIFAR: method -> config file per dataset ({d} = cifar10 / cifar100) and overrides.
# Configs of methods still being written carry the names their issues prescribe.
CIFAR_METHODS = {
    "none": ("configs/{d}_baseline.py", ["--config.augment=none"]),
    "standard": ("configs/{d}_baseline.py", []),
    "ua_ra": ("configs/{d}_ua_ra.py", []),
    "ua_wl": ("configs/{d}_ua_wl.py", []),
    "ra": ("configs/{d}_ra.py", []),
    "ta": ("configs/{d}_ta.py", []),
    "aa": ("configs/{d}_aa.py", []),
    "faa_published": ("configs/{d}_faa.py", []),
    "faa_search": ("configs/cifar10_faa_search.py", []),
    "dra_published": ("configs/{d}_dra.py", []),
    "dra_search": ("configs/cifar10_dra_search.py", []),
    "smart_aug": ("configs/{d}_smart_aug.py", []),
    "ola_ra": ("configs/{d}_ola.py:ra", []),
    "ola_wl": ("configs/{d}_ola.py", []),
    "ola_nslr": ("configs/{d}_ola.py:ra", ["--config.ola.reward=nslr"]),
}
CIFAR_ONLY_CIFAR10 = ("faa_search", "dra_search")  # the searches are run on CIFAR-10 (papers)


def method_table(benchmark: str, suite: str = "main") -> dict:
    """``{method: (config spec, overrides)}``."""
    if suite == "hostile":
        if benchmark != "digits32_small":
            raise SystemExit("--suite=hostile runs on digits32_small only")
        return {name: (f"{COMPARE}:{name}", []) for name in HOSTILE}
    if benchmark == "digits32_small":
        return {name: (f"{COMPARE}:{name}", []) for name in METHODS}
    table = {}
    for name, (spec, extra) in CIFAR_METHODS.items():
        if benchmark == "cifar100" and name in CIFAR_ONLY_CIFAR10:
            continue
        table[name] = (spec.format(d=benchmark), list(extra))
    return table


def cell_command(spec: str, extra: list, workdir: str, seed: int) -> list:
    return [sys.executable, "-m", "gar_jax.main", f"--config={spec}", f"--workdir={workdir}",
            f"--config.seed={seed}", "--config.progress_bar=False", *extra]


def display_command(argv: list) -> str:
    return " ".join(shlex.quote(a) for a in ["python", *argv[1:]])


def availability(spec: str):
    """None if the config file exists, else the reason it is not available."""
    path = spec.partition(":")[0]
    if not os.path.exists(os.path.join(ROOT, path)):
        return f"{path} is not in the tree"
    return None


def _wall(path: str):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("wall_time_s")


def read_cell(workdir: str):
    """``(test_acc, train_s, search_s)`` of a finished cell, or None if it has not finished.

    The cell's results.json gives ``test_accuracy``. Times: ``train_s`` / ``search_s`` when the
    method's results.json reports them; otherwise, for a multi-phase method, the ``wall_time_s``
    of ``train/results.json`` and ``search/results.json`` (the engine's per-phase results); else
    the run's own ``wall_time_s`` is the training time and there is no search (None).
    """
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    if "test_accuracy" not in results:
        return None
    train_s = results.get("train_s")
    if train_s is None:
        train_s = _wall(os.path.join(workdir, "train", "results.json"))
    if train_s is None:
        train_s = results.get("wall_time_s")
    search_s = results.get("search_s")
    if search_s is None:
        search_s = _method_search_s(results)
    if search_s is None:
        search_s = _wall(os.path.join(workdir, "search", "results.json"))
    return float(results["test_accuracy"]), train_s, search_s


def _method_search_s(results: dict):
    """Search time from the keys the search methods write: FAA (fold models + TPE search),
    DRA (its search phase's engine run)."""
    faa = results.get("faa")
    if isinstance(faa, dict) and "search_seconds" in faa:
        return float(faa["search_seconds"]) + float(faa.get("folds", {}).get("seconds", 0.0))
    dra = results.get("dra")
    if isinstance(dra, dict) and dra.get("search_wall_time_s") is not None:
        return float(dra["search_wall_time_s"])
    return None


def read_policy(workdir: str):
    """A finished cell's learned op probabilities (results.json's ``learned_policy.
    op_probability``: {op: P(an image gets the op)}), or None (fixed policies)."""
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        policy = json.load(f).get("learned_policy") or {}
    probability = policy.get("op_probability")
    return {k: float(v) for k, v in probability.items()} if probability else None


def run_cell(argv: list, workdir: str, core=None):
    """Runs (or resumes) one cell; returns None on success, else a one-line reason.

    core: None runs it as is; an int runs it single-threaded (`SINGLE_THREAD`) pinned to that
    core with taskset (the protocol of ``--jobs``)."""
    os.makedirs(workdir, exist_ok=True)
    shown, env = display_command(argv), None
    if core is not None:
        env = dict(os.environ, XLA_FLAGS=SINGLE_THREAD)
        if shutil.which("taskset"):
            argv = ["taskset", "-c", str(core), *argv]
    with open(os.path.join(workdir, "compare_log.txt"), "a", encoding="utf-8") as log:
        pinned = "" if core is None else f" (single-threaded, core {core})"
        log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {shown}{pinned}\n")
        log.flush()
        proc = subprocess.run(argv, cwd=ROOT, stdout=log, stderr=subprocess.PIPE, text=True,
                              env=env)
        log.write(proc.stderr)
    if proc.returncode == 0:
        return None
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    last = lines[-1] if lines else f"exit status {proc.returncode}"
    if proc.returncode == 2:  # the CLI rejected the config before any compute
        return f"not available: {last}"
    return f"failed (exit {proc.returncode}): {last}"


def write_json(path: str, obj) -> None:
    """Atomic: a killed comparison never leaves a half-written file."""
    from gar_jax.train import engine

    engine.write_json(path, obj)


# ------------------------------------------------------------------------------ statistics


def mean_ci(values, confidence: float = 0.95):
    """``(mean, half-width)`` of the Student t confidence interval; half-width nan for n < 2."""
    from scipy.special import stdtrit  # the t quantile (scipy.stats is slow to import)

    values = np.asarray(values, np.float64)
    n = values.size
    if n < 2:
        return float(values.mean()) if n else math.nan, math.nan
    sem = values.std(ddof=1) / math.sqrt(n)
    return float(values.mean()), float(stdtrit(n - 1, 0.5 + confidence / 2) * sem)


def welch_p(a, b) -> float:
    """Two-sided Welch t-test p-value of two samples (nan if either has < 2 values)."""
    from scipy import stats as sps

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or b.size < 2:
        return math.nan
    return float(sps.ttest_ind(a, b, equal_var=False).pvalue)


def relative_costs(bench_path: str, methods: list) -> dict:
    """{method: cost relative to `standard`} from bench_cells.py's JSON (per-step seconds of
    every cell's programs measured side by side on an idle machine, times the steps each cell
    runs); {} if there is none."""
    if not bench_path or not os.path.exists(bench_path):
        return {}
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_cells

    with open(bench_path, encoding="utf-8") as f:
        bench = json.load(f)
    out = {}
    for m in methods:
        c = bench_cells.relative_cost(m, bench)
        if c is not None:
            out[m] = c
    return out


def markdown(results: dict, missing: dict, benchmark: str, costs: dict = None) -> str:
    costs = costs or {}
    order = sorted(results, key=lambda m: -np.mean(results[m]["test_acc"]))
    lines = [f"Benchmark: {benchmark}. Test accuracy in %: mean ± half-width of the 95 % "
             "confidence interval (Student t over seeds). Cost: the cell's compute relative to "
             f"`{COST_REFERENCE}`'s training, from one timing protocol (bench_cells.py: every "
             "program a cell runs, timed side by side on an idle machine, times the steps the "
             "cell runs; '-' where not measured).", "",
             "| method | seeds | test accuracy % | per seed | cost |",
             "|---|---|---|---|---|"]
    for m in order:
        e = results[m]
        mean, half = mean_ci(np.array(e["test_acc"]) * 100)
        per_seed = ", ".join(f"{100 * a:.2f}" for a in e["test_acc"])
        rel = f"{costs[m]:.2f}x" if m in costs else "-"
        acc = f"{mean:.2f}" + ("" if math.isnan(half) else f" ± {half:.2f}")
        lines.append(f"| {m} | {len(e['test_acc'])} | {acc} | {per_seed} | {rel} |")
    for m, reason in missing.items():
        lines.append(f"| {m} | 0 | {reason} | | |")
    return "\n".join(lines) + "\n"


HOSTILE_REFERENCE = ("ua_ra", "ua_hostile")  # the gap the learners should recover


def hostile_markdown(results: dict) -> str:
    """The gap UA-RA - UA-hostile, how much of it each method recovers (Welch p-values), and the
    learned probabilities of the hostile ops."""
    from gar_jax.augment import spaces

    good, bad = HOSTILE_REFERENCE
    if good not in results or bad not in results:
        return ""
    acc = {m: 100 * np.asarray(e["test_acc"]) for m, e in results.items()}
    gap = acc[good].mean() - acc[bad].mean()
    hostile_ops = spaces.HOSTILE_OPS
    lines = [f"Gap {good} - {bad}: **{gap:.2f} points** (Welch p = {welch_p(acc[good], acc[bad]):.2g}). "
             f"Recovered: (method - {bad}) / gap. The hostile ops: {', '.join(hostile_ops)}. "
             "Hostile share: their part of the learned op probabilities' sum (in parentheses "
             "that of a uniform choice, 7 of the space's ops); hostile P sum: the sum of their "
             "op_probability, which is P(an image gets the op) for every learner, so the "
             "expected number of hostile ops an image gets (UA over the hostile space: 7 x 2/21 "
             "x 1/2 = 0.33); then each one's probability as a multiple "
             "of the median op's (rank among the space's ops, 1 = least likely); all means "
             "over seeds.", "",
             f"| method | test accuracy % | vs {bad} (p) | vs {good} (p) | recovered | "
             "hostile share (uniform) | hostile P sum | "
             + " | ".join(f"{o}: x median (rank)" for o in hostile_ops) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(hostile_ops)]
    order = sorted(results, key=lambda m: -acc[m].mean())
    for m in order:
        a = acc[m]
        mean, half = mean_ci(a)
        cells = [f"{mean:.2f} ± {half:.2f}" if not math.isnan(half) else f"{mean:.2f}",
                 f"{a.mean() - acc[bad].mean():+.2f} ({welch_p(a, acc[bad]):.2g})",
                 f"{a.mean() - acc[good].mean():+.2f} ({welch_p(a, acc[good]):.2g})",
                 f"{(a.mean() - acc[bad].mean()) / gap:+.0%}" if gap else "-"]
        policy = [p for p in results[m].get("op_probability") or [] if p]
        if policy:
            share = np.mean([sum(p.get(o, 0.0) for o in hostile_ops) / sum(p.values())
                             for p in policy])
            uniform = np.mean([sum(o in p for o in hostile_ops) / len(p) for p in policy])
            total = np.mean([sum(p.get(o, 0.0) for o in hostile_ops) for p in policy])
            cells += [f"{share:.2f} ({uniform:.2f})", f"{total:.3f}"]
        else:
            cells += ["-", "-"]
        for o in hostile_ops:
            ratios, ranks = [], []
            for p in policy:
                if o in p:
                    values = np.array(list(p.values()))
                    ratios.append(p[o] / np.median(values))
                    ranks.append(1 + int(np.sum(values < p[o])))
            cells.append(f"{np.mean(ratios):.2f} ({np.mean(ranks):.1f})" if ratios else "-")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def hostile_figure(results: dict, path: str) -> None:
    """Each learner's probability of each hostile op as a multiple of its median op's (mean
    over seeds, every seed as a dot): 1 = not suppressed, 0 = never drawn."""
    from gar_jax.augment import spaces
    from gar_jax.plots import plt

    learners = [m for m in results if any(results[m].get("op_probability") or [])]
    if not learners:
        return
    hostile_ops = spaces.HOSTILE_OPS
    fig, ax = plt.subplots(figsize=(1.2 * len(hostile_ops) + 2, 4))
    width = 0.8 / len(learners)
    for k, m in enumerate(learners):
        per_seed = []
        for p in results[m]["op_probability"]:
            if p:
                median = np.median(list(p.values()))
                per_seed.append([p.get(o, math.nan) / median for o in hostile_ops])
        per_seed = np.array(per_seed)
        x = np.arange(len(hostile_ops)) + (k - (len(learners) - 1) / 2) * width
        ax.bar(x, np.nanmean(per_seed, axis=0), width, label=m, color=f"C{k}")
        for row in per_seed:
            ax.scatter(x, row, s=6, color="0.3", zorder=3)
    ax.axhline(1.0, color="0.3", lw=0.8)
    ax.set_xticks(range(len(hostile_ops)), hostile_ops, rotation=20)
    ax.set_ylabel("P(op) / median op's P (mean; dots: seeds)")
    ax.set_title("Learned probability of the hostile ops (1 = not suppressed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def figure(results: dict, path: str, benchmark: str, costs: dict = None) -> None:
    from gar_jax.plots import plt

    costs = costs or {}
    order = sorted(results, key=lambda m: np.mean(results[m]["test_acc"]))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 0.45 * len(order) + 1.5), sharey=True,
                                 gridspec_kw={"width_ratios": [3, 1]})
    for y, m in enumerate(order):
        acc = np.array(results[m]["test_acc"]) * 100
        mean, half = mean_ci(acc)
        ax.errorbar(mean, y, xerr=0 if math.isnan(half) else half, fmt="o", color="C0",
                    capsize=3)
        ax.scatter(acc, np.full(acc.shape, y + 0.2), s=8, color="0.5", zorder=3)
        if m in costs:
            bx.barh(y, costs[m], color="C1")
    ax.set_yticks(range(len(order)), order)
    ax.set_xlabel("test accuracy % (mean, 95% CI; grey: seeds)")
    ax.grid(axis="x", alpha=0.3)
    bx.set_xlabel(f"cost relative to {COST_REFERENCE} (bench_cells)")
    bx.axvline(1.0, color="0.3", lw=0.8)
    fig.suptitle(f"Augmentation methods on {benchmark}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------- main


def run_cells(todo: list, jobs: int, missing: dict) -> None:
    """Runs the (method, seed, argv, workdir) cells in order; ``jobs`` > 1: that many at a
    time, each single-threaded and pinned to its own core (cell slots 0..jobs-1)."""
    lock = threading.Lock()
    queue = list(todo)

    def one(core):
        while True:
            with lock:
                pending = [c for c in queue if c[0] not in missing]
                if not pending:
                    return
                m, seed, argv_cell, workdir = pending[0]
                queue.remove(pending[0])
                print(f"[{time.strftime('%H:%M:%S')}] {m} seed {seed}: {workdir}"
                      + ("" if core is None else f" (core {core})"), flush=True)
            start = time.time()
            problem = run_cell(argv_cell, workdir, core)
            with lock:
                if problem:
                    print(f"  {m} seed {seed}: {problem}", flush=True)
                    if problem.startswith("not available"):
                        missing[m] = problem
                else:
                    print(f"  {m} seed {seed}: done in {time.time() - start:.0f} s: test "
                          f"accuracy {100 * read_cell(workdir)[0]:.2f} %", flush=True)

    if jobs <= 1:
        one(None)
        return
    threads = [threading.Thread(target=one, args=(core,)) for core in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", default="digits32_small",
                        choices=("digits32_small", "cifar10", "cifar100"))
    parser.add_argument("--suite", default="main", choices=("main", "hostile"),
                        help="hostile: the hostile-space cells (configs/compare.py HOSTILE)")
    parser.add_argument("--methods", default="all", help="comma-separated, or 'all'")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated run seeds")
    parser.add_argument("--root", default=None,
                        help="workdir root (default runs/compare_<b>, runs/compare_hostile)")
    parser.add_argument("--out", default=None,
                        help="results.json/.md/.png folder (default experiments/compare, "
                             "experiments/compare/<benchmark> for CIFAR, "
                             "experiments/compare/hostile)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="cells at a time; > 1: each single-threaded, pinned to a core")
    parser.add_argument("--bench", default=BENCH,
                        help="bench_cells.py's JSON for the cost column ('' = none)")
    parser.add_argument("--dry_run", action="store_true", help="print the commands only")
    parser.add_argument("--summarize_only", action="store_true",
                        help="run nothing; tables and figure from the finished cells")
    parser.add_argument("--rebuild", action="store_true",
                        help="run nothing; tables, figure and cost column from the existing "
                             "results.json in --out (the cells need not be on this machine)")
    args = parser.parse_args(argv)

    table = method_table(args.benchmark, args.suite)
    methods = list(table) if args.methods == "all" else args.methods.split(",")
    unknown = [m for m in methods if m not in table]
    if unknown:
        parser.error(f"unknown methods {unknown} for {args.benchmark} ({args.suite}); "
                     f"known: {list(table)}")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    seeds = [int(s) for s in args.seeds.split(",")]
    hostile = args.suite == "hostile"
    root = args.root or os.path.join(
        "runs", "compare_hostile" if hostile else f"compare_{args.benchmark}")
    out = args.out or os.path.join(ROOT, "experiments", "compare",
                                   *(["hostile"] if hostile else
                                     [] if args.benchmark == "digits32_small" else
                                     [args.benchmark]))

    if args.rebuild:
        with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
            results = {m: e for m, e in json.load(f).items() if m in methods}
        summarize(results, {}, args, out, hostile)
        return

    missing = {}
    for m in methods:
        reason = availability(table[m][0])
        if reason:
            missing[m] = f"not available: {reason}"
    todo = []
    for seed in seeds:
        for m in methods:
            workdir = os.path.join(root, f"{m}_s{seed}")
            argv_cell = cell_command(*table[m], workdir, seed)
            if args.dry_run:
                note = f"  # {missing[m]}" if m in missing else ""
                print(display_command(argv_cell) + note)
                continue
            if m in missing or args.summarize_only or read_cell(workdir) is not None:
                continue
            todo.append((m, seed, argv_cell, workdir))
    if args.dry_run:
        return
    run_cells(todo, args.jobs, missing)

    results = {}
    for m in methods:
        if m in missing:
            continue
        cells = [(s, read_cell(os.path.join(root, f"{m}_s{s}"))) for s in seeds]
        cells = [(s, c) for s, c in cells if c is not None]
        if not cells:
            continue
        results[m] = {"test_acc": [c[0] for _, c in cells], "train_s": [c[1] for _, c in cells],
                      "search_s": [c[2] for _, c in cells], "seeds": [s for s, _ in cells],
                      "command": display_command(cell_command(
                          *table[m], os.path.join(root, f"{m}_s<seed>"), "<seed>"))}
        policies_ = [read_policy(os.path.join(root, f"{m}_s{s}")) for s, _ in cells]
        if any(p is not None for p in policies_):
            results[m]["op_probability"] = policies_
    summarize(results, missing, args, out, hostile)


def summarize(results: dict, missing: dict, args, out: str, hostile: bool) -> None:
    """results.json (with each method's cost), results.md and results.png in `out`."""
    costs = relative_costs(args.bench, list(results)) if args.benchmark == "digits32_small" \
        else {}
    for m, e in results.items():
        e.pop("cost", None)
        if m in costs:
            e["cost"] = costs[m]
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "results.json"), results)
    text = markdown(results, missing, args.benchmark, costs)
    if hostile:
        text += "\n" + hostile_markdown(results)
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write(text)
    if results:
        figure(results, os.path.join(out, "results.png"),
               args.benchmark + (" (hostile space)" if hostile else ""), costs)
        if hostile:
            hostile_figure(results, os.path.join(out, "hostile_ops.png"))
    print(text)


if __name__ == "__main__":
    main()
