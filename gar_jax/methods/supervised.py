"""Supervised training with a fixed augmentation policy (``experiment = "supervised"``).

``python -m gar_jax.main --config=configs/cifar10_baseline.py --workdir=DIR``: the Table 2
baselines (standard pipeline, UA, RA, TA, AA and the replayed policies of the other methods).
The whole method is one plain step; the engine does the rest.
"""
from typing import Callable

from gar_jax.train import engine, steps

validate = engine.validate


def advance_fn(setup: engine.Setup) -> Callable:
    """``advance(state, step) -> (state, metrics)``: one plain supervised step on batch `step`
    with the config's augmentation (`engine.make_augment`)."""
    train_step = steps.make_train_step(setup.model, setup.tx, setup.mesh, augment=setup.augment,
                                       schedule=setup.schedule)

    def advance(state, step):
        return train_step(state, setup.train_data.batch(step), steps.step_key(state.rng, step))

    return advance


def run(config, workdir: str) -> dict:
    """Trains and evaluates the config's supervised run in `workdir` (resuming if possible)."""
    validate(config)
    setup = engine.build(config)
    return engine.train(config, workdir, setup,
                        engine.Method(state=setup.state, advance=advance_fn(setup)))
