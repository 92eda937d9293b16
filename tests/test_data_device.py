"""Device-resident training data and padded evaluation batches, on 8 simulated devices."""
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from gar_jax.data.device import DeviceDataset, EvalBatches
from gar_jax.errors import ConfigError
from gar_jax.mesh import make_mesh


def _ids_dataset(n, shape=(4, 4, 1)):
    """Example i has label i and every pixel = i % 256 (so rows can be traced back)."""
    labels = np.arange(n, dtype=np.int32)
    images = np.broadcast_to((labels % 256).astype(np.uint8)[:, None, None, None],
                             (n,) + shape).copy()
    return {"image": images, "label": labels}


def _perm(seed, epoch, shard, n):
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), epoch), shard)
    return np.asarray(jax.random.permutation(key, n))


def test_batches_are_epoch_permutations_and_device_count_invariant():
    data = _ids_dataset(100)
    ds8 = DeviceDataset.create(data, make_mesh(), batch_size=24, seed=7)
    ds1 = DeviceDataset.create(data, make_mesh(jax.devices()[:1]), batch_size=24, seed=7)
    assert ds8.steps_per_epoch == 4  # 100 // 24; the last 4 examples of each permutation dropped
    for epoch in range(2):
        perm = _perm(7, epoch, 0, 100)
        seen = []
        for i in range(4):
            step = epoch * 4 + i
            batch = ds8.batch(step)
            assert batch["image"].sharding.spec == P("data")
            assert batch["image"].dtype == np.uint8 and batch["image"].shape == (24, 4, 4, 1)
            labels = np.asarray(batch["label"])
            np.testing.assert_array_equal(labels, perm[i * 24:(i + 1) * 24])
            np.testing.assert_array_equal(np.asarray(batch["image"])[:, 0, 0, 0], labels % 256)
            np.testing.assert_array_equal(np.asarray(ds1.batch(step)["label"]), labels)
            seen.extend(labels)
        assert len(set(seen)) == 96  # no example twice within an epoch
    assert not np.array_equal(_perm(7, 0, 0, 100), _perm(7, 1, 0, 100))


def test_simulated_two_process_shards():
    # Two shards (as two hosts would hold): shard s is examples s, s+2, ...; each half of the
    # global batch comes from one shard's own permutation.
    data = _ids_dataset(50)
    ds = DeviceDataset.create(data, make_mesh(), batch_size=16, seed=3, num_shards=2)
    assert ds.shard_size == 25 and ds.steps_per_epoch == 3
    labels = np.asarray(ds.batch(4)["label"])  # epoch 1, position 1
    for s in range(2):
        shard_ids = np.arange(50)[s::2]
        expected = shard_ids[_perm(3, 1, s, 25)[8:16]]
        np.testing.assert_array_equal(labels[s * 8:(s + 1) * 8], expected)


@pytest.mark.parametrize("batch_size", [48, 360, 104])
def test_eval_batches_cover_every_example_once(batch_size):
    data = _ids_dataset(361)
    batches = EvalBatches(data, make_mesh(), batch_size)
    assert len(batches) == -(-361 // batch_size)
    ids = []
    for b in batches:
        mask = np.asarray(b["mask"])
        assert b["label"].shape == (batch_size,) and b["image"].sharding.spec == P("data")
        assert set(np.unique(mask)) <= {0.0, 1.0}
        ids.extend(np.asarray(b["label"])[mask == 1])
    assert sorted(ids) == list(range(361))
    assert sum(float(np.asarray(b["mask"]).sum()) for b in batches) == 361


def test_bad_batch_sizes_are_config_errors():
    data = _ids_dataset(40)
    with pytest.raises(ConfigError, match="multiple of the 8 devices"):
        DeviceDataset.create(data, make_mesh(), batch_size=12, seed=0)
    with pytest.raises(ConfigError, match="make no batch"):
        DeviceDataset.create(data, make_mesh(), batch_size=48, seed=0)
    with pytest.raises(ConfigError, match="eval_batch_size"):
        EvalBatches(data, make_mesh(), 20)
