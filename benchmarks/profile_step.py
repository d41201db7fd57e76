"""Where a training step's time goes on XLA:CPU: per-op times from a ``jax.profiler`` trace.

Not a test. Builds the same step as ``benchmarks/train_step.py`` (forward over all steps, CE of
the mean logits, backward, AdamW), traces a few executions, reads the trace back with
``jax.profiler.ProfileData`` and prints the XLA:CPU thunks grouped by kind (convolution,
dot/GEMM, fusion, copy/transpose, ...) and the slowest single ops, with their share of the
traced time. Run on an idle machine for absolute numbers; shares are meaningful under load too.

    .venv/bin/python -m benchmarks.profile_step --model vgg_snn --batch 16
    .venv/bin/python -m benchmarks.profile_step --model resnet19 --batch 16 --top 25
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import tempfile
import time


def _kind(name: str) -> str:
    n = name.lower()
    for key, kind in (
        ("convolution", "convolution"),
        ("conv", "convolution"),
        ("dot", "dot (GEMM)"),
        ("custom-call", "custom-call"),
        ("reduce-window", "reduce-window"),
        ("reduce", "reduce"),
        ("copy", "copy/transpose"),
        ("transpose", "copy/transpose"),
        ("while", "while (scan body excluded)"),
        ("fusion", "fusion (elementwise)"),
        ("concatenate", "concatenate/slice/pad"),
        ("slice", "concatenate/slice/pad"),
        ("pad", "concatenate/slice/pad"),
        ("dynamic-update", "concatenate/slice/pad"),
    ):
        if key in n:
            return kind
    return "other"


def build_step(model_name: str, batch: int, width: float, options: dict):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from benchmarks import arch
    from tks_jax import models
    from tks_jax.losses import mean_ce

    (h, w, c), num_steps = arch.INPUTS[model_name]
    model = models.get_model(model_name, num_classes=arch.NUM_CLASSES, width=width, **options)
    rng = np.random.default_rng(0)
    if model_name == "vgg_snn":
        x = rng.poisson(0.3, size=(num_steps, batch, h, w, c)).astype(np.float32)
    else:
        x = rng.standard_normal((batch, h, w, c)).astype(np.float32)
    y = jnp.asarray(rng.integers(0, arch.NUM_CLASSES, size=(batch,)).astype(np.int32))
    x = jnp.asarray(x)
    variables = jax.jit(lambda k: model.init(k, x, num_steps=num_steps, train=False))(
        jax.random.key(0)
    )
    tx = optax.adamw(6.25e-4, weight_decay=0.01)
    state = {
        "params": variables["params"],
        "batch_stats": variables.get("batch_stats", {}),
        "opt": tx.init(variables["params"]),
    }

    def step_fn(state, x, y):
        def loss_fn(p):
            logits, upd = model.apply(
                {"params": p, "batch_stats": state["batch_stats"]},
                x,
                num_steps=num_steps,
                train=True,
                mutable=["batch_stats"],
            )
            return mean_ce(logits, y), upd["batch_stats"]

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        u, opt = tx.update(grads, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], u), "batch_stats": stats,
                "opt": opt}, loss

    return jax.jit(step_fn, donate_argnums=0), state, x, y


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="vgg_snn")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--options", default="{}", help="JSON keyword arguments of get_model")
    p.add_argument("--steps", type=int, default=2, help="traced steps")
    p.add_argument("--top", type=int, default=15, help="slowest single ops to list")
    args = p.parse_args(argv)

    import jax

    step, state, x, y = build_step(args.model, args.batch, args.width, json.loads(args.options))
    hlo = step.lower(state, x, y).compile().as_text()
    # HLO instruction -> the JAX op it came from (layer path), to name the slowest ops.
    origin = {
        m.group(1): m.group(2).replace("jit(step_fn)/", "")
        for m in re.finditer(r'%([\w.\-]+) = .*?op_name="([^"]+)"', hlo)
    }
    state, loss = step(state, x, y)  # compile + warm-up
    jax.block_until_ready(loss)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with jax.profiler.trace(tmp):
            for _ in range(args.steps):
                state, loss = step(state, x, y)
                jax.block_until_ready(loss)
        wall = (time.perf_counter() - t0) / args.steps
        files = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)
        prof = jax.profiler.ProfileData.from_file(files[0])

    by_op: dict[str, float] = collections.defaultdict(float)
    for plane in prof.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            if "Eigen" not in line.name:  # ops run on XLA's intra-op thread pool
                continue
            for ev in line.events:
                name = ev.name
                # XLA:CPU thunks carry the HLO instruction name; skip Python / runtime events.
                if not re.match(r"^[a-z][\w\-]*(\.\d+)*$", name) or name.startswith(
                    ("thunk", "pjit", "jit", "execute")
                ):
                    continue
                by_op[name] += ev.duration_ns / 1e9 / args.steps
    by_kind: dict[str, float] = collections.defaultdict(float)
    for name, s in by_op.items():
        by_kind[_kind(name)] += s
    total = sum(by_kind.values())
    # By what the op computes (from its JAX origin): conv forward / input grad / weight grad,
    # the im2col copies of the weight gradient, BatchNorm, LIF, the rest.
    by_role: dict[str, float] = collections.defaultdict(float)
    for name, s in by_op.items():
        o = origin.get(name, "")
        backward = o.startswith("transpose(")
        if "conv_general_dilated" in o:
            role = "conv input grad" if backward else "conv forward"
        elif "/conv/" in o and "dot_general" in o:
            role = "conv weight grad (GEMM)"
        elif "/conv/" in o and backward:
            role = "conv weight grad (im2col copies)"
        elif "/norm/" in o or "/bn" in o:
            role = "normalisation " + ("backward" if backward else "forward")
        elif "/lif/" in o:
            role = "LIF " + ("backward" if backward else "forward")
        elif not o:
            role = "unattributed"
        else:
            role = "other " + ("backward" if backward else "forward")
        by_role[role] += s
    print(f"{args.model} b{args.batch} w{args.width} {args.options}: wall {wall:.3f} s/step, "
          f"op time {total:.3f} s/step (threads overlap ops; shares are of op time)")
    for kind, s in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:30s} {s:8.3f} s  {100 * s / total:5.1f} %")
    print("by role:")
    for role, s in sorted(by_role.items(), key=lambda kv: -kv[1]):
        print(f"  {role:34s} {s:8.3f} s  {100 * s / total:5.1f} %")
    print(f"slowest {args.top} ops:")
    for name, s in sorted(by_op.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {name:32s} {s:8.3f} s  {100 * s / total:5.1f} %  {origin.get(name, '')[:90]}")


if __name__ == "__main__":
    main()
