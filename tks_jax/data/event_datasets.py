"""Event-camera datasets as tfds ``array_record`` stores of raw events, and their transforms.

Datasets (``EVENT_DATASETS``):

- ``dvs_cifar10``: DVS-CIFAR10 (Li et al. 2017), 10 classes, DVS128 128 x 128, from the
  original AEDAT 2.0 recordings (``<manual_dir>/<class>/*.aedat``, class folders
  ``airplane`` ... ``truck``; one extra level such as ``CIFAR10DVS/`` is accepted).
- ``ncaltech101``: N-Caltech101 (Orchard et al. 2015), 101 classes (the 100 objects plus
  ``BACKGROUND_Google``, class index = position in the case-sensitive sorted folder names),
  ATIS sensor fixed to 180 x 240, from ``<manual_dir>/<class>/*.bin`` (or
  ``<manual_dir>/Caltech101/<class>/*.bin`` as extracted from the release zip). Trained with
  class-balanced sampling.
- ``nmnist_synth``: the offline MNIST through the simulated event camera of
  ``tks_jax.data.nmnist_synth`` (34 x 34; no manual files, no network).

Split (spec section 8): per class, files sorted by name with digit runs compared as numbers
(``cifar10_airplane_2`` before ``cifar10_airplane_10``); the first ``floor(0.9 n)`` are train,
the rest test. ``nmnist_synth`` keeps MNIST's own split, by default the first 20k of its 60k
training digits (``NMNIST_SYNTH_NUM_TRAIN``; generating all 60k takes several minutes on a
2-core machine, pass ``num_train=60000`` to ``prepare_event_dataset``) and all 10k test digits.

Storage: ``prepare_event_dataset`` parses every recording once and writes a tfds dataset
(``GeneratorBasedBuilder``, ``file_format='array_record'``; tfds serialises these features
without TensorFlow) under ``<data_dir>/<name>/1.0.0``. Each record holds ``t`` uint32
(microseconds since the recording's first event), ``x``, ``y``, ``p`` uint8 (raw bytes;
array_record compresses its chunks) and ``label``. Within a split, records are stored in a
fixed pseudo-random order (permutation with seed 0) so that the first ``n`` examples cover
all classes; the label of every record and its source file are kept in the dataset's
``metadata.json`` so that the labels of a split are known without decoding the events
(class-balanced sampling). tfds writes into a temporary ``incomplete.*`` folder and renames it
into place only at the end, so a failed prepare (for example a truncated file, which raises
``EventFileError`` naming the file and byte offset) leaves nothing that loads. Prepare each
store once before a multi-host run that shares ``data_dir`` (concurrent first-use generation
of ``nmnist_synth`` by several hosts into one folder would race).

Loading: ``get_event_source`` returns the tfds ``ArrayRecordDataSource`` (random access,
picklable for grain workers) and the split's labels; ``event_transforms`` turns one record
into ``{'image': float32 [T, H, W, 2], 'label': int32}``: binning into ``T`` equal-duration
bins at the sensor resolution, bilinear resize to ``output_size`` (48 x 48 for DVS-CIFAR10 and
N-Caltech101, no resize for nmnist_synth), and on DVS-CIFAR10 training the random crop / flip
/ rotation (``tks_jax.data.events``). The same stored events serve any ``T``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds

from tks_jax.data import events as events_lib
from tks_jax.data import locking, nmnist_synth

DATA_DIR_ENV = "TKS_DATA_DIR"
SPLITS = ("train", "test")
TRAIN_PERCENT = 90  # per-class train share of the 90/10 split (spec section 8)
STORAGE_ORDER_SEED = 0  # fixed permutation of the stored records within a split
VERSION = "1.0.0"
# nmnist_synth generates the first 20k MNIST training digits (and the whole 10k test set) by
# default: the full 60k takes several minutes on a 2-core machine; pass num_train=60000 for all.
NMNIST_SYNTH_NUM_TRAIN = 20_000
_PREPARE_COMMAND = "python -m tks_jax.data.prepare {name} --data_dir {data_dir}"

DVS_CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
MNIST_CLASSES = tuple(str(d) for d in range(10))


@dataclasses.dataclass(frozen=True)
class EventDatasetSpec:
    """Static facts about one event dataset.

    Attributes:
      name: dataset name (also its tfds name).
      num_classes: number of labels.
      sensor_size: ``(H, W)`` of the frames the events are binned into.
      output_size: ``(H, W)`` after the bilinear resize (equal to ``sensor_size``: no resize).
      class_balanced: training draws classes uniformly (N-Caltech101).
      augment: training uses the DVS augmentation (random crop, flip, rotation).
      file_suffix: suffix of the original recordings (``None``: generated, no manual files).
      class_names: fixed label names, or ``None`` when they come from the folder tree.
      subdirs: extra folder names under ``manual_dir`` that may hold the class folders.
    """

    name: str
    num_classes: int
    sensor_size: tuple[int, int]
    output_size: tuple[int, int]
    class_balanced: bool
    augment: bool
    file_suffix: str | None
    class_names: tuple[str, ...] | None
    subdirs: tuple[str, ...] = ()


EVENT_DATASETS: dict[str, EventDatasetSpec] = {
    "dvs_cifar10": EventDatasetSpec(
        name="dvs_cifar10",
        num_classes=10,
        sensor_size=events_lib.DVS128_SENSOR_SIZE,
        output_size=(48, 48),
        class_balanced=False,
        augment=True,
        file_suffix=".aedat",
        class_names=DVS_CIFAR10_CLASSES,
        subdirs=("CIFAR10DVS", "CIFAR10-DVS", "cifar10_dvs", "dvs_cifar10"),
    ),
    "ncaltech101": EventDatasetSpec(
        name="ncaltech101",
        num_classes=101,
        sensor_size=events_lib.NCALTECH101_SENSOR_SIZE,
        output_size=(48, 48),
        class_balanced=True,
        augment=False,
        file_suffix=".bin",
        class_names=None,
        subdirs=("Caltech101", "N-Caltech101", "ncaltech101"),
    ),
    "nmnist_synth": EventDatasetSpec(
        name="nmnist_synth",
        num_classes=10,
        sensor_size=nmnist_synth.SENSOR_SIZE,
        output_size=nmnist_synth.SENSOR_SIZE,
        class_balanced=False,
        augment=False,
        file_suffix=None,
        class_names=MNIST_CLASSES,
    ),
}

_READERS: dict[str, Callable[[str], events_lib.Events]] = {
    "dvs_cifar10": events_lib.read_aedat2,
    "ncaltech101": events_lib.read_ncaltech_bin,
}


def _spec(name: str) -> EventDatasetSpec:
    if name not in EVENT_DATASETS:
        raise ValueError(
            f"Unknown event dataset {name!r}; choose one of {', '.join(EVENT_DATASETS)}."
        )
    return EVENT_DATASETS[name]


def _resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or "~/tensorflow_datasets"
    return os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


def dataset_dir(name: str, data_dir: str | os.PathLike | None) -> str:
    """Folder of the prepared dataset: ``<data_dir>/<name>/1.0.0``."""
    return os.path.join(_resolve_data_dir(data_dir), _spec(name).name, VERSION)


def is_prepared(name: str, data_dir: str | os.PathLike | None) -> bool:
    """Whether ``prepare_event_dataset`` has completed for ``name`` in ``data_dir``."""
    return os.path.isfile(os.path.join(dataset_dir(name, data_dir), "dataset_info.json"))


def prepare_command(name: str, data_dir: str | os.PathLike | None) -> str:
    """The shell command that prepares ``name``."""
    command = _PREPARE_COMMAND.format(name=name, data_dir=_resolve_data_dir(data_dir))
    if _spec(name).file_suffix is not None:
        command += " --manual_dir DIR"
    return command


# ---------------------------------------------------------------------------------------------
# Folder tree -> per-class split.


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that compares digit runs as numbers: ``a_2`` < ``a_10``."""
    return tuple(int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name))


