"""The plan of the ablation study: its runs, their names and their configs.

Studies (``docs/method.md`` §10-11; every run is ``train_and_evaluate`` on
``configs/ablation.py``):

- ``main``: losses baseline, ls, tet, tks x settings ``mnist`` (static, T = 4) and
  ``nmnist_synth`` (simulated N-MNIST, T = 10) x seeds 0, 1, 2.
- ``hard``: the same four losses x 3 seeds on ``mnist_hard`` (static MNIST from a reduced
  training set, so that accuracy stays below the ~99% ceiling).
- ``sweep`` (Fig. 3b): baseline and tks trained and tested at the same T, T in
  {1, 2, 4, 6, 8, 10}, seed 0, on ``nmnist_synth`` (T = 10 is the ``main`` run of seed 0).
- ``paired``: the four losses x seeds 0-9 on ``nmnist_synth`` (T = 10; seeds 0-2 are the
  ``main`` runs), enough seeds for paired differences TKS - X with a confidence interval.

Integrity: a run's config is ``configs/ablation.py:<setting>,<budget>`` with only
``loss.name``, ``seed`` and (sweep) ``num_steps`` set, so data, model, optimiser, epochs and
seeds are the same for every loss.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

LOSSES = ("baseline", "ls", "tet", "tks")
STUDIES = ("main", "hard", "sweep", "paired")
BUDGETS = ("full", "quick", "smoke")
SEEDS = (0, 1, 2)
PAIRED_SEEDS = tuple(range(10))
SWEEP_STEPS = (1, 2, 4, 6, 8, 10)
SWEEP_LOSSES = ("baseline", "tks")
# The settings of each study and their training T (docs/method.md §11: static T = 4, events
# T = 10).
STUDY_SETTINGS = {"main": ("mnist", "nmnist_synth"), "hard": ("mnist_hard",),
                  "sweep": ("nmnist_synth",), "paired": ("nmnist_synth",)}
DEFAULT_T = {"mnist": 4, "mnist_hard": 4, "nmnist_synth": 10}
# Fig. 5: t-SNE of the penultimate features of these losses (seed 0).
TSNE_LOSSES = ("baseline", "tks")
DEFAULT_FEATURE_EXAMPLES = {"full": 1000, "quick": 500, "smoke": 32}


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
        """The run's name (and training directory); identical runs of two studies share it."""
        return f"{self.setting}_{self.loss}_T{self.num_steps}_s{self.seed}"


def _check_subset(what: str, values: Iterable[Any], allowed: Iterable[Any]) -> None:
    bad = [v for v in values if v not in tuple(allowed)]
    if bad:
        raise ValueError(f"Unknown {what} {bad}; choose from {list(allowed)}.")


def plan_runs(
    studies: Sequence[str] = STUDIES, *, seeds: Sequence[int] = SEEDS,
    losses: Sequence[str] = LOSSES, sweep_steps: Sequence[int] = SWEEP_STEPS,
    paired_seeds: Sequence[int] = PAIRED_SEEDS,
) -> list[RunSpec]:
    """The runs of the requested studies, each once, in a deterministic order.

    Args:
      studies: subset of ``STUDIES``.
      seeds: seeds of ``main`` and ``hard``; the sweep uses the first.
      losses: losses of ``main`` and ``hard``; the sweep uses those of ``SWEEP_LOSSES`` among
        them.
      sweep_steps: the T values of the sweep.
      paired_seeds: the seeds of ``paired``.

    Returns:
      ``RunSpec`` list; a run shared by several studies appears once with all of them.
    """
    _check_subset("studies", studies, STUDIES)
    _check_subset("losses", losses, LOSSES)
    if not seeds:
        raise ValueError("At least one seed is needed (e.g. --seeds 0,1,2).")
    if "paired" in studies and len(paired_seeds) < 2:
        raise ValueError("The paired study needs at least two seeds (e.g. --paired-seeds "
                         f"0,1,...,9), got {list(paired_seeds)}.")
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

    for study in STUDIES:  # fixed order: main, hard, sweep, paired
        if study not in studies:
            continue
        for setting in STUDY_SETTINGS[study]:
            if study == "sweep":
                for t in sweep_steps:
                    for loss in (x for x in SWEEP_LOSSES if x in losses):
                        add(study, setting, loss, seeds[0], t)
                continue
            for seed in (paired_seeds if study == "paired" else seeds):
                for loss in losses:
                    add(study, setting, loss, seed, DEFAULT_T[setting])
    return [RunSpec(*key, studies=tuple(s for s in STUDIES if s in runs[key])) for key in order]


def _ablation_configs():
    """The ``configs.ablation`` module (importable from the repository root or an install)."""
    try:
        from configs import ablation as ablation_configs
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "The ablation study needs the repository's `configs` package: run the command from "
            "the repository root, or install the repository (`pip install -e .`)."
        ) from e
    return ablation_configs


def make_config(spec: RunSpec, budget: str):
    """The run's config: ``configs/ablation.py:<setting>,<budget>`` + loss, seed and T."""
    if budget not in BUDGETS:
        raise ValueError(f"Unknown budget {budget!r}; choose from {list(BUDGETS)}.")
    config = _ablation_configs().get_config(f"{spec.setting},{budget}")
    config.loss.name = spec.loss
    config.seed = spec.seed
    config.num_steps = spec.num_steps
    return config


# Set by the plan for each run; an override may not change them.
PLAN_KEYS = ("loss.name", "seed", "num_steps")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["model.dtype=bfloat16", "num_epochs=3"]`` -> ``{"model.dtype": "bfloat16",
    "num_epochs": 3}``: values are read as JSON where they parse (numbers, booleans, lists),
    as strings otherwise."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"Override {item!r} is not KEY=VALUE (e.g. model.dtype=bfloat16).")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def apply_overrides(config, overrides: Mapping[str, Any]):
    """Sets each dotted key of ``overrides`` in ``config`` (in place; returned). Every run of a
    study gets the same overrides, so the runs still differ only in loss, seed and T.

    Raises:
      ValueError: a key the config lacks, a value of the wrong type, or a key the plan sets
        per run (``PLAN_KEYS``).
    """
    # Walked by hand: ConfigDict.update_from_flattened_dict silently adds an unknown leaf to an
    # unlocked config, and a typo would then train the default.
    for key, value in overrides.items():
        if key in PLAN_KEYS:
            raise ValueError(f"{key} is set per run by the study's plan; choose it with "
                             "--losses, --seeds or --sweep-steps instead of an override.")
        *parents, leaf = key.split(".")
        node = config
        for i, part in enumerate(parents):
            if part not in node:
                raise ValueError(f"Override {key}: the config has no "
                                 f"{'.'.join(parents[:i + 1])!r}.")
            node = node[part]
        if leaf not in node:
            raise ValueError(f"Override {key}: the config has no {key!r} (see "
                             "configs/ablation.py and configs/common.py for its keys).")
        try:
            node[leaf] = value
        except (TypeError, ValueError) as e:
            raise ValueError(f"Override {key}={value!r}: {e}") from None
    return config
