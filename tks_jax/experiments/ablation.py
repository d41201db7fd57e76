"""The ablation study of issue 7: baseline vs LS vs TET vs TKS on MNIST and its event version.

    python -m tks_jax.experiments.ablation --out results/ablation --budget full [--jobs 2]

Runs (docs/method.md §10-11; every run is ``train_and_evaluate`` on ``configs/ablation.py``):

- ``main``: losses baseline, ls, tet, tks x settings ``mnist`` (static, T = 4) and
  ``nmnist_synth`` (simulated N-MNIST, T = 10) x seeds 0, 1, 2.
- ``hard``: the same four losses x 3 seeds on ``mnist_hard`` (static MNIST from a reduced
  training set, so that accuracy stays below the ~99% ceiling).
- ``sweep`` (Fig. 3b): baseline and tks trained and tested at the same T, T in
  {1, 2, 4, 6, 8, 10}, seed 0, on ``nmnist_synth`` (T = 10 is the ``main`` run of seed 0).

Integrity: a run's config is ``configs/ablation.py:<setting>,<budget>`` with only
``loss.name``, ``seed`` and (sweep) ``num_steps`` set, so data, model, optimiser, epochs and
seeds are the same for every loss. There is no evaluation during training: each run is evaluated
once, after its last step, and nothing is selected on the test split.

Outputs in ``--out``: ``runs/<run>/`` (the training workdirs with ``report/report.json`` and
``run.json``: timing and the penultimate features' silhouette), ``results.json`` (per run and
mean +- std over seeds), ``table.md``, ``claims.md``, ``tsne/*.npz`` and the figures
(``fig3a_fewer_steps.png``, ``fig3b_same_T.png``, ``fig4_per_step.png``, ``fig5_tsne.png``,
``per_class_first_step.png``). Re-running the command skips finished runs (and resumes an
interrupted one from its checkpoint); ``--aggregate-only`` redraws from finished runs.

Budget. Pilot at the full budget (one TKS run per data set, ``--jobs 2``, on the 2-core build
machine while other jobs shared it; CPU seconds of the run's process, all threads):
mnist 199 CPU-s (98.6% top-1; 5000 images x 5 epochs, 10k test images), nmnist_synth
291 CPU-s (95.4%; 2000 recordings x 5 epochs at T = 10, 5000 test recordings); each run also
pays ~20-30 CPU-s of compilation, data start-up and checkpointing. The whole ``full`` study is
then 12 x 199 (mnist) + 12 x ~100 (mnist_hard: 10k training images instead of 25k, the same
test set) + 12 x 291 (nmnist_synth) + ~800 (the sweep: sum of T = 21, i.e. ~2 runs at T = 10,
plus ten compilations) ~ 7.9k CPU-s: about 66 min with ``--jobs 2`` on 2 idle cores, 1-1.5 h
allowing for imperfect parallel speed-up, under the issue's 2 h. Five epochs is the fewest that
gives TKS's per-epoch lambda ramp (lam = peak * epoch / epochs) five levels; training sets, not
epochs, were cut to fit. ``quick`` is the same plan on ~5x fewer images and 3 epochs (~2.8k
CPU-s, ~25 min); ``smoke`` is a few steps of a tiny model (tests, notebooks).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from tks_jax import json_utils

LOSSES = ("baseline", "ls", "tet", "tks")
STUDIES = ("main", "hard", "sweep")
BUDGETS = ("full", "quick", "smoke")
SEEDS = (0, 1, 2)
SWEEP_STEPS = (1, 2, 4, 6, 8, 10)
SWEEP_LOSSES = ("baseline", "tks")
# The settings of each study and their training T (docs/method.md §11: static T = 4, events T = 10).
STUDY_SETTINGS = {"main": ("mnist", "nmnist_synth"), "hard": ("mnist_hard",),
                  "sweep": ("nmnist_synth",)}
DEFAULT_T = {"mnist": 4, "mnist_hard": 4, "nmnist_synth": 10}
# Fig. 5: t-SNE of the penultimate features of these losses (seed 0).
TSNE_LOSSES = ("baseline", "tks")
DEFAULT_FEATURE_EXAMPLES = {"full": 1000, "quick": 500, "smoke": 32}

RUN_JSON = "run.json"
STUDY_JSON = "study.json"
RESULTS_JSON = "results.json"
TABLE_MD = "table.md"
CLAIMS_MD = "claims.md"
SUMMARY_MD = "README.md"
FEATURES_NPZ = "features.npz"


# ------------------------------------------------------------------------------------------
# The plan.
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run of the study.

    Attributes:
      setting: ``mnist`` | ``mnist_hard`` | ``nmnist_synth`` (``configs/ablation.py``).
      loss: ``baseline`` | ``ls`` | ``tet`` | ``tks``.
      seed: the config seed (initialisation, shuffling, augmentation).
      num_steps: T of training and test.
      studies: the studies the run belongs to (the sweep shares its T = 10 runs with ``main``).
    """

    setting: str
    loss: str
    seed: int
    num_steps: int
    studies: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Directory name; identical runs of two studies share it."""
        return f"{self.setting}_{self.loss}_T{self.num_steps}_s{self.seed}"


def _check_subset(what: str, values: Iterable[Any], allowed: Iterable[Any]) -> None:
    bad = [v for v in values if v not in tuple(allowed)]
    if bad:
        raise ValueError(f"Unknown {what} {bad}; choose from {list(allowed)}.")


def plan_runs(
    studies: Sequence[str] = STUDIES, *, seeds: Sequence[int] = SEEDS,
    losses: Sequence[str] = LOSSES, sweep_steps: Sequence[int] = SWEEP_STEPS,
) -> list[RunSpec]:
    """The runs of the requested studies, each once, in a deterministic order.

    Args:
      studies: subset of ``STUDIES``.
      seeds: seeds of ``main`` and ``hard``; the sweep uses the first.
      losses: losses of ``main`` and ``hard``; the sweep uses those of ``SWEEP_LOSSES`` among
        them.
      sweep_steps: the T values of the sweep.

    Returns:
      ``RunSpec`` list; a run shared by several studies appears once with all of them.
    """
    _check_subset("studies", studies, STUDIES)
    _check_subset("losses", losses, LOSSES)
    if not seeds:
        raise ValueError("At least one seed is needed (e.g. --seeds 0,1,2).")
    if any(not isinstance(t, int) or t < 1 for t in sweep_steps):
        raise ValueError(f"sweep_steps must be integers >= 1, got {list(sweep_steps)}.")
    runs: dict[tuple, set[str]] = {}
    order: list[tuple] = []

    def add(study, setting, loss, seed, t):
        key = (setting, loss, seed, t)
        if key not in runs:
            runs[key] = set()
            order.append(key)
        runs[key].add(study)

    for study in STUDIES:  # fixed order: main, hard, sweep
        if study not in studies:
            continue
        for setting in STUDY_SETTINGS[study]:
            if study == "sweep":
                for t in sweep_steps:
                    for loss in (x for x in SWEEP_LOSSES if x in losses):
                        add(study, setting, loss, seeds[0], t)
                continue
            for seed in seeds:
                for loss in losses:
                    add(study, setting, loss, seed, DEFAULT_T[setting])
    return [RunSpec(*key, studies=tuple(s for s in STUDIES if s in runs[key])) for key in order]


def _ablation_configs():
    """``configs/ablation.py`` (the repository root is put on ``sys.path`` if needed)."""
    try:
        return importlib.import_module("configs.ablation")
    except ModuleNotFoundError:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if not os.path.exists(os.path.join(root, "configs", "ablation.py")):
            raise
        sys.path.insert(0, root)
        return importlib.import_module("configs.ablation")


def make_config(spec: RunSpec, budget: str):
    """The run's config: ``configs/ablation.py:<setting>,<budget>`` + loss, seed and T."""
    if budget not in BUDGETS:
        raise ValueError(f"Unknown budget {budget!r}; choose from {list(BUDGETS)}.")
    config = _ablation_configs().get_config(f"{spec.setting},{budget}")
    config.loss.name = spec.loss
    config.seed = spec.seed
    config.num_steps = spec.num_steps
    return config


