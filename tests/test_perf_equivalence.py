"""The fast paths of the performance work equal the straightforward ones (issue 6).

- ``spiking.lif`` (one custom VJP over the whole scan) vs ``spiking._lif_autodiff`` (the
  per-step scan differentiated by JAX), and vs a NumPy BPTT written here.
- ``models.layers`` convolution with the GEMM weight gradient vs ``lax.conv_general_dilated``.

Small shapes, fixed seeds, no timings.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tks_jax import spiking

SURROGATES = ["qgate", "sigmoid", "atan", "rectangle", "triangle"]


def _currents(shape, seed=0, dtype=np.float32):
    # Mean 0.6, spread 0.8 around the threshold 0.5: spikes, resets and surrogate slopes.
    return jnp.asarray(np.random.default_rng(seed).normal(0.6, 0.8, size=shape).astype(dtype))


def _loss(lif_fn, weights, with_membrane):
    def f(x):
        out = lif_fn(x)
        if with_membrane:
            spikes, membranes = out
            return jnp.sum(spikes * weights) + jnp.sum(jnp.sin(membranes) * weights)
        return jnp.sum(out[0] * weights)

    return f


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("return_membrane", [True, False])
def test_lif_fast_path_matches_autodiff(surrogate, detach_reset, return_membrane):
    x = _currents((6, 3, 4))
    w = jnp.asarray(np.random.default_rng(1).normal(size=x.shape).astype(np.float32))
    sur = spiking.get_surrogate(surrogate)

    def fast(x):
        out = spiking.lif(
            x, surrogate=sur, detach_reset=detach_reset, return_membrane=return_membrane
        )
        return out if return_membrane else (out,)

    def slow(x):
        s, m = spiking._lif_autodiff(x, 2.0, 0.5, sur, detach_reset, 1, False)
        return (s, m) if return_membrane else (s,)

    for a, b in zip(jax.jit(fast)(x), jax.jit(slow)(x), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    g_fast = jax.jit(jax.grad(_loss(fast, w, return_membrane)))(x)
    g_slow = jax.jit(jax.grad(_loss(slow, w, return_membrane)))(x)
    assert float(jnp.max(jnp.abs(g_slow))) > 0.1  # the gradient is not trivially zero
    np.testing.assert_allclose(np.asarray(g_fast), np.asarray(g_slow), rtol=1e-5, atol=1e-6)


def _numpy_lif_bptt(x, g_spikes, tau=2.0, vth=0.5, alpha=2.0):
    """Forward and BPTT of the LIF with detached reset and QGate surrogate, in NumPy."""
    steps = x.shape[0]
    u = np.zeros(x.shape[1:])
    hs, ss = [], []
    for t in range(steps):
        h = u + (x[t] - u) / tau
        s = (h > vth).astype(np.float64)
        hs.append(h)
        ss.append(s)
        u = h * (1 - s)
    g_x = np.zeros_like(x, dtype=np.float64)
    g_u = np.zeros(x.shape[1:])  # dL/du_t, u after reset
    for t in reversed(range(steps)):
        slope = np.maximum(alpha - alpha**2 * np.abs(hs[t] - vth), 0.0)
        g_h = g_spikes[t] * slope + g_u * (1 - ss[t])
        g_x[t] = g_h / tau
        g_u = g_h * (1 - 1 / tau)
    return np.stack(ss), g_x


def test_lif_fast_path_matches_numpy_bptt():
    x = _currents((8, 5), seed=3)
    g = np.random.default_rng(4).normal(size=x.shape)
    spikes_np, gx_np = _numpy_lif_bptt(np.asarray(x, np.float64), g)
    spikes, vjp = jax.vjp(lambda c: spiking.lif(c), x)
    (gx,) = vjp(jnp.asarray(g, jnp.float32))
    np.testing.assert_array_equal(np.asarray(spikes), spikes_np)
    np.testing.assert_allclose(np.asarray(gx), gx_np, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("unroll", [1, 3, True])
def test_lif_fast_path_unroll_and_vmap(unroll):
    x = _currents((5, 2, 3, 4), seed=5)
    sur = spiking.get_surrogate("qgate")

    def fast(x):
        return jnp.sum(spiking.lif(x, unroll=unroll) ** 2 * jnp.arange(x.size).reshape(x.shape))

    def slow(x):
        s, _ = spiking._lif_autodiff(x, 2.0, 0.5, sur, True, 1, False)
        return jnp.sum(s**2 * jnp.arange(x.size).reshape(x.shape))

    np.testing.assert_allclose(jax.grad(fast)(x), jax.grad(slow)(x), rtol=1e-5, atol=1e-6)
    # vmap over a leading axis (time stays axis 0 of each element)
    batched = jax.vmap(jax.grad(fast))(jnp.stack([x, 2 * x]))
    np.testing.assert_allclose(batched[1], jax.grad(slow)(2 * x), rtol=1e-5, atol=1e-6)


def test_lif_fast_path_bfloat16_forward_matches():
    x = _currents((4, 16), seed=6).astype(jnp.bfloat16)
    sur = spiking.get_surrogate("qgate")
    fast = spiking.lif(x, return_membrane=True)
    slow = spiking._lif_autodiff(x, 2.0, 0.5, sur, True, 1, False)
    for a, b in zip(fast, slow, strict=True):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    g_fast = jax.grad(lambda c: jnp.sum(spiking.lif(c).astype(jnp.float32)))(x)
    g_slow = jax.grad(
        lambda c: jnp.sum(spiking._lif_autodiff(c, 2.0, 0.5, sur, True, 1, False)[0]
                          .astype(jnp.float32))
    )(x)
    assert g_fast.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(g_fast, np.float32), np.asarray(g_slow, np.float32), rtol=2e-2, atol=1e-2
    )


def test_lif_traced_tau_takes_the_autodiff_path():
    # tau as a traced value (e.g. learned): gradients w.r.t. tau still exist.
    x = _currents((4, 6), seed=7)
    g = jax.grad(lambda tau: jnp.sum(spiking.lif(x, tau=tau, return_membrane=True)[1]))(2.0)
    assert np.isfinite(float(g)) and float(g) != 0.0
