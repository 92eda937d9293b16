"""Tables and figures of the digits smart_augmentation runs from their run directories.

Usage: python experiments/smart_aug/summarize.py --runs RUNS --out experiments/smart_aug

Reads ``RUNS/<name>_s<seed>/results.json`` and ``policy_history.jsonl`` (``<name>`` is
``smart_aug`` or ``destructive``) and writes ``<out>/digits_accuracy.md`` (test accuracy: mean ±
std over seeds, every seed, wall time), ``<out>/destructive.md`` (the destructive op's final draw
and marginal probabilities next to the other ops') and ``<out>/<name>_s<seed>_policy.png`` (each
op's draw probability and magnitude over training, the destructive op drawn thick).
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
    """{name: {seed: (results, history)}}."""
    runs = collections.defaultdict(dict)
    for path in sorted(glob.glob(os.path.join(root, "*_s*", "results.json"))):
        run_dir = os.path.dirname(path)
        match = re.fullmatch(r"(.+)_s(\d+)", os.path.basename(run_dir))
        if not match:
            continue
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
        runs[match.group(1)][int(match.group(2))] = (results, report.read_history(run_dir))
    return runs


def accuracy_table(runs):
    lines = ["| run | seeds | test accuracy % (mean ± std) | per seed | wall s |",
             "|---|---|---|---|---|"]
    for name, seeds in sorted(runs.items()):
        acc = np.array([100 * seeds[s][0]["test_accuracy"] for s in sorted(seeds)])
        wall = np.mean([seeds[s][0]["wall_time_s"] for s in seeds])
        std = acc.std(ddof=1) if len(acc) > 1 else 0.0
        lines.append(f"| {name} | {len(acc)} | {acc.mean():.2f} ± {std:.2f} | "
                     + ", ".join(f"{a:.2f}" for a in acc) + f" | {wall:.0f} |")
    return lines


def destructive_table(runs):
    lines = ["| run | seed | p(draw destructive) | mean p(draw) of the others (min..max) | "
             "P(image gets destructive) | P(image gets op), others: mean |",
             "|---|---|---|---|---|---|"]
    for name, seeds in sorted(runs.items()):
        for seed in sorted(seeds):
            policy = seeds[seed][0]["learned_policy"]
            bad = policy.get("destructive_op")
            if not bad:
                continue
            p = policy["distribution"]
            others = [v for k, v in p.items() if k != bad]
            marginal = policy["op_probability"]
            other_m = [v for k, v in marginal.items() if k != bad]
            lines.append(f"| {name} | {seed} | {p[bad]:.4f} | {np.mean(others):.4f} "
                         f"({min(others):.4f}..{max(others):.4f}) | {marginal[bad]:.4f} | "
                         f"{np.mean(other_m):.4f} |")
    return lines


def plot_history(name, seed, results, history, out):
    ops = results["smart_aug"]["ops"]
    bad = results["learned_policy"].get("destructive_op")
    epochs = [r["epoch"] for r in history]
    p = np.array([r["distribution"] for r in history])
    mag = np.array([r["magnitude"] for r in history])
    colors = plt.cm.tab20(np.linspace(0, 1, len(ops)))
    fig, (ax_p, ax_m) = plt.subplots(1, 2, figsize=(12, 4))
    for a, op in enumerate(ops):
        wide = 3 if op == bad else 1.2
        ax_p.plot(epochs, p[:, a], color="black" if op == bad else colors[a], label=op,
                  linewidth=wide)
        if np.ptp(mag[:, a]) > 0:
            ax_m.plot(epochs, mag[:, a], color=colors[a], label=op)
    ax_p.axhline(1 / len(ops), color="grey", linestyle=":", linewidth=1)
    ax_p.set(xlabel="epoch", ylabel="p(draw op)", ylim=(0, None),
             title=f"{name}, seed {seed}: op probabilities")
    ax_m.set(xlabel="epoch", ylabel="magnitude (fraction of the range)", ylim=(0, 1.05),
             title="learned magnitudes")
    ax_p.legend(fontsize=6, ncol=2)
    ax_m.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"{name}_s{seed}_policy.png"), dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    runs = load_runs(args.runs)
    os.makedirs(args.out, exist_ok=True)
    for name, lines in (("digits_accuracy.md", accuracy_table(runs)),
                        ("destructive.md", destructive_table(runs))):
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        print("\n".join(lines) + "\n")
    for name, seeds in runs.items():
        for seed, (results, history) in seeds.items():
            plot_history(name, seed, results, history, args.out)


if __name__ == "__main__":
    main()
