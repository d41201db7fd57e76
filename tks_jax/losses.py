"""Temporal losses on stacked per-step logits: baseline CE, label smoothing, TET and TKS.

See ``docs/method.md`` §4 (TKS, Eq. 4-8) and §5 (the baselines).

Every loss is a pure function of time-major logits ``[T, B, C]`` and integer labels ``[B]``;
all work under ``jax.jit``, ``jax.grad`` and ``jax.vmap``. Losses are computed in (at least)
float32: bf16/fp16 logits are upcast inside, so the result is float32 (float64 for float64
logits).

Reduction and masking (the optax convention of per-example losses, plus a mean): every loss
takes ``reduction="mean"`` (default, a scalar: the mean over the batch) or ``reduction="none"``
(one value per example, ``[B]``), and an optional boolean mask ``where`` of shape ``[B]``
(True for the examples to include). With ``where`` the mean runs over the selected examples
only (NaN when none is selected, as ``jnp.mean(x, where=...)``) and ``"none"`` returns 0 for the
excluded ones, so padded evaluation batches compose: ``sum(loss(..., reduction="none",
where=mask))`` over batches divided by the number of real examples is the dataset mean.

Input checks (shared with :mod:`tks_jax.metrics`):

* Shapes, ranks and dtypes are static and always checked (``ValueError`` / ``TypeError``),
  under ``jit`` too: every hyper-parameter (``lam``, ``temperature``, ``smoothing``, ``lamb``,
  ``means``) must be a scalar; use ``jax.vmap`` to evaluate several values.
* Values (label range, ``temperature > 0``, ``lam`` in ``[0, 1]``, ...) raise ``ValueError``
  when concrete. When traced (under ``jit``) an invalid value cannot raise; it makes the loss
  NaN instead (per example for an out-of-range label, everywhere for a hyper-parameter), so a
  training loop's non-finite check stops the run rather than training on a plausible number.
* ``checked=True`` additionally stages ``jax.experimental.checkify`` checks of those values, to
  get the error message from jitted code::

      from jax.experimental import checkify
      f = checkify.checkify(jax.jit(lambda z, y, t: tks(z, y, temperature=t, lam=0.5,
                                                        checked=True)))
      err, loss = f(logits, labels, -1.0)
      err.throw()  # ValueError: tks: temperature must lie in (0.0, inf), got -1.0.

  A call with ``checked=True`` must run inside ``checkify.checkify`` when it is traced.

Non-finite logits are not checked: they give a non-finite loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tks_jax import _checks
from tks_jax.schedules import tks_lambda, tks_lambda_schedule

__all__ = [
    "mean_ce", "label_smoothing", "tet", "tks_teacher", "tks", "tks_lambda",
    "tks_lambda_schedule",
]

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


# --------------------------------------------------------------------------------------------
# Shared pieces (private).
# --------------------------------------------------------------------------------------------


def _prepare(
    fn: str, logits: ArrayLike, labels: ArrayLike, where: ArrayLike | None, reduction: str,
    checked: bool,
) -> tuple[Array, Array, Array | None, Array | None]:
    """Validates the inputs; returns logits (upcast), labels, ``where`` and label validity."""
    _checks.check_reduction(fn, reduction)
    logits, labels = _checks.per_step(fn, logits, labels)
    _, batch, num_classes = logits.shape
    labels_ok = _checks.check_labels(fn, labels, batch, num_classes, checked=checked)
    return logits, labels, _checks.check_where(fn, where, batch), labels_ok


def _finish(
    per_example: Array, *, valid: Array | bool | None, where: Array | None, reduction: str
) -> Array:
    """NaN for invalid traced values, then the reduction over the (masked) batch."""
    if valid is not None and valid is not True:
        per_example = jnp.where(valid, per_example, jnp.nan)
    if reduction == "none":
        return per_example if where is None else jnp.where(where, per_example, 0.0)
    return _checks.masked_mean(per_example, where)


def _valid(*conditions: Array | bool | None) -> Array | bool | None:
    """Conjunction of traced validity conditions (concrete ones are already checked)."""
    out: Array | bool | None = None
    for c in conditions:
        if c is None or c is True:
            continue
        out = c if out is None else out & c
    return out


def _cross_entropy(log_probs: Array, targets: Array) -> Array:
    """``-sum_c targets[..., c] * log_probs[..., c]``, shape ``[...]``."""
    return -jnp.sum(targets * log_probs, axis=-1)


# --------------------------------------------------------------------------------------------
# Losses.
# --------------------------------------------------------------------------------------------


def mean_ce(
    logits: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None,
    reduction: str = "mean", checked: bool = False,
) -> Array:
    """Cross-entropy of the time-averaged logits: the baseline of the ablation (§5).

    ``L_b = CE(mean_t z_t[b], y_b)`` (Eq. 6 of the paper alone), averaged over the batch.

    Args:
      logits: per-step logits ``[T, B, C]``, any floating dtype.
      labels: integer class indices ``[B]`` in ``[0, C)``.
      where: optional boolean mask ``[B]``, True for the examples to include.
      reduction: ``"mean"`` (scalar) or ``"none"`` (``[B]``). Static.
      checked: stage ``checkify`` checks of the label range (see the module docstring).

    Returns:
      A float32 (at least) scalar, or ``[B]`` with ``reduction="none"``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tks_jax import losses
      >>> logits = jnp.zeros((2, 3, 4))  # T = 2 steps, B = 3 examples, C = 4 classes
      >>> labels = jnp.array([0, 1, 3])
      >>> print(f"{losses.mean_ce(logits, labels):.4f}")  # log(4): uniform prediction
      1.3863
      >>> losses.mean_ce(logits, labels, reduction="none").shape
      (3,)
      >>> mask = jnp.array([True, True, False])  # the third example is padding
      >>> print(losses.mean_ce(logits, labels, where=mask, reduction="none"))
      [1.3862944 1.3862944 0.       ]

    References:
      Dong, Zhao, Zeng, "Temporal Knowledge Sharing enable Spiking Neural Network Learning from
      Past and Future", arXiv 2304.06540, Eq. 3 and 6.
    """
    logits, labels, where, labels_ok = _prepare(
        "mean_ce", logits, labels, where, reduction, checked
    )
    num_classes = logits.shape[-1]
    log_probs = jax.nn.log_softmax(jnp.mean(logits, axis=0), axis=-1)  # Eq. 3: O = mean_t z_t
    targets = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
    per_example = _cross_entropy(log_probs, targets)
    return _finish(per_example, valid=labels_ok, where=where, reduction=reduction)


def label_smoothing(
    logits: ArrayLike, labels: ArrayLike, *, smoothing: float = 0.1,
    where: ArrayLike | None = None, reduction: str = "mean", checked: bool = False,
) -> Array:
    """Label-smoothed cross-entropy of the time-averaged logits (§5, the "LS" rows).

    ``L_b = (1 - eps) * (-log p_y) + eps * mean_c (-log p_c)`` with ``p = softmax(mean_t z_t[b])``
    and ``eps = smoothing``, averaged over the batch.

    Args:
      logits: per-step logits ``[T, B, C]``, any floating dtype.
      labels: integer class indices ``[B]`` in ``[0, C)``.
      smoothing: ``eps``, a scalar in ``[0, 1]``; 0 gives :func:`mean_ce`.
      where: optional boolean mask ``[B]``, True for the examples to include.
      reduction: ``"mean"`` (scalar) or ``"none"`` (``[B]``). Static.
      checked: stage ``checkify`` checks of the values (see the module docstring).

    Returns:
      A float32 (at least) scalar, or ``[B]`` with ``reduction="none"``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tks_jax import losses
      >>> logits = jnp.array([[[4.0, 0.0]]])  # T = 1, B = 1, C = 2
      >>> labels = jnp.array([0])
      >>> print(f"{losses.label_smoothing(logits, labels, smoothing=0.0):.4f}")  # plain CE
      0.0181
      >>> print(f"{losses.label_smoothing(logits, labels, smoothing=0.2):.4f}")
      0.4181

    References:
      Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016.
    """
    fn = "label_smoothing"
    logits, labels, where, labels_ok = _prepare(fn, logits, labels, where, reduction, checked)
    smoothing_ok = _checks.check_range(fn, "smoothing", smoothing, 0.0, 1.0, checked=checked)
    num_classes = logits.shape[-1]
    log_probs = jax.nn.log_softmax(jnp.mean(logits, axis=0), axis=-1)
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
    targets = (1.0 - smoothing) * one_hot + smoothing / num_classes
    per_example = _cross_entropy(log_probs, targets)
    valid = _valid(labels_ok, smoothing_ok)
    return _finish(per_example, valid=valid, where=where, reduction=reduction)


def tet(
    logits: ArrayLike, labels: ArrayLike, *, lamb: float = 1e-3, means: float = 1.0,
    where: ArrayLike | None = None, reduction: str = "mean", checked: bool = False,
) -> Array:
    """Temporal Efficient Training loss (§5, the "TET" rows).

    ``L_b = (1 - lamb) * mean_t CE(z_t[b], y_b) + lamb * mean_{t,c} (z_t[b,c] - means)^2``,
    averaged over the batch.

    Args:
      logits: per-step logits ``[T, B, C]``, any floating dtype.
      labels: integer class indices ``[B]`` in ``[0, C)``.
      lamb: weight of the MSE regulariser, a scalar in ``[0, 1]``; 0 is the per-step CE alone.
      means: the regulariser's target ``phi``, a scalar.
      where: optional boolean mask ``[B]``, True for the examples to include.
      reduction: ``"mean"`` (scalar) or ``"none"`` (``[B]``). Static.
      checked: stage ``checkify`` checks of the values (see the module docstring).

    Returns:
      A float32 (at least) scalar, or ``[B]`` with ``reduction="none"``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from tks_jax import losses
      >>> logits = jnp.ones((3, 2, 5))  # T = 3, B = 2, C = 5: every logit equals `means`
      >>> labels = jnp.array([1, 4])
      >>> print(f"{losses.tet(logits, labels, lamb=0.5, means=1.0):.4f}")  # 0.5 * log(5) + 0
      0.8047

    References:
      Deng et al., "Temporal Efficient Training of Spiking Neural Network via Gradient
      Re-weighting", ICLR 2022, Eq. 8-10.
    """
    logits, labels, where, labels_ok = _prepare("tet", logits, labels, where, reduction, checked)
    lamb_ok = _checks.check_range("tet", "lamb", lamb, 0.0, 1.0, checked=checked)
    means_ok = _checks.check_range("tet", "means", means, -jnp.inf, checked=checked)
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
    per_step_ce = _cross_entropy(jax.nn.log_softmax(logits, axis=-1), targets[None])  # [T, B]
    mse = jnp.mean(jnp.square(logits - means), axis=(0, 2))  # [B]
    per_example = (1.0 - lamb) * jnp.mean(per_step_ce, axis=0) + lamb * mse
    valid = _valid(labels_ok, lamb_ok, means_ok)
    return _finish(per_example, valid=valid, where=where, reduction=reduction)


def _teacher(logits: Array, labels: Array, temperature: ArrayLike) -> tuple[Array, Array]:
    """Teacher probabilities ``[B, C]`` and the correct-step mask ``[T, B]`` (validated input)."""
    # K_b = {t : argmax_c z_t[b, c] == y_b}; jnp.argmax breaks ties to the first index.
    correct = jnp.argmax(logits, axis=-1) == labels[None, :]  # [T, B]
    # Sum (not mean) of the selected logits; a zero vector (uniform teacher) if K_b is empty.
    # `where` rather than a product so that no gradient reaches the unselected steps.
    teacher_logits = jnp.sum(jnp.where(correct[..., None], logits, 0.0), axis=0)  # [B, C]
    return jax.nn.softmax(teacher_logits / temperature, axis=-1), correct  # Eq. 5


def tks_teacher(
    logits: ArrayLike, labels: ArrayLike, *, temperature: float, checked: bool = False
) -> Array:
    """The TKS teacher: softmax of the summed logits of the correct steps (§4, Eq. 5).

    For each sample ``b`` the steps whose own argmax is the label (ties to the first index)
    are selected, their logits summed and softened::

        q_b = softmax(sum_{t: argmax z_t[b] == y_b} z_t[b] / temperature)

    A sample without any correct step gets the uniform distribution.

    Args:
      logits: per-step logits ``[T, B, C]``, any floating dtype.
      labels: integer class indices ``[B]`` in ``[0, C)``.
      temperature: distillation temperature ``tau_kd > 0``, a scalar.
      checked: stage ``checkify`` checks of the values (see the module docstring).

    Returns:
      Teacher probabilities ``[B, C]`` in float32 (at least); rows sum to 1 (NaN rows for
      invalid traced values). Gradients flow into the selected logits (use
      ``jax.lax.stop_gradient`` to detach).

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from tks_jax import losses
      >>> logits = jnp.array([[[2.0, 0.0], [2.0, 0.0]],    # step 0: both predict class 0
      ...                     [[1.0, 0.0], [0.0, 1.0]]])   # step 1: example 1 predicts 1
      >>> labels = jnp.array([0, 1])
      >>> q = losses.tks_teacher(logits, labels, temperature=1.0)
      >>> # example 0 sums both steps (3, 0); example 1 uses step 1 only (0, 1)
      >>> print(np.asarray(q).round(4))
      [[0.9526 0.0474]
       [0.2689 0.7311]]

    References:
      Dong, Zhao, Zeng, "Temporal Knowledge Sharing enable Spiking Neural Network Learning from
      Past and Future", arXiv 2304.06540, Eq. 5.
    """
    fn = "tks_teacher"
    logits, labels, _, labels_ok = _prepare(fn, logits, labels, None, "mean", checked)
    temperature_ok = _checks.check_range(
        fn, "temperature", temperature, 0.0, low_open=True, checked=checked
    )
    teacher = _teacher(logits, labels, temperature)[0]
    valid = _valid(labels_ok, temperature_ok)
    if valid is None:
        return teacher
    return jnp.where(jnp.broadcast_to(valid, labels.shape)[:, None], teacher, jnp.nan)


def tks(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    temperature: float,
    lam: float,
    detach_teacher: bool = False,
    return_aux: bool = False,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    checked: bool = False,
) -> Array | tuple[Array, dict[str, Array]]:
    """Temporal Knowledge Sharing loss (§4, Eq. 4-8).

    ::

        L_ce[b]   = CE(mean_t z_t[b], y_b)                                    # Eq. 6
        q_b       = tks_teacher(z, y, temperature)[b]                         # Eq. 5
        L_kd^t[b] = temperature^2 * [-sum_c q_b[c] * log_softmax(z_t[b])[c]]  # Eq. 4
        L[b]      = (1 - lam) * L_ce[b] + lam * mean_t L_kd^t[b]              # Eq. 7-8

    and the loss is ``mean_b L[b]``. The student side is at temperature 1; only the teacher
    is softened. ``L_kd`` is a cross-entropy (the teacher's entropy is included), and samples
    with no correct step (uniform teacher) still contribute to it.

    Args:
      logits: per-step logits ``[T, B, C]``, any floating dtype.
      labels: integer class indices ``[B]`` in ``[0, C)``.
      temperature: distillation temperature ``tau_kd > 0``, a scalar (3 for CIFAR, 1 for
        ImageNet, 5 for event data). May be a traced array.
      lam: balance factor, a scalar in ``[0, 1]``, usually :func:`tks_lambda_schedule` of the
        epoch. May be a traced array (no recompile per epoch).
      detach_teacher: stop the gradient into the teacher's logits. ``False`` (default)
        reproduces the authors' code, where gradients flow into the teacher too. The loss
        value is the same either way.
      return_aux: also return a dict of diagnostics (see Returns).
      where: optional boolean mask ``[B]``, True for the examples to include.
      reduction: ``"mean"`` (scalar) or ``"none"`` (``[B]``). Static.
      checked: stage ``checkify`` checks of the values (see the module docstring).

    Returns:
      The loss, a float32 (at least) scalar (``[B]`` with ``reduction="none"``). With
      ``return_aux`` a tuple ``(loss, aux)`` where ``aux`` holds means over the selected
      examples, whatever the reduction: ``ce`` (``L_ce``, scalar), ``kd`` (``mean_t L_kd^t``,
      scalar), ``kd_per_step`` (``[T]``), ``teacher_fraction`` (scalar, the fraction of
      samples with at least one correct step, i.e. a non-uniform teacher), and ``teacher``
      (``[B, C]`` probabilities).

    Examples:
      >>> import jax.numpy as jnp
      >>> from tks_jax import losses
      >>> logits = jnp.array([[[2.0, 0.0]], [[1.0, 0.0]]])  # T = 2, B = 1, C = 2
      >>> labels = jnp.array([0])
      >>> print(f"{losses.tks(logits, labels, temperature=1.0, lam=0.0):.4f}")  # = mean_ce
      0.2014
      >>> loss, aux = losses.tks(logits, labels, temperature=1.0, lam=0.5, return_aux=True)
      >>> print(f"{loss:.4f} = 0.5 * {aux['ce']:.4f} + 0.5 * {aux['kd']:.4f}")
      0.2463 = 0.5 * 0.2014 + 0.5 * 0.2912

    References:
      Dong, Zhao, Zeng, "Temporal Knowledge Sharing enable Spiking Neural Network Learning from
      Past and Future", arXiv 2304.06540, Eq. 4-8.
    """
    logits, labels, where, labels_ok = _prepare("tks", logits, labels, where, reduction, checked)
    temperature_ok = _checks.check_range(
        "tks", "temperature", temperature, 0.0, low_open=True, checked=checked
    )
    lam_ok = _checks.check_range("tks", "lam", lam, 0.0, 1.0, checked=checked)
    num_classes = logits.shape[-1]

    one_hot = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
    ce = _cross_entropy(jax.nn.log_softmax(jnp.mean(logits, axis=0)), one_hot)  # Eq. 6, [B]

    teacher, correct = _teacher(logits, labels, temperature)  # Eq. 5
    if detach_teacher:
        teacher = jax.lax.stop_gradient(teacher)
    student_log_probs = jax.nn.log_softmax(logits, axis=-1)  # [T, B, C], temperature 1
    kd_steps = jnp.square(temperature) * _cross_entropy(student_log_probs, teacher[None])  # [T, B]
    kd = jnp.mean(kd_steps, axis=0)  # Eq. 4 averaged over steps, [B]
    per_example = ((1.0 - lam) * ce + lam * kd).astype(logits.dtype)  # Eq. 7
    valid = _valid(labels_ok, temperature_ok, lam_ok)
    loss = _finish(per_example, valid=valid, where=where, reduction=reduction)
    if not return_aux:
        return loss
    dtype = logits.dtype
    aux = {
        "ce": _finish(ce, valid=valid, where=where, reduction="mean"),
        "kd": _finish(kd, valid=valid, where=where, reduction="mean").astype(dtype),
        "kd_per_step": _checks.masked_mean(
            jnp.where(valid, kd_steps, jnp.nan) if valid is not None else kd_steps, where
        ).astype(dtype),
        "teacher": teacher,
        "teacher_fraction": _checks.masked_mean(jnp.any(correct, axis=0).astype(dtype), where),
    }
    return loss, aux
