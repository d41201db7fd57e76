"""Evaluation metrics on stacked per-step logits: top-k, per-step, first-k steps, AURC.

Spec: ``shared/spec/tks-method.md`` section 10 (evaluation).

Inputs are time-major logits ``[T, B, C]`` and integer labels ``[B]``; the prediction of the
network is ``argmax_c mean_t z_t`` (spec 3). Functions that judge the aggregated output also
accept already time-averaged scores ``[N, C]`` (what an evaluation loop concatenates over a
whole dataset). All return float32 arrays and are ``jax.jit``-able (string/int options are
static). Argmax ties go to the first maximal index, as ``jnp.argmax`` and the TKS teacher do.

Shapes, ranks and dtypes are always checked; label values only when concrete (not under jit).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

CONFIDENCES = ("logit", "softmax")
TIES = ("average", "stable")


def _check_labels(fn: str, labels: Array, batch: int, num_classes: int) -> None:
    if labels.ndim != 1:
        raise ValueError(
            f"{fn}: labels must be integer class indices of shape [B] (rank 1), got shape "
            f"{labels.shape}."
        )
    if labels.shape[0] != batch:
        raise ValueError(
            f"{fn}: batch sizes differ: the logits have B = {batch} samples but labels have "
            f"shape {labels.shape}."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{fn}: labels must be an integer dtype, got {labels.dtype}.")
    if not isinstance(labels, jax.core.Tracer) and labels.size:
        lo, hi = int(jnp.min(labels)), int(jnp.max(labels))
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{fn}: labels must lie in [0, {num_classes - 1}] for C = {num_classes} "
                f"classes, got values in [{lo}, {hi}]."
            )


def _check_floating(fn: str, x: Array) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{fn}: logits/scores must be floating point, got dtype {x.dtype}.")


def _per_step(fn: str, logits: ArrayLike, labels: ArrayLike) -> tuple[Array, Array]:
    """Validates ``[T, B, C]`` logits and ``[B]`` labels; returns float32 logits and labels."""
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if logits.ndim != 3 or 0 in logits.shape:
        raise ValueError(
            f"{fn}: logits must be time-major [T, B, C] (rank 3, no empty axis), got shape "
            f"{logits.shape}."
        )
    _check_floating(fn, logits)
    _check_labels(fn, labels, logits.shape[1], logits.shape[2])
    return logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), labels


def _aggregated(fn: str, logits: ArrayLike, labels: ArrayLike) -> tuple[Array, Array]:
    """Scores ``[B, C]``: ``mean_t`` of ``[T, B, C]`` logits, or ``[B, C]`` passed through."""
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if logits.ndim not in (2, 3) or 0 in logits.shape:
        raise ValueError(
            f"{fn}: expected per-step logits [T, B, C] or time-averaged scores [B, C] with no "
            f"empty axis, got shape {logits.shape}."
        )
    _check_floating(fn, logits)
    _check_labels(fn, labels, logits.shape[-2], logits.shape[-1])
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    if logits.ndim == 3:
        logits = jnp.mean(logits, axis=0)  # Eq. 3: O = mean_t z_t
    return logits, labels


def _accuracy(predictions: Array, labels: Array) -> Array:
    return jnp.mean((predictions == labels).astype(jnp.float32), axis=-1)


def top_k_accuracy(logits: ArrayLike, labels: ArrayLike, k: int = 1) -> Array:
    """Top-k accuracy of the aggregated output ``mean_t z_t`` (spec 10).

    A sample counts as correct when its label is among the ``k`` highest scores; among equal
    scores the lower class index ranks first (so ``k = 1`` is exactly ``argmax``).

    Args:
      logits: per-step logits ``[T, B, C]`` (averaged over T) or scores ``[B, C]``.
      labels: integer class indices ``[B]``.
      k: static, ``1 <= k <= C``.

    Returns:
      A float32 scalar in ``[0, 1]``.
    """
    scores, labels = _aggregated("top_k_accuracy", logits, labels)
    num_classes = scores.shape[-1]
    if not isinstance(k, int | np.integer) or not 1 <= k <= num_classes:
        raise ValueError(f"top_k_accuracy: k must be an int in [1, C={num_classes}], got {k!r}.")
    _, top = jax.lax.top_k(scores, int(k))  # [B, k], ties to the lower index
    return jnp.mean(jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32))


def per_step_accuracy(logits: ArrayLike, labels: ArrayLike) -> Array:
    """Accuracy of every single step's prediction ``argmax_c z_t`` (spec 10, Fig. 4).

    Args:
      logits: per-step logits ``[T, B, C]``.
      labels: integer class indices ``[B]``.

    Returns:
      ``[T]`` float32 accuracies.
    """
    logits, labels = _per_step("per_step_accuracy", logits, labels)
    return _accuracy(jnp.argmax(logits, axis=-1), labels[None])


def first_k_accuracy(logits: ArrayLike, labels: ArrayLike) -> Array:
    """Accuracy with only the first k steps at test time, for k = 1..T (spec 10, Fig. 3a).

    Entry ``k - 1`` is the accuracy of ``argmax_c mean_{t<k} z_t``; the last entry is the
    ordinary top-1 accuracy. Exact for a causal SNN evaluated with inference-mode BN.

    Args:
      logits: per-step logits ``[T, B, C]``.
      labels: integer class indices ``[B]``.

    Returns:
      ``[T]`` float32 accuracies.
    """
    logits, labels = _per_step("first_k_accuracy", logits, labels)
    num_steps = logits.shape[0]
    counts = jnp.arange(1, num_steps + 1, dtype=logits.dtype)[:, None, None]
    running_mean = jnp.cumsum(logits, axis=0) / counts  # [T, B, C]
    return _accuracy(jnp.argmax(running_mean, axis=-1), labels[None])


def per_class_accuracy(
    logits: ArrayLike, labels: ArrayLike, num_classes: int | None = None
) -> Array:
    """Top-1 accuracy of the aggregated output per true class.

    Args:
      logits: per-step logits ``[T, B, C]`` (averaged over T) or scores ``[B, C]``.
      labels: integer class indices ``[B]``.
      num_classes: optional, must equal ``C`` (a guard for configs).

    Returns:
      ``[C]`` float32: the fraction of the samples of class ``c`` predicted as ``c``; NaN for
      classes without samples (use ``jnp.nanmean`` for the balanced accuracy).
    """
    scores, labels = _aggregated("per_class_accuracy", logits, labels)
    c = scores.shape[-1]
    if num_classes is not None and num_classes != c:
        raise ValueError(
            f"per_class_accuracy: num_classes={num_classes} but the scores have C = {c} classes."
        )
    correct = (jnp.argmax(scores, axis=-1) == labels).astype(jnp.float32)
    hits = jax.ops.segment_sum(correct, labels, num_segments=c)
    totals = jax.ops.segment_sum(jnp.ones_like(correct), labels, num_segments=c)
    return jnp.where(totals > 0, hits / jnp.maximum(totals, 1.0), jnp.nan)


# --------------------------------------------------------------------------------------------
# Selective classification: risk-coverage curve and AURC (Geifman et al. 2018).
# --------------------------------------------------------------------------------------------


def risk_coverage_curve(
    confidence: ArrayLike, correct: ArrayLike, *, ties: str = "average"
) -> Array:
    """Selective risk at every coverage ``i/N``, i = 1..N (spec 10).

    Samples are ranked by ``confidence``, descending; the risk at coverage ``i/N`` is the error
    rate among the ``i`` most confident samples.

    Tie handling (a documented choice; ties are common with saturated softmax confidences):
      * ``"average"`` (default): the expected risk over all orders of equally confident
        samples. Inside a group of ``m`` tied samples with ``e`` errors, taking ``j`` of them
        counts ``j * e / m`` errors. The result does not depend on the order of the dataset.
      * ``"stable"``: ties keep their input order (a stable sort).

    Args:
      confidence: ``[N]`` floating confidences.
      correct: ``[N]`` booleans (or 0/1), whether each prediction is right.
      ties: ``"average"`` or ``"stable"`` (static).

    Returns:
      ``[N]`` float32 risks; entry ``i - 1`` is the risk at coverage ``i/N``.
    """
    confidence, correct = jnp.asarray(confidence), jnp.asarray(correct)
    if confidence.ndim != 1 or confidence.shape != correct.shape or confidence.size == 0:
        raise ValueError(
            "risk_coverage_curve: confidence and correct must be non-empty [N] vectors of the "
            f"same length, got shapes {confidence.shape} and {correct.shape}."
        )
    if ties not in TIES:
        raise ValueError(f"risk_coverage_curve: ties must be one of {TIES}, got {ties!r}.")
    n = confidence.shape[0]
    errors = 1.0 - correct.astype(jnp.float32)
    order = jnp.argsort(-confidence.astype(jnp.float32), stable=True)
    conf_sorted, err_sorted = confidence[order], errors[order]
    positions = jnp.arange(1, n + 1, dtype=jnp.float32)
    if ties == "stable":
        return jnp.cumsum(err_sorted) / positions
    # Groups of equal confidence are contiguous after sorting.
    starts = jnp.concatenate([jnp.ones((1,), bool), conf_sorted[1:] != conf_sorted[:-1]])
    group = jnp.cumsum(starts) - 1  # [N], group index of each sorted sample
    group_err = jax.ops.segment_sum(err_sorted, group, num_segments=n)
    group_size = jax.ops.segment_sum(jnp.ones_like(err_sorted), group, num_segments=n)
    err_before = jnp.cumsum(group_err) - group_err  # errors in all more confident groups
    size_before = jnp.cumsum(group_size) - group_size
    taken = positions - size_before[group]  # j: samples taken from the own group
    expected = err_before[group] + taken * group_err[group] / group_size[group]
    return expected / positions


def _confidence(scores: Array, confidence: str) -> Array:
    if confidence == "logit":
        return jnp.max(scores, axis=-1)  # the paper's choice: raw mean logits
    if confidence == "softmax":
        return jnp.max(jax.nn.softmax(scores, axis=-1), axis=-1)
    raise ValueError(f"aurc: confidence must be one of {CONFIDENCES}, got {confidence!r}.")


def aurc(
    scores: ArrayLike, labels: ArrayLike, *, confidence: str = "logit", ties: str = "average"
) -> Array:
    """Area under the risk-coverage curve of top-1 predictions (spec 10).

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

    References:
      Geifman, Uziel, El-Yaniv, "Bias-Reduced Uncertainty Estimation for Deep Neural
      Classifiers", ICLR 2019 (arXiv 1805.08206).
    """
    if confidence not in CONFIDENCES:
        raise ValueError(f"aurc: confidence must be one of {CONFIDENCES}, got {confidence!r}.")
    scores, labels = _aggregated("aurc", scores, labels)
    correct = jnp.argmax(scores, axis=-1) == labels
    return jnp.mean(risk_coverage_curve(_confidence(scores, confidence), correct, ties=ties))


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

    References:
      Geifman, Uziel, El-Yaniv, ICLR 2019 (arXiv 1805.08206), section 3.
    """
    scores, labels = _aggregated("aurc_optimal", scores, labels)
    n = scores.shape[0]
    num_errors = jnp.sum((jnp.argmax(scores, axis=-1) != labels).astype(jnp.float32))
    positions = jnp.arange(1, n + 1, dtype=jnp.float32)
    return jnp.mean(jnp.maximum(positions - (n - num_errors), 0.0) / positions)


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
    """
    return aurc(scores, labels, confidence=confidence, ties=ties) - aurc_optimal(scores, labels)
