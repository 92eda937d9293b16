"""Dataset sources: whole datasets as host numpy arrays, ready to be put on devices.

Every dataset is returned as ``{"image": uint8 [N, H, W, C], "label": int32 [N]}`` (the project's
batch format), small enough to keep resident on the accelerators (CIFAR: 150 MB).

Datasets:
- ``"digits"``: scikit-learn's bundled handwritten digits (1797 real 8x8 grey images, 10 classes;
  no network needed). Pixel values 0..16 are rescaled to uint8 0..255 (``round(v * 255 / 16)``),
  shape [N, 8, 8, 1]. There is no official split: a fixed stratified split with
  ``sklearn.model_selection.train_test_split(test_size=360, stratify=labels, random_state=0)``
  gives 1437 train / 360 test images (each class's share, about 36 test images per class), the
  same on every machine.
- ``"digits32_small"``: the same digits upsampled to 32x32x3 (bilinear, grey repeated over 3
  channels), 10 training images per class (100) and the other 1697 as test set: the offline
  benchmark on which augmentation matters (`gar_jax.data.digits32`).
- ``"cifar10"``, ``"cifar100"``, ``"svhn"`` (tfds ``svhn_cropped``): read through
  ``tfds.data_source`` (random access on ArrayRecord files; needs no TensorFlow). The files must
  have been prepared once, in the ``array_record`` format (see ``_prepare_hint``).
"""
from typing import Optional

import numpy as np

from gar_jax.errors import ConfigError

# name -> (tfds name or None for scikit-learn, num_classes, image shape [H, W, C]).
_DATASETS = {
    "digits": (None, 10, (8, 8, 1)),
    "digits32_small": (None, 10, (32, 32, 3)),
    "cifar10": ("cifar10", 10, (32, 32, 3)),
    "cifar100": ("cifar100", 100, (32, 32, 3)),
    "svhn": ("svhn_cropped", 10, (32, 32, 3)),
}
SPLITS = ("train", "test")
# (train, test) sizes: digits as split here; the others as tfds prepares them.
_SIZES = {"digits": (1437, 360), "digits32_small": (100, 1697), "cifar10": (50000, 10000),
          "cifar100": (50000, 10000), "svhn": (73257, 26032)}
DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0


def names():
    """The dataset names `load` accepts."""
    return tuple(_DATASETS)


def _check_name(name: str, split: str = "train") -> None:
    if name not in _DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(_DATASETS)}")
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r} of dataset {name!r}; choose one of {SPLITS}")


def info(name: str):
    """Returns ``(num_classes, image_shape)`` of a dataset without loading it.

    ``image_shape`` is the tuple ``(H, W, C)`` of one uint8 image.
    """
    _check_name(name)
    _, num_classes, shape = _DATASETS[name]
    return num_classes, shape


def num_examples(name: str, split: str) -> int:
    """Number of examples of a split, without loading it (for config validation)."""
    _check_name(name, split)
    return _SIZES[name][SPLITS.index(split)]


def load(name: str, split: str, *, data_dir: Optional[str] = None) -> dict:
    """Loads a whole split into host memory.

    Args:
      name: one of `names()`.
      split: ``"train"`` or ``"test"``.
      data_dir: tfds data directory (default: tfds' own default, ``~/tensorflow_datasets``);
        ignored for the scikit-learn datasets.

    Returns:
      ``{"image": uint8 [N, H, W, C], "label": int32 [N]}``.

    Raises:
      ConfigError: unknown name or split, or a tfds dataset that has not been prepared.
    """
    _check_name(name, split)
    tfds_name = _DATASETS[name][0]
    if name == "digits32_small":
        from gar_jax.data import digits32
        return digits32.load(split)
    if tfds_name is None:
        return _load_digits(split)
    return _load_tfds(tfds_name, split, data_dir, info(name)[1])


def _load_digits(split: str) -> dict:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Values are integers 0..16 (counts of set pixels in 4x4 blocks); map onto the usual 0..255.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=DIGITS_TEST_SIZE, stratify=labels,
        random_state=DIGITS_SPLIT_SEED)
    if split == "train":
        return {"image": x_train, "label": y_train}
    return {"image": x_test, "label": y_test}


def _prepare_hint(tfds_name: str) -> str:
    return ('prepare it once with: pip install -e ".[prepare]" && python -c "import '
            f"tensorflow_datasets as tfds; tfds.builder('{tfds_name}')"
            ".download_and_prepare(file_format='array_record')\" (or: tfds build "
            f"{tfds_name} --file_format=array_record), then pass its --config.data_dir")


def _load_tfds(tfds_name: str, split: str, data_dir: Optional[str], shape) -> dict:
    import tensorflow_datasets as tfds

    try:
        # download=False: these machines may have no network, and preparing needs TensorFlow.
        source = tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False)
        n = len(source)
    except Exception as e:  # tfds raises several types (missing files, tfrecord-only data, ...).
        where = data_dir or "the default tfds data_dir"
        raise ConfigError(
            f"tfds dataset {tfds_name!r} ({split}) is not available as array_record in {where} "
            f"({type(e).__name__}); {_prepare_hint(tfds_name)}") from e
    images = np.empty((n,) + tuple(shape), np.uint8)
    labels = np.empty((n,), np.int32)
    # One record at a time into preallocated arrays: memory stays at the final size. (Batched
    # __getitems__ would not help much, PNG decoding dominates, and tfds' mock lacks it.)
    for i in range(n):
        record = source[i]
        images[i] = record["image"]
        labels[i] = record["label"]
    return {"image": images, "label": labels}
