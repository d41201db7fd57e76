"""Evaluation reports: ``report.json``, ``report.md`` and PNG plots (matplotlib, Agg backend).

A report is a JSON-able dict built from the metrics of ``tks_jax.training.evaluation``:
top-1/top-5 of the averaged logits, AURC x 1000 (max-logit, the paper's, and max-softmax),
per-step accuracy, first-k-steps accuracy (docs/method.md §10, Fig. 3a and 4), per-class accuracy
at the first step, and spikes per layer.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

from tks_jax import json_utils

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PLOT_FIRST_K = "accuracy_vs_num_steps.png"
PLOT_PER_STEP = "per_step_accuracy.png"
PLOT_ANYTIME = "anytime_accuracy_vs_steps.png"


def build_report(
    metrics: Mapping[str, Any], config: Mapping[str, Any] | None = None, *, step: int | None = None,
    train: Mapping[str, float] | None = None, git: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assembles the report dict.

    Args:
      metrics: output of ``evaluation.run_evaluation`` (plus ``num_steps``, ``split``).
      config: the run's config (its experiment name, data set, model, loss and paper numbers are
        copied into the report).
      step: the checkpoint step evaluated.
      train: last logged training scalars.
      git: the code's ``provenance.git_info()`` when the run started (None: taken now).

    Returns:
      ``{'run': {...}, 'metrics': {...}, 'provenance': {...}}`` (JSON-able); ``provenance``
      (``tks_jax.provenance.collect``: commit, library versions, machine, the options that
      change the arithmetic and the resolved config) only when ``config`` is given.
    """
    run: dict[str, Any] = {"step": step}
    if config is not None:
        cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        run.update({
            "experiment": cfg.get("experiment"),
            "dataset": cfg.get("data", {}).get("name"),
            "model": cfg.get("model", {}).get("name"),
            "loss": cfg.get("loss", {}).get("name"),
            "train_num_steps": cfg.get("num_steps"),
            "paper": cfg.get("paper"),
        })
    if train:
        run["last_train"] = dict(train)
    out = {"run": run, "metrics": dict(metrics)}
    if config is not None:
        from tks_jax import provenance

        out["provenance"] = provenance.collect(config, git=git)
    return out


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def format_markdown(report: Mapping[str, Any]) -> str:
    """The report as a markdown document (the table ``make train`` prints)."""
    run, m = report["run"], report["metrics"]
    t = len(m["per_step_accuracy"])
    lines = [
        f"# Evaluation report: {run.get('experiment') or 'run'}",
        "",
        f"dataset `{run.get('dataset')}`, model `{run.get('model')}`, loss `{run.get('loss')}`, "
        f"split `{m.get('split')}`, T = {m.get('num_steps', t)}, step {run.get('step')}, "
        f"{m['num_examples']} examples",
        "",
        "| metric | value |",
        "|---|---|",
        f"| top-1 (%) | {_pct(m['top1'])} |",
        f"| top-5 (%) | {_pct(m['top5'])} |",
        f"| AURC x1000, max-logit confidence (paper) | {m['aurc_logit']:.2f} |",
        f"| AURC x1000, max-softmax confidence | {m['aurc_softmax']:.2f} |",
        f"| spikes per image | {m.get('spikes_per_image', 0.0):.1f} |",
    ]
    # The paper's numbers for this loss (configs store them per loss, docs/method.md §11).
    paper = (run.get("paper") or {}).get(run.get("loss")) or {}
    if paper.get("top1") is not None:
        lines.append(f"| paper top-1 (%) | {paper['top1']} |")
    if paper.get("aurc") is not None:
        lines.append(f"| paper AURC x1000 | {paper['aurc']} |")
    lines += ["", "| steps k | accuracy of first k steps (%) | accuracy of step k alone (%) |",
              "|---|---|---|"]
    for k in range(t):
        lines.append(
            f"| {k + 1} | {_pct(m['first_k_accuracy'][k])} | {_pct(m['per_step_accuracy'][k])} |"
        )
    spikes = m.get("spikes") or {}
    if spikes:
        lines += ["", "| layer | firing rate | spikes per image |", "|---|---|---|"]
        for layer, v in spikes.items():
            lines.append(
                f"| {layer} | {v.get('rate', float('nan')):.4f} | "
                f"{v.get('spikes_per_image', float('nan')):.1f} |"
            )
    per_class = m.get("per_class_accuracy_first_step") or []
    if per_class:
        valid = [x for x in per_class if x is not None and not math.isnan(x)]
        if valid:
            lines += ["", f"Per-class accuracy at the first step: min {_pct(min(valid))}%, "
                          f"mean {_pct(sum(valid) / len(valid))}%, max {_pct(max(valid))}% "
                          f"over {len(valid)} classes (full list in report.json)."]
    if report.get("anytime"):
        lines += format_anytime(report["anytime"])
    return "\n".join(lines) + "\n"


