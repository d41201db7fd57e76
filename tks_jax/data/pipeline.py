"""grain input pipelines: sharding over hosts, shuffling, class balance, batching, padding.

One function, ``build_dataset``, turns any random-access source (a tfds array_record data source,
the event stores, or a plain list in tests) into a grain ``IterDataset`` of numpy batches:

    source -> [train] shard -> shuffle (or class-balanced draws) -> repeat
           -> [eval]  shard -> pad to a whole number of batches (same count on every host)
           -> per-example transforms (grain Map / RandomMap, seeded per host)
           -> add 'mask' -> batch -> pad a partial batch, dtypes, time-major events
           -> optional worker processes (mp_prefetch)

Its iterator (``iter(ds)``) is a ``grain.DatasetIterator`` with ``get_state()`` / ``set_state()``
(a JSON-serialisable dict), so the training loop can checkpoint and resume it mid-epoch.

Batches are dicts of numpy arrays: ``image`` float32 ``[B, H, W, C]`` (or ``[T, B, H, W, C]``
with ``time_major=True``), ``label`` int32 ``[B]`` and ``mask`` bool ``[B]`` (False for padding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

# Reader threads and batches read ahead per host (grain's default, 500, counts elements; ours
# are whole batches, and 500 ImageNet batches would not fit in memory).
READ_THREADS = 4
PREFETCH_BATCHES = 8


def default_read_options() -> grain.ReadOptions:
    """``ReadOptions`` used when none are given: ``READ_THREADS`` threads, ``PREFETCH_BATCHES``."""
    return grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=PREFETCH_BATCHES)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_shard(shard_index: int, shard_count: int) -> tuple[int, int]:
    """Validates a host's shard (``0 <= shard_index < shard_count``)."""
    shard_count = _check_int("shard_count", shard_count, 1)
    shard_index = _check_int("shard_index", shard_index, 0)
    if shard_index >= shard_count:
        raise ValueError(
            f"`shard_index` must be in [0, shard_count={shard_count}), got {shard_index}."
        )
    return shard_index, shard_count


def mark_flags_parsed() -> None:
    """grain's worker processes read absl flags; mark them parsed if no one did."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def class_balanced_probabilities(labels: np.ndarray) -> np.ndarray:
    """Per-example sampling probabilities that make every present class equally likely.

    Args:
        labels: int ``[N]``.

    Returns:
        float64 ``[N]``, ``p_i = 1 / (num_present_classes * count(labels_i))``; sums to 1.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"`labels` must be a non-empty 1-D array, got shape {labels.shape}.")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    p = 1.0 / (len(counts) * counts[inverse].astype(np.float64))
    return p / p.sum()


class ClassBalancedMapDataset(grain.MapDataset):
    """Draws examples with replacement so that every class is equally likely.

    Like PyTorch's ``WeightedRandomSampler(1 / class_count, num_samples=N)``: one global epoch
    is ``N`` draws from ``rng(seed, epoch)``; host ``shard_index`` of ``shard_count`` takes the
    draws ``shard_index::shard_count`` (the first ``N // shard_count`` of them), so hosts see
    disjoint positions of one global stream. Index ``i`` >= ``len(self)`` is the next epoch, so
    ``.repeat()`` on top gives a fresh draw per epoch. Deterministic in ``seed``.
    """

    def __init__(
        self,
        parent: grain.MapDataset,
        labels: np.ndarray,
        *,
        seed: int,
        shard_index: int = 0,
        shard_count: int = 1,
    ):
        super().__init__(parent)
        labels = np.asarray(labels)
        if len(labels) != len(parent):
            raise ValueError(
                f"class-balanced sampling needs one label per example: got {len(labels)} labels "
                f"for {len(parent)} examples."
            )
        self._probabilities = class_balanced_probabilities(labels)
        self._seed = int(seed)
        self._shard_index, self._shard_count = check_shard(shard_index, shard_count)
        self._length = len(labels) // self._shard_count
        if self._length == 0:
            raise ValueError(
                f"{len(labels)} examples cannot be split over {shard_count} hosts for training."
            )
        self._cache: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self._length

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """The parent indices this host reads in ``epoch``, int64 ``[len(self)]``."""
        cache = self._cache
        if cache is not None and cache[0] == epoch:
            return cache[1]
        rng = np.random.default_rng([self._seed, epoch])
        n = len(self._probabilities)
        draws = rng.choice(n, size=n, replace=True, p=self._probabilities)
        indices = draws[self._shard_index :: self._shard_count][: self._length]
        self._cache = (epoch, indices)  # one tuple assignment: safe across reader threads
        return indices

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        epoch, offset = divmod(int(index), self._length)
        return self._parent[int(self.epoch_indices(epoch)[offset])]

    def __str__(self) -> str:
        return f"ClassBalancedMapDataset(seed={self._seed}, shard={self._shard_index})"


