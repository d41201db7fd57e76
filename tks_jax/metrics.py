"""Evaluation metrics on stacked per-step logits: top-k, per-step, first-k steps, AURC.

See ``docs/method.md`` §10 (evaluation).

Inputs are time-major logits ``[T, B, C]`` and integer labels ``[B]``; the prediction of the
network is ``argmax_c mean_t z_t`` (§3). Functions that judge the aggregated output also
accept already time-averaged scores ``[N, C]`` (what an evaluation loop concatenates over a
whole dataset). All return float32 arrays and are ``jax.jit``-able (string/int options are
static). Argmax ties go to the first maximal index, as ``jnp.argmax`` and the TKS teacher do.

The accuracies also exist on integer predictions (:func:`accuracy`, :func:`class_accuracy`,
with :func:`per_step_predictions` and :func:`first_k_predictions`), so an evaluation loop can
keep ``[T, N]`` predictions on the host instead of ``[T, N, C]`` logits. The accuracies take an
optional boolean mask ``where`` ``[B]`` (True for real examples, False for padding). The
selective-classification metrics (risk-coverage curve, AURC) live in :mod:`tks_jax.selective`
and are re-exported here.

Input checks (shared with :mod:`tks_jax.losses`): shapes, ranks and dtypes are always checked,
under ``jit`` too. Values are checked when concrete, with ``ValueError``: labels outside
``[0, C)`` and **non-finite logits or scores** (NaN or inf in a selected example: a metric of
a diverged model is refused, not reported as a plausible number). When traced (under ``jit``)
the same conditions cannot raise: the metric is NaN instead (every entry of a vector metric).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tks_jax import _checks
from tks_jax.selective import (
    CONFIDENCES,
    TIES,
    aurc,
    aurc_optimal,
    excess_aurc,
    risk_coverage_curve,
)

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

__all__ = [
    "per_step_predictions", "first_k_predictions", "accuracy", "class_accuracy",
    "top_k_accuracy", "per_step_accuracy", "first_k_accuracy", "per_class_accuracy",
    "risk_coverage_curve", "aurc", "aurc_optimal", "excess_aurc", "CONFIDENCES", "TIES",
]


# --------------------------------------------------------------------------------------------
# Predictions and accuracies.
# --------------------------------------------------------------------------------------------


def per_step_predictions(logits: ArrayLike) -> Array:
    """The prediction of every single step, ``argmax_c z_t`` (§10, Fig. 4).

    Args:
      logits: per-step logits ``[T, B, C]``.

    Returns:
      ``[T, B]`` int32 class indices.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tks_jax import metrics
      >>> logits = jnp.array([[[1.0, 0.0]], [[0.0, 3.0]]])  # T = 2, B = 1, C = 2
      >>> print(metrics.per_step_predictions(logits))
      [[0]
       [1]]
    """
    logits, _ = _checks.per_step("per_step_predictions", logits, None)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def first_k_predictions(logits: ArrayLike) -> Array:
    """The prediction with only the first k steps, ``argmax_c mean_{t<k} z_t``, k = 1..T.

    Row ``k - 1`` uses the first ``k`` steps (§10, Fig. 3a); the last row is the prediction
    of the full output. Exact for a causal SNN evaluated with inference-mode BN. Argument and
    the ``[T, B]`` int32 result as :func:`per_step_predictions`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tks_jax import metrics
      >>> logits = jnp.array([[[1.0, 0.0]], [[0.0, 3.0]]])  # mean of both steps: (0.5, 1.5)
      >>> print(metrics.first_k_predictions(logits))
      [[0]
       [1]]
    """
    logits, _ = _checks.per_step("first_k_predictions", logits, None)
    counts = jnp.arange(1, logits.shape[0] + 1, dtype=logits.dtype)[:, None, None]
    running_mean = jnp.cumsum(logits, axis=0) / counts  # [T, B, C]
    return jnp.argmax(running_mean, axis=-1).astype(jnp.int32)


def accuracy(
    predictions: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None
) -> Array:
    """Fraction of correct predictions along the last (batch) axis.

    Args:
      predictions: integer class indices ``[..., B]`` (e.g. ``[T, B]`` per step).
      labels: integer class indices ``[B]``.
      where: optional boolean mask ``[B]``; the mean runs over the selected examples only
        (NaN when none is selected).

    Returns:
      float32 ``[...]``: a scalar for ``[B]`` predictions, ``[T]`` for ``[T, B]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tks_jax import metrics
      >>> predictions = jnp.array([[0, 1, 1], [0, 1, 2]])  # [T, B]
      >>> print(metrics.accuracy(predictions, jnp.array([0, 1, 2])))
      [0.6666667 1.       ]
      >>> print(metrics.accuracy(predictions, jnp.array([0, 1, 2]),
      ...                        where=jnp.array([True, True, False])))
      [1. 1.]
    """
    fn = "accuracy"
    predictions, labels = jnp.asarray(predictions), jnp.asarray(labels)
    if predictions.ndim < 1 or not jnp.issubdtype(predictions.dtype, jnp.integer):
        raise ValueError(
            f"{fn}: predictions must be integer class indices [..., B], got dtype "
            f"{predictions.dtype} and shape {predictions.shape} (for logits use "
            "top_k_accuracy or per_step_accuracy)."
        )
    batch = predictions.shape[-1]
    if labels.ndim != 1 or labels.shape[0] != batch or not jnp.issubdtype(
        labels.dtype, jnp.integer
    ):
        _checks.check_labels(fn, labels, batch, np.iinfo(np.int32).max)
    where = _checks.check_where(fn, where, batch)
    return _checks.masked_mean((predictions == labels).astype(jnp.float32), where)


def class_accuracy(
    predictions: ArrayLike, labels: ArrayLike, num_classes: int, *,
    where: ArrayLike | None = None,
) -> Array:
    """Fraction of the samples of each true class that are predicted as that class.

    Args:
      predictions: integer class indices ``[B]``.
      labels: integer class indices ``[B]`` in ``[0, num_classes)``.
      num_classes: C (static).
      where: optional boolean mask ``[B]`` of the samples to count.

    Returns:
      ``[C]`` float32; NaN for classes without (selected) samples (use ``jnp.nanmean`` for
      the balanced accuracy), and NaN everywhere for out-of-range traced labels.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tks_jax import metrics
      >>> print(metrics.class_accuracy(jnp.array([0, 0, 1]), jnp.array([0, 1, 1]), 3))
      [1.  0.5 nan]
    """
    fn = "class_accuracy"
    predictions, labels = jnp.asarray(predictions), jnp.asarray(labels)
    if predictions.ndim != 1 or not jnp.issubdtype(predictions.dtype, jnp.integer):
        raise ValueError(
            f"{fn}: predictions must be integer class indices [B], got dtype "
            f"{predictions.dtype} and shape {predictions.shape}."
        )
    if not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise ValueError(f"{fn}: num_classes must be an int >= 1, got {num_classes!r}.")
    labels_ok = _checks.check_labels(fn, labels, predictions.shape[0], int(num_classes))
    where = _checks.check_where(fn, where, predictions.shape[0])
    weight = jnp.ones(labels.shape, jnp.float32) if where is None else where.astype(jnp.float32)
    correct = (predictions == labels).astype(jnp.float32) * weight
    hits = jax.ops.segment_sum(correct, labels, num_segments=num_classes)
    totals = jax.ops.segment_sum(weight, labels, num_segments=num_classes)
    result = jnp.where(totals > 0, hits / jnp.maximum(totals, 1.0), jnp.nan)
    if labels_ok is not None and where is not None:
        labels_ok = labels_ok | ~where
    return _checks.nan_if_invalid(result, labels_ok)


def top_k_accuracy(
    logits: ArrayLike, labels: ArrayLike, k: int = 1, *, where: ArrayLike | None = None
) -> Array:
    """Top-k accuracy of the aggregated output ``mean_t z_t`` (§10).

    A sample counts as correct when its label is among the ``k`` highest scores; among equal
    scores the lower class index ranks first (so ``k = 1`` is exactly ``argmax``).

    Args:
      logits: per-step logits ``[T, B, C]`` (averaged over T) or scores ``[B, C]``.
      labels: integer class indices ``[B]``.
      k: static, ``1 <= k <= C``.
      where: optional boolean mask ``[B]`` of the samples to count.

    Returns:
      A float32 scalar in ``[0, 1]`` (NaN for invalid traced input, see the module docstring).

    Examples:
      >>> import jax.numpy as jnp
      >>> from tks_jax import metrics
      >>> scores = jnp.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])  # [B, C]
      >>> labels = jnp.array([2, 0])
      >>> print(metrics.top_k_accuracy(scores, labels), metrics.top_k_accuracy(scores, labels, k=2))
      0.5 1.0
    """
    scores, labels, where, conditions = _checks.metric_scores(
        "top_k_accuracy", logits, labels, where
    )
    num_classes = scores.shape[-1]
    if not isinstance(k, int | np.integer) or not 1 <= k <= num_classes:
        raise ValueError(f"top_k_accuracy: k must be an int in [1, C={num_classes}], got {k!r}.")
    _, top = jax.lax.top_k(scores, int(k))  # [B, k], ties to the lower index
    hit = jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)
    return _checks.nan_if_invalid(_checks.masked_mean(hit, where), *conditions)


def per_step_accuracy(
    logits: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None
) -> Array:
    """Accuracy of every single step's prediction ``argmax_c z_t`` (§10, Fig. 4).

    Args:
      logits: per-step logits ``[T, B, C]``.
      labels: integer class indices ``[B]``.
      where: optional boolean mask ``[B]`` of the samples to count.

    Returns:
      ``[T]`` float32 accuracies.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tks_jax import metrics
      >>> logits = jnp.array([[[1.0, 0.0], [1.0, 0.0]],   # step 0 predicts 0, 0
      ...                     [[0.0, 1.0], [0.0, 1.0]]])  # step 1 predicts 1, 1
      >>> print(metrics.per_step_accuracy(logits, jnp.array([0, 1])))
      [0.5 0.5]
    """
    return _accuracy_per_row("per_step_accuracy", per_step_predictions, logits, labels, where)


def first_k_accuracy(
    logits: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None
) -> Array:
    """Accuracy with only the first k steps at test time, for k = 1..T (§10, Fig. 3a).

    Entry ``k - 1`` is the accuracy of :func:`first_k_predictions` row ``k - 1``; the last
    entry is the ordinary top-1 accuracy. Arguments and the ``[T]`` float32 result as
    :func:`per_step_accuracy`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tks_jax import metrics
      >>> logits = jnp.array([[[1.0, 0.0]], [[0.0, 3.0]]])  # T = 2, B = 1
      >>> print(metrics.first_k_accuracy(logits, jnp.array([1])))
      [0. 1.]
    """
    return _accuracy_per_row("first_k_accuracy", first_k_predictions, logits, labels, where)


def _accuracy_per_row(
    fn: str, predict, logits: ArrayLike, labels: ArrayLike, where: ArrayLike | None
) -> Array:
    """``[T]`` accuracies of the rows of ``predict(logits)`` ``[T, B]``, the inputs checked as
    ``fn``'s (per-step logits; NaN for invalid traced input)."""
    logits, labels, where, conditions = _checks.metric_per_step(fn, logits, labels, where)
    return _checks.nan_if_invalid(accuracy(predict(logits), labels, where=where), *conditions)


def per_class_accuracy(
    logits: ArrayLike, labels: ArrayLike, num_classes: int | None = None, *,
    where: ArrayLike | None = None,
) -> Array:
    """Top-1 accuracy of the aggregated output per true class.

    Args:
      logits: per-step logits ``[T, B, C]`` (averaged over T) or scores ``[B, C]``.
      labels: integer class indices ``[B]``.
      num_classes: optional, must equal ``C`` (a guard for configs).
      where: optional boolean mask ``[B]`` of the samples to count.

    Returns:
      ``[C]`` float32: see :func:`class_accuracy`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tks_jax import metrics
      >>> scores = jnp.array([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
      >>> print(metrics.per_class_accuracy(scores, jnp.array([0, 1, 1])))
      [1.  0.5 nan]
    """
    scores, labels, where, conditions = _checks.metric_scores(
        "per_class_accuracy", logits, labels, where
    )
    c = scores.shape[-1]
    if num_classes is not None and num_classes != c:
        raise ValueError(
            f"per_class_accuracy: num_classes={num_classes} but the scores have C = {c} classes."
        )
    result = class_accuracy(jnp.argmax(scores, axis=-1), labels, c, where=where)
    return _checks.nan_if_invalid(result, *conditions)
