"""Tables and figures of the digits OLA experiments from their run directories.

Usage: python experiments/ola/summarize.py --runs runs/ola_digits --out experiments/ola

Reads ``<runs>/<method>_s<seed>/results.json`` (and ``policy_history.jsonl`` of OLA runs) and
writes ``<out>/digits_accuracy.md`` (test accuracy per method: mean ± std over seeds, and every
seed), ``<out>/digits_accuracy.png``, and for runs named ``destructive_*``
``<out>/destructive_keep.png`` (each op's keep probability over training, the destructive op
drawn thick) plus ``<out>/destructive_keep.md``.
"""
import argparse
import collections
import glob
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from gar_jax import report  # noqa: E402
from gar_jax.plots import plt  # noqa: E402


def load_runs(root):
    """{method: {seed: (results dict, policy history list or None)}}."""
    runs = collections.defaultdict(dict)
    for path in sorted(glob.glob(os.path.join(root, "*_s*", "results.json"))):
        run_dir = os.path.dirname(path)
        match = re.fullmatch(r"(.+)_s(\d+)", os.path.basename(run_dir))
        if not match:
            continue
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
        history = report.read_history(run_dir) or None
        runs[match.group(1)][int(match.group(2))] = (results, history)
    return runs


def accuracy_table(runs, out):
    lines = ["| method | seeds | test accuracy (mean ± std) | per seed |",
             "|---|---|---|---|"]
    names, means, stds = [], [], []
    for method, seeds in sorted(runs.items()):
        acc = np.array([seeds[s][0]["test_accuracy"] for s in sorted(seeds)])
        names.append(method)
        means.append(acc.mean())
        stds.append(acc.std(ddof=1) if len(acc) > 1 else 0.0)
        lines.append(f"| {method} | {len(acc)} | {100 * acc.mean():.2f} ± {100 * stds[-1]:.2f} | "
                     + ", ".join(f"{100 * a:.2f}" for a in acc) + " |")
    with open(os.path.join(out, "digits_accuracy.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 2, 3.2))
    ax.bar(range(len(names)), 100 * np.array(means), yerr=100 * np.array(stds), capsize=4,
           color="tab:blue", alpha=0.8)
    for i, (method, seeds) in enumerate(sorted(runs.items())):
        ax.scatter([i] * len(seeds), [100 * seeds[s][0]["test_accuracy"] for s in seeds],
                   color="k", s=10, zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(max(0, 100 * min(means) - 10), 100)
    ax.set_title("digits, WRN-10-2, 30 epochs (mean ± std over seeds, dots: seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "digits_accuracy.png"), dpi=110)
    plt.close(fig)


def destructive_figure(runs, out):
    methods = [m for m in sorted(runs) if m.startswith("destructive")]
    if not methods:
        return
    fig, axes = plt.subplots(1, len(methods), figsize=(6 * len(methods), 3.6), squeeze=False)
    lines = ["| run | seed | keep p(destructive) at end | max keep p over other ops | "
             "test accuracy |", "|---|---|---|---|---|"]
    for ax, method in zip(axes[0], methods):
        for seed, (results, history) in sorted(runs[method].items()):
            ops = results["ola"]["ops"]
            epochs = [r["epoch"] for r in history]
            keep = np.array([r["p_keep"] for r in history])
            bad = ops.index("sample_pairing")
            for a, name in enumerate(ops):
                ax.plot(epochs, keep[:, a], color="tab:red" if a == bad else "grey",
                        linewidth=2.5 if a == bad else 0.7, alpha=1 if a == bad else 0.6,
                        label=(("sample_pairing (destructive)" if a == bad else "other ops")
                               if seed == min(runs[method]) and a in (bad, 0) else None))
            others = np.delete(keep[-1], bad)
            lines.append(f"| {method} | {seed} | {keep[-1, bad]:.3f} | {others.max():.3f} | "
                         f"{100 * results['test_accuracy']:.2f} |")
        ax.axhline(0.5, color="k", linestyle=":", linewidth=1)
        ax.set(xlabel="epoch", ylabel="keep probability", ylim=(0, 1),
               title=f"{method} ({len(runs[method])} seeds)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "destructive_keep.png"), dpi=110)
    plt.close(fig)
    with open(os.path.join(out, "destructive_keep.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="runs/ola_digits")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    runs = load_runs(args.runs)
    if not runs:
        raise SystemExit(f"no <method>_s<seed>/results.json under {args.runs}")
    accuracy_table({m: s for m, s in runs.items() if not m.startswith("destructive")},
                   args.out)
    destructive_figure(runs, args.out)


if __name__ == "__main__":
    main()
