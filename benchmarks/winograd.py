"""Winograd F(2x2, 3x3) convolution on XLA:CPU against ``lax.conv_general_dilated``.

A 3x3 stride-1 convolution computes each 2x2 output tile from a 4x4 input tile with 16
elementwise products per channel pair instead of 36 (Lavin & Gray 2016): the input and weight
transforms are additions, the products over channels become 16 GEMMs
``[M, Cin] @ [Cin, Cout]`` (M = number of tiles), which is where XLA:CPU is fastest. This
microbenchmark times forward, input gradient and weight gradient of one layer for the
formulation in ``tks_jax/models/winograd.py`` (chunked over the batch) and for lax.

Usage::

    .venv/bin/python -m benchmarks.winograd --shapes 64x32x128x128,64x16x256x256,64x8x512x512
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

from tks_jax.models import layers, winograd


def conv_lax(x, w):
    return lax.conv_general_dilated(
        x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def conv_gemm_wgrad(x, w):
    """The current default path: lax forward / input grad, im2col GEMM weight gradient."""
    return layers._conv_nhwc(x, w, (1, 1), ((1, 1), (1, 1)))


def conv_winograd(x, w):
    return winograd.conv3x3(x, w)


IMPLS = {"lax": conv_lax, "gemm_wgrad": conv_gemm_wgrad, "winograd": conv_winograd}


def _time(f, *args, repeats: int) -> float:
    jax.block_until_ready(f(*args))
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bench(impl: str, n: int, hw: int, cin: int, cout: int, repeats: int) -> dict:
    conv = IMPLS[impl]
    x = jax.random.normal(jax.random.key(0), (n, hw, hw, cin), jnp.float32)
    w = jax.random.normal(jax.random.key(1), (3, 3, cin, cout), jnp.float32) * 0.05
    g = jax.random.normal(jax.random.key(2), (n, hw, hw, cout), jnp.float32)
    fwd = jax.jit(conv)
    dgrad = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
    wgrad = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
    both = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g))
    gflop = 2.0 * n * hw * hw * 9 * cin * cout / 1e9
    rec = {"impl": impl, "n": n, "hw": hw, "cin": cin, "cout": cout}
    ref = jax.jit(conv_lax)(x, w)
    out = fwd(x, w)
    rec["fwd_max_rel_err"] = float(jnp.max(jnp.abs(out - ref)) / jnp.max(jnp.abs(ref)))
    for key, f, args in [("fwd", fwd, (x, w)), ("dgrad", dgrad, (x, w, g)),
                         ("wgrad", wgrad, (x, w, g)), ("bwd", both, (x, w, g))]:
        t = _time(f, *args, repeats=repeats)
        scale = 2 if key == "bwd" else 1
        rec[f"{key}_ms"] = round(t * 1e3, 2)
        rec[f"{key}_gflops"] = round(scale * gflop / t, 1)  # direct-convolution FLOPs
    rec["load"] = round(os.getloadavg()[0], 2)
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--shapes", default="64x32x128x128,64x16x256x256,64x8x512x512",
                   help="comma-separated NxHWxCINxCOUT")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--impls", default="lax,gemm_wgrad,winograd")
    p.add_argument("--out", default=None, help="append JSON lines here")
    args = p.parse_args()
    for shape in args.shapes.split(","):
        n, hw, cin, cout = (int(v) for v in shape.split("x"))
        for impl in args.impls.split(","):
            rec = bench(impl, n, hw, cin, cout, args.repeats)
            line = json.dumps(rec)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    main()
