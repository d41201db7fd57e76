"""grain transforms from a stored event record to ``{'image': [T, H, W, 2], 'label'}``.

Binning into ``T`` time bins on the dataset's frame (``binning`` / ``extent`` options, see
``tks_jax.data.events`` and ``tks_jax.data.event_specs``), bilinear resize to the dataset's
``output_size`` (48 x 48 for DVS-CIFAR10 and N-Caltech101, no resize for nmnist_synth), and on
DVS-CIFAR10 training the random crop / flip / rotation. The same stored events serve any ``T``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grain
import numpy as np

from tks_jax.data import event_specs
from tks_jax.data import events as events_lib


class EventsToFrames(grain.transforms.Map):
    """Record -> ``{'image': float32 [T, h, w, 2], 'label': int32}`` (binning + resize).

    Args:
      num_steps: T.
      sensor_size: ``(H, W)`` of the fixed frame, or ``None`` for each recording's extent.
      output_size: ``(h, w)`` after the resize.
      binning: ``'equal'`` or ``'authors'`` (uses the record's ``t0 + t``).
    """

    def __init__(
        self,
        num_steps: int,
        sensor_size: tuple[int, int] | None,
        output_size: tuple[int, int],
        binning: str = "equal",
    ):
        if binning not in events_lib.BINNINGS:
            raise ValueError(f"binning must be one of {events_lib.BINNINGS}, got {binning!r}.")
        self.num_steps = int(num_steps)
        self.sensor_size = None if sensor_size is None else tuple(sensor_size)
        self.output_size = tuple(output_size)
        self.binning = binning

    def map(self, element: dict[str, Any]) -> dict[str, np.ndarray]:
        events = element
        if self.binning == "authors":
            t = np.asarray(element["t"]).astype(np.int64) + int(element["t0"])
            events = {**element, "t": t}
        frames = events_lib.recording_to_frames(
            events, self.num_steps, self.sensor_size, binning=self.binning
        )
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
    name: str,
    *,
    num_steps: int,
    train: bool,
    seed: int = 0,
    frames: Mapping[str, str] | None = None,
) -> list[grain.transforms.Map | grain.transforms.RandomMap]:
    """grain transforms from a stored record to ``{'image': [T, H, W, 2], 'label'}``.

    Args:
      name: an ``EVENT_DATASETS`` key.
      num_steps: T, the number of time bins.
      train: add the training augmentation where the dataset has one (DVS-CIFAR10).
      seed: unused: the random transform draws from the per-record generator that grain
        derives from the pipeline's seed, so the result is deterministic for that seed.
      frames: frame options ``binning`` / ``extent`` overriding the dataset's defaults
        (``event_specs.frame_options``).

    Returns:
      A list of grain transforms.

    Raises:
      ValueError: unknown dataset, bad ``num_steps`` or frame options.
    """
    del seed
    spec = event_specs.spec(name)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int | np.integer):
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}.")
    if num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}.")
    options = event_specs.frame_options(name, frames)
    sensor_size = spec.sensor_size if options["extent"] == "sensor" else None
    transforms: list[grain.transforms.Map | grain.transforms.RandomMap] = [
        EventsToFrames(num_steps, sensor_size, spec.output_size, options["binning"])
    ]
    if train and spec.augment:
        transforms.append(DvsAugment())
    return transforms
