"""``python tests/cli_data_shards.py SHARDS --config=... --workdir=...``: the real CLI in one
process, with the training set split into SHARDS data shards as SHARDS processes would split it
(`DeviceDataset.create`'s ``num_shards``; see `gar_jax.data.device`). A run so made on 1 process x
8 devices draws the same batches as the same run on SHARDS processes x 8/SHARDS devices: the
reference of tests/test_multiprocess.py."""
import sys

from absl import app

from gar_jax import main
from gar_jax.data import device

if __name__ == "__main__":
    shards = int(sys.argv.pop(1))
    create = device.DeviceDataset.create.__func__

    def create_sharded(cls, data, mesh, *, batch_size, seed, num_shards=None):
        return create(cls, data, mesh, batch_size=batch_size, seed=seed,
                      num_shards=shards if num_shards is None else num_shards)

    device.DeviceDataset.create = classmethod(create_sharded)
    app.run(main.main, flags_parser=main._parse_flags)
