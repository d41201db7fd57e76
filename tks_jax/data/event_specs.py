"""Event datasets: static facts (classes, sensors, frame options) and where they are stored.

Datasets (``EVENT_DATASETS``):

- ``dvs_cifar10``: DVS-CIFAR10 (Li et al. 2017), 10 classes, DVS128 128 x 128, from the
  original AEDAT 2.0 recordings (``<manual_dir>/<class>/*.aedat``, class folders
  ``airplane`` ... ``truck``; one extra level such as ``CIFAR10DVS/`` is accepted).
- ``ncaltech101``: N-Caltech101 (Orchard et al. 2015), 101 classes (the 100 objects plus
  ``BACKGROUND_Google``; class index = position in the case-sensitive sorted folder names,
  which is also the class index of the authors' tonic fork), from ``<manual_dir>/<class>/*.bin``
  (or ``<manual_dir>/Caltech101/<class>/*.bin`` as extracted from the release zip). Frames on
  each recording's own extent by default (the authors'), the fixed 180 x 240 frame as an
  option. Trained with class-balanced sampling.
- ``nmnist_synth``: the offline MNIST through the simulated event camera of
  ``tks_jax.data.nmnist_synth`` (34 x 34; no manual files, no network).

Frame options (``FRAME_OPTIONS``, config key ``data.event_frames``): ``binning`` (``'equal'``
or ``'authors'``) and ``extent`` (``'sensor'``: the dataset's fixed sensor frame;
``'recording'``: each recording's own extent), see ``tks_jax.data.events``; docs/data.md
lists every default that differs from the authors' pipeline.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from tks_jax.data import event_formats, events, nmnist_synth

DATA_DIR_ENV = "TKS_DATA_DIR"
SPLITS = ("train", "test")
# 1.1.0: strict readers, authors' split rule, first timestamp ``t0`` kept per record.
VERSION = "1.1.0"
_PREPARE_COMMAND = "python -m tks_jax.data.prepare {name} --data_dir {data_dir}"

DVS_CIFAR10_CLASSES = tuple("airplane automobile bird cat deer dog frog horse ship truck".split())
# The 101 folder names of the N-Caltech101 release, case-sensitive sorted (= class index).
NCALTECH101_CLASSES = tuple(
    """
    BACKGROUND_Google Faces_easy Leopards Motorbikes accordion airplanes anchor ant barrel bass
    beaver binocular bonsai brain brontosaurus buddha butterfly camera cannon car_side ceiling_fan
    cellphone chair chandelier cougar_body cougar_face crab crayfish crocodile crocodile_head cup
    dalmatian dollar_bill dolphin dragonfly electric_guitar elephant emu euphonium ewer ferry
    flamingo flamingo_head garfield gerenuk gramophone grand_piano hawksbill headphone hedgehog
    helicopter ibis inline_skate joshua_tree kangaroo ketch lamp laptop llama lobster lotus
    mandolin mayfly menorah metronome minaret nautilus octopus okapi pagoda panda pigeon pizza
    platypus pyramid revolver rhino rooster saxophone schooner scissors scorpion sea_horse snoopy
    soccer_ball stapler starfish stegosaurus stop_sign strawberry sunflower tick trilobite
    umbrella watch water_lilly wheelchair wild_cat windsor_chair wrench yin_yang
    """.split()
)
MNIST_CLASSES = tuple(str(d) for d in range(10))
EXTENTS = ("sensor", "recording")


@dataclasses.dataclass(frozen=True)
class EventDatasetSpec:
    """Static facts about one event dataset.

    Attributes:
      name: dataset name (also its tfds name).
      num_classes: number of labels.
      sensor_size: ``(H, W)`` of the fixed sensor frame (``extent='sensor'``).
      output_size: ``(H, W)`` after the bilinear resize (equal to ``sensor_size``: no resize).
      class_balanced: training draws classes uniformly (N-Caltech101).
      augment: training uses the DVS augmentation (random crop, flip, rotation).
      file_suffix: suffix of the original recordings (``None``: generated, no manual files).
      class_names: label names (class folder names for recorded datasets).
      subdirs: extra folder names under ``manual_dir`` that may hold the class folders.
      extent: default frame extent, ``'sensor'`` or ``'recording'``.
      binning: default time binning, ``'equal'`` or ``'authors'``.
    """

    name: str
    num_classes: int
    sensor_size: tuple[int, int]
    output_size: tuple[int, int]
    class_balanced: bool
    augment: bool
    file_suffix: str | None
    class_names: tuple[str, ...]
    subdirs: tuple[str, ...] = ()
    extent: str = "sensor"
    binning: str = "equal"


EVENT_DATASETS: dict[str, EventDatasetSpec] = {
    "dvs_cifar10": EventDatasetSpec(
        name="dvs_cifar10",
        num_classes=10,
        sensor_size=event_formats.DVS128_SENSOR_SIZE,
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
        sensor_size=event_formats.NCALTECH101_SENSOR_SIZE,
        output_size=(48, 48),
        class_balanced=True,
        augment=False,
        file_suffix=".bin",
        class_names=NCALTECH101_CLASSES,
        subdirs=("Caltech101", "N-Caltech101", "ncaltech101"),
        extent="recording",
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


def spec(name: str) -> EventDatasetSpec:
    """The ``EventDatasetSpec`` of ``name`` (ValueError naming the choices if unknown)."""
    if name not in EVENT_DATASETS:
        raise ValueError(
            f"Unknown event dataset {name!r}; choose one of {', '.join(EVENT_DATASETS)}."
        )
    return EVENT_DATASETS[name]


def frame_options(name: str, options: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The dataset's frame options (``binning``, ``extent``) with ``options`` applied.

    Args:
      name: an ``EVENT_DATASETS`` key.
      options: overrides, keys ``binning`` and/or ``extent`` (``None``: the defaults).

    Returns:
      ``{'binning': ..., 'extent': ...}``.

    Raises:
      ValueError: an unknown key or value (names the choices).
    """
    s = spec(name)
    out = {"binning": s.binning, "extent": s.extent}
    options = dict(options or {})
    unknown = sorted(set(options) - set(out))
    if unknown:
        raise ValueError(
            f"{name}: unknown event frame option(s) {unknown}; use 'binning' "
            f"{events.BINNINGS} and/or 'extent' {EXTENTS}."
        )
    out.update(options)
    if out["binning"] not in events.BINNINGS:
        raise ValueError(
            f"{name}: binning must be one of {events.BINNINGS}, got {out['binning']!r}."
        )
    if out["extent"] not in EXTENTS:
        raise ValueError(f"{name}: extent must be one of {EXTENTS}, got {out['extent']!r}.")
    return out


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
    """``data_dir``, else ``$TKS_DATA_DIR``, else ``~/tensorflow_datasets`` (absolute)."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or "~/tensorflow_datasets"
    return os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


def dataset_dir(name: str, data_dir: str | os.PathLike | None) -> str:
    """Folder of the prepared dataset: ``<data_dir>/<name>/<VERSION>``."""
    return os.path.join(resolve_data_dir(data_dir), spec(name).name, VERSION)


def is_prepared(name: str, data_dir: str | os.PathLike | None) -> bool:
    """Whether ``prepare_event_dataset`` has completed for ``name`` in ``data_dir``."""
    return os.path.isfile(os.path.join(dataset_dir(name, data_dir), "dataset_info.json"))


def prepare_command(name: str, data_dir: str | os.PathLike | None) -> str:
    """The shell command that prepares ``name``."""
    command = _PREPARE_COMMAND.format(name=name, data_dir=resolve_data_dir(data_dir))
    if spec(name).file_suffix is not None:
        command += " --manual_dir DIR"
    return command
