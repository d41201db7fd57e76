"""Selective classification: the risk-coverage curve and AURC (``docs/method.md`` §10).

Geifman, Uziel, El-Yaniv (ICLR 2019). Re-exported by :mod:`tks_jax.metrics` (and
:mod:`tks_jax`), whose input checks it shares: shapes always, non-finite scores and
out-of-range labels with ``ValueError`` when concrete and a NaN result when traced.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tks_jax import _checks

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

CONFIDENCES = ("logit", "softmax")
TIES = ("average", "stable")


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
        return _checks.nan_if_invalid(jnp.cumsum(err_sorted) / positions, finite)
    # Groups of equal confidence are contiguous after sorting.
    starts = jnp.concatenate([jnp.ones((1,), bool), conf_sorted[1:] != conf_sorted[:-1]])
    group = jnp.cumsum(starts) - 1  # [N], group index of each sorted sample
    group_err = jax.ops.segment_sum(err_sorted, group, num_segments=n)
    group_size = jax.ops.segment_sum(jnp.ones_like(err_sorted), group, num_segments=n)
    err_before = jnp.cumsum(group_err) - group_err  # errors in all more confident groups
    size_before = jnp.cumsum(group_size) - group_size
    taken = positions - size_before[group]  # j: samples taken from the own group
    expected = err_before[group] + taken * group_err[group] / group_size[group]
    return _checks.nan_if_invalid(expected / positions, finite)


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
    scores, labels, _, conditions = _checks.metric_scores("aurc", scores, labels)
    correct = jnp.argmax(scores, axis=-1) == labels
    conf = _confidence(scores, confidence)
    conf = jnp.where(jnp.isfinite(conf), conf, 0.0)  # traced non-finite: NaN below, no raise
    curve = risk_coverage_curve(conf, correct, ties=ties)
    return _checks.nan_if_invalid(jnp.mean(curve), *conditions)


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
    scores, labels, _, conditions = _checks.metric_scores("aurc_optimal", scores, labels)
    n = scores.shape[0]
    num_errors = jnp.sum((jnp.argmax(scores, axis=-1) != labels).astype(jnp.float32))
    positions = jnp.arange(1, n + 1, dtype=jnp.float32)
    result = jnp.mean(jnp.maximum(positions - (n - num_errors), 0.0) / positions)
    return _checks.nan_if_invalid(result, *conditions)


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
