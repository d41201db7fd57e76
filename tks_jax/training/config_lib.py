"""Experiment config: validation before anything runs, the smoke switch, workdir compatibility.

Every check here runs on the host before data, devices or compilation are touched, and raises
``ValueError`` with a message that says what is wrong and what is allowed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

from tks_jax import models
from tks_jax.training import optim

# Names accepted by the factories (contracts of tks_jax.data / tks_jax.models / tks_jax.losses).
# ``synthetic`` and ``synthetic_events`` are tiny generated datasets for tests and smoke runs.
DATASETS = (
    "cifar10", "cifar100", "imagenet2012", "caltech_birds2011", "stanford_dogs", "cars196",
    "mnist", "dvs_cifar10", "ncaltech101", "nmnist_synth", "synthetic", "synthetic_events",
)
MODELS = tuple(models.MODELS)
LOSSES = ("baseline", "ls", "tet", "tks")
CONV_ALGORITHMS = models.CONV_ALGORITHMS

# Keys that may change between a run and its resumption (they do not change the maths of
# training): logging/checkpoint cadence, paths, worker counts, evaluation settings, and how
# the model computes (model.conv and model.remat: same results up to fp32 rounding, same
# parameters; a run saved before model.conv existed resumes too).
RUNTIME_KEYS = (
    "overwrite", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
    "async_checkpointing", "eval_every_epochs", "eval_batch_size", "eval_num_steps",
    "distributed", "data.data_dir", "data.num_workers", "data.eval_split",
    "data.max_eval_examples", "tensorboard", "max_train_steps", "description",
    "model.conv", "model.remat",
)


def _fail(msg: str) -> None:
    raise ValueError(f"Invalid config: {msg}")


def apply_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Returns a copy shrunk to a CPU smoke run if ``config.smoke`` is set (big_vision runlocal).

    Keeps the data set, model family, loss and optimiser of the experiment; shrinks the batch,
    the number of examples and steps, and applies ``config.smoke_model`` (e.g. a smaller width).
    """
    if not config.get("smoke", False):
        return config
    config = ml_collections.ConfigDict(config.to_dict())
    s = config.smoke_settings
    config.batch_size = s.batch_size
    config.eval_batch_size = s.batch_size
    config.num_epochs = s.num_epochs
    config.max_train_steps = s.max_train_steps
    config.data.max_train_examples = s.max_examples
    config.data.max_eval_examples = s.max_examples
    config.optimizer.warmup_epochs = 0
    config.log_every_steps = 1
    config.checkpoint_every_steps = s.max_train_steps
    for key, value in config.get("smoke_model", {}).items():
        config.model[key] = value
    return config


