"""Device-resident data: the training set lives on the accelerators, batches are gathered there.

Training set (`DeviceDataset`). The data is split into ``num_shards`` shards, one per process
(one shard on a single host): shard ``s`` holds examples ``s, s + S, s + 2S, ...`` (cut to equal
length ``N // S``). Every device keeps a full uint8 copy of its process's shard: the arrays are
``[D, N_s, H, W, C]`` sharded ``P('data')``, device ``d`` holding the shard of its process. Why
not one replicated or one sharded array: a global permutation gathered from an array split over
devices would need an all-to-all per step; a per-device copy of the process's shard makes every
gather local (no communication), and CIFAR's 150 MB fits many times in accelerator memory.

Batches are a pure function of the global step: epoch ``e = step // steps_per_epoch`` and
position ``i = step % steps_per_epoch``. Each shard draws a permutation of its ``N_s`` examples
from ``fold_in(fold_in(PRNGKey(seed), e), s)``; a process contributes rows
``perm[i*B/S : (i+1)*B/S]`` of its shard, its ``L`` devices ``B/D`` consecutive rows each. The
last ``N_s mod (B/S)`` examples of each permutation are dropped (a new permutation next epoch).
On one host the global batch is exactly ``images[perm[i*B : (i+1)*B]]``, whatever the number
of devices, which is what makes 1-device and 8-device runs comparable.
Since the data position is just the step, a checkpointed step resumes the same batch sequence.

Evaluation (`EvalBatches`). The whole test split is covered exactly once: process ``p`` takes
examples ``p, p + P, ...``, cut into batches of ``B/P`` rows, the last one padded with zeros and
marked by ``mask`` (1 for a real example, 0 for padding). Every process has the same number of
batches (processes with fewer examples pad more). The batches are placed on the devices once.
"""
import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from gar_jax.errors import ConfigError
from gar_jax.mesh import DATA_AXIS, check_batch_size, data_sharding


def _shard(data: dict, shard: int, num_shards: int) -> dict:
    """Examples ``shard, shard + S, ...`` of a host dataset, cut to ``N // S`` rows."""
    n = len(data["label"]) // num_shards
    return {k: np.asarray(v[shard::num_shards][:n]) for k, v in data.items()}


def _per_device_copies(mesh: Mesh, num_shards: int, data: dict) -> dict:
    """Global ``[D, N_s, ...]`` arrays: each addressable device gets its shard (see module doc)."""
    devices = list(mesh.devices.flat)
    per_shard = len(devices) // num_shards
    cache = {}
    pieces = {k: [] for k in data}
    for position, device in enumerate(devices):
        if device.process_index != jax.process_index():
            continue
        shard = position // per_shard
        if shard not in cache:
            cache[shard] = _shard(data, shard, num_shards)
        for k, v in cache[shard].items():
            pieces[k].append(jax.device_put(v[None], device))
    sharding = data_sharding(mesh)
    n = len(data["label"]) // num_shards
    return {k: jax.make_array_from_single_device_arrays(
                (len(devices), n) + np.shape(data[k])[1:], sharding, pieces[k])
            for k in data}


