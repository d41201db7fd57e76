"""2-D NHWC convolution with a choice of algorithm, and the im2col (GEMM) weight gradient.

On XLA:CPU the weight gradient of a convolution runs as a convolution over the batch with
huge windows and layout copies, several times slower per FLOP than the forward pass. Here the
forward stays XLA's convolution and the weight gradient becomes ``im2col(x)^T @ dy``
(Dumoulin & Visin's convolution arithmetic), accumulated over chunks of the batch so that the
im2col buffer stays small. The input gradient stays XLA's for stride 1; for a strided
convolution it is one GEMM and a col2im (``col2im_input_grad``) instead of XLA's convolution
over the zero-dilated output gradient (``benchmarks/strided_input_grad.py``). Same maths;
``tests/test_perf_equivalence.py`` checks both against lax's gradients and NumPy.

``conv_general_dilated`` has the signature of ``lax.conv_general_dilated`` (what
``flax.linen.Conv`` calls) and picks the algorithm; ``conv_function(algorithm)`` returns it
with the algorithm bound, to inject into ``flax.linen.Conv(conv_general_dilated=...)``.
Products accumulate in ``promote_types(dtype, float32)``: float32 for float32/bfloat16
operands, float64 for float64.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from tks_jax.models.kernels import chunking, winograd

Array = jax.Array

NHWC = ("NHWC", "HWIO", "NHWC")

# Default bytes of one chunk's im2col buffer: bounds the extra memory of the weight gradient.
# benchmarks/wgrad_layout.py compares budgets (small chunks stay in cache).
WGRAD_CHUNK_BYTES = 8 * 2**20

# How a convolution is computed (the models' option ``conv``):
# - "auto": on CPU, Winograd F(2x2, 3x3) (``kernels.winograd``) for float32 and bfloat16 3x3
#   stride-1 convolutions with at least ``winograd_min_channels`` input and output channels
#   (XLA:CPU's direct bfloat16 convolution is no faster than float32's), XLA's
#   forward and input gradient with the GEMM weight gradient for the others; on GPU/TPU,
#   XLA's convolution unchanged (their weight gradients are fast already).
# - "winograd": Winograd for every 3x3 stride-1 convolution, on any backend and dtype; the
#   others as "auto".
# - "direct": never Winograd (the direct convolution; on CPU still with the GEMM weight
#   gradient and, for strided convolutions, the GEMM + col2im input gradient).
# Winograd differs from the direct convolution by rounding only (~1e-6 relative in float32).
# benchmarks/winograd.py measures both (few-channel input layers are faster direct).
CONV_ALGORITHMS = ("auto", "winograd", "direct")
WINOGRAD_MIN_CHANNELS = 16


def im2col_weight_grad(
    x: Array,
    g: Array,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[Sequence[int]],
    *,
    chunk_bytes: int = WGRAD_CHUNK_BYTES,
) -> Array:
    """``dW[i, j, c, o] = sum_{n, h, w} xpad[n, s*h + i, s*w + j, c] * g[n, h, w, o]``.

    Channel-major im2col: ``[kh*kw*Cin, N*Ho*Wo] @ [N*Ho*Wo, Cout]``, a plain GEMM, summed over
    chunks of the batch whose im2col buffer stays within ``chunk_bytes``.

    Args:
      x: input ``[N, H, W, Cin]``.
      g: output cotangent ``[N, Ho, Wo, Cout]``.
      kernel_shape: ``(kh, kw, Cin, Cout)``.
      strides: ``(sh, sw)``.
      padding: ``((top, bottom), (left, right))``.
      chunk_bytes: im2col bytes per chunk of the batch (a memory bound, same result).

    Returns:
      ``[kh, kw, Cin, Cout]`` in ``promote_types(x.dtype, float32)``.
    """
    kh, kw, cin, cout = kernel_shape
    sh, sw = strides
    n, ho, wo, _ = g.shape
    per_sample = ho * wo * kh * kw * cin * x.dtype.itemsize
    chunk = chunking.chunk_size(n, per_sample, chunk_bytes)
    xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    acc_dtype = jnp.promote_types(x.dtype, jnp.float32)

    def chunk_grad(xp_c: Array, g_c: Array) -> Array:
        m = xp_c.shape[0] * ho * wo
        # One transpose of the (small) padded input; each tap is then a strided slice whose
        # rows are already the GEMM's, ordered (i, j, c) as in HWIO.
        with jax.named_scope("im2col"):
            xt = jnp.transpose(xp_c, (3, 0, 1, 2))
            cols = [
                xt[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
                for i in range(kh)
                for j in range(kw)
            ]
            cols = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=0)
        return jax.lax.dot_general(
            cols.reshape(kh * kw * cin, m),
            g_c.reshape(m, cout),
            (((1,), (0,)), ((), ())),
            preferred_element_type=acc_dtype,
        )

    return chunking.sum_over_chunks(chunk_grad, (xp, g), chunk).reshape(kernel_shape)


def col2im_input_grad(
    g: Array,
    w: Array,
    input_shape: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[Sequence[int]],
) -> Array:
    """The input gradient of a strided convolution as one GEMM and a col2im.

    ``dx[n, s*h + i - pt, s*w + j - pl, c] += sum_o g[n, h, w, o] * W[i, j, c, o]``: the
    products of every output position with every tap, ``g @ W^T`` (``[N*Ho*Wo, Cout] @ [Cout,
    kh*kw*Cin]``), each tap's plane then spread onto the input grid with ``lax.pad``'s interior
    padding (the stride) and the planes summed, which XLA fuses into one pass over ``dx``.
    XLA:CPU computes this gradient as a convolution over the zero-dilated output gradient,
    which multiplies every inserted zero (4x the FLOPs at stride 2).

    Args:
      g: output cotangent ``[N, Ho, Wo, Cout]``.
      w: kernel ``[kh, kw, Cin, Cout]``.
      input_shape: ``(N, H, W, Cin)`` of the convolution's input.
      strides: ``(sh, sw)``.
      padding: ``((top, bottom), (left, right))``.

    Returns:
      ``[N, H, W, Cin]`` in ``promote_types(g.dtype, float32)``.
    """
    n, ho, wo, cout = g.shape
    kh, kw, cin, _ = w.shape
    _, h, wd, _ = input_shape
    (sh, sw), (pt, pl) = strides, (padding[0][0], padding[1][0])
    acc_dtype = jnp.promote_types(g.dtype, jnp.float32)
    taps = jax.lax.dot_general(
        g.reshape(n * ho * wo, cout),
        w.reshape(kh * kw * cin, cout),
        (((1,), (1,)), ((), ())),
        preferred_element_type=acc_dtype,
    ).reshape(n, ho, wo, kh, kw, cin)
    dx = None
    for i in range(kh):
        for j in range(kw):
            # Tap (i, j) of output (r, c) lands on input (sh*r + i - pt, sw*c + j - pl); lax.pad
            # takes negative edge padding as a crop (taps that fall into the padding).
            top, left = i - pt, j - pl
            plane = jax.lax.pad(
                taps[:, :, :, i, j],
                jnp.zeros((), acc_dtype),
                [(0, 0, 0),
                 (top, h - top - sh * (ho - 1) - 1, sh - 1),
                 (left, wd - left - sw * (wo - 1) - 1, sw - 1),
                 (0, 0, 0)],
            )
            dx = plane if dx is None else dx + plane
    return dx


def conv_gemm_weight_grad(
    x: Array,
    w: Array,
    strides: Sequence[int],
    padding: Sequence[Sequence[int]],
    *,
    chunk_bytes: int = WGRAD_CHUNK_BYTES,
) -> Array:
    """NHWC/HWIO convolution by XLA whose weight gradient is ``im2col_weight_grad``.

    Args:
      x: ``[N, H, W, Cin]``.
      w: ``[kh, kw, Cin, Cout]``.
      strides: ``(sh, sw)``.
      padding: ``((top, bottom), (left, right))`` (explicit integers).
      chunk_bytes: see ``im2col_weight_grad``.

    Returns:
      ``[N, Ho, Wo, Cout]``, as ``lax.conv_general_dilated``.
    """
    strides = tuple(int(s) for s in strides)
    padding = tuple(tuple(int(v) for v in p) for p in padding)
    return _conv_gemm(x, w, strides, padding, int(chunk_bytes))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_gemm(x: Array, w: Array, strides, padding, chunk_bytes) -> Array:
    return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)


def _conv_gemm_fwd(x, w, strides, padding, chunk_bytes):
    return _conv_gemm(x, w, strides, padding, chunk_bytes), (x, w)


def _conv_gemm_bwd(strides, padding, chunk_bytes, res, g):
    x, w = res
    # The scopes name the ops of each gradient in profiles (benchmarks/profile_step.py).
    with jax.named_scope("input_grad"):
        if any(st > 1 for st in strides):
            dx = col2im_input_grad(g, w, x.shape, strides, padding).astype(x.dtype)
        else:
            _, input_grad = jax.vjp(
                lambda x_: jax.lax.conv_general_dilated(
                    x_, w, strides, padding, dimension_numbers=NHWC
                ),
                x,
            )
            dx = input_grad(g)[0]
    with jax.named_scope("weight_grad"):
        dw = im2col_weight_grad(x, g, w.shape, strides, padding, chunk_bytes=chunk_bytes)
    return dx, dw.astype(w.dtype)


_conv_gemm.defvjp(_conv_gemm_fwd, _conv_gemm_bwd)


def check_algorithm(algorithm: str) -> str:
    """Returns ``algorithm`` if it is one of ``CONV_ALGORITHMS``.

    Raises:
      ValueError: any other value.
    """
    if algorithm not in CONV_ALGORITHMS:
        raise ValueError(
            f"Unknown conv algorithm {algorithm!r}; choose one of {list(CONV_ALGORITHMS)}."
        )
    return algorithm


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
    *,
    algorithm: str = "auto",
    winograd_min_channels: int = WINOGRAD_MIN_CHANNELS,
    wgrad_chunk_bytes: int = WGRAD_CHUNK_BYTES,
    winograd_chunk_bytes: int = winograd.CHUNK_BYTES,
    **kwargs,
):
    """``lax.conv_general_dilated`` computed as ``algorithm`` says (see ``CONV_ALGORITHMS``)
    for plain 2-D NHWC convolutions; anything else goes to lax unchanged.

    Args:
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, precision, **kwargs: as ``jax.lax.conv_general_dilated``.
      algorithm: one of ``CONV_ALGORITHMS``.
      winograd_min_channels: "auto" uses Winograd only when the input and output channels
        are both at least this.
      wgrad_chunk_bytes: im2col budget of the GEMM weight gradient.
      winograd_chunk_bytes: tile budget of Winograd.

    Raises:
      ValueError: unknown ``algorithm``.
    """
    check_algorithm(algorithm)
    on_cpu = jax.default_backend() == "cpu"  # cuDNN / TPU weight gradients are fast already
    plain = (
        lhs.ndim == 4
        and not kwargs
        and not isinstance(padding, str)
        and feature_group_count == 1
        and all(d == 1 for d in (lhs_dilation or (1,)))
        and all(d == 1 for d in (rhs_dilation or (1,)))
        and dimension_numbers == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)
    )
    winograd_shape = (
        plain
        and tuple(rhs.shape[:2]) == (3, 3)
        and tuple(int(s) for s in window_strides) == (1, 1)
        and tuple(tuple(int(v) for v in p) for p in padding) == ((1, 1), (1, 1))
    )
    if algorithm == "winograd" and winograd_shape:
        return winograd.conv3x3(lhs, rhs, chunk_bytes=winograd_chunk_bytes)
    if (
        algorithm == "auto"
        and on_cpu
        and winograd_shape
        and lhs.dtype == rhs.dtype
        and lhs.dtype in (jnp.float32, jnp.bfloat16)
        and min(rhs.shape[2], rhs.shape[3]) >= winograd_min_channels
    ):
        return winograd.conv3x3(lhs, rhs, chunk_bytes=winograd_chunk_bytes)
    if not (plain and on_cpu):
        return jax.lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            precision=precision,
            **kwargs,
        )
    return conv_gemm_weight_grad(lhs, rhs, window_strides, padding, chunk_bytes=wgrad_chunk_bytes)


# One function per algorithm, built once: injected into ``flax.linen.Conv`` they compare equal
# across modules (stable module hashes and jit caches).
_CONV_FUNCTIONS: dict[str, Callable] = {
    name: functools.partial(conv_general_dilated, algorithm=name) for name in CONV_ALGORITHMS
}


def conv_function(algorithm: str = "auto") -> Callable:
    """``conv_general_dilated`` with ``algorithm`` bound (default budgets), for
    ``flax.linen.Conv(conv_general_dilated=...)``.

    Raises:
      ValueError: unknown ``algorithm``.
    """
    return _CONV_FUNCTIONS[check_algorithm(algorithm)]
