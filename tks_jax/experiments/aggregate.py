"""Aggregation of a study: the run records into means over seeds, claims, tables and figures.

``aggregate(out_dir)`` reads ``<out>/runs.jsonl`` (``records``) and writes ``results.json``
(per run, mean +- std over seeds, the same-T sweep, the claims, the t-SNE paths and the runs'
provenance), ``table.md``, ``claims.md``, ``README.md`` and the figures.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tks_jax import json_utils
from tks_jax.experiments import claims as claims_lib
from tks_jax.experiments import features, paired, plan, records

RESULTS_JSON = "results.json"
TABLE_MD = "table.md"
CLAIMS_MD = "claims.md"
SUMMARY_MD = "README.md"
TSNE_DIR = "tsne"
# Metrics of report.json copied into a run's summary.
SUMMARY_METRICS = ("top1", "top5", "aurc_logit", "aurc_softmax", "first_k_accuracy",
                   "per_step_accuracy", "per_class_accuracy_first_step", "num_examples")


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof = 1; None for a single value) of ``values``."""
    x = np.asarray(values, np.float64)
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if len(x) > 1 else None,
            "n": len(x)}


def _mean_std_curve(curves: Sequence[Sequence[float]]) -> dict[str, Any]:
    x = np.asarray(curves, np.float64)
    return {"mean": x.mean(0).tolist(),
            "std": x.std(0, ddof=1).tolist() if len(x) > 1 else None, "n": len(x)}


def run_summary(rec: dict[str, Any]) -> dict[str, Any]:
    """The per-run entry of ``results.json`` from a ``runs.jsonl`` record."""
    m = rec["metrics"]
    out = {k: rec[k] for k in ("setting", "loss", "seed", "num_steps", "studies", "wall_s",
                               "cpu_s", "step")}
    out.update({k: m[k] for k in SUMMARY_METRICS})
    out["first_step_accuracy"] = m["first_k_accuracy"][0]
    out["one_step_drop"] = m["first_k_accuracy"][-1] - m["first_k_accuracy"][0]
    out.update(anytime_summary(rec.get("anytime")))
    out["silhouette"] = float("nan") if rec.get("silhouette") is None else rec["silhouette"]
    prov = dict(rec.get("provenance") or {})
    out["config"] = prov.pop("config", None)
    out["provenance"] = prov
    return out


# Anytime keys of a run summary (None when the run has no anytime section).
ANYTIME_KEYS = ("anytime_threshold", "anytime_accuracy", "anytime_full_accuracy",
                "anytime_drop", "anytime_mean_steps", "anytime_median_steps",
                "anytime_p90_steps", "anytime_energy_uj", "anytime_energy_full_uj")


def anytime_summary(section: dict[str, Any] | None) -> dict[str, Any]:
    """A run's anytime numbers on the test split (exit rule calibrated on validation): the
    threshold, the rule's accuracy and its drop below all T steps, mean / median / p90 steps,
    and energy per image in µJ under the rule and for all T steps."""
    if not section:
        return dict.fromkeys(ANYTIME_KEYS)
    test = section["test"]
    return {
        "anytime_threshold": section["threshold"],
        "anytime_accuracy": test["accuracy"],
        "anytime_full_accuracy": section["full_accuracy"],
        "anytime_drop": section["full_accuracy"] - test["accuracy"],
        "anytime_mean_steps": test["mean_steps"],
        "anytime_median_steps": test["median_steps"],
        "anytime_p90_steps": test["p90_steps"],
        "anytime_energy_uj": section["energy_pj_per_image"] / 1e6,
        "anytime_energy_full_uj": section["energy_pj_full"] / 1e6,
    }


