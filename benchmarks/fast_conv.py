"""A convolution whose weight gradient is one GEMM (im2col) on XLA:CPU: the ``gemm_wgrad``
option of ``benchmarks/reference_models.py`` and the row-major variant of
``benchmarks/wgrad_layout.py``.

Drop-in for ``lax.conv_general_dilated`` (``flax.linen.Conv(conv_general_dilated=...)``).
The forward and the input gradient stay XLA's convolutions (fast on CPU); the weight
gradient, which XLA:CPU runs as a slow convolution over the batch, becomes
``im2col(x)^T @ dy``. The models' own version is in ``tks_jax/models`` (chunked, channel-major).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

# Bytes of one chunk's im2col buffer: bounds the backward's extra memory.
_CHUNK_BYTES = 64 * 2**20


def _im2col_weight_grad(x, g, kernel_shape, strides, padding):
    """dW[i, j, c, o] = sum_{n, h, w} xpad[n, s*h + i, s*w + j, c] * g[n, h, w, o].

    Computed as ``im2col(x)^T @ g`` over chunks of the batch (a ``lax.scan`` accumulating
    dW), so that the im2col buffer stays below ``_CHUNK_BYTES``.
    """
    kh, kw, cin, cout = kernel_shape
    sh, sw = strides
    n, ho, wo, _ = g.shape
    per_sample = ho * wo * kh * kw * cin * x.dtype.itemsize
    chunk = max(d for d in range(1, n + 1) if n % d == 0 and (d == 1 or d * per_sample
                                                               <= _CHUNK_BYTES))
    xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))

    def chunk_grad(xp_c, g_c):
        cols = [
            xp_c[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
            for i in range(kh)
            for j in range(kw)
        ]
        cols = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
        m = xp_c.shape[0] * ho * wo
        return lax.dot_general(
            cols.reshape(m, kh * kw * cin),
            g_c.reshape(m, cout),
            (((0,), (0,)), ((), ())),
            preferred_element_type=jnp.float32,
        )

    if chunk == n:
        dw = chunk_grad(xp, g)
    else:
        xs = (xp.reshape((n // chunk, chunk) + xp.shape[1:]),
              g.reshape((n // chunk, chunk) + g.shape[1:]))
        dw, _ = lax.scan(lambda acc, c: (acc + chunk_grad(*c), None),
                         jnp.zeros((kh * kw * cin, cout), jnp.float32), xs)
    return dw.reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_nhwc(x, w, strides, padding):
    return lax.conv_general_dilated(
        x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _conv_nhwc_fwd(x, w, strides, padding):
    return _conv_nhwc(x, w, strides, padding), (x, w)


def _conv_nhwc_bwd(strides, padding, res, g):
    x, w = res
    _, dgrad = jax.vjp(
        lambda x_: lax.conv_general_dilated(
            x_, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        ),
        x,
    )
    dx = dgrad(g)[0]
    dw = _im2col_weight_grad(x, g, w.shape, strides, padding).astype(w.dtype)
    return dx, dw


_conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    **kwargs,
):
    """``lax.conv_general_dilated`` with a GEMM weight gradient for plain NHWC convs."""
    plain = (
        (lhs_dilation is None or all(d == 1 for d in lhs_dilation))
        and (rhs_dilation is None or all(d == 1 for d in rhs_dilation))
        and feature_group_count == 1
        and not kwargs
        and not isinstance(padding, str)
        and lhs.ndim == 4
        and _is_nhwc(dimension_numbers, lhs.ndim)
    )
    if not plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
            dimension_numbers, feature_group_count, precision=precision, **kwargs,
        )
    padding = tuple(tuple(int(v) for v in p) for p in padding)
    return _conv_nhwc(lhs, rhs, tuple(int(s) for s in window_strides), padding)


def _is_nhwc(dimension_numbers, ndim) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return dimension_numbers == lax.conv_dimension_numbers(
            (1,) * ndim, (1,) * ndim, ("NHWC", "HWIO", "NHWC")
        )
    return tuple(dimension_numbers) == ("NHWC", "HWIO", "NHWC")
