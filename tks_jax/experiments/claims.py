"""The paper's claims checked on a study's means over seeds (``evaluate_claims``).

1a/1b: TKS has the best top-1 / the lowest AURC; 2: tested with one step, TKS degrades less
than the baseline; 3: every step of TKS beats the same step of the baseline; 4: TKS separates
classes better (silhouette of the penultimate features); 2b (Fig. 3b): trained and tested at the
same T, TKS beats the baseline at every T.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tks_jax.experiments import plan


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


def evaluate_claims(groups: dict, sweep: dict) -> list[dict[str, Any]]:
    """The paper's claims checked on the means over seeds.

    A claim ``held`` when the means order as claimed; the top-1 and AURC evidence also says
    whether the difference exceeds twice its standard error over seeds.

    Returns:
      One dict per (claim, setting): ``claim``, ``setting``, ``held`` (bool) and ``evidence``.
    """
    claims = []
    for setting, g in groups.items():
        if "tks" not in g:
            continue
        others = [x for x in plan.LOSSES if x in g and x != "tks"]
        tks = g["tks"]
        if others:
            best = max(others, key=lambda x: g[x]["top1"]["mean"])
            margin = 100 * (tks["top1"]["mean"] - g[best]["top1"]["mean"])
            claims.append({
                "claim": "1a: TKS has the best top-1", "setting": setting, "held": margin > 0,
                "evidence": f"TKS {100 * tks['top1']['mean']:.2f}% vs best other ({best}) "
                            f"{100 * g[best]['top1']['mean']:.2f}%: {margin:+.2f} points"
                            + _noise_note(margin, _two_se(tks["top1"], g[best]["top1"], 100)),
            })
            low = min(others, key=lambda x: g[x]["aurc_logit"]["mean"])
            diff = tks["aurc_logit"]["mean"] - g[low]["aurc_logit"]["mean"]
            claims.append({
                "claim": "1b: TKS has the lowest AURC", "setting": setting, "held": diff < 0,
                "evidence": f"TKS {tks['aurc_logit']['mean']:.2f} vs lowest other ({low}) "
                            f"{g[low]['aurc_logit']['mean']:.2f} (x1000): {diff:+.2f}"
                            + _noise_note(diff, _two_se(tks["aurc_logit"], g[low]["aurc_logit"])),
            })
        if "baseline" not in g:
            continue
        base = g["baseline"]

        def drop(x):
            return 100 * (x["first_k_accuracy"]["mean"][-1] - x["first_k_accuracy"]["mean"][0])

        t = len(tks["first_k_accuracy"]["mean"])
        if t > 1:
            claims.append({
                "claim": "2: with 1 test step TKS degrades less than the baseline",
                "setting": setting, "held": drop(tks) < drop(base),
                "evidence": f"loss of top-1 from {t} steps to 1: baseline {drop(base):.2f} "
                            f"points, TKS {drop(tks):.2f} points",
            })
        diffs = 100 * (np.asarray(tks["per_step_accuracy"]["mean"])
                       - np.asarray(base["per_step_accuracy"]["mean"]))
        claims.append({
            "claim": "3: every step of TKS beats the same step of the baseline",
            "setting": setting, "held": bool(np.all(diffs > 0)),
            "evidence": "TKS - baseline per step (points): "
                        + ", ".join(f"{d:+.2f}" for d in diffs),
        })
        s_t, s_b = tks["silhouette"]["mean"], base["silhouette"]["mean"]
        claims.append({
            "claim": "4: TKS separates classes better in feature space (silhouette)",
            "setting": setting, "held": bool(s_t > s_b),
            "evidence": f"silhouette of penultimate features: baseline {s_b:.3f}, TKS {s_t:.3f}",
        })
    if "tks" in sweep and "baseline" in sweep:
        ts = [t for t in sweep["tks"] if t in sweep["baseline"]]
        diffs = [100 * (sweep["tks"][t] - sweep["baseline"][t]) for t in ts]
        claims.append({
            "claim": "2b (Fig. 3b): trained and tested at the same T, TKS beats the baseline "
                     "at every T", "setting": "nmnist_synth", "held": all(d > 0 for d in diffs),
            "evidence": "TKS - baseline (points) at T = " + ", ".join(
                f"{t}: {d:+.2f}" for t, d in zip(ts, diffs, strict=True)),
        })
    return claims


def format_claims(claims: list[dict]) -> str:
    """The claims as a markdown table (claim, data, held here, evidence)."""
    lines = ["| claim | data | held here | evidence (means over seeds) |", "|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {c['claim']} | {c['setting']} | {'yes' if c['held'] else 'no'} | "
                     f"{c['evidence']} |")
    return "\n".join(lines) + "\n"
