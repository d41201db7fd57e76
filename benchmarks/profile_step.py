"""Where a training step's time goes on XLA:CPU: per-op times from a ``jax.profiler`` trace.

Not a test. Builds the step that ``benchmarks/train_step.py`` times (``build_step``: forward
over all steps, CE of the mean logits, backward, AdamW), traces a few executions, reads the
trace back with ``jax.profiler.ProfileData`` and prints the XLA:CPU ops grouped by kind
(convolution, dot/GEMM, fusion, copy/transpose, ...) and by role (conv forward / input grad /
weight grad, BN, LIF), and the slowest single ops, with their share of the traced time. Run
on an idle machine for absolute numbers; shares are meaningful under load too.

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
        ("while", "while (loop control; bodies are their own ops)"),
        ("fusion", "fusion (elementwise)"),
        ("concatenate", "concatenate/slice/pad"),
        ("slice", "concatenate/slice/pad"),
        ("pad", "concatenate/slice/pad"),
        ("dynamic-update", "concatenate/slice/pad"),
    ):
        if key in n:
            return kind
    return "other"


def _role(origin: str) -> str:
    """What an op computes, from the JAX origin (``op_name``) of its HLO instruction."""
    origin = re.sub(r"^jit\([^)]*\)/", "", origin)
    backward = origin.startswith("transpose(")
    conv_scopes = ("/conv/", "conv_general_dilated", "weight_grad", "input_grad", "winograd")
    if any(s in origin for s in conv_scopes):
        if "weight_grad" in origin:
            stage = "weight grad"
        elif "input_grad" in origin or backward:
            stage = "input grad"
        else:
            stage = "forward"
        if "im2col" in origin:
            part = "im2col copies"
        elif "winograd_gemm" in origin or "dot_general" in origin or (
            "conv_general_dilated" in origin and "winograd" not in origin
        ):
            part = "GEMM / XLA conv"
        elif "winograd" in origin:
            part = "Winograd tile transforms"
        else:
            part = "other"
        return f"conv {stage}: {part}"
    if "/norm" in origin or "/bn" in origin:
        return "normalisation " + ("backward" if backward else "forward")
    if "/lif" in origin:
        return "LIF " + ("backward" if backward else "forward")
    if not origin:
        return "unattributed"
    return "other " + ("backward" if backward else "forward")


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

    from benchmarks import train_step

    step, (state, x, y), _ = train_step.build_step({
        "model": args.model, "batch": args.batch, "width": args.width, "mode": "train",
        "source": "tks", "options": json.loads(args.options),
    })
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
    # By what the op computes (from its JAX origin): for the convolutions, which pass (forward,
    # input grad, weight grad; the kernels name their gradients with jax.named_scope) and which
    # part of it (GEMM or XLA's convolution, Winograd tile transforms, im2col copies); then
    # BatchNorm, LIF, the rest.
    by_role: dict[str, float] = collections.defaultdict(float)
    for name, s in by_op.items():
        by_role[_role(origin.get(name, ""))] += s
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
