"""Device mesh, shardings and multi-host start-up for data-parallel training.

One mesh axis, ``'data'``, over every device of every process. Devices are ordered by
``(process_index, id)``, so the devices of one process form one contiguous block of the axis: the
global batch ``[B, ...]`` sharded with ``P('data')`` puts rows ``[d*B/D, (d+1)*B/D)`` on device
``d``, and process ``p`` owns rows ``[p*B/P, (p+1)*B/P)``. `gar_jax.data.device` relies on this
order to let each process read only its own shard of the data.

Multi-host: `initialize_distributed` calls ``jax.distributed.initialize()`` before anything else
touches the devices when asked to (``config.distributed = "on"``) or, with ``"auto"``, when the
environment shows a multi-process launch (SLURM with more than one task, Open MPI, an explicit
``JAX_COORDINATOR_ADDRESS``, a multi-host TPU slice). JAX itself reads the coordinator address,
process count and id from SLURM, Open MPI and TPU environments; with ``JAX_COORDINATOR_ADDRESS``
(any other launcher, or several processes on one machine) the process count and id come from
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``. On CPU the processes' collectives use gloo.
(tests/test_multiprocess.py runs all four launches, 2 processes x 4 CPU devices on one machine.)
"""
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gar_jax.errors import ConfigError

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh with axis ``'data'`` over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over ``'data'`` (batches: each device holds B/D rows)."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, PRNG keys)."""
    return NamedSharding(mesh, P())


def check_batch_size(name: str, batch_size: int, num_devices: int) -> None:
    """Raises ConfigError unless `batch_size` splits evenly over `num_devices` devices."""
    n = num_devices
    if batch_size <= 0 or batch_size % n:
        raise ConfigError(
            f"config.{name}={batch_size} must be a positive multiple of the {n} devices "
            f"({jax.devices()[0].platform}); use e.g. {max(n, batch_size // n * n)}")


def _multi_process_env() -> bool:
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return True
    if int(env.get("SLURM_NTASKS", "1")) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return True
    # Multi-host Cloud TPU slices list their workers' hostnames.
    return len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1


_initialized = False


def initialize_distributed(mode: str = "auto") -> bool:
    """Starts multi-host JAX if `mode` asks for it; returns True if it did (or had).

    Args:
      mode: ``"off"`` (single process), ``"on"`` (always call ``jax.distributed.initialize()``)
        or ``"auto"`` (call it when the environment shows a multi-process launch).
    """
    global _initialized
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"config.distributed={mode!r} must be 'auto', 'on' or 'off'")
    if _initialized:
        return True
    if mode == "on" or (mode == "auto" and _multi_process_env()):
        env = os.environ
        kwargs = {}
        try:
            for name, key in (("num_processes", "JAX_NUM_PROCESSES"),
                              ("process_id", "JAX_PROCESS_ID")):
                if env.get(key):
                    kwargs[name] = int(env[key])
        except ValueError:
            raise ConfigError(f"JAX_NUM_PROCESSES={env.get('JAX_NUM_PROCESSES')!r} and "
                              f"JAX_PROCESS_ID={env.get('JAX_PROCESS_ID')!r} must be integers")
        try:
            jax.distributed.initialize(**kwargs)
        except ValueError as e:  # e.g. JAX_COORDINATOR_ADDRESS without a process count or id
            raise ConfigError(
                f"cannot start multi-process JAX ({e}); under SLURM, Open MPI or a TPU slice "
                "JAX finds the processes itself, otherwise set JAX_COORDINATOR_ADDRESS, "
                "JAX_NUM_PROCESSES and JAX_PROCESS_ID (or --config.distributed=off)") from None
        _initialized = True
    return _initialized
