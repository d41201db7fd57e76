"""Experiment config: validation before anything runs, the smoke switch, config differences.

Every check here runs on the host before data, devices or compilation are touched, and raises
``ConfigError`` (a ``ValueError``) with a message that says what is wrong and what is allowed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import ml_collections

from tks_jax import models
from tks_jax.data import event_specs
from tks_jax.data.event_specs import EVENT_DATASETS
from tks_jax.training import objectives, optim
from tks_jax.training.errors import ConfigError

# Names accepted by the factories (contracts of tks_jax.data / tks_jax.models / tks_jax.losses).
# ``synthetic`` and ``synthetic_events`` are tiny generated datasets for tests and smoke runs.
DATASETS = (
    "cifar10", "cifar100", "imagenet2012", "caltech_birds2011", "stanford_dogs", "cars196",
    "mnist", "dvs_cifar10", "ncaltech101", "nmnist_synth", "synthetic", "synthetic_events",
)
MODELS = tuple(models.MODELS)
LOSSES = tuple(objectives.OBJECTIVES)
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
    "model.conv", "model.remat", "resume_with_changes", "anytime",
)


def _fail(msg: str) -> None:
    raise ConfigError(f"Invalid config: {msg}")


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
    frames = config.data.get("event_frames")
    if frames is not None and config.data.name in EVENT_DATASETS:
        try:
            event_specs.frame_options(config.data.name, dict(frames))
        except ValueError as e:
            _fail(f"data.event_frames: {e}")
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
    objectives.validate(config.loss)
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
    if config.get("anytime"):
        from tks_jax import anytime_eval  # lazy: the deployment side is not needed to train

        try:
            anytime_eval.parse_spec(config.anytime)
        except ValueError as e:
            _fail(f"anytime: {e}")
        if not config.data.get("validation_size") and not config.data.name.startswith("synthetic"):
            _fail("anytime calibrates its exit rule on a validation split held out of the "
                  "training data: set data.validation_size too (e.g. 5000).")


def check_num_steps_supported(max_steps: int | None, num_steps: int, what: str) -> None:
    """Raises if ``num_steps`` exceeds what the model supports (TEBN's per-step scales)."""
    if max_steps is not None and num_steps > max_steps:
        _fail(
            f"{what}={num_steps} is larger than the model supports ({max_steps}: TEBN learns "
            f"one scale per time step); evaluate with num_steps <= {max_steps}, or train with "
            f"a larger num_steps / model.norm='tdbn'."
        )


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys (dotted) whose values differ between two config dicts, ignoring ``RUNTIME_KEYS``."""
    a, b = flatten(old), flatten(new)
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


def closest_keys(config: ml_collections.ConfigDict, key: str, n: int = 3) -> list[str]:
    """The dotted keys of ``config`` closest to a mistyped ``key`` (``difflib``)."""
    import difflib

    keys = list(flatten(config.to_dict()))
    keys += sorted({k.rsplit(".", 1)[0] for k in keys if "." in k})
    matches = difflib.get_close_matches(key, keys, n=n, cutoff=0.5)
    if not matches:  # compare the last component only ('lernig_rate' vs 'learning_rate')
        last = key.rsplit(".", 1)[-1]
        by_last = {k.rsplit(".", 1)[-1]: k for k in keys}
        matches = [by_last[m] for m in difflib.get_close_matches(last, list(by_last), n=n,
                                                                  cutoff=0.5)]
    return matches
