"""Pure training and evaluation steps, data parallel over the ``'data'`` mesh axis.

Pieces (compose them into other steps, e.g. OLA's pair of steps, inside one ``jax.jit``):
- `make_grad_fn`: forward/backward under ``jax.shard_map``, so that each device's BatchNorm sees
  only its own shard of the global batch (as PyTorch DDP does); returns the gradient of the
  global mean loss (the mean of the devices' gradients), the new BatchNorm statistics (running
  averages averaged over devices) and loss/accuracy.
- `apply_gradients`: the optimizer update of a `TrainState` (any subclass).
- `make_train_step`: augmentation on the global batch (per-example keys, so the result does not
  depend on the device count) + the two pieces above, jitted once with the state donated:
  ``train_step(state, batch, key) -> (state, metrics)`` where ``key = step_key(state.rng, step)``.
- `make_eval_step` / `evaluate`: masked sums over padded evaluation batches.

With a GroupNorm model the result is the same on 1 or D devices (up to float rounding); with
BatchNorm it is that of D independent per-device batch statistics, like multi-GPU PyTorch.
"""
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec as P

from gar_jax import batchnorm
from gar_jax.models import variables
from gar_jax.mesh import DATA_AXIS, replicated


def step_key(rng, step):
    """The PRNG key of training step `step`: ``fold_in(rng, step)``."""
    return jax.random.fold_in(rng, step)


