"""The cost column of experiments/compare: what every comparison cell computes, in one protocol.

Every cell of configs/compare.py (the main comparison and the hostile-space one) runs a few
jitted programs many times: a training step (with its augmentation), OLA's step pair, a
smart_augmentation meta step, a DRA search step, FAA's scoring of candidates and its fold
models' steps. This script builds each cell's programs **from the cell's own config** (model,
batch, space, method settings), compiles them, and times them side by side on one idle machine:
every round calls every program ``--calls`` times (the first program rotating), the load
average is printed with every round. A cell's cost is then

    sum over its programs of (calls the cell makes) x (median seconds per call),

relative to `standard`'s 1000 training steps (`plan` lists the calls, from the config: training
steps, FAA's fold steps and scored images, DRA's search steps). Compilation, evaluation and
data loading are left out (they are the same for every cell, or a few seconds of a run); so is
Optuna's TPE (a few seconds per FAA run on this benchmark).

    python experiments/compare/bench_cells.py --json experiments/compare/bench_cells.json

Run it with nothing else running on the machine (it takes a few minutes on 2 CPU cores);
run.py reads the JSON for the cost column of results.md (both comparisons).
"""
import argparse
import json
import os
import runpy
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

TRAIN_IMAGES = 100  # digits32_small's training set
STANDARD_STEPS = 1000  # the reference: `standard`'s training (200 epochs of 5 steps)


def cell_config(cell: str):
    return runpy.run_path(os.path.join(ROOT, "configs", "compare.py"))["get_config"](cell)


def experiment(c) -> str:
    return c.get("experiment", "supervised") or "supervised"