# ------------------------------------------------------------------------------------------
# Penultimate features (Fig. 5).
# ------------------------------------------------------------------------------------------


def penultimate_features(model, variables: dict, images, *, num_steps: int):
    """Inputs of the read-out layer and the logits, from one forward pass in inference mode.

    The read-out is the last ``tks_jax.models.layers.Linear`` the model calls (the classifier of
    docs/method.md §3, applied to every step), intercepted with ``flax.linen.intercept_methods``.

    Args:
      model: a ``tks_jax.models`` network.
      variables: its ``params`` (and ``batch_stats``).
      images: static ``[B, H, W, C]`` or event frames ``[T, B, H, W, C]``.
      num_steps: T.

    Returns:
      ``(features [T, B, D], logits [T, B, C])``.
    """
    import flax.linen as nn

    from tks_jax.models import layers

    captured = []

    def interceptor(next_fun, args, kwargs, context):
        if isinstance(context.module, layers.Linear) and context.method_name == "__call__":
            captured.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        logits = model.apply(variables, images, num_steps=num_steps, train=False)
    if not captured:
        raise ValueError(f"{type(model).__name__} calls no layers.Linear read-out.")
    return captured[-1], logits


def _load_state(workdir: str, config, model, info) -> dict:
    """The latest checkpoint of a finished run (params and BN statistics)."""
    import jax

    from tks_jax.training import checkpointing, optim
    from tks_jax.training import loop as loop_lib
    from tks_jax.training import sharding as sharding_lib

    manager = checkpointing.make_manager(
        os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints,
        async_save=False,
    )
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"No checkpoint in {workdir}/checkpoints; train first.")
    tx = optim.make_optimizer(config, optim.make_schedule(config, 1))
    init_fn = loop_lib.make_init_fn(model, tx, info, config)
    repl = sharding_lib.replicated(sharding_lib.make_mesh())
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl),
        jax.eval_shape(init_fn, jax.random.PRNGKey(0)),
    )
    state = checkpointing.restore_state_only(manager, step, abstract)
    manager.close()
    return state


