"""Winograd F(4x4, 3x3) against F(2x2, 3x3) on XLA:CPU, per layer and in the training step.

F(m x m, 3x3) computes each m x m output tile from an (m+2) x (m+2) input tile with (m+2)^2
products per channel pair: 16 per 4 outputs for F(2x2) (2.25x fewer than the direct
convolution), 36 per 16 outputs for F(4x4) (4x fewer), and F(4x4)'s transformed tiles are
2.25x the input instead of 4x. This prototype builds both from the matrices of Lavin & Gray
(2016) (``MATRICES``; transforms written as additions, the batch in chunks, both gradients
Winograd; the tile transforms of both gradients are the kernels' own,
``tks_jax/models/kernels/winograd.py`` and ``winograd_f4.py``), and times

- one layer: forward, input gradient and weight gradient for each tile and chunk budget;
- the ResNet-19 training step with every weight gradient F(2x2) against F(4x4) for layers of
  at least ``--min-hw`` pixels a side and ``--min-channels`` channels (what the kernels do at
  16 and 128), in alternating rounds.

The kernels use F(4x4) for the weight gradient only; its forward and input gradient stay a
prototype here (``benchmarks/README.md``, F(4x4, 3x3), says why). Usage::

    .venv/bin/python -m benchmarks.winograd_tiles --out benchmarks/results/winograd_tiles.jsonl
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import conv_backward
from tks_jax.models.kernels import chunking, winograd, winograd_f4

# (B^T, G, A^T) of F(m x m, 3x3): 1-D correlation y = A^T [(G g) * (B^T d)].
MATRICES = {
    2: tuple(np.asarray(a, np.float64) for a in (winograd.BT, winograd.G, winograd.AT)),
    4: (winograd_f4.BT, winograd_f4.G, winograd_f4.AT),
}
CHUNK_BYTES = 16 * 2**20
combine = winograd_f4.combine


def _widen(x):
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def input_tiles(x, m: int):
    """``B^T d B`` for every (m+2)^2 tile of the zero-padded ``x [n, h, w, c]`` (the kernels')."""
    if m == 2:
        return winograd.input_tiles(x)
    n, h, w, _ = x.shape
    return winograd_f4.input_tiles(x), (n, -(-h // m), -(-w // m))


def output_tiles(mm, n, p, q, h, w, m: int):
    """``A^T M A`` for every tile, assembled into ``[n, h, w, O]``."""
    at, a = MATRICES[m][2], m + 2
    o = mm[0].shape[-1]
    mm = [[mm[a * u + v].reshape(n, p, q, o) for v in range(a)] for u in range(a)]
    rows = [combine(at, [mm[u][v] for u in range(a)]) for v in range(a)]  # rows[v][i]
    y = jnp.stack([jnp.stack(combine(at, [rows[v][i] for v in range(a)]), axis=3)
                   for i in range(m)], axis=2)  # [n, P, i, Q, j, O]
    return y.reshape(n, m * p, m * q, o)[:, :h, :w]


def weight_tiles(w, m: int):
    """``G w G^T``: (m+2)^2 arrays ``[Cin, Cout]``."""
    gm = MATRICES[m][1]
    dtype, w = w.dtype, _widen(w)
    tiles = []
    for r in combine(gm, [w[0], w[1], w[2]]):
        tiles.extend(combine(gm, [r[0], r[1], r[2]]))
    return [t.astype(dtype) for t in tiles]


def _mm(a, b, ca, cb):
    return jax.lax.dot_general(a, b, (((ca,), (cb,)), ((), ())),
                               preferred_element_type=jnp.promote_types(a.dtype, jnp.float32))


def _tile_bytes(x, m):
    _, h, w, c = x.shape
    return (m + 2) ** 2 * (-(-h // m)) * (-(-w // m)) * c * max(4, x.dtype.itemsize)


def forward(x, u, m, chunk_bytes, transpose_u=False):
    n, h, w, _ = x.shape
    a2 = (m + 2) ** 2
    chunk = chunking.chunk_size(n, _tile_bytes(x, m), chunk_bytes)

    def one(xc):
        v, (nc, p, q) = input_tiles(xc, m)
        mm = [_mm(v[k], u[k], 1, 1 if transpose_u else 0) for k in range(a2)]
        return output_tiles(mm, nc, p, q, h, w, m).astype(x.dtype)

    if chunk == n:
        return one(x)
    y = jax.lax.map(one, chunking.split(x, chunk))
    return y.reshape((n,) + y.shape[2:])


def weight_grad(x, g, m, chunk_bytes):
    """The weight gradient by F(m x m, 3x3) from the kernels' per-chunk tile gradients, as its
    own loop over chunks of the batch."""
    kernel = winograd if m == 2 else winograd_f4
    chunk = chunking.chunk_size(x.shape[0], _tile_bytes(x, m) + _tile_bytes(g, m), chunk_bytes)
    return kernel.weight_from_tiles(
        chunking.sum_over_chunks(kernel.weight_grad_tiles, (x, g), chunk))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv3x3(x, w, m: int = 4, chunk_bytes: int = CHUNK_BYTES):
    """3x3 "SAME" stride-1 NHWC/HWIO convolution by F(m x m, 3x3), m in (2, 4)."""
    return forward(x, weight_tiles(w, m), m, chunk_bytes)


def _conv3x3_fwd(x, w, m, chunk_bytes):
    return conv3x3(x, w, m, chunk_bytes), (x, w)


def _conv3x3_bwd(m, chunk_bytes, res, g):
    x, w = res
    dx = forward(g, weight_tiles(w[::-1, ::-1], m), m, chunk_bytes, transpose_u=True)
    return dx.astype(x.dtype), weight_grad(x, g, m, chunk_bytes).astype(w.dtype)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def layer_records(shapes: list[str], chunks_mb: list[int], repeats: int) -> list[dict]:
    from tks_jax.models import kernels

    recs = []
    for shape in shapes:
        n, hw, cin, cout = (int(v) for v in shape.split("x"))
        f2 = functools.partial(kernels.conv3x3, f4_weight_grad_min_side=2**31 - 1)
        rec = conv_backward.bench_conv(f2, "kernel F(2x2)", n, hw, cin, cout, repeats)
        recs.append(rec | {"tile": 2, "chunk_mb": 16})
        print(json.dumps(recs[-1]), flush=True)
        for mb in chunks_mb:
            fn = functools.partial(conv3x3, m=4, chunk_bytes=mb * 2**20)
            rec = conv_backward.bench_conv(fn, "F(4x4)", n, hw, cin, cout, repeats)
            recs.append(rec | {"tile": 4, "chunk_mb": mb})
            print(json.dumps(recs[-1]), flush=True)
    return recs


def step_records(
    model: str, width: float, batch: int, min_hw: int, min_channels: int, rounds: int
) -> list[dict]:
    """Train-step time, weight gradients all F(2x2) against F(4x4) for layers of at least
    ``min_hw`` pixels a side and ``min_channels`` channels (the kernels' default at 16 and
    128), alternating in one process."""
    from benchmarks import train_step

    default_rule = winograd.uses_f4_weight_grad
    rules = {
        "f2_weight_grad": lambda x_shape, w_shape, dtype, *_: False,
        "f4_weight_grad": lambda x_shape, w_shape, dtype, *_: default_rule(
            x_shape, w_shape, dtype, min_hw, min_channels
        ),
    }
    steps = {}
    for variant, rule in rules.items():
        winograd.uses_f4_weight_grad = rule
        try:
            step, args, _ = train_step.build_step({"model": model, "batch": batch, "width": width,
                                                   "mode": "train", "source": "tks",
                                                   "options": {}})
            state, x, y = args
            state, loss = step(state, x, y)  # compiles with this variant (the state is donated)
            jax.block_until_ready(loss)
        finally:
            winograd.uses_f4_weight_grad = default_rule
        steps[variant] = [step, state, x, y]
    times: dict[str, list[float]] = {v: [] for v in steps}
    for _ in range(rounds):
        for variant, run in steps.items():
            step, state, x, y = run
            for _ in range(3):
                t0 = time.perf_counter()
                state, loss = step(state, x, y)
                jax.block_until_ready(loss)
                times[variant].append(time.perf_counter() - t0)
            run[1] = state
    return [{"model": model, "width": width, "batch": batch, "variant": v, "min_hw": min_hw,
             "min_channels": min_channels, "median_s": round(statistics.median(ts), 3),
             "times_s": [round(t, 3) for t in ts], "load": round(os.getloadavg()[0], 2)}
            for v, ts in times.items()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shapes", default="64x32x128x128,64x16x256x256,64x8x512x512",
                   help="layers NxHWxCinxCout (ResNet-19 full width, T=4 x batch 16)")
    p.add_argument("--chunks-mb", default="16,1024", help="F(4x4) tile budgets (MB)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--widths", default="1.0,0.5", help="ResNet-19 widths of the step runs")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--min-hw", type=int, default=16)
    p.add_argument("--min-channels", type=int, default=128)
    p.add_argument("--out", default=None, help="JSON lines file to append to")
    args = p.parse_args(argv)
    from benchmarks import train_step

    # As the other benchmarks: the memory-minimising scheduler unless XLA_FLAGS says otherwise
    # (read when the first computation creates the backend, i.e. below).
    os.environ.setdefault("XLA_FLAGS", train_step.RECOMMENDED_XLA_FLAGS)
    recs = layer_records(args.shapes.split(","), [int(v) for v in args.chunks_mb.split(",")],
                         args.repeats)
    for width in (float(v) for v in args.widths.split(",") if v):
        for rec in step_records("resnet19", width, 16, args.min_hw, args.min_channels,
                                args.rounds):
            recs.append(rec)
            print(json.dumps(rec), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            for rec in recs:
                f.write(json.dumps(rec | {"date": time.strftime("%Y-%m-%d")}) + "\n")


if __name__ == "__main__":
    main()
