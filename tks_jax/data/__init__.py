"""Datasets of the paper as grain pipelines of numpy batches: ``get_dataset`` is the entry point.

    it, info = get_dataset('cifar10', 'train', batch_size=128, train=True, seed=0)
    batch = next(it)   # {'image': f32 [B, 32, 32, 3], 'label': i32 [B], 'mask': bool [B]}
    it, info = get_dataset('dvs_cifar10', 'test', batch_size=64, num_steps=10, train=False)
    batch = next(it)   # {'image': f32 [T, B, 48, 48, 2], ...}; last batch padded, mask False

Static datasets are tfds array_record data sources (``tks_jax.data.static``); event datasets
come from ``tks_jax.data.event_datasets``; ``mnist`` and ``nmnist_synth`` are made offline on first
use. Nothing here downloads.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import grain
import numpy as np

from tks_jax.data import pipeline, static
from tks_jax.data.pipeline import batches_per_epoch
from tks_jax.data.static import STATIC_DATASETS

EVENT_DATASET_NAMES = ("dvs_cifar10", "ncaltech101", "nmnist_synth")
DATASET_NAMES = (*STATIC_DATASETS, *EVENT_DATASET_NAMES)
SPLITS = ("train", "test", "validation")
DATA_DIR_ENV = "TKS_DATA_DIR"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Metadata of one split as served by ``get_dataset``.

    Attributes:
        name: dataset name.
        num_classes: number of labels.
        input_shape: one example without batch: ``(H, W, C)`` static, ``(T, H, W, C)`` events.
        num_examples: examples in this split (all hosts, after ``max_examples``).
        is_event: event-camera data (batches are time-major ``[T, B, H, W, C]``).
        class_names: label names when the dataset has them.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    num_examples: int
    is_event: bool
    class_names: tuple[str, ...] | None = dataclasses.field(default=None, repr=False)


def default_data_dir() -> str:
    """``$TKS_DATA_DIR`` if set, else ``~/tensorflow_datasets``."""
    return os.path.expanduser(os.environ.get(DATA_DIR_ENV) or "~/tensorflow_datasets")


def _class_names(source: Any) -> tuple[str, ...] | None:
    try:
        names = source.dataset_info.features["label"].names
    except Exception:  # mocks, custom sources: names are optional
        return None
    if isinstance(names, list | tuple) and names and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None


class _FirstN:
    """The first ``n`` records of a random-access source."""

    def __init__(self, source: Any, n: int):
        self._source, self._n = source, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self._n:
            raise IndexError(index)
        return self._source[index]


def validation_indices(labels: Any, size: int, seed: int = 0) -> np.ndarray:
    """The examples of a training split held out for validation: a fixed, seeded, per-class
    subset of ``size`` examples.

    Every class gets its share of ``size`` in proportion to its count (floors, then the
    largest remainders, ties to the smaller label), drawn uniformly within the class with
    ``np.random.default_rng(seed)``. The same labels, size and seed always give the same
    subset, independent of the training seed.

    Args:
        labels: int ``[N]`` labels of the training split.
        size: examples to hold out, ``1 <= size < N``.
        seed: seeds the draw within each class.

    Returns:
        Sorted int64 indices ``[size]`` into the split.

    Raises:
        ValueError: ``size`` out of range or labels not a non-empty vector.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"validation_indices: labels must be a non-empty [N] vector, got "
                         f"shape {labels.shape}.")
    n = labels.shape[0]
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not 1 <= size < n:
        raise ValueError(
            f"validation_size must be an integer in [1, {n}) (the training split has {n} "
            f"examples and needs some left for training), got {size!r}."
        )
    classes, counts = np.unique(labels, return_counts=True)
    share = size * counts / n
    take = np.floor(share).astype(np.int64)
    order = np.lexsort((classes, -(share - take)))  # largest remainder first, then label
    take[order[: size - int(take.sum())]] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


class _Subset:
    """The records ``indices`` of a random-access source, in that order."""

    def __init__(self, source: Any, indices: np.ndarray):
        self._source, self._indices = source, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self._indices):
            raise IndexError(index)
        return self._source[int(self._indices[index])]


def _source_labels(source: Any) -> np.ndarray:
    """Labels of every record of a static source (reads each record once)."""
    return np.asarray([int(source[i]["label"]) for i in range(len(source))], np.int64)


