"""Two results folders of the same plan, run as two variants (e.g. ``--set model.dtype=bfloat16``
against the default float32), compared run by run.

    python -m tks_jax.experiments.variants results/bf16/float32 results/bf16/bfloat16

Runs with the same setting, T, loss and seed form a pair (the seed fixes initialisation, data
order and augmentation, so the variant is the only difference). Per metric the difference
``variant - reference`` is averaged over the paired seeds with its 95 % t interval
(``paired.paired_interval``, ``docs/method.md`` §16). The question is usually "does the variant
change the result beyond seed noise?", so each row says ``not separable`` (the interval contains
0), ``higher`` or ``lower``, and gives the reference's own seed spread beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tks_jax.experiments import aggregate, paired, records, runner, summary

# The metrics compared: (key of ``aggregate.run_summary``, display scale, unit).
METRICS = (
    ("top1", 100.0, "%"),
    ("aurc_logit", 1.0, "x1000"),
    ("first_step_accuracy", 100.0, "%"),
)


def _summaries(out_dir: str) -> dict[tuple, dict[str, Any]]:
    runs = records.read_records(out_dir)
    if not runs:
        raise FileNotFoundError(f"{records.runs_path(out_dir)} holds no runs: run the study "
                                "first (python -m tks_jax.experiments.ablation --out ...).")
    out = {}
    for rec in runs.values():
        s = aggregate.run_summary(rec)
        out[(s["setting"], s["num_steps"], s["loss"], s["seed"])] = s
    return out


def overrides(out_dir: str) -> dict[str, Any]:
    """The config overrides a results folder was run with (``study.json``; {} when none)."""
    path = os.path.join(out_dir, runner.STUDY_JSON)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f).get("overrides", {})


def compare(reference_dir: str, variant_dir: str,
            metrics: Sequence[tuple] = METRICS) -> list[dict[str, Any]]:
    """Paired differences ``variant - reference`` per (setting, T, loss) and metric.

    Args:
      reference_dir, variant_dir: results folders (``runs.jsonl``) of the same plan.
      metrics: ``(key, scale, unit)`` tuples.

    Returns:
      One dict per (setting, T, loss, metric) with at least two paired seeds: ``setting``,
      ``num_steps``, ``loss``, ``metric``, ``unit``, ``seeds``, ``reference`` and ``variant``
      (scaled values per seed), ``reference_mean``, ``reference_std``, ``variant_mean``,
      ``mean``, ``low``, ``high`` (scaled difference and interval) and ``verdict``.

    Raises:
      ValueError: no run of one folder has a partner in the other.
      FileNotFoundError: a folder without runs.
    """
    ref, var = _summaries(reference_dir), _summaries(variant_dir)
    groups = sorted({k[:3] for k in ref} & {k[:3] for k in var})
    rows = []
    for group in groups:
        seeds = sorted(k[3] for k in ref if k[:3] == group and group + (k[3],) in var)
        if len(seeds) < 2:
            continue
        for key, scale, unit in metrics:
            a = [scale * ref[group + (s,)][key] for s in seeds]
            b = [scale * var[group + (s,)][key] for s in seeds]
            ci = paired.paired_interval([y - x for x, y in zip(a, b, strict=True)])
            verdict = ("not separable" if ci["low"] <= 0 <= ci["high"]
                       else "higher" if ci["low"] > 0 else "lower")
            rows.append({
                "setting": group[0], "num_steps": group[1], "loss": group[2], "metric": key,
                "unit": unit, "seeds": seeds, "reference": a, "variant": b,
                "reference_mean": float(np.mean(a)), "reference_std": float(np.std(a, ddof=1)),
                "variant_mean": float(np.mean(b)), "mean": ci["mean"], "low": ci["low"],
                "high": ci["high"], "verdict": verdict,
            })
    if not rows:
        raise ValueError(f"No run of {variant_dir} pairs with one of {reference_dir} on at least "
                         "two seeds (same setting, T, loss and seed).")
    return rows


def format_rows(rows: Sequence[Mapping[str, Any]], reference: str, variant: str) -> str:
    """Markdown table of ``compare`` rows."""
    lines = [f"Variant {variant} against reference {reference}: paired seeds, mean and 95 % t "
             "interval of variant - reference.", "",
             "| data | loss | metric | seeds | reference (mean ± std) | variant | "
             "variant - reference | 95 % interval | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['setting']} (T={r['num_steps']}) | {r['loss']} | {r['metric']} ({r['unit']}) "
            f"| {len(r['seeds'])} | {r['reference_mean']:.2f} ± {r['reference_std']:.2f} "
            f"| {r['variant_mean']:.2f} | {r['mean']:+.2f} | [{r['low']:+.2f}, {r['high']:+.2f}] "
            f"| {r['verdict']} |")
    return "\n".join(lines) + "\n"


def _label(out_dir: str) -> str:
    ov = overrides(out_dir)
    settings = ", ".join(summary.format_override(k, v) for k, v in sorted(ov.items()))
    return f"`{out_dir}`" + (f" ({settings})" if settings else " (no overrides)")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tks_jax.experiments.variants",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("reference", help="results folder of the reference variant")
    p.add_argument("variant", help="results folder of the variant")
    p.add_argument("--out", help="also write the table to this markdown file")
    args = p.parse_args(argv)
    try:
        rows = compare(args.reference, args.variant)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = format_rows(rows, _label(args.reference), _label(args.variant))
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
