"""Orbax checkpointing of the train state and of each host's data-iterator position.

A checkpoint step directory holds:
  ``state``: the train state pytree (params, batch_stats, opt_state, step, rng, ...), written
    collectively by all processes (orbax ``StandardSave``);
  ``data``: one JSON file per process with its iterator's ``get_state()``, so every host
    resumes exactly where it stopped (works for grain iterators and any object with
    ``get_state``/``set_state`` returning a JSON-able value or bytes);
  ``metrics``: ``{'sane_step': step or -1}`` for the keep policy (orbax ``best_fn``);
  ``integrity.json``: size and CRC-32 of every file of the step, written once the save is
    final and checked before a restore.

Integrity: orbax's zarr3 arrays carry a CRC-32C on their shard *index* only, so a flipped bit
in array data restores silently. ``integrity.json`` covers every byte. It is written by
process 0 after the save is final (right after a synchronous save; for an asynchronous save
at the next save or at the end of the run, when orbax waits for it anyway), and verified
before each restore: both off the training step's hot path. A step killed before its
``integrity.json`` was written is restored unverified (orbax's own checks still apply).

Keep policy (orbax ``preservation_policy``): the ``keep_checkpoints`` newest steps
(``LatestN``) plus the newest *sane* step (``BestN`` on ``sane_step``), so that a diverging
run never rotates out its last checkpoint with finite loss and parameters.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath

from tks_jax.training.errors import CheckpointRestoreError

INTEGRITY_FILE = "integrity.json"
CORRUPT_SUFFIX = ".corrupt"
# A checkpoint is "sane" when its loss was finite (the loop never saves after a non-finite
# one) and every parameter is finite with |param| <= this bound (trained SNN weights are
# O(1); a diverging run passes 1e4 long before it overflows).
SANE_PARAM_ABS_MAX = 1e4


class IteratorHandler(ocp.CheckpointHandler):
    """Saves ``iterator.get_state()`` as ``process_<i>-of-<n>.json`` (restores with set_state)."""

    def _file(self, directory: epath.Path) -> epath.Path:
        return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

    def save(self, directory: epath.Path, args: IteratorSave) -> None:
        state = args.item.get_state()
        if isinstance(state, bytes):
            payload = {"bytes": state.decode()}
        else:
            payload = {"value": state}
        self._file(directory).write_text(json.dumps(payload))

    def restore(self, directory: epath.Path, args: IteratorRestore) -> Any:
        path = self._file(directory)
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: the checkpoint was written by a different number of "
                f"processes than the {jax.process_count()} now running."
            )
        try:
            payload = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path.name} is not valid JSON ({e})") from None
        state = payload["bytes"].encode() if "bytes" in payload else payload["value"]
        args.item.set_state(state)
        return args.item

    def metadata(self, directory: epath.Path) -> None:
        del directory
        return None


@ocp.args.register_with_handler(IteratorHandler, for_save=True)
@dataclasses.dataclass
class IteratorSave(ocp.args.CheckpointArgs):
    item: Any


@ocp.args.register_with_handler(IteratorHandler, for_restore=True)
@dataclasses.dataclass
class IteratorRestore(ocp.args.CheckpointArgs):
    item: Any


def _sane_step(metrics: dict) -> float:
    return float(metrics.get("sane_step", -1))


def make_manager(directory: str, *, max_to_keep: int, async_save: bool) -> ocp.CheckpointManager:
    """A ``CheckpointManager`` that saves only when told (the loop decides when).

    Keeps the ``max_to_keep`` newest steps and the newest sane one (module docstring).
    """
    from orbax.checkpoint import checkpoint_managers as policies

    keep = policies.AnyPreservationPolicy([
        policies.LatestN(n=max_to_keep),
        policies.BestN(get_metric_fn=_sane_step, n=1, keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        create=True, enable_async_checkpointing=async_save, best_fn=_sane_step,
        best_mode="max", preservation_policy=keep,
    )
    return ocp.CheckpointManager(
        epath.Path(directory).absolute(), options=options, item_names=("state", "data")
    )


def step_dir(manager: ocp.CheckpointManager, step: int) -> str:
    return os.path.join(str(manager.directory), str(step))


@jax.jit
def _max_abs(params) -> jax.Array:
    leaves = [jnp.max(jnp.abs(x)) for x in jax.tree.leaves(params)]
    return jnp.max(jnp.stack(leaves)) if leaves else jnp.zeros(())


def is_sane(state: Any) -> bool:
    """Whether every parameter is finite with ``|param| <= SANE_PARAM_ABS_MAX``."""
    m = float(jax.device_get(_max_abs(state["params"])))
    return bool(m <= SANE_PARAM_ABS_MAX)  # False for NaN too


def _file_records(directory: str) -> dict[str, dict[str, int]]:
    records = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory)
            if rel == INTEGRITY_FILE:
                continue
            crc, size = 0, 0
            with open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    crc = zlib.crc32(chunk, crc)
                    size += len(chunk)
            records[rel] = {"size": size, "crc32": crc}
    return records


def write_integrity(directory: str) -> None:
    """Writes ``integrity.json`` (size and CRC-32 of every file) into a final step folder."""
    if not os.path.isdir(directory):
        return  # rotated out already
    payload = {"files": _file_records(directory)}
    tmp = os.path.join(directory, INTEGRITY_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(payload, f)
    os.replace(tmp, os.path.join(directory, INTEGRITY_FILE))


def verify_integrity(directory: str) -> bool:
    """Checks a step folder against its ``integrity.json``.

    Returns:
      True if verified, False if the folder has no ``integrity.json`` (written before it).

    Raises:
      ValueError: a file is missing, has another size, or another checksum.
    """
    path = os.path.join(directory, INTEGRITY_FILE)
    if not os.path.exists(path):
        if not os.path.isdir(directory) or not os.listdir(directory):
            raise ValueError("the step folder is empty")
        return False
    try:
        expected = json.loads(open(path).read())["files"]  # noqa: SIM115
    except (ValueError, KeyError) as e:
        raise ValueError(f"{INTEGRITY_FILE} is unreadable ({e})") from None
    found = _file_records(directory)
    for rel, rec in sorted(expected.items()):
        if rel not in found:
            raise ValueError(f"{rel} is missing")
        if found[rel]["size"] != rec["size"]:
            raise ValueError(f"{rel} has {found[rel]['size']} bytes, {rec['size']} were saved "
                             "(truncated or overwritten)")
        if found[rel]["crc32"] != rec["crc32"]:
            raise ValueError(f"{rel} fails its CRC-32 check (corrupted on disk)")
    return True


class Saver:
    """Saves steps and writes their ``integrity.json`` once each save is final.

    Args:
      manager: from ``make_manager``.
      async_save: whether ``manager`` saves asynchronously (as passed to ``make_manager``).
      write_integrity: whether this process writes ``integrity.json`` (process 0).
    """

    def __init__(self, manager: ocp.CheckpointManager, *, async_save: bool,
                 write_integrity: bool = True):
        self.manager = manager
        self._async = async_save
        self._write = write_integrity
        self._pending: list[int] = []

    def save(self, step: int, state: Any, iterator: Any) -> None:
        """Saves the state and the iterator position at ``step`` (collective across processes)."""
        self.finalize()  # orbax waits for the previous save here anyway
        sane = is_sane(state)
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=IteratorSave(iterator)
            ),
            metrics={"sane_step": step if sane else -1},
            force=True,
        )
        self._pending.append(step)
        if not self._async:
            self.finalize()

    def finalize(self) -> None:
        """Waits for the last save and writes the pending steps' ``integrity.json``."""
        self.manager.wait_until_finished()
        if self._write:
            for step in self._pending:
                write_integrity(step_dir(self.manager, step))
        self._pending = []

    def newest_sane_step(self) -> int | None:
        """The newest kept step whose parameters were sane at save, or None."""
        best = self.manager.best_step()
        metrics = self.manager.metrics(best) if best is not None else None
        return best if metrics is not None and _sane_step(metrics) >= 0 else None


