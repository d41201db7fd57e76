"""Markdown of a study's results: the results table and the results folder's ``README.md``."""

from __future__ import annotations

import json
import os

from tks_jax.experiments import claims, paired, plan


def _fmt(ms: dict, scale: float = 1.0, digits: int = 2) -> str:
    if ms["std"] is None:
        return f"{scale * ms['mean']:.{digits}f}"
    return f"{scale * ms['mean']:.{digits}f} ± {scale * ms['std']:.{digits}f}"


def format_table(groups: dict) -> str:
    """The results table (markdown): top-1 %, AURC x 1000 (max-logit), first-step accuracy %,
    silhouette of the penultimate features; mean ± std over seeds."""
    lines = ["| data | loss | seeds | top-1 (%) | AURC x1000 | first step only (%) | "
             "silhouette |", "|---|---|---|---|---|---|---|"]
    for setting in ("mnist", "mnist_hard", "nmnist_synth"):
        for loss, g in groups.get(setting, {}).items():
            lines.append(
                f"| {setting} (T={plan.DEFAULT_T[setting]}) | {loss} | {len(g['seeds'])} | "
                f"{_fmt(g['top1'], 100)} | {_fmt(g['aurc_logit'])} | "
                f"{_fmt(g['first_step_accuracy'], 100)} | {_fmt(g['silhouette'], 1, 3)} |"
            )
    return "\n".join(lines) + "\n"


def format_anytime_table(groups: dict) -> str:
    """The anytime table (markdown; empty without anytime data): per setting and loss, the
    test split under the exit rule calibrated on validation; mean ± std over seeds."""
    lines = ["| data | loss | seeds | top-1 all T (%) | top-1 exit rule (%) | mean steps | "
             "p90 steps | energy µJ/image, exit rule | energy µJ/image, all T |",
             "|---|---|---|---|---|---|---|---|---|"]
    for setting in ("mnist", "mnist_hard", "nmnist_synth"):
        for loss, g in groups.get(setting, {}).items():
            if "anytime_mean_steps" not in g:
                continue
            lines.append(
                f"| {setting} (T={plan.DEFAULT_T[setting]}) | {loss} | {len(g['seeds'])} | "
                f"{_fmt(g['anytime_full_accuracy'], 100)} | {_fmt(g['anytime_accuracy'], 100)} "
                f"| {_fmt(g['anytime_mean_steps'])} | {_fmt(g['anytime_p90_steps'], 1, 1)} | "
                f"{_fmt(g['anytime_energy_uj'], 1, 3)} | "
                f"{_fmt(g['anytime_energy_full_uj'], 1, 3)} |"
            )
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def _code_line(versions: dict[str, list[str]]) -> str:
    line = "- Code (commit): " + "; ".join(f"`{v}` ({len(names)} runs)"
                                           for v, names in versions.items())
    if "unknown" in versions:
        line += " ('unknown': runs recorded without their commit)"
    return line + "."


def format_override(key: str, value) -> str:
    """``KEY=VALUE`` as ``--set`` reads it back (``plan.parse_overrides``): strings bare,
    other values as JSON."""
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def _plan_flags(sessions: list[dict]) -> str:
    """``--studies/--seeds/--losses`` of the command, where the sessions together ran less than
    the default plan ("" for the full plan)."""
    flags = ""
    for key, default in (("studies", plan.STUDIES), ("seeds", plan.SEEDS),
                         ("losses", plan.LOSSES)):
        used = {v for s in sessions for v in s.get(key, default)}
        if sessions and used != set(default):
            flags += f" --{key} " + ",".join(str(v) for v in default if v in used)
    return flags


def command(results: dict, out_dir: str) -> str:
    """The command that (re)produces a results folder: its budget, the part of the plan its
    sessions ran, its ``--set`` overrides and the jobs of its last training session."""
    sessions = results.get("sessions") or []
    cmd = (f"python -m tks_jax.experiments.ablation --out {os.path.normpath(out_dir)} "
           f"--budget {results.get('budget')}")
    cmd += _plan_flags(sessions)
    for key, value in sorted((results.get("overrides") or {}).items()):
        cmd += f" --set {format_override(key, value)}"
    trained = [s for s in sessions if s.get("runs_trained")] or sessions
    if trained and trained[-1].get("jobs", 1) > 1:
        cmd += f" --jobs {trained[-1]['jobs']}"
    return cmd


def format_summary(results: dict, out_dir: str) -> str:
    """``README.md`` of a results folder: command, machine and time, table, claims, figures."""
    sessions = results.get("sessions") or []
    lines = [f"# Ablation study: budget `{results.get('budget')}`", "", "Command:", "",
             f"    {command(results, out_dir)}", ""]
    for s in sessions:
        lines.append(f"- {s['started']}: {s['runs_trained']} runs trained in "
                     f"{s['wall_s'] / 60:.1f} min wall-clock with {s['jobs']} job(s) on "
                     f"{s['machine']}"
                     + (f"; failed: {', '.join(s['failed'])}" if s.get("failed") else "")
                     + (f" ({s['note']})" if s.get("note") else "") + ".")
    lines += [
        f"- Sum over runs: {results['total_run_wall_s'] / 60:.1f} min of run wall-clock, "
        f"{results['total_run_cpu_s'] / 60:.1f} CPU-min ({len(results['runs'])} runs).",
        _code_line(results.get("code_versions") or {}),
        "- Per-run records (metrics, resolved config, provenance): `runs.jsonl`; aggregated: "
        "`results.json`.", "",
        "## Results (mean ± std over seeds; last step, no selection on the test split)", "",
        "Top-1 of `argmax mean_t z_t`; AURC x1000 with max-logit confidence (the paper's); "
        "first step only = accuracy of `argmax z_1`; silhouette of the time-averaged "
        "penultimate features of test examples (higher = classes better separated).", "",
        format_table(results["groups"]), "## The paper's claims here", "",
        claims.format_claims(results["claims"]),
    ]
    anytime_table = format_anytime_table(results["groups"])
    if anytime_table:
        lines += [
            "## Anytime inference (exit rule calibrated on validation, reported on test)", "",
            "Each sample stops at the first step k whose running mean of logits has max "
            "softmax probability >= the threshold; the threshold is the one with the fewest "
            "mean steps on the run's validation split (held out of training) whose accuracy "
            "stays within 0.5 points of all T steps there (docs/method.md §14). Energy: "
            "0.9 pJ per synaptic accumulate, 4.6 pJ per MAC (45 nm). Per-step logits of both "
            "splits: `runs/<run>/report/anytime_logits.npz` in the training directories.", "",
            anytime_table,
        ]
    for setting, rows in (results.get("paired") or {}).items():
        lines += ["## Paired differences: " + setting, "", paired.format_paired(rows, setting)]
    lines += ["## Figures", ""]
    for name in ("fig3a_fewer_steps.png", "fig3b_same_T.png", "fig4_per_step.png",
                 "fig5_tsne.png", "per_class_first_step.png"):
        if os.path.exists(os.path.join(out_dir, name)):
            lines.append(f"![{name}]({name})")
    if results.get("sweep"):
        lines += ["", "Same-T sweep (Fig. 3b, seed 0), top-1 (%):", "",
                  "| loss | " + " | ".join(f"T={t}" for t in next(iter(
                      results["sweep"].values()))) + " |",
                  "|---|" + "---|" * len(next(iter(results["sweep"].values())))]
        for loss, per_t in results["sweep"].items():
            lines.append(f"| {loss} | " + " | ".join(f"{100 * v:.2f}" for v in per_t.values())
                         + " |")
    return "\n".join(lines) + "\n"
