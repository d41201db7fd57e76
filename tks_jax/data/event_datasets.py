"""Event-camera datasets: prepare once into a tfds ``array_record`` store, then load.

The roles live in their own modules; this one prepares and loads, and re-exports the public
names:

- ``tks_jax.data.event_specs``: the datasets (``EVENT_DATASETS``), frame options, where a
  prepared dataset lives;
- ``tks_jax.data.event_formats``: the strict file readers;
- ``tks_jax.data.event_split``: class folders and the per-class split;
- ``tks_jax.data.event_builders``: the tfds builders (storage layout);
- ``tks_jax.data.event_transforms``: the grain transforms (binning, resize, augmentation).

``nmnist_synth`` keeps MNIST's own split, by default the first 20k of its 60k training digits
(``NMNIST_SYNTH_NUM_TRAIN``; generating all 60k takes several minutes on a 2-core machine,
pass ``num_train=60000`` to ``prepare_event_dataset``) and all 10k test digits.

Preparing reads every recording strictly before anything is written: if any is broken
(empty, header only, wrong format, coordinates outside the sensor, timestamps going backwards,
truncated), :class:`BadRecordingsError` lists every bad file with its reason in one message
and nothing is written; with ``skip_bad_files=True`` they are left out instead (each stays in
no split; the others keep the split they would have had) and listed in the dataset's
metadata (``skipped_recordings``). tfds also writes into a temporary ``incomplete.*`` folder
and renames it into place only at the end, so an interrupted prepare leaves nothing that
loads. Prepare each store once before a multi-host run that shares ``data_dir`` (concurrent
first-use generation of ``nmnist_synth`` by several hosts into one folder would race).

Loading: ``get_event_source`` returns the tfds ``ArrayRecordDataSource`` (random access,
picklable for grain workers) and the split's labels; ``event_transforms`` turns one record
into ``{'image': float32 [T, H, W, 2], 'label': int32}``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from tks_jax.data import event_split, locking
from tks_jax.data.event_builders import (
    BUILDERS,
    DvsCifar10,
    Ncaltech101,
    NmnistSynth,
    find_bad_recordings,
    generator_parameters,
)
from tks_jax.data.event_formats import EventFileError
from tks_jax.data.event_specs import (
    DVS_CIFAR10_CLASSES,
    EVENT_DATASETS,
    MNIST_CLASSES,
    NCALTECH101_CLASSES,
    SPLITS,
    VERSION,
    EventDatasetSpec,
    dataset_dir,
    frame_options,
    is_prepared,
    prepare_command,
    resolve_data_dir,
    spec,
)
from tks_jax.data.event_split import TRAIN_PORTION, natural_key, split_per_class
from tks_jax.data.event_transforms import DvsAugment, EventsToFrames, event_transforms

# nmnist_synth generates the first 20k MNIST training digits (and the whole 10k test set) by
# default: the full 60k takes several minutes on a 2-core machine; pass num_train=60000 for all.
NMNIST_SYNTH_NUM_TRAIN = 20_000


class BadRecordingsError(ValueError):
    """Recordings that cannot be used; the message lists every one with its reason.

    Attributes:
      bad: ``[(path, reason), ...]``.
    """

    def __init__(self, name: str, bad: list[tuple[str, str]], total: int):
        self.bad = list(bad)
        lines = "\n".join(f"  {path}: {reason}" for path, reason in self.bad)
        super().__init__(
            f"{name}: {len(self.bad)} of {total} recordings cannot be used (nothing was "
            f"written):\n{lines}\nReplace them with intact originals (re-download or "
            "re-extract), or prepare again with --skip_bad_files (skip_bad_files=True) to leave "
            "them out; they are then listed in the prepared dataset's metadata."
        )


def prepare_event_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None,
    manual_dir: str | os.PathLike | None = None,
    skip_bad_files: bool = False,
    **kwargs: Any,
) -> str:
    """Parses (or, for ``nmnist_synth``, generates) a dataset once into ``data_dir``.

    Args:
      name: ``dvs_cifar10``, ``ncaltech101`` or ``nmnist_synth``.
      data_dir: tfds data directory (``None``: ``$TKS_DATA_DIR`` or ``~/tensorflow_datasets``).
      manual_dir: folder of the original recordings (DVS-CIFAR10, N-Caltech101); default
        ``<data_dir>/downloads/manual/<name>``.
      skip_bad_files: leave broken recordings out (listed in the metadata, see
        :func:`skipped_recordings`) instead of stopping.
      **kwargs: ``nmnist_synth`` only: ``num_train`` / ``num_test`` (first n of each MNIST
        split, default ``NMNIST_SYNTH_NUM_TRAIN`` = 20000 / all 10000; ``None``: all),
        ``seed`` (default 0), ``arrays`` (MNIST arrays as
        returned by ``tks_jax.data.mnist.load_mnist_arrays``; default: load them).

    Returns:
      The prepared dataset's folder. An already prepared dataset is left as it is.

    Raises:
      FileNotFoundError: missing manual files (names the dataset, path and command).
      BadRecordingsError: broken recordings (all listed; nothing is written).
      ValueError: unknown name, unexpected arguments, missing or unexpected class folders.
    """
    s = spec(name)
    data_dir = resolve_data_dir(data_dir)
    if is_prepared(name, data_dir):
        return dataset_dir(name, data_dir)
    # One preparer at a time; a process that waited finds the dataset ready.
    with locking.prepare_lock(data_dir, name):
        if is_prepared(name, data_dir):
            return dataset_dir(name, data_dir)
        if s.file_suffix is None:
            options = _synth_options(name, manual_dir, skip_bad_files, kwargs)
        else:
            if kwargs:
                raise ValueError(f"{name}: unexpected arguments {sorted(kwargs)}.")
            manual_dir = _manual_dir(name, data_dir, manual_dir)
            options = _recordings_options(s, manual_dir, skip_bad_files)
        builder = BUILDERS[name](data_dir=data_dir, options=options)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=os.fspath(manual_dir) if manual_dir is not None else None
            )
        )
    return dataset_dir(name, data_dir)


def _synth_options(name, manual_dir, skip_bad_files, kwargs) -> dict[str, Any]:
    unknown = set(kwargs) - {"num_train", "num_test", "seed", "arrays"}
    if manual_dir is not None:
        unknown.add("manual_dir")
    if skip_bad_files:
        unknown.add("skip_bad_files")
    if unknown:
        raise ValueError(f"{name} is generated offline; unexpected arguments {sorted(unknown)}.")
    arrays = kwargs.get("arrays")
    if arrays is None:
        from tks_jax.data import mnist

        arrays = mnist.load_mnist_arrays()
    return {
        "arrays": arrays,
        "seed": kwargs.get("seed", 0),
        "num_train": kwargs.get("num_train", NMNIST_SYNTH_NUM_TRAIN),
        "num_test": kwargs.get("num_test"),
    }


def _manual_dir(name: str, data_dir: str, manual_dir: str | os.PathLike | None) -> str:
    if manual_dir is None:
        manual_dir = os.path.join(data_dir, "downloads", "manual", name)
    manual_dir = os.path.abspath(os.path.expanduser(os.fspath(manual_dir)))
    if not os.path.isdir(manual_dir):
        raise FileNotFoundError(
            f"{name}: the original recordings are expected in {manual_dir}, which does not "
            f"exist. {BUILDERS[name].MANUAL_DOWNLOAD_INSTRUCTIONS} Then run "
            f"`python -m tks_jax.data.prepare {name} --data_dir {data_dir} --manual_dir DIR`."
        )
    return manual_dir


def _recordings_options(s: EventDatasetSpec, manual_dir: str, skip_bad: bool) -> dict[str, Any]:
    """Class folders checked, split made, every recording read: the builder's options."""
    root = event_split.class_root(s.name, manual_dir, s.file_suffix, s.subdirs)
    event_split.check_class_folders(s.name, root, s.file_suffix, s.class_names)
    splits = split_per_class(root, s.class_names, s.file_suffix)
    paths = [p for split in SPLITS for p, _ in splits[split]]
    bad = find_bad_recordings(s.name, paths)
    if bad and not skip_bad:
        raise BadRecordingsError(s.name, bad, len(paths))
    reasons = dict(bad)
    skipped = [
        {"file": os.path.relpath(p, root), "split": split, "reason": reasons[p]}
        for split in SPLITS
        for p, _ in splits[split]
        if p in reasons
    ]
    kept = {split: [(p, lab) for p, lab in splits[split] if p not in reasons] for split in SPLITS}
    for split in SPLITS:
        if not kept[split]:
            raise ValueError(
                f"{s.name}: the {split!r} split of {root} would be empty (per class "
                f"round({TRAIN_PORTION} * n) recordings train, the rest test); the folders "
                "hold too few (intact) recordings."
            )
    return {"root": root, "splits": kept, "skipped": skipped}


