"""Table 1 (AUC of the split probabilities) from one or more toy split run directories.

Usage: ``python experiments/toy_table.py RUN_DIR [RUN_DIR ...] [--summary OUT.json]``.
Prints the markdown table of all (net, method) results of the given workdirs (each written by
``python -m gar_jax.main --config=configs/toy_split*.py --workdir=RUN_DIR``), labelled by the
dataset; ``--summary`` also writes the per-seed AUCs and test accuracies without the per-step
curves (small enough to keep in git).
"""
import argparse
import json

from gar_jax.methods import toy_split


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--summary", help="write per-seed AUCs and accuracies to this JSON file")
    args = parser.parse_args()
    merged, summary = {}, {}
    for workdir in args.workdirs:
        with open(f"{workdir}/results.json") as f:
            config = json.load(f)["config"]
        label = f"{config['dataset']} ({config['distribution']})"
        for net, by_method in toy_split.load_results(workdir).items():
            merged[f"{net}, {label}"] = by_method
            summary[f"{net}, {label}"] = {
                method: {k: r[k] for k in ("auc_noisy", "auc_clean", "test_acc")}
                for method, r in by_method.items()}
    print(toy_split.auc_table(merged), end="")
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
