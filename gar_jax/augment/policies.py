"""Fixed augmentation policies: pure functions ``(key, images uint8 [B, H, W, C]) -> images``.

Every example draws its own ops, levels, signs and positions from ``key``; the same key gives the
same batch. Policies other than ``standard`` do NOT include the standard CIFAR pipeline: append it
explicitly, ``compose(get_policy("ra", n=2, m=14), standard)`` or
``get_policy("ra", n=2, m=14, with_standard=True)`` (the papers apply their policy first, then
pad-crop, flip and Cutout).

- ``standard``: pad 4 (zeros) + random 32x32 crop, horizontal flip w.p. 1/2, Cutout 16 (DeVries &
  Taylor: a 16x16 square centred on a uniformly drawn pixel, clipped at the borders, filled with
  ``fill``). The authors apply Cutout after normalization, where 0 is the dataset mean; on uint8
  images that is ``fill=(125, 123, 114)`` for CIFAR-10. The default fill is 0 (black).
- ``uniform_augment(space)``: 2 different ops, levels uniform over all levels, each kept w.p. 1/2.
- ``rand_augment(space, n, m)``: n ops uniform with replacement, all at level m, always applied.
- ``trivial_augment(space)``: 1 op uniform, level uniform (TrivialAugment's 14-op wide space).
- ``auto_augment(dataset)``: one of the 25 sub-policies uniformly; each step fires with its
  probability (autoaugment.py).
"""
import jax
import jax.numpy as jnp

from gar_jax.augment import autoaugment
from gar_jax.augment import color
from gar_jax.augment import dra_policy
from gar_jax.augment import faa_policy
from gar_jax.augment import ops
from gar_jax.augment import smart_augment
from gar_jax.augment.applier import SlotPolicy
from gar_jax.augment.spaces import SPACES
from gar_jax.augment.spaces import get_space
from gar_jax.errors import ConfigError


def _check_images(images):
    ops.check_image(images, rank=4, uint8_only=True, what="images")


