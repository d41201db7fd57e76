"""The ablation study: baseline vs LS vs TET vs TKS on MNIST and its event version.

    python -m tks_jax.experiments.ablation --out results/ablation --budget full [--jobs 2]

The command line of the study, and its public API in one namespace. The pieces:

- ``plan``: the studies (``main``, ``hard``, ``sweep``, ``paired``), their runs and configs.
- ``runner``: trains, evaluates and records each run (``run_study``).
- ``records``: ``runs.jsonl``, one line per finished run with its metrics and provenance.
- ``features``: penultimate features, silhouette and t-SNE.
- ``aggregate``: means over seeds, ``results.json``, tables and figures (``aggregate``).
- ``claims`` / ``summary``: the paper's claims and the markdown of a results folder.

Outputs in ``--out``: ``runs.jsonl``, ``study.json`` (the sessions that trained runs),
``results.json``, ``table.md``, ``claims.md``, ``README.md``, ``tsne/*.npz`` and the figures;
``runs/<run>/`` is the training directories' working area (checkpoints, reports, features).
Re-running the command skips recorded runs (and resumes an interrupted one from its
checkpoint); ``--aggregate-only`` redraws from ``runs.jsonl``. Budgets (``configs/ablation.py``):
``full`` is the study, ``quick`` the same plan on ~5x fewer images and 3 epochs, ``smoke`` a few
steps of a tiny model (tests, notebooks).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tks_jax.experiments.aggregate import (
    CLAIMS_MD,
    RESULTS_JSON,
    SUMMARY_MD,
    TABLE_MD,
    aggregate,
    load_results,
    mean_std,
)
from tks_jax.experiments.claims import evaluate_claims, format_claims
from tks_jax.experiments.features import (
    extract_features,
    penultimate_features,
    silhouette,
    tsne_embedding,
)
from tks_jax.experiments.plan import (
    BUDGETS,
    DEFAULT_FEATURE_EXAMPLES,
    DEFAULT_T,
    LOSSES,
    PAIRED_SEEDS,
    SEEDS,
    STUDIES,
    SWEEP_LOSSES,
    SWEEP_STEPS,
    RunSpec,
    apply_overrides,
    make_config,
    parse_overrides,
    plan_runs,
)
from tks_jax.experiments.records import FEATURES_NPZ, RUN_JSON, RUNS_JSONL, read_records
from tks_jax.experiments.runner import STUDY_JSON, machine_description, run_one, run_study
from tks_jax.experiments.summary import format_summary, format_table

__all__ = [
    "BUDGETS", "CLAIMS_MD", "DEFAULT_FEATURE_EXAMPLES", "DEFAULT_T", "FEATURES_NPZ", "LOSSES",
    "PAIRED_SEEDS", "RESULTS_JSON", "RUNS_JSONL", "RUN_JSON", "RunSpec", "SEEDS", "STUDIES",
    "STUDY_JSON", "SUMMARY_MD", "SWEEP_LOSSES", "SWEEP_STEPS", "TABLE_MD", "aggregate",
    "apply_overrides", "build_parser", "evaluate_claims", "extract_features", "format_claims",
    "format_summary", "format_table", "load_results", "machine_description", "main",
    "make_config", "mean_std", "parse_overrides", "penultimate_features", "plan_runs",
    "read_records", "run_one", "run_study", "silhouette", "tsne_embedding",
]


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0,1,2, got {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tks_jax.experiments.ablation",
        description="Ablation study (baseline / LS / TET / TKS on MNIST and the simulated "
                    "N-MNIST, plus the same-T sweep); writes a results folder.")
    p.add_argument("--out", required=True, help="results folder (created; finished runs are "
                                                "skipped on a re-run)")
    p.add_argument("--budget", default="full", choices=BUDGETS,
                   help="full: the study; quick: ~5x fewer images, 3 epochs; smoke: a few "
                        "steps of a tiny model (tests)")
    p.add_argument("--studies", type=_str_list, default=list(STUDIES),
                   help="comma-separated subset of main,hard,sweep,paired")
    p.add_argument("--seeds", type=_int_list, default=list(SEEDS))
    p.add_argument("--losses", type=_str_list, default=list(LOSSES))
    p.add_argument("--sweep-steps", type=_int_list, default=list(SWEEP_STEPS))
    p.add_argument("--paired-seeds", type=_int_list, default=list(PAIRED_SEEDS),
                   help="seeds of the paired study (nmnist_synth, every loss)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained in parallel processes")
    p.add_argument("--feature-examples", type=int, default=None,
                   help="test examples kept for t-SNE / silhouette (default by budget)")
    p.add_argument("--aggregate-only", action="store_true",
                   help="only redraw the table, claims and figures from runs.jsonl")
    p.add_argument("--allow-mixed-commits", action="store_true",
                   help="aggregate (or add to) runs recorded from different code versions")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config key set for every run, e.g. --set model.dtype=bfloat16 "
                        "(repeatable; a results folder holds one set)")
    p.add_argument("--dry-run", action="store_true", help="print the planned runs and exit")
    return p


def _print(line: str) -> None:
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.dry_run:
            for s in plan_runs(args.studies, seeds=args.seeds, losses=args.losses,
                               sweep_steps=args.sweep_steps, paired_seeds=args.paired_seeds):
                print(f"{s.name}  ({', '.join(s.studies)})")
            return 0
        if args.aggregate_only:
            aggregate(args.out, allow_mixed_commits=args.allow_mixed_commits, log=_print)
            return 0
        run_study(args.out, budget=args.budget, studies=args.studies, seeds=args.seeds,
                  losses=args.losses, sweep_steps=args.sweep_steps,
                  paired_seeds=args.paired_seeds, jobs=args.jobs,
                  feature_examples=args.feature_examples,
                  allow_mixed_commits=args.allow_mixed_commits,
                  overrides=parse_overrides(args.overrides), log=_print)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
