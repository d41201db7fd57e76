r"""How the training step's cost grows with T, batch and width (not a test).

Three one-factor sweeps around a base configuration (by default batch 8, width 0.5, the model's
own T), for VGG-SNN and ResNet-19, each configuration in its own subprocess
(``benchmarks.train_step``: median step time after a warm-up step, the step's memory by XLA's
buffer assignment, peak RSS of the process):

- ``T``: 1, 2, 4, 8, 16, 32 steps, with and without ``remat``;
- ``batch``: 4, 8, 16, 32, 64;
- ``width``: 0.25, 0.5, 1.0.

Usage::

    .venv/bin/python -m benchmarks.scaling                  # run the sweeps, then report
    .venv/bin/python -m benchmarks.scaling --dry-run        # list the configurations
    .venv/bin/python -m benchmarks.scaling --report-only    # table + plot from the JSONL

Records are appended to ``benchmarks/results/scaling.jsonl`` (``--out``); ``--report-only``
writes ``scaling.md`` and ``scaling.png`` beside it. The "ideal" of the T and batch sweeps is
linear growth from the smallest point (time and memory proportional to T or batch); the table
gives each point's time and memory as a multiple of that ideal.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
from typing import Any

from benchmarks import train_step

RESULTS = os.path.join(train_step.RESULTS_DIR, "scaling.jsonl")
SWEEPS = {
    "T": (1, 2, 4, 8, 16, 32),
    "batch": (4, 8, 16, 32, 64),
    "width": (0.25, 0.5, 1.0),
}


def plan(models: list[str], batch: int, width: float, steps: int, warmup: int,
         sweeps: list[str] | None = None) -> list[dict[str, Any]]:
    """The configurations of the sweeps, each tagged with ``sweep`` (the factor it varies)."""
    sweeps = sweeps or list(SWEEPS)
    unknown = sorted(set(sweeps) - set(SWEEPS))
    if unknown:
        raise ValueError(f"unknown sweep(s) {unknown}; choose from {sorted(SWEEPS)}")
    configs = []
    for model in models:
        base = {"model": model, "batch": batch, "width": width, "mode": "train",
                "steps": steps, "warmup": warmup, "source": "tks", "num_steps": 0,
                "options": {}}
        for sweep in sweeps:
            for value in SWEEPS[sweep]:
                if sweep == "T":
                    for remat in (False, True):
                        configs.append({**base, "num_steps": value, "options": {"remat": remat},
                                        "sweep": "T"})
                else:
                    configs.append({**base, sweep: value, "sweep": sweep})
    return configs


def _series(records: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Records grouped by (model, sweep, remat), each group sorted by the swept factor; the
    latest record wins for a repeated configuration."""
    latest: dict[tuple, dict[str, Any]] = {}
    for r in records:
        if r.get("mode") != "train" or "sweep" not in r:
            continue
        remat = bool((r.get("options") or {}).get("remat", False))
        factor = {"T": "num_steps", "batch": "batch", "width": "width"}[r["sweep"]]
        latest[(r["model"], r["sweep"], remat, r[factor])] = r
    groups: dict[tuple, list[dict[str, Any]]] = collections.defaultdict(list)
    for (model, sweep, remat, _), r in sorted(latest.items(), key=lambda kv: kv[0]):
        groups[(model, sweep, remat)].append(r)
    return dict(groups)


def _step_s(r: dict[str, Any]) -> float:
    return r["batch"] / r["img_per_s"]


def _xla_gb(r: dict[str, Any]) -> float | None:
    """The step's memory by XLA's buffer assignment: arguments + outputs + temporaries, less
    the outputs that alias (donated) arguments; None for records without it."""
    m = r.get("xla_memory_mb")
    if not m:
        return None
    return (m["argument"] + m["output"] + m["temp"] - m.get("alias", 0.0)) / 1024


