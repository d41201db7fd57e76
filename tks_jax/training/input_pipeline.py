"""Input pipeline of the training loop: ``tks_jax.data`` datasets plus tiny synthetic ones.

``synthetic`` (static ``[B, H, W, C]``) and ``synthetic_events`` (time-major
``[T, B, H, W, C]``) are generated in memory from a seed: each class has a fixed random
prototype and every example is its prototype plus noise, so a small network learns them in a few
steps. They follow the iterator contract of ``tks_jax.data.get_dataset`` (dict batches with
``image``, ``label``, ``mask``; ``get_state``/``set_state``) and exist for tests and smoke runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import ml_collections
import numpy as np


@dataclasses.dataclass(frozen=True)
class SyntheticInfo:
    """Same fields as ``tks_jax.data.DatasetInfo``."""

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    num_examples: int
    is_event: bool


class SyntheticIterator(Iterator[dict[str, np.ndarray]]):
    """Deterministic batches of a synthetic classification problem.

    Train: infinite, reshuffled every epoch, full batches. Eval: one pass, the last batch padded
    and flagged by ``mask``. The state is ``{'epoch', 'index'}`` (JSON-serialisable).
    """

    def __init__(
        self, *, num_examples: int, num_classes: int, image_shape: tuple[int, int, int],
        batch_size: int, num_steps: int | None, train: bool, seed: int, shard_index: int,
        shard_count: int, split_seed: int,
    ):
        self._n = num_examples
        self._batch = batch_size
        self._t = num_steps
        self._train = train
        self._seed = seed
        self._shard_index, self._shard_count = shard_index, shard_count
        proto_rng = np.random.default_rng(1234)  # class prototypes shared by train and test
        self._protos = proto_rng.normal(size=(num_classes, *image_shape)).astype(np.float32)
        rng = np.random.default_rng(split_seed)
        self._labels = rng.integers(0, num_classes, size=num_examples).astype(np.int32)
        noise = rng.normal(size=(num_examples, *image_shape)).astype(np.float32)
        self._images = self._protos[self._labels] + 0.5 * noise
        self._epoch, self._index = 0, 0

    def get_state(self) -> dict[str, int]:
        return {"epoch": self._epoch, "index": self._index}

    def set_state(self, state: dict[str, int]) -> None:
        self._epoch, self._index = int(state["epoch"]), int(state["index"])

    def _order(self) -> np.ndarray:
        if not self._train:
            return np.arange(self._n)
        return np.random.default_rng((self._seed, self._epoch)).permutation(self._n)

    def __next__(self) -> dict[str, np.ndarray]:
        global_batch = self._batch * self._shard_count
        if self._train and self._index + global_batch > self._n:
            self._epoch, self._index = self._epoch + 1, 0
        if not self._train and self._index >= self._n:
            raise StopIteration
        ids = self._order()[self._index : self._index + global_batch]
        self._index += global_batch
        mask = np.zeros(global_batch, bool)
        mask[: len(ids)] = True
        ids = np.pad(ids, (0, global_batch - len(ids)))
        lo = self._shard_index * self._batch
        ids, mask = ids[lo : lo + self._batch], mask[lo : lo + self._batch]
        image = self._images[ids]
        if self._t is not None:  # events: non-negative "counts", time-major [T, B, H, W, C]
            image = np.stack([np.abs(image) * (1 + 0.1 * t) for t in range(self._t)])
        return {"image": image, "label": self._labels[ids], "mask": mask}


def _synthetic(config, split, *, batch_size, num_steps, train, seed, shard_index, shard_count):
    data = config.data
    is_event = data.name == "synthetic_events"
    n = data.get("synthetic_examples", 64)
    limit = data.max_train_examples if train else data.max_eval_examples
    n = min(n, limit) if limit else n
    shape = tuple(data.get("image_shape", (8, 8, 1)))
    it = SyntheticIterator(
        num_examples=n, num_classes=data.get("num_classes", 4), image_shape=shape,
        batch_size=batch_size, num_steps=num_steps if is_event else None, train=train,
        seed=seed, shard_index=shard_index, shard_count=shard_count,
        split_seed=0 if split == "train" else 1,
    )
    input_shape = ((num_steps,) if is_event else ()) + shape
    info = SyntheticInfo(data.name, data.get("num_classes", 4), input_shape, n, is_event)
    return it, info


def get_dataset(
    config: ml_collections.ConfigDict, split: str, *, train: bool, batch_size: int,
    num_steps: int, seed: int, shard_index: int, shard_count: int,
) -> tuple[Iterator[dict[str, np.ndarray]], Any]:
    """Per-host iterator and dataset info for ``config.data`` (see ``tks_jax.data``).

    Args:
      config: the experiment config.
      split: dataset split name.
      train: training (shuffled, augmented, infinite, full batches) or evaluation (one pass,
        padded last batch with ``mask``).
      batch_size: the per-host batch size.
      num_steps: T, the number of time bins for event data.
      seed: data seed (shuffling, augmentation).
      shard_index, shard_count: this host's shard of the data.
    """
    data = config.data
    if data.name.startswith("synthetic"):
        return _synthetic(
            config, split, batch_size=batch_size, num_steps=num_steps, train=train, seed=seed,
            shard_index=shard_index, shard_count=shard_count,
        )
    from tks_jax import data as tks_data  # imported lazily: the data stack is heavy

    return tks_data.get_dataset(
        data.name, split, batch_size=batch_size, num_steps=num_steps, train=train, seed=seed,
        data_dir=data.data_dir, shard_index=shard_index, shard_count=shard_count,
        num_workers=data.num_workers, num_epochs=None if train else 1,
        drop_remainder=train,
        max_examples=data.max_train_examples if train else data.max_eval_examples,
        event_frames=data.get("event_frames"),
        # Held out of 'train' and served as 'validation' (tks_jax.data.validation_indices).
        validation_size=data.get("validation_size"),
        validation_seed=data.get("validation_seed") or 0,
    )
