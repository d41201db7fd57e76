"""Temporal losses on stacked per-step logits: baseline CE, label smoothing, TET and TKS.

Spec: ``shared/spec/tks-method.md`` sections 4 (TKS, Eq. 4-8) and 5 (the baselines).

Every loss is a pure function of time-major logits ``[T, B, C]`` and integer labels ``[B]``
that returns a scalar; all work under ``jax.jit``, ``jax.grad`` and ``jax.vmap``. Losses are
computed in (at least) float32: bf16/fp16 logits are upcast inside, so the returned scalar is
float32 (float64 for float64 logits).

Input checks: shapes, ranks and dtypes are static and always checked (``ValueError`` /
``TypeError``). Values (label range, ``temperature > 0``, ``lam`` in ``[0, 1]``, ...) are
checked only when they are concrete (Python numbers or concrete arrays); under ``jit`` traced
values are the caller's contract and are not checked. In particular an out-of-range label
under ``jit`` silently contributes a zero one-hot target.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


# --------------------------------------------------------------------------------------------
# Input checks (private).
# --------------------------------------------------------------------------------------------


def _concrete(x: Any) -> np.ndarray | None:
    """Returns ``x`` as a NumPy array when its value is known outside tracing, else None."""
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def _check_range(
    name: str, value: Any, low: float, high: float | None = None, *, low_open: bool = False
) -> None:
    """Raises ValueError when a concrete ``value`` lies outside ``[low, high]``."""
    v = _concrete(value)
    if v is None:
        return
    if v.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got an array of shape {v.shape}.")
    v = float(v)
    bad = not np.isfinite(v) or (v <= low if low_open else v < low)
    if high is not None:
        bad = bad or v > high
    if bad:
        interval = f"({low}, " if low_open else f"[{low}, "
        interval += f"{high}]" if high is not None else "inf)"
        raise ValueError(f"{name} must lie in {interval}, got {v}.")


def _compute_dtype(dtype: Any) -> Any:
    # At least float32: bf16/fp16 logits are upcast, float64 stays float64.
    return jnp.promote_types(dtype, jnp.float32)


def _check_logits_labels(fn: str, logits: ArrayLike, labels: ArrayLike) -> tuple[Array, Array]:
    """Validates ``[T, B, C]`` floating logits and ``[B]`` integer labels; upcasts the logits."""
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if logits.ndim != 3:
        raise ValueError(
            f"{fn}: logits must be time-major [T, B, C] (rank 3), got shape {logits.shape}. "
            "For a single time step add a leading axis: logits[None]."
        )
    num_steps, batch, num_classes = logits.shape
    if num_steps < 1 or batch < 1 or num_classes < 1:
        raise ValueError(f"{fn}: logits [T, B, C] must have T, B, C >= 1, got {logits.shape}.")
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(f"{fn}: logits must be floating point, got dtype {logits.dtype}.")
    if labels.ndim != 1:
        raise ValueError(
            f"{fn}: labels must be integer class indices of shape [B] (rank 1), got shape "
            f"{labels.shape}. One-hot labels are not accepted: pass argmax(one_hot, -1)."
        )
    if labels.shape[0] != batch:
        raise ValueError(
            f"{fn}: batch sizes differ: logits [T, B, C] = {logits.shape} has B = {batch} but "
            f"labels have shape {labels.shape}."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{fn}: labels must be an integer dtype, got {labels.dtype}.")
    concrete = _concrete(labels)
    if (
        concrete is not None
        and concrete.size
        and (concrete.min() < 0 or concrete.max() >= num_classes)
    ):
        raise ValueError(
            f"{fn}: labels must lie in [0, {num_classes - 1}] for C = {num_classes} classes, "
            f"got values in [{concrete.min()}, {concrete.max()}]."
        )
    return logits.astype(_compute_dtype(logits.dtype)), labels


def _cross_entropy(log_probs: Array, targets: Array) -> Array:
    """``-sum_c targets[..., c] * log_probs[..., c]``, shape ``[...]``."""
    return -jnp.sum(targets * log_probs, axis=-1)


# --------------------------------------------------------------------------------------------
# Losses.
# --------------------------------------------------------------------------------------------


def mean_ce(logits: ArrayLike, labels: ArrayLike) -> Array:
    """Cross-entropy of the time-averaged logits: the baseline of the ablation (spec 5).

    ``L = mean_b CE(mean_t z_t[b], y_b)`` (Eq. 6 of the paper alone).

    Args:
      logits: per-step logits ``[T, B, C]``, any floating dtype.
      labels: integer class indices ``[B]`` in ``[0, C)``.

    Returns:
      A float32 (at least) scalar, the mean over the batch.

    References:
      Dong, Zhao, Zeng, "Temporal Knowledge Sharing enable Spiking Neural Network Learning from
      Past and Future", arXiv 2304.06540, Eq. 3 and 6.
    """
    logits, labels = _check_logits_labels("mean_ce", logits, labels)
    num_classes = logits.shape[-1]
    log_probs = jax.nn.log_softmax(jnp.mean(logits, axis=0), axis=-1)  # Eq. 3: O = mean_t z_t
    targets = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
    return jnp.mean(_cross_entropy(log_probs, targets))


def label_smoothing(logits: ArrayLike, labels: ArrayLike, *, smoothing: float = 0.1) -> Array:
    """Label-smoothed cross-entropy of the time-averaged logits (spec 5, the "LS" rows).

    ``L = mean_b [(1 - eps) * (-log p_y) + eps * mean_c (-log p_c)]`` with
    ``p = softmax(mean_t z_t)`` and ``eps = smoothing``.

    Args:
      logits: per-step logits ``[T, B, C]``, any floating dtype.
      labels: integer class indices ``[B]`` in ``[0, C)``.
      smoothing: ``eps`` in ``[0, 1]``; 0 gives :func:`mean_ce`. Checked when concrete.

    Returns:
      A float32 (at least) scalar.

    References:
      Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016.
    """
    logits, labels = _check_logits_labels("label_smoothing", logits, labels)
    _check_range("label_smoothing: smoothing", smoothing, 0.0, 1.0)
    num_classes = logits.shape[-1]
    log_probs = jax.nn.log_softmax(jnp.mean(logits, axis=0), axis=-1)
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
    targets = (1.0 - smoothing) * one_hot + smoothing / num_classes
    return jnp.mean(_cross_entropy(log_probs, targets))


def tet(logits: ArrayLike, labels: ArrayLike, *, lamb: float = 1e-3, means: float = 1.0) -> Array:
    """Temporal Efficient Training loss (spec 5, the "TET" rows).

    ``L = (1 - lamb) * mean_t mean_b CE(z_t[b], y_b) + lamb * mean_{t,b,c} (z_t[b,c] - means)^2``

    Args:
      logits: per-step logits ``[T, B, C]``, any floating dtype.
      labels: integer class indices ``[B]`` in ``[0, C)``.
      lamb: weight of the MSE regulariser, in ``[0, 1]`` (checked when concrete); 0 is the
        per-step CE alone.
      means: the regulariser's target ``phi``.

    Returns:
      A float32 (at least) scalar.

    References:
      Deng et al., "Temporal Efficient Training of Spiking Neural Network via Gradient
      Re-weighting", ICLR 2022, Eq. 8-10.
    """
    logits, labels = _check_logits_labels("tet", logits, labels)
    _check_range("tet: lamb", lamb, 0.0, 1.0)
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
    per_step_ce = _cross_entropy(jax.nn.log_softmax(logits, axis=-1), targets[None])  # [T, B]
    mse = jnp.mean(jnp.square(logits - means))
    return (1.0 - lamb) * jnp.mean(per_step_ce) + lamb * mse


def _teacher(logits: Array, labels: Array, temperature: ArrayLike) -> tuple[Array, Array]:
    """Teacher probabilities ``[B, C]`` and the correct-step mask ``[T, B]`` (validated input)."""
    # K_b = {t : argmax_c z_t[b, c] == y_b}; jnp.argmax breaks ties to the first index.
    correct = jnp.argmax(logits, axis=-1) == labels[None, :]  # [T, B]
    # Sum (not mean) of the selected logits; a zero vector (uniform teacher) if K_b is empty.
    # `where` rather than a product so that no gradient reaches the unselected steps.
    teacher_logits = jnp.sum(jnp.where(correct[..., None], logits, 0.0), axis=0)  # [B, C]
    return jax.nn.softmax(teacher_logits / temperature, axis=-1), correct  # Eq. 5


def tks_teacher(logits: ArrayLike, labels: ArrayLike, *, temperature: float) -> Array:
    """The TKS teacher: softmax of the summed logits of the correct steps (spec 4, Eq. 5).

    For each sample ``b`` the steps whose own argmax is the label (ties to the first index)
    are selected, their logits summed and softened::

        q_b = softmax(sum_{t: argmax z_t[b] == y_b} z_t[b] / temperature)

    A sample without any correct step gets the uniform distribution.

    Args:
      logits: per-step logits ``[T, B, C]``, any floating dtype.
      labels: integer class indices ``[B]`` in ``[0, C)``.
      temperature: distillation temperature ``tau_kd > 0`` (checked when concrete).

    Returns:
      Teacher probabilities ``[B, C]`` in float32 (at least); rows sum to 1. Gradients flow
      into the selected logits (use ``jax.lax.stop_gradient`` to detach).

    References:
      Dong, Zhao, Zeng, "Temporal Knowledge Sharing enable Spiking Neural Network Learning from
      Past and Future", arXiv 2304.06540, Eq. 5.
    """
    logits, labels = _check_logits_labels("tks_teacher", logits, labels)
    _check_range("tks_teacher: temperature", temperature, 0.0, low_open=True)
    return _teacher(logits, labels, temperature)[0]


def tks(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    temperature: float,
    lam: float,
    detach_teacher: bool = False,
    return_aux: bool = False,
) -> Array | tuple[Array, dict[str, Array]]:
    """Temporal Knowledge Sharing loss (spec 4, Eq. 4-8).

    ::

        L_ce   = mean_b CE(mean_t z_t[b], y_b)                                  # Eq. 6
        q_b    = tks_teacher(z, y, temperature)[b]                              # Eq. 5
        L_kd^t = temperature^2 * mean_b [-sum_c q_b[c] * log_softmax(z_t[b])[c]]  # Eq. 4
        L      = (1 - lam) * L_ce + lam * mean_t L_kd^t                         # Eq. 7-8

    The student side is at temperature 1; only the teacher is softened. ``L_kd`` is a
    cross-entropy (the teacher's entropy is included), and samples with no correct step
    (uniform teacher) still contribute to it.

    Args:
      logits: per-step logits ``[T, B, C]``, any floating dtype.
      labels: integer class indices ``[B]`` in ``[0, C)``.
      temperature: distillation temperature ``tau_kd > 0`` (3 for CIFAR, 1 for ImageNet,
        5 for event data). May be a traced array; checked only when concrete.
      lam: balance factor in ``[0, 1]``, usually :func:`tks_lambda` of the epoch. May be a
        traced array (no recompile per epoch); checked only when concrete.
      detach_teacher: stop the gradient into the teacher's logits. ``False`` (default)
        reproduces the authors' code, where gradients flow into the teacher too. The loss
        value is the same either way.
      return_aux: also return a dict of diagnostics (see Returns).

    Returns:
      The loss, a float32 (at least) scalar. With ``return_aux`` a tuple ``(loss, aux)`` where
      ``aux`` has ``ce`` (``L_ce``, scalar), ``kd`` (``mean_t L_kd^t``, scalar), ``kd_per_step``
      (``[T]``), ``teacher`` (``[B, C]`` probabilities) and ``teacher_fraction`` (scalar, the
      fraction of samples with at least one correct step, i.e. a non-uniform teacher).

    References:
      Dong, Zhao, Zeng, "Temporal Knowledge Sharing enable Spiking Neural Network Learning from
      Past and Future", arXiv 2304.06540, Eq. 4-8.
    """
    logits, labels = _check_logits_labels("tks", logits, labels)
    _check_range("tks: temperature", temperature, 0.0, low_open=True)
    _check_range("tks: lam", lam, 0.0, 1.0)
    num_classes = logits.shape[-1]

    one_hot = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
    ce = jnp.mean(_cross_entropy(jax.nn.log_softmax(jnp.mean(logits, axis=0)), one_hot))  # Eq. 6

    teacher, correct = _teacher(logits, labels, temperature)  # Eq. 5
    if detach_teacher:
        teacher = jax.lax.stop_gradient(teacher)
    student_log_probs = jax.nn.log_softmax(logits, axis=-1)  # [T, B, C], temperature 1
    kd_per_step = jnp.square(temperature) * jnp.mean(
        _cross_entropy(student_log_probs, teacher[None]), axis=-1
    )  # Eq. 4, [T]
    kd = jnp.mean(kd_per_step)
    loss = (1.0 - lam) * ce + lam * kd  # Eq. 7
    loss = loss.astype(logits.dtype)
    if not return_aux:
        return loss
    aux = {
        "ce": ce,
        "kd": kd.astype(logits.dtype),
        "kd_per_step": kd_per_step.astype(logits.dtype),
        "teacher": teacher,
        "teacher_fraction": jnp.mean(jnp.any(correct, axis=0).astype(logits.dtype)),
    }
    return loss, aux


def tks_lambda(epoch: int | ArrayLike, num_epochs: int, peak: float) -> float | Array:
    """The per-epoch linear ramp of the TKS balance factor (spec 4).

    ``lam(epoch) = peak * epoch / num_epochs``, epoch counted from 0 and constant within an
    epoch (0 at the first epoch, ``peak * (E - 1) / E`` at the last). The paper's peaks: 0.7
    for static images, 0.3 for event data.

    Args:
      epoch: the current epoch, ``0 <= epoch <= num_epochs``.
      num_epochs: total number of training epochs, ``>= 1``.
      peak: the value the ramp approaches, in ``[0, 1]``.

    Returns:
      ``lam`` as a Python float when all inputs are Python numbers or concrete, otherwise an
      array (the formula is also traceable; values are then not checked).

    Raises:
      ValueError: ``num_epochs < 1``, ``peak`` outside ``[0, 1]`` or ``epoch`` outside
        ``[0, num_epochs]`` (when concrete).
    """
    n = _concrete(num_epochs)
    if n is not None and (n.ndim != 0 or not n >= 1):
        raise ValueError(f"tks_lambda: num_epochs must be a scalar >= 1, got {num_epochs}.")
    _check_range("tks_lambda: peak", peak, 0.0, 1.0)
    e = _concrete(epoch)
    if e is not None and n is not None:
        if e.ndim != 0 or not 0 <= e <= n:
            raise ValueError(
                f"tks_lambda: epoch must be a scalar in [0, num_epochs={num_epochs}] (counted "
                f"from 0), got {epoch}."
            )
    p = _concrete(peak)
    if e is not None and n is not None and p is not None:
        return float(p) * float(e) / float(n)
    return peak * jnp.asarray(epoch, jnp.float32) / num_epochs