def _group(runs: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """Mean +- std over seeds per setting and loss, of the runs at the setting's default T."""
    groups: dict[str, dict[str, list[dict]]] = {}
    for r in runs.values():
        if r["num_steps"] != plan.DEFAULT_T[r["setting"]] or r["studies"] == ["sweep"]:
            continue
        groups.setdefault(r["setting"], {}).setdefault(r["loss"], []).append(r)
    out: dict[str, dict[str, dict]] = {}
    for setting, per_loss in groups.items():
        out[setting] = {}
        for loss in plan.LOSSES:
            rs = per_loss.get(loss)
            if not rs:
                continue
            g: dict[str, Any] = {"seeds": sorted(r["seed"] for r in rs)}
            for k in ("top1", "aurc_logit", "aurc_softmax", "first_step_accuracy", "silhouette"):
                g[k] = mean_std([r[k] for r in rs])
            if all(r.get("anytime_mean_steps") is not None for r in rs):
                for k in ANYTIME_KEYS:
                    g[k] = mean_std([r[k] for r in rs])
            for k in ("first_k_accuracy", "per_step_accuracy", "per_class_accuracy_first_step"):
                g[k] = _mean_std_curve([[np.nan if v is None else v for v in r[k]] for r in rs])
            out[setting][loss] = g
    return out


def _sweep(runs: dict[str, dict]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for r in runs.values():
        if "sweep" in r["studies"]:
            out.setdefault(r["loss"], {})[str(r["num_steps"])] = r["top1"]
    return {loss: dict(sorted(v.items(), key=lambda kv: int(kv[0]))) for loss, v in out.items()}


def _tsne_files(out_dir: str, runs: dict[str, dict], log) -> dict[str, str]:
    """t-SNE of the seed-0 runs of TSNE_LOSSES per setting (cached in ``tsne/``; computed from
    the run's ``features.npz`` in its training directory when not cached)."""
    paths = {}
    os.makedirs(os.path.join(out_dir, TSNE_DIR), exist_ok=True)
    first_seed = min(x["seed"] for x in runs.values())
    for name, r in sorted(runs.items()):
        if (r["loss"] not in plan.TSNE_LOSSES or r["seed"] != first_seed
                or r["num_steps"] != plan.DEFAULT_T[r["setting"]]):
            continue
        path = os.path.join(out_dir, TSNE_DIR, f"{r['setting']}_{r['loss']}.npz")
        if not os.path.exists(path):
            src = os.path.join(records.run_dir(out_dir, name), records.FEATURES_NPZ)
            if not os.path.exists(src):
                log(f"No t-SNE for {name}: neither {path} nor {src} exists.")
                continue
            feats = np.load(src)
            log(f"t-SNE of {name} ({len(feats['labels'])} test examples)")
            emb = features.tsne_embedding(feats["features"])
            np.savez_compressed(path, embedding=emb, labels=feats["labels"], run=name,
                                silhouette=r["silhouette"])
        paths[f"{r['setting']}/{r['loss']}"] = os.path.relpath(path, out_dir)
    return paths


def aggregate(out_dir: str, *, allow_mixed_commits: bool = False,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Collects every recorded run of ``out_dir`` into results, table, claims and figures.

    Args:
      out_dir: the results folder (with ``runs.jsonl``).
      allow_mixed_commits: aggregate runs from different code versions (otherwise a
        ``ValueError`` naming the runs of each version).
      log: progress lines.

    Returns:
      The dict written to ``results.json``: ``budget``, ``sessions``, ``runs`` (per run, with
      its ``provenance`` and resolved ``config``), ``code_versions`` (run names by commit),
      ``groups`` (per setting and loss, mean/std/n over seeds), ``sweep``
      (``{loss: {T: top1}}``), ``claims``, ``paired`` (per setting, ``paired.paired_differences``
      rows of TKS against each other loss), ``tsne`` (paths), ``total_run_wall_s``,
      ``total_run_cpu_s``; ``overrides`` when the study set config keys (``--set``).
    """
    from tks_jax.experiments import figures, runner, summary

    path = records.runs_path(out_dir)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: run the study first (without "
                                "--aggregate-only).")
    recs = records.read_records(out_dir)
    if not recs:
        raise FileNotFoundError(f"No finished run in {path}.")
    if not allow_mixed_commits:
        records.check_one_code_version(recs, path)
    runs = {name: run_summary(rec) for name, rec in recs.items()}
    study = {}
    if os.path.exists(os.path.join(out_dir, runner.STUDY_JSON)):
        with open(os.path.join(out_dir, runner.STUDY_JSON)) as f:
            study = json.load(f)
    groups, sweep = _group(runs), _sweep(runs)
    paired_rows = {setting: paired.paired_differences(runs, setting, plan.DEFAULT_T[setting])
                   for setting in groups}
    paired_rows = {k: v for k, v in paired_rows.items() if v}
    claims = claims_lib.evaluate_claims(groups, sweep, paired_rows)
    claims += claims_lib.anytime_claims(groups, paired_rows)
    results = {
        "budget": study.get("budget"), "sessions": study.get("sessions", []),
        "total_run_wall_s": float(sum(r["wall_s"] for r in runs.values())),
        "total_run_cpu_s": float(sum(r["cpu_s"] for r in runs.values())),
        "code_versions": records.code_versions(recs),
        "runs": runs, "groups": groups, "sweep": sweep, "claims": claims,
        "paired": paired_rows,
        "tsne": _tsne_files(out_dir, runs, log),
    }
    if study.get("overrides"):
        results["overrides"] = study["overrides"]
    json_utils.write_json(os.path.join(out_dir, RESULTS_JSON), results)
    with open(os.path.join(out_dir, TABLE_MD), "w") as f:
        f.write(summary.format_table(groups))
    with open(os.path.join(out_dir, CLAIMS_MD), "w") as f:
        f.write(claims_lib.format_claims(claims))
    figures.draw_all(results, out_dir)
    with open(os.path.join(out_dir, SUMMARY_MD), "w") as f:
        f.write(summary.format_summary(results, out_dir))
    log(summary.format_table(groups))
    log(claims_lib.format_claims(claims))
    return results


def load_results(out_dir: str) -> dict[str, Any]:
    """Reads ``results.json`` of a results folder."""
    path = os.path.join(out_dir, RESULTS_JSON)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run `python -m tks_jax.experiments.ablation "
                                f"--out {out_dir}` first.")
    with open(path) as f:
        return json.load(f)