def _class_root(spec: EventDatasetSpec, manual_dir: str) -> str:
    """The folder under ``manual_dir`` whose subfolders are the classes."""
    candidates = [manual_dir] + [os.path.join(manual_dir, d) for d in spec.subdirs]
    for root in candidates:
        if not os.path.isdir(root):
            continue
        for entry in sorted(os.listdir(root)):
            folder = os.path.join(root, entry)
            if os.path.isdir(folder) and any(
                f.endswith(spec.file_suffix) for f in os.listdir(folder)
            ):
                return root
    raise FileNotFoundError(
        f"{spec.name}: no class folders with {spec.file_suffix} files under {manual_dir} "
        f"(also looked in {', '.join(spec.subdirs)}). Extract the original recordings there, "
        f"one folder per class, then run `python -m tks_jax.data.prepare {spec.name} "
        "--data_dir DIR --manual_dir DIR`."
    )


def split_per_class(
    root: str,
    class_names: Sequence[str],
    suffix: str,
    train_percent: int = TRAIN_PERCENT,
) -> dict[str, list[tuple[str, int]]]:
    """Per-class split of a folder tree ``root/<class>/<file><suffix>`` (spec section 8).

    Args:
      root: folder holding one subfolder per class.
      class_names: class folder names; a class's label is its position here.
      suffix: file suffix of the recordings (other files are ignored).
      train_percent: share of each class (in percent, floored) that goes to train.

    Returns:
      ``{'train': [(path, label), ...], 'test': [...]}``, class by class, files in natural
      name order; per class the first ``floor(n * train_percent / 100)`` files are train.

    Raises:
      FileNotFoundError: a class folder is missing or holds no recording.
    """
    splits: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for label, class_name in enumerate(class_names):
        folder = os.path.join(root, class_name)
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"Class folder {folder} is missing (expected one folder per class: "
                f"{', '.join(class_names)})."
            )
        files = sorted((f for f in os.listdir(folder) if f.endswith(suffix)), key=natural_key)
        if not files:
            raise FileNotFoundError(f"Class folder {folder} holds no {suffix} files.")
        n_train = len(files) * train_percent // 100
        paths = [os.path.join(folder, f) for f in files]
        splits["train"] += [(p, label) for p in paths[:n_train]]
        splits["test"] += [(p, label) for p in paths[n_train:]]
    return splits


