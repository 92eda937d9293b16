"""digits32_small: the reduced-data 32x32 digits benchmark (gar_jax.data.digits32)."""
import hashlib

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from gar_jax.data import digits32, sources, stats


@pytest.fixture(scope="module")
def splits():
    return sources.load("digits32_small", "train"), sources.load("digits32_small", "test")


def _pil_upsample(image: np.ndarray, size: int) -> np.ndarray:
    """Pillow's bilinear resize of one float image (mode "F": no 8-bit rounding inside)."""
    return np.asarray(Image.fromarray(image.astype(np.float32), "F").resize(
        (size, size), Image.BILINEAR), np.float64)


def test_upsample_matches_pillow_bilinear():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 16, (3, 8, 8))
    ours = digits32.upsample(images, 32)
    for image, got in zip(images, ours):
        np.testing.assert_allclose(got, _pil_upsample(image, 32), atol=1e-4)
    # Another ratio (not a divisor), and a hand-computed case: 2 pixels [0, 4] -> 4 pixels.
    np.testing.assert_allclose(digits32.upsample(images[:1], 13)[0],
                               _pil_upsample(images[0], 13), atol=1e-4)
    w = digits32.upsample_matrix(2, 4)
    np.testing.assert_allclose(w @ np.array([0.0, 4.0]), [0.0, 1.0, 3.0, 4.0])


def test_shapes_balance_and_sizes_match_info(splits):
    train, test = splits
    assert sources.info("digits32_small") == (10, (32, 32, 3))
    for split, data in zip(("train", "test"), splits):
        assert data["image"].dtype == np.uint8 and data["label"].dtype == np.int32
        assert data["image"].shape == (sources.num_examples("digits32_small", split), 32, 32, 3)
        # Grey: the three channels are the same image.
        assert np.array_equal(data["image"][..., 0], data["image"][..., 2])
    per_class = digits32.TRAIN_PER_CLASS
    np.testing.assert_array_equal(np.bincount(train["label"], minlength=10), [per_class] * 10)
    np.testing.assert_array_equal(
        np.bincount(test["label"], minlength=10),
        np.bincount(load_digits().target, minlength=10) - per_class)


def test_splits_are_disjoint_complete_and_resized_like_pillow(splits):
    """The union of the splits is every digit, each one Pillow-resized and rescaled, once."""
    raw = load_digits()
    train_idx, test_idx = digits32.split_indices(raw.target.astype(np.int32))
    assert np.intersect1d(train_idx, test_idx).size == 0
    np.testing.assert_array_equal(np.union1d(train_idx, test_idx), np.arange(len(raw.target)))
    for data, idx in zip(splits, (train_idx, test_idx)):
        np.testing.assert_array_equal(data["label"], raw.target[idx])
        reference = np.stack([_pil_upsample(im, 32) for im in raw.images[idx]]) * 255 / 16
        diff = np.abs(data["image"][..., 0].astype(np.float64) - reference)
        assert diff.max() <= 0.5 + 1e-3  # rounding only
    # No test image is (a copy of) a training image: the digits have no duplicates.
    train_bytes = {bytes(im) for im in splits[0]["image"]}
    assert not any(bytes(im) in train_bytes for im in splits[1]["image"])


def test_split_is_fixed_and_loading_is_deterministic(splits):
    train_idx, _ = digits32.split_indices(load_digits().target.astype(np.int32))
    # The benchmark's training set, pinned: results.json numbers refer to exactly these images.
    assert hashlib.sha256(train_idx.astype(np.int64).tobytes()).hexdigest()[:16] == \
        PINNED_TRAIN_SHA
    again = sources.load("digits32_small", "train")
    np.testing.assert_array_equal(again["image"], splits[0]["image"])
    np.testing.assert_array_equal(again["label"], splits[0]["label"])


def test_pixel_statistics_are_the_training_split(splits):
    mean, std = stats.mean_std("digits32_small")
    x = splits[0]["image"].astype(np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), atol=5e-4)
    np.testing.assert_allclose(std, x.std(axis=(0, 1, 2)), atol=5e-4)


PINNED_TRAIN_SHA = "9bf7e0365f93bc7b"  # sha256 of the 100 int64 training indices
