"""Orbax checkpointing of the train state and of each host's data-iterator position.

A checkpoint step directory holds two items:
  ``state``: the train state pytree (params, batch_stats, opt_state, step, rng, ...), written
    collectively by all processes (orbax ``StandardSave``);
  ``data``: one JSON file per process with its iterator's ``get_state()``, so every host
    resumes exactly where it stopped (works for grain iterators and any object with
    ``get_state``/``set_state`` returning a JSON-able value or bytes).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath


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
        payload = json.loads(path.read_text())
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


def make_manager(directory: str, *, max_to_keep: int, async_save: bool) -> ocp.CheckpointManager:
    """A ``CheckpointManager`` that saves only when told (the loop decides when)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save
    )
    return ocp.CheckpointManager(
        epath.Path(directory).absolute(), options=options, item_names=("state", "data")
    )


def save(manager: ocp.CheckpointManager, step: int, state: Any, iterator: Any) -> None:
    """Saves the state and the iterator position at ``step`` (collective across processes)."""
    manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=IteratorSave(iterator)),
        force=True,
    )


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any, iterator: Any) -> Any:
    """Restores the state (with the shardings of ``abstract_state``) and the iterator in place."""
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=IteratorRestore(iterator)
        ),
    )
    return restored["state"]


def restore_state_only(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> Any:
    """Restores only the train state (evaluation does not need the training iterator)."""
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
    )
    return restored["state"]