def get_dataset(
    name: str,
    split: str,
    *,
    batch_size: int,
    num_steps: int | None = None,
    train: bool,
    seed: int = 0,
    data_dir: str | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_workers: int = 0,
    num_epochs: int | None = None,
    drop_remainder: bool | None = None,
    max_examples: int | None = None,
    read_options: grain.ReadOptions | None = None,
    event_frames: Mapping[str, str] | None = None,
    validation_size: int | None = None,
    validation_seed: int = 0,
) -> tuple[grain.DatasetIterator, DatasetInfo]:
    """A checkpointable iterator of numpy batches of one split, on this host.

    Args:
        name: one of ``DATASET_NAMES``.
        split: ``'train'``, ``'test'`` (ImageNet's ``test`` is its validation set) or
            ``'validation'``: ``validation_size`` examples carved from the training split
            (``validation_indices``); with ``validation_size`` set, ``'train'`` excludes them.
        batch_size: examples per batch on this host.
        num_steps: T, the number of time bins of event data (required for event datasets,
            ignored for static ones, which the model repeats over time itself).
        train: training mode (shuffle or class-balanced draws, augmentation, repeat) or
            evaluation (in order, one pass, every example counted, last batch padded).
        seed: seeds shuffling, class-balanced draws and augmentation.
        data_dir: the tfds data directory; default ``default_data_dir()``.
        shard_index: this host; default ``jax.process_index()``.
        shard_count: number of hosts; default ``jax.process_count()``.
        num_workers: grain worker processes (0: threads of this process).
        num_epochs: passes over the data; ``None``: forever for training, once for eval.
        drop_remainder: drop a last partial batch; default True for training, False for eval.
        max_examples: use only the first ``max_examples`` of the split.
        read_options: grain ``ReadOptions`` (reader threads, prefetch buffer).
        event_frames: event data only: frame options ``binning`` / ``extent`` overriding the
            dataset's defaults (``tks_jax.data.event_specs.frame_options``, docs/data.md).
        validation_size: examples of the training split held out for validation (None: no
            validation split; ``'train'`` is the whole split). Use the same value for the
            ``'train'`` and ``'validation'`` calls.
        validation_seed: seeds which examples are held out (not the training seed).

    Returns:
        ``(iterator, info)``: the iterator yields ``{'image': float32 [B, H, W, C] (static) or
        [T, B, H, W, C] (events), 'label': int32 [B], 'mask': bool [B]}`` and has
        ``get_state()`` / ``set_state()``; ``info`` is a ``DatasetInfo``.

    Raises:
        ValueError: unknown name or split, bad sizes or shards.
        FileNotFoundError: the dataset is not prepared in ``data_dir`` (the message names the
            expected path and the prepare command).
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}.")
    if split not in SPLITS:
        raise ValueError(
            f"Unknown split {split!r} for {name}; use 'train', 'test' or 'validation'."
        )
    if split == "validation" and validation_size is None:
        raise ValueError(
            "split='validation' is carved from the training split: pass validation_size (the "
            "number of held-out examples; config key data.validation_size)."
        )
    source_split = "train" if split == "validation" else split
    if max_examples is not None and (
        isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1
    ):
        raise ValueError(
            f"`max_examples` must be a positive integer or None, got {max_examples!r}."
        )
    if shard_index is None or shard_count is None:
        import jax

        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    pipeline.check_shard(shard_index, shard_count)
    data_dir = os.path.expanduser(data_dir) if data_dir else default_data_dir()

    labels = None
    class_balanced = False
    if name in STATIC_DATASETS:
        spec = STATIC_DATASETS[name]
        source = static.get_static_source(name, source_split, data_dir)
        transforms = static.static_transforms(name, train=train)
        input_shape: tuple[int, ...] = spec.input_shape
        num_classes = spec.num_classes
    else:
        if (
            num_steps is None
            or isinstance(num_steps, bool)
            or not isinstance(num_steps, int)
            or num_steps < 1
        ):
            raise ValueError(
                f"{name} is event data: pass `num_steps` (T, a positive integer), "
                f"got {num_steps!r}."
            )
        from tks_jax.data import event_datasets  # lazy: the static path never needs it

        event_spec = event_datasets.EVENT_DATASETS[name]
        source, labels = event_datasets.get_event_source(name, source_split, data_dir)
        frame_kwargs = {} if event_frames is None else {"frames": dict(event_frames)}
        transforms = event_datasets.event_transforms(
            name, num_steps=num_steps, train=train, seed=seed, **frame_kwargs
        )
        height, width = event_spec.output_size
        input_shape = (num_steps, height, width, 2)
        num_classes = event_spec.num_classes
        class_balanced = train and event_spec.class_balanced

    class_names = _class_names(source)
    if class_names is None and name not in STATIC_DATASETS:
        spec_names = getattr(event_spec, "class_names", None)
        class_names = tuple(spec_names) if spec_names else None
    if validation_size is not None and source_split == "train":
        all_labels = labels if labels is not None else _source_labels(source)
        held_out = validation_indices(all_labels, validation_size, validation_seed)
        if split == "validation":
            keep = held_out
        else:
            keep = np.setdiff1d(np.arange(len(source)), held_out)
        source = _Subset(source, keep)
        if labels is not None:
            labels = np.asarray(labels)[keep]
    if max_examples is not None and max_examples < len(source):
        source = _FirstN(source, max_examples)
        if labels is not None:
            labels = labels[:max_examples]
    ds = pipeline.build_dataset(
        source,
        transforms=transforms,
        batch_size=batch_size,
        train=train,
        seed=seed,
        shard_index=shard_index,
        shard_count=shard_count,
        num_epochs=num_epochs,
        drop_remainder=drop_remainder,
        num_workers=num_workers,
        labels=labels,
        class_balanced=class_balanced,
        time_major=name not in STATIC_DATASETS,
        read_options=read_options,
    )
    info = DatasetInfo(
        name=name,
        num_classes=num_classes,
        input_shape=input_shape,
        num_examples=len(source),
        is_event=name not in STATIC_DATASETS,
        class_names=class_names,
    )
    return iter(ds), info


__all__ = [
    "DATASET_NAMES",
    "DatasetInfo",
    "batches_per_epoch",
    "default_data_dir",
    "get_dataset",
    "validation_indices",
]
