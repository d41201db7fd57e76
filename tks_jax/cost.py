"""What inference costs: synaptic operations, dense MACs and an energy estimate, per step and image.

Method: ``docs/method.md`` §12 (anytime inference and its cost). Every ``layers.Conv`` and
``layers.Linear`` of a model is counted from the input it actually receives (captured with
``flax.linen.intercept_methods``, so models need no counters of their own):

- Spike-driven layers (every layer reading spikes, or tensors made of spikes by average
  pooling or SEW addition) cost accumulates (AC): each nonzero input entry, an event, drives
  every synapse it is connected to, once. For a conv (kernel k, stride s, padding k // 2), an
  event at input position (h, w) drives ``C_out * f_H(h) * f_W(w)`` synapses, where ``f(h)``
  counts the kernel taps whose output position lies inside the output map (``fanout_1d``), so
  borders and strides are exact; for a dense layer it drives ``C_out`` synapses. On binary
  spikes this is exactly "each spike times the synapses it drives".
- The encoding layer on real-valued input (the first layer of a static image, computed once
  for all steps under direct encoding, so its MACs are charged to step 1; or the first layer of
  non-binary event frames, every step) and the read-out (the last dense layer, whose output
  is the logits) cost dense multiply-accumulates (MAC): ``H_out * W_out * C_out * k * k *
  C_in`` per step for a conv, ``in * out`` for a dense layer.

Energy = ACs x ``e_ac_pj`` + MACs x ``e_mac_pj`` (``EnergyModel``; defaults 0.9 pJ and 4.6 pJ,
32-bit float add and multiply-add in 45 nm CMOS: M. Horowitz, "Computing's energy problem (and
what we can do about it)", ISSCC 2014). Not counted: neuron updates, normalisation (folded into
the conv weights at inference), pooling, memory traffic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tks_jax.models import layers

Array = jax.Array

AC, MAC = "ac", "mac"


@dataclasses.dataclass(frozen=True)
class EnergyModel:
    """Energy per operation in picojoules (configurable; see the module docstring)."""

    e_ac_pj: float = 0.9
    e_mac_pj: float = 4.6
    source: str = "Horowitz, ISSCC 2014, 45 nm, 32-bit float"

    def __post_init__(self):
        for name in ("e_ac_pj", "e_mac_pj"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
                raise ValueError(f"EnergyModel.{name} must be a number >= 0 (pJ), got {v!r}.")

    def per_op(self, kind: str) -> float:
        """pJ per operation of ``kind`` (``'ac'`` or ``'mac'``)."""
        return self.e_ac_pj if kind == AC else self.e_mac_pj


def fanout_1d(size: int, kernel: int, stride: int, pad: int) -> np.ndarray:
    """Taps per input position along one axis whose output position is inside the output map.

    ``f[h] = #{(o, i): 0 <= o < out, 0 <= i < kernel, o * stride - pad + i = h}`` with
    ``out = (size + 2 * pad - kernel) // stride + 1``.

    Returns:
      int64 ``[size]``.
    """
    for name, v in (("size", size), ("kernel", kernel), ("stride", stride)):
        if v < 1:
            raise ValueError(f"fanout_1d: {name} must be >= 1, got {v}.")
    if pad < 0:
        raise ValueError(f"fanout_1d: pad must be >= 0, got {pad}.")
    out = (size + 2 * pad - kernel) // stride + 1
    f = np.zeros(size, np.int64)
    for o in range(max(out, 0)):
        for i in range(kernel):
            h = o * stride - pad + i
            if 0 <= h < size:
                f[h] += 1
    return f


def conv_fanout(height: int, width: int, kernel: int, stride: int, pad: int) -> np.ndarray:
    """Taps per input position of a 2-D conv, ``[H, W]`` (the outer product of ``fanout_1d``)."""
    return np.outer(fanout_1d(height, kernel, stride, pad), fanout_1d(width, kernel, stride, pad))


@dataclasses.dataclass
class _Record:
    path: str
    layer: str  # "conv" | "linear"
    x: Array
    y_shape: tuple[int, ...]
    features: int
    kernel: int = 1
    stride: int = 1


def capture_layer_inputs(
    model: nn.Module, variables: Mapping, x: Array, num_steps: int
) -> tuple[Array, list[_Record]]:
    """Runs the model in inference mode and records the input of every Conv and Linear call.

    Returns:
      ``(logits [T, B, C], records)`` in call order. Traceable (call it inside ``jax.jit``).
    """
    if getattr(model, "remat", False):
        model = model.clone(remat=False)  # same variables; nn.remat would trace separately
    records: list[_Record] = []

    def interceptor(next_fun, args, kwargs, context):
        y = next_fun(*args, **kwargs)
        mod = context.module
        if context.method_name == "__call__" and isinstance(mod, layers.Conv | layers.Linear):
            path = "/".join(mod.path)
            if isinstance(mod, layers.Conv):
                records.append(_Record(path, "conv", args[0], tuple(y.shape), mod.features,
                                       mod.kernel_size, mod.strides))
            else:
                records.append(_Record(path, "linear", args[0], tuple(y.shape), mod.features))
        return y

    with nn.intercept_methods(interceptor):
        logits = model.apply(variables, x, num_steps=num_steps, train=False)
    return logits, records


def _dense_macs(rec: _Record) -> int:
    """Dense MACs of one step and image."""
    if rec.layer == "conv":
        h_out, w_out = rec.y_shape[-3], rec.y_shape[-2]
        return h_out * w_out * rec.features * rec.kernel * rec.kernel * rec.x.shape[-1]
    return rec.x.shape[-1] * rec.features


def _event_synops(rec: _Record) -> Array:
    """Synaptic operations ``[T, B]`` of a spike-driven layer (events times fan-out)."""
    events = (jax.lax.stop_gradient(rec.x) != 0).astype(jnp.float32)
    if rec.layer == "linear":
        return rec.features * jnp.sum(events.reshape(events.shape[:2] + (-1,)), axis=-1)
    fan = conv_fanout(rec.x.shape[-3], rec.x.shape[-2], rec.kernel, rec.stride, rec.kernel // 2)
    per_pos = jnp.sum(events, axis=-1)  # events over channels, [T, B, H, W]
    return rec.features * jnp.einsum("tbhw,hw->tb", per_pos, jnp.asarray(fan, jnp.float32))


def layer_ops(
    model: nn.Module, variables: Mapping, x: Array, num_steps: int, *,
    input_spikes: bool | None = None,
) -> tuple[Array, dict[str, dict[str, Array]]]:
    """Operations per layer, step and image (see the module docstring for what is counted).

    Args:
      model: a zoo model (or any module made of ``layers.Conv`` / ``layers.Linear``).
      variables: its variables.
      x: static images ``[B, H, W, C]`` or frames ``[T, B, H, W, C]``.
      num_steps: T.
      input_spikes: whether the model input is spikes (its first layer then costs ACs). None:
        static images are real-valued; frames are spikes when every entry is 0 or 1 (decided
        on the concrete input, so pass it explicitly under ``jax.jit``).

    Returns:
      ``(logits [T, B, C], {'ac': {layer_path: [T, B]}, 'mac': {layer_path: [T, B]}})``,
      float32 counts per step and image, layers in call order within each kind. Traceable
      (and returnable from ``jax.jit``) once ``input_spikes`` is given.

    Raises:
      ValueError: ``input_spikes`` is None for traced frames.
    """
    x = jnp.asarray(x)
    if input_spikes is None:
        if x.ndim != 5:
            input_spikes = False
        elif isinstance(x, jax.core.Tracer):
            raise ValueError(
                "layer_ops: cannot tell whether traced event frames are spikes; pass "
                "input_spikes=True (binary frames) or False (real-valued) under jax.jit."
            )
        else:
            input_spikes = bool(jnp.all((x == 0) | (x == 1)))
    logits, records = capture_layer_inputs(model, variables, x, num_steps)
    return logits, ops_from_records(records, logits.shape[0], input_spikes=input_spikes)


def ops_from_records(
    records: list[_Record], num_steps: int, *, input_spikes: bool
) -> dict[str, dict[str, Array]]:
    """``layer_ops``'s counts from ``capture_layer_inputs``'s records (``num_steps`` = T)."""
    if not records:
        return {AC: {}, MAC: {}}
    x0 = records[0].x
    t, b = num_steps, (x0.shape[0] if x0.ndim == 4 else x0.shape[1])
    last_linear = max((i for i, r in enumerate(records) if r.layer == "linear"), default=None)
    out: dict[str, dict[str, Array]] = {AC: {}, MAC: {}}
    seen: set[str] = set()
    for i, rec in enumerate(records):
        static = rec.x.ndim == 4 and rec.layer == "conv"  # run once for all steps
        if (i == 0 and not input_spikes) or i == last_linear:
            per_step = jnp.full((1 if static else t, b), float(_dense_macs(rec)), jnp.float32)
            ops, kind = per_step, MAC
        else:
            if static:
                raise ValueError(f"layer_ops: layer {rec.path} reads a static input but is not "
                                 "the first layer; cannot attribute its cost to steps.")
            ops, kind = _event_synops(rec), AC
        if ops.shape[0] == 1 and t > 1:  # computed once, charged to step 1
            ops = jnp.concatenate([ops, jnp.zeros((t - 1, b), jnp.float32)])
        name = rec.path
        while name in seen:  # a module called twice
            name += "'"
        seen.add(name)
        out[kind][name] = ops
    return out


def energy_per_step(ops: Mapping[str, Mapping[str, Array]], energy: EnergyModel) -> Array:
    """Energy ``[T, B]`` in pJ of each step and image from ``layer_ops``'s counts (a scalar 0
    when no layer was counted)."""
    return sum(
        (jnp.asarray(v) * energy.per_op(kind) for kind in (AC, MAC) for v in ops[kind].values()),
        jnp.zeros((), jnp.float32),
    )


def summarize(
    ops_sum: Mapping[str, Mapping[str, Any]], energy_steps: np.ndarray,
    steps: np.ndarray | None = None, energy: EnergyModel | None = None,
) -> dict[str, Any]:
    """Cost report of a split: per layer, total, at every k and under an exit rule.

    Args:
      ops_sum: ``{'ac': {layer: [T]}, 'mac': {layer: [T]}}``, ``layer_ops``'s counts summed
        over all N images (the batch axis).
      energy_steps: ``[T, N]`` pJ per step and image (``energy_per_step``, concatenated).
      steps: ``[N]`` exit steps of the rule (1-based), or None.
      energy: the constants used (recorded in the report).

    Returns:
      A JSON-able dict: ``per_layer`` (``{layer: {'kind', 'ops_per_image'}}`` over all T
      steps), ``synops_per_image``, ``macs_per_image`` (all T steps),
      ``energy_pj_first_k`` (list over k = 1..T: mean pJ per image running the first k
      steps), ``energy_pj_exit`` (mean pJ per image under the exit rule, if ``steps``), and
      the constants.
    """
    energy = energy or EnergyModel()
    energy_steps = np.asarray(energy_steps, np.float64)
    t, n = energy_steps.shape
    per_layer = {
        name: {"kind": kind, "ops_per_image": float(np.sum(v) / max(n, 1))}
        for kind in (AC, MAC) for name, v in ops_sum.get(kind, {}).items()
    }
    cum = np.cumsum(energy_steps, axis=0)  # [T, N]: energy of the first k steps
    report = {
        "per_layer": per_layer,
        "synops_per_image": sum(v["ops_per_image"] for v in per_layer.values()
                                if v["kind"] == AC),
        "macs_per_image": sum(v["ops_per_image"] for v in per_layer.values()
                              if v["kind"] == MAC),
        "energy_pj_first_k": cum.mean(axis=1).tolist(),
        "energy_constants": dataclasses.asdict(energy),
    }
    if steps is not None:
        steps = np.asarray(steps)
        if steps.shape != (n,) or steps.min() < 1 or steps.max() > t:
            raise ValueError(f"summarize: steps must be [N={n}] in 1..{t}, got {steps.shape}.")
        report["energy_pj_exit"] = float(cum[steps - 1, np.arange(n)].mean())
    return report


def exit_energy(energy_steps: Array, steps: Array) -> Array:
    """Energy per image ``[B]`` (pJ) when sample b runs its first ``steps[b]`` steps only."""
    energy_steps = jnp.asarray(energy_steps)
    t = energy_steps.shape[0]
    mask = jnp.arange(1, t + 1)[:, None] <= jnp.asarray(steps)[None, :]
    return jnp.sum(jnp.where(mask, energy_steps, 0.0), axis=0)


def total_ops(ops: Mapping[str, Mapping[str, Array]]) -> dict[str, float]:
    """Total ACs and MACs per image over all steps (concrete ``layer_ops`` output)."""
    def per_image(kind):
        return sum(float(np.asarray(v).sum() / np.asarray(v).shape[1])
                   for v in ops[kind].values())
    return {"synops": per_image(AC), "macs": per_image(MAC)}


__all__ = [
    "AC",
    "MAC",
    "EnergyModel",
    "capture_layer_inputs",
    "conv_fanout",
    "energy_per_step",
    "exit_energy",
    "fanout_1d",
    "layer_ops",
    "ops_from_records",
    "summarize",
    "total_ops",
]
