"""3x3 stride-1 convolution by Winograd's minimal filtering, F(2x2, 3x3).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016). For each 2x2
output tile and 4x4 input tile ``d`` (stride 2, overlapping by 2)::

    Y = A^T [ (G w G^T) (.) (B^T d B) ] A            (summed over input channels)

with the 4x4 ``B^T``, 4x3 ``G`` and 2x4 ``A^T`` below. The elementwise product, summed over
channels, is 16 independent GEMMs ``V[k] @ U[k]`` of shape ``[tiles, Cin] @ [Cin, Cout]``:
16 multiplies per tile and channel pair instead of the direct convolution's 36 (2.25x fewer
FLOPs), and GEMMs are what XLA:CPU runs fastest. The transforms are additions only.

Both gradients are Winograd too:

- input: the gradient of a stride-1 "SAME" 3x3 convolution is the same convolution of the
  output gradient with the kernel flipped in space and transposed in channels;
- weight: differentiating the formula above, ``dU[k] = V[k]^T @ (A dY A^T)[k]`` summed over
  tiles, and ``dw = G^T dU G``; for float32/float64 layers of at least
  ``F4_WEIGHT_GRAD_MIN_SIDE`` pixels a side and ``F4_WEIGHT_GRAD_MIN_CHANNELS`` channels the
  same with F(4x4, 3x3)'s 6x6 tiles (``winograd_f4``: 36 GEMMs over a quarter of the tiles
  instead of 16).

Everything runs over chunks of the batch (``lax.map`` / ``lax.scan``) so that the transformed
tiles (4x the input) stay small; the only residual kept for the backward pass is the input.
The backward pass is one loop: each chunk's input gradient and its share of the weight
gradient (see ``_backward`` for why not two).

Exact in real arithmetic; in fp32 the result differs from the direct convolution by rounding
(relative error ~1e-6, the F(4x4) weight gradient's a few times more; checked in
``tests/test_perf_equivalence.py``). Products accumulate in
``promote_types(dtype, float32)``: float32 for float32/bfloat16 operands, float64 for float64.
In bfloat16 the transformed tiles are rounded to bfloat16 for the GEMMs, so the error is a few
bfloat16 roundings (relative ~4e-3 against float64, about 2.5x the direct bfloat16
convolution's, which rounds only its output; the same test bounds it).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from tks_jax.models.kernels import chunking, winograd_f4

Array = jax.Array

# The transforms as matrices (used for the weight transform and by the tests; the tile
# transforms below are the same matrices written out as additions).
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)

# Default bytes of one chunk's transformed input tiles (16 * tiles * Cin floats).
CHUNK_BYTES = 16 * 2**20
# Layers at least this many pixels high and wide, with at least this many input and output
# channels, take their float32/float64 weight gradient from Winograd F(4x4, 3x3)
# (``winograd_f4``); other layers and bfloat16 keep F(2x2). Below these F(4x4) was no faster
# on XLA:CPU (``benchmarks/README.md``, "F(4x4, 3x3)").
F4_WEIGHT_GRAD_MIN_SIDE = 16
F4_WEIGHT_GRAD_MIN_CHANNELS = 128


def _widen(x: Array) -> Array:
    """``x`` in ``promote_types(dtype, float32)``: the tile transforms of a bfloat16
    convolution add in float32 and round once, to the operand dtype of the GEMMs (adding in
    bfloat16 would round after every addition)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _bt_1d(r0, r1, r2, r3):
    """``B^T d`` along one axis (rows of B^T above)."""
    return (r0 - r2, r1 + r2, r2 - r1, r1 - r3)