def extract_features(workdir: str, config, num_examples: int) -> dict[str, np.ndarray]:
    """Time-averaged penultimate features of the first ``num_examples`` test examples.

    Returns:
      ``{'features': float32 [N, D], 'labels': int32 [N]}``.
    """
    import jax
    import ml_collections

    from tks_jax.training import input_pipeline
    from tks_jax.training import loop as loop_lib

    cfg = ml_collections.ConfigDict(config.to_dict())
    limit = cfg.data.get("max_eval_examples")
    cfg.data.max_eval_examples = min(num_examples, limit) if limit else num_examples
    batches, info = input_pipeline.get_dataset(
        cfg, cfg.data.eval_split, train=False, batch_size=cfg.eval_batch_size,
        num_steps=cfg.num_steps, seed=cfg.seed, shard_index=0, shard_count=1,
    )
    model = loop_lib.build_model(cfg, info.num_classes)
    state = _load_state(workdir, cfg, model, info)
    variables = {"params": state["params"]}
    if state["batch_stats"]:
        variables["batch_stats"] = state["batch_stats"]

    @jax.jit
    def forward(variables, images):
        feats, _ = penultimate_features(model, variables, images, num_steps=cfg.num_steps)
        return feats.mean(0)  # [B, D]: averaged over T like the output (Eq. 3)

    feats, labels = [], []
    for batch in batches:
        mask = np.asarray(batch["mask"], bool)
        feats.append(np.asarray(forward(variables, batch["image"]))[mask])
        labels.append(np.asarray(batch["label"])[mask])
    return {"features": np.concatenate(feats).astype(np.float32),
            "labels": np.concatenate(labels).astype(np.int32)}


# ------------------------------------------------------------------------------------------
# Running.
# ------------------------------------------------------------------------------------------


