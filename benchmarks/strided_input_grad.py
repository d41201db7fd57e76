"""The input gradient of a strided convolution on XLA:CPU: XLA's against the GEMM + col2im.

Not a test. For the strided convolutions of ResNet-19 (T = 4, batch 16, so 64 images; the
3x3 stride-2 convolution that opens stages 2 and 3 and the 1x1 stride-2 shortcut beside it,
at full and half width) times, in alternating rounds,

- ``xla``: the gradient JAX derives (a convolution over the zero-dilated output gradient);
- ``col2im``: ``kernels.conv.col2im_input_grad`` (one GEMM with every tap, then each tap's
  plane spread onto the input grid and summed), what the models' convolutions use on CPU;

and prints the median milliseconds of each with the largest relative difference between them.

    .venv/bin/python -m benchmarks.strided_input_grad \
        --out benchmarks/results/strided_input_grad.jsonl
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks import timing

# n, input side, Cin, Cout, kernel: ResNet-19's strided convolutions at width 1.0 and 0.5.
LAYERS = [
    (64, 32, 128, 256, 3), (64, 16, 256, 512, 3), (64, 32, 128, 256, 1), (64, 16, 256, 512, 1),
    (64, 32, 64, 128, 3), (64, 16, 128, 256, 3), (64, 32, 64, 128, 1), (64, 16, 128, 256, 1),
]


def _impls(x_shape, pad) -> dict:
    """Both input gradients of the stride-2 convolution with input ``x_shape``, jitted."""
    import jax
    import jax.numpy as jnp

    from tks_jax.models.kernels import conv

    def xla(g, w):
        def fwd(x):
            return jax.lax.conv_general_dilated(x, w, (2, 2), pad, dimension_numbers=conv.NHWC)

        return jax.vjp(fwd, jnp.zeros(x_shape, jnp.float32))[1](g)[0]

    return {
        "xla": jax.jit(xla),
        "col2im": jax.jit(lambda g, w: conv.col2im_input_grad(g, w, x_shape, (2, 2), pad)),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    timing.add_round_args(p)
    args = p.parse_args(argv)

    from tks_jax.training import xla_env

    xla_env.apply_recommended_xla_flags()  # the XLA:CPU flags train.py runs with
    import jax
    import jax.numpy as jnp
    import numpy as np

    print(f"{'layer NxHWxCinxCout, kernel':30s} {'xla ms':>8s} {'col2im ms':>9s} {'ratio':>6s}")
    for n, hw, cin, cout, k in LAYERS:
        pad = ((k // 2, k // 2),) * 2
        x_shape = (n, hw, hw, cin)
        rng = np.random.default_rng(0)
        w = jnp.asarray(rng.standard_normal((k, k, cin, cout)) / np.sqrt(k * k * cin), jnp.float32)
        ho = (hw + 2 * (k // 2) - k) // 2 + 1
        g = jnp.asarray(rng.standard_normal((n, ho, ho, cout)), jnp.float32)

        impls = _impls(x_shape, pad)
        ref, out = (jax.block_until_ready(f(g, w)) for f in impls.values())
        err = float(jnp.max(jnp.abs(ref - out)) / jnp.max(jnp.abs(ref)))
        times = timing.alternating_ms(impls, (g, w), args.rounds, args.repeats)
        med = {name: statistics.median(t) for name, t in times.items()}
        label = f"{n}x{hw}x{cin}x{cout}, {k}x{k}"
        ratio = med["xla"] / med["col2im"]
        print(f"{label:30s} {med['xla']:8.1f} {med['col2im']:9.1f} {ratio:5.2f}x"
              f"   (max rel diff {err:.1e})")
        timing.append_jsonl(args.out, {
            "n": n, "hw": hw, "cin": cin, "cout": cout, "kernel": k, "stride": 2,
            "xla_ms": times["xla"], "col2im_ms": times["col2im"], "max_rel_diff": err,
            "load": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M"),
        })


if __name__ == "__main__":
    main()
