"""The optimizer of the paper's protocol, with PyTorch ``torch.optim.SGD`` semantics.

Per step, on the gradient g of the mean loss (in this order):
1. clip g to global norm ``grad_clip_norm`` (as ``torch.nn.utils.clip_grad_norm_`` before
   ``optimizer.step()``: the raw gradient, before weight decay);
2. add weight decay to the gradient, ``g += wd * params`` (PyTorch's ``weight_decay``, coupled,
   before momentum; not AdamW-style decoupled decay). By default every parameter is decayed,
   BatchNorm scales/biases and the classifier bias included, as the PyTorch reference code does
   (``decay_all_params=False`` decays conv/dense kernels only);
3. Nesterov momentum: ``buf = momentum * buf + g; update = g + momentum * buf`` (buf starts at 0,
   so the first step's buf is g, as in PyTorch), ``params -= lr(step) * update``.

Learning rate per step t (``steps_per_epoch`` steps per epoch): linear warm-up from 0 to
``learning_rate`` over ``warmup_epochs`` epochs, then cosine decay to 0 at the last step
(``optax.warmup_cosine_decay_schedule``).
"""
import jax
import optax


def make_schedule(config, steps_per_epoch: int) -> optax.Schedule:
    """Learning rate as a function of the step (``config.learning_rate``, epochs, warm-up)."""
    total = config.num_epochs * steps_per_epoch
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if warmup == 0:
        return optax.cosine_decay_schedule(config.learning_rate, total)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
        decay_steps=total, end_value=0.0)


def _kernels_only(params):
    # Flax names conv/dense weights "kernel"; norm scales/biases and dense biases are not decayed.
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def pytorch_sgd(learning_rate, *, momentum: float = 0.9, nesterov: bool = True,
                weight_decay: float = 0.0, clip_norm: float = 0.0,
                decay_mask=None) -> optax.GradientTransformation:
    """``torch.optim.SGD`` as an optax chain (module doc): clip the raw gradient's global norm
    (0: off), add ``weight_decay * params`` (coupled, before momentum; `decay_mask` as
    ``optax.add_decayed_weights``), then (Nesterov) momentum; `learning_rate` a float or a
    schedule. Used by the WRN runs and the toy split nets alike."""
    parts = []
    if clip_norm:
        parts.append(optax.clip_by_global_norm(clip_norm))
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
    parts.append(optax.sgd(learning_rate, momentum=momentum or None,
                           nesterov=nesterov and momentum > 0))
    return optax.chain(*parts)


def make_optimizer(config, steps_per_epoch: int):
    """Returns ``(tx, schedule)`` for the config's SGD protocol (see module doc).

    Config fields: ``learning_rate, momentum, nesterov, weight_decay, decay_all_params,
    grad_clip_norm`` (0 disables clipping), ``warmup_epochs, num_epochs``.
    """
    schedule = make_schedule(config, steps_per_epoch)
    tx = pytorch_sgd(schedule, momentum=config.momentum, nesterov=config.nesterov,
                     weight_decay=config.weight_decay, clip_norm=config.grad_clip_norm,
                     decay_mask=None if config.decay_all_params else _kernels_only)
    return tx, schedule