def skipped_recordings(name: str, data_dir: str | os.PathLike | None) -> list[dict[str, str]]:
    """Recordings left out of a prepared dataset by ``skip_bad_files`` (file, split, reason)."""
    if not is_prepared(name, data_dir) or spec(name).file_suffix is None:
        return []
    builder = BUILDERS[name](data_dir=resolve_data_dir(data_dir))
    return list(builder.info.metadata.get("skipped_files", []))


def get_event_source(
    name: str, split: str, data_dir: str | os.PathLike | None, *, auto_prepare: bool = True
) -> tuple[Any, np.ndarray]:
    """Random-access source of one split of a prepared event dataset, and its labels.

    Args:
      name: an ``EVENT_DATASETS`` key.
      split: ``'train'`` or ``'test'``.
      data_dir: tfds data directory (``None``: ``$TKS_DATA_DIR`` or ``~/tensorflow_datasets``).
      auto_prepare: generate ``nmnist_synth`` on first use (offline; ~2 minutes for the full
        set); the recorded datasets are never prepared implicitly.

    Returns:
      ``(source, labels)``: ``source[i]`` is ``{'t': uint32 [N], 'x', 'y', 'p': uint8 [N],
      't0': int64, 'label': int}``; ``labels`` int64 ``[len(source)]``.

    Raises:
      FileNotFoundError: the dataset is not prepared (names the path and prepare command).
      ValueError: unknown name or split.
    """
    s = spec(name)
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r} for {name}; use 'train' or 'test'.")
    data_dir = resolve_data_dir(data_dir)
    if not is_prepared(name, data_dir):
        if s.file_suffix is None and auto_prepare:
            prepare_event_dataset(name, data_dir=data_dir)
        else:
            raise FileNotFoundError(
                f"{name} is not prepared: expected {dataset_dir(name, data_dir)}. Prepare it "
                f"once with `{prepare_command(name, data_dir)}`."
            )
    builder = BUILDERS[name](data_dir=data_dir)
    source = builder.as_data_source(split=split)
    labels = np.asarray(builder.info.metadata["labels"][split], np.int64)
    if len(labels) != len(source):
        raise ValueError(
            f"{dataset_dir(name, data_dir)} is inconsistent ({len(labels)} labels, "
            f"{len(source)} records); delete it and prepare again."
        )
    return source, labels


__all__ = [
    "DVS_CIFAR10_CLASSES",
    "EVENT_DATASETS",
    "MNIST_CLASSES",
    "NCALTECH101_CLASSES",
    "NMNIST_SYNTH_NUM_TRAIN",
    "SPLITS",
    "TRAIN_PORTION",
    "VERSION",
    "BadRecordingsError",
    "DvsAugment",
    "DvsCifar10",
    "EventDatasetSpec",
    "EventFileError",
    "EventsToFrames",
    "Ncaltech101",
    "NmnistSynth",
    "dataset_dir",
    "event_transforms",
    "frame_options",
    "generator_parameters",
    "get_event_source",
    "is_prepared",
    "natural_key",
    "prepare_command",
    "prepare_event_dataset",
    "skipped_recordings",
    "split_per_class",
]
