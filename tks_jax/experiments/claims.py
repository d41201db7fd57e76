"""The paper's claims checked on a study (``evaluate_claims``, ``anytime_claims``).

1a/1b: TKS has the best top-1 / the lowest AURC; 2: tested with one step, TKS degrades less
than the baseline; 3: every step of TKS beats the same step of the baseline; 4: TKS separates
classes better (silhouette of the penultimate features); 2b (Fig. 3b): trained and tested at the
same T, TKS beats the baseline at every T. Anytime (``docs/method.md`` §14): A1: under the exit
rule TKS needs at most T/2 mean steps; A2 / A3: fewer mean steps / less energy than the
baseline.

Each claim has a ``verdict``: from the paired 95 % intervals over seeds where the study has
them (``paired``: ``held``, ``not held`` or ``not separable``), else from the means (``held`` /
``not held``, marked "means only" in the evidence). ``held`` (bool) is the order of the means.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tks_jax.experiments import paired, plan


def _two_se(a: dict, b: dict, scale: float = 1.0) -> float | None:
    """Twice the standard error of the difference of two seed means (None with one seed)."""
    if a["std"] is None or b["std"] is None:
        return None
    return 2 * scale * math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])


def _noise_note(diff: float, two_se: float | None) -> str:
    if two_se is None:
        return " (one seed: no noise estimate)"
    verdict = "beyond" if abs(diff) > two_se else "within"
    return f" ({verdict} seed noise: 2 x s.e. = {two_se:.2f})"


def _paired_verdict(rows: list[dict], metric: str, others: list[str]) -> tuple[str, str] | None:
    """(verdict over ``others``, evidence) from the paired rows of ``metric``; None if the
    study has no paired interval for one of them."""
    found = {r["other"]: r for r in rows if r["metric"] == metric and r["other"] in others}
    if not others or set(found) != set(others):
        return None
    verdict = paired.combine([found[x]["verdict"] for x in others])
    text = "; ".join(f"TKS - {x}: {found[x]['mean']:+.2f} [{found[x]['low']:+.2f}, "
                     f"{found[x]['high']:+.2f}]" for x in others)
    n = min(len(found[x]["seeds"]) for x in others)
    return verdict, f"paired 95 % intervals over {n} seeds: {text}"


def _finish(claim: dict[str, Any], rows: list[dict], metric: str | None,
            others: list[str]) -> dict[str, Any]:
    """Adds ``verdict`` (paired intervals of ``metric`` when available, else the means)."""
    found = _paired_verdict(rows, metric, others) if metric else None
    if found is None:
        claim["verdict"] = "held" if claim["held"] else "not held"
        claim["evidence"] += " (means only)"
    else:
        claim["verdict"] = found[0]
        claim["evidence"] += "; " + found[1]
    return claim


def evaluate_claims(groups: dict, sweep: dict,
                    paired_rows: dict[str, list[dict]] | None = None) -> list[dict[str, Any]]:
    """The paper's claims checked on a study.

    Args:
      groups: ``aggregate._group`` (mean / std / n over seeds per setting and loss).
      sweep: ``{loss: {T: top1}}`` of the same-T sweep.
      paired_rows: per setting, ``paired.paired_differences`` rows (TKS - X per seed).

    Returns:
      One dict per (claim, setting): ``claim``, ``setting``, ``held`` (bool: the means order
      as claimed), ``verdict`` (see the module docstring) and ``evidence``.
    """
    claims = []
    paired_rows = paired_rows or {}
    for setting, g in groups.items():
        rows = paired_rows.get(setting, [])
        if "tks" not in g:
            continue
        others = [x for x in plan.LOSSES if x in g and x != "tks"]
        tks = g["tks"]
        if others:
            best = max(others, key=lambda x: g[x]["top1"]["mean"])
            margin = 100 * (tks["top1"]["mean"] - g[best]["top1"]["mean"])
            claims.append(_finish({
                "claim": "1a: TKS has the best top-1", "setting": setting, "held": margin > 0,
                "evidence": f"TKS {100 * tks['top1']['mean']:.2f}% vs best other ({best}) "
                            f"{100 * g[best]['top1']['mean']:.2f}%: {margin:+.2f} points"
                            + _noise_note(margin, _two_se(tks["top1"], g[best]["top1"], 100)),
            }, rows, "top1", others))
            low = min(others, key=lambda x: g[x]["aurc_logit"]["mean"])
            diff = tks["aurc_logit"]["mean"] - g[low]["aurc_logit"]["mean"]
            claims.append(_finish({
                "claim": "1b: TKS has the lowest AURC", "setting": setting, "held": diff < 0,
                "evidence": f"TKS {tks['aurc_logit']['mean']:.2f} vs lowest other ({low}) "
                            f"{g[low]['aurc_logit']['mean']:.2f} (x1000): {diff:+.2f}"
                            + _noise_note(diff, _two_se(tks["aurc_logit"], g[low]["aurc_logit"])),
            }, rows, "aurc_logit", others))
        if "baseline" not in g:
            continue
        base = g["baseline"]

        def drop(x):
            return 100 * (x["first_k_accuracy"]["mean"][-1] - x["first_k_accuracy"]["mean"][0])

        t = len(tks["first_k_accuracy"]["mean"])
        if t > 1:
            claims.append(_finish({
                "claim": "2: with 1 test step TKS degrades less than the baseline",
                "setting": setting, "held": drop(tks) < drop(base),
                "evidence": f"loss of top-1 from {t} steps to 1: baseline {drop(base):.2f} "
                            f"points, TKS {drop(tks):.2f} points",
            }, rows, "one_step_drop", ["baseline"]))
        diffs = 100 * (np.asarray(tks["per_step_accuracy"]["mean"])
                       - np.asarray(base["per_step_accuracy"]["mean"]))
        claims.append(_finish({
            "claim": "3: every step of TKS beats the same step of the baseline",
            "setting": setting, "held": bool(np.all(diffs > 0)),
            "evidence": "TKS - baseline per step (points): "
                        + ", ".join(f"{d:+.2f}" for d in diffs),
        }, rows, None, []))
        s_t, s_b = tks["silhouette"]["mean"], base["silhouette"]["mean"]
        claims.append(_finish({
            "claim": "4: TKS separates classes better in feature space (silhouette)",
            "setting": setting, "held": bool(s_t > s_b),
            "evidence": f"silhouette of penultimate features: baseline {s_b:.3f}, TKS {s_t:.3f}",
        }, rows, "silhouette", ["baseline"]))
    if "tks" in sweep and "baseline" in sweep:
        ts = [t for t in sweep["tks"] if t in sweep["baseline"]]
        diffs = [100 * (sweep["tks"][t] - sweep["baseline"][t]) for t in ts]
        claims.append(_finish({
            "claim": "2b (Fig. 3b): trained and tested at the same T, TKS beats the baseline "
                     "at every T", "setting": "nmnist_synth", "held": all(d > 0 for d in diffs),
            "evidence": "TKS - baseline (points) at T = " + ", ".join(
                f"{t}: {d:+.2f}" for t, d in zip(ts, diffs, strict=True)) + ", one seed",
        }, [], None, []))
    return claims


def _interval(ms: dict, scale: float = 1.0) -> tuple[float, float, float] | None:
    """(mean, low, high) of a mean-over-seeds with its 95 % t interval; None for one seed."""
    if ms["std"] is None or ms["n"] < 2:
        return None
    half = paired.t_half_width(ms["std"], ms["n"])
    return scale * ms["mean"], scale * (ms["mean"] - half), scale * (ms["mean"] + half)


def anytime_claims(groups: dict, paired_rows: dict[str, list[dict]] | None = None,
                   *, max_drop_points: float = 0.5) -> list[dict[str, Any]]:
    """The anytime claims on the test split, under the exit rule calibrated on validation.

    A1: TKS needs at most T/2 mean steps (interval of the mean over seeds below T/2; ``not
    held`` also when the rule's accuracy drop below all T steps is beyond ``max_drop_points``
    over the whole interval). A2 / A3: TKS needs fewer mean steps / less energy per image than
    the baseline (paired intervals; means only without them).
    """
    claims = []
    paired_rows = paired_rows or {}
    for setting, g in groups.items():
        tks = g.get("tks", {})
        if "anytime_mean_steps" not in tks:
            continue
        t = plan.DEFAULT_T[setting]
        steps, drop = tks["anytime_mean_steps"], tks["anytime_drop"]
        ci, ci_drop = _interval(steps), _interval(drop, 100)
        evidence = (f"TKS mean steps {steps['mean']:.2f} of T = {t}, accuracy "
                    f"{100 * drop['mean']:.2f} points below all {t} steps (test)")
        claim = {"claim": "A1: under the exit rule TKS needs <= T/2 mean steps",
                 "setting": setting, "held": steps["mean"] <= t / 2
                 and 100 * drop["mean"] <= max_drop_points, "evidence": evidence}
        if ci is None:
            claim["verdict"] = "held" if claim["held"] else "not held"
            claim["evidence"] += " (one seed)"
        else:
            claim["evidence"] += (f"; 95 % intervals over {steps['n']} seeds: steps "
                                  f"[{ci[1]:.2f}, {ci[2]:.2f}], drop [{ci_drop[1]:+.2f}, "
                                  f"{ci_drop[2]:+.2f}] points")
            if ci_drop[1] > max_drop_points or ci[1] > t / 2:
                claim["verdict"] = "not held"
            elif ci[2] <= t / 2 and ci_drop[2] <= max_drop_points:
                claim["verdict"] = "held"
            else:
                claim["verdict"] = "not separable"
        claims.append(claim)
        base = g.get("baseline", {})
        if "anytime_mean_steps" not in base:
            continue
        rows = paired_rows.get(setting, [])
        for name, key, what in (("A2", "anytime_mean_steps", "fewer mean steps"),
                                ("A3", "anytime_energy_uj", "less energy per image")):
            a, b = tks[key]["mean"], base[key]["mean"]
            claims.append(_finish({
                "claim": f"{name}: under the exit rule TKS needs {what} than the baseline",
                "setting": setting, "held": a < b,
                "evidence": f"baseline {b:.3g}, TKS {a:.3g}",
            }, rows, key, ["baseline"]))
    return claims


def format_claims(claims: list[dict]) -> str:
    """The claims as a markdown table (claim, data, verdict, evidence)."""
    lines = ["| claim | data | verdict | evidence (means over seeds, then the intervals) |",
             "|---|---|---|---|"]
    for c in claims:
        verdict = c.get("verdict") or ("held" if c["held"] else "not held")
        lines.append(f"| {c['claim']} | {c['setting']} | {verdict} | {c['evidence']} |")
    return "\n".join(lines) + "\n"
