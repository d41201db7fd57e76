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
optional boolean mask ``where`` ``[B]`` (True for real examples, False for padding).

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

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

CONFIDENCES = ("logit", "softmax")
TIES = ("average", "stable")


def _nan_if_invalid(result: Array, *conditions: Array | None) -> Array:
    """``result``, or NaN everywhere when a traced validity condition fails."""
    for ok in conditions:
        if ok is not None:
            result = jnp.where(jnp.all(ok), result, jnp.nan)
    return result


def _validated(
    fn: str, logits: Array, labels: Array, where: ArrayLike | None, batch_axis: int
) -> tuple[Array | None, list[Array | None]]:
    """Checks labels, ``where`` and finiteness; returns ``where`` and the traced conditions."""
    batch, num_classes = logits.shape[batch_axis], logits.shape[-1]
    labels_ok = _checks.check_labels(fn, labels, batch, num_classes)
    where = _checks.check_where(fn, where, batch)
    if labels_ok is not None and where is not None:
        labels_ok = labels_ok | ~where
    finite = _checks.finite_rows(fn, logits, batch_axis, where)
    return where, [labels_ok, finite]


def _per_step(
    fn: str, logits: ArrayLike, labels: ArrayLike, where: ArrayLike | None
) -> tuple[Array, Array, Array | None, list[Array | None]]:
    logits, labels = _checks.per_step(fn, logits, labels)
    where, conditions = _validated(fn, logits, labels, where, batch_axis=1)
    return logits, labels, where, conditions


def _aggregated(
    fn: str, logits: ArrayLike, labels: ArrayLike, where: ArrayLike | None = None
) -> tuple[Array, Array, Array | None, list[Array | None]]:
    scores, labels = _checks.scores(fn, logits, labels)
    where, conditions = _validated(fn, scores, labels, where, batch_axis=0)
    return scores, labels, where, conditions


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
    of the full output. Exact for a causal SNN evaluated with inference-mode BN.

    Args:
      logits: per-step logits ``[T, B, C]``.

    Returns:
      ``[T, B]`` int32 class indices.

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
    return _nan_if_invalid(result, labels_ok)


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
    scores, labels, where, conditions = _aggregated("top_k_accuracy", logits, labels, where)
    num_classes = scores.shape[-1]
    if not isinstance(k, int | np.integer) or not 1 <= k <= num_classes:
        raise ValueError(f"top_k_accuracy: k must be an int in [1, C={num_classes}], got {k!r}.")
    _, top = jax.lax.top_k(scores, int(k))  # [B, k], ties to the lower index
    hit = jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)
    return _nan_if_invalid(_checks.masked_mean(hit, where), *conditions)


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
    logits, labels, where, conditions = _per_step("per_step_accuracy", logits, labels, where)
    predictions = jnp.argmax(logits, axis=-1)
    return _nan_if_invalid(accuracy(predictions, labels, where=where), *conditions)


def first_k_accuracy(
    logits: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None
) -> Array:
    """Accuracy with only the first k steps at test time, for k = 1..T (§10, Fig. 3a).

    Entry ``k - 1`` is the accuracy of :func:`first_k_predictions` row ``k - 1``; the last
    entry is the ordinary top-1 accuracy.

    Args:
      logits: per-step logits ``[T, B, C]``.
      labels: integer class indices ``[B]``.
      where: optional boolean mask ``[B]`` of the samples to count.

    Returns:
      ``[T]`` float32 accuracies.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tks_jax import metrics
      >>> logits = jnp.array([[[1.0, 0.0]], [[0.0, 3.0]]])  # T = 2, B = 1
      >>> print(metrics.first_k_accuracy(logits, jnp.array([1])))
      [0. 1.]
    """
    logits, labels, where, conditions = _per_step("first_k_accuracy", logits, labels, where)
    predictions = first_k_predictions(logits)
    return _nan_if_invalid(accuracy(predictions, labels, where=where), *conditions)


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
    scores, labels, where, conditions = _aggregated("per_class_accuracy", logits, labels, where)
    c = scores.shape[-1]
    if num_classes is not None and num_classes != c:
        raise ValueError(
            f"per_class_accuracy: num_classes={num_classes} but the scores have C = {c} classes."
        )
    result = class_accuracy(jnp.argmax(scores, axis=-1), labels, c, where=where)
    return _nan_if_invalid(result, *conditions)


