"""Tables of experiments/faa/README.md from the run directories of run_digits.sh.

``python experiments/faa/summarize.py runs/faa_digits``
"""
import glob
import json
import os
import sys

import numpy as np


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _wall(run_dir):
    path = f"{run_dir}.time"
    if os.path.exists(path):
        lines = open(path).read().strip().splitlines()  # "Command terminated by signal" first
        return float(lines[-1].split()[0]) if lines else None
    return None


def main(root):
    from gar_jax.augment import faa_policy
    groups = {}
    for d in sorted(glob.glob(os.path.join(root, "*_s*"))):
        if not any(os.path.exists(os.path.join(d, *f)) for f in (("results.json",),
                                                                  ("search", "report.json"))):
            continue
        groups.setdefault(os.path.basename(d).rsplit("_s", 1)[0], []).append(d)
    print("| run | seeds | test accuracy % (mean ± std) | per seed | wall s (mean) |")
    print("|---|---|---|---|---|")
    for name, dirs in groups.items():
        dirs = [d for d in dirs if os.path.exists(os.path.join(d, "results.json"))]
        if not dirs:  # search only (train_final=False)
            continue
        acc = [100 * _load(os.path.join(d, "results.json"))["test_accuracy"] for d in dirs]
        walls = [w for w in map(_wall, dirs) if w is not None]
        wall = f"{np.mean(walls):.0f}" if walls else "-"
        print(f"| {name} | {len(dirs)} | {np.mean(acc):.2f} ± {np.std(acc):.2f} | "
              f"{', '.join(f'{a:.2f}' for a in acc)} | {wall} |")
    print()
    print("| search run | fold models s | search s | trials | trials/s | ask s | score s | "
          "sub-policies | P(sample_pairing) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, dirs in groups.items():
        for d in dirs:
            report = os.path.join(d, "search", "report.json")
            if not os.path.exists(report):
                continue
            f = _load(report)
            policy = faa_policy.load(os.path.join(d, "policy.json"))
            p = faa_policy.op_probability(policy).get("sample_pairing")
            print(f"| {os.path.basename(d)} | {f['folds']['seconds']:.0f} | "
                  f"{f['search_seconds']:.0f} | {f['trials_this_run']} | "
                  f"{f['trials_per_s'] or 0:.3f} | {f['timing']['ask_s']:.0f} | "
                  f"{f['timing']['score_s']:.0f} | {f['num_sub_policies_final']} | "
                  f"{'-' if p is None else f'{p:.4f}'} |")
    print()
    for name, dirs in groups.items():
        for d in dirs:
            top = os.path.join(d, "search", "top_candidates.json")
            if os.path.exists(top):
                print(f"{os.path.basename(d)} top candidates (D_A accuracy, max over copies):")
                for study, cands in _load(top).items():
                    print(f"  {study}: " + ", ".join(f"#{c['trial']} {c['accuracy']:.4f}"
                                                     for c in cands))




def destructive_analysis(run_dir):
    """P(image gets sample_pairing) over every scored candidate vs the final policy, and the
    mean D_A score of candidates with and without it."""
    import optuna
    from gar_jax.augment import faa_policy
    from gar_jax.methods import faa as method
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = method.storage_url(os.path.join(run_dir, "search"))
    probs, values = [], []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
            pol = method.decode(t.params, 5, 2)
            probs.append(faa_policy.op_probability(pol).get("sample_pairing", 0.0))
            values.append(t.value)
    probs, values = np.array(probs), np.array(values)
    final = _load(os.path.join(run_dir, "results.json"))["learned_policy"]["op_probability"]
    uses = probs > 0
    print(f"{os.path.basename(run_dir)}: P(sample_pairing) mean over {len(probs)} scored "
          f"candidates {probs.mean():.4f}, in the final policy {final['sample_pairing']:.4f}; "
          f"mean D_A score of candidates using it {values[uses].mean():.4f} ({uses.sum()}), "
          f"not using it {values[~uses].mean():.4f} ({(~uses).sum()}); correlation of score "
          f"and P(sample_pairing) {np.corrcoef(probs, values)[0, 1]:.3f}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
    root = sys.argv[1] if len(sys.argv) > 1 else "runs/faa_digits"
    main(root)
    print()
    for d in sorted(glob.glob(os.path.join(root, "destructive_s*"))):
        if os.path.isdir(d) and os.path.exists(os.path.join(d, "results.json")):
            destructive_analysis(d)