def run_one(spec: RunSpec, out_dir: str, budget: str, *, feature_examples: int) -> dict:
    """Trains, evaluates and extracts features of one run unless its ``run.json`` exists.

    Returns:
      The run record (``run.json``): the spec, ``wall_s`` and ``cpu_s`` of this process for the
      run, the final step, and the report directory.
    """
    workdir = os.path.join(out_dir, "runs", spec.name)
    path = os.path.join(workdir, RUN_JSON)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    from tks_jax.training import loop as loop_lib

    config = make_config(spec, budget)
    t0, c0 = time.time(), time.process_time()
    result = loop_lib.train_and_evaluate(config, workdir)
    if result["preempted"]:
        raise RuntimeError(f"Run {spec.name} was stopped by SIGTERM after a checkpoint; re-run "
                           "the same command to resume it.")
    data = extract_features(workdir, config, feature_examples)
    np.savez_compressed(os.path.join(workdir, FEATURES_NPZ), **data)
    record = {
        **dataclasses.asdict(spec), "name": spec.name, "budget": budget,
        "step": result["step"], "wall_s": time.time() - t0, "cpu_s": time.process_time() - c0,
        "report_dir": os.path.relpath(result["report_dir"], out_dir),
    }
    json_utils.write_json(path, record)
    return record


def _run_in_worker(args: tuple) -> dict:
    spec, out_dir, budget, feature_examples = args
    return run_one(spec, out_dir, budget, feature_examples=feature_examples)


def _check_study_dir(out_dir: str, budget: str) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, STUDY_JSON)
    study = {"budget": budget, "sessions": []}
    if os.path.exists(path):
        with open(path) as f:
            study = json.load(f)
        if study.get("budget") != budget:
            raise ValueError(
                f"{out_dir} holds a study with budget {study.get('budget')!r}, not {budget!r}; "
                "runs of different budgets must not be mixed: use another --out."
            )
    return study


def run_study(
    out_dir: str, *, budget: str = "full", studies: Sequence[str] = STUDIES,
    seeds: Sequence[int] = SEEDS, losses: Sequence[str] = LOSSES,
    sweep_steps: Sequence[int] = SWEEP_STEPS, jobs: int = 1,
    feature_examples: int | None = None, log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs every planned run not finished yet, then ``aggregate``.

    Args:
      out_dir: the results folder.
      budget: ``full`` | ``quick`` | ``smoke`` (``configs/ablation.py``).
      studies, seeds, losses, sweep_steps: see ``plan_runs``.
      jobs: runs trained at the same time (separate processes when > 1).
      feature_examples: test examples whose penultimate features are kept (t-SNE, silhouette);
        default by budget.
      log: progress lines.

    Returns:
      The aggregated results (``results.json``).
    """
    if budget not in BUDGETS:
        raise ValueError(f"Unknown budget {budget!r}; choose from {list(BUDGETS)}.")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}.")
    specs = plan_runs(studies, seeds=seeds, losses=losses, sweep_steps=sweep_steps)
    study = _check_study_dir(out_dir, budget)
    n_feat = feature_examples or DEFAULT_FEATURE_EXAMPLES[budget]
    start = time.time()
    todo = [s for s in specs if not os.path.exists(os.path.join(out_dir, "runs", s.name,
                                                                RUN_JSON))]
    log(f"{len(specs)} runs planned, {len(specs) - len(todo)} already finished; budget {budget}.")
    args = [(s, out_dir, budget, n_feat) for s in todo]
    # A failed run does not stop the others: it is reported, the finished runs are aggregated,
    # and the study ends with an error naming the failures (re-running retries only them).
    failed: list[tuple[str, str]] = []

    def done(i: int, name: str, get_record: Callable[[], dict[str, Any]]) -> None:
        try:
            rec = get_record()
        except Exception as e:  # noqa: BLE001 - reported below, the study goes on
            failed.append((name, f"{type(e).__name__}: {e}"))
            log(f"[{i + 1}/{len(todo)}] {name}: FAILED ({type(e).__name__}: {e})")
            return
        log(f"[{i + 1}/{len(todo)}] {rec['name']}: {rec['wall_s']:.0f} s")

    if jobs == 1 or len(todo) <= 1:
        for i, a in enumerate(args):
            done(i, a[0].name, functools.partial(_run_in_worker, a))
    else:
        import concurrent.futures
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # a fresh JAX runtime per worker
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            futures = {pool.submit(_run_in_worker, a): a[0].name for a in args}
            for i, fut in enumerate(concurrent.futures.as_completed(futures)):
                done(i, futures[fut], fut.result)
    study["sessions"].append({
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start)),
        "wall_s": time.time() - start, "runs_trained": len(todo), "jobs": jobs,
        "studies": list(studies), "seeds": list(seeds), "losses": list(losses),
        "sweep_steps": list(sweep_steps), "machine": machine_description(),
    })
    if failed:
        study["sessions"][-1]["failed"] = [name for name, _ in failed]
    json_utils.write_json(os.path.join(out_dir, STUDY_JSON), study)
    result = aggregate(out_dir, log=log)
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(todo)} runs failed (the others are aggregated in "
            f"{out_dir}); re-run the same command to retry them:\n"
            + "\n".join(f"  {name}: {err}" for name, err in failed)
        )
    return result


def machine_description() -> str:
    """``'Linux x86_64, 2 CPU cores, jax 0.x (cpu)'``."""
    import jax

    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, "
            f"jax {jax.__version__} ({jax.default_backend()})")


# ------------------------------------------------------------------------------------------
# Aggregation.
# ------------------------------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof = 1; None for a single value) of ``values``."""
    x = np.asarray(values, np.float64)
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if len(x) > 1 else None,
            "n": len(x)}


