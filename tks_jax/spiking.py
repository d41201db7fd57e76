"""Spiking dynamics: a surrogate-gradient spike function and LIF neurons scanned over time.

Method: ``docs/method.md`` §1 (LIF, Eq. 1-2) and §2 (surrogate gradient).

Everything here is a pure function of arrays: the membrane potential is an explicit
``jax.lax.scan`` carry that starts at zero on every call, so no state survives between calls.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


# --------------------------------------------------------------------------------------------
# Surrogate gradients.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Surrogate:
    """Base class of surrogate gradients: ``grad(x)`` is dS/dx used in the backward pass.

    Subclasses are frozen dataclasses (hashable), so they can be static arguments of
    ``jax.custom_vjp`` and ``jax.jit``. Every surrogate has one sharpness parameter ``alpha``.
    """

    alpha: float

    def grad(self, x: Array) -> Array:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class QGate(Surrogate):
    """Piecewise quadratic spike (Bi-Real Net), the paper's surrogate (``docs/method.md`` §2).

    ``dS/dx = alpha - alpha**2 * |x|`` for ``|x| <= 1/alpha``, else 0: a triangle of peak
    ``alpha`` and area 1. ``alpha = 2`` is the authors' value.
    """

    alpha: float = 2.0

    def grad(self, x: Array) -> Array:
        return jnp.maximum(self.alpha - self.alpha**2 * jnp.abs(x), 0.0)


@dataclasses.dataclass(frozen=True)
class Sigmoid(Surrogate):
    """Derivative of ``sigmoid(alpha * x)`` (SpikingJelly's ``Sigmoid``, alpha = 4)."""

    alpha: float = 4.0

    def grad(self, x: Array) -> Array:
        sg = jax.nn.sigmoid(self.alpha * x)
        return self.alpha * sg * (1.0 - sg)


@dataclasses.dataclass(frozen=True)
class ATan(Surrogate):
    """Derivative of ``arctan(pi/2 * alpha * x) / pi + 1/2`` (SpikingJelly's ``ATan``)."""

    alpha: float = 2.0

    def grad(self, x: Array) -> Array:
        return (self.alpha / 2.0) / (1.0 + (math.pi / 2.0 * self.alpha * x) ** 2)


@dataclasses.dataclass(frozen=True)
class Rectangle(Surrogate):
    """Box of height ``alpha`` and width ``1/alpha`` centred on 0 (area 1; STBP)."""

    alpha: float = 1.0

    def grad(self, x: Array) -> Array:
        return jnp.where(jnp.abs(x) < 0.5 / self.alpha, self.alpha, 0.0)


@dataclasses.dataclass(frozen=True)
class Triangle(Surrogate):
    """Triangle of peak ``alpha`` and fixed half-width 1: ``alpha * max(0, 1 - |x|)``.

    Bellec et al. (2018) use ``alpha = 0.3`` ("dampening factor"). Unlike ``QGate``, the
    parameter scales the height only, not the width.
    """

    alpha: float = 1.0

    def grad(self, x: Array) -> Array:
        return self.alpha * jnp.maximum(1.0 - jnp.abs(x), 0.0)


SURROGATES: dict[str, type[Surrogate]] = {
    "qgate": QGate,
    "piecewise_quadratic": QGate,
    "sigmoid": Sigmoid,
    "atan": ATan,
    "rectangle": Rectangle,
    "triangle": Triangle,
}


def get_surrogate(surrogate: str | Surrogate, alpha: float | None = None) -> Surrogate:
    """Returns a surrogate object from a name (for configs) or passes an object through.

    Args:
      surrogate: a name in ``SURROGATES`` or a ``Surrogate`` instance.
      alpha: sharpness; ``None`` keeps the surrogate's default. Only with a name.

    Raises:
      ValueError: unknown name, or a non-positive ``alpha``.
    """
    if isinstance(surrogate, Surrogate):
        if alpha is not None and alpha != surrogate.alpha:
            raise ValueError(
                f"alpha={alpha} was given together with a Surrogate object {surrogate}; set the "
                "sharpness on the object instead."
            )
        return surrogate
    if not isinstance(surrogate, str) or surrogate not in SURROGATES:
        raise ValueError(
            f"Unknown surrogate {surrogate!r}; choose one of {sorted(SURROGATES)} or pass a "
            "tks_jax.spiking.Surrogate instance."
        )
    cls = SURROGATES[surrogate]
    obj = cls() if alpha is None else cls(alpha=float(alpha))
    if not obj.alpha > 0:
        raise ValueError(f"Surrogate sharpness alpha must be > 0, got {obj.alpha}.")
    return obj


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _spike(x: Array, surrogate: Surrogate) -> Array:
    return (x > 0).astype(x.dtype)


def _spike_fwd(x, surrogate):
    return _spike(x, surrogate), x


def _spike_bwd(surrogate, x, g):
    return ((g * surrogate.grad(x)).astype(x.dtype),)


_spike.defvjp(_spike_fwd, _spike_bwd)


def spike(x: Array, surrogate: str | Surrogate = "qgate") -> Array:
    """Heaviside step with a surrogate gradient (``docs/method.md`` §2).

    Forward: ``1`` where ``x > 0`` (strict), else ``0``, in the dtype of ``x``. Backward:
    ``surrogate.grad(x)`` times the incoming cotangent.

    Args:
      x: any-shaped floating array, typically ``u - v_threshold``.
      surrogate: a name in ``SURROGATES`` or a ``Surrogate`` instance.

    Returns:
      Spikes with the shape and dtype of ``x``.

    References:
      Liu et al., Bi-Real Net, ECCV 2018 (the piecewise quadratic surrogate).
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"spike() needs a floating-point input, got dtype {x.dtype}.")
    return _spike(x, get_surrogate(surrogate))


# --------------------------------------------------------------------------------------------
# LIF neuron, multi-step.
# --------------------------------------------------------------------------------------------


# How ``lif`` computes its gradient (the ``backend`` argument):
# - "custom_vjp": one hand-written backward over the whole scan (below); stores only the
#   charged membrane. Needs Python-number ``tau`` and ``v_threshold``.
# - "scan": the per-step ``lax.scan`` differentiated by JAX; any ``tau``/``v_threshold``
#   (traced or learned ones too), with a per-step ``jax.checkpoint`` if ``remat``.
# - "auto" (default): "custom_vjp" when ``tau`` and ``v_threshold`` are Python numbers, else
#   "scan".
# Both give the same spikes and the same gradients up to rounding.
LIF_BACKENDS = ("auto", "custom_vjp", "scan")


def _is_number(v) -> bool:
    return isinstance(v, int | float)


def _check_lif_args(tau, v_threshold) -> None:
    # Only concrete Python numbers are checked; traced values are the caller's contract.
    if isinstance(tau, int | float) and not tau > 0:
        raise ValueError(f"LIF time constant tau must be > 0, got {tau}.")
    if isinstance(v_threshold, int | float) and not v_threshold > 0:
        raise ValueError(f"LIF threshold v_threshold must be > 0, got {v_threshold}.")


def lif_backend(backend: str, tau, v_threshold) -> str:
    """The LIF backend that ``lif`` runs: ``'custom_vjp'`` or ``'scan'`` (see ``LIF_BACKENDS``).

    Raises:
      ValueError: an unknown ``backend``, or ``'custom_vjp'`` with a ``tau`` or
        ``v_threshold`` that is not a Python number.
    """
    if backend not in LIF_BACKENDS:
        raise ValueError(f"Unknown LIF backend {backend!r}; choose one of {list(LIF_BACKENDS)}.")
    numbers = _is_number(tau) and _is_number(v_threshold)
    if backend == "auto":
        return "custom_vjp" if numbers else "scan"
    if backend == "custom_vjp" and not numbers:
        raise ValueError(
            "LIF backend 'custom_vjp' needs Python-number tau and v_threshold (they are static "
            f"in its backward), got tau={tau!r}, v_threshold={v_threshold!r}; use "
            "backend='scan' (or 'auto') for traced or learned values."
        )
    return backend


def lif(
    currents: Array,
    *,
    tau: float = 2.0,
    v_threshold: float = 0.5,
    surrogate: str | Surrogate = "qgate",
    detach_reset: bool = True,
    return_membrane: bool = False,
    unroll: int | bool = 1,
    remat: bool = False,
    backend: str = "auto",
) -> Array | tuple[Array, Array]:
    """Multi-step leaky integrate-and-fire neurons with hard reset (``docs/method.md`` §1).

    For t = 1..T, with ``u_0 = 0``::

        u_t = u_{t-1} + (I_t - u_{t-1}) / tau       # charge
        s_t = H(u_t - v_threshold)                  # fire (strict >)
        u_t = u_t * (1 - s_t)                       # hard reset to 0

    With ``detach_reset`` the reset path carries no gradient (``stop_gradient(s_t)``); the
    membrane itself is back-propagated through time in full.

    Args:
      currents: input currents ``[T, ...]``, time-major (``T >= 1``).
      tau: membrane time constant (> 0).
      v_threshold: firing threshold (> 0); not learned.
      surrogate: surrogate gradient of the spike (name or ``Surrogate``).
      detach_reset: stop the gradient through the reset (the paper's setting).
      return_membrane: also return the membrane after reset, ``[T, ...]`` (SpikingJelly's
        ``v_seq``).
      unroll: passed to ``jax.lax.scan`` (for the ``'custom_vjp'`` backend's forward only
        when ``T > UNROLLED_FORWARD_MAX_STEPS``; shorter sequences are unrolled fully).
      remat: rematerialise each step in the backward pass, trading compute for memory when
        T is large. The ``'custom_vjp'`` backend already stores only the charged membrane (one
        ``[T, ...]`` array) and recomputes spikes and surrogate slopes in the backward;
        ``remat`` matters for the ``'scan'`` backend (a ``jax.checkpoint`` per step). To also
        drop the conv/norm activations, rematerialise whole layers (the models' ``remat``).
      backend: how the gradient is computed, one of ``LIF_BACKENDS``: ``'custom_vjp'`` (a
        hand-written backward over the whole scan; Python-number ``tau`` and
        ``v_threshold`` only), ``'scan'`` (JAX autodiff of the per-step ``lax.scan``; any
        ``tau``/``v_threshold``, e.g. learned ones) or ``'auto'`` (default: ``'custom_vjp'``
        when both are Python numbers, else ``'scan'``). Same results up to rounding.

    Returns:
      Spikes ``[T, ...]`` in the dtype of ``currents``; with ``return_membrane`` a tuple
      ``(spikes, membranes)``, the membranes in ``membrane_dtype(currents.dtype)`` (the
      membrane integrates in at least float32, also for bfloat16 currents).

    Raises:
      ValueError: bad shape, non-positive ``tau``/``v_threshold``, unknown ``backend`` or
        ``'custom_vjp'`` with traced ``tau``/``v_threshold``.
      TypeError: non-floating currents.

    References:
      Dong, Zhao, Zeng, "Temporal Knowledge Sharing enable Spiking Neural Network Learning from
      Past and Future", arXiv 2304.06540, Eq. 1-2.
    """
    currents = jnp.asarray(currents)
    if currents.ndim < 1 or currents.shape[0] < 1:
        raise ValueError(
            f"lif() needs time-major currents [T, ...] with T >= 1, got shape {currents.shape}."
        )
    if not jnp.issubdtype(currents.dtype, jnp.floating):
        raise TypeError(f"lif() needs floating-point currents, got dtype {currents.dtype}.")
    _check_lif_args(tau, v_threshold)
    surrogate = get_surrogate(surrogate)
    # Membranes integrate in at least float32: a bfloat16 membrane (8 significant bits) would
    # round every step's charge and decay. The spikes are exactly 0/1 in any dtype and go back
    # to the currents' dtype; the casts carry the gradient.
    spike_dtype = currents.dtype
    currents = currents.astype(membrane_dtype(spike_dtype))
    if lif_backend(backend, tau, v_threshold) == "custom_vjp":
        # One custom VJP for the whole scan (same maths, one saved [T, ...] array, spikes and
        # slopes recomputed in the backward). It already stores no more than the per-step
        # remat of the scan would (one membrane per step), so ``remat`` takes it too.
        spikes, membranes = _lif_scan(
            currents, float(tau), float(v_threshold), surrogate, detach_reset,
            return_membrane, unroll,
        )
    else:
        spikes, membranes = _lif_autodiff(
            currents, tau, v_threshold, surrogate, detach_reset, unroll, remat
        )
    spikes = spikes.astype(spike_dtype)
    if return_membrane:
        return spikes, membranes
    return spikes


def membrane_dtype(dtype: Any) -> jnp.dtype:
    """The dtype LIF membranes integrate in for currents of ``dtype``: float32, or float64 for
    float64 currents (``jnp.promote_types(dtype, float32)``)."""
    return jnp.promote_types(dtype, jnp.float32)


def _lif_autodiff(
    currents: Array,
    tau: float | Array,
    v_threshold: float | Array,
    surrogate: Surrogate,
    detach_reset: bool,
    unroll: int | bool,
    remat: bool,
) -> tuple[Array, Array]:
    """The ``'scan'`` backend: a per-step ``lax.scan`` differentiated by JAX (Eq. 1-2), with a
    per-step ``jax.checkpoint`` if ``remat``; the reference of the ``'custom_vjp'`` backend in
    ``tests/test_perf_equivalence.py``.
    """
    dtype = currents.dtype

    def step(u: Array, current: Array) -> tuple[Array, tuple[Array, Array]]:
        u = u + (current - u) / jnp.asarray(tau, dtype)  # Eq. 1
        s = _spike(u - jnp.asarray(v_threshold, dtype), surrogate)  # Eq. 2
        reset = jax.lax.stop_gradient(s) if detach_reset else s
        u = u * (1 - reset)
        return u, (s, u)

    body: Callable = jax.checkpoint(step) if remat else step
    u0 = jnp.zeros(currents.shape[1:], dtype)
    _, (spikes, membranes) = jax.lax.scan(body, u0, currents, unroll=unroll)
    return spikes, membranes


# --------------------------------------------------------------------------------------------
# LIF with a hand-written backward over the whole scan (the ``'custom_vjp'`` backend).
#
# Autodiff of the per-step scan saves several [T, ...] arrays per layer (the spike function's
# input, the reset mask, the membrane before and after reset) and runs a generic reverse loop.
# The backward of Eq. 1-2 needs only the charged membrane h_t (before reset): from it the
# spike s_t = H(h_t - v_th) and the surrogate slope are recomputed. With g_s, g_u the incoming
# cotangents of s_t and of the membrane after reset u_t (carried back in time):
#
#     g_h     = g_s * sg(h_t - v_th) + g_u * (1 - s_t)           # detach_reset
#     g_h     = g_h - g_u * h_t * sg(h_t - v_th)                 # without detach_reset
#     g_I_t   = g_h / tau,    g_u_{t-1} = g_h - g_h / tau        # Eq. 1
#
# The arithmetic mirrors what autodiff of ``step`` computes, so gradients agree to rounding
# (tests/test_perf_equivalence.py).
# --------------------------------------------------------------------------------------------


# Sequences up to this many steps run the LIF forward scan fully unrolled (``unroll=True``:
# straight-line code, no loop): XLA:CPU writes a loop's per-step output with an in-place update
# that runs as a single task (one core), while each unrolled step is an elementwise kernel
# spread over all cores. On the training step (benchmarks/README.md, "Cores kept busy"):
# ResNet-19 (T = 4) a little faster with bitwise equal results, VGG-SNN (T = 10) a little
# faster with less XLA temporary memory. The backward stays a loop: unrolled, XLA kept far
# more of it alive.
UNROLLED_FORWARD_MAX_STEPS = 16


def lif_forward(
    currents: Array, tau: float, v_threshold: float, unroll: int | bool = 1,
    u0: Array | None = None,
) -> tuple[Array, Array, Array]:
    """The LIF forward without gradient rules (Eq. 1-2), for hand-written backward passes.

    Args:
      currents: ``[T, ...]``.
      tau, v_threshold: Python numbers (or arrays) of ``lif``.
      unroll: passed to ``jax.lax.scan`` when ``T > UNROLLED_FORWARD_MAX_STEPS`` (shorter
        sequences are unrolled fully; the same arithmetic).
      u0: membrane before the first step ``[...]`` (default 0), e.g. the one a previous chunk
        of time left.

    Returns:
      ``(spikes [T, ...], charged membranes before reset [T, ...], membrane after the last
      step [...])``: the spikes in the dtype of ``currents``, the membranes in
      ``membrane_dtype(currents.dtype)``.
    """
    dtype = membrane_dtype(currents.dtype)
    tau_, vth_ = jnp.asarray(tau, dtype), jnp.asarray(v_threshold, dtype)

    def fire(h):
        return (h - vth_ > 0).astype(dtype)  # Eq. 2, strict

    def step(u, current):
        h = u + (current.astype(dtype) - u) / tau_  # Eq. 1
        return h * (1 - fire(h)), h

    start = jnp.zeros(currents.shape[1:], dtype) if u0 is None else u0.astype(dtype)
    if currents.shape[0] <= UNROLLED_FORWARD_MAX_STEPS:
        unroll = True
    u_end, charged = jax.lax.scan(step, start, currents, unroll=unroll)
    # The spikes are recomputed from the charged membranes after the recurrence (the same
    # comparison): a scan's per-step outputs are written with a single-threaded in-place
    # update, and outside it the comparison fuses into the spikes' consumers.
    return fire(charged).astype(currents.dtype), charged, u_end


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5, 6))
def _lif_scan(currents, tau, v_threshold, surrogate, detach_reset, with_membrane, unroll):
    spikes, charged, _ = lif_forward(currents, tau, v_threshold, unroll)
    return spikes, (charged * (1 - spikes) if with_membrane else None)


def _lif_scan_fwd(currents, tau, v_threshold, surrogate, detach_reset, with_membrane, unroll):
    spikes, charged, _ = lif_forward(currents, tau, v_threshold, unroll)
    membranes = charged * (1 - spikes) if with_membrane else None
    return (spikes, membranes), charged


def _lif_scan_bwd(tau, v_threshold, surrogate, detach_reset, with_membrane, unroll, charged, g):
    g_spikes, g_membranes = g
    g_currents, _ = lif_backward(
        tau, v_threshold, surrogate, detach_reset, unroll, charged, g_spikes, g_membranes
    )
    return (g_currents,)


def lif_backward(
    tau: float, v_threshold: float, surrogate: Surrogate, detach_reset: bool,
    unroll: int | bool, charged: Array, g_spikes: Array, g_membranes: Array | None = None,
    g_u_end: Array | None = None,
) -> tuple[Array, Array]:
    """The backward of Eq. 1-2 above over ``[T, ...]``: ``(g_currents, g_u0)``.

    Args:
      tau, v_threshold, surrogate, detach_reset, unroll: as ``lif``.
      charged: the charged membranes of ``lif_forward`` ``[T, ...]``.
      g_spikes: cotangent of the spikes ``[T, ...]``.
      g_membranes: cotangent of the membranes after reset ``[T, ...]``, or None.
      g_u_end: cotangent of the membrane after the last step (from a later chunk of time;
        default 0).

    Returns:
      ``(g_currents [T, ...], g_u0 [...])``, ``g_u0`` the cotangent of the membrane before the
      first step.
    """
    dtype = charged.dtype
    tau_, vth_ = jnp.asarray(tau, dtype), jnp.asarray(v_threshold, dtype)

    def step(g_u, inputs):
        g_s, g_m, h = inputs
        if g_m is not None:
            g_u = g_u + g_m
        x = h - vth_
        s = (x > 0).astype(dtype)
        slope = surrogate.grad(x).astype(dtype)
        g_h = g_s * slope + g_u * (1 - s)
        if not detach_reset:
            g_h = g_h - (g_u * h) * slope
        g_current = g_h / tau_
        return g_h - g_h / tau_, g_current

    g0 = jnp.zeros(charged.shape[1:], dtype) if g_u_end is None else g_u_end
    g_u0, g_currents = jax.lax.scan(
        step, g0, (g_spikes, g_membranes, charged), reverse=True, unroll=unroll
    )
    return g_currents, g_u0


_lif_scan.defvjp(_lif_scan_fwd, _lif_scan_bwd)
