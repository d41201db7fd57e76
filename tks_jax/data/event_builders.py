"""tfds builders that store event datasets as ``array_record`` files of raw events.

Each record holds ``t`` uint32 (microseconds since ``t0``), ``x``, ``y``, ``p`` uint8 (raw
bytes; array_record compresses its chunks), ``t0`` int64 (a recording's first timestamp as
read, so that ``t0 + t`` are the timestamps of the file, needed by the authors' time binning; 0
for simulated recordings, whose timestamps start at 0) and ``label``. Within a split, records
are stored in a fixed pseudo-random order (permutation with seed 0) so that the first ``n``
examples cover all classes; the label of every record and its source file are kept in the
dataset's ``metadata.json`` so that the labels of a split are known without decoding the events
(class-balanced sampling), together with the recordings left out by ``skip_bad_files``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from tks_jax.data import event_formats, nmnist_synth
from tks_jax.data.event_specs import EVENT_DATASETS, MNIST_CLASSES, SPLITS
from tks_jax.data.event_specs import VERSION as STORE_VERSION

STORAGE_ORDER_SEED = 0  # fixed permutation of the stored records within a split

READERS: dict[str, Callable[[str], event_formats.Events]] = {
    "dvs_cifar10": event_formats.read_aedat2,
    "ncaltech101": event_formats.read_ncaltech_bin,
}


def find_bad_recordings(name: str, paths: Sequence[str]) -> list[tuple[str, str]]:
    """Reads every recording strictly; returns ``(path, reason)`` of each one that fails."""
    reader = READERS[name]
    bad = []
    for path in paths:
        try:
            reader(path)
        except event_formats.EventFileError as e:
            bad.append((path, e.reason))
        except OSError as e:
            bad.append((path, f"cannot be read ({e.strerror or e})"))
    return bad


def to_record(events: event_formats.Events, label: int, where: str) -> dict[str, Any]:
    """Compact storage form: ``t`` relative to the first event as uint32, x/y/p as uint8."""
    t = np.asarray(events["t"]).astype(np.int64)
    t0 = int(t[0]) if t.size else 0
    t = t - t0
    if t.size and (t.min() < 0 or t.max() > np.iinfo(np.uint32).max):
        raise ValueError(f"{where}: timestamps not in [t[0], t[0] + 2**32) us; cannot store them.")
    x, y = np.asarray(events["x"]), np.asarray(events["y"])
    if x.size and (x.max() > 255 or y.max() > 255):
        raise ValueError(f"{where}: event coordinates above 255; cannot store them as uint8.")
    return {
        "t": t.astype(np.uint32),
        "x": x.astype(np.uint8),
        "y": y.astype(np.uint8),
        "p": (np.asarray(events["p"]) > 0).astype(np.uint8),
        "t0": np.int64(t0),
        "label": int(label),
    }


def storage_order(n: int) -> np.ndarray:
    """The fixed permutation of a split's records (seed ``STORAGE_ORDER_SEED``)."""
    return np.random.default_rng(STORAGE_ORDER_SEED).permutation(n)


class EventBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Common tfds definition: variable-length event tensors + label, array_record, no shuffle."""

    VERSION = tfds.core.Version(STORE_VERSION)
    RELEASE_NOTES = {
        "1.0.0": "Raw events, stored order fixed by a seed-0 permutation.",
        STORE_VERSION: "Strict readers, per-class round(0.9 n) split, first timestamp t0 kept.",
    }

    def __init__(self, *, options: dict[str, Any] | None = None, **kwargs: Any):
        self._options = dict(options or {})
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        events_tensor = dict(shape=(None,), encoding=tfds.features.Encoding.BYTES)
        names = list(EVENT_DATASETS[self.name].class_names)
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "t": tfds.features.Tensor(dtype=np.uint32, **events_tensor),
                    "x": tfds.features.Tensor(dtype=np.uint8, **events_tensor),
                    "y": tfds.features.Tensor(dtype=np.uint8, **events_tensor),
                    "p": tfds.features.Tensor(dtype=np.uint8, **events_tensor),
                    "t0": tfds.features.Scalar(dtype=np.int64),
                    "label": tfds.features.ClassLabel(names=names),
                }
            ),
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,  # our own fixed permutation decides the stored order
        )


class RecordingsBuilder(EventBuilder, skip_registration=True):
    """Builder of a dataset of original recordings in a per-class folder tree.

    ``options``: ``root`` (the class folders' parent), ``splits`` (``{split: [(path, label)]}``,
    already checked, bad files removed) and ``skipped`` (``[{'file', 'split', 'reason'}]``).
    """

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[Any]]:
        del dl_manager
        root = self._options["root"]
        ordered: dict[str, list[tuple[str, int]]] = {}
        for split, items in self._options["splits"].items():
            ordered[split] = [items[i] for i in storage_order(len(items))]
        self.info.metadata["class_names"] = list(EVENT_DATASETS[self.name].class_names)
        self.info.metadata["labels"] = {s: [lab for _, lab in v] for s, v in ordered.items()}
        self.info.metadata["files"] = {
            s: [os.path.relpath(p, root) for p, _ in v] for s, v in ordered.items()
        }
        self.info.metadata["skipped_files"] = list(self._options.get("skipped", []))
        return {split: self._generate_examples(items) for split, items in ordered.items()}

    def _generate_examples(self, items: list[tuple[str, int]]) -> Iterator[Any]:
        reader = READERS[self.name]
        for key, (path, label) in enumerate(items):
            yield key, to_record(reader(path), label, path)


class DvsCifar10(RecordingsBuilder):
    """DVS-CIFAR10 raw events (see ``tks_jax.data.event_specs``)."""

    name = "dvs_cifar10"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the ten class zips of CIFAR10-DVS (figshare) and extract them so that "
        "<manual_dir>/<class>/*.aedat exist."
    )


class Ncaltech101(RecordingsBuilder):
    """N-Caltech101 raw events (see ``tks_jax.data.event_specs``)."""

    name = "ncaltech101"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download N-Caltech101 (Caltech101.zip) and extract it so that "
        "<manual_dir>/Caltech101/<class>/*.bin exist."
    )


class NmnistSynth(EventBuilder):
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
            # Simulated timestamps are absolute already (the recording starts at 0).
            yield key, {**record, "t0": np.int64(0), "label": label}


BUILDERS: dict[str, type[EventBuilder]] = {
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
