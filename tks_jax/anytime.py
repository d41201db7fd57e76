"""Anytime inference: stop each sample at the first step whose running prediction is sure enough.

The zoo's networks are causal: the logits of step k depend on the inputs of steps 1..k only. So
a per-sample stopping rule can be evaluated exactly from stored per-step logits ``[T, B, C]``,
and the same rule runs online in ``tks_jax.inference`` (one step at a time). Method:
``docs/method.md`` §12 (anytime inference, the exit rule and its calibration).

Exit rule (``predict``): sample b stops at the first k (1-based) whose running mean of the first
k logits ``m_k = (z_1 + ... + z_k) / k`` has confidence ``c(m_k) >= threshold``, else at T; its
prediction is ``argmax m_k`` at that k (the first maximum on ties, as ``jnp.argmax``).
Confidences (``CONFIDENCES``):

- ``'softmax'``: the largest softmax probability of ``m_k``;
- ``'logit'``: the largest entry of ``m_k`` (the paper's confidence for AURC, ``metrics.aurc``);
- ``'margin'``: top-1 minus top-2 softmax probability (needs C >= 2).

Calibration (``calibrate``) picks, on held-out data (the validation split, never the test split),
the threshold with the fewest mean steps whose accuracy stays within ``max_drop`` of the
accuracy at the full T.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

CONFIDENCES = ("softmax", "logit", "margin")


def _check_logits(logits: Any, confidence: str, name: str) -> Array:
    if confidence not in CONFIDENCES:
        raise ValueError(
            f"{name}: confidence must be one of {CONFIDENCES}, got {confidence!r}."
        )
    logits = jnp.asarray(logits)
    if logits.ndim != 3 or 0 in logits.shape:
        raise ValueError(
            f"{name}: logits must be per-step logits [T, B, C] with T, B, C >= 1, got shape "
            f"{logits.shape}."
        )
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(f"{name}: logits must be floating point, got dtype {logits.dtype}.")
    if confidence == "margin" and logits.shape[-1] < 2:
        raise ValueError(
            f"{name}: confidence='margin' (top-1 minus top-2 probability) needs at least 2 "
            f"classes, got C={logits.shape[-1]}; use 'softmax' or 'logit'."
        )
    return logits


def running_mean(logits: Array) -> Array:
    """Running means ``m_k = mean(z_1..z_k)`` of per-step logits ``[T, ...] -> [T, ...]``."""
    logits = jnp.asarray(logits)
    k = jnp.arange(1, logits.shape[0] + 1, dtype=logits.dtype)
    return jnp.cumsum(logits, axis=0) / k.reshape((-1,) + (1,) * (logits.ndim - 1))


def confidence_of(scores: Array, confidence: str = "softmax") -> Array:
    """Confidence of class scores over the last axis: ``[..., C] -> [...]`` (``CONFIDENCES``)."""
    if confidence == "logit":
        return jnp.max(scores, axis=-1)
    if confidence == "softmax":
        return jnp.max(jax.nn.softmax(scores, axis=-1), axis=-1)
    if confidence == "margin":
        top2 = jax.lax.top_k(jax.nn.softmax(scores, axis=-1), 2)[0]
        return top2[..., 0] - top2[..., 1]
    raise ValueError(f"confidence must be one of {CONFIDENCES}, got {confidence!r}.")


def running_confidence(logits: Array, confidence: str = "softmax") -> tuple[Array, Array]:
    """Running means ``[T, B, C]`` and their confidences ``[T, B]`` (what the rule compares)."""
    logits = _check_logits(logits, confidence, "running_confidence")
    means = running_mean(logits)
    return means, confidence_of(means, confidence)


def predict(
    logits: Array, threshold: float | Array, confidence: str = "softmax"
) -> tuple[Array, Array]:
    """The exit rule on per-step logits (pure; works under ``jax.jit`` and ``jax.vmap``).

    Args:
      logits: per-step logits ``[T, B, C]`` of a causal network.
      threshold: confidence threshold (a scalar; may be traced). ``inf`` never exits early,
        ``-inf`` always exits after the first step.
      confidence: one of ``CONFIDENCES``.

    Returns:
      ``(pred [B] int32, steps [B] int32)``: the argmax of the running mean at the exit step
      and the exit step k in ``1..T`` (the first k with confidence >= threshold, else T).

    Raises:
      ValueError: logits not ``[T, B, C]``, unknown confidence, ``'margin'`` with one class.
      TypeError: non-floating logits.
    """
    means, conf = running_confidence(logits, confidence)
    num_steps = means.shape[0]
    ok = conf >= jnp.asarray(threshold, conf.dtype)
    ok = ok.at[num_steps - 1].set(True)  # everyone has stopped by step T
    steps = jnp.argmax(ok, axis=0)  # first True (0-based)
    chosen = jnp.take_along_axis(means, steps[None, :, None], axis=0)[0]  # [B, C]
    return jnp.argmax(chosen, axis=-1).astype(jnp.int32), (steps + 1).astype(jnp.int32)


def _host_inputs(logits, labels, confidence: str, name: str):
    logits = _check_logits(logits, confidence, name)
    labels = np.asarray(labels)
    if labels.shape != (logits.shape[1],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{name}: labels must be integer class indices [B] with B = {logits.shape[1]} (axis "
            f"1 of logits {logits.shape}), got shape {labels.shape} and dtype {labels.dtype}."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[-1]):
        raise ValueError(
            f"{name}: labels must lie in [0, {logits.shape[-1]}), got values in "
            f"[{labels.min()}, {labels.max()}]."
        )
    if not bool(jnp.all(jnp.isfinite(logits))):
        raise ValueError(f"{name}: logits contain NaN or inf; check the model's outputs.")
    means, conf = jax.jit(running_confidence, static_argnums=1)(logits, confidence)
    return np.asarray(means), np.asarray(conf), labels


def threshold_sweep(
    logits: Array, labels: Any, confidence: str = "softmax"
) -> dict[str, np.ndarray]:
    """Mean steps and accuracy of the exit rule at every threshold that changes a decision.

    For one sample, the exit step as a function of the threshold only changes where the
    threshold crosses a record of its running maximum of confidences ``max(c_1..c_k)`` (the
    first k with ``c_k >= thr`` is the first k whose running maximum reaches ``thr``). So the
    distinct confidence values (in fact the records among them) together with ``+inf`` are all
    the thresholds there are: any other threshold behaves as the smallest of them above it.
    They are swept from high to low, each record moving its sample to an earlier step, so the
    whole curve costs one sort of at most ``T * B`` events.

    Args:
      logits: per-step logits ``[T, B, C]``.
      labels: ``[B]`` integer labels.
      confidence: one of ``CONFIDENCES``.

    Returns:
      ``{'threshold', 'mean_steps', 'accuracy'}``: NumPy vectors over the candidate thresholds
      in decreasing order (the first is ``+inf``: every sample runs T steps).
    """
    means, conf, labels = _host_inputs(logits, labels, confidence, "threshold_sweep")
    num_steps, batch = conf.shape
    correct = np.argmax(means, axis=-1) == labels[None]  # [T, B]: running mean at k correct
    running_max = np.maximum.accumulate(conf, axis=0)
    is_record = np.ones_like(conf, dtype=bool)
    is_record[1:] = running_max[1:] > running_max[:-1]
    # Per sample, the state before a record's event is the next record (higher k), or step T.
    next_k = np.full((num_steps, batch), num_steps - 1)
    upcoming = np.full(batch, num_steps - 1)
    for t in range(num_steps - 1, -1, -1):
        next_k[t] = upcoming
        upcoming = np.where(is_record[t], t, upcoming)
    t_idx, b_idx = np.nonzero(is_record)
    prev_k = next_k[t_idx, b_idx]
    d_steps = (t_idx - prev_k).astype(np.int64)
    d_correct = correct[t_idx, b_idx].astype(np.int64) - correct[prev_k, b_idx]
    values = running_max[t_idx, b_idx]
    order = np.argsort(-values, kind="stable")
    values, d_steps, d_correct = values[order], d_steps[order], d_correct[order]
    total_steps = num_steps * batch + np.cumsum(d_steps)
    total_correct = int(correct[-1].sum()) + np.cumsum(d_correct)
    # One point per distinct value: the state after the last event of that value.
    last = np.ones(len(values), dtype=bool)
    last[:-1] = values[:-1] != values[1:]
    thresholds = np.concatenate([[np.inf], values[last].astype(np.float64)])
    steps_sum = np.concatenate([[num_steps * batch], total_steps[last]])
    correct_sum = np.concatenate([[int(correct[-1].sum())], total_correct[last]])
    return {
        "threshold": thresholds,
        "mean_steps": steps_sum / batch,
        "accuracy": correct_sum / batch,
    }


def calibrate(
    logits: Array, labels: Any, max_drop: float = 0.005, confidence: str = "softmax"
) -> float:
    """The threshold with the fewest mean steps whose accuracy is >= full-T accuracy - max_drop.

    Run it on held-out data (the validation split), never on the test split. Among the
    thresholds of ``threshold_sweep`` (every threshold that gives a different rule) that keep the
    accuracy of ``predict`` within ``max_drop`` of the accuracy of the mean of all T steps, the
    one with the fewest mean steps wins; ties go to the higher accuracy, then the higher
    threshold. The full T (``+inf``) always qualifies, so there is always an answer.

    The returned value lies strictly inside the interval of thresholds that give the chosen
    rule (the midpoint between the chosen confidence value and the next lower one), so
    float32 rounding of the confidences under a different compilation cannot flip a decision
    sitting exactly on it (when no float32 lies strictly between the two, the chosen value
    itself). The lowest candidate is returned as is.

    Args:
      logits: per-step logits ``[T, B, C]`` of held-out samples.
      labels: ``[B]`` integer labels.
      max_drop: allowed accuracy loss as a fraction (0.005 = half a point), >= 0.
      confidence: one of ``CONFIDENCES``.

    Returns:
      The threshold (a Python float; ``inf`` when no early exit keeps the accuracy).

    Raises:
      ValueError: bad shapes, labels out of range, non-finite logits, negative ``max_drop``.
    """
    if isinstance(max_drop, bool) or not isinstance(max_drop, int | float) or not (
        max_drop >= 0 and math.isfinite(max_drop)
    ):
        raise ValueError(
            f"calibrate: max_drop must be a finite fraction >= 0 (0.005 = half a point), got "
            f"{max_drop!r}."
        )
    sweep = threshold_sweep(logits, labels, confidence)
    thr, steps, acc = sweep["threshold"], sweep["mean_steps"], sweep["accuracy"]
    n = int(np.asarray(labels).shape[0])
    # Compare counts of correct samples, not rounded fractions.
    ok = np.round(acc * n) >= np.round(acc[0] * n) - max_drop * n - 1e-9
    idx = np.flatnonzero(ok)
    best = idx[np.lexsort((-thr[idx], -acc[idx], steps[idx]))[0]]
    if best == 0:
        return math.inf
    if best == len(thr) - 1:
        return float(thr[best])
    mid = np.float32((thr[best] + thr[best + 1]) / 2.0)  # as the float32 compare sees it
    return float(mid) if thr[best + 1] < mid <= thr[best] else float(thr[best])


def summarize(steps: Any, pred: Any, labels: Any) -> dict[str, float]:
    """Statistics of an exit rule's outcome: accuracy and mean/median/p90/p99 of the steps."""
    steps, pred, labels = np.asarray(steps), np.asarray(pred), np.asarray(labels)
    return {
        "accuracy": float(np.mean(pred == labels)),
        "mean_steps": float(np.mean(steps)),
        "median_steps": float(np.median(steps)),
        "p90_steps": float(np.percentile(steps, 90)),
        "p99_steps": float(np.percentile(steps, 99)),
    }
