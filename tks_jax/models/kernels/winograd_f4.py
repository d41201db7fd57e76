"""The weight gradient of a 3x3 stride-1 convolution by Winograd's F(4x4, 3x3).

Lavin & Gray (CVPR 2016), with 4x4 output tiles instead of F(2x2)'s 2x2: each 6x6 input tile
(stride 4, overlapping by 2) and 4x4 output-gradient tile ``dY`` give

    dU[k] = sum over tiles of V[k]^T (A dY A^T)[k],   V = B^T d B,   dw = G^T dU G

for the 36 entries ``k`` of a 6x6 tile: 36 GEMMs ``[Cin, tiles] @ [tiles, Cout]`` per chunk,
with 1/4 as many tiles as F(2x2)'s 16 GEMMs, so 1.8x fewer multiplications. On XLA:CPU these
GEMMs contract both operands over their first axis (Eigen, not YNNPACK), and F(2x2)'s are small
and many; F(4x4) makes them fewer and larger. ``winograd.conv3x3`` uses it for the weight
gradient of float32/float64 layers of at least 16 pixels a side and 128 channels (measured in
``benchmarks/README.md``, "F(4x4, 3x3)"); its forward and input gradient stay F(2x2).

The price is accuracy: the transforms' coefficients (up to 8 and 1/24) lose a few times more to
rounding than F(2x2)'s (bounded in ``tests/test_perf_equivalence.py``); bfloat16 layers
therefore keep F(2x2). Exact in real arithmetic (checked against lax in float64).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

M = 4  # output tile side
# B^T (6x6), G (6x3), A^T (4x6) of F(4x4, 3x3): the 1-D correlation is y = A^T [(G g) * (B^T d)].
BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64)
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
               [0, 1, -1, 8, -8, 1]], np.float64)
TILE = M + 2  # input tile side


def combine(matrix: np.ndarray, parts: list) -> list:
    """``matrix @ parts`` row by row, written as additions: zero coefficients skipped, +-1
    without a multiplication (the arrays in ``parts`` are the rows being combined)."""
    out = []
    for row in matrix:
        acc = None
        for c, p in zip(row, parts, strict=True):
            if c == 0:
                continue
            term = p if abs(c) == 1 else float(c) * p
            if acc is None:
                acc = -term if c == -1 else term
            else:
                acc = acc - term if c == -1 else acc + term
        out.append(acc)
    return out


def _widen(x: Array) -> Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def input_tiles(x: Array) -> list[Array]:
    """``V = B^T d B`` for every 6x6 tile of the zero-padded ``x [n, h, w, c]``: 36 arrays
    ``[n*P*Q, c]`` (``P = ceil(h/4)``, ``Q = ceil(w/4)``)."""
    n, h, w, c = x.shape
    p, q = -(-h // M), -(-w // M)
    dtype, x = x.dtype, _widen(x)
    xp = jnp.pad(x, ((0, 0), (1, 1 + M * p - h), (1, 1 + M * q - w), (0, 0)))
    tiles = []
    for r in combine(BT, [xp[:, i : i + M * p : M] for i in range(TILE)]):
        tiles.extend(combine(BT, [r[:, :, j : j + M * q : M] for j in range(TILE)]))
    return [t.reshape(n * p * q, c).astype(dtype) for t in tiles]


def grad_tiles(g: Array) -> list[Array]:
    """``A dY A^T`` for every 4x4 tile of the output gradient ``g [n, h, w, o]`` (zero-padded
    to whole tiles): 36 arrays ``[n*P*Q, o]``."""
    n, h, w, o = g.shape
    p, q = -(-h // M), -(-w // M)
    dtype, g = g.dtype, _widen(g)
    g = jnp.pad(g, ((0, 0), (0, M * p - h), (0, M * q - w), (0, 0))).reshape(n, p, M, q, M, o)
    tiles = []
    for r in combine(AT.T, [g[:, :, i] for i in range(M)]):
        tiles.extend(combine(AT.T, [r[:, :, :, j] for j in range(M)]))
    return [t.reshape(n * p * q, o).astype(dtype) for t in tiles]


def weight_from_tiles(du: list[Array]) -> Array:
    """``dw = G^T dU G`` from the 36 tile gradients ``[Cin, Cout]``: ``[3, 3, Cin, Cout]``."""
    rows = combine(G.T, [jnp.stack(du[TILE * u : TILE * u + TILE]) for u in range(TILE)])
    return jnp.stack([jnp.stack(combine(G.T, [r[j] for j in range(TILE)])) for r in rows])


def tile_bytes(x: Array) -> int:
    """Bytes of one sample's 36 transformed tiles (at least float32)."""
    _, h, w, c = x.shape
    return TILE * TILE * (-(-h // M)) * (-(-w // M)) * c * max(4, x.dtype.itemsize)


def weight_grad_tiles(x: Array, g: Array) -> list[Array]:
    """The 36 tile gradients ``dU [Cin, Cout]`` of one chunk of ``x [n, h, w, Cin]`` and its
    output gradient ``g [n, h, w, Cout]`` (``weight_from_tiles`` of their sum over chunks is
    ``dw``); in ``promote_types(x.dtype, float32)``."""
    acc = jnp.promote_types(x.dtype, jnp.float32)
    with jax.named_scope("winograd_input_tiles"):
        v = input_tiles(x)
    with jax.named_scope("winograd_grad_tiles"):
        gt = grad_tiles(g)
    with jax.named_scope("winograd_gemm"):
        return [
            jax.lax.dot_general(a, b, (((0,), (0,)), ((), ())), preferred_element_type=acc)
            for a, b in zip(v, gt, strict=True)
        ]
