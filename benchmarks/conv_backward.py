"""Where does a conv layer's training time go on XLA:CPU? Forward, input and weight gradient.

A microbenchmark of one 3x3 stride-1 convolution of VGG-SNN, timed for each formulation:

- ``lax``: ``lax.conv_general_dilated`` (what ``flax.linen.Conv`` emits), NHWC / HWIO;
- ``im2col``: the nine shifted copies of the padded input concatenated on channels, one GEMM
  ``[N*H*W, 9*Cin] @ [9*Cin, Cout]``; its backward is two GEMMs plus slicing;
- ``shifted``: nine GEMMs ``shift_k(x) @ W_k`` accumulated (no 9x copy of the input).

Usage::

    .venv/bin/python -m benchmarks.conv_backward --n 32 --hw 24 --cin 128 --cout 256
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
from jax import lax


def conv_lax(x: jax.Array, w: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(
        x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def conv_im2col(x: jax.Array, w: jax.Array) -> jax.Array:
    n, h, wd, c = x.shape
    kh, kw, _, o = w.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = jnp.concatenate(
        [xp[:, i : i + h, j : j + wd, :] for i in range(kh) for j in range(kw)], axis=-1
    )
    return (cols.reshape(-1, kh * kw * c) @ w.reshape(-1, o)).reshape(n, h, wd, o)


def conv_shifted(x: jax.Array, w: jax.Array) -> jax.Array:
    n, h, wd, c = x.shape
    kh, kw, _, o = w.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = None
    for i in range(kh):
        for j in range(kw):
            term = jnp.einsum("nhwc,co->nhwo", xp[:, i : i + h, j : j + wd, :], w[i, j])
            out = term if out is None else out + term
    return out


IMPLS = {"lax": conv_lax, "im2col": conv_im2col, "shifted": conv_shifted}


def _time(f, *args, repeats: int) -> float:
    jax.block_until_ready(f(*args))
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bench(impl: str, n: int, hw: int, cin: int, cout: int, repeats: int) -> dict:
    return bench_conv(IMPLS[impl], impl, n, hw, cin, cout, repeats)


def bench_conv(conv, impl: str, n: int, hw: int, cin: int, cout: int, repeats: int) -> dict:
    """Times forward, input grad, weight grad and both grads of ``conv(x, w)``, and records the
    largest relative difference of its forward to ``conv_lax``."""
    x = jax.random.normal(jax.random.key(0), (n, hw, hw, cin), jnp.float32)
    w = jax.random.normal(jax.random.key(1), (3, 3, cin, cout), jnp.float32) * 0.05
    g = jax.random.normal(jax.random.key(2), (n, hw, hw, cout), jnp.float32)
    fwd = jax.jit(conv)
    dgrad = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
    wgrad = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
    both = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g))
    gflop = 2.0 * n * hw * hw * 9 * cin * cout / 1e9
    rec = {"impl": impl, "n": n, "hw": hw, "cin": cin, "cout": cout,
           "xla_flags": os.environ.get("XLA_FLAGS", "")}
    ref = jax.jit(conv_lax)(x, w)
    rec["fwd_max_rel_err"] = float(jnp.max(jnp.abs(fwd(x, w) - ref)) / jnp.max(jnp.abs(ref)))
    for key, f, args in [("fwd", fwd, (x, w)), ("dgrad", dgrad, (x, w, g)),
                         ("wgrad", wgrad, (x, w, g)), ("bwd", both, (x, w, g))]:
        t = _time(f, *args, repeats=repeats)
        scale = 2 if key == "bwd" else 1
        rec[f"{key}_ms"] = round(t * 1e3, 2)
        rec[f"{key}_gflops"] = round(scale * gflop / t, 1)
    rec["load"] = round(os.getloadavg()[0], 2)
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--hw", type=int, default=24)
    p.add_argument("--cin", type=int, default=128)
    p.add_argument("--cout", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--impls", default="lax,im2col,shifted")
    args = p.parse_args()
    for impl in args.impls.split(","):
        print(json.dumps(bench(impl, args.n, args.hw, args.cin, args.cout, args.repeats)),
              flush=True)


if __name__ == "__main__":
    main()
