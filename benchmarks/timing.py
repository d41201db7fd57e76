"""Timing helpers shared by the per-op micro-benchmarks (``strided_input_grad``,
``repeat_steps``): alternating rounds of jitted implementations, median milliseconds, JSON lines.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from benchmarks import train_step


def add_round_args(p: argparse.ArgumentParser) -> None:
    """``--rounds``, ``--repeats`` and ``--out`` (append JSON lines)."""
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds of all")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per round")
    p.add_argument("--out", default=None, help="append JSON lines here")


def median_ms(f: Callable, *args, repeats: int) -> float:
    """Median wall milliseconds of ``repeats`` calls of ``f(*args)``, each waited for."""
    import jax

    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def alternating_ms(impls: dict[str, Callable], args: tuple, rounds: int,
                   repeats: int) -> dict[str, list[float]]:
    """Per implementation, its median ms in each of ``rounds`` rounds that run them in turn
    (so that a slower or faster minute of the machine hits all of them alike)."""
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(rounds):
        for name, f in impls.items():
            times[name].append(median_ms(f, *args, repeats=repeats))
    return times


def append_jsonl(path: str | None, rec: dict) -> None:
    """``train_step.append_jsonl``, or nothing when ``path`` is None (no ``--out``)."""
    if path:
        train_step.append_jsonl(path, rec)