def validate_config(
    config: ml_collections.ConfigDict, *, num_devices: int = 1, num_processes: int = 1
) -> None:
    """Checks a config before anything runs.

    Args:
      config: the (smoke-resolved) experiment config.
      num_devices: global number of devices (``jax.device_count()``).
      num_processes: number of hosts (``jax.process_count()``).

    Raises:
      ValueError: naming the offending key, its value, and what is allowed.
    """
    if config.data.name not in DATASETS:
        _fail(f"unknown data.name {config.data.name!r}; choose one of {list(DATASETS)}.")
    if config.model.name not in MODELS:
        _fail(f"unknown model.name {config.model.name!r}; choose one of {list(MODELS)}.")
    if config.loss.name not in LOSSES:
        _fail(f"unknown loss.name {config.loss.name!r}; choose one of {list(LOSSES)}.")
    if config.model.get("conv", "auto") not in CONV_ALGORITHMS:
        _fail(f"unknown model.conv {config.model.conv!r}; choose one of {list(CONV_ALGORITHMS)}.")
    for key in ("num_steps", "eval_num_steps"):
        t = config.get(key)
        if key == "eval_num_steps" and t is None:
            continue
        if not isinstance(t, int) or isinstance(t, bool) or t < 1:
            _fail(f"{key} (T) must be an integer >= 1, got {t!r}.")
    loss = config.loss
    if loss.name == "tks":
        if not (isinstance(loss.temperature, int | float) and loss.temperature > 0):
            _fail(f"loss.temperature must be > 0, got {loss.temperature!r}.")
        if not (0.0 <= loss.lambda_peak <= 1.0):
            _fail(f"loss.lambda_peak must lie in [0, 1], got {loss.lambda_peak!r}.")
    if loss.name == "ls" and not (0.0 <= loss.smoothing < 1.0):
        _fail(f"loss.smoothing must lie in [0, 1), got {loss.smoothing!r}.")
    if loss.name == "tet" and not (0.0 <= loss.tet_lamb <= 1.0):
        _fail(f"loss.tet_lamb must lie in [0, 1], got {loss.tet_lamb!r}.")
    for key in ("batch_size", "eval_batch_size"):
        b = config[key]
        if not isinstance(b, int) or b < 1:
            _fail(f"{key} must be a positive integer, got {b!r}.")
        if b % num_devices:
            _fail(
                f"{key}={b} is not divisible by the number of devices ({num_devices}); use a "
                f"multiple of {num_devices} (the batch is split evenly over devices)."
            )
        if b % num_processes:
            _fail(f"{key}={b} is not divisible by the number of processes ({num_processes}).")
    if config.num_epochs < 1:
        _fail(f"num_epochs must be >= 1, got {config.num_epochs!r}.")
    opt = config.optimizer
    if opt.name not in optim.OPTIMIZERS:
        _fail(f"unknown optimizer.name {opt.name!r}; choose one of {list(optim.OPTIMIZERS)}.")
    if opt.schedule_granularity not in optim.SCHEDULE_GRANULARITIES:
        _fail(
            f"optimizer.schedule_granularity must be one of {list(optim.SCHEDULE_GRANULARITIES)}"
            f", got {opt.schedule_granularity!r}."
        )
    if not (opt.base_learning_rate > 0 and math.isfinite(opt.base_learning_rate)):
        _fail(f"optimizer.base_learning_rate must be > 0, got {opt.base_learning_rate!r}.")
    if opt.warmup_epochs < 0 or (opt.warmup_epochs > 0 and opt.warmup_epochs >= config.num_epochs):
        _fail(
            f"optimizer.warmup_epochs={opt.warmup_epochs} must be in [0, num_epochs="
            f"{config.num_epochs})."
        )
    for key in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        if config[key] < 1:
            _fail(f"{key} must be >= 1, got {config[key]!r}.")


def check_num_steps_supported(max_steps: int | None, num_steps: int, what: str) -> None:
    """Raises if ``num_steps`` exceeds what the model supports (TEBN's per-step scales)."""
    if max_steps is not None and num_steps > max_steps:
        _fail(
            f"{what}={num_steps} is larger than the model supports ({max_steps}: TEBN learns "
            f"one scale per time step); evaluate with num_steps <= {max_steps}, or train with "
            f"a larger num_steps / model.norm='tdbn'."
        )


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys (dotted) whose values differ between two config dicts, ignoring ``RUNTIME_KEYS``."""
    a, b = _flatten(old), _flatten(new)
    # JSON turns tuples into lists; compare through JSON on both sides.
    b = json.loads(json.dumps(b, default=str))
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in RUNTIME_KEYS or key.startswith("smoke"):
            continue
        if a.get(key, "<missing>") != b.get(key, "<missing>"):
            diffs.append(f"{key}: {a.get(key, '<missing>')!r} -> {b.get(key, '<missing>')!r}")
    return diffs


CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


def check_workdir(workdir: str, config: ml_collections.ConfigDict) -> bool:
    """Refuses a workdir holding a run with an incompatible config.

    Returns:
      True when the workdir holds a compatible run (resume), False when it holds no checkpoint
      yet (a new run; its files are replaced).

    Raises:
      ValueError: if the stored config differs in a key that changes training, unless
        ``config.overwrite`` is True (the caller then discards the old run).
    """
    path = os.path.join(workdir, CONFIG_FILE)
    checkpoints = os.path.join(workdir, CHECKPOINT_DIR)
    if not (os.path.isdir(checkpoints) and os.listdir(checkpoints)):
        return False  # nothing trained yet (e.g. a first attempt failed on missing data)
    if not os.path.exists(path):
        if config.get("overwrite", False):
            return False
        raise ValueError(
            f"Workdir {workdir!r} holds checkpoints but no {CONFIG_FILE}, so its config cannot "
            "be checked. Use a new --workdir, or pass --config.overwrite=True to discard it."
        )
    with open(path) as f:
        old = json.load(f)
    diffs = config_differences(old, config.to_dict())
    if diffs and not config.get("overwrite", False):
        shown = "; ".join(diffs[:10]) + (" ..." if len(diffs) > 10 else "")
        raise ValueError(
            f"Workdir {workdir!r} holds a run with an incompatible config ({shown}). Use a new "
            "--workdir, or pass --config.overwrite=True to discard the old run."
        )
    return not diffs and not config.get("overwrite", False)
