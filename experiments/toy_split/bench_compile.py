"""Compile time vs step time of the toy split step at each XLA backend optimization level
(``config.xla_opt_level``; -1 = XLA's default), measured side by side in one process.

Usage: ``python experiments/toy_split/bench_compile.py [--net fcbn] [--seeds 10] [--epochs 40]``.
Prints, per setting, the compile time of one epoch's scan, the time of `--epochs` epochs of the
default digits config (all seeds vmapped), and their sum.
"""
import argparse
import os
import time

import jax
import jax.numpy as jnp

from gar_jax.data import sources
from gar_jax.methods import toy_split
from gar_jax.train import defaults

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--net", default="fcbn")
    parser.add_argument("--method", default="gar")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    train = sources.load("digits", "train")
    print(f"{args.net}/{args.method}, digits, {args.seeds} seeds, {args.epochs} epochs, "
          f"{jax.devices()[0].platform}")
    print(f"{'xla_opt_level':>13} | {'compile (s)':>11} | {'run (s)':>8} | {'total (s)':>9}")
    for level in (-1, 0, 1, 2):
        config = defaults.load_config(os.path.join(CONFIGS, "toy_split.py"))
        config.update_from_flattened_dict({"net": args.net, "ola.reward": args.method,
                                           "seeds": args.seeds, "num_epochs": args.epochs,
                                           "xla_opt_level": level})
        toy_split.validate(config)
        trainer = toy_split._trainer(config, args.net, args.method, len(train["label"]))
        data = toy_split.device_data(config, train)
        states, seed_data = trainer.init(toy_split.seed_keys(config, range(args.seeds)),
                                         data["label"])
        jax.block_until_ready(states)
        start = time.perf_counter()
        compiled = trainer.epoch.lower(states, seed_data, data, jnp.int32(0)).compile()
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        for epoch in range(args.epochs):
            states, _ = compiled(states, seed_data, data, jnp.int32(epoch))
        jax.block_until_ready(states)
        run_s = time.perf_counter() - start
        print(f"{level:>13} | {compile_s:11.2f} | {run_s:8.2f} | {compile_s + run_s:9.2f}")


if __name__ == "__main__":
    main()
