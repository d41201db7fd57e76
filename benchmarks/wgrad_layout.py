"""The conv weight gradient's im2col: row-major vs channel-major layout, and the chunk size.

Not a test. For one 3x3 stride-1 layer shape, times ``dW = im2col(x)^T @ dy`` as
- ``rm<MB>``: row-major ``[N*H*W, 9*Cin]`` contracted on its first axis (``_rm`` below),
  chunks of <MB> MB;
- ``cm<MB>``: channel-major ``[9*Cin, N*H*W] @ [N*H*W, Cout]`` (``tks_jax.models.kernels``),
- ``gemm``: a plain GEMM of the same shape and FLOPs from ready-made operands (the ceiling),
checks each against lax's weight gradient, and prints GFLOP/s (median of alternated repeats).

    .venv/bin/python -m benchmarks.wgrad_layout --n 64 --hw 32 --cin 128 --cout 128
    .venv/bin/python -m benchmarks.wgrad_layout --n 160 --hw 48 --cin 64 --cout 128
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from tks_jax.models import kernels
from tks_jax.models.kernels import chunking

PAD = ((1, 1), (1, 1))


def _rm(x, g, chunk_mb):
    """Row-major im2col: ``[M, 9*Cin]`` taps of the padded input (M = N*H*W, stride 1),
    contracted with ``g`` ``[M, Cout]`` on M, summed over chunks of the batch."""
    n, hw, _, cin = x.shape
    cout = g.shape[-1]
    xp = jnp.pad(x, ((0, 0), *PAD, (0, 0)))

    def chunk_grad(xp_c, g_c):
        taps = [xp_c[:, i : i + hw, j : j + hw, :] for i in range(3) for j in range(3)]
        m = xp_c.shape[0] * hw * hw
        return jax.lax.dot_general(
            jnp.concatenate(taps, axis=-1).reshape(m, 9 * cin), g_c.reshape(m, cout),
            (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32,
        )

    chunk = chunking.chunk_size(n, hw * hw * 9 * cin * x.dtype.itemsize, chunk_mb * 2**20)
    return chunking.sum_over_chunks(chunk_grad, (xp, g), chunk).reshape(3, 3, cin, cout)


def _cm(x, g, chunk_mb):
    return kernels.im2col_weight_grad(
        x, g, (3, 3, x.shape[-1], g.shape[-1]), (1, 1), PAD, chunk_bytes=chunk_mb * 2**20
    )


def _lax(x, g):
    def conv(w):
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), PAD, dimension_numbers=("NHWC", "HWIO", "NHWC"))

    return jax.vjp(conv, jnp.zeros((3, 3, x.shape[-1], g.shape[-1]), x.dtype))[1](g)[0]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=64, help="T*B")
    p.add_argument("--hw", type=int, default=32)
    p.add_argument("--cin", type=int, default=128)
    p.add_argument("--cout", type=int, default=128)
    p.add_argument("--chunks", default="8,16,64", help="chunk sizes in MB")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    n, hw, cin, cout = args.n, args.hw, args.cin, args.cout
    x = jnp.asarray((rng.random((n, hw, hw, cin)) < 0.2).astype(np.float32))  # spikes
    g = jnp.asarray(rng.standard_normal((n, hw, hw, cout)).astype(np.float32))
    flops = 2 * 9 * cin * cout * n * hw * hw
    ref = jax.jit(_lax)(x, g)
    fns = {}
    for mb in (int(c) for c in args.chunks.split(",")):
        fns[f"rm{mb}"] = (jax.jit(functools.partial(_rm, chunk_mb=mb)), (x, g))
        fns[f"cm{mb}"] = (jax.jit(functools.partial(_cm, chunk_mb=mb)), (x, g))
    a = jnp.asarray(rng.standard_normal((9 * cin, n * hw * hw)).astype(np.float32))
    b = jnp.asarray(rng.standard_normal((n * hw * hw, cout)).astype(np.float32))
    fns["gemm"] = (jax.jit(jnp.dot), (a, b))
    scale = float(jnp.abs(ref).max())
    for name, (f, fargs) in fns.items():
        out = jax.block_until_ready(f(*fargs))  # compiles
        if name != "gemm":
            err = float(jnp.abs(out - ref).max()) / scale
            assert err < 1e-4, f"{name} disagrees with lax: relative error {err:.2e}"
    times = {name: [] for name in fns}
    for _ in range(args.repeats):
        for name, (f, fargs) in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*fargs))
            times[name].append(time.perf_counter() - t0)
    print(f"N={n} {hw}x{hw} {cin}->{cout}: dW {flops / 1e9:.1f} GFLOP")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"  {name:6s} {m * 1e3:8.1f} ms  {flops / m / 1e9:7.1f} GFLOP/s")


if __name__ == "__main__":
    main()
