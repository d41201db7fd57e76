"""Paired comparisons over seeds: TKS - X per seed, with a 95 % confidence interval
(``docs/method.md`` §16).

Every loss of a setting is trained with the same seeds (initialisation, data order,
augmentation), so run ``s`` of TKS and run ``s`` of loss X form a pair. The difference
``d_s = m(TKS, s) - m(X, s)`` of a metric ``m`` is averaged over the common seeds; its 95 %
interval is ``mean(d) +- t_{0.975, n-1} * std(d, ddof=1) / sqrt(n)`` (Student's t: the seeds
are few and the differences roughly normal). The verdict of "TKS is better than X on m":

- ``held``: the whole interval lies on the better side of 0;
- ``not held``: the whole interval lies on the worse side;
- ``not separable``: the interval contains 0 (these seeds cannot tell the two apart).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

LEVEL = 0.95
# (key in a run summary, +1 if higher is better else -1, display scale, unit).
METRICS = (
    ("top1", +1, 100.0, "points"),
    ("aurc_logit", -1, 1.0, "x1000"),
    ("first_step_accuracy", +1, 100.0, "points"),
    ("one_step_drop", -1, 100.0, "points"),
    ("silhouette", +1, 1.0, ""),
    ("anytime_mean_steps", -1, 1.0, "steps"),
    ("anytime_energy_uj", -1, 1.0, "µJ"),
)
MIN_SEEDS = 3


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(p, df))


def paired_interval(diffs: Sequence[float], level: float = LEVEL) -> dict[str, float]:
    """Mean of paired differences and its two-sided ``level`` t interval.

    Args:
      diffs: one difference per seed (at least two, all finite).
      level: coverage of the interval.

    Returns:
      ``{'mean', 'std' (ddof = 1), 'n', 'low', 'high'}``.

    Raises:
      ValueError: fewer than two differences, a non-finite one, or ``level`` not in (0, 1).

    Examples:
      >>> r = paired_interval([1.0, 2.0, 3.0])
      >>> r["mean"], round(r["high"] - r["mean"], 4)  # t_{0.975, 2} * 1 / sqrt(3)
      (2.0, 2.4841)
    """
    d = np.asarray(diffs, np.float64)
    if d.ndim != 1 or len(d) < 2 or not np.all(np.isfinite(d)):
        raise ValueError(f"paired_interval needs >= 2 finite differences, got {list(d)}.")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    mean, std, n = float(d.mean()), float(d.std(ddof=1)), len(d)
    half = t_half_width(std, n, level)
    return {"mean": mean, "std": std, "n": n, "low": mean - half, "high": mean + half}


def t_half_width(std: float, n: int, level: float = LEVEL) -> float:
    """Half the two-sided ``level`` Student-t interval of a mean of ``n`` values with sample
    standard deviation ``std``: ``t(0.5 + level / 2, n - 1) * std / sqrt(n)``."""
    return t_quantile(0.5 + level / 2, n - 1) * std / math.sqrt(n)


def combine(verdicts: Sequence[str]) -> str:
    """One verdict for "better than every X": ``not held`` if any is, ``held`` if all are,
    else ``not separable``."""
    if not verdicts:
        raise ValueError("combine needs at least one verdict.")
    if "not held" in verdicts:
        return "not held"
    return "held" if all(v == "held" for v in verdicts) else "not separable"


def verdict(low: float, high: float, better: int) -> str:
    """``held`` / ``not held`` / ``not separable`` for an interval of TKS - X, where ``better``
    is +1 when higher is better and -1 when lower is better."""
    if better not in (1, -1):
        raise ValueError(f"better must be +1 or -1, got {better}.")
    lo, hi = (low, high) if better > 0 else (-high, -low)
    if lo > 0:
        return "held"
    if hi < 0:
        return "not held"
    return "not separable"


def _by_seed(runs: Mapping[str, Mapping[str, Any]], setting: str, num_steps: int,
             loss: str, key: str) -> dict[int, float]:
    out = {}
    for r in runs.values():
        if (r["setting"], r["num_steps"], r["loss"]) == (setting, num_steps, loss):
            value = r.get(key)
            if value is not None and np.isfinite(value):
                out[r["seed"]] = float(value)
    return out


def paired_differences(
    runs: Mapping[str, Mapping[str, Any]], setting: str, num_steps: int, *,
    reference: str = "tks", others: Sequence[str] = ("baseline", "ls", "tet"),
    metrics: Sequence[tuple] = METRICS, min_seeds: int = MIN_SEEDS,
) -> list[dict[str, Any]]:
    """``reference - other`` per common seed, per metric, with interval and verdict.

    Args:
      runs: run summaries (``aggregate.run_summary``) with ``setting``, ``num_steps``,
        ``loss``, ``seed`` and the metric keys.
      setting, num_steps: the runs compared.
      reference, others: the losses.
      metrics: ``(key, better, scale, unit)`` tuples (``METRICS``).
      min_seeds: pairs needed before an interval is reported (fewer: the row is left out).

    Returns:
      One dict per (other, metric): ``other``, ``metric``, ``unit``, ``seeds``, ``diffs``
      (scaled), ``mean``, ``std``, ``low``, ``high`` (scaled) and ``verdict``.
    """
    rows = []
    for other in others:
        for key, better, scale, unit in metrics:
            a = _by_seed(runs, setting, num_steps, reference, key)
            b = _by_seed(runs, setting, num_steps, other, key)
            seeds = sorted(set(a) & set(b))
            if len(seeds) < max(min_seeds, 2):
                continue
            diffs = [scale * (a[s] - b[s]) for s in seeds]
            ci = paired_interval(diffs)
            rows.append({"reference": reference, "other": other, "metric": key, "unit": unit,
                         "better": "higher" if better > 0 else "lower", "seeds": seeds,
                         "diffs": diffs, "mean": ci["mean"], "std": ci["std"],
                         "low": ci["low"], "high": ci["high"],
                         "verdict": verdict(ci["low"], ci["high"], better)})
    return rows


def format_paired(rows: Sequence[Mapping[str, Any]], setting: str) -> str:
    """Markdown table of ``paired_differences`` rows."""
    if not rows:
        return ""
    lines = [f"Paired differences on {setting}: TKS - X per seed, mean and 95 % t interval "
             "(\"held\": the interval lies on TKS's better side of 0).", "",
             "| metric | X | seeds | TKS - X | 95 % interval | better | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        unit = f" ({r['unit']})" if r["unit"] else ""
        lines.append(f"| {r['metric']}{unit} | {r['other']} | {len(r['seeds'])} | "
                     f"{r['mean']:+.2f} | [{r['low']:+.2f}, {r['high']:+.2f}] | {r['better']} | "
                     f"{r['verdict']} |")
    return "\n".join(lines) + "\n"
