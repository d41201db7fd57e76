"""Streaming inference: run a zoo model one time step at a time, carrying its state.

Method: ``docs/method.md`` §12 (anytime inference). The networks are causal, so stepping
``step`` T times gives the per-step logits of ``model.apply(variables, x, num_steps=T,
train=False)``, one step at a time, and a deployment can stop each sample as soon as
``tks_jax.anytime``'s exit rule is met. Usage::

    state = inference.init_state(model, variables, x_t)
    for t in range(T):
        logits_t, state = inference.step(model, variables, state, x_t)   # [B, C]

The state is a pytree: ``{'lif_state': {...}, 't': int32}`` with every LIF layer's membrane
(``[B, ...]`` after reset) and every TEBN norm's step counter in the ``lif_state`` collection
(``models.layers.STREAM_STATE``), and ``t`` the number of steps taken. Inference mode: the
norms use their running statistics. For static images feed the same image at every step
(direct encoding); for events feed frame t. Both ``init_state`` and ``step`` are pure and
jit-able (``model`` static). Each step recomputes the first conv and norm of a static image
(the all-steps model computes them once); the results are the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tks_jax.models import layers

Array = jax.Array
STATE = layers.STREAM_STATE


def _plain(model: nn.Module) -> nn.Module:
    # Rematerialisation only matters for training; the same variables without it.
    return model.clone(remat=False) if getattr(model, "remat", False) else model


def _frame(x_t: Any, name: str) -> Array:
    x_t = jnp.asarray(x_t)
    if x_t.ndim != 4:
        raise ValueError(
            f"{name}: x_t must be one step's input [B, H, W, C] (a static image or one event "
            f"frame), got shape {x_t.shape}; for event frames [T, B, H, W, C] pass x[t]."
        )
    return x_t[None]  # [1, B, H, W, C]: a run of one step


def _model_variables(variables: Mapping) -> dict:
    return {k: v for k, v in variables.items() if k not in (STATE, "intermediates")}


def init_state(model: nn.Module, variables: Mapping, x: Any) -> dict[str, Any]:
    """The state before the first step: zero membranes, TEBN step counters at 0.

    Args:
      model: a zoo model (``tks_jax.models.get_model``).
      variables: its variables (``params``, ``batch_stats``).
      x: one step's input ``[B, H, W, C]`` (only its shape and dtype are used).

    Returns:
      ``{'lif_state': {...}, 't': 0}``.
    """
    x1 = _frame(x, "init_state")
    model = _plain(model)

    def run(v, x1):
        return model.apply(v, x1, num_steps=1, train=False, mutable=[STATE])[1]

    shapes = jax.eval_shape(run, _model_variables(variables), x1)
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes[STATE])
    return {STATE: zeros, "t": jnp.zeros((), jnp.int32)}


def step(
    model: nn.Module, variables: Mapping, state: Mapping[str, Any], x_t: Any
) -> tuple[Array, dict[str, Any]]:
    """One time step of the model from ``state``.

    Args:
      model: the zoo model.
      variables: its variables.
      state: from ``init_state`` or the previous ``step``.
      x_t: this step's input ``[B, H, W, C]``.

    Returns:
      ``(logits_t [B, num_classes] float32, new state)``.

    Raises:
      ValueError: wrong input rank; a TEBN model stepped past its number of per-step scales
        (checked when ``state['t']`` is concrete, i.e. outside ``jax.jit``; under jit the
        scales of the last step are reused).
    """
    x1 = _frame(x_t, "step")
    max_steps = getattr(model, "num_steps", None) if getattr(model, "norm", None) == "tebn" \
        else None
    t = state["t"]
    if max_steps is not None and not isinstance(t, jax.core.Tracer) and int(t) >= max_steps:
        raise ValueError(
            f"This TEBN model has {max_steps} per-step scales and has already run {int(t)} "
            "steps; it cannot run further (build it with a larger num_steps)."
        )
    v = dict(_model_variables(variables))
    v[STATE] = state[STATE]
    logits, new = _plain(model).apply(v, x1, num_steps=1, train=False, mutable=[STATE])
    return logits[0], {STATE: new[STATE], "t": t + 1}


def run_steps(
    model: nn.Module, variables: Mapping, x: Any, num_steps: int
) -> Array:
    """All ``num_steps`` steps through ``step`` in a ``lax.scan``: logits ``[T, B, C]``.

    ``x`` is a static batch ``[B, H, W, C]`` (fed at every step) or frames ``[T, B, H, W, C]``.
    """
    x = jnp.asarray(x)
    frames = x if x.ndim == 5 else jnp.broadcast_to(x[None], (num_steps,) + x.shape)
    if frames.shape[0] != num_steps:
        raise ValueError(f"run_steps: {frames.shape[0]} frames for num_steps={num_steps}.")
    state = init_state(model, variables, frames[0])

    def body(state, x_t):
        logits, state = step(model, variables, state, x_t)
        return state, logits

    return jax.lax.scan(body, state, frames)[1]
