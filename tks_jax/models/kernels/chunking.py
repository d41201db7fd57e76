"""Splitting a leading axis into equal chunks under a memory budget.

Shared by the im2col weight gradient (``kernels.conv``), the Winograd convolution
(``kernels.winograd``) and the chunked conv-norm-LIF unit (``kernels.conv_norm_lif``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax


def chunk_size(n: int, bytes_per_item: int, budget: int) -> int:
    """The largest divisor of ``n`` whose chunk takes at most ``budget`` bytes (at least 1)."""
    fits = [d for d in range(1, n + 1) if n % d == 0 and d * bytes_per_item <= budget]
    return max(fits, default=1)


def split(a: jax.Array, chunk: int) -> jax.Array:
    """``[n, ...] -> [n // chunk, chunk, ...]`` (a reshape)."""
    return a.reshape((a.shape[0] // chunk, chunk) + a.shape[1:])


def sum_over_chunks(fn: Callable[..., Any], arrays: Sequence[jax.Array], chunk: int) -> Any:
    """``sum_c fn(*(a[c] for a in arrays))`` over chunks of ``chunk`` along axis 0, as one
    ``lax.scan`` (or a single call when one chunk holds everything); ``fn`` returns a pytree."""
    n = arrays[0].shape[0]
    if chunk == n:
        return fn(*arrays)
    xs = tuple(split(a, chunk) for a in arrays)
    init = jax.tree.map(
        lambda s: jax.numpy.zeros(s.shape, s.dtype), jax.eval_shape(fn, *(x[0] for x in xs))
    )
    total, _ = jax.lax.scan(
        lambda acc, c: (jax.tree.map(lambda a, b: a + b, acc, fn(*c)), None), init, xs
    )
    return total