def _folder_class_names(spec: EventDatasetSpec, root: str) -> tuple[str, ...]:
    if spec.class_names is not None:
        return spec.class_names
    names = tuple(
        sorted(
            d
            for d in os.listdir(root)
            if os.path.isdir(os.path.join(root, d))
            and any(f.endswith(spec.file_suffix) for f in os.listdir(os.path.join(root, d)))
        )
    )
    if len(names) != spec.num_classes:
        raise ValueError(
            f"{spec.name}: found {len(names)} class folders with {spec.file_suffix} files in "
            f"{root}, expected {spec.num_classes}. Point --manual_dir at the extracted "
            "recordings (one folder per class, nothing else)."
        )
    return names


# ---------------------------------------------------------------------------------------------
# tfds builders.


def _to_record(events: events_lib.Events, label: int, where: str) -> dict[str, Any]:
    """Compact storage form: t relative to the first event as uint32, x/y/p as uint8."""
    t = np.asarray(events["t"]).astype(np.int64)
    t = t - t.min() if t.size else t
    if t.size and t.max() > np.iinfo(np.uint32).max:
        raise ValueError(f"{where}: recording longer than 2**32 us; cannot store it.")
    x, y = np.asarray(events["x"]), np.asarray(events["y"])
    if x.size and (x.max() > 255 or y.max() > 255):
        raise ValueError(f"{where}: event coordinates above 255; cannot store them as uint8.")
    return {
        "t": t.astype(np.uint32),
        "x": x.astype(np.uint8),
        "y": y.astype(np.uint8),
        "p": (np.asarray(events["p"]) > 0).astype(np.uint8),
        "label": int(label),
    }


def _storage_order(n: int) -> np.ndarray:
    return np.random.default_rng(STORAGE_ORDER_SEED).permutation(n)


