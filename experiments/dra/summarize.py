"""Table of the DRA digits runs (experiments/dra/run_digits.sh): accuracy per kind and seed, the
search's cost and the destructive op's learned probability.

Usage: python experiments/dra/summarize.py runs/gar_dra_digits
"""
import glob
import json
import os
import re
import sys

import numpy as np


def main(root: str) -> None:
    runs = {}
    for path in sorted(glob.glob(os.path.join(root, "*_s[0-9]*", "results.json"))):
        name = os.path.basename(os.path.dirname(path))
        kind, seed = re.match(r"(.*)_s(\d+)$", name).groups()
        with open(path, encoding="utf-8") as f:
            runs.setdefault(kind, []).append((int(seed), json.load(f)))
    print("| run | seeds | test accuracy % (mean ± std) | per seed | search s | train s |")
    print("|---|---|---|---|---|---|")
    for kind, items in runs.items():
        acc = np.array([100 * r["test_accuracy"] for _, r in items])
        search = [r.get("dra", {}).get("search_wall_time_s") for _, r in items]
        search = ", ".join(f"{s:.0f}" for s in search if s is not None) or "-"
        train = ", ".join(f"{r['wall_time_s']:.0f}" for _, r in items)
        std = acc.std(ddof=1) if len(acc) > 1 else 0.0
        print(f"| {kind} | {len(items)} | {acc.mean():.2f} ± {std:.2f} | "
              f"{', '.join(f'{a:.2f}' for a in acc)} | {search} | {train} |")
    print()
    for kind, items in runs.items():
        for seed, r in items:
            lp = r["learned_policy"]
            probs = lp["op_probability"]
            soft = np.array(lp["op_softmax_per_layer"])
            line = (f"{kind} s{seed}: search test acc "
                    f"{100 * r.get('dra', {}).get('search_test_accuracy', float('nan')):.2f}; "
                    f"op_probability min {min(probs.values()):.3f} max {max(probs.values()):.3f}")
            if lp["destructive_op"]:
                j = list(probs).index(lp["destructive_op"])
                line += (f"; {lp['destructive_op']}: op_probability {probs[lp['destructive_op']]:.4f}"
                         f" (uniform {1 - (1 - 0.5 / soft.shape[1]) ** soft.shape[0]:.4f}), "
                         f"softmax(W) per layer {soft[:, j].round(4).tolist()} (uniform "
                         f"{1 / soft.shape[1]:.4f}), rank {sorted(probs.values()).index(probs[lp['destructive_op']]) + 1} of {len(probs)} (1 = lowest)")
            print(line)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/gar_dra_digits")
