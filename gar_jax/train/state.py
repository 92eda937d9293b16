"""The train state: everything a run needs to continue, as one pytree (checkpointed whole).

``TrainState`` holds the step, model parameters, BatchNorm statistics, optimizer state and the
run's base PRNG key (raw ``uint32 [2]``; the key of step t is ``fold_in(rng, t)``). The data
position is the step itself (`gar_jax.data.device` derives every batch from it).

Extending it (a method's learned parameters, e.g. OLA's policy): subclass with extra fields and
decorate the subclass too, then build it from a base state::

    @flax.struct.dataclass
    class OLAState(TrainState):
        policy: Any
        policy_opt_state: Any
        reward_stats: Any

    state = OLAState(**vars(base_state), policy=..., policy_opt_state=..., reward_stats=...)

The engine's checkpoints, its loop and `steps.apply_gradients` treat the subclass like the base.
"""
from typing import Any

import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from gar_jax.mesh import replicated

# Initialization folds this into the run's key; training step t folds in t (< 2**32 - 1).
INIT_STREAM = 2**32 - 1


@flax.struct.dataclass
class TrainState:
    """step int32 []; params, batch_stats (``{}`` for GroupNorm models), opt_state pytrees;
    rng uint32 [2]. All leaves are replicated over the mesh."""
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array


def initial_state(model, tx, image_shape, rng) -> TrainState:
    """The step-0 state from the run's key `rng` (pure: jit or vmap it). Initialization uses
    ``fold_in(rng, INIT_STREAM)`` (2**32 - 1, never a training step's key)."""
    init_key = jax.random.fold_in(rng, INIT_STREAM)
    variables = model.init({"params": init_key, "dropout": init_key},
                           jnp.zeros((1,) + tuple(image_shape), jnp.uint8), train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=tx.init(params), rng=rng)


def create_state(model, tx, *, image_shape, seed: int, mesh: Mesh) -> TrainState:
    """Initializes a model and its optimizer, replicated on the mesh.

    Args:
      model: a Flax module called as ``model.apply(variables, images, train=...)``.
      tx: an optax transformation.
      image_shape: ``(H, W, C)`` of one input image.
      seed: the run's seed; the state's ``rng`` is ``PRNGKey(seed)`` and initialization uses
        ``fold_in(rng, INIT_STREAM)`` (2**32 - 1, never a training step's key).
      mesh: the ``'data'`` mesh; every leaf is replicated over it.
    """
    def init(rng):
        return initial_state(model, tx, image_shape, rng)

    # The state is replicated, so partitionable random bits buy nothing here, while XLA:CPU
    # compiles the partitionable threefry initializers of a WRN ~4x slower (25 s vs 5 s).
    with jax.threefry_partitionable(False):
        return jax.jit(init, out_shardings=replicated(mesh))(jax.random.PRNGKey(seed))
