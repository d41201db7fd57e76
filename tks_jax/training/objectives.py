"""The training objective selected by ``config.loss``: one registry from config to loss.

Each entry of :data:`OBJECTIVES` names a loss function of :mod:`tks_jax.losses`, the
``config.loss`` keys that are its keyword arguments (**a config key is the argument's name**),
the schedule of its balance factor (TKS: ``lam``, ``docs/method.md`` §4) with the keys that
are the schedule's arguments, and the valid range of each key. The train step, the loop's
per-epoch ``lam`` and the config validation all read this table; nothing else chooses a loss.

``config.loss`` keys (``configs/common.py``):

=================  ========  ============================================================
key                used by   argument of
=================  ========  ============================================================
``name``           all       the registry key: ``baseline``, ``ls``, ``tet``, ``tks``
``smoothing``      ls        :func:`tks_jax.losses.label_smoothing` ``smoothing``
``lamb``           tet       :func:`tks_jax.losses.tet` ``lamb`` (MSE weight)
``means``          tet       :func:`tks_jax.losses.tet` ``means`` (MSE target phi)
``temperature``    tks       :func:`tks_jax.losses.tks` ``temperature``
``detach_teacher`` tks       :func:`tks_jax.losses.tks` ``detach_teacher``
``peak``           tks       :func:`tks_jax.losses.tks_lambda_schedule` ``peak``
=================  ========  ============================================================

Runs saved before the keys were renamed (``lambda_peak``, ``tet_lamb``, ``tet_means``) load
through :func:`upgrade_legacy_keys`, which maps the old names onto the new ones.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from tks_jax import losses
from tks_jax.training.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Range:
    """An interval of valid values of a numeric config key."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, x: float) -> bool:
        ok = x > self.low if self.low_open else x >= self.low
        if self.high is not None:
            ok = ok and (x < self.high if self.high_open else x <= self.high)
        return ok and math.isfinite(x)

    def describe(self) -> str:
        if self.high is None:
            if self.low == -math.inf:
                return "be a finite number"
            return f"be {'>' if self.low_open else '>='} {self.low}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"lie in {left}{self.low}, {self.high}{right}"


@dataclasses.dataclass(frozen=True)
class Objective:
    """One training objective: its loss function and what the config feeds it.

    Attributes:
      loss: ``loss(logits [T, B, C], labels [B], **kwargs) -> scalar``.
      args: ``config.loss`` keys passed to ``loss`` as keyword arguments of the same name.
      schedule: ``schedule(**schedule_args, num_epochs=E) -> (epoch -> value)``, the optax-style
        schedule of the argument ``scheduled``; None for objectives without one.
      schedule_args: ``config.loss`` keys passed to ``schedule`` (same names).
      scheduled: the ``loss`` argument that takes the schedule's value (traced: no recompile).
      aux: diagnostics of ``loss(..., return_aux=True)`` that the train step logs.
      ranges: valid values of the numeric keys of ``args`` and ``schedule_args``.
    """

    loss: Callable[..., Any]
    args: tuple[str, ...] = ()
    schedule: Callable[..., Callable[[Any], Any]] | None = None
    schedule_args: tuple[str, ...] = ()
    scheduled: str | None = None
    aux: tuple[str, ...] = ()
    ranges: Mapping[str, Range] = dataclasses.field(default_factory=dict)


UNIT = Range(0, 1)

OBJECTIVES: dict[str, Objective] = {
    "baseline": Objective(losses.mean_ce),  # §5: CE of the averaged output
    "ls": Objective(  # §5: label smoothing
        losses.label_smoothing, args=("smoothing",),
        ranges={"smoothing": Range(0, 1, high_open=True)},
    ),
    "tet": Objective(  # §5: TET
        losses.tet, args=("lamb", "means"), ranges={"lamb": UNIT, "means": Range(-math.inf)},
    ),
    "tks": Objective(  # §4: TKS with its linear lam ramp
        losses.tks, args=("temperature", "detach_teacher"),
        schedule=losses.tks_lambda_schedule, schedule_args=("peak",), scheduled="lam",
        aux=("ce", "kd"), ranges={"temperature": Range(0, low_open=True), "peak": UNIT},
    ),
}