@dataclasses.dataclass(frozen=True)
class DeviceDataset:
    """A training set on the devices; ``batch(step)`` gathers the global batch of a step.

    Attributes:
      arrays: ``{"image": uint8 [D, N_s, H, W, C], "label": int32 [D, N_s]}`` sharded
        ``P('data')`` (device d's row is the shard of its process).
      mesh: the 1-D ``'data'`` mesh (`gar_jax.mesh.make_mesh`).
      batch_size: global batch size B (a multiple of the device count and of ``num_shards``).
      seed: seed of the per-epoch permutations.
      num_shards: S, the number of data shards (processes).
    """
    arrays: dict
    mesh: Mesh
    batch_size: int
    seed: int
    num_shards: int

    @classmethod
    def create(cls, data: dict, mesh: Mesh, *, batch_size: int, seed: int,
               num_shards: Optional[int] = None) -> "DeviceDataset":
        """Puts this process's shard of `data` (a whole host split) on its devices.

        Args:
          data: ``{"image": uint8 [N, H, W, C], "label": int32 [N]}`` (`sources.load`).
          mesh: 1-D ``'data'`` mesh, devices ordered by process.
          batch_size: global batch size.
          seed: seed of the per-epoch permutations.
          num_shards: number of shards; default ``jax.process_count()``. (A larger value on
            one process simulates a multi-host layout: tests use it.)
        """
        num_shards = jax.process_count() if num_shards is None else num_shards
        check_batch_size("batch_size", batch_size, mesh.devices.size)
        if mesh.devices.size % num_shards or batch_size % num_shards:
            raise ValueError(f"{num_shards} shards must divide the {mesh.devices.size} devices "
                             f"and the batch size {batch_size}")
        if len(data["label"]) // num_shards < batch_size // num_shards:
            raise ConfigError(f"the {len(data['label'])} training examples make no batch of "
                              f"{batch_size}; lower config.batch_size")
        arrays = _per_device_copies(mesh, num_shards, data)
        return cls(arrays, mesh, batch_size, seed, num_shards)

    @property
    def shard_size(self) -> int:
        """N_s, the examples per shard."""
        return self.arrays["label"].shape[1]

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per epoch (the remainder of each permutation is dropped)."""
        return self.shard_size // (self.batch_size // self.num_shards)

    @property
    def image_shape(self):
        return tuple(self.arrays["image"].shape[2:])

    def gather_fn(self):
        """A pure, jittable ``fn(arrays, step int32 []) -> batch`` (for use inside other jits).

        The batch is ``{"image": uint8 [B, H, W, C], "label": int32 [B]}`` sharded ``P('data')``.
        """
        num_devices = self.mesh.devices.size
        per_device = self.batch_size // num_devices
        per_shard = self.batch_size // self.num_shards
        devices_per_shard = num_devices // self.num_shards
        steps_per_epoch, shard_size = self.steps_per_epoch, self.shard_size
        base_key = jax.random.PRNGKey(self.seed)

        def local(arrays, step):
            epoch, position = step // steps_per_epoch, step % steps_per_epoch
            device = jax.lax.axis_index(DATA_AXIS)
            shard = device // devices_per_shard
            key = jax.random.fold_in(jax.random.fold_in(base_key, epoch), shard)
            perm = jax.random.permutation(key, shard_size)
            start = position * per_shard + (device % devices_per_shard) * per_device
            idx = jax.lax.dynamic_slice(perm, (start,), (per_device,))
            return {k: jnp.take(v[0], idx, axis=0) for k, v in arrays.items()}

        return jax.shard_map(local, mesh=self.mesh, in_specs=(P(DATA_AXIS), P()),
                             out_specs=P(DATA_AXIS))

    def batch(self, step) -> dict:
        """The global batch of training step `step` (int), sharded ``P('data')``."""
        if not hasattr(self, "_gather"):
            object.__setattr__(self, "_gather", jax.jit(self.gather_fn()))
        return self._gather(self.arrays, jnp.asarray(step, jnp.int32))


class EvalBatches:
    """Padded, masked evaluation batches covering a split exactly once (see module doc).

    Iterating yields global batches ``{"image": [B, ...], "label": int32 [B], "mask": float32 [B]}``
    sharded ``P('data')``; ``num_examples`` is the split's size (the sum of all masks).
    """

    def __init__(self, data: dict, mesh: Mesh, batch_size: int):
        check_batch_size("eval_batch_size", batch_size, mesh.devices.size)
        processes, index = jax.process_count(), jax.process_index()
        self.num_examples = len(data["label"])
        local_batch = batch_size // processes
        # Every process runs the same number of batches, enough for the largest slice.
        num_batches = math.ceil(math.ceil(self.num_examples / processes) / local_batch)
        local = {k: np.asarray(v[index::processes]) for k, v in data.items()}
        n = len(local["label"])
        local["mask"] = np.ones((n,), np.float32)
        padded = {k: np.zeros((num_batches * local_batch,) + v.shape[1:], v.dtype)
                  for k, v in local.items()}
        for k, v in local.items():
            padded[k][:n] = v
        sharding = data_sharding(mesh)
        self._batches = [
            {k: jax.make_array_from_process_local_data(
                sharding, v[i * local_batch:(i + 1) * local_batch])
             for k, v in padded.items()}
            for i in range(num_batches)]

    def __len__(self):
        return len(self._batches)

    def __iter__(self):
        return iter(self._batches)
