"""Input checks shared by :mod:`tks_jax.losses` and :mod:`tks_jax.metrics` (private).

The policy both modules document:

* **Shapes, ranks and dtypes** are static, so they are always checked, eagerly and under
  ``jit`` alike (``ValueError`` / ``TypeError``). A hyper-parameter (``lam``, ``temperature``,
  ...) must be a scalar: an array of shape ``[2]`` is refused under ``jit`` too.
* **Values** (label range, hyper-parameter intervals, finite metric inputs) are checked when
  they are concrete (Python numbers, NumPy or concrete JAX arrays) and raise ``ValueError``.
  Traced values (under ``jit``, ``grad`` of that argument, ``vmap``) cannot raise: the affected
  result is NaN instead, never a plausible number. With ``checked=True`` the losses also stage a
  ``jax.experimental.checkify.check`` (the call must then run inside ``checkify.checkify``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

REDUCTIONS = ("mean", "none")


def concrete(x: Any) -> np.ndarray | None:
    """Returns ``x`` as a NumPy array when its value is known outside tracing, else None."""
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def compute_dtype(dtype: Any) -> Any:
    """At least float32: bf16/fp16 inputs are upcast, float64 stays float64."""
    return jnp.promote_types(dtype, jnp.float32)


def _interval(low: float, high: float | None, low_open: bool) -> str:
    return ("(" if low_open else "[") + f"{low}, " + (f"{high}]" if high is not None else "inf)")


def check_range(
    fn: str, name: str, value: Any, low: float, high: float | None = None, *,
    low_open: bool = False, checked: bool = False,
) -> Array | bool:
    """Checks a scalar hyper-parameter: its rank always, its value when concrete.

    Returns:
      ``True`` for a concrete valid value (an invalid one raises); for a traced value a boolean
      scalar array that is False when the value lies outside the interval (or is NaN). With
      ``checked`` a ``checkify.check`` of that condition is staged too.

    Raises:
      ValueError: ``value`` is not a scalar (always), or concrete and outside the interval.
    """
    shape = jnp.shape(value)
    if shape != ():
        raise ValueError(
            f"{fn}: {name} must be a scalar, got an array of shape {shape}. To evaluate several "
            f"values, jax.vmap over {name}."
        )
    v = concrete(value)
    if v is not None:
        x = float(v)
        bad = not np.isfinite(x) or (x <= low if low_open else x < low)
        if high is not None:
            bad = bad or x > high
        if bad:
            raise ValueError(f"{fn}: {name} must lie in {_interval(low, high, low_open)}, got {x}.")
        return True
    value = jnp.asarray(value)
    ok = (value > low) if low_open else (value >= low)
    ok = ok & jnp.isfinite(value)
    if high is not None:
        ok = ok & (value <= high)
    if checked:
        checkify.check(
            ok, f"{fn}: {name} must lie in {_interval(low, high, low_open)}, got {{v}}.", v=value
        )
    return ok


def check_labels(
    fn: str, labels: Array, batch: int, num_classes: int, *, checked: bool = False
) -> Array | None:
    """Checks integer labels ``[B]``: shape and dtype always, range when concrete.

    Returns:
      None for concrete labels (out-of-range ones raise); for traced labels a ``[B]`` boolean
      array, True where the label lies in ``[0, C)``.
    """
    if labels.ndim != 1:
        raise ValueError(
            f"{fn}: labels must be integer class indices of shape [B] (rank 1), got shape "
            f"{labels.shape}. One-hot labels are not accepted: pass argmax(one_hot, -1)."
        )
    if labels.shape[0] != batch:
        raise ValueError(
            f"{fn}: batch sizes differ: the logits have B = {batch} samples but labels have "
            f"shape {labels.shape}."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{fn}: labels must be an integer dtype, got {labels.dtype}.")
    values = concrete(labels)
    if values is not None:
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{fn}: labels must lie in [0, {num_classes - 1}] for C = {num_classes} "
                f"classes, got values in [{values.min()}, {values.max()}]."
            )
        return None
    ok = (labels >= 0) & (labels < num_classes)
    if checked:
        checkify.check(
            jnp.all(ok), f"{fn}: labels must lie in [0, {num_classes - 1}] for C = "
            f"{num_classes} classes; got an out-of-range label."
        )
    return ok


def check_floating(fn: str, x: Array, what: str = "logits") -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{fn}: {what} must be floating point, got dtype {x.dtype}.")


def check_where(fn: str, where: ArrayLike | None, batch: int) -> Array | None:
    """Checks an optional example mask ``where`` of shape ``[B]`` and dtype bool."""
    if where is None:
        return None
    where = jnp.asarray(where)
    if where.shape != (batch,) or where.dtype != jnp.bool_:
        raise ValueError(
            f"{fn}: where must be a boolean mask of shape [B] = ({batch},) (True for the "
            f"examples to include), got dtype {where.dtype} and shape {where.shape}."
        )
    return where


def check_reduction(fn: str, reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"{fn}: reduction must be one of {REDUCTIONS} ('none' gives one value per "
            f"example), got {reduction!r}."
        )


def per_step(fn: str, logits: ArrayLike, labels: ArrayLike | None) -> tuple[Array, Array | None]:
    """Validates time-major logits ``[T, B, C]`` and labels ``[B]`` (shapes and dtypes).

    Returns:
      The logits upcast to at least float32, and the labels as an array (None if not given).
    """
    logits = jnp.asarray(logits)
    if logits.ndim != 3:
        raise ValueError(
            f"{fn}: logits must be time-major [T, B, C] (rank 3), got shape {logits.shape}. "
            "For a single time step add a leading axis: logits[None]."
        )
    if 0 in logits.shape:
        raise ValueError(f"{fn}: logits [T, B, C] must have T, B, C >= 1, got {logits.shape}.")
    check_floating(fn, logits)
    if labels is None:
        return logits.astype(compute_dtype(logits.dtype)), None
    labels = jnp.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != logits.shape[1] or not jnp.issubdtype(
        labels.dtype, jnp.integer
    ):
        check_labels(fn, labels, logits.shape[1], logits.shape[2])  # raises the precise error
    return logits.astype(compute_dtype(logits.dtype)), labels


def scores(fn: str, logits: ArrayLike, labels: ArrayLike) -> tuple[Array, Array]:
    """Validates per-step logits ``[T, B, C]`` or time-averaged scores ``[B, C]``.

    Returns:
      Scores ``[B, C]`` (``mean_t`` of per-step logits, Eq. 3) in at least float32, and the
      labels as an array.
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if logits.ndim not in (2, 3) or 0 in logits.shape:
        raise ValueError(
            f"{fn}: expected per-step logits [T, B, C] or time-averaged scores [B, C] with no "
            f"empty axis, got shape {logits.shape}."
        )
    check_floating(fn, logits, "logits/scores")
    logits = logits.astype(compute_dtype(logits.dtype))
    if logits.ndim == 3:
        logits = jnp.mean(logits, axis=0)  # Eq. 3: O = mean_t z_t
    return logits, labels