class _PadMapDataset(grain.MapDataset):
    """Extends a dataset to ``length`` with copies of element 0 marked ``mask=False``."""

    def __init__(self, parent: grain.MapDataset, length: int):
        super().__init__(parent)
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        index = int(index) % self._length
        if index < len(self._parent):
            return {**self._parent[index], "mask": True}
        return {**self._parent[0], "mask": False}

    def __str__(self) -> str:
        return f"_PadMapDataset(length={self._length})"


def _add_mask(example: dict[str, Any]) -> dict[str, Any]:
    return {**example, "mask": True}


class FinalizeBatch(grain.transforms.Map):
    """Pads a partial batch to ``batch_size`` (``mask`` False), fixes dtypes, time-major."""

    def __init__(self, batch_size: int, time_major: bool = False):
        self.batch_size = batch_size
        self.time_major = time_major

    def map(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        out = {
            "image": np.asarray(batch["image"], np.float32),
            "label": np.asarray(batch["label"], np.int32),
            "mask": np.asarray(batch["mask"], bool),
        }
        missing = self.batch_size - out["label"].shape[0]
        if missing > 0:
            out = {
                k: np.concatenate([v, np.zeros((missing, *v.shape[1:]), v.dtype)])
                for k, v in out.items()
            }
        if self.time_major:  # [B, T, H, W, C] -> [T, B, H, W, C]
            out["image"] = np.ascontiguousarray(np.swapaxes(out["image"], 0, 1))
        return out


def batches_per_epoch(
    num_examples: int,
    batch_size: int,
    *,
    train: bool,
    shard_count: int = 1,
    drop_remainder: bool | None = None,
) -> int:
    """Batches one host reads per epoch: training epoch length, or the eval pass.

    Matches ``build_dataset``: training shards have ``num_examples // shard_count`` examples
    (also per class-balanced epoch); evaluation pads every host to
    ``ceil(ceil(num_examples / shard_count) / batch_size)`` batches (with ``drop_remainder``,
    host 0's count of full batches).

    Args:
        num_examples: examples in the split (``DatasetInfo.num_examples``).
        batch_size: per-host batch size.
        train: training or evaluation pipeline.
        shard_count: number of hosts.
        drop_remainder: as in ``build_dataset`` (default True for training, False for eval).

    Returns:
        The number of batches.
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    shard_count = _check_int("shard_count", shard_count, 1)
    if drop_remainder is None:
        drop_remainder = train
    per_host = num_examples // shard_count if train else math.ceil(num_examples / shard_count)
    return per_host // batch_size if drop_remainder else math.ceil(per_host / batch_size)


def build_dataset(
    source: Sequence[Any],
    *,
    transforms: Sequence[grain.transforms.Map | grain.transforms.RandomMap],
    batch_size: int,
    train: bool,
    seed: int = 0,
    shard_index: int = 0,
    shard_count: int = 1,
    num_epochs: int | None = None,
    drop_remainder: bool | None = None,
    num_workers: int = 0,
    labels: np.ndarray | None = None,
    class_balanced: bool = False,
    time_major: bool = False,
    read_options: grain.ReadOptions | None = None,
) -> grain.IterDataset:
    """Builds the grain pipeline of one split on one host.

    Args:
        source: random access (``__len__``, ``__getitem__``) over raw records.
        transforms: per-example grain ``Map`` / ``RandomMap`` transforms turning a record into
            ``{'image': ..., 'label': ...}``. ``RandomMap`` gets an rng from grain seeded by
            ``(seed, shard_index)`` and the element's position.
        batch_size: examples per batch on this host.
        train: training (shard with equal sizes, shuffle or class-balanced draws, repeat) or
            evaluation (shard, no shuffle, pad so every host yields the same number of full
            batches; padding has ``mask`` False).
        seed: seeds the shuffle, the class-balanced draws and the random transforms.
        shard_index: this host's shard, in ``[0, shard_count)``.
        shard_count: number of hosts reading disjoint shards.
        num_epochs: ``None`` repeats training forever (evaluation: one pass).
        drop_remainder: drop a last partial batch; default True for training, False for
            evaluation (then every example counts and the batch is padded).
        num_workers: grain worker processes (0: read in threads of this process).
        labels: int ``[len(source)]``, needed for ``class_balanced``.
        class_balanced: draw training examples with equal class probability.
        time_major: the examples' images are ``[T, H, W, C]``; emit ``[T, B, H, W, C]``.
        read_options: grain ``ReadOptions`` (reader threads, prefetch buffer in batches);
            default ``default_read_options()``.

    Returns:
        A ``grain.IterDataset``; ``iter()`` of it yields the batches.
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    shard_index, shard_count = check_shard(shard_index, shard_count)
    num_workers = _check_int("num_workers", num_workers, 0)
    if num_epochs is not None:
        num_epochs = _check_int("num_epochs", num_epochs, 1)
    num_examples = len(source)
    if num_examples == 0:
        raise ValueError("The data source is empty; check the split and `max_examples`.")
    if drop_remainder is None:
        drop_remainder = train
    # Per-host seeds: hosts shuffle and augment with different, reproducible streams.
    shuffle_seed, transform_seed = (
        int(s) for s in np.random.SeedSequence([seed, shard_index]).generate_state(2)
    )

    ds = grain.MapDataset.source(source)
    if train:
        if class_balanced:
            if labels is None:
                raise ValueError("class-balanced sampling needs `labels` of the split.")
            ds = ClassBalancedMapDataset(
                ds, labels, seed=seed, shard_index=shard_index, shard_count=shard_count
            )
        else:
            per_host = num_examples // shard_count  # equal on every host: no host waits
            if per_host == 0:
                raise ValueError(
                    f"{num_examples} examples cannot be split over {shard_count} hosts."
                )
            ds = ds[shard_index::shard_count][:per_host].shuffle(seed=shuffle_seed)
        ds = ds.repeat(num_epochs)
        ds = ds.seed(transform_seed).apply(list(transforms)).map(_add_mask)
    else:
        ds = ds[shard_index::shard_count]
        ds = ds.seed(transform_seed).apply(list(transforms))
        if drop_remainder:
            ds = ds.map(_add_mask)
        else:
            # Every host yields ceil(ceil(N / hosts) / B) full batches (multi-host eval
            # steps must match); padding examples carry mask False.
            per_host = math.ceil(num_examples / shard_count)
            ds = _PadMapDataset(ds, math.ceil(per_host / batch_size) * batch_size)
        if num_epochs is not None and num_epochs > 1:
            ds = ds.repeat(num_epochs)

    # Batch before iterating: one read task per batch (less per-element overhead).
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(FinalizeBatch(batch_size, time_major=time_major))
    it = ds.to_iter_dataset(read_options or default_read_options())
    if num_workers > 0:
        mark_flags_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return it
