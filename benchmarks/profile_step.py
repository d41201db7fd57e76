"""Where a training step's time goes on XLA:CPU: per-op times from a ``jax.profiler`` trace.

Not a test. Builds the step that ``benchmarks/train_step.py`` times (``build_step``: forward
over all steps, CE of the mean logits, backward, AdamW), traces a few executions, reads the
trace back with ``jax.profiler.ProfileData`` and prints the XLA:CPU ops grouped by kind
(convolution, dot/GEMM, fusion, copy/transpose, ...) and by role (conv forward / input grad /
weight grad, BN, LIF), how many of the thread pool's cores each role keeps busy (and how many
core-seconds it leaves idle: an op that runs as a single task holds up the step while the
other cores wait), and the slowest single ops, with their share of the traced time. Run on an
idle machine for absolute numbers; shares are meaningful under load too.

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
from collections.abc import Callable


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


# XLA:CPU's intra-op thread pool marks each task a worker runs with these two events (zero
# duration); the thread that runs an op's thunk records the op itself as one event.
REGION_START = "ThreadpoolListener::StartRegion"
REGION_STOP = "ThreadpoolListener::StopRegion"


def _is_op(name: str) -> bool:
    """An XLA:CPU thunk event (named after its HLO instruction), not a runtime event."""
    return bool(re.match(r"^[a-z][\w\-]*(\.\d+)*$", name)) and not name.startswith(
        ("thunk", "pjit", "jit", "execute")
    )


def xla_thread_events(prof) -> dict[str, list[tuple[str, int, int]]]:
    """The events ``(name, start_ns, duration_ns)`` of every host thread that runs XLA:CPU
    work, from a ``jax.profiler.ProfileData``: the intra-op pool's threads (op events and task
    markers) and the client thread that starts each execution (it runs the first ops itself;
    its op events). Op events carry the HLO instruction name (``_is_op``); Python and runtime
    events stay out."""
    threads: dict[str, list[tuple[str, int, int]]] = {}
    for plane in prof.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            if not line.name.startswith(("tf_XLAEigen", "tf_XLAPjRtCpuClient")):
                continue
            # The client thread's one task marker spans its wait for the pool: only its op
            # events are work.
            pool = line.name.startswith("tf_XLAEigen")
            threads[line.name] = [
                (ev.name, ev.start_ns, ev.duration_ns)
                for ev in line.events
                if _is_op(ev.name) or (pool and ev.name in (REGION_START, REGION_STOP))
            ]
    return threads


def core_occupancy(
    threads: dict[str, list[tuple[str, int, int]]],
    group: Callable[[str], str] = lambda name: name,
    cores: int | None = None,
) -> tuple[dict[str, float], dict[str, float], dict[str, float], dict[int, float]]:
    """How many of the pool's threads work on each op, from a trace's events.

    Args:
      threads: per thread of the pool, its events ``(name, start_ns, duration_ns)``: op events
        (``_is_op``) and the task markers ``REGION_START`` / ``REGION_STOP``.
      group: what to count the ops under (default: each op by itself), e.g. their role.
      cores: how many threads could work at once (default: as many as ``threads``).

    A thread is busy while one of its op events is open (the innermost one counts: a loop's
    event encloses its body's ops) or between a task's start and stop marker. A task works for
    the op open on another thread at the time; with none open, for the op that ended last (an
    Eigen contraction returns before its tasks finish).

    Returns:
      ``(cpu_ns, wall_ns, idle_ns, busy_ns)``: per group, thread-nanoseconds spent on its ops,
      nanoseconds during which at least one thread worked on them (so ``cpu / wall`` is the
      cores it kept busy) and core-nanoseconds left idle meanwhile (``cores`` minus the busy
      threads, shared among the groups running then: an op that runs as one task while
      nothing else can run leaves a core idle); and the time during which 0, 1, 2, ...
      threads were busy.
    """
    cores = len(threads) if cores is None else cores
    names = sorted(threads)
    points = []  # (time, order, thread, kind, name): stops before starts at equal times
    for i, t in enumerate(names):
        region_open = None
        for name, start, dur in sorted(threads[t], key=lambda e: (e[1], e[0])):
            if name == REGION_START:
                region_open = start
            elif name == REGION_STOP:
                if region_open is not None:
                    points += [(region_open, 1, i, "task", None), (start, 0, i, "task", None)]
                    region_open = None
            elif _is_op(name):
                points += [(start, 1, i, "op", name), (start + dur, 0, i, "op", name)]
    points.sort(key=lambda p: (p[0], p[1]))
    ops_open: list[list[str]] = [[] for _ in names]
    tasks_open = [0] * len(names)
    cpu: dict[str, float] = collections.defaultdict(float)
    wall: dict[str, float] = collections.defaultdict(float)
    idle: dict[str, float] = collections.defaultdict(float)
    busy: dict[int, float] = collections.defaultdict(float)
    last_ended = None
    for k, (t, order, i, kind, name) in enumerate(points):
        if k:
            dt = t - points[k - 1][0]
            owners = set()
            n_busy = 0
            for j in range(len(names)):
                if ops_open[j]:
                    owner = ops_open[j][-1]
                elif tasks_open[j]:
                    others = [ops_open[o][-1] for o in range(len(names)) if ops_open[o]]
                    owner = others[0] if others else last_ended
                else:
                    continue
                n_busy += 1
                if owner is not None:
                    cpu[group(owner)] += dt
                    owners.add(group(owner))
            for owner in owners:
                wall[owner] += dt
                idle[owner] += max(cores - n_busy, 0) * dt / len(owners)
            busy[n_busy] += dt
        if kind == "task":
            tasks_open[i] += 1 if order else -1
        elif order:
            ops_open[i].append(name)
        else:
            ops_open[i].remove(name)
            last_ended = name
    return dict(cpu), dict(wall), dict(idle), dict(busy)


def _print_occupancy(threads, origin: dict[str, str], steps: int, top: int) -> None:
    """Cores kept busy, per role and for the ops that leave the most core-seconds idle."""
    if not any(n == REGION_START for evs in threads.values() for n, _, _ in evs):
        print("cores by role: the trace has no thread-pool task markers (other XLA version?)")
        return

    def role(name: str) -> str:
        r = _role(origin.get(name, ""))
        return f"{r} (loop control)" if name.startswith("while") else r

    n = sum(1 for t in threads if t.startswith("tf_XLAEigen")) or len(threads)

    def table(cpu, wall, idle, rows, label):
        print(f"  {label:46s} {'cpu s':>7s} {'wall s':>7s} {'cores':>5s} {'idle core-s':>11s}")
        for r in sorted(cpu, key=lambda r: -idle[r])[:rows]:
            c, w, i = (v[r] / 1e9 / steps for v in (cpu, wall, idle))
            print(f"  {r[:46]:46s} {c:7.3f} {w:7.3f} {c / w if w else 0:5.2f} {i:11.3f}"
                  + (f"  {origin.get(r, '')[:70]}" if r in origin else ""))

    cpu, wall, idle, busy = core_occupancy(threads, role, n)
    span = sum(busy.values())
    print(f"cores by role ({n} pool threads; busy "
          + ", ".join(f"{k} threads {100 * t / span:.0f} %" for k, t in sorted(busy.items()))
          + " of the traced time; idle core-s: pool threads left idle while it ran, per step):")
    table(cpu, wall, idle, len(cpu), "role")
    print(f"the {top} ops that leave the most core-seconds idle:")
    table(*core_occupancy(threads, cores=n)[:3], top, "op")


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

    threads = xla_thread_events(prof)
    by_op: dict[str, float] = collections.defaultdict(float)
    for events in threads.values():
        for name, _, dur in events:
            if _is_op(name):
                by_op[name] += dur / 1e9 / args.steps
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
    _print_occupancy(threads, origin, args.steps, args.top)
    print(f"slowest {args.top} ops:")
    for name, s in sorted(by_op.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {name:32s} {s:8.3f} s  {100 * s / total:5.1f} %  {origin.get(name, '')[:90]}")


if __name__ == "__main__":
    main()
