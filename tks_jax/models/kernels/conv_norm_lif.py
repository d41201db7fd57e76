"""A conv-norm-LIF unit computed a few time steps at a time (the models' memory-saving path).

``nn.remat`` of a conv-norm-LIF unit stores only the unit's input, but its backward pass still
materialises the whole ``[T*B, H, W, C]`` conv output, normalised currents, membranes and their
gradients at once: at large T the largest VGG-SNN unit keeps five ``[T*B, H, W, C]`` arrays
alive. Here the unit runs over chunks of ``Tc`` steps (``lax.scan``), so only one chunk of those is
alive at a time. BatchNorm's statistics over the whole ``T*B`` batch are why it takes several
passes (same maths as ``Norm`` + ``LIF`` on the whole batch; ``docs/method.md`` §1 and §6):

forward
  1. per chunk: ``z = conv(x)``; accumulate ``sum z`` and ``sum z^2`` per channel
     -> batch mean and (biased) variance, as flax's BatchNorm computes them;
  2. per chunk: ``z = conv(x)``, ``y = (z - mean) * rsqrt(var + eps) * scale + bias``
     (TEBN: ``* p_t``), LIF from the membrane the previous chunk left; keep that membrane.

backward (given the spikes' cotangent)
  3. chunks in reverse: recompute ``z``, ``y`` and the charged membrane from the kept one;
     LIF backward with the membrane cotangent of the later chunk -> ``g_y`` (kept, written
     over the spikes' cotangent chunk by chunk), and the sums ``sum g_y`` (= d bias),
     ``sum g_y * xhat`` (= d scale);
  4. per chunk: ``z, vjp = vjp(conv)``; BatchNorm's input gradient
     ``g_z = rstd * (g_xhat - mean(g_xhat) - xhat * mean(g_xhat * xhat))`` with
     ``g_xhat = g_y * scale``; ``vjp(g_z)`` gives the input gradient and the kernel's.

Cost: two more convolution forwards per unit than ``nn.remat`` (the models therefore take
this path only for units whose output spans several chunks; measured in ``benchmarks/``).
Checked against the whole-batch unit (values, running statistics, gradients) in
``tests/test_perf_equivalence.py``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from tks_jax import spiking
from tks_jax.models.kernels import chunking, conv

Array = jax.Array

# Default bytes of one chunk's conv output: bounds the live transients of the unit. 96 MB
# takes the 48x48x128 VGG-SNN unit at B = 16 four steps at a time.
CHUNK_BYTES = 96 * 2**20


def chunk_steps(num_steps: int, bytes_per_step: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """The largest divisor of ``num_steps`` whose chunk stays within ``chunk_bytes`` (>= 1)."""
    return chunking.chunk_size(num_steps, bytes_per_step, chunk_bytes)


def _conv(x: Array, kernel: Array, spec: tuple) -> Array:
    """The models' convolution (``conv.conv_general_dilated``) on a time-major chunk
    ``[Tc, B, H, W, C]``."""
    strides, pad, algorithm = spec
    tc, b = x.shape[:2]
    xf = x.reshape((tc * b,) + x.shape[2:])
    dn = jax.lax.conv_dimension_numbers(xf.shape, kernel.shape, ("NHWC", "HWIO", "NHWC"))
    y = conv.conv_general_dilated(
        xf, kernel, (strides, strides), ((pad, pad), (pad, pad)), None, None, dn,
        algorithm=algorithm,
    )
    return y.reshape((tc, b) + y.shape[1:])


def _chunks(a: Array, k: int) -> Array:
    """``[T, ...] -> [k, T // k, ...]``."""
    return chunking.split(a, a.shape[0] // k)


def _steps(p: Array | None) -> Array | None:
    return None if p is None else p.reshape((-1, 1, 1, 1, 1))


def _sum(a: Array) -> Array:
    return jnp.sum(a, axis=tuple(range(a.ndim - 1)))


def _forward(x, kernel, scale, bias, step_scale, statics):
    spec, eps, tau, v_threshold, surrogate, detach_reset, k = statics
    del surrogate, detach_reset

    def stats(xc):
        z = _conv(xc, kernel, spec)
        return _sum(z), _sum(jnp.square(z))

    s1, s2 = chunking.sum_over_chunks(stats, (x,), x.shape[0] // k)
    out_shape = jax.eval_shape(lambda a: _conv(a, kernel, spec), x[:1]).shape
    n = x.shape[0] * x.shape[1] * out_shape[2] * out_shape[3]
    # docs/method.md §6: BatchNorm statistics over (T, B, H, W) per channel, the biased variance
    # as flax's BatchNorm computes it (mean of squares minus squared mean, clipped at 0).
    mean = s1 / n
    var = jnp.maximum(0.0, s2 / n - jnp.square(mean))
    mul = jax.lax.rsqrt(var + eps) * scale

    def run(u, inputs):
        xc, pc = inputs
        # §6: gamma * (z - mean) / sqrt(var + eps) + beta, in flax's order of operations
        # (the backward recomputes it the same way, so the recomputed spikes are identical).
        y = (_conv(xc, kernel, spec) - mean) * mul + bias
        if pc is not None:
            y = y * _steps(pc)  # TEBN: step t times p_t
        s, _, u_end = spiking.lif_forward(y, tau, v_threshold, 1, u0=u)  # Eq. 1-2
        return u_end, (s, u)

    u0 = jnp.zeros(out_shape[1:], x.dtype)
    ps = None if step_scale is None else step_scale.reshape(k, -1)
    _, (spikes, starts) = jax.lax.scan(run, u0, (_chunks(x, k), ps))
    return spikes.reshape((x.shape[0],) + spikes.shape[2:]), mean, var, starts


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _unit(x, kernel, scale, bias, step_scale, statics):
    spikes, mean, var, _ = _forward(x, kernel, scale, bias, step_scale, statics)
    return spikes, mean, var


def _unit_fwd(x, kernel, scale, bias, step_scale, statics):
    spikes, mean, var, starts = _forward(x, kernel, scale, bias, step_scale, statics)
    return (spikes, mean, var), (x, kernel, scale, bias, step_scale, mean, var, starts)


def _unit_bwd(statics, res, cts):
    spec, eps, tau, v_threshold, surrogate, detach_reset, k = statics
    x, kernel, scale, bias, step_scale, mean, var, starts = res
    g_spikes = cts[0]  # the batch statistics only feed the running averages: no gradient
    rstd = jax.lax.rsqrt(var + eps)
    mul = rstd * scale
    xs, ps = _chunks(x, k), None if step_scale is None else step_scale.reshape(k, -1)

    def lif_back(i, carry):
        # Chunk c = k-1-i; g_y_c overwrites g_s_c in the carried buffer (an in-place update:
        # the cotangent of the spikes and g_y never both take a [T, ...] array).
        g_u, d_bias, d_scale, g_buf, g_p = carry
        c = k - 1 - i
        at = functools.partial(jax.lax.dynamic_index_in_dim, index=c, keepdims=False)
        xc, u_start, g_s = at(xs), at(starts), at(g_buf)
        pc = None if ps is None else at(ps)
        z = _conv(xc, kernel, spec)
        xhat = (z - mean) * rstd
        y = (z - mean) * mul + bias  # exactly as in the forward pass
        yp = y if pc is None else y * _steps(pc)
        _, charged, _ = spiking.lif_forward(yp, tau, v_threshold, 1, u0=u_start)
        g_yp, g_u = spiking.lif_backward(  # Eq. 1-2 backward, membrane carried across chunks
            tau, v_threshold, surrogate, detach_reset, 1, charged, g_s, None, g_u
        )
        if pc is None:
            g_y = g_yp
        else:
            g_y = g_yp * _steps(pc)
            g_pc = jnp.sum(g_yp * y, axis=tuple(range(1, y.ndim)))
            g_p = jax.lax.dynamic_update_index_in_dim(g_p, g_pc, c, 0)
        g_buf = jax.lax.dynamic_update_index_in_dim(g_buf, g_y.astype(g_buf.dtype), c, 0)
        return (g_u, d_bias + _sum(g_y), d_scale + _sum(g_y * xhat), g_buf, g_p)

    zeros = jnp.zeros((kernel.shape[-1],), jnp.float32)
    g_p0 = None if ps is None else jnp.zeros_like(ps)
    _, d_bias, d_scale, g_y, g_p = jax.lax.fori_loop(
        0, k, lif_back,
        (jnp.zeros(starts.shape[1:], starts.dtype), zeros, zeros, _chunks(g_spikes, k), g_p0),
    )
    n = g_y.shape[0] * g_y.shape[1] * g_y.shape[2] * g_y.shape[3] * g_y.shape[4]
    mean_g = scale * d_bias / n  # mean of g_xhat
    mean_gx = scale * d_scale / n  # mean of g_xhat * xhat

    def conv_back(d_kernel, inputs):
        xc, g_yc = inputs
        z, vjp = jax.vjp(lambda a, w: _conv(a, w, spec), xc, kernel)
        xhat = (z - mean) * rstd
        # BatchNorm's input gradient through the batch statistics (§6 differentiated).
        g_z = rstd * (g_yc * scale - mean_g - xhat * mean_gx)
        g_x, g_k = vjp(g_z.astype(z.dtype))
        return d_kernel + g_k, g_x

    d_kernel, g_x = jax.lax.scan(conv_back, jnp.zeros_like(kernel), (_chunks(x, k), g_y))
    g_x = g_x.reshape(x.shape)
    d_p = None if step_scale is None else g_p.reshape(step_scale.shape)
    return g_x, d_kernel, d_scale, d_bias, d_p


_unit.defvjp(_unit_fwd, _unit_bwd)


def conv_norm_lif(
    x: Array,
    kernel: Array,
    scale: Array,
    bias: Array,
    step_scale: Array | None,
    *,
    strides: int,
    padding: int,
    algorithm: str,
    epsilon: float,
    tau: float,
    v_threshold: float,
    surrogate: spiking.Surrogate,
    detach_reset: bool,
    steps_per_chunk: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> tuple[Array, Array, Array]:
    """``LIF(BN(conv(x)))`` with batch statistics, a few time steps at a time.

    Args:
      x: ``[T, B, H, W, Cin]`` float32.
      kernel: ``[k, k, Cin, Cout]``.
      scale, bias: BatchNorm's ``[Cout]`` parameters.
      step_scale: TEBN's per-step scales ``[T]``, or None.
      strides, padding, algorithm: the convolution's (``conv.conv_general_dilated``).
      epsilon: BatchNorm's epsilon.
      tau, v_threshold, surrogate, detach_reset: the LIF's (Python numbers).
      steps_per_chunk: ``Tc`` (a divisor of T); default from ``chunk_bytes``.
      chunk_bytes: bytes of one chunk's conv output (float32), when ``steps_per_chunk`` is
        None.

    Returns:
      ``(spikes [T, B, H', W', Cout], batch mean [Cout], batch variance [Cout])``; the
      statistics carry no gradient (they feed the running averages).
    """
    num_steps = x.shape[0]
    out = jax.eval_shape(lambda a: _conv(a, kernel, (strides, padding, algorithm)), x[:1])
    if steps_per_chunk is None:
        steps_per_chunk = chunk_steps(num_steps, out.size * 4, chunk_bytes)
    if num_steps % steps_per_chunk:
        raise ValueError(f"steps_per_chunk={steps_per_chunk} does not divide T={num_steps}.")
    statics = (
        (strides, padding, algorithm), float(epsilon), float(tau), float(v_threshold),
        surrogate, bool(detach_reset), num_steps // steps_per_chunk,
    )
    spikes, mean, var = _unit(x, kernel, scale, bias, step_scale, statics)
    return spikes, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
