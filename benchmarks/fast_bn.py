"""Prototype: training-mode BatchNorm with a hand-written backward that saves only its input.

Autodiff of ``flax.linen.BatchNorm`` keeps several full-size arrays alive until the backward
(the centred input, the normalised input, ...). The backward below needs only ``x`` and the
per-channel mean and inverse standard deviation; ``x_hat`` is recomputed. Statistics over all
axes but the last (the folded ``T*B*H*W`` batch: tdBN, docs/method.md §6).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x, scale, bias, epsilon):
    """Returns ``(y, mean, var)``: ``y = (x - mean) / sqrt(var + eps) * scale + bias``."""
    return _bn_fwd(x, scale, bias, epsilon)[0]


def _stats(x):
    axes = tuple(range(x.ndim - 1))
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axes)
    var = jnp.maximum(jnp.mean(jnp.square(xf), axes) - jnp.square(mean), 0.0)
    return mean, var


def _bn_fwd(x, scale, bias, epsilon):
    mean, var = _stats(x)
    inv = jax.lax.rsqrt(var + epsilon)
    y = ((x.astype(jnp.float32) - mean) * (inv * scale) + bias).astype(x.dtype)
    return (y, mean, var), (x, mean, inv, scale)


def _bn_bwd(epsilon, res, cts):
    x, mean, inv, scale = res
    g, g_mean, g_var = cts
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    xc = x.astype(jnp.float32) - mean
    g = g.astype(jnp.float32)
    d_bias = jnp.sum(g, axes)
    d_scale = jnp.sum(g * xc, axes) * inv
    dx = (scale * inv / n) * (n * g - d_bias - xc * (inv * d_scale))
    dx = dx + g_mean / n + g_var * 2.0 * xc / n
    return dx.astype(x.dtype), d_scale, d_bias


def _bn_fwd_vjp(x, scale, bias, epsilon):
    return _bn_fwd(x, scale, bias, epsilon)


batch_norm_train.defvjp(_bn_fwd_vjp, _bn_bwd)


class BatchNorm(nn.Module):
    """The variables of ``flax.linen.BatchNorm`` (params scale/bias, batch_stats mean/var),
    computed with ``batch_norm_train`` in training mode."""

    use_running_average: bool = False
    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if self.use_running_average:
            inv = jax.lax.rsqrt(ra_var.value + self.epsilon)
            return ((x - ra_mean.value) * (inv * scale) + bias).astype(x.dtype)
        y, mean, var = batch_norm_train(x, scale, bias, self.epsilon)
        if not self.is_initializing():
            m = self.momentum
            ra_mean.value = m * ra_mean.value + (1 - m) * jax.lax.stop_gradient(mean)
            ra_var.value = m * ra_var.value + (1 - m) * jax.lax.stop_gradient(var)
        return y
