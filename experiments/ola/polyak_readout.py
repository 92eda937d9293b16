"""The planted op read off an averaged policy instead of the final one (experiments/ola/README.md
section 6h): for each finished destructive-op run, the probability that an image gets each op,
P(a) = 1 - sum_k p(k) (1 - keep_a / A)^k (the sampler's draw with replacement, A ops; without,
for runs with ``ola.replace = False``, P(a) = sum_k p(k) k keep_a / A), from
every epoch's policy in policy_history.jsonl (the ensemble-averaged summary; a resumed run's
repeated epochs counted once, the last record kept), then

- ``final``: P at the last epoch;
- ``polyak``: the mean of P over the epochs of the second half (Polyak-Ruppert averaging of the
  policy, read out only: training is unchanged, so both readouts come from the same run).

Success as in the seed study (`seed_study.py`): the planted op among the 3 lowest of the ops, and
at <= 0.6x the median op. The ``final`` readout from the summary is checked against the run's
results.json ranking (the per-sampler average, `ola_sampler.op_probability`): the number of runs
where the two rank the planted op differently is printed.

    python experiments/ola/polyak_readout.py RUN_DIR [RUN_DIR ...] [--from 0.5] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from gar_jax import report
from gar_jax.augment import ola_sampler


def judge(probs: np.ndarray, planted: int) -> dict:
    rank = int((probs < probs[planted]).sum()) + 1
    ratio = float(probs[planted] / np.median(probs))
    return {"rank": rank, "ratio": ratio, "ok": rank <= 3 and ratio <= 0.6}


def readouts(path: str, start: float = 0.5) -> dict:
    """{"final": judge, "polyak": judge, "results_rank": int, "epochs": int} of one run."""
    with open(os.path.join(path, "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    learned = results["learned_policy"]
    replace = results.get("config", {}).get("ola", {}).get("replace", True)
    names = list(learned["op_probability"])
    planted = names.index(learned["destructive_op"])
    history = report.read_history(path)  # a resumed run's repeated epochs: the last record
    probs = ola_sampler.op_probability_from([r["p_k"] for r in history],
                                            [r["p_keep"] for r in history],
                                            replace=replace)  # [epochs, A]
    first = int(np.floor(start * len(history)))
    ranked = sorted(names, key=learned["op_probability"].get)
    return {"final": judge(probs[-1], planted), "polyak": judge(probs[first:].mean(0), planted),
            "results_rank": ranked.index(learned["destructive_op"]) + 1,
            "epochs": len(history)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--from", dest="start", type=float, default=0.5,
                        help="average the epochs after this fraction of the run (default 0.5)")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if not 0 <= args.start < 1:
        parser.error("--from must be in [0, 1)")
    for path in args.runs:
        missing = [n for n in ("results.json", "policy_history.jsonl")
                   if not os.path.exists(os.path.join(path, n))]
        if missing:
            parser.error(f"{path} is not a finished OLA run (no {' or '.join(missing)})")
    lines = ["| run | epochs | results.json rank | final: rank, ratio to the median | "
             "polyak: rank, ratio |", "|---|---|---|---|---|"]
    count = {"final": 0, "polyak": 0}
    disagree = 0
    for path in args.runs:
        r = readouts(path, args.start)
        disagree += r["final"]["rank"] != r["results_rank"]
        for kind in count:
            count[kind] += r[kind]["ok"]
        cells = [f"{r[k]['rank']}, {r[k]['ratio']:.2f}{'' if r[k]['ok'] else ' (fails)'}"
                 for k in ("final", "polyak")]
        lines.append(f"| {os.path.basename(os.path.normpath(path))} | {r['epochs']} | "
                     f"{r['results_rank']} | "
                     + " | ".join(cells) + " |")
    n = len(args.runs)
    lines += ["", f"runs: {n}; among the 3 lowest and <= 0.6x the median: final {count['final']} "
              f"of {n}, polyak (epochs after {args.start:g} of the run) {count['polyak']} of {n}; "
              f"the summary's final rank differs from results.json's in {disagree} run(s)"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