def restore(
    manager: ocp.CheckpointManager, step: int, abstract_state: Any, iterator: Any = None, *,
    verify: bool = True,
) -> Any:
    """Restores the state (with the shardings of ``abstract_state``) and, if given, the
    iterator position in place.

    Raises:
      ValueError: the step folder fails its integrity check (``verify``).
      Exception: whatever orbax raises for an unreadable checkpoint.
    """
    if verify:
        verify_integrity(step_dir(manager, step))
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if iterator is not None:
        items["data"] = IteratorRestore(iterator)
    return manager.restore(step, args=ocp.args.Composite(**items))["state"]


def restore_state_only(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> Any:
    """``restore`` without the iterator (kept for callers of the former name)."""
    return restore(manager, step, abstract_state)


def _one_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (at most 240 characters), with its type."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    if len(first) > 240:
        first = first[:240] + "..."
    return f"{type(exc).__name__}: {first}"


def restore_newest(
    manager: ocp.CheckpointManager, abstract_state: Any, iterator: Any = None, *,
    warn: Callable[[str], None] = print, move_aside: bool = True,
) -> tuple[Any, int | None, list[int]]:
    """Restores the newest step that restores, moving each newer bad one aside.

    A step that fails (integrity check, missing or truncated files, unreadable iterator
    state) is reported in one line and renamed to ``<step>.corrupt`` (never deleted); older
    steps are tried in turn. Nothing is renamed when no step restores.

    Args:
      manager: from ``make_manager``; reload it (``make_manager`` again) if steps were moved.
      abstract_state: shapes, dtypes and shardings of the state.
      iterator: the training iterator (its position is restored), or None.
      warn: where the one-line reasons go.
      move_aside: rename bad steps (process 0 only on multi-host runs).

    Returns:
      ``(state, step, moved)``: ``(None, None, [])`` when there is no checkpoint.

    Raises:
      CheckpointRestoreError: checkpoints exist but none restores.
    """
    failures: list[tuple[int, str]] = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            state = restore(manager, step, abstract_state, iterator)
        except Exception as e:  # any failure means this step does not restore
            failures.append((step, _one_line(e)))
            warn(f"Checkpoint {step_dir(manager, step)} does not restore: {_one_line(e)}")
            continue
        moved = [s for s, _ in failures]
        if move_aside:
            for s in moved:
                path = step_dir(manager, s)
                target = path + CORRUPT_SUFFIX
                n = 1
                while os.path.exists(target):
                    target, n = f"{path}{CORRUPT_SUFFIX}-{n}", n + 1
                os.rename(path, target)
                warn(f"Moved {path} aside to {target}; resuming from step {step}.")
        return state, step, moved
    if failures:
        listed = "; ".join(f"step {s}: {r}" for s, r in failures)
        raise CheckpointRestoreError(
            f"No checkpoint in {manager.directory} restores ({listed}). Nothing was moved or "
            "deleted; restore the files, or pass --config.overwrite=True to start afresh."
        )
    return None, None, []