def training_steps(c, train_images: int = TRAIN_IMAGES) -> int:
    """Steps of a supervised run of config `c` on `train_images` images (full batches only)."""
    return int(c.num_epochs) * (train_images // int(c.batch_size))


def plan(cell: str, c=None) -> list:
    """[(program, calls)] of one cell: the programs `build` makes, and how often the cell runs
    each. OLA's pair program is 2 SGD steps a call (its calls are pairs); FAA's fold models are
    trained by one program per step for all folds, counted as folds x `standard` steps (the
    folds are unrolled on CPUs); its final training replays its searched policy, counted as the
    published policy's step (the same replay program, 25 sub-policies instead of ~15)."""
    c = c or cell_config(cell)
    kind = experiment(c)
    steps = training_steps(c)
    if kind == "supervised":
        prog = "none" if c.augment == "none" else (
            "standard" if c.augment == "standard" else f"fixed:{cell}")
        return [(prog, steps)]
    if kind == "ola":
        return [(f"ola:{cell}", steps // 2)]
    if kind == "smart_aug":
        held = int(round(TRAIN_IMAGES * c.smart_aug.heldout_fraction))
        return [(f"smart_aug:{cell}", training_steps(c, TRAIN_IMAGES - held))]
    if kind == "dra":
        replay = [(f"dra_replay:{cell}", steps)]
        if c.dra.policy != "search":
            return replay
        s = c.dra.search
        half = int(TRAIN_IMAGES * s.fraction) // 2
        return [(f"dra_search:{cell}", int(s.epochs) * (half // int(s.batch_size)))] + replay
    if kind == "faa":
        f = c.faa
        held = int(round(TRAIN_IMAGES * f.test_fraction))
        fold_steps = int(f.fold_epochs) * ((TRAIN_IMAGES - held) // int(c.batch_size))
        # A faa_score call scores score_chunk candidates (x copies x |D_A| images) of one fold;
        # the search scores trials candidates per fold and repeat.
        calls = int(f.folds) * int(f.repeats) * int(f.trials) / int(f.score_chunk)
        return [("standard", int(f.folds) * fold_steps), (f"faa_score:{cell}", calls),
                ("fixed:faa_published", steps)]
    raise ValueError(f"no cost plan for cell {cell!r} (experiment {kind!r})")


def relative_cost(cell: str, bench: dict):
    """A cell's cost relative to `standard`'s training, from a bench JSON; None if a program of
    the cell was not timed."""
    seconds = bench["seconds_per_call"]
    total = 0.0
    for program, calls in bench["plans"].get(cell, plan(cell)):
        if program not in seconds:
            return None
        total += calls * seconds[program]
    return total / (STANDARD_STEPS * seconds["standard"])


# ----------------------------------------------------------------------------------------------
# The programs.


class Program:
    def __init__(self, name, fn, carry, args):
        self.name, self.fn, self.carry, self.args = name, fn, carry, args
        self.seconds = []

    def compile(self):
        t0 = time.perf_counter()
        self.compiled = self.fn.lower(self.carry, *self.args).compile()
        self.compile_s = time.perf_counter() - t0

    def call(self, n=1):
        import jax

        t0 = time.perf_counter()
        for _ in range(n):
            self.carry, metrics = self.compiled(self.carry, *self.args)
        jax.block_until_ready((self.carry, metrics))
        return (time.perf_counter() - t0) / n


def build(program: str, cells_config: dict):
    """One `Program`; ``program`` is "none", "standard" (configs/compare.py:standard) or
    "<kind>:<cell>" built from that cell's config."""
    import jax
    import jax.numpy as jnp

    from gar_jax.augment import faa_policy
    from gar_jax.mesh import data_sharding, make_mesh
    from gar_jax.methods import dra, ola, smart_aug
    from gar_jax.methods import faa as faa_method
    from gar_jax.train import engine, optim, steps
    from gar_jax.train.state import create_state

    kind, _, cell = program.partition(":")
    c = cells_config[cell or "standard"]
    mesh = make_mesh(jax.devices()[:1])
    model = engine.make_model(c, 10)
    tx, schedule = optim.make_optimizer(c, TRAIN_IMAGES // int(c.batch_size))
    state = create_state(model, tx, image_shape=(32, 32, 3), seed=0, mesh=mesh)
    rng = np.random.default_rng(0)

    def batch(b):
        return {"image": jax.device_put(rng.integers(0, 256, (b, 32, 32, 3), np.uint8),
                                        data_sharding(mesh)),
                "label": jax.device_put(rng.integers(0, 10, b).astype(np.int32),
                                        data_sharding(mesh))}

    key = jax.random.key(1)
    b = int(c.batch_size)
    if kind in ("none", "standard", "fixed", "dra_replay"):
        if kind == "none":
            augment = None
        elif kind == "dra_replay":
            augment = dra.make_replay_augment(c, "cifar10", None)
        else:
            augment = engine.make_augment(c)
        fn = steps.make_train_step(model, tx, mesh, augment=augment, schedule=schedule)
        return Program(program, fn, state, (batch(b), key))
    if kind == "ola":
        space = ola.make_space(c)
        fn = ola.make_pair_step(model, tx, mesh, space, ola.meta_optimizer(c, schedule),
                                ola.options(c), standard=engine.make_standard(c),
                                schedule=schedule)
        return Program(program, fn, ola.init_state(state, c, space, schedule),
                       (batch(b), batch(b)))
    if kind == "smart_aug":
        space = smart_aug.make_space(c)
        fn = smart_aug.make_meta_step(model, tx, mesh, space, smart_aug.meta_optimizer(c),
                                      smart_aug.options(c), standard=engine.make_standard(c),
                                      schedule=schedule)
        carry = smart_aug.init_state(state, c, space)
        held = smart_aug.heldout_batch_size(c)
        return Program(program, fn, carry,
                       (tuple(batch(b) for _ in range(c.smart_aug.inner_steps)), batch(held)))
    if kind == "dra_search":
        fn = dra.make_search_step(c, model, tx, mesh, schedule=schedule)
        sb = int(c.dra.search.batch_size)
        return Program(program, fn, dra.init_state(state, c), (batch(sb), batch(sb)))
    if kind == "faa_score":
        scorer = faa_method.make_scorer(c, model)
        names = faa_method.search_ops(c)
        f = c.faa
        held = int(round(TRAIN_IMAGES * f.test_fraction))
        prng = np.random.RandomState(0)
        tabs = [faa_policy.tables(tuple(tuple((names[prng.randint(len(names))], prng.rand(),
                                               prng.rand()) for _ in range(f.num_ops))
                                        for _ in range(f.num_sub_policies)), 32, 32)
                for _ in range(f.score_chunk)]
        tabs = {k: jnp.asarray(np.stack([t[k] for t in tabs]))[None] for k in tabs[0]}
        folds = jax.tree.map(lambda v: v[None], {"params": state.params,
                                                 "batch_stats": state.batch_stats})
        images = jnp.asarray(rng.integers(0, 256, (1, held, 32, 32, 3), np.uint8))
        labels = jnp.asarray(rng.integers(0, 10, (1, held)).astype(np.int32))
        keys = jax.random.split(jax.random.PRNGKey(2), f.score_chunk)[None]

        def score(carry, *args):
            acc, loss = scorer.score(*args)
            return carry + jnp.sum(acc), {"loss": jnp.sum(loss)}

        prog = Program(program, jax.jit(score), jnp.zeros(()),
                       (folds, images, labels, tabs, keys))
        prog.per_call = f.score_chunk * f.copies * held  # images scored per call
        return prog
    raise ValueError(f"unknown program {program!r}")


def main(argv=None):
    cells_all = runpy.run_path(os.path.join(ROOT, "configs", "compare.py"))["CELLS"]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", default=",".join(cells_all), help="comma-separated cells")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=10, help="calls per program per round")
    p.add_argument("--json", default="")
    a = p.parse_args(argv)
    import jax

    cells = a.cells.split(",")
    unknown = [x for x in cells if x not in cells_all]
    if unknown:
        p.error(f"unknown cells {unknown}; known: {', '.join(cells_all)}")
    configs = {x: cell_config(x) for x in set(cells) | {"standard", "faa_published"}}
    plans = {x: plan(x, configs[x]) for x in cells}
    names = list(dict.fromkeys(["standard"] + [prog for x in cells for prog, _ in plans[x]]))
    load0 = os.getloadavg()
    started = time.perf_counter()
    print(f"device: {jax.devices()[0].device_kind} (JAX {jax.__version__}), {os.cpu_count()} CPUs;"
          f" {len(names)} programs of {len(cells)} cells; {a.rounds} rounds x {a.calls} calls; "
          f"load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", flush=True)
    programs = []
    for name in names:
        prog = build(name, configs)
        prog.compile()
        prog.call()  # untimed warm-up
        programs.append(prog)
        print(f"  {name:28s} compiled in {prog.compile_s:5.1f} s", flush=True)
    for r in range(a.rounds):
        order = programs[r % len(programs):] + programs[:r % len(programs)]
        for prog in order:
            prog.seconds.append(prog.call(a.calls))
        print(f"  round {r + 1}: " + ", ".join(f"{q.name} {1e3 * q.seconds[-1]:.1f} ms"
                                               for q in programs)
              + f"  (load {os.getloadavg()[0]:.2f})", flush=True)
    seconds = {q.name: float(np.median(q.seconds)) for q in programs}
    bench = {"device": jax.devices()[0].device_kind, "jax": jax.__version__,
             "rounds": a.rounds, "calls": a.calls, "load_average_start": list(load0),
             "load_average_end": list(os.getloadavg()),
             "seconds_per_call": seconds,
             "seconds_all": {q.name: q.seconds for q in programs},
             "images_per_call": {q.name: getattr(q, "per_call", None) for q in programs},
             "plans": plans}
    print(f"  {'cell':20s} {'cost vs standard':>16s}  plan (program x calls)")
    for x in cells:
        rel = relative_cost(x, bench)
        print(f"  {x:20s} {rel:15.2f}x  " + ", ".join(f"{prog} x {n}" for prog, n in plans[x]))
    load = os.getloadavg()
    print(f"total {time.perf_counter() - started:.0f} s; load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(bench, f, indent=1)


if __name__ == "__main__":
    main()