class _EventBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Common tfds definition: variable-length event tensors + label, array_record, no shuffle."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): "Raw events, stored order fixed by a seed-0 permutation."}

    def __init__(self, *, options: dict[str, Any] | None = None, **kwargs: Any):
        self._options = dict(options or {})
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _class_names(self) -> tuple[str, ...] | list[str]:
        return EVENT_DATASETS[self.name].class_names or []

    def _info(self) -> tfds.core.DatasetInfo:
        events_tensor = dict(shape=(None,), encoding=tfds.features.Encoding.BYTES)
        names = self._options.get("class_names") or self._class_names()
        label = (
            tfds.features.ClassLabel(names=list(names))
            if names
            else tfds.features.ClassLabel(num_classes=EVENT_DATASETS[self.name].num_classes)
        )
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "t": tfds.features.Tensor(dtype=np.uint32, **events_tensor),
                    "x": tfds.features.Tensor(dtype=np.uint8, **events_tensor),
                    "y": tfds.features.Tensor(dtype=np.uint8, **events_tensor),
                    "p": tfds.features.Tensor(dtype=np.uint8, **events_tensor),
                    "label": label,
                }
            ),
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,  # our own fixed permutation decides the stored order
        )


class _RecordingsBuilder(_EventBuilder, skip_registration=True):
    """Builder of a dataset of original recordings in a per-class folder tree."""

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[Any]]:
        del dl_manager
        spec = EVENT_DATASETS[self.name]
        root = self._options["root"]
        names = self._options["class_names"]
        split_files = split_per_class(root, names, spec.file_suffix)
        ordered: dict[str, list[tuple[str, int]]] = {}
        for split, items in split_files.items():
            ordered[split] = [items[i] for i in _storage_order(len(items))]
        self.info.metadata["class_names"] = list(names)
        self.info.metadata["labels"] = {s: [lab for _, lab in v] for s, v in ordered.items()}
        self.info.metadata["files"] = {
            s: [os.path.relpath(p, root) for p, _ in v] for s, v in ordered.items()
        }
        return {split: self._generate_examples(items) for split, items in ordered.items()}

    def _generate_examples(self, items: list[tuple[str, int]]) -> Iterator[Any]:
        reader = _READERS[self.name]
        for key, (path, label) in enumerate(items):
            yield key, _to_record(reader(path), label, path)


class DvsCifar10(_RecordingsBuilder):
    """DVS-CIFAR10 raw events (see the module docstring)."""

    name = "dvs_cifar10"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the ten class zips of CIFAR10-DVS (figshare) and extract them so that "
        "<manual_dir>/<class>/*.aedat exist."
    )


class Ncaltech101(_RecordingsBuilder):
    """N-Caltech101 raw events (see the module docstring)."""

    name = "ncaltech101"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download N-Caltech101 (Caltech101.zip) and extract it so that "
        "<manual_dir>/Caltech101/<class>/*.bin exist."
    )


class NmnistSynth(_EventBuilder):
    """Simulated N-MNIST from the offline MNIST (``tks_jax.data.nmnist_synth``)."""

    name = "nmnist_synth"

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[Any]]:
        del dl_manager
        arrays = self._options["arrays"]
        seed = int(self._options["seed"])
        limits = {"train": self._options["num_train"], "test": self._options["num_test"]}
        splits = {}
        labels = {}
        for split_id, split in enumerate(SPLITS):
            images, split_labels = arrays[split]
            n = len(images) if limits[split] is None else min(limits[split], len(images))
            labels[split] = [int(v) for v in split_labels[:n]]
            splits[split] = self._generate_examples(images[:n], labels[split], seed, split_id)
        self.info.metadata["class_names"] = list(MNIST_CLASSES)
        self.info.metadata["labels"] = labels
        self.info.metadata["generator"] = {
            **generator_parameters(seed),
            "num_examples": {split: len(v) for split, v in labels.items()},
        }
        return splits

    def _generate_examples(
        self, images: np.ndarray, labels: list[int], seed: int, split_id: int
    ) -> Iterator[Any]:
        records = nmnist_synth.simulate(images, seed=seed, split_id=split_id)
        for key, (record, label) in enumerate(zip(records, labels, strict=True)):
            yield key, {**record, "label": label}


