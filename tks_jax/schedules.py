"""The schedule of the TKS balance factor ``lam``, a per-epoch linear ramp (docs/method.md §4).

Shaped like an optax schedule (a function of the step or epoch count returning the value);
:func:`tks_lambda` is its one-call form. Both are re-exported by :mod:`tks_jax.losses` and
:mod:`tks_jax`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tks_jax import _checks

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def _check_ramp(fn: str, num_epochs: Any, peak: Any) -> None:
    n = _checks.concrete(num_epochs)
    if n is not None and (n.ndim != 0 or not n >= 1):
        raise ValueError(f"{fn}: num_epochs must be a scalar >= 1, got {num_epochs}.")
    _checks.check_range(fn, "peak", peak, 0.0, 1.0)


def _ramp(fn: str, epoch: Any, num_epochs: Any, peak: Any) -> float | Array:
    """``peak * epoch / num_epochs``: a Python float when all inputs are concrete."""
    e, n, p = _checks.concrete(epoch), _checks.concrete(num_epochs), _checks.concrete(peak)
    if e is not None and n is not None:
        if e.ndim != 0 or not 0 <= e <= n:
            raise ValueError(
                f"{fn}: epoch must be a scalar in [0, num_epochs={num_epochs}] (counted from 0), "
                f"got {epoch}."
            )
        if p is not None:
            return float(p) * float(e) / float(n)
    if jnp.ndim(epoch) != 0:
        raise ValueError(f"{fn}: epoch must be a scalar, got shape {jnp.shape(epoch)}.")
    e = jnp.asarray(epoch, jnp.float32)
    lam = peak * e / num_epochs
    return jnp.where((e >= 0) & (e <= num_epochs), lam, jnp.nan)  # invalid traced epoch: NaN


def tks_lambda_schedule(
    peak: float, num_epochs: int, *, steps_per_epoch: int | None = None
) -> Callable[[ArrayLike], Array]:
    """The TKS balance factor as an optax-style schedule: ``count -> lam`` (§4).

    ``lam(epoch) = peak * epoch / num_epochs``, epoch counted from 0 and constant within an
    epoch (0 at the first epoch, ``peak * (E - 1) / E`` at the last). The paper's peaks: 0.7
    for static images, 0.3 for event data.

    Args:
      peak: the value the ramp approaches, in ``[0, 1]`` (concrete).
      num_epochs: total number of training epochs, ``>= 1`` (concrete).
      steps_per_epoch: if given, the schedule's argument is the optimizer step count (as for
        ``optax`` schedules) and ``epoch = count // steps_per_epoch``; otherwise it is the
        epoch.

    Returns:
      ``schedule(count) -> lam``, a float32 scalar (a NumPy scalar for a concrete ``count``,
      no device round trip; a JAX array when traced), jit-able. A concrete ``count`` outside
      ``[0, num_epochs]`` epochs raises ``ValueError``; a traced one gives NaN.

    Raises:
      ValueError: ``num_epochs < 1``, ``peak`` outside ``[0, 1]`` or ``steps_per_epoch < 1``.

    Examples:
      >>> import tks_jax
      >>> schedule = tks_jax.tks_lambda_schedule(peak=0.7, num_epochs=10)
      >>> print(schedule(0), schedule(5))
      0.0 0.35
      >>> per_step = tks_jax.tks_lambda_schedule(0.7, 10, steps_per_epoch=100)
      >>> print(per_step(250))  # step 250 is in epoch 2
      0.14
    """
    fn = "tks_lambda_schedule"
    _check_ramp(fn, num_epochs, peak)
    if steps_per_epoch is not None and not (
        isinstance(steps_per_epoch, int) and steps_per_epoch >= 1
    ):
        raise ValueError(f"{fn}: steps_per_epoch must be an int >= 1, got {steps_per_epoch!r}.")

    def schedule(count: ArrayLike) -> Array:
        epoch = count
        if steps_per_epoch is not None:
            c = _checks.concrete(count)
            epoch = (int(c) // steps_per_epoch if c is not None and c.ndim == 0
                     else jnp.asarray(count) // steps_per_epoch)
        lam = _ramp(fn, epoch, num_epochs, peak)
        return np.float32(lam) if isinstance(lam, float) else jnp.asarray(lam, jnp.float32)

    return schedule


def tks_lambda(epoch: int | ArrayLike, num_epochs: int, peak: float) -> float | Array:
    """The TKS balance factor at one epoch: ``peak * epoch / num_epochs`` (§4).

    The one-call form of :func:`tks_lambda_schedule` (same values, same checks).

    Args:
      epoch: the current epoch, ``0 <= epoch <= num_epochs``.
      num_epochs: total number of training epochs, ``>= 1``.
      peak: the value the ramp approaches, in ``[0, 1]``.

    Returns:
      ``lam`` as a Python float when all inputs are concrete, otherwise a float32 array (the
      formula is traceable; a traced epoch outside the range gives NaN).

    Raises:
      ValueError: ``num_epochs < 1``, ``peak`` outside ``[0, 1]`` or ``epoch`` outside
        ``[0, num_epochs]`` (when concrete).

    Examples:
      >>> import tks_jax
      >>> tks_jax.tks_lambda(epoch=300, num_epochs=600, peak=0.7)
      0.35
    """
    _check_ramp("tks_lambda", num_epochs, peak)
    return _ramp("tks_lambda", epoch, num_epochs, peak)