def table_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per measured point: step time, XLA's memory of the step and the process's peak
    RSS; for the T and batch sweeps, time and XLA memory as multiples of linear growth from the
    sweep's smallest point (1.0 = linear; below 1 = fixed costs amortise; above 1 = worse than
    linear). Peak RSS also holds the runtime and the compiler (about 1 GB here), so it is
    reported but not compared with linear growth."""
    rows = []
    for (model, sweep, remat), group in _series(records).items():
        factor = {"T": "num_steps", "batch": "batch", "width": "width"}[sweep]
        first = group[0]
        for r in group:
            row = {"model": model, "sweep": sweep, "remat": remat, "value": r[factor],
                   "step_s": _step_s(r), "xla_gb": _xla_gb(r),
                   "peak_rss_gb": r["peak_rss_mb"] / 1024,
                   "compile_s": r.get("compile_s"), "time_vs_linear": None,
                   "memory_vs_linear": None}
            if sweep in ("T", "batch"):
                k = r[factor] / first[factor]
                row["time_vs_linear"] = _step_s(r) / (k * _step_s(first))
                if row["xla_gb"] is not None and _xla_gb(first):
                    row["memory_vs_linear"] = row["xla_gb"] / (k * _xla_gb(first))
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    out = ["| model | sweep | remat | value | step s | time / linear | XLA memory GB "
           "| memory / linear | peak RSS GB | compile s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(
            f"| {r['model']} | {r['sweep']} | {'yes' if r['remat'] else 'no'} | {r['value']:g} "
            f"| {r['step_s']:.3f} | {fmt(r['time_vs_linear'], '.2f')} "
            f"| {fmt(r['xla_gb'], '.3f')} | {fmt(r['memory_vs_linear'], '.2f')} "
            f"| {r['peak_rss_gb']:.2f} | {fmt(r['compile_s'], '.0f')} |")
    return "\n".join(out) + "\n"


def plot(records: list[dict[str, Any]], path: str) -> None:
    """Step time and peak RSS against each factor (log-log), with the linear ideal dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _series(records)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for col, sweep in enumerate(SWEEPS):
        factor = {"T": "num_steps", "batch": "batch", "width": "width"}[sweep]
        for (model, s, remat), group in groups.items():
            if s != sweep:
                continue
            xs = [r[factor] for r in group]
            label = f"{model}{' remat' if remat else ''}"
            mem = [_xla_gb(r) for r in group]
            if any(m is None for m in mem):  # older records: peak RSS instead
                mem = [r["peak_rss_mb"] / 1024 for r in group]
            for row, ys in ((0, [_step_s(r) for r in group]), (1, mem)):
                ax = axes[row, col]
                (line,) = ax.plot(xs, ys, "o-", label=label)
                if sweep in ("T", "batch"):
                    ax.plot(xs, [ys[0] * x / xs[0] for x in xs], "--", color=line.get_color(),
                            alpha=0.4)
        for row, what in ((0, "step time (s)"), (1, "XLA memory of the step (GB)")):
            ax = axes[row, col]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(sweep)
            ax.set_ylabel(what)
            ax.grid(True, which="both", alpha=0.3)
        if axes[0, col].get_legend_handles_labels()[0]:
            axes[0, col].legend(fontsize=7)
    fig.suptitle("Training step cost (dashed: linear from the smallest point)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def report(path: str) -> str:
    """Writes ``scaling.md`` and ``scaling.png`` next to ``path``; returns the table."""
    records = load(path)
    text = markdown(table_rows(records))
    stem = os.path.splitext(path)[0]
    with open(stem + ".md", "w") as f:
        f.write(text)
    plot(records, stem + ".png")
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="vgg_snn,resnet19")
    p.add_argument("--sweeps", default=",".join(SWEEPS), help="subset of T,batch,width")
    p.add_argument("--batch", type=int, default=8, help="batch of the T and width sweeps")
    p.add_argument("--width", type=float, default=0.5, help="width of the T and batch sweeps")
    p.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--out", default=RESULTS)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)

    if not args.report_only:
        configs = plan(args.models.split(","), args.batch, args.width, args.steps, args.warmup,
                       args.sweeps.split(","))
        for i, cfg in enumerate(configs):
            if args.dry_run:
                print(json.dumps(cfg))
                continue
            sweep = cfg.pop("sweep")
            rec = train_step.run_in_subprocess(cfg)
            rec["sweep"] = sweep
            train_step.append_jsonl(args.out, rec)
            print(f"[{i + 1}/{len(configs)}] {cfg['model']} {sweep} T={rec['num_steps']} "
                  f"b={cfg['batch']} w={cfg['width']} {cfg['options']}: "
                  f"{cfg['batch'] / rec['img_per_s']:.3f} s/step, "
                  f"{rec['peak_rss_mb'] / 1024:.2f} GB", flush=True)
        if args.dry_run:
            print(f"{len(configs)} configurations")
            return
    print(report(args.out))


if __name__ == "__main__":
    main()
