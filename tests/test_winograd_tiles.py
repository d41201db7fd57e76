"""The F(m x m, 3x3) prototype of ``benchmarks/winograd_tiles.py`` computes the convolution.

Checked in float64 against ``lax.conv_general_dilated`` (forward and both gradients), on sizes
that are not multiples of the tile, with chunking on and off; the 1-D identity behind each tile
size against NumPy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import winograd_tiles as wt


@pytest.mark.parametrize("m", [2, 4])
def test_matrices_compute_a_1d_correlation(m):
    bt, g, at = wt.MATRICES[m]
    rng = np.random.default_rng(m)
    d, k = rng.normal(size=m + 2), rng.normal(size=3)
    want = np.array([d[i : i + 3] @ k for i in range(m)])
    np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("n,h,w,cin,cout,chunk_bytes", [
    (2, 8, 8, 3, 5, 2**30),   # one chunk, whole tiles
    (3, 7, 10, 4, 2, 2**30),  # partial tiles in both directions
    (4, 9, 6, 2, 3, 1),       # one sample per chunk
])
def test_conv_and_gradients_match_lax(m, n, h, w, cin, cout, chunk_bytes):
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(n, h, w, cin)))
        k = jnp.asarray(rng.normal(size=(3, 3, cin, cout)))

        def ref(x, k):
            return jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))

        y_ref, vjp_ref = jax.vjp(ref, x, k)
        y, vjp = jax.vjp(lambda a, b: wt.conv3x3(a, b, m, chunk_bytes), x, k)
        g = jnp.asarray(rng.normal(size=y_ref.shape))
        np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
        for got, want in zip(vjp(g), vjp_ref(g), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_float32_error_of_f4_is_small():
    # F(4x4)'s larger transform coefficients cost accuracy: still ~1e-5 relative in float32.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 16, 16, 32))
    k = rng.normal(size=(3, 3, 32, 32)) * 0.1
    with jax.enable_x64(True):
        want = np.asarray(jax.lax.conv_general_dilated(
            jnp.asarray(x), jnp.asarray(k), (1, 1), ((1, 1), (1, 1)),
            dimension_numbers=("NHWC", "HWIO", "NHWC")))
    got = np.asarray(wt.conv3x3(jnp.asarray(x, jnp.float32), jnp.asarray(k, jnp.float32), 4))
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert 1e-8 < rel < 1e-4
