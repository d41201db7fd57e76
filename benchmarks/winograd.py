"""Winograd F(2x2, 3x3) convolution on XLA:CPU against ``lax.conv_general_dilated``.

A 3x3 stride-1 convolution computes each 2x2 output tile from a 4x4 input tile with 16
elementwise products per channel pair instead of 36 (Lavin & Gray 2016): the input and weight
transforms are additions, the products over channels become 16 GEMMs
``[M, Cin] @ [Cin, Cout]`` (M = number of tiles), which is where XLA:CPU is fastest. This
microbenchmark times forward, input gradient and weight gradient of one layer for the
formulation in ``tks_jax/models/kernels/winograd.py`` (chunked over the batch) and for lax.

Usage::

    .venv/bin/python -m benchmarks.winograd --shapes 64x32x128x128,64x16x256x256,64x8x512x512
"""

from __future__ import annotations

import argparse
import json

from benchmarks import conv_backward
from tks_jax.models import kernels


def conv_gemm_wgrad(x, w):
    """The current default path: lax forward / input grad, im2col GEMM weight gradient."""
    return kernels.conv_gemm_weight_grad(x, w, (1, 1), ((1, 1), (1, 1)))


def conv_winograd(x, w):
    return kernels.conv3x3(x, w)


IMPLS = {"lax": conv_backward.conv_lax, "gemm_wgrad": conv_gemm_wgrad, "winograd": conv_winograd}


def bench(impl: str, n: int, hw: int, cin: int, cout: int, repeats: int) -> dict:
    return conv_backward.bench_conv(IMPLS[impl], impl, n, hw, cin, cout, repeats)


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
