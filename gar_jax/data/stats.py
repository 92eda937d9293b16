"""Per-channel pixel statistics of each dataset's training split, in 0..1 units.

The models normalize their uint8 inputs themselves with these: ``(x / 255 - mean) / std``.
CIFAR and SVHN values are the usual published statistics of their training sets; the digits
values were computed from `gar_jax.data.sources.load("digits", "train")` (1437 images), the
digits32_small values from its 100 training images.
"""
from gar_jax.errors import ConfigError

_MEAN_STD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "digits": ((0.3054,), (0.3760,)),
    "digits32_small": ((0.3049,) * 3, (0.3226,) * 3),
}


def mean_std(name: str):
    """Returns ``(mean, std)``: tuples with one float per channel, in 0..1 units."""
    if name not in _MEAN_STD:
        raise ConfigError(f"no pixel statistics for dataset {name!r}; known: {sorted(_MEAN_STD)}")
    return _MEAN_STD[name]