_BUILDERS: dict[str, type[_EventBuilder]] = {
    "dvs_cifar10": DvsCifar10,
    "ncaltech101": Ncaltech101,
    "nmnist_synth": NmnistSynth,
}


def generator_parameters(seed: int) -> dict[str, Any]:
    """The simulated camera's parameters, recorded in ``nmnist_synth``'s metadata."""
    return {
        "seed": int(seed),
        "sensor_size": list(nmnist_synth.SENSOR_SIZE),
        "saccade_vertices": [list(v) for v in nmnist_synth.SACCADE_VERTICES],
        "saccade_duration_us": nmnist_synth.SACCADE_DURATION_US,
        "steps_per_saccade": nmnist_synth.STEPS_PER_SACCADE,
        "contrast_threshold": nmnist_synth.CONTRAST_THRESHOLD,
        "log_eps": nmnist_synth.LOG_EPS,
        "jitter_us": nmnist_synth.JITTER_US,
    }


# ---------------------------------------------------------------------------------------------
# Prepare and load.


def prepare_event_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None,
    manual_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> str:
    """Parses (or, for ``nmnist_synth``, generates) a dataset once into ``data_dir``.

    Args:
      name: ``dvs_cifar10``, ``ncaltech101`` or ``nmnist_synth``.
      data_dir: tfds data directory (``None``: ``$TKS_DATA_DIR`` or ``~/tensorflow_datasets``).
      manual_dir: folder of the original recordings (DVS-CIFAR10, N-Caltech101); default
        ``<data_dir>/downloads/manual/<name>``.
      **kwargs: ``nmnist_synth`` only: ``num_train`` / ``num_test`` (first n of each MNIST
        split, default ``NMNIST_SYNTH_NUM_TRAIN`` = 20000 / all 10000; ``None``: all),
        ``seed`` (default 0), ``arrays`` (MNIST arrays as
        returned by ``tks_jax.data.mnist.load_mnist_arrays``; default: load them).

    Returns:
      The prepared dataset's folder. An already prepared dataset is left as it is.

    Raises:
      FileNotFoundError: missing manual files (names the dataset, path and command).
      EventFileError: a truncated or corrupt recording (nothing is left behind).
      ValueError: unknown name, unexpected arguments or class folders.
    """
    spec = _spec(name)
    data_dir = _resolve_data_dir(data_dir)
    if is_prepared(name, data_dir):
        return dataset_dir(name, data_dir)
    # One preparer at a time; a process that waited finds the dataset ready.
    with locking.prepare_lock(data_dir, name):
        if is_prepared(name, data_dir):
            return dataset_dir(name, data_dir)
        return _prepare_unlocked(spec, name, data_dir, manual_dir, kwargs)


