"""Optimiser and learning-rate schedule (spec section 9).

AdamW with weight decay 0.01 on convolution/dense kernels only (no decay on biases,
normalisation scales/offsets or TEBN's per-step scales); Adam with no decay for ImageNet.
Learning rate: ``base_learning_rate * batch_size / base_batch_size`` (6.25e-4 at batch 128 for
5e-3 per 1024), linear warm-up, then cosine to ``min_learning_rate``, evaluated per epoch
(the authors' timm scheduler) or per step.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULE_GRANULARITIES = ("epoch", "step")


def peak_learning_rate(config: ml_collections.ConfigDict) -> float:
    """The linear scaling rule: ``base_learning_rate * batch_size / base_batch_size``."""
    opt = config.optimizer
    return opt.base_learning_rate * config.batch_size / opt.base_batch_size


def make_schedule(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> Callable[[jax.Array], jax.Array]:
    """Linear warm-up then cosine decay to ``min_learning_rate`` (spec section 9).

    With ``schedule_granularity='epoch'`` the rate is constant within an epoch and uses the
    integer epoch ``e = step // steps_per_epoch`` (timm's per-epoch ``CosineLRScheduler``):
    ``lr(e) = init + (peak - init) * e / W`` for ``e < W`` warm-up epochs, then
    ``min + (peak - min) * (1 + cos(pi * (e - W) / (E - W))) / 2``. With ``'step'`` the same
    formula takes the fractional epoch ``step / steps_per_epoch``.

    Args:
      config: the experiment config (uses ``optimizer.*``, ``batch_size``, ``num_epochs``).
      steps_per_epoch: optimiser steps in one epoch.

    Returns:
      ``schedule(step) -> learning rate`` (works on traced int arrays).
    """
    opt = config.optimizer
    peak = peak_learning_rate(config)
    warmup = float(opt.warmup_epochs)
    total = float(config.num_epochs)
    init = float(opt.warmup_init_learning_rate)
    floor = float(opt.min_learning_rate)
    per_epoch = opt.schedule_granularity == "epoch"

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        epoch = step / steps_per_epoch
        if per_epoch:
            epoch = jnp.floor(epoch)
        warm = init + (peak - init) * epoch / max(warmup, 1e-9)
        progress = jnp.clip((epoch - warmup) / max(total - warmup, 1e-9), 0.0, 1.0)
        cosine = floor + 0.5 * (peak - floor) * (1.0 + jnp.cos(jnp.pi * progress))
        return jnp.where(epoch < warmup, warm, cosine)

    return schedule


def weight_decay_mask(params) -> object:
    """``True`` for leaves that get weight decay: conv/dense ``kernel`` arrays (ndim >= 2).

    Biases, BatchNorm/tdBN ``scale`` and ``bias``, and TEBN's per-step scales are excluded
    (spec section 9: "not applied to biases and BN parameters").
    """

    def decays(path, leaf) -> bool:
        name = getattr(path[-1], "key", getattr(path[-1], "name", str(path[-1])))
        return name == "kernel" and jnp.ndim(leaf) >= 2

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(
    config: ml_collections.ConfigDict, schedule: Callable[[jax.Array], jax.Array]
) -> optax.GradientTransformation:
    """Builds the optax optimiser named by ``config.optimizer.name``."""
    opt = config.optimizer
    if opt.name == "adamw":
        tx = optax.adamw(
            schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
            mask=weight_decay_mask,
        )
    elif opt.name == "adam":
        # ImageNet: Adam, weight decay 0 (spec section 9).
        tx = optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps)
    elif opt.name == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(opt.weight_decay, mask=weight_decay_mask),
            optax.sgd(schedule, momentum=opt.momentum, nesterov=False),
        )
    else:
        raise ValueError(f"Unknown optimizer.name {opt.name!r}; choose one of {OPTIMIZERS}.")
    if opt.get("grad_clip_norm"):
        tx = _clipped(tx, opt.grad_clip_norm)
    return tx


def _clipped(tx: optax.GradientTransformation, max_norm: float) -> optax.GradientTransformation:
    """``tx`` after global-norm clipping, with ``tx``'s own state (clipping is stateless), so
    that ``optimizer.grad_clip_norm`` can be switched on when resuming a run
    (``--config.resume_with_changes``)."""
    clip = optax.clip_by_global_norm(max_norm)

    def update(updates, state, params=None):
        updates, _ = clip.update(updates, clip.init(params), params)
        return tx.update(updates, state, params)

    return optax.GradientTransformation(tx.init, update)
