"""The gradient of a static stem's broadcast over T on XLA:CPU: a reduction against additions.

Not a test. A static-image stem runs its conv and BatchNorm once on ``[B, ...]`` and repeats the
result over T (``Norm``); the backward pass sums the T step gradients. For the stems of the zoo
(ResNet-19 at full and half width, batch 16 and 32; SEW-ResNet's ImageNet stem; T = 10) this
times, in alternating rounds, the vector-Jacobian product of

- ``reduce``: ``jnp.broadcast_to`` (autodiff makes the sum a reduction over the leading axis);
- ``adds``: ``layers.repeat_steps`` (the sum as additions of the T slices), what the models use;

and prints the median milliseconds of each with the largest relative difference between them.

    .venv/bin/python -m benchmarks.repeat_steps --out benchmarks/results/repeat_steps.jsonl
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks import timing

# T, B, side, channels of the stem's output: ResNet-19 full / half width at batch 16 and 32,
# SEW-ResNet's ImageNet stem (112x112 after its stride-2 7x7 conv), a T = 10 run.
CASES = [
    (4, 16, 32, 128), (4, 16, 32, 64), (4, 32, 32, 128), (4, 32, 32, 64),
    (4, 16, 112, 64), (10, 16, 32, 64),
]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    timing.add_round_args(p)
    args = p.parse_args(argv)

    from tks_jax.training import xla_env

    xla_env.apply_recommended_xla_flags()  # the XLA:CPU flags train.py runs with
    import jax
    import jax.numpy as jnp
    import numpy as np

    from tks_jax.models import layers

    def vjp_of(repeat, shape):
        return jax.jit(lambda g: jax.vjp(repeat, jnp.zeros(shape, jnp.float32))[1](g)[0])

    print(f"{'T x B x HW x C':22s} {'reduce ms':>9s} {'adds ms':>8s} {'ratio':>6s}")
    for t, b, hw, c in CASES:
        shape = (b, hw, hw, c)
        impls = {
            "reduce": vjp_of(lambda x, t=t: jnp.broadcast_to(x[None], (t,) + x.shape), shape),
            "adds": vjp_of(lambda x, t=t: layers.repeat_steps(x, t), shape),
        }
        g = jnp.asarray(np.random.default_rng(0).standard_normal((t,) + shape), jnp.float32)
        ref, out = (jax.block_until_ready(f(g)) for f in impls.values())
        err = float(jnp.max(jnp.abs(ref - out)) / jnp.max(jnp.abs(ref)))
        times = timing.alternating_ms(impls, (g,), args.rounds, args.repeats)
        med = {name: statistics.median(v) for name, v in times.items()}
        label = f"{t}x{b}x{hw}x{c}"
        print(f"{label:22s} {med['reduce']:9.1f} {med['adds']:8.1f} "
              f"{med['reduce'] / med['adds']:5.1f}x   (max rel diff {err:.1e})")
        timing.append_jsonl(args.out, {
            "steps": t, "batch": b, "hw": hw, "channels": c, "reduce_ms": times["reduce"],
            "adds_ms": times["adds"], "max_rel_diff": err, "load": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d %H:%M"),
        })


if __name__ == "__main__":
    main()