def finite_rows(
    fn: str, x: Array, batch_axis: int, where: Array | None = None
) -> Array | None:
    """Checks that every selected row of ``x`` along ``batch_axis`` is finite.

    Returns:
      None for a concrete ``x`` (non-finite selected rows raise); for a traced ``x`` a boolean
      scalar array, False when some selected row holds NaN or inf.
    """
    axes = tuple(a for a in range(x.ndim) if a != batch_axis % x.ndim)
    rows = jnp.all(jnp.isfinite(x), axis=axes) if axes else jnp.isfinite(x)
    if where is not None:
        rows = rows | ~where
    values = concrete(rows)
    if values is None:
        return jnp.all(rows)
    if not values.all():
        bad = np.flatnonzero(~values)
        raise ValueError(
            f"{fn}: the logits/scores of {bad.size} example(s) are not finite (NaN or inf; "
            f"first at index {bad[0]}). A metric of non-finite outputs is meaningless: check "
            "the model's parameters (evaluate a checkpoint from before the divergence)."
        )
    return None


def masked_mean(values: Array, where: Array | None, axis: int = -1) -> Array:
    """Mean over ``axis`` of the entries selected by ``where`` (NaN when none is selected)."""
    if where is None:
        return jnp.mean(values, axis=axis)
    where = jnp.broadcast_to(where, values.shape)
    total = jnp.sum(jnp.where(where, values, 0), axis=axis)
    return total / jnp.sum(where, axis=axis).astype(values.dtype)


# --------------------------------------------------------------------------------------------
# Metric inputs (tks_jax.metrics, tks_jax.selective).
# --------------------------------------------------------------------------------------------


def nan_if_invalid(result: Array, *conditions: Array | None) -> Array:
    """``result``, or NaN everywhere when a traced validity condition fails."""
    for ok in conditions:
        if ok is not None:
            result = jnp.where(jnp.all(ok), result, jnp.nan)
    return result


def _metric_conditions(
    fn: str, logits: Array, labels: Array, where: ArrayLike | None, batch_axis: int
) -> tuple[Array | None, list[Array | None]]:
    """Checks labels, ``where`` and finiteness; returns ``where`` and the traced conditions."""
    batch, num_classes = logits.shape[batch_axis], logits.shape[-1]
    labels_ok = check_labels(fn, labels, batch, num_classes)
    where = check_where(fn, where, batch)
    if labels_ok is not None and where is not None:
        labels_ok = labels_ok | ~where
    finite = finite_rows(fn, logits, batch_axis, where)
    return where, [labels_ok, finite]


def metric_per_step(
    fn: str, logits: ArrayLike, labels: ArrayLike, where: ArrayLike | None
) -> tuple[Array, Array, Array | None, list[Array | None]]:
    """Checked per-step logits ``[T, B, C]``, labels, ``where`` and the traced conditions."""
    logits, labels = per_step(fn, logits, labels)
    where, conditions = _metric_conditions(fn, logits, labels, where, batch_axis=1)
    return logits, labels, where, conditions


def metric_scores(
    fn: str, logits: ArrayLike, labels: ArrayLike, where: ArrayLike | None = None
) -> tuple[Array, Array, Array | None, list[Array | None]]:
    """Checked time-averaged scores ``[B, C]``, labels, ``where`` and the traced conditions."""
    averaged, labels = scores(fn, logits, labels)
    where, conditions = _metric_conditions(fn, averaged, labels, where, batch_axis=0)
    return averaged, labels, where, conditions
