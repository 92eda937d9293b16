"""``digits32_small``: an offline benchmark on which augmentation changes accuracy by points.

scikit-learn's 1797 handwritten digits, upsampled from 8x8 to 32x32 and repeated over 3 channels
(CIFAR's shape, so the CIFAR policies, the standard pipeline and its pixel sizes apply unchanged),
in a reduced-data regime: `TRAIN_PER_CLASS` labeled training images per class (100 in all), the
other 1697 images are the test set.

Why this benchmark (experiments/compare/README.md has the measurements):
- ``digits`` at 8x8 with 1437 training images is saturated: every policy scores 97-99 %, so the
  methods' differences are seed noise. With tens of images per class a model overfits and the
  augmentation is the main regularizer, as in the reduced-data regimes of the augmentation papers.
- 32x32x3 gives the CIFAR policies their intended geometry (translations up to 14 px, Cutout 16,
  pad-crop 4) instead of being scaled or destroying 8x8 images.
- A large test set (1697 images; one image = 0.059 points) keeps the test noise well below the
  differences to be measured; the training subset is fixed (stratified, seed `SPLIT_SEED`), so
  the spread over run seeds is the training's own (init, data order, augmentation).

Resizing: bilinear with pixel centers at half-integers and edges clamped (`upsample_matrix`),
applied to the 0..16 values then mapped to 0..255 as ``round(v * 255 / 16)`` like ``digits``;
for upsampling this is exactly Pillow's ``Image.resize(..., BILINEAR)`` (tests/test_data_small.py).
"""
import numpy as np

NAME = "digits32_small"
TRAIN_PER_CLASS = 10
NUM_CLASSES = 10
SIZE = 32
CHANNELS = 3
SPLIT_SEED = 0
NUM_IMAGES = 1797  # scikit-learn's digits


def upsample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` float64 bilinear interpolation weights (rows sum to 1).

    Output pixel i has its center at input coordinate ``(i + 0.5) * n_in / n_out - 0.5``; it is
    the linear interpolation of the two nearest input pixels, clamped to the border.
    """
    x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    x = np.clip(x, 0, n_in - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = x - lo
    weights = np.zeros((n_out, n_in))
    weights[np.arange(n_out), lo] += 1 - frac
    weights[np.arange(n_out), hi] += frac
    return weights


def upsample(images: np.ndarray, size: int = SIZE) -> np.ndarray:
    """``[N, h, w]`` float -> ``[N, size, size]`` float64 by `upsample_matrix` on each axis."""
    rows = upsample_matrix(images.shape[1], size)
    cols = upsample_matrix(images.shape[2], size)
    return np.einsum("ih,nhw,jw->nij", rows, images.astype(np.float64), cols)


def split_indices(labels: np.ndarray, per_class: int = TRAIN_PER_CLASS,
                  seed: int = SPLIT_SEED):
    """``(train, test)`` sorted index arrays: `per_class` images of each class drawn without
    replacement by ``np.random.default_rng(seed)`` (one permutation per class, in class order)
    for training, every other image for testing."""
    rng = np.random.default_rng(seed)
    train = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class]
                            for c in range(NUM_CLASSES)])
    train = np.sort(train)
    test = np.setdiff1d(np.arange(labels.shape[0]), train)
    return train, test


def load(split: str) -> dict:
    """``{"image": uint8 [N, 32, 32, 3], "label": int32 [N]}``: N = 100 (train) or 1697 (test)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = digits.target.astype(np.int32)
    train, test = split_indices(labels)
    index = train if split == "train" else test
    big = upsample(digits.images[index])  # values 0..16
    images = np.round(big * (255.0 / 16.0)).astype(np.uint8)
    images = np.repeat(images[..., None], CHANNELS, axis=-1)
    return {"image": images, "label": labels[index]}