# --------------------------------------------------------------------------------------------
# Selective classification: risk-coverage curve and AURC (Geifman et al. 2018).
# --------------------------------------------------------------------------------------------


def risk_coverage_curve(
    confidence: ArrayLike, correct: ArrayLike, *, ties: str = "average"
) -> Array:
    """Selective risk at every coverage ``i/N``, i = 1..N (§10).

    Samples are ranked by ``confidence``, descending; the risk at coverage ``i/N`` is the error
    rate among the ``i`` most confident samples.

    Tie handling (a documented choice; ties are common with saturated softmax confidences):
      * ``"average"`` (default): the expected risk over all orders of equally confident
        samples. Inside a group of ``m`` tied samples with ``e`` errors, taking ``j`` of them
        counts ``j * e / m`` errors. The result does not depend on the order of the dataset.
      * ``"stable"``: ties keep their input order (a stable sort).

    Args:
      confidence: ``[N]`` floating confidences (non-finite ones raise when concrete and give
        a NaN curve when traced).
      correct: ``[N]`` booleans (or 0/1), whether each prediction is right.
      ties: ``"average"`` or ``"stable"`` (static).

    Returns:
      ``[N]`` float32 risks; entry ``i - 1`` is the risk at coverage ``i/N``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tks_jax import metrics
      >>> confidence = jnp.array([0.9, 0.8, 0.3, 0.1])
      >>> print(metrics.risk_coverage_curve(confidence, jnp.array([True, False, True, False])))
      [0.         0.5        0.33333334 0.5       ]
    """
    fn = "risk_coverage_curve"
    confidence, correct = jnp.asarray(confidence), jnp.asarray(correct)
    if confidence.ndim != 1 or confidence.shape != correct.shape or confidence.size == 0:
        raise ValueError(
            f"{fn}: confidence and correct must be non-empty [N] vectors of the "
            f"same length, got shapes {confidence.shape} and {correct.shape}."
        )
    if ties not in TIES:
        raise ValueError(f"{fn}: ties must be one of {TIES}, got {ties!r}.")
    _checks.check_floating(fn, confidence, "confidence")
    finite = _checks.finite_rows(fn, confidence, 0)
    n = confidence.shape[0]
    errors = 1.0 - correct.astype(jnp.float32)
    order = jnp.argsort(-confidence.astype(jnp.float32), stable=True)
    conf_sorted, err_sorted = confidence[order], errors[order]
    positions = jnp.arange(1, n + 1, dtype=jnp.float32)
    if ties == "stable":
        return _nan_if_invalid(jnp.cumsum(err_sorted) / positions, finite)
    # Groups of equal confidence are contiguous after sorting.
    starts = jnp.concatenate([jnp.ones((1,), bool), conf_sorted[1:] != conf_sorted[:-1]])
    group = jnp.cumsum(starts) - 1  # [N], group index of each sorted sample
    group_err = jax.ops.segment_sum(err_sorted, group, num_segments=n)
    group_size = jax.ops.segment_sum(jnp.ones_like(err_sorted), group, num_segments=n)
    err_before = jnp.cumsum(group_err) - group_err  # errors in all more confident groups
    size_before = jnp.cumsum(group_size) - group_size
    taken = positions - size_before[group]  # j: samples taken from the own group
    expected = err_before[group] + taken * group_err[group] / group_size[group]
    return _nan_if_invalid(expected / positions, finite)


def _confidence(scores: Array, confidence: str) -> Array:
    if confidence == "logit":
        return jnp.max(scores, axis=-1)  # the paper's choice: raw mean logits
    if confidence == "softmax":
        return jnp.max(jax.nn.softmax(scores, axis=-1), axis=-1)
    raise ValueError(f"aurc: confidence must be one of {CONFIDENCES}, got {confidence!r}.")