def input_tiles(x: Array) -> tuple[list[Array], tuple[int, int, int]]:
    """``V = B^T d B`` for every 4x4 tile of the zero-padded input: 16 arrays ``[n*P*Q, C]``.

    Kept as 16 separate arrays: stacking them into one ``[16, ...]`` array makes XLA:CPU emit
    a concatenate fusion much slower than the transform itself.
    """
    n, h, w, c = x.shape
    p, q = -(-h // 2), -(-w // 2)
    dtype, x = x.dtype, _widen(x)
    xp = jnp.pad(x, ((0, 0), (1, 1 + 2 * p - h), (1, 1 + 2 * q - w), (0, 0)))
    rows = _bt_1d(*(xp[:, a : a + 2 * p : 2] for a in range(4)))  # each [n, P, 2Q+2, C]
    tiles = []
    for r in rows:
        tiles.extend(_bt_1d(*(r[:, :, b : b + 2 * q : 2] for b in range(4))))  # [n, P, Q, C]
    return [t.reshape(n * p * q, c).astype(dtype) for t in tiles], (n, p, q)


def output_tiles(m: list[Array], n: int, p: int, q: int, h: int, w: int) -> Array:
    """``Y = A^T M A`` for every tile (16 arrays ``[n*P*Q, O]``), assembled into
    ``[n, h, w, O]``."""
    cout = m[0].shape[-1]
    m = [[m[4 * u + v].reshape(n, p, q, cout) for v in range(4)] for u in range(4)]
    rows = [[m[0][v] + m[1][v] + m[2][v] for v in range(4)],
            [m[1][v] - m[2][v] - m[3][v] for v in range(4)]]
    y = jnp.stack([jnp.stack((r[0] + r[1] + r[2], r[1] - r[2] - r[3])) for r in rows])
    # y[alpha, beta, n, P, Q, O] -> [n, P, alpha, Q, beta, O]
    y = jnp.transpose(y, (2, 3, 0, 4, 1, 5)).reshape(n, 2 * p, 2 * q, cout)
    return y[:, :h, :w]


def grad_tiles(g: Array) -> list[Array]:
    """``A dY A^T`` for every 2x2 output-gradient tile: 16 arrays ``[n*P*Q, O]``."""
    n, h, w, o = g.shape
    p, q = -(-h // 2), -(-w // 2)
    dtype, g = g.dtype, _widen(g)
    g = jnp.pad(g, ((0, 0), (0, 2 * p - h), (0, 2 * q - w), (0, 0))).reshape(n, p, 2, q, 2, o)
    g0, g1 = g[:, :, 0], g[:, :, 1]  # [n, P, Q, 2, O]
    rows = (g0, g0 + g1, g0 - g1, -g1)
    tiles = []
    for r in rows:
        c0, c1 = r[:, :, :, 0], r[:, :, :, 1]
        tiles.extend((c0, c0 + c1, c0 - c1, -c1))
    return [t.reshape(n * p * q, o).astype(dtype) for t in tiles]


def _g_1d(w0, w1, w2):
    """``G w`` along one axis (rows of G above)."""
    return (w0, 0.5 * (w0 + w1 + w2), 0.5 * (w0 - w1 + w2), w2)


def _gt_1d(d0, d1, d2, d3):
    """``G^T d`` along one axis."""
    return (d0 + 0.5 * (d1 + d2), 0.5 * (d1 - d2), 0.5 * (d1 + d2) + d3)


def weight_tiles(w: Array) -> list[Array]:
    """``U = G w G^T``: 16 arrays ``[Cin, Cout]`` (additions; an einsum with G runs
    slower on XLA:CPU)."""
    dtype, w = w.dtype, _widen(w)
    tiles = []
    for r in _g_1d(w[0], w[1], w[2]):  # each [3, Cin, Cout]
        tiles.extend(_g_1d(r[0], r[1], r[2]))
    return [t.astype(dtype) for t in tiles]


def weight_from_tiles(du: list[Array]) -> Array:
    """``dw = G^T dU G`` from the 16 tile gradients ``[Cin, Cout]``: ``[3, 3, Cin, Cout]``."""
    rows = _gt_1d(*(jnp.stack(du[4 * u : 4 * u + 4]) for u in range(4)))  # each [4, Ci, Co]
    return jnp.stack([jnp.stack(_gt_1d(r[0], r[1], r[2], r[3])) for r in rows])


def _mm(a: Array, b: Array, contract_a: int, contract_b: int) -> Array:
    return jax.lax.dot_general(
        a, b, (((contract_a,), (contract_b,)), ((), ())),
        preferred_element_type=jnp.promote_types(a.dtype, jnp.float32),
    )


def _tile_bytes(x: Array) -> int:
    _, h, w, c = x.shape
    return 16 * (-(-h // 2)) * (-(-w // 2)) * c * max(4, x.dtype.itemsize)


def _conv_tiles(x: Array, u: list[Array], transpose_u: bool) -> Array:
    """The convolution of one chunk ``x`` with the kernel whose tiles are ``u``."""
    _, h, w, _ = x.shape
    with jax.named_scope("winograd_input_tiles"):
        v, (nc, p, q) = input_tiles(x)
    with jax.named_scope("winograd_gemm"):
        m = [_mm(v[k], u[k], 1, 1 if transpose_u else 0) for k in range(16)]
    with jax.named_scope("winograd_output_tiles"):
        return output_tiles(m, nc, p, q, h, w).astype(x.dtype)


def _forward(x: Array, u: list[Array], chunk_bytes: int, transpose_u: bool = False) -> Array:
    """The convolution of ``x`` with the kernel whose tiles are ``u`` (``[Cin, Cout]``, or
    ``[Cout, Cin]`` with ``transpose_u``: the input gradient, without transposing weights)."""
    n = x.shape[0]
    chunk = chunking.chunk_size(n, _tile_bytes(x), chunk_bytes)
    one = functools.partial(_conv_tiles, u=u, transpose_u=transpose_u)
    if chunk == n:
        return one(x)
    y = jax.lax.map(one, chunking.split(x, chunk))
    return y.reshape((n,) + y.shape[2:])


def weight_grad_tiles(x: Array, g: Array) -> list[Array]:
    """The 16 F(2x2) tile gradients ``dU [Cin, Cout]`` of one chunk of ``x [n, h, w, Cin]`` and
    its output gradient ``g [n, h, w, Cout]`` (``weight_from_tiles`` of their sum over chunks is
    ``dw``); in ``promote_types(x.dtype, float32)``."""
    with jax.named_scope("winograd_input_tiles"):
        v, _ = input_tiles(x)
    with jax.named_scope("winograd_grad_tiles"):
        gt = grad_tiles(g)
    with jax.named_scope("winograd_gemm"):
        return [_mm(v[k], gt[k], 0, 0) for k in range(16)]  # dU[k] = V[k]^T A g A^T [k]


def _backward(
    x: Array, w: Array, g: Array, chunk_bytes: int, f4: bool
) -> tuple[Array, Array]:
    """Both gradients in one loop over chunks of the batch: each chunk's input gradient and
    its share of the weight gradient. As two loops, XLA's scheduler put the weight gradient's
    loop (whose result is only needed by the optimiser) after the rest of the backward pass,
    keeping every layer's output gradient alive until then."""
    n = x.shape[0]
    u = weight_tiles(w[::-1, ::-1])
    if f4:
        tiles, from_tiles = winograd_f4.weight_grad_tiles, winograd_f4.weight_from_tiles
        wgrad_bytes = winograd_f4.tile_bytes(x) + winograd_f4.tile_bytes(g)
    else:
        tiles, from_tiles = weight_grad_tiles, weight_from_tiles
        wgrad_bytes = _tile_bytes(x) + _tile_bytes(g)
    chunk = chunking.chunk_size(n, max(_tile_bytes(g), wgrad_bytes), chunk_bytes)

    def one(xc, gc):
        with jax.named_scope("input_grad"):
            dxc = _conv_tiles(gc, u, transpose_u=True)
        with jax.named_scope("weight_grad"):
            return dxc, tiles(xc, gc)

    if chunk == n:
        dx, du = one(x, g)
        return dx, from_tiles(du)

    def step(acc, c):
        dxc, du = one(*c)
        return jax.tree.map(jnp.add, acc, du), dxc

    xs = (chunking.split(x, chunk), chunking.split(g, chunk))
    init = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(tiles, xs[0][0], xs[1][0])
    )
    du, dx = jax.lax.scan(step, init, xs)
    return dx.reshape((n,) + dx.shape[2:]), from_tiles(du)


def conv3x3(
    x: Array,
    w: Array,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    f4_weight_grad_min_side: int = F4_WEIGHT_GRAD_MIN_SIDE,
    f4_weight_grad_min_channels: int = F4_WEIGHT_GRAD_MIN_CHANNELS,
) -> Array:
    """3x3 convolution, stride 1, zero padding 1 ("SAME"), NHWC input, HWIO kernel.

    Equals ``lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"))`` up to rounding; any H and W. Both
    gradients are Winograd too.

    Args:
      x: ``[N, H, W, C]``.
      w: ``[3, 3, C, O]``.
      chunk_bytes: bytes of one chunk of transformed tiles; the batch is processed in the
        largest chunks within this budget (a memory bound, same result).
      f4_weight_grad_min_side, f4_weight_grad_min_channels: the weight gradient of inputs at
        least this many pixels high and wide, with at least this many input and output
        channels, unless bfloat16, is F(4x4, 3x3) (``winograd_f4``: fewer, larger GEMMs, a
        few times the rounding error of F(2x2)); otherwise F(2x2).

    Returns:
      ``[N, H, W, O]`` in the dtype of ``x``.

    Raises:
      ValueError: other kernel sizes or mismatched channels.
    """
    if w.shape[:2] != (3, 3) or x.ndim != 4 or x.shape[-1] != w.shape[2]:
        raise ValueError(
            f"conv3x3 needs x [N, H, W, C] and w [3, 3, C, O]; got {x.shape} and {w.shape}"
        )
    f4_rule = (int(f4_weight_grad_min_side), int(f4_weight_grad_min_channels))
    return _conv3x3(x, w, int(chunk_bytes), f4_rule)


def uses_f4_weight_grad(
    x_shape,
    w_shape,
    dtype,
    min_side: int = F4_WEIGHT_GRAD_MIN_SIDE,
    min_channels: int = F4_WEIGHT_GRAD_MIN_CHANNELS,
) -> bool:
    """Whether ``conv3x3``'s weight gradient for this input and kernel shape and dtype is
    F(4x4)."""
    return (
        min(x_shape[1], x_shape[2]) >= min_side
        and min(w_shape[2], w_shape[3]) >= min_channels
        and jnp.dtype(dtype).itemsize >= 4
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv3x3(x: Array, w: Array, chunk_bytes: int, f4_rule: tuple[int, int]) -> Array:
    return _forward(x, weight_tiles(w), chunk_bytes)


def _conv3x3_fwd(x, w, chunk_bytes, f4_rule):
    return _conv3x3(x, w, chunk_bytes, f4_rule), (x, w)


def _conv3x3_bwd(chunk_bytes, f4_rule, res, g):
    x, w = res
    f4 = uses_f4_weight_grad(x.shape, w.shape, x.dtype, *f4_rule)
    dx, dw = _backward(x, w, g, chunk_bytes, f4)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)