# Old config key -> its name now (config key == argument name), for runs saved before.
LEGACY_KEYS = {"lambda_peak": "peak", "tet_lamb": "lamb", "tet_means": "means"}


def get(name: str) -> Objective:
    """The objective registered as ``name``; ConfigError (a ValueError) naming the choices."""
    if name not in OBJECTIVES:
        raise ConfigError(
            f"Invalid config: unknown loss.name {name!r}; choose one of {list(OBJECTIVES)}."
        )
    return OBJECTIVES[name]


def validate(loss_config: Mapping[str, Any]) -> None:
    """Checks ``config.loss``: a known name, and every key the objective reads, in range.

    Raises:
      ConfigError (a ValueError): ``Invalid config: loss.<key> ...`` naming the key, its
        value and what is allowed (a missing key, e.g. an old name, is named with its
        replacement).
    """
    objective = get(loss_config["name"])
    for key in objective.args + objective.schedule_args:
        if key not in loss_config:
            old = [k for k, v in LEGACY_KEYS.items() if v == key and k in loss_config]
            hint = f" (it was called loss.{old[0]} before)" if old else ""
            raise ConfigError(f"Invalid config: loss.{key} is missing{hint}.")
        value, allowed = loss_config[key], objective.ranges.get(key)
        if allowed is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"Invalid config: loss.{key} must be a number, got {value!r}.")
        if not allowed.contains(float(value)):
            raise ConfigError(
                f"Invalid config: loss.{key} must {allowed.describe()}, got {value!r}."
            )


def upgrade_legacy_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a config dict (e.g. a workdir's ``config.json``) with old loss keys renamed.

    ``loss.lambda_peak`` -> ``loss.peak``, ``loss.tet_lamb`` -> ``loss.lamb``,
    ``loss.tet_means`` -> ``loss.means``. A dict holding both an old key and its new name
    keeps the new one.
    """
    out = dict(config)
    loss = dict(out.get("loss") or {})
    for old, new in LEGACY_KEYS.items():
        if old in loss:
            value = loss.pop(old)
            loss.setdefault(new, value)
    if "loss" in out:
        out["loss"] = loss
    return out


def lam_schedule(loss_config: Mapping[str, Any], num_epochs: int) -> Callable[[int], Any]:
    """The schedule ``epoch -> value`` of the objective's scheduled argument (0 if none)."""
    objective = get(loss_config["name"])
    if objective.schedule is None:
        return lambda epoch: 0.0
    kwargs = {key: loss_config[key] for key in objective.schedule_args}
    return objective.schedule(**kwargs, num_epochs=num_epochs)


def lam_at(config: Mapping[str, Any], epoch: int) -> np.float32:
    """``lam`` of ``epoch`` for an experiment config (``config.loss``, ``config.num_epochs``)."""
    return np.float32(lam_schedule(config["loss"], config["num_epochs"])(epoch))


def compute_loss(
    loss_config: Mapping[str, Any], logits: jax.Array, labels: jax.Array, lam: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The training loss (§4-5) selected by ``loss_config.name``.

    Args:
      loss_config: ``config.loss``.
      logits: ``[T, B, C]`` per-step logits.
      labels: ``[B]`` integer labels.
      lam: the scheduled value (:func:`lam_at`); ignored by objectives without a schedule.

    Returns:
      ``(loss, aux)``: a float32 scalar and a dict of scalar diagnostics (for TKS: ``ce``,
      ``kd``).
    """
    objective = get(loss_config["name"])
    kwargs = {key: loss_config[key] for key in objective.args}
    if objective.scheduled is not None:
        kwargs[objective.scheduled] = lam
    if not objective.aux:
        return objective.loss(logits, labels, **kwargs), {}
    loss, aux = objective.loss(logits, labels, return_aux=True, **kwargs)
    return loss, {key: aux[key] for key in objective.aux}