def cross_entropy(logits, labels):
    """Per-example softmax cross-entropy: logits f32 [B, K], labels int32 [B] -> f32 [B] (nats)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def make_grad_fn(model, mesh: Mesh, *, bn_stats: bool = False,
                 example_losses: bool = False) -> Callable:
    """``fn(params, batch_stats, images [B,...], labels [B], key) -> (grads, stats, metrics)``.

    `images`/`labels` are the global batch (sharded ``P('data')``); the other inputs and all
    outputs are replicated. ``metrics = {"loss", "accuracy"}`` are means over the global batch.
    Dropout masks are drawn per device from ``fold_in(key, device index)``.

    bn_stats=True: a fourth output, each device's train-mode BatchNorm batch statistics of this
    forward (``batchnorm.apply_capturing_batch_stats``: ``{name: {"mean", "var"}}``, constants)
    with a leading device axis (sharded ``P('data')``; ``{}`` without BatchNorm): what the
    frozen-statistics per-example loss at these params and this batch needs, at no extra
    forward (OLA's GAR). The other outputs are unchanged.

    example_losses=True: one more output, last, the per-example losses of this forward, float[B]
    (sharded ``P('data')``; under BatchNorm, with the batch statistics that bn_stats returns):
    what a finite-difference GAR needs at θ_t (`gar.finite_difference_alignment`).
    """
    def local(params, batch_stats, images, labels, key):
        key = jax.random.fold_in(key, jax.lax.axis_index(DATA_AXIS))
        has_bn = bool(batch_stats)

        def loss_fn(p):
            def apply(v, x, **kwargs):
                if not bn_stats:
                    return model.apply(v, x, **kwargs), {}
                return batchnorm.apply_capturing_batch_stats(model, v, x, **kwargs)

            (logits, updates), frozen = apply(variables(p, batch_stats), images, train=True,
                                              rngs={"dropout": key},
                                              mutable=["batch_stats"] if has_bn else [])
            # pmean inside the differentiated function: the gradient of the *global* mean loss
            # w.r.t. the replicated params (shard_map's autodiff then sums the devices' parts).
            per_example = cross_entropy(logits, labels)
            loss = jax.lax.pmean(jnp.mean(per_example), DATA_AXIS)
            return loss, (logits, updates, frozen, per_example)

        (loss, (logits, updates, frozen, per_example)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(params)
        accuracy = jax.lax.pmean(jnp.mean(jnp.argmax(logits, -1) == labels), DATA_AXIS)
        new_stats = jax.lax.pmean(updates["batch_stats"], DATA_AXIS) if has_bn else batch_stats
        out = grads, new_stats, {"loss": loss, "accuracy": accuracy}
        if bn_stats:
            out += (jax.tree.map(lambda s: s[None], frozen),)
        return out + (per_example,) if example_losses else out

    extra = (P(DATA_AXIS),) * (bn_stats + example_losses)
    return jax.shard_map(local, mesh=mesh, out_specs=(P(), P(), P()) + extra if extra else P(),
                         in_specs=(P(), P(), P(DATA_AXIS), P(DATA_AXIS), P()))


def apply_gradients(state, grads, batch_stats, tx):
    """One optimizer step: returns the state with new params, opt_state, batch_stats, step + 1."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state, batch_stats=batch_stats)


def jit_step(step_fn: Callable, mesh: Mesh) -> Callable:
    """Jits a pure ``(state, ...) -> (state, metrics)`` step: state donated, outputs replicated."""
    return jax.jit(step_fn, donate_argnums=0, out_shardings=replicated(mesh))


def make_train_step(model, tx, mesh: Mesh, *, augment: Optional[Callable] = None,
                    schedule: Optional[Callable] = None, jit: bool = True) -> Callable:
    """The jitted ``train_step(state, batch, key) -> (state, metrics)`` (state donated).

    Args:
      model: Flax module (``apply(variables, images, train, rngs, mutable)``).
      tx: optax transformation (`gar_jax.train.optim.make_optimizer`).
      mesh: the ``'data'`` mesh.
      augment: ``fn(key, images uint8 [B,H,W,C]) -> uint8 [B,H,W,C]`` applied to the global batch
        (`gar_jax.augment.policies.get_policy`), or None.
      schedule: learning-rate schedule, only to report ``learning_rate`` in the metrics.
      jit: False returns the pure function (to wrap it, then `jit_step` it).

    ``batch = {"image": uint8 [B,H,W,C], "label": int32 [B]}`` sharded ``P('data')``; metrics
    (replicated scalars): loss and accuracy on the batch as trained (augmented), the global norm
    of the raw gradient, and the learning rate used.
    """
    grad_fn = make_grad_fn(model, mesh)

    def train_step(state, batch, key):
        augment_key, dropout_key = jax.random.split(key)
        images = batch["image"]
        if augment is not None:
            images = augment(augment_key, images)
        grads, batch_stats, metrics = grad_fn(state.params, state.batch_stats, images,
                                              batch["label"], dropout_key)
        metrics["grad_norm"] = optax.tree.norm(grads)
        if schedule is not None:
            metrics["learning_rate"] = schedule(state.step)
        return apply_gradients(state, grads, batch_stats, tx), metrics

    return jit_step(train_step, mesh) if jit else train_step


def make_eval_step(model) -> Callable:
    """Jitted ``eval_step(params, batch_stats, batch) -> {"correct", "loss_sum", "count"}``.

    `batch` has a float ``mask`` [B] (1 = real example, 0 = padding); the outputs are masked sums
    (float32 scalars) over the global batch, with the model in evaluation mode.
    """
    def eval_step(params, batch_stats, batch):
        logits = model.apply(variables(params, batch_stats), batch["image"], train=False)
        mask = batch["mask"]
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        return {"correct": jnp.sum(correct * mask),
                "loss_sum": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
                "count": jnp.sum(mask)}

    return jax.jit(eval_step)


def evaluate(eval_step: Callable, state, batches) -> dict:
    """Accuracy, mean loss and example count over all `batches` (`EvalBatches`).

    Returns python floats ``{"accuracy", "loss", "count"}``; count is the number of real examples
    seen, which equals the split's size.
    """
    totals = None
    for batch in batches:
        out = eval_step(state.params, state.batch_stats, batch)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    count = float(totals["count"])
    return {"accuracy": float(totals["correct"]) / count,
            "loss": float(totals["loss_sum"]) / count, "count": count}
