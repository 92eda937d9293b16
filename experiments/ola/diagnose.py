"""What the policy of an OLA run was told about each op: per op, from the run's metrics.jsonl
(``op_applied/<op>``, ``op_weight/<op>``, ``op_weight_sq/<op>``, logged by
`gar_jax.methods.ola.op_reward_metrics`) and policy_history.jsonl.

Per op: the share of training images that got it, how many that is over the run, the mean
normalized REINFORCE weight w of those images (pooled over all steps; w has mean 0 and std 1
over each batch), its standard deviation among them, z = mean / (std / sqrt(count)) (how many
standard errors the mean is from 0; the same z for the rank weights `rank_weights` when logged:
what the op's signal would be if the weights ignored the rewards' magnitudes), the mean weight
in the first and second half of training
and the spread of the per-epoch means, and the keep probability (and its logit) at the end.

    python experiments/ola/diagnose.py RUN_DIR [RUN_DIR ...] [--out FILE.md]

``--parts N``: one table pooled over all the given runs, training cut into N parts of equal
steps (per op and part: images, mean w, z): whether the op's signal lasts or fades.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics


def _records(path: str) -> list:
    with open(os.path.join(path, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _op_records(path: str) -> tuple:
    """(batch size, ops, the records holding the op_* metrics, each record's weight): a record
    is the mean over the step pairs since the previous one, so it weighs their count. Runs made
    before the op_* metrics were logged are refused."""
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        batch = json.load(f)["batch_size"]
    records = [r for r in _records(path) if any(k.startswith("train/op_applied/") for k in r)]
    if not records:
        raise SystemExit(f"diagnose: {path}/metrics.jsonl has no op_applied/* metrics (a run "
                         "from before they were logged)")
    ops = sorted(k.split("/", 2)[2] for k in records[0] if k.startswith("train/op_applied/"))
    steps = [0] + [r["step"] for r in records]
    return batch, ops, records, [(b - a) / 2 for a, b in zip(steps, steps[1:])]


def diagnose(path: str) -> dict:
    """{"batch_size", "steps", "ops": {op: row}} for one run directory (its metrics must hold
    the op_* metrics: runs made before they were logged are refused)."""
    batch, ops, records, weights = _op_records(path)
    total_steps = records[-1]["step"]
    history = []
    hist_path = os.path.join(path, "policy_history.jsonl")
    if os.path.exists(hist_path):
        with open(hist_path, encoding="utf-8") as f:
            history = [json.loads(line) for line in f]
    out = {}
    for op in ops:
        def pooled(rs, ws):
            n = sum(w * r[f"train/op_applied/{op}"] for r, w in zip(rs, ws))
            s = sum(w * r[f"train/op_weight/{op}"] for r, w in zip(rs, ws))
            s2 = sum(w * r[f"train/op_weight_sq/{op}"] for r, w in zip(rs, ws))
            return n, s, s2

        n, s, s2 = pooled(records, weights)
        count = n * batch
        mean = s / n if n else float("nan")
        std = math.sqrt(max(s2 / n - mean ** 2, 0.0)) if n else float("nan")
        half = [i for i, r in enumerate(records) if r["step"] <= total_steps / 2]
        first = pooled([records[i] for i in half], [weights[i] for i in half])
        second = pooled([r for i, r in enumerate(records) if i not in half],
                        [w for i, w in enumerate(weights) if i not in half])
        by_epoch = {}
        for r, w in zip(records, weights):
            e = math.ceil(r["epoch"] - 1e-9)
            acc = by_epoch.setdefault(e, [0.0, 0.0])
            acc[0] += w * r[f"train/op_applied/{op}"]
            acc[1] += w * r[f"train/op_weight/{op}"]
        epoch_means = [s_ / n_ for n_, s_ in by_epoch.values() if n_ > 0]
        keep = records[-1].get(f"train/keep/{op}")
        rank_z = None
        if f"train/op_rank_weight/{op}" in records[-1]:  # runs from when ranks were logged
            u = sum(w * r[f"train/op_rank_weight/{op}"] for r, w in zip(records, weights))
            u2 = sum(w * r[f"train/op_rank_weight_sq/{op}"] for r, w in zip(records, weights))
            u_std = math.sqrt(max(u2 / n - (u / n) ** 2, 0.0)) if n else 0.0
            rank_z = (u / n) / (u_std / math.sqrt(count)) if count and u_std else None
        out[op] = {
            "applied_share": n / sum(weights), "images": count, "mean_weight": mean,
            "std_weight": std, "z": mean / (std / math.sqrt(count)) if count and std else None,
            "mean_weight_first_half": first[1] / first[0] if first[0] else None,
            "mean_weight_second_half": second[1] / second[0] if second[0] else None,
            "epoch_mean_spread": statistics.stdev(epoch_means) if len(epoch_means) > 1 else None,
            "rank_z": rank_z, "keep_end": keep,
            "keep_logit_end": math.log(keep / (1 - keep)) if keep else None}
    return {"batch_size": batch, "steps": total_steps, "epochs": len(history), "ops": out}


def by_part(paths: list, parts: int = 4) -> dict:
    """Pooled over the runs `paths`: per op and per part of training (``parts`` equal stretches
    of steps; a record goes to the part its last step falls in), the images that got the op,
    their mean weight w and z = mean / (std / sqrt(images)). {op: [(images, mean, z), ...]}."""
    sums: dict = {}
    for path in paths:
        batch, ops, records, weights = _op_records(path)
        total = records[-1]["step"]
        for r, pairs in zip(records, weights):
            part = min(int(parts * (r["step"] - 1) / total), parts - 1)
            for op in ops:
                acc = sums.setdefault(op, [[0.0, 0.0, 0.0] for _ in range(parts)])[part]
                for i, name in enumerate(("op_applied", "op_weight", "op_weight_sq")):
                    acc[i] += pairs * batch * r[f"train/{name}/{op}"]
    out = {}
    for op, rows in sums.items():
        out[op] = []
        for n, s, s2 in rows:
            mean = s / n if n else float("nan")
            std = math.sqrt(max(s2 / n - mean ** 2, 0.0)) if n else float("nan")
            out[op].append((n, mean, mean / (std / math.sqrt(n)) if n and std else None))
    return out


def by_part_markdown(paths: list, parts: int = 4) -> str:
    d = by_part(paths, parts)
    head = " | ".join(f"part {i + 1}: images, mean w, z" for i in range(parts))
    lines = [f"### {len(paths)} runs pooled, training in {parts} parts", "",
             f"| op | {head} |", "|---|" + "---|" * parts]
    for op in sorted(d):
        cells = " | ".join(f"{n:.0f}, {m:+.3f}, {z:+.1f}" for n, m, z in d[op])
        lines.append(f"| {op} | {cells} |")
    return "\n".join(lines) + "\n"


def evidence_rank(d: dict, op: str) -> dict:
    """Where `op` stands among the ops of one run's `diagnose` by its pooled evidence: its rank
    by z and by the rank weights' z (1 = most negative), of how many ops."""
    out = {"ops": len(d["ops"])}
    for key in ("z", "rank_z"):
        vals = {o: r[key] for o, r in d["ops"].items() if r[key] is not None}
        out[key] = sorted(vals, key=vals.get).index(op) + 1 if op in vals else None
    return out


def markdown(name: str, d: dict) -> str:
    lines = [f"### {name}", "",
             f"{d['steps']} steps (batch {d['batch_size']}); ops sorted by z (most negative "
             "first).", "",
             "| op | share of images | images | mean w | std w | z | z of rank weights "
             "| mean w 1st / 2nd half | spread of epoch means | keep end | keep logit end |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = sorted(d["ops"].items(), key=lambda kv: kv[1]["z"] if kv[1]["z"] is not None else 0)
    for op, r in rows:
        f = lambda x, p=3: "" if x is None else f"{x:.{p}f}"  # noqa: E731
        lines.append(f"| {op} | {f(r['applied_share'])} | {r['images']:.0f} | "
                     f"{f(r['mean_weight'])} | {f(r['std_weight'], 2)} | {f(r['z'], 2)} | "
                     f"{f(r['rank_z'], 2)} | "
                     f"{f(r['mean_weight_first_half'])} / {f(r['mean_weight_second_half'])} | "
                     f"{f(r['epoch_mean_spread'])} | {f(r['keep_end'])} | "
                     f"{f(r['keep_logit_end'], 2)} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="OLA run directories")
    p.add_argument("--out", default="", help="also write the tables here (markdown)")
    p.add_argument("--parts", type=int, default=0,
                   help="instead: one table pooled over all the runs, training cut into this "
                        "many parts (per op and part: images, mean weight, z)")
    p.add_argument("--rank-of", default="",
                   help="instead: per run, this op's rank among the ops by pooled z and by the "
                        "rank weights' z (1 = most negative), and how often it is in the lowest 3")
    args = p.parse_args(argv)
    for r in args.runs:  # before reading any: a shell glob can catch a run's log file
        if not os.path.isfile(os.path.join(r, "metrics.jsonl")):
            p.error(f"{r} is not an OLA run directory (no metrics.jsonl in it)")
    if args.rank_of:
        ranks = {os.path.basename(os.path.normpath(r)): evidence_rank(diagnose(r), args.rank_of)
                 for r in args.runs}
        lines = [f"| run | {args.rank_of}: rank by z | by rank-weight z |", "|---|---|---|"]
        lines += [f"| {n} | {e['z']} of {e['ops']} | {e['rank_z']} |" for n, e in ranks.items()]
        for key, label in (("z", "z"), ("rank_z", "rank-weight z")):
            low = sum(1 for e in ranks.values() if e[key] is not None and e[key] <= 3)
            lines.append(f"\nAmong the 3 most negative by {label}: {low} of {len(ranks)} runs.")
        text = "\n".join(lines) + "\n"
    elif args.parts:
        text = by_part_markdown(args.runs, args.parts)
    else:
        text = "\n".join(markdown(os.path.basename(os.path.normpath(r)), diagnose(r))
                         for r in args.runs)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
