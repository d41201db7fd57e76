"""Running the study: each planned run trained, evaluated once and recorded, then aggregated.

There is no evaluation during training: each run is evaluated once, after its last step, and
nothing is selected on the test split. Re-running the same command skips the runs recorded in
``runs.jsonl`` (and resumes an interrupted one from its checkpoint); runs of one results folder
must come from one commit (``records.check_one_code_version``).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tks_jax import json_utils, provenance
from tks_jax.experiments import features, plan, records

STUDY_JSON = "study.json"


def run_one(spec: plan.RunSpec, out_dir: str, budget: str, *, feature_examples: int,
            overrides: dict[str, Any] | None = None) -> dict:
    """Trains, evaluates and extracts features of one run unless its ``run.json`` exists.

    Args:
      spec: the run.
      out_dir: the results folder; the run trains in ``<out_dir>/runs/<name>/``.
      budget: ``configs/ablation.py`` budget.
      feature_examples: test examples whose penultimate features are kept.
      overrides: config keys set for every run of the study (``plan.apply_overrides``).

    Returns:
      The run record (one line of ``runs.jsonl``, see ``records``), also written to the
      training directory as ``run.json``.
    """
    workdir = records.run_dir(out_dir, spec.name)
    path = os.path.join(workdir, records.RUN_JSON)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    from tks_jax import train_lib

    config = plan.apply_overrides(plan.make_config(spec, budget), overrides or {})
    code = provenance.git_info()  # the code the run starts with (a commit may land meanwhile)
    t0, c0 = time.time(), time.process_time()
    result = train_lib.train_and_evaluate(config, workdir)
    if result["preempted"]:
        raise RuntimeError(f"Run {spec.name} was stopped by SIGTERM after a checkpoint; re-run "
                           "the same command to resume it.")
    data = features.extract_features(workdir, config, feature_examples)
    np.savez_compressed(os.path.join(workdir, records.FEATURES_NPZ), **data)
    with open(os.path.join(result["report_dir"], "report.json")) as f:
        report = json.load(f)
    metrics = report["metrics"]
    sil = features.silhouette(data["features"], data["labels"])
    record = {
        "name": spec.name, "setting": spec.setting, "loss": spec.loss, "seed": spec.seed,
        "num_steps": spec.num_steps, "studies": list(spec.studies), "budget": budget,
        "step": result["step"], "wall_s": time.time() - t0, "cpu_s": time.process_time() - c0,
        "metrics": metrics, "silhouette": sil if np.isfinite(sil) else None,
        "feature_examples": int(len(data["labels"])),
        "anytime": anytime_record(report.get("anytime")),
        "provenance": provenance.collect(config, git=code),
    }
    json_utils.write_json(path, record, sort_keys=True)
    return record


# The parts of the report's anytime section a run record keeps (the threshold sweep curve and
# the per-layer costs stay in the run's report.json; the per-step logits in anytime_logits.npz).
_ANYTIME_KEYS = ("threshold", "confidence", "max_drop", "validation", "test", "full_accuracy",
                 "energy_pj_per_image", "energy_pj_full", "curve_fixed_k")


def anytime_record(section: dict | None) -> dict | None:
    """The run record's ``anytime`` entry from a report's ``anytime`` section (None: none);
    adds ``energy_pj_first_k`` (test energy per image of the first k steps, k = 1..T)."""
    if not section:
        return None
    out = {k: section[k] for k in _ANYTIME_KEYS if k in section}
    first_k = (section.get("cost") or {}).get("energy_pj_first_k")
    if first_k is not None:
        out["energy_pj_first_k"] = first_k
    return out


def _run_in_worker(args: tuple) -> dict:
    spec, out_dir, budget, feature_examples, overrides = args
    return run_one(spec, out_dir, budget, feature_examples=feature_examples,
                   overrides=overrides)


def _check_study_dir(out_dir: str, budget: str, overrides: dict[str, Any]) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, STUDY_JSON)
    study = {"budget": budget, "sessions": []}
    if overrides:
        study["overrides"] = overrides
    if os.path.exists(path):
        with open(path) as f:
            study = json.load(f)
        if study.get("budget") != budget:
            raise ValueError(
                f"{out_dir} holds a study with budget {study.get('budget')!r}, not {budget!r}; "
                "runs of different budgets must not be mixed: use another --out."
            )
        if study.get("overrides", {}) != overrides:
            raise ValueError(
                f"{out_dir} holds a study with config overrides {study.get('overrides', {})}, "
                f"not {overrides}; one results folder holds one variant: use another --out."
            )
    return study


def _check_same_code(out_dir: str, done: dict[str, dict], allow_mixed_commits: bool) -> None:
    """Refuses to add runs of the current code to runs recorded from other code."""
    if allow_mixed_commits or not done:
        return
    now = provenance.code_version({"git": provenance.git_info()})
    others = {v: names for v, names in records.code_versions(done).items() if v != now}
    if others:
        lines = [f"  {version}: {', '.join(names)}" for version, names in others.items()]
        raise ValueError(
            f"{os.path.join(out_dir, records.RUNS_JSONL)} holds runs from other code than the "
            f"current ({now}):\n" + "\n".join(lines) + "\nUse another --out, or pass "
            "--allow-mixed-commits to add runs of the current code anyway."
        )


def _tag_planned_studies(out_dir: str, specs: Sequence[plan.RunSpec],
                         done: dict[str, dict]) -> dict[str, dict]:
    """Adds to finished runs the studies that now plan them too (e.g. the same-T sweep planned
    after ``main`` trained its T = 10 runs), so that aggregation counts them there; the updated
    records are appended to ``runs.jsonl`` (a later line of a name wins). Returns ``done``
    updated."""
    updated = []
    for spec in specs:
        rec = done.get(spec.name)
        if rec is None or set(spec.studies) <= set(rec["studies"]):
            continue
        merged = set(rec["studies"]) | set(spec.studies)
        rec = {**rec, "studies": [s for s in plan.STUDIES if s in merged]}
        done[spec.name] = rec
        updated.append(rec)
    if updated:
        records.append_records(out_dir, updated)
    return done


def run_study(
    out_dir: str, *, budget: str = "full", studies: Sequence[str] = plan.STUDIES,
    seeds: Sequence[int] = plan.SEEDS, losses: Sequence[str] = plan.LOSSES,
    sweep_steps: Sequence[int] = plan.SWEEP_STEPS,
    paired_seeds: Sequence[int] = plan.PAIRED_SEEDS, jobs: int = 1,
    feature_examples: int | None = None, allow_mixed_commits: bool = False,
    overrides: dict[str, Any] | None = None, log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs every planned run not finished yet, then ``aggregate.aggregate``.

    Args:
      out_dir: the results folder.
      budget: ``full`` | ``quick`` | ``smoke`` (``configs/ablation.py``).
      studies, seeds, losses, sweep_steps, paired_seeds: see ``plan.plan_runs``.
      jobs: runs trained at the same time (separate processes when > 1).
      feature_examples: test examples whose penultimate features are kept (t-SNE, silhouette);
        default by budget.
      allow_mixed_commits: add runs at the current commit to a folder holding runs of another
        one (otherwise a ``ValueError`` before training).
      overrides: dotted config keys set for every run (e.g. ``{"model.dtype": "bfloat16"}``),
        recorded in ``study.json``; a folder holds one set of overrides.
      log: progress lines.

    Returns:
      The aggregated results (``results.json``).
    """
    from tks_jax.experiments import aggregate

    if budget not in plan.BUDGETS:
        raise ValueError(f"Unknown budget {budget!r}; choose from {list(plan.BUDGETS)}.")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}.")
    specs = plan.plan_runs(studies, seeds=seeds, losses=losses, sweep_steps=sweep_steps,
                           paired_seeds=paired_seeds)
    overrides = dict(overrides or {})
    if specs:  # a bad key or value fails here, before anything trains
        plan.apply_overrides(plan.make_config(specs[0], budget), overrides)
    study = _check_study_dir(out_dir, budget, overrides)
    n_feat = feature_examples or plan.DEFAULT_FEATURE_EXAMPLES[budget]
    start = time.time()
    recovered = records.recover_finished(out_dir, [s.name for s in specs])
    if recovered:
        log(f"Recorded {len(recovered)} finished runs missing from {records.RUNS_JSONL}.")
    done = _tag_planned_studies(out_dir, specs, records.read_records(out_dir))
    todo = [s for s in specs if s.name not in done]
    if todo:
        _check_same_code(out_dir, done, allow_mixed_commits)
    log(f"{len(specs)} runs planned, {len(specs) - len(todo)} already finished; budget {budget}.")
    args = [(s, out_dir, budget, n_feat, overrides) for s in todo]
    # A failed run does not stop the others: it is reported, the finished runs are aggregated,
    # and the study ends with an error naming the failures (re-running retries only them).
    failed: list[tuple[str, str]] = []

    def finished(i: int, name: str, get_record: Callable[[], dict[str, Any]]) -> None:
        try:
            rec = get_record()
        except Exception as e:  # noqa: BLE001 - reported below, the study goes on
            failed.append((name, f"{type(e).__name__}: {e}"))
            log(f"[{i + 1}/{len(todo)}] {name}: FAILED ({type(e).__name__}: {e})")
            return
        records.append_records(out_dir, [rec])  # one writer: this process
        log(f"[{i + 1}/{len(todo)}] {rec['name']}: {rec['wall_s']:.0f} s")

    if jobs == 1 or len(todo) <= 1:
        for i, a in enumerate(args):
            finished(i, a[0].name, functools.partial(_run_in_worker, a))
    else:
        import concurrent.futures
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # a fresh JAX runtime per worker
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            futures = {pool.submit(_run_in_worker, a): a[0].name for a in args}
            for i, fut in enumerate(concurrent.futures.as_completed(futures)):
                finished(i, futures[fut], fut.result)
    study["sessions"].append({
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start)),
        "wall_s": time.time() - start, "runs_trained": len(todo), "jobs": jobs,
        "studies": list(studies), "seeds": list(seeds), "losses": list(losses),
        "sweep_steps": list(sweep_steps), "paired_seeds": list(paired_seeds),
        "machine": machine_description(),
        "code_version": provenance.code_version({"git": provenance.git_info()}),
    })
    if failed:
        study["sessions"][-1]["failed"] = [name for name, _ in failed]
    json_utils.write_json(os.path.join(out_dir, STUDY_JSON), study)
    result = aggregate.aggregate(out_dir, allow_mixed_commits=allow_mixed_commits, log=log)
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(todo)} runs failed (the others are aggregated in "
            f"{out_dir}); re-run the same command to retry them:\n"
            + "\n".join(f"  {name}: {err}" for name, err in failed)
        )
    return result


def machine_description() -> str:
    """``'Linux x86_64, 2 CPU cores (AMD EPYC; avx, avx2, fma), jax 0.x (cpu)'``."""
    m = provenance.machine_info()
    versions = provenance.library_versions()
    cpu = "; ".join(x for x in (m.get("cpu_model"), ", ".join(m.get("cpu_isa") or ())) if x)
    return (f"{m['system']} {m['machine']}, {m['cpu_count']} CPU cores"
            + (f" ({cpu})" if cpu else "") + f", jax {versions['jax']} ({m['backend']})")
