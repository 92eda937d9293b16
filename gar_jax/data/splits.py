"""Data splits for the toy split experiment (GAR paper §6, docs/algorithms.md §3).

A train set of N examples is cut into S equal splits of ``n = N // S`` examples each (a seeded
permutation; the ``N mod S`` left-over examples are not used). In split 0 (the *noisy* split)
every label is replaced by a uniformly random class. A batch is drawn per example: a split
``c ~ p`` (categorical over the S splits), then an example uniformly within split ``c``.
Everything is jnp under explicit keys, so it jits and vmaps (e.g. over seeds).
"""
import jax
import jax.numpy as jnp

from gar_jax import reinforce

NOISY_SPLIT = 0


def make_splits(key, labels, *, num_splits: int, num_classes: int):
    """Cuts a train set into splits and randomizes split 0's labels.

    Args:
      key: PRNG key; split into one key for the permutation and one for the random labels.
      labels: int [N] true labels.
      num_splits: S >= 1; must not exceed N.
      num_classes: random labels are uniform over ``0..num_classes-1``.

    Returns:
      ``(members, noisy_labels)``: ``members`` int32 [S, N // S], the dataset indices of the
      examples of each split; ``noisy_labels`` int32 [N], ``labels`` with the examples of split 0
      relabelled (examples that are in no split keep their label).
    """
    n = labels.shape[0] // num_splits
    perm_key, label_key = jax.random.split(key)
    perm = jax.random.permutation(perm_key, labels.shape[0])
    members = perm[:num_splits * n].reshape(num_splits, n).astype(jnp.int32)
    random_labels = jax.random.randint(label_key, (n,), 0, num_classes, dtype=jnp.int32)
    noisy_labels = labels.astype(jnp.int32).at[members[NOISY_SPLIT]].set(random_labels)
    return members, noisy_labels


def sample(key, log_probs, members, batch_size: int):
    """Draws one batch: a split per example from ``p``, then an example within that split.

    Args:
      key: PRNG key.
      log_probs: float [S], log of the split distribution p.
      members: int [S, n] from `make_splits`.
      batch_size: B.

    Returns:
      ``(indices, choices)``: int32 [B] dataset indices and int32 [B] the sampled splits.
    """
    split_key, within_key = jax.random.split(key)
    choices = reinforce.sample_categorical(split_key, log_probs, (batch_size,))
    within = jax.random.randint(within_key, (batch_size,), 0, members.shape[1])
    return members[choices, within].astype(jnp.int32), choices