def _prepare_unlocked(spec, name, data_dir, manual_dir, kwargs) -> str:
    if spec.file_suffix is None:
        unknown = set(kwargs) - {"num_train", "num_test", "seed", "arrays"}
        if unknown or manual_dir is not None:
            raise ValueError(
                f"{name} is generated offline; unexpected arguments "
                f"{sorted(unknown | ({'manual_dir'} if manual_dir is not None else set()))}."
            )
        arrays = kwargs.get("arrays")
        if arrays is None:
            from tks_jax.data import mnist

            arrays = mnist.load_mnist_arrays()
        options = {
            "arrays": arrays,
            "seed": kwargs.get("seed", 0),
            "num_train": kwargs.get("num_train", NMNIST_SYNTH_NUM_TRAIN),
            "num_test": kwargs.get("num_test"),
        }
    else:
        if kwargs:
            raise ValueError(f"{name}: unexpected arguments {sorted(kwargs)}.")
        if manual_dir is None:
            manual_dir = os.path.join(data_dir, "downloads", "manual", name)
        manual_dir = os.path.abspath(os.path.expanduser(os.fspath(manual_dir)))
        if not os.path.isdir(manual_dir):
            raise FileNotFoundError(
                f"{name}: the original recordings are expected in {manual_dir}, which does not "
                f"exist. {_BUILDERS[name].MANUAL_DOWNLOAD_INSTRUCTIONS} Then run "
                f"`python -m tks_jax.data.prepare {name} --data_dir {data_dir} "
                "--manual_dir DIR`."
            )
        root = _class_root(spec, manual_dir)
        options = {"root": root, "class_names": _folder_class_names(spec, root)}
    builder = _BUILDERS[name](data_dir=data_dir, options=options)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=os.fspath(manual_dir) if manual_dir is not None else None
        )
    )
    return dataset_dir(name, data_dir)


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
      'label': int}``; ``labels`` int64 ``[len(source)]``.

    Raises:
      FileNotFoundError: the dataset is not prepared (names the path and prepare command).
      ValueError: unknown name or split.
    """
    spec = _spec(name)
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r} for {name}; use 'train' or 'test'.")
    data_dir = _resolve_data_dir(data_dir)
    if not is_prepared(name, data_dir):
        if spec.file_suffix is None and auto_prepare:
            prepare_event_dataset(name, data_dir=data_dir)
        else:
            raise FileNotFoundError(
                f"{name} is not prepared: expected {dataset_dir(name, data_dir)}. Prepare it "
                f"once with `{prepare_command(name, data_dir)}`."
            )
    builder = _BUILDERS[name](data_dir=data_dir)
    source = builder.as_data_source(split=split)
    labels = np.asarray(builder.info.metadata["labels"][split], np.int64)
    if len(labels) != len(source):
        raise ValueError(
            f"{dataset_dir(name, data_dir)} is inconsistent ({len(labels)} labels, "
            f"{len(source)} records); delete it and prepare again."
        )
    return source, labels


# ---------------------------------------------------------------------------------------------
# grain transforms.


class EventsToFrames(grain.transforms.Map):
    """Record -> ``{'image': float32 [T, h, w, 2], 'label': int32}`` (binning + resize)."""

    def __init__(self, num_steps: int, sensor_size: tuple[int, int], output_size: tuple[int, int]):
        self.num_steps = int(num_steps)
        self.sensor_size = tuple(sensor_size)
        self.output_size = tuple(output_size)

    def map(self, element: dict[str, Any]) -> dict[str, np.ndarray]:
        frames = events_lib.events_to_frames(element, self.num_steps, self.sensor_size)
        frames = events_lib.resize_bilinear(frames, self.output_size)
        return {"image": frames, "label": np.int32(element["label"])}


class DvsAugment(grain.transforms.RandomMap):
    """DVS-CIFAR10 training augmentation on ``image`` (crop pad 4, flip, rotation <= 15)."""

    def __init__(self, pad: int = 4, flip_prob: float = 0.5, max_rotation: float = 15.0):
        self.pad, self.flip_prob, self.max_rotation = pad, flip_prob, max_rotation

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        image = events_lib.augment_dvs(
            element["image"],
            rng,
            pad=self.pad,
            flip_prob=self.flip_prob,
            max_rotation=self.max_rotation,
        )
        return {**element, "image": image}


def event_transforms(
    name: str, *, num_steps: int, train: bool, seed: int = 0
) -> list[grain.transforms.Map | grain.transforms.RandomMap]:
    """grain transforms from a stored record to ``{'image': [T, H, W, 2], 'label'}``.

    Args:
      name: an ``EVENT_DATASETS`` key.
      num_steps: T, the number of time bins.
      train: add the training augmentation where the dataset has one (DVS-CIFAR10).
      seed: unused: the random transform draws from the per-record generator that grain
        derives from the pipeline's seed, so the result is deterministic for that seed.

    Returns:
      A list of grain transforms.
    """
    del seed
    spec = _spec(name)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int | np.integer):
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}.")
    if num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}.")
    transforms: list[grain.transforms.Map | grain.transforms.RandomMap] = [
        EventsToFrames(num_steps, spec.sensor_size, spec.output_size)
    ]
    if train and spec.augment:
        transforms.append(DvsAugment())
    return transforms
