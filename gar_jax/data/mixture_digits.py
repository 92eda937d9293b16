"""An offline data-mixture benchmark with known answers, built from scikit-learn's digits.

The 1437 training digits (8x8, `sources.load("digits", "train")`) are cut, by a fixed seeded
permutation (``data_seed``), into 8 sources of different sizes and quality:

  clean_a, clean_b, clean_c   220 clean examples each
  random_labels               200 examples, every label replaced by a uniformly random class
  label_noise_50              200 examples, half of the labels replaced by another class
  corrupted                   150 examples, 80% of the pixels replaced by uniform noise
  duplicates                  40 examples: 5 distinct digits repeated 8 times (a tiny source)
  shifted                     150 examples of another domain: inverted intensities (255 − x)

The 72 training digits left over form a small *target set* (60 of them) that some methods may
use. Two scenarios (`SCENARIOS`):

  "noisy"   test set = the 360 clean test digits; target set = 60 clean digits. The sources
            built to hurt (`HARMFUL`) are random_labels, label_noise_50 and corrupted; the oracle
            samples the clean sources only.
  "target"  the test set is the shifted domain: the 360 test digits inverted; target set = 60
            inverted digits (disjoint from the shifted source and the test set). The oracle
            samples the shifted source only.

Everything is numpy on the host, deterministic given ``data_seed``; the run seeds change the
training, not the data.
"""
from __future__ import annotations

import numpy as np

from gar_jax.data import sources

SOURCE_NAMES = ("clean_a", "clean_b", "clean_c", "random_labels", "label_noise_50", "corrupted",
                "duplicates", "shifted")
SIZES = {"clean_a": 220, "clean_b": 220, "clean_c": 220, "random_labels": 200,
         "label_noise_50": 200, "corrupted": 150, "duplicates": 40, "shifted": 150}
DUPLICATE_DISTINCT = 5
CORRUPT_FRACTION = 0.8
TARGET_SIZE = 60
HARMFUL = ("random_labels", "label_noise_50", "corrupted")
SCENARIOS = ("noisy", "target")
GOOD = {"noisy": ("clean_a", "clean_b", "clean_c"), "target": ("shifted",)}
NUM_CLASSES = 10


def _other_class(rng, labels):
    """A uniformly random class different from each label."""
    return (labels + rng.integers(1, NUM_CLASSES, size=labels.shape)) % NUM_CLASSES


def _invert(images):
    return (255 - images.astype(np.int32)).astype(np.uint8)


def build(scenario: str, data_seed: int = 0, data_dir=None) -> dict:
    """The benchmark's data for `scenario` ("noisy" or "target").

    Returns:
      ``{"sources": {name: {"image": uint8 [N,8,8,1], "label": int32 [N]}} (in SOURCE_NAMES
      order), "test": {...}, "target": {...}, "harmful": [names], "good": [names],
      "scenario": scenario}``.
    """
    if scenario not in SCENARIOS:
        from gar_jax.errors import ConfigError

        raise ConfigError(f"unknown mixture scenario {scenario!r}; choose from {SCENARIOS}")
    train = sources.load("digits", "train", data_dir=data_dir)
    test = sources.load("digits", "test", data_dir=data_dir)
    rng = np.random.default_rng(data_seed)
    perm = rng.permutation(len(train["label"]))
    images, labels = train["image"][perm], train["label"][perm].astype(np.int32)
    out, start = {}, 0
    for name in SOURCE_NAMES:
        n = DUPLICATE_DISTINCT if name == "duplicates" else SIZES[name]
        x, y = images[start:start + n].copy(), labels[start:start + n].copy()
        start += n
        if name == "random_labels":
            y = rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)
        elif name == "label_noise_50":
            flip = rng.permutation(n)[:n // 2]
            y[flip] = _other_class(rng, y[flip]).astype(np.int32)
        elif name == "corrupted":
            mask = rng.random(x.shape) < CORRUPT_FRACTION
            x = np.where(mask, rng.integers(0, 256, size=x.shape), x).astype(np.uint8)
        elif name == "duplicates":
            reps = SIZES[name] // n
            x, y = np.repeat(x, reps, axis=0), np.repeat(y, reps, axis=0)
        elif name == "shifted":
            x = _invert(x)
        out[name] = {"image": x, "label": y.astype(np.int32)}
    held_x, held_y = images[start:start + TARGET_SIZE], labels[start:start + TARGET_SIZE]
    test_x, test_y = test["image"], test["label"].astype(np.int32)
    if scenario == "target":
        held_x, test_x = _invert(held_x), _invert(test_x)
    return {"sources": out, "test": {"image": test_x, "label": test_y},
            "target": {"image": held_x, "label": held_y.astype(np.int32)},
            "harmful": list(HARMFUL), "good": list(GOOD[scenario]), "scenario": scenario}