def _mean_std_curve(curves: Sequence[Sequence[float]]) -> dict[str, Any]:
    x = np.asarray(curves, np.float64)
    return {"mean": x.mean(0).tolist(),
            "std": x.std(0, ddof=1).tolist() if len(x) > 1 else None, "n": len(x)}


def silhouette(features: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette score (euclidean) of the classes in feature space: higher = better separated."""
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    if len(np.unique(labels)) < 2:
        return float("nan")
    with threadpool_limits(limits=1):
        return float(silhouette_score(features, labels, metric="euclidean"))


def tsne_embedding(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of ``features [N, D]`` (scikit-learn, PCA initialisation) -> ``[N, 2]``.

    Features without any variance (e.g. a layer that never spiked) have no embedding: zeros
    are returned (scikit-learn's PCA initialisation divides by the variance).
    """
    from sklearn.manifold import TSNE

    features = np.asarray(features, np.float64)
    if not np.all(np.isfinite(features)):
        raise ValueError("t-SNE: the features contain NaN or inf.")
    if float(features.std(0).max(initial=0.0)) == 0.0:
        return np.zeros((len(features), 2), np.float32)

    from threadpoolctl import threadpool_limits

    perplexity = float(min(30.0, max(2.0, (len(features) - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    # One thread: OpenMP workers spin and crawl when the cores are busy (e.g. parallel runs).
    with threadpool_limits(limits=1):
        return tsne.fit_transform(features).astype(np.float32)


def _run_summary(out_dir: str, rec: dict) -> dict:
    with open(os.path.join(out_dir, rec["report_dir"], "report.json")) as f:
        m = json.load(f)["metrics"]
    feats = np.load(os.path.join(out_dir, "runs", rec["name"], FEATURES_NPZ))
    keys = ("top1", "top5", "aurc_logit", "aurc_softmax", "first_k_accuracy",
            "per_step_accuracy", "per_class_accuracy_first_step", "num_examples")
    out = {k: rec[k] for k in ("setting", "loss", "seed", "num_steps", "studies", "wall_s",
                               "cpu_s", "step")}
    out.update({k: m[k] for k in keys})
    out["first_step_accuracy"] = m["first_k_accuracy"][0]
    out["silhouette"] = silhouette(feats["features"], feats["labels"])
    return out


def _group(runs: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """Mean +- std over seeds per setting and loss, of the runs at the setting's default T."""
    groups: dict[str, dict[str, list[dict]]] = {}
    for r in runs.values():
        if r["num_steps"] != DEFAULT_T[r["setting"]] or r["studies"] == ["sweep"]:
            continue
        groups.setdefault(r["setting"], {}).setdefault(r["loss"], []).append(r)
    out: dict[str, dict[str, dict]] = {}
    for setting, per_loss in groups.items():
        out[setting] = {}
        for loss in LOSSES:
            rs = per_loss.get(loss)
            if not rs:
                continue
            g: dict[str, Any] = {"seeds": sorted(r["seed"] for r in rs)}
            for k in ("top1", "aurc_logit", "aurc_softmax", "first_step_accuracy", "silhouette"):
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
                f"| {setting} (T={DEFAULT_T[setting]}) | {loss} | {len(g['seeds'])} | "
                f"{_fmt(g['top1'], 100)} | {_fmt(g['aurc_logit'])} | "
                f"{_fmt(g['first_step_accuracy'], 100)} | {_fmt(g['silhouette'], 1, 3)} |"
            )
    return "\n".join(lines) + "\n"


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
    """The paper's claims (issue 7) checked on the means over seeds.

    A claim ``held`` when the means order as claimed; the top-1 and AURC evidence also says
    whether the difference exceeds twice its standard error over seeds.

    Returns:
      One dict per (claim, setting): ``claim``, ``setting``, ``held`` (bool) and ``evidence``.
    """
    claims = []
    for setting, g in groups.items():
        if "tks" not in g:
            continue
        others = [x for x in LOSSES if x in g and x != "tks"]
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
    lines = ["| claim | data | held here | evidence (means over seeds) |", "|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {c['claim']} | {c['setting']} | {'yes' if c['held'] else 'no'} | "
                     f"{c['evidence']} |")
    return "\n".join(lines) + "\n"


def format_summary(results: dict, out_dir: str) -> str:
    """``README.md`` of a results folder: command, machine and time, table, claims, figures."""
    sessions = results.get("sessions") or []
    cmd = (f"python -m tks_jax.experiments.ablation --out {os.path.normpath(out_dir)} "
           f"--budget {results.get('budget')}")
    if sessions and sessions[-1].get("jobs", 1) > 1:
        cmd += f" --jobs {sessions[-1]['jobs']}"
    lines = [f"# Ablation study: budget `{results.get('budget')}`", "", "Command:", "",
             f"    {cmd}", ""]
    for s in sessions:
        lines.append(f"- {s['started']}: {s['runs_trained']} runs trained in "
                     f"{s['wall_s'] / 60:.1f} min wall-clock with {s['jobs']} job(s) on "
                     f"{s['machine']}"
                     + (f"; failed: {', '.join(s['failed'])}" if s.get("failed") else "")
                     + (f" ({s['note']})" if s.get("note") else "") + ".")
    lines += [
        f"- Sum over runs: {results['total_run_wall_s'] / 60:.1f} min of run wall-clock, "
        f"{results['total_run_cpu_s'] / 60:.1f} CPU-min ({len(results['runs'])} runs).", "",
        "## Results (mean ± std over seeds; last step, no selection on the test split)", "",
        "Top-1 of `argmax mean_t z_t`; AURC x1000 with max-logit confidence (the paper's); "
        "first step only = accuracy of `argmax z_1`; silhouette of the time-averaged "
        "penultimate features of test examples (higher = classes better separated).", "",
        format_table(results["groups"]), "## The paper's claims here", "",
        format_claims(results["claims"]), "## Figures", "",
    ]
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


def _tsne_files(out_dir: str, runs: dict[str, dict], log) -> dict[str, str]:
    """t-SNE of the seed-0 runs of TSNE_LOSSES per setting (cached in ``tsne/``)."""
    paths = {}
    os.makedirs(os.path.join(out_dir, "tsne"), exist_ok=True)
    for name, r in sorted(runs.items()):
        if (r["loss"] not in TSNE_LOSSES or r["seed"] != min(x["seed"] for x in runs.values())
                or r["num_steps"] != DEFAULT_T[r["setting"]]):
            continue
        path = os.path.join(out_dir, "tsne", f"{r['setting']}_{r['loss']}.npz")
        if not os.path.exists(path):
            feats = np.load(os.path.join(out_dir, "runs", name, FEATURES_NPZ))
            log(f"t-SNE of {name} ({len(feats['labels'])} test examples)")
            emb = tsne_embedding(feats["features"])
            np.savez_compressed(path, embedding=emb, labels=feats["labels"], run=name,
                                silhouette=r["silhouette"])
        paths[f"{r['setting']}/{r['loss']}"] = os.path.relpath(path, out_dir)
    return paths


def aggregate(out_dir: str, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Collects every finished run of ``out_dir`` into results, table, claims and figures.

    Returns:
      The dict written to ``results.json``: ``budget``, ``machine``, ``sessions``, ``runs``
      (per run), ``groups`` (per setting and loss, mean/std/n over seeds), ``sweep``
      (``{loss: {T: top1}}``), ``claims``, ``tsne`` (paths), ``total_run_wall_s``.
    """
    from tks_jax.experiments import figures

    runs_dir = os.path.join(out_dir, "runs")
    if not os.path.isdir(runs_dir):
        raise FileNotFoundError(f"{runs_dir} does not exist: run the study first (without "
                                "--aggregate-only).")
    runs = {}
    for name in sorted(os.listdir(runs_dir)):
        path = os.path.join(runs_dir, name, RUN_JSON)
        if os.path.exists(path):
            with open(path) as f:
                runs[name] = _run_summary(out_dir, json.load(f))
    if not runs:
        raise FileNotFoundError(f"No finished run in {runs_dir}.")
    study = {}
    if os.path.exists(os.path.join(out_dir, STUDY_JSON)):
        with open(os.path.join(out_dir, STUDY_JSON)) as f:
            study = json.load(f)
    groups, sweep = _group(runs), _sweep(runs)
    claims = evaluate_claims(groups, sweep)
    results = {
        "budget": study.get("budget"), "sessions": study.get("sessions", []),
        "total_run_wall_s": float(sum(r["wall_s"] for r in runs.values())),
        "total_run_cpu_s": float(sum(r["cpu_s"] for r in runs.values())),
        "runs": runs, "groups": groups, "sweep": sweep, "claims": claims,
        "tsne": _tsne_files(out_dir, runs, log),
    }
    json_utils.write_json(os.path.join(out_dir, RESULTS_JSON), results)
    with open(os.path.join(out_dir, TABLE_MD), "w") as f:
        f.write(format_table(groups))
    with open(os.path.join(out_dir, CLAIMS_MD), "w") as f:
        f.write(format_claims(claims))
    figures.draw_all(results, out_dir)
    with open(os.path.join(out_dir, SUMMARY_MD), "w") as f:
        f.write(format_summary(results, out_dir))
    log(format_table(groups))
    log(format_claims(claims))
    return results


def load_results(out_dir: str) -> dict[str, Any]:
    """Reads ``results.json`` of a results folder."""
    path = os.path.join(out_dir, RESULTS_JSON)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run `python -m tks_jax.experiments.ablation "
                                f"--out {out_dir}` first.")
    with open(path) as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------
# Command line.
# ------------------------------------------------------------------------------------------


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
        description="Ablation study of issue 7 (baseline / LS / TET / TKS on MNIST and the "
                    "simulated N-MNIST, plus the same-T sweep); writes a results folder.")
    p.add_argument("--out", required=True, help="results folder (created; finished runs are "
                                                "skipped on a re-run)")
    p.add_argument("--budget", default="full", choices=BUDGETS,
                   help="full: ~2 h on 2 CPU cores; quick: ~25 min; smoke: seconds")
    p.add_argument("--studies", type=_str_list, default=list(STUDIES),
                   help="comma-separated subset of main,hard,sweep")
    p.add_argument("--seeds", type=_int_list, default=list(SEEDS))
    p.add_argument("--losses", type=_str_list, default=list(LOSSES))
    p.add_argument("--sweep-steps", type=_int_list, default=list(SWEEP_STEPS))
    p.add_argument("--jobs", type=int, default=1, help="runs trained in parallel processes")
    p.add_argument("--feature-examples", type=int, default=None,
                   help="test examples kept for t-SNE / silhouette (default by budget)")
    p.add_argument("--aggregate-only", action="store_true",
                   help="only redraw the table, claims and figures from finished runs")
    p.add_argument("--dry-run", action="store_true", help="print the planned runs and exit")
    return p


def _print(line: str) -> None:
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.dry_run:
            for s in plan_runs(args.studies, seeds=args.seeds, losses=args.losses,
                               sweep_steps=args.sweep_steps):
                print(f"{s.name}  ({', '.join(s.studies)})")
            return 0
        if args.aggregate_only:
            aggregate(args.out, log=_print)
            return 0
        run_study(args.out, budget=args.budget, studies=args.studies, seeds=args.seeds,
                  losses=args.losses, sweep_steps=args.sweep_steps, jobs=args.jobs,
                  feature_examples=args.feature_examples, log=_print)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
