"""Each op alone on digits32_small: which ops hurt (experiments/compare/README.md §6).

For every op, UniformAugment over the 2-op space ``identity+<op>`` (configs/compare.py:ua_ra with
``--config.augment_kwargs.space=identity+<op>``): UA draws both ops in random order, each kept
with probability 1/2, at a uniform level, so the op touches half of the training images at
uniformly drawn strengths, then the standard pipeline. Compared with the standard pipeline alone
(``configs/compare.py:standard``) on the same seeds. Ops: the RA space's 13 (RA ranges), the wide
space's five extras, its wider rotate/shear/translate ranges, SamplePairing at alpha 1 and the
quarter turns rotate_90/180/270.

    python experiments/compare/hostile/screen.py --seeds=0 --jobs=2

Each cell runs single-threaded (XLA_FLAGS as below), pinned to its own core with taskset, one
per core; cells with a results.json are skipped (a killed screen resumes). Writes screen.json
and screen.md next to this file.
"""
import argparse
import json
import os
import subprocess
import sys
import concurrent.futures as futures

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import run as compare  # noqa: E402  (experiments/compare/run.py)

OPS = ("auto_contrast", "equalize", "rotate", "solarize", "color", "posterize", "contrast",
       "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y",
       "blur", "invert", "flip_lr", "flip_ud", "cutout", "sample_pairing",
       "wide.rotate", "wide.shear_x", "wide.translate_x", "rotate_90", "rotate_180", "rotate_270")
SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def cells(ops, seeds):
    out = []
    for seed in seeds:
        out.append(("standard", seed, "configs/compare.py:standard", []))
        for op in ops:
            out.append((op, seed, "configs/compare.py:ua_ra",
                        [f"--config.augment_kwargs.space=identity+{op}"]))
    return out


def run_pinned(argv, workdir, core):
    env = dict(os.environ, XLA_FLAGS=SINGLE_THREAD)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "compare_log.txt"), "a", encoding="utf-8") as log:
        proc = subprocess.run(["taskset", "-c", str(core), *argv], cwd=compare.ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    return proc.returncode


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0")
    p.add_argument("--ops", default=",".join(OPS))
    p.add_argument("--jobs", type=int, default=2, help="cells at once, cell i on core i % jobs")
    p.add_argument("--root", default="runs/compare_hostile_screen")
    p.add_argument("--summarize_only", action="store_true")
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    todo = cells([o for o in a.ops.split(",") if o], seeds)
    root = os.path.join(compare.ROOT, a.root) if not os.path.isabs(a.root) else a.root

    def workdir(name, seed):
        return os.path.join(root, f"{name.replace('.', '_')}_s{seed}")

    if not a.summarize_only:
        pending = [c for c in todo if compare.read_cell(workdir(c[0], c[1])) is None]
        cores = list(range(a.jobs))
        with futures.ThreadPoolExecutor(a.jobs) as pool:
            free = list(cores)
            running = {}
            for name, seed, spec, extra in pending:
                if not free:
                    done, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
                    for d in done:
                        free.append(running.pop(d))
                core = free.pop(0)
                argv_ = compare.cell_command(spec, extra, workdir(name, seed), seed)
                running[pool.submit(run_pinned, argv_, workdir(name, seed), core)] = core
            futures.wait(running)

    results = {}
    for name, seed, spec, extra in todo:
        cell = compare.read_cell(workdir(name, seed))
        if cell is None:
            continue
        entry = results.setdefault(name, {"test_acc": [], "seeds": [], "train_s": [],
                                          "command": compare.display_command(
                                              compare.cell_command(spec, extra, "DIR", 0))})
        entry["test_acc"].append(cell[0])
        entry["train_s"].append(cell[1])
        entry["seeds"].append(seed)
    compare.write_json(os.path.join(HERE, "screen.json"), results)
    ref = results.get("standard")
    lines = ["| op alone (half the images) | seeds | test accuracy % | vs standard (points) |",
             "|---|---|---|---|"]
    ref_mean = 100 * sum(ref["test_acc"]) / len(ref["test_acc"]) if ref else float("nan")
    order = sorted(results, key=lambda k: -sum(results[k]["test_acc"]) / len(results[k]["test_acc"]))
    for name in order:
        acc = [100 * x for x in results[name]["test_acc"]]
        mean = sum(acc) / len(acc)
        lines.append(f"| {name} | {len(acc)} | {', '.join(f'{x:.2f}' for x in acc)} | "
                     f"{mean - ref_mean:+.2f} |")
    with open(os.path.join(HERE, "screen.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
