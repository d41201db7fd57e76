"""The run records of a study: one JSON line per finished run in ``<out>/runs.jsonl``.

A line holds everything the aggregation, the figures and the notebooks read about a run: its
spec (``setting``, ``loss``, ``seed``, ``num_steps``, ``studies``), ``budget``, the final
``step``, ``wall_s`` / ``cpu_s`` of the run's process, the evaluation ``metrics`` (the
``metrics`` of its ``report/report.json``), the ``silhouette`` of its penultimate features and
its ``provenance`` (``tks_jax.provenance.collect``: commit, library versions, machine and the
resolved config). The training directories (``<out>/runs/<name>/``: checkpoints, report,
features) are a working area that need not be kept once the line is written; the t-SNE
embeddings of Fig. 5 are cached in ``<out>/tsne/``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from tks_jax import json_utils, provenance

RUNS_JSONL = "runs.jsonl"
RUNS_DIR = "runs"
RUN_JSON = "run.json"  # a finished run's record inside its training directory
FEATURES_NPZ = "features.npz"


def runs_path(out_dir: str) -> str:
    return os.path.join(out_dir, RUNS_JSONL)


def run_dir(out_dir: str, name: str) -> str:
    """The training directory of run ``name``."""
    return os.path.join(out_dir, RUNS_DIR, name)


def read_records(out_dir: str) -> dict[str, dict[str, Any]]:
    """The records of ``<out>/runs.jsonl`` by run name (a later line of a name wins)."""
    path = runs_path(out_dir)
    records: dict[str, dict[str, Any]] = {}
    if not os.path.exists(path):
        return records
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {i}: not JSON ({e}); remove or fix the line "
                                 "(its run is then trained again).") from None
            records[rec["name"]] = rec
    return dict(sorted(records.items()))


def append_records(out_dir: str, records: Iterable[Mapping[str, Any]]) -> None:
    """Appends records to ``<out>/runs.jsonl``, one line each (keys sorted: stable diffs)."""
    with open(runs_path(out_dir), "a") as f:
        for rec in records:
            f.write(json.dumps(json_utils.json_safe(rec), sort_keys=True, allow_nan=False)
                    + "\n")


def recover_finished(out_dir: str, names: Iterable[str]) -> list[str]:
    """Moves records of finished training directories (``runs/<name>/run.json``) that are
    missing from ``runs.jsonl`` into it (e.g. after an interrupted study); returns their names."""
    known = read_records(out_dir)
    found = []
    for name in names:
        path = os.path.join(run_dir(out_dir, name), RUN_JSON)
        if name not in known and os.path.exists(path):
            with open(path) as f:
                found.append(json.load(f))
    append_records(out_dir, found)
    return [r["name"] for r in found]


def code_versions(records: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Run names by the code they came from (``provenance.code_version``)."""
    out: dict[str, list[str]] = {}
    for name, rec in records.items():
        out.setdefault(provenance.code_version(rec.get("provenance")), []).append(name)
    return {k: sorted(v) for k, v in sorted(out.items())}


def check_one_code_version(records: Mapping[str, Mapping[str, Any]], where: str) -> None:
    """Raises ``ValueError`` naming the runs of each commit if ``records`` mix commits."""
    versions = code_versions(records)
    if len(versions) <= 1:
        return
    lines = [f"  {version}: {', '.join(names)}" for version, names in versions.items()]
    raise ValueError(
        f"{where} mixes runs from {len(versions)} code versions (commit, '+dirty' = local "
        "changes, 'unknown' = no record):\n" + "\n".join(lines) + "\nRe-run the odd runs at "
        "one commit (delete their lines from runs.jsonl), or pass --allow-mixed-commits to "
        "aggregate them anyway."
    )
