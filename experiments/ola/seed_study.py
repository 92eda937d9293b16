"""Seed study of OLA's destructive-op run: per seed, where the planted op ends.

Reads run directories ``<runs>/<variant>_s<seed>/`` of ``configs/digits_ola_destructive.py``
(any variant name: ``gar_frozen``, ``gar_contribution``, ``nslr``, ...) and writes, for each
variant, one row per seed: the destructive op's keep probability (the ``train/keep/<op>`` metric of
the last epoch, ``metrics.jsonl``), its marginal probability that a
training image gets it (``results.json["learned_policy"]["op_probability"]``), its rank among
the ops by that probability (1 = lowest), its ratio to the median op, and the test accuracy.
Outputs ``seed_study.md`` (tables + summary lines), ``seed_study.json`` and
``seed_study.png`` (the destructive op's keep probability over training, one line a seed).

    python experiments/ola/seed_study.py --runs runs/ola_seeds --out experiments/ola \
        [--keep experiments/ola/seed_study.json]

A study may span sessions whose run directories are gone: ``--keep`` takes the rows of an
earlier ``seed_study.json`` for the seeds that have no finished run in ``--runs`` (a run there
wins), marked ``*`` in the tables. Each row records its run's OLA settings (``settings``: the
reward, GAR method and convention, chunks, normalization, policy learning rate, ensemble); a
kept row whose settings differ from the variant's runs is refused (the default changed: its old
rows do not belong to the new variant).
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import statistics

from gar_jax.train.engine import ADDED_FIELDS


# The OLA settings a row records: a variant's rows must agree on them.
SETTINGS = ("reward", "gar_method", "gar_convention", "num_chunks", "chunk_size",
            "reward_fraction", "reward_normalization", "learning_rate", "lr_schedule",
            "ensemble_size")


def load_run(path: str) -> dict | None:
    """One finished run's row, or None if it has no results.json yet."""
    res = os.path.join(path, "results.json")
    if not os.path.exists(res):
        return None
    with open(res, encoding="utf-8") as f:
        results = json.load(f)
    learned = results["learned_policy"]
    probs, op = learned["op_probability"], learned["destructive_op"]
    ranked = sorted(probs, key=probs.get)
    median = statistics.median(probs.values())
    by_epoch = {}  # a resumed run appends metrics again from its checkpoint: newest wins
    with open(os.path.join(path, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            key = f"train/keep/{op}"
            if key in rec and float(rec["epoch"]).is_integer():
                by_epoch[rec["epoch"]] = rec[key]
    epochs = sorted(by_epoch)
    keep_curve = [by_epoch[e] for e in epochs]
    return {"op": op, "op_probability": probs[op], "rank": ranked.index(op) + 1,
            "num_ops": len(probs), "ratio_to_median": probs[op] / median,
            "keep_end": keep_curve[-1] if keep_curve else None, "keep_curve": keep_curve,
            "keep_epochs": epochs, "test_accuracy": results["test_accuracy"],
            "settings": settings_of(results.get("config", {}).get("ola", {}))}


def settings_of(ola_config: dict) -> dict:
    """The row's `SETTINGS`, plus each OLA option added since the first runs (engine's
    ``ADDED_FIELDS``: target_ema, gar_target, before_weight, fd_step) where it is not at its
    old-behaviour value, so that rows of runs made before it existed and of runs at that value
    agree."""
    settings = {k: ola_config.get(k) for k in SETTINGS}
    for field, old in ADDED_FIELDS.items():
        section, _, key = field.partition(".")
        if section == "ola" and ola_config.get(key, old) != old:
            settings[key] = ola_config[key]
    return settings


def collect(runs: str) -> dict:
    """{variant: {seed: row}} for every finished ``<variant>_s<seed>`` directory."""
    table: dict = {}
    for path in sorted(glob.glob(os.path.join(runs, "*_s*"))):
        m = re.fullmatch(r"(.+)_s(\d+)", os.path.basename(path))
        if not m or not os.path.isdir(path):
            continue
        row = load_run(path)
        if row is not None:
            table.setdefault(m.group(1), {})[int(m.group(2))] = row
    return table


def merge_kept(table: dict, kept: dict, source: str) -> dict:
    """`table` plus the rows of `kept` (a seed_study.json's content) for seeds `table` lacks,
    each marked ``carried``; SystemExit (one line) where a kept row's settings differ from those
    of the variant's runs."""
    merged = {v: dict(rows) for v, rows in table.items()}
    for variant, rows in kept.items():
        ours = next(iter(table.get(variant, {}).values()), None)
        for seed_text, row in rows.items():
            seed = int(seed_text)
            if seed in merged.get(variant, {}):
                continue
            if ours is not None and row.get("settings") != ours["settings"]:
                raise SystemExit(f"seed_study: {source}'s {variant} seed {seed} ran with "
                                 f"settings {row.get('settings')}, the runs with "
                                 f"{ours['settings']}; drop it or rename the variant")
            merged.setdefault(variant, {})[seed] = {**row, "carried": True}
    return merged


def summary(rows: dict) -> dict:
    n = len(rows)
    accs = [r["test_accuracy"] * 100 for r in rows.values()]
    return {"seeds": n,
            "lowest3": sum(r["rank"] <= 3 for r in rows.values()),
            "lowest": sum(r["rank"] == 1 for r in rows.values()),
            "below_0.6_median": sum(r["ratio_to_median"] <= 0.6 for r in rows.values()),
            "acc_mean": statistics.mean(accs), "acc_std": statistics.stdev(accs) if n > 1 else 0.0}


def meets_bar(row: dict) -> bool:
    """Issue 18's bar for one run: the planted op among the 3 lowest and at <= 0.6x the median."""
    return row["rank"] <= 3 and row["ratio_to_median"] <= 0.6


def paired(table: dict, variant: str, base: str) -> dict:
    """`variant` against `base` on the seeds both finished: how many meet the bar in both, only
    one, neither; the two-sided sign test of the discordant seeds (exact binomial, p = 1/2); the
    test accuracy's paired difference (points): mean, standard error (n - 1), t = mean / SE."""
    for name in (variant, base):
        if name not in table:
            raise SystemExit(f"seed_study: --paired names {name!r}, which has no runs "
                             f"(variants: {', '.join(sorted(table))})")
    seeds = sorted(set(table[variant]) & set(table[base]))
    if len(seeds) < 2:
        raise SystemExit(f"seed_study: --paired needs >= 2 seeds that both {variant} and {base} "
                         f"finished, found {len(seeds)}")
    a = [meets_bar(table[variant][s]) for s in seeds]
    b = [meets_bar(table[base][s]) for s in seeds]
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    n, k = only_a + only_b, min(only_a, only_b)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    diff = [100 * (table[variant][s]["test_accuracy"] - table[base][s]["test_accuracy"])
            for s in seeds]
    mean = statistics.mean(diff)
    se = statistics.stdev(diff) / math.sqrt(len(diff))
    return {"seeds": len(seeds), "both": sum(x and y for x, y in zip(a, b)), "only_variant": only_a,
            "only_base": only_b, "neither": sum(not x and not y for x, y in zip(a, b)),
            "sign_p": p, "acc_diff_mean": mean, "acc_diff_se": se,
            "acc_diff_t": (mean / se if se > 0 else
                           math.copysign(math.inf, mean) if mean else math.nan),
            "better": sum(d > 0 for d in diff), "equal": sum(d == 0 for d in diff),
            "worse": sum(d < 0 for d in diff)}


def paired_markdown(result: dict, variant: str, base: str) -> list:
    r = result
    return [f"### {variant} against {base}, paired by seed", "",
            f"{r['seeds']} seeds, the bar (among the 3 lowest and <= 0.6x the median): both meet "
            f"it on {r['both']}, only {variant} on {r['only_variant']}, only {base} on "
            f"{r['only_base']}, neither on {r['neither']} (sign test of the discordant seeds, "
            f"two-sided: p = {r['sign_p']:.3f}). Test accuracy, {variant} minus {base}: "
            f"{r['acc_diff_mean']:+.2f} +- {r['acc_diff_se']:.2f} points (mean +- SE; t = "
            f"{r['acc_diff_t']:.1f}; {r['better']} better, {r['equal']} equal, {r['worse']} "
            f"worse).", ""]


def write_markdown(table: dict, path: str, header: str = "", seeds_planned: int = 0,
                   pairs: tuple = ()) -> None:
    """One section per variant (each exactly once), after `header`; with `seeds_planned`, a
    variant with fewer finished seeds is labelled partial."""
    lines = [header, ""] if header else []
    if any(r.get("carried") for rows in table.values() for r in rows.values()):
        lines += ["`*`: a seed whose run directory is gone, its row taken from an earlier "
                  "session's seed_study.json (`--keep`).", ""]
    for variant, rows in sorted(table.items()):
        s = summary(rows)
        partial = (f" (partial: {s['seeds']} of {seeds_planned} seeds)"
                   if seeds_planned and s["seeds"] < seeds_planned else "")
        lines += [f"### {variant}{partial}", "",
                  f"{s['seeds']} seeds: destructive op among the 3 lowest in {s['lowest3']}, "
                  f"the lowest in {s['lowest']}, at <= 0.6x the median op in "
                  f"{s['below_0.6_median']}; test accuracy {s['acc_mean']:.2f} +- "
                  f"{s['acc_std']:.2f} % (mean +- std).", "",
                  "| seed | keep (last epoch) | P(image gets it) | rank (1 = lowest) | / median op "
                  "| test acc. % |", "|---|---|---|---|---|---|"]
        for seed, r in sorted(rows.items()):
            keep = "" if r["keep_end"] is None else f"{r['keep_end']:.3f}"
            mark = "*" if r.get("carried") else ""
            lines.append(f"| {seed}{mark} | {keep} | {r['op_probability']:.4f} | {r['rank']} of "
                         f"{r['num_ops']} | {r['ratio_to_median']:.2f} | "
                         f"{100 * r['test_accuracy']:.2f} |")
        lines.append("")
    for variant, base in pairs:
        lines += paired_markdown(paired(table, variant, base), variant, base)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def plot(table: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = sorted(table)
    fig, axes = plt.subplots(1, len(variants), figsize=(4.5 * len(variants), 3.5), squeeze=False,
                             sharey=True)
    for ax, variant in zip(axes[0], variants):
        for seed, r in sorted(table[variant].items()):
            ax.plot(r["keep_epochs"], r["keep_curve"], lw=1,
                    color="C3" if r["rank"] > 3 else "C0", alpha=0.8)
        ax.axhline(0.5, color="gray", lw=0.5, ls=":")
        ax.set_title(f"{variant} ({len(table[variant])} seeds; red: not in lowest 3)")
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel("keep p(destructive op)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", required=True, help="folder of <variant>_s<seed> run directories")
    p.add_argument("--out", required=True, help="folder for seed_study.{md,json,png}")
    p.add_argument("--seeds", default="", help="only these seeds: 'first-last' or a comma list")
    p.add_argument("--seeds-planned", type=int, default=0,
                   help="seeds the study will have: fewer finished ones are labelled partial")
    p.add_argument("--header", default="", help="markdown put before the tables")
    p.add_argument("--keep", default="", help="an earlier seed_study.json: its rows for the "
                   "seeds without a finished run in --runs")
    p.add_argument("--paired", action="append", default=[], metavar="VARIANT,BASE",
                   help="also compare VARIANT with BASE seed by seed (repeatable)")
    args = p.parse_args(argv)
    pairs = []
    for text in args.paired:
        names = text.split(",")
        if len(names) != 2 or not all(names):
            p.error(f"--paired {text!r}: give two variants, VARIANT,BASE")
        pairs.append(tuple(names))
    table = collect(args.runs)
    if args.keep:
        with open(args.keep, encoding="utf-8") as f:
            table = merge_kept(table, json.load(f), args.keep)
    if args.seeds:
        first, _, last = args.seeds.partition("-")
        keep = (set(range(int(first), int(last) + 1)) if last
                else {int(x) for x in args.seeds.split(",")})
        table = {v: {s: r for s, r in rows.items() if s in keep} for v, rows in table.items()}
        table = {v: rows for v, rows in table.items() if rows}
    if not table:
        raise SystemExit(f"seed_study: no finished <variant>_s<seed> runs in {args.runs}")
    os.makedirs(args.out, exist_ok=True)
    write_markdown(table, os.path.join(args.out, "seed_study.md"), args.header,
                   args.seeds_planned, tuple(pairs))
    with open(os.path.join(args.out, "seed_study.json"), "w", encoding="utf-8") as f:
        json.dump({v: {str(s): r for s, r in rows.items()} for v, rows in table.items()}, f,
                  indent=1)
    plot(table, os.path.join(args.out, "seed_study.png"))
    print(open(os.path.join(args.out, "seed_study.md"), encoding="utf-8").read())


if __name__ == "__main__":
    main()