def _steps_text(x: float) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def format_anytime(a: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the anytime section (``tks_jax.anytime_eval.anytime_metrics``)."""
    thr = a.get("threshold")
    thr_text = "never exits early" if thr is None or thr == math.inf else f"{thr:.6g}"
    test = a["test"]
    lines = [
        "",
        "## Anytime inference (exit rule calibrated on the validation split)",
        "",
        f"Confidence `{a['confidence']}`, threshold {thr_text} (the fewest mean steps on "
        f"validation within {100 * a['max_drop']:.2f} points of its full-T accuracy). Energy: "
        f"{a['energy_constants']['e_ac_pj']} pJ per accumulate, "
        f"{a['energy_constants']['e_mac_pj']} pJ per MAC "
        f"({a['energy_constants'].get('source', '')}).",
        "",
        "| split | accuracy (%) | mean steps | median | p90 | p99 |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("validation", "test"):
        s = a[name]
        lines.append(
            f"| {name} | {_pct(s['accuracy'])} | {_steps_text(s['mean_steps'])} | "
            f"{_steps_text(s['median_steps'])} | {_steps_text(s['p90_steps'])} | "
            f"{_steps_text(s['p99_steps'])} |"
        )
    c = a.get("cost") or {}
    lines += [
        "",
        f"Test: all T steps {_pct(a['full_accuracy'])} %, exit rule {_pct(test['accuracy'])} % "
        f"at {_steps_text(test['mean_steps'])} mean steps; energy per image "
        f"{a['energy_pj_per_image'] / 1e6:.4g} uJ under the exit rule, "
        f"{a['energy_pj_full'] / 1e6:.4g} uJ for all T steps.",
    ]
    per_k = c.get("energy_pj_first_k") or []
    fixed = (a.get("curve_fixed_k") or {}).get("accuracy") or []
    if per_k:
        lines += ["", "| steps k | accuracy of first k (%) | energy per image (uJ) |",
                  "|---|---|---|"]
        for k, e in enumerate(per_k):
            acc = fixed[k] if k < len(fixed) else None
            lines.append(f"| {k + 1} | {_pct(acc)} | {e / 1e6:.4g} |")
    per_layer = c.get("per_layer") or {}
    if per_layer:
        lines += ["", "| layer | kind | operations per image (all T steps) |", "|---|---|---|"]
        for name, v in per_layer.items():
            kind = "AC (synaptic op)" if v["kind"] == "ac" else "MAC (dense)"
            lines.append(f"| {name} | {kind} | {v['ops_per_image']:.4g} |")
        lines.append(f"| total | AC | {c['synops_per_image']:.4g} |")
        lines.append(f"| total | MAC | {c['macs_per_image']:.4g} |")
    return lines


def plot_anytime(path: str, a: Mapping[str, Any]) -> None:
    """Accuracy against mean steps: the exit rule over all thresholds and the fixed-k rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=100)
    sweep, fixed = a["curve_thresholds"], a["curve_fixed_k"]
    ax.plot(sweep["mean_steps"], [100 * y for y in sweep["accuracy"]], drawstyle="steps-post",
            label="exit rule (all thresholds)")
    ax.plot(fixed["mean_steps"], [100 * y for y in fixed["accuracy"]], marker="o",
            label="first k steps")
    ax.plot([a["test"]["mean_steps"]], [100 * a["test"]["accuracy"]], marker="*",
            markersize=10, linestyle="none", label="calibrated threshold")
    ax.set_xlabel("mean steps per image")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Anytime accuracy (test)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot(path: str, ys, title: str, ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = list(range(1, len(ys) + 1))
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=100)
    ax.plot(ks, [100 * y for y in ys], marker="o")
    ax.set_xlabel("time step" if "per step" in title else "number of steps k")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(report: Mapping[str, Any], directory: str) -> dict[str, str]:
    """Writes ``report.json``, ``report.md`` and the two PNG plots into ``directory``.

    NaN (e.g. per-class accuracy of a class absent from the split) is written as JSON ``null``.

    Returns:
      Paths of the written files by kind (``json``, ``markdown``, ``first_k_plot``,
      ``per_step_plot``; ``anytime_plot`` when the report has an ``anytime`` section).
    """
    os.makedirs(directory, exist_ok=True)
    paths = {
        "json": os.path.join(directory, REPORT_JSON),
        "markdown": os.path.join(directory, REPORT_MD),
        "first_k_plot": os.path.join(directory, PLOT_FIRST_K),
        "per_step_plot": os.path.join(directory, PLOT_PER_STEP),
    }
    json_utils.write_json(paths["json"], report)
    with open(paths["markdown"], "w") as f:
        f.write(format_markdown(report))
    m = report["metrics"]
    _plot(paths["first_k_plot"], m["first_k_accuracy"], "Accuracy vs number of steps",
          "top-1 (%)")
    _plot(paths["per_step_plot"], m["per_step_accuracy"], "Accuracy per step", "top-1 (%)")
    if report.get("anytime"):
        paths["anytime_plot"] = os.path.join(directory, PLOT_ANYTIME)
        plot_anytime(paths["anytime_plot"], report["anytime"])
    return paths


def load_report(directory: str) -> dict[str, Any]:
    """Reads ``report.json`` from a report directory."""
    with open(os.path.join(directory, REPORT_JSON)) as f:
        return json.load(f)
