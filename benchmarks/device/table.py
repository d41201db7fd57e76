"""Markdown tables from the device check's result files (``benchmarks/device/check.py``).

    python -m benchmarks.device.table --out benchmarks/results/device   # writes table.md

Reads whatever of ``summary.json``, ``platform.json``, ``tests.json``, ``bench.jsonl`` and
``train.json`` exists (a stopped run leaves some out) and writes ``table.md`` beside them.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def _load(folder: str, name: str) -> Any:
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        if name.endswith(".jsonl"):
            return [json.loads(line) for line in f if line.strip()]
        return json.load(f)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _rows(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines


def _memory_mb(rec: dict[str, Any]) -> float | None:
    """Peak accelerator memory if measured, else the process's peak RSS (CPU runs)."""
    if rec.get("peak_device_mb") is not None:
        return rec["peak_device_mb"]
    return rec.get("peak_rss_mb")


def bench_rows(bench: list[dict[str, Any]]) -> list[list[str]]:
    """One row per training-step run (GEMM ceilings left out)."""
    rows = []
    for r in bench:
        if r.get("mode") != "train":
            continue
        ok = r.get("status") == "ok"
        backend = r.get("sj_backend") or "-"
        rows.append([
            r["model"], r["batch"], r["dtype"], r["framework"], backend,
            _num(r.get("img_per_s")) if ok else "-",
            _num(1e3 * r["step_s_median"]) if ok else "-",
            _num(_memory_mb(r), "{:.0f}") if ok else "-",
            _pct(r.get("frac_bf16_peak")) if ok else "-",
            _pct(r.get("frac_measured_gemm")) if ok else "-",
            r["status"] if ok else f"{r.get('status')}: {_short(r)}",
        ])
    return rows


def _short(r: dict[str, Any]) -> str:
    text = str(r.get("reason") or r.get("error") or "").strip().splitlines()
    return (text[-1] if text else "")[:120].replace("|", "/")


def ratio_rows(bench: list[dict[str, Any]]) -> list[list[str]]:
    """tks-jax over each SpikingJelly backend, per model, batch and dtype (runs that both
    finished): speed ratio (> 1: tks-jax faster) and memory ratio (< 1: tks-jax leaner)."""
    ours = {(r["model"], r["batch"], r["dtype"]): r for r in bench
            if r.get("framework") == "tks_jax" and r.get("status") == "ok"
            and r.get("mode") == "train"}
    rows = []
    for r in bench:
        if r.get("framework") != "spikingjelly" or r.get("status") != "ok":
            continue
        key = (r["model"], r["batch"], r["dtype"])
        if key not in ours:
            continue
        o = ours[key]
        mo, mt = _memory_mb(o), _memory_mb(r)
        same = "yes" if o.get("params") == r.get("params") else (
            f"NO ({o.get('params')} vs {r.get('params')})")
        rows.append([*key, r.get("sj_backend", "-"),
                     f"{o['img_per_s'] / r['img_per_s']:.2f}x",
                     f"{mo / mt:.2f}x" if mo and mt else "-", same])
    return rows


def render(folder: str) -> str:
    """The markdown report of the result files in ``folder``."""
    summary = _load(folder, "summary.json") or {}
    platform = _load(folder, "platform.json") or {}
    tests = _load(folder, "tests.json")
    bench = _load(folder, "bench.jsonl") or []
    train = _load(folder, "train.json")
    out = ["# Device check", ""]
    out.append(
        f"Mode: {summary.get('mode', '?')}; backend {summary.get('backend', '?')}, device "
        f"{summary.get('device_kind', '?')}, jax {summary.get('jax', '?')}; started "
        f"{summary.get('started', '?')}, budget {summary.get('budget_s', '?')} s."
    )
    out.append("")
    stages = summary.get("stages", {})
    out += _rows(["stage", "status", "seconds", "limit s"], [
        [k, v.get("status"), v.get("seconds", "-"), v.get("limit_s", "-")]
        for k, v in stages.items()
    ])
    out += ["", "## Platform checks", ""]
    rows = []
    for c in platform.get("checks", []):
        observed = {k: v for k, v in c.items()
                    if k not in ("check", "expected", "ok", "backend")}
        rows.append([c["check"], json.dumps(observed).replace("|", "/"), c.get("expected", "-"),
                     {True: "ok", False: "FAIL", None: "info"}[c.get("ok")]])
    out += _rows(["check", "observed", "expected", "result"], rows) if rows else ["(none)"]
    out += ["", "## Tests", ""]
    if tests:
        out.append(
            f"`pytest {' '.join(tests.get('selection', []))}`: {tests.get('passed', '?')} "
            f"passed, {tests.get('failures', '?')} failed, {tests.get('errors', '?')} errors, "
            f"{tests.get('skipped', '?')} skipped (exit {tests.get('exit_code')})."
        )
        for t in tests.get("failed_ids", []):
            out.append(f"- FAILED {t}")
    else:
        out.append("(not run)")
    out += ["", "## Training step", ""]
    peak = summary.get("bf16_peak") or {}
    gemm = summary.get("measured_bf16_gemm_tflops")
    out.append(
        f"FLOPs: conv + dense, analytic (`benchmarks/arch.py`; XLA's count in `bench.jsonl`). "
        f"Dense bf16 peak {_num(peak.get('tflops'), '{:.0f}')} TFLOP/s "
        f"({peak.get('source', '-')}); "
        f"measured bf16 GEMM {_num(gemm, '{:.3g}')} TFLOP/s. Memory: peak accelerator memory "
        "(JAX `peak_bytes_in_use`, torch `max_memory_allocated`), peak RSS on CPU."
    )
    out.append("")
    rows = bench_rows(bench)
    out += _rows(["model", "batch", "dtype", "framework", "SJ backend", "img/s", "step ms",
                  "memory MB", "of bf16 peak", "of bf16 GEMM", "status"], rows) if rows else [
        "(no runs)"]
    ratios = ratio_rows(bench)
    if ratios:
        out += ["", "tks-jax / SpikingJelly (speed > 1 and memory < 1 favour tks-jax):", ""]
        out += _rows(["model", "batch", "dtype", "SJ backend", "speed", "memory",
                      "same params"], ratios)
    out += ["", "## nmnist_synth training (time to accuracy)", ""]
    if train:
        evals = train.get("eval") or []
        last = evals[-1] if evals else None
        first = train.get("first_reached", {})
        out.append(
            f"Status {train.get('status')}; store simulated in {train.get('prepare_s', '-')} s, "
            f"training + evaluation {train.get('train_s', '-')} s."
        )
        out.append("")
        out += _rows(["after s", "step", "eval top-1"],
                     [[e[0], e[1], _pct(e[2])] for e in evals]) if evals else ["(no eval)"]
        out.append("")
        out.append("Logged train top-1 first reached: " + ", ".join(
            f"{_pct(float(k))} at {v[0]} s (step {v[1]})" if v else f"{_pct(float(k))} never"
            for k, v in first.items()) + ".")
        if last:
            out.append(f"Final eval top-1 {_pct(last[2])} at {last[0]} s.")
    else:
        out.append("(not run)")
    return "\n".join(out) + "\n"


def write_table(folder: str) -> str:
    """Writes ``folder/table.md`` and returns its path."""
    path = os.path.join(folder, "table.md")
    with open(path, "w") as f:
        f.write(render(folder))
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="folder of the result files")
    args = p.parse_args(argv)
    print(open(write_table(args.out)).read())


if __name__ == "__main__":
    main()