def _check_count(name: str, value, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def identity(key, images):
    """The "none" policy: images unchanged."""
    del key
    _check_images(images)
    return images


def standard(key, images, pad: int = 4, cutout: int = 16, fill=0, flip: bool = True):
    """Pad-``pad`` random crop, random horizontal flip (unless ``flip=False``: digits are not
    mirror-symmetric), Cutout ``cutout`` (0: none); uint8 out."""
    _check_images(images)
    _check_count("pad", pad)
    _check_count("cutout", cutout)
    b, h, w, c = images.shape
    k_y, k_x, k_flip, k_cy, k_cx = jax.random.split(key, 5)
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    top = jax.random.randint(k_y, (b,), 0, 2 * pad + 1)
    left = jax.random.randint(k_x, (b,), 0, 2 * pad + 1)
    crop = jax.vmap(lambda im, y, x: jax.lax.dynamic_slice(im, (y, x, 0), (h, w, c)))(
        padded, top, left)
    flips = jax.random.bernoulli(k_flip, 0.5 if flip else 0.0, (b,))
    out = jnp.where(flips[:, None, None, None], crop[:, :, ::-1], crop)
    if cutout:
        cy = jax.random.randint(k_cy, (b,), 0, h)
        cx = jax.random.randint(k_cx, (b,), 0, w)
        planar = jnp.moveaxis(out, -1, 1)  # color.cutout works on [B, C, H, W]
        out = jnp.moveaxis(color.cutout(planar, jnp.full((b,), cutout), cy, cx, fill), 1, -1)
    return out


def uniform_augment(space="randaug") -> SlotPolicy:
    """UniformAugment as the GAR paper reimplemented it (2 distinct ops, each kept w.p. 1/2)."""
    space = get_space(space)
    if len(space) < 2:
        raise ConfigError(f"uniform_augment needs a space with >= 2 ops, {space.name!r} has "
                          f"{len(space)}")

    def sampler(key, b):
        k_first, k_second, k_level, k_keep = jax.random.split(key, 4)
        first = jax.random.randint(k_first, (b,), 0, len(space))
        second = jax.random.randint(k_second, (b,), 0, len(space) - 1)
        second = second + (second >= first)  # uniform over the other ops: without replacement
        levels = jax.random.randint(k_level, (b, 2), 0, space.num_levels)
        return (jnp.stack([first, second], axis=1), levels,
                jax.random.bernoulli(k_keep, 0.5, (b, 2)))

    return SlotPolicy(f"ua[{space.name}]", sampler, lambda h, w: space)


def rand_augment(space="randaug", n: int = 2, m: int = 14) -> SlotPolicy:
    """RandAugment(N, M): n ops uniform with replacement, shared level m, always applied."""
    space = get_space(space)
    _check_count("n", n)
    if isinstance(m, bool) or not isinstance(m, int):
        raise ConfigError(f"m must be an integer level, got {m!r}")
    space.check_levels(m)

    def sampler(key, b):
        op_indices = jax.random.randint(key, (b, n), 0, len(space))
        return op_indices, jnp.full((b, n), m, jnp.int32), jnp.ones((b, n), bool)

    return SlotPolicy(f"ra[{space.name},n={n},m={m}]", sampler, lambda h, w: space)


def trivial_augment(space="ta_wide") -> SlotPolicy:
    """TrivialAugment: one op uniform, level uniform, always applied."""
    space = get_space(space)

    def sampler(key, b):
        k_op, k_level = jax.random.split(key)
        op_indices = jax.random.randint(k_op, (b, 1), 0, len(space))
        levels = jax.random.randint(k_level, (b, 1), 0, space.num_levels)
        return op_indices, levels, jnp.ones((b, 1), bool)

    return SlotPolicy(f"ta[{space.name}]", sampler, lambda h, w: space)


def auto_augment(dataset: str = "cifar10") -> SlotPolicy:
    """AutoAugment with the published policy of ``dataset`` ("cifar10", "svhn", "imagenet")."""
    autoaugment.check_dataset(dataset)
    _, op_index, probability, level = autoaugment.tables(dataset, 32, 32)

    def sampler(key, b):
        k_sub, k_fire = jax.random.split(key)
        sub = jax.random.randint(k_sub, (b,), 0, op_index.shape[0])
        active = jax.random.uniform(k_fire, (b, 2)) < jnp.asarray(probability)[sub]
        return jnp.asarray(op_index)[sub], jnp.asarray(level)[sub], active

    # Only the ImageNet translation range depends on the image size.
    return SlotPolicy(f"aa[{dataset}]", sampler,
                      lambda h, w: autoaugment.tables(dataset, h, w)[0])


def compose(*policies):
    """Apply policies left to right, each with its own split of the key."""
    def policy(key, images):
        for fn, k in zip(policies, jax.random.split(key, len(policies))):
            images = fn(k, images)
        return images

    return policy


_KWARGS = {
    "none": (), "standard": ("pad", "cutout", "fill", "flip"), "ua": ("space",),
    "ra": ("space", "n", "m"), "ta": ("space",), "aa": ("dataset",),
    "smart_aug": ("path",),  # a learned smart_augmentation policy.json, replayed (smart.py)
    "dra": ("policy", "name", "p_min", "p_max", "grid"),  # gar_jax.augment.dra_policy.replay_policy
    "faa": ("policy",),  # Fast AutoAugment: published name or "policy.json[:name]" (faa.py)
}


def get_policy(name: str, *, with_standard: bool = False, **kwargs):
    """A policy by name: "none", "standard", "ua", "ra", "ta", "aa", or a search-space name
    (e.g. "wide"), which means UniformAugment over that space ("ra" is RandAugment, not the
    space).

    Examples: ``get_policy("ra", n=2, m=14, space="randaug")``, ``get_policy("aa",
    dataset="cifar10")``, ``get_policy("ta", with_standard=True)``. ``with_standard`` appends the
    standard CIFAR pipeline (with its defaults). Unknown names or keyword arguments raise
    ConfigError.
    """
    if name in _KWARGS:
        allowed = _KWARGS[name]
        make = {
            "none": lambda: identity,
            "standard": lambda: (lambda key, images: standard(key, images, **kwargs)),
            "ua": lambda: uniform_augment(**kwargs),
            "ra": lambda: rand_augment(**kwargs),
            "ta": lambda: trivial_augment(**kwargs),
            "aa": lambda: auto_augment(**kwargs),
            "smart_aug": lambda: smart_augment.replay(**kwargs),
            "dra": lambda: dra_policy.replay_policy(**kwargs),
            "faa": lambda: faa_policy.fast_autoaugment(**kwargs),
        }[name]
    elif name in SPACES:
        allowed, make = (), lambda: uniform_augment(name)
    else:
        raise ConfigError(f"unknown augmentation policy {name!r}; known: "
                          f"{', '.join(_KWARGS)} or a search space ({', '.join(SPACES)})")
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"policy {name!r} takes no argument(s) {unknown}; it takes "
                          f"{list(allowed) or 'none'} (and with_standard)")
    if name == "standard":
        _check_count("pad", kwargs.get("pad", 4))
        _check_count("cutout", kwargs.get("cutout", 16))
    policy = make()
    return compose(policy, standard) if with_standard else policy