def aurc(
    scores: ArrayLike, labels: ArrayLike, *, confidence: str = "logit", ties: str = "average"
) -> Array:
    """Area under the risk-coverage curve of top-1 predictions (§10).

    ``AURC = mean_{i=1..N} risk(i/N)`` where ``risk(i/N)`` is the error rate of the ``i`` most
    confident samples (see :func:`risk_coverage_curve`, also for ``ties``). The paper reports
    ``1000 * AURC``; lower is better.

    Args:
      scores: time-averaged scores ``[N, C]`` (or per-step logits ``[T, N, C]``, averaged).
      labels: integer class indices ``[N]``.
      confidence: ``"logit"`` = max of the raw scores (the paper's choice), or ``"softmax"`` =
        max softmax probability. Static.
      ties: ``"average"`` (default) or ``"stable"``. Static.

    Returns:
      A float32 scalar in ``[0, 1]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tks_jax import metrics
      >>> scores = jnp.array([[0.3, 0.0], [0.0, 0.9], [0.1, 0.0], [0.0, 0.8]])
      >>> labels = jnp.array([0, 1, 1, 0])  # right, right, wrong, wrong
      >>> print(f"{metrics.aurc(scores, labels):.4f}")  # mean of risks 0, 1/2, 1/3, 2/4
      0.3333

    References:
      Geifman, Uziel, El-Yaniv, "Bias-Reduced Uncertainty Estimation for Deep Neural
      Classifiers", ICLR 2019 (arXiv 1805.08206).
    """
    if confidence not in CONFIDENCES:
        raise ValueError(f"aurc: confidence must be one of {CONFIDENCES}, got {confidence!r}.")
    scores, labels, _, conditions = _aggregated("aurc", scores, labels)
    correct = jnp.argmax(scores, axis=-1) == labels
    conf = _confidence(scores, confidence)
    conf = jnp.where(jnp.isfinite(conf), conf, 0.0)  # traced non-finite: NaN below, no raise
    curve = risk_coverage_curve(conf, correct, ties=ties)
    return _nan_if_invalid(jnp.mean(curve), *conditions)


def aurc_optimal(scores: ArrayLike, labels: ArrayLike) -> Array:
    """The smallest AURC reachable with the same predictions: every error ranked last.

    With ``N`` samples of which ``E`` are wrong, the risk at coverage ``i/N`` is
    ``max(0, i - (N - E)) / i``; the optimum is its mean (the finite-sample version of
    ``r + (1 - r) log(1 - r)``). ``aurc - aurc_optimal`` is the excess AURC (E-AURC).

    Args:
      scores: time-averaged scores ``[N, C]`` (or per-step logits ``[T, N, C]``, averaged).
      labels: integer class indices ``[N]``.

    Returns:
      A float32 scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tks_jax import metrics
      >>> scores = jnp.array([[0.3, 0.0], [0.0, 0.9], [0.1, 0.0], [0.0, 0.8]])
      >>> labels = jnp.array([0, 1, 1, 0])  # 2 errors: risks 0, 0, 1/3, 2/4
      >>> print(f"{metrics.aurc_optimal(scores, labels):.4f}")
      0.2083

    References:
      Geifman, Uziel, El-Yaniv, ICLR 2019 (arXiv 1805.08206), section 3.
    """
    scores, labels, _, conditions = _aggregated("aurc_optimal", scores, labels)
    n = scores.shape[0]
    num_errors = jnp.sum((jnp.argmax(scores, axis=-1) != labels).astype(jnp.float32))
    positions = jnp.arange(1, n + 1, dtype=jnp.float32)
    result = jnp.mean(jnp.maximum(positions - (n - num_errors), 0.0) / positions)
    return _nan_if_invalid(result, *conditions)


def excess_aurc(
    scores: ArrayLike, labels: ArrayLike, *, confidence: str = "logit", ties: str = "average"
) -> Array:
    """E-AURC = ``aurc - aurc_optimal``: the part of AURC due to a poor confidence ranking.

    Args:
      scores: time-averaged scores ``[N, C]`` (or per-step logits ``[T, N, C]``, averaged).
      labels: integer class indices ``[N]``.
      confidence: see :func:`aurc`.
      ties: see :func:`aurc`.

    Returns:
      A float32 scalar ``>= 0`` (up to rounding).

    Examples:
      >>> import jax.numpy as jnp
      >>> from tks_jax import metrics
      >>> scores = jnp.array([[0.3, 0.0], [0.0, 0.9], [0.1, 0.0], [0.0, 0.8]])
      >>> labels = jnp.array([0, 1, 1, 0])
      >>> print(f"{metrics.excess_aurc(scores, labels):.4f}")  # 0.3333 - 0.2083
      0.1250
    """
    return aurc(scores, labels, confidence=confidence, ties=ties) - aurc_optimal(scores, labels)
