"""Per-image augmentations for static datasets (numpy + Pillow, no TensorFlow or torch).

Every function takes one image (uint8 ``[H, W, C]`` unless stated) and, if random, a
``np.random.Generator`` that grain hands to a ``RandomMap`` transform, so a pipeline is
deterministic for a seed. The pixel operations of RandAugment are Pillow's (``ImageOps``,
``ImageEnhance``, affine ``Image.transform``); this module holds the policy (which op, how
strong) and the crops, flips and erasing of docs/method.md §8.

References:
    RandAugment: Cubuk et al., "RandAugment: Practical automated data augmentation with a reduced
    search space", 2020 (magnitude ranges follow timm's ``rand-m9-mstd0.5-inc1``).
    Random erasing: Zhong et al., "Random Erasing Data Augmentation", AAAI 2020.
    Inception crop: Szegedy et al., "Going deeper with convolutions", 2015 (torchvision's
    ``RandomResizedCrop`` sampling).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

_RESAMPLE = Image.Resampling.BILINEAR


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected a uint8 image [H, W, C], got dtype {image.dtype} shape {image.shape}."
        )
    return image


def _to_pil(image: np.ndarray) -> Image.Image:
    image = _check_image(image)
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _from_pil(pil: Image.Image, channels: int) -> np.ndarray:
    out = np.asarray(pil, dtype=np.uint8)
    return out[..., None] if channels == 1 and out.ndim == 2 else out


# ----------------------------------------------------------------------------- crops and flips


def random_crop_with_padding(
    image: np.ndarray, rng: np.random.Generator, size: int, padding: int
) -> np.ndarray:
    """Zero-pads ``padding`` pixels on each side, then crops a random ``size x size`` window.

    Args:
        image: uint8 ``[H, W, C]``.
        rng: random generator.
        size: output height and width.
        padding: zero pixels added on every side first.

    Returns:
        uint8 ``[size, size, C]``.
    """
    image = _check_image(image)
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    h, w = padded.shape[:2]
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from a padded {h}x{w} image.")
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return padded[top : top + size, left : left + size]


def random_horizontal_flip(
    image: np.ndarray, rng: np.random.Generator, probability: float = 0.5
) -> np.ndarray:
    """Mirrors left-right with ``probability``. ``[H, W, C]`` -> ``[H, W, C]``."""
    return image[:, ::-1] if rng.random() < probability else image


def inception_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """Samples an Inception-style crop ``(top, left, crop_h, crop_w)``.

    Area fraction uniform in ``scale`` and aspect ratio log-uniform in ``ratio``; after
    ``attempts`` misses, the largest centred crop with the ratio clamped into ``ratio``
    (torchvision's ``RandomResizedCrop.get_params``).
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            return top, left, crop_h, crop_w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        crop_w, crop_h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        crop_h, crop_w = height, int(round(height * ratio[1]))
    else:
        crop_w, crop_h = width, height
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def random_resized_crop(
    image: np.ndarray,
    rng: np.random.Generator,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """Inception crop (see ``inception_crop_box``) resized bilinearly to ``size x size``.

    ``[H, W, C]`` uint8 -> ``[size, size, C]`` uint8.
    """
    image = _check_image(image)
    top, left, crop_h, crop_w = inception_crop_box(*image.shape[:2], rng, scale, ratio)
    pil = _to_pil(image).resize(
        (size, size), _RESAMPLE, box=(left, top, left + crop_w, top + crop_h)
    )
    return _from_pil(pil, image.shape[-1])


def resize_shorter_side(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize so that the shorter side is ``size`` (aspect kept)."""
    image = _check_image(image)
    h, w = image.shape[:2]
    scale = size / min(h, w)
    new_h, new_w = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
    return _from_pil(_to_pil(image).resize((new_w, new_h), _RESAMPLE), image.shape[-1])


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size x size`` window. ``[H, W, C]`` -> ``[size, size, C]``."""
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ValueError(f"cannot center-crop {size}x{size} from a {h}x{w} image.")
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


# ----------------------------------------------------------------------------- RandAugment

_MAX_LEVEL = 10.0


def _solarize_add(pil: Image.Image, add: int, threshold: int = 128) -> Image.Image:
    x = np.asarray(pil, dtype=np.int32)
    x = np.where(x < threshold, np.minimum(x + add, 255), x).astype(np.uint8)
    return Image.fromarray(x, mode=pil.mode)


def _affine(pil: Image.Image, matrix: tuple[float, ...], fill: int) -> Image.Image:
    fillcolor = fill if pil.mode == "L" else (fill,) * len(pil.getbands())
    return pil.transform(pil.size, Image.Transform.AFFINE, matrix, _RESAMPLE, fillcolor=fillcolor)


def _signed(value: float, rng: np.random.Generator) -> float:
    return -value if rng.random() < 0.5 else value


# Each op: (PIL image, level in [0, 1], rng, fill) -> PIL image. Severity increases with level.
_RandOp = Callable[[Image.Image, float, np.random.Generator, int], Image.Image]

RAND_AUGMENT_OPS: dict[str, _RandOp] = {
    "AutoContrast": lambda im, lv, rng, fill: ImageOps.autocontrast(im),
    "Equalize": lambda im, lv, rng, fill: ImageOps.equalize(im),
    "Invert": lambda im, lv, rng, fill: ImageOps.invert(im),
    "Rotate": lambda im, lv, rng, fill: im.rotate(
        _signed(30.0 * lv, rng),
        _RESAMPLE,
        fillcolor=fill if im.mode == "L" else (fill,) * len(im.getbands()),
    ),
    "Posterize": lambda im, lv, rng, fill: ImageOps.posterize(im, 8 - int(4 * lv)),
    "Solarize": lambda im, lv, rng, fill: ImageOps.solarize(im, 256 - int(256 * lv)),
    "SolarizeAdd": lambda im, lv, rng, fill: _solarize_add(im, int(110 * lv)),
    "Color": lambda im, lv, rng, fill: ImageEnhance.Color(im).enhance(1 + _signed(0.9 * lv, rng)),
    "Contrast": lambda im, lv, rng, fill: ImageEnhance.Contrast(im).enhance(
        1 + _signed(0.9 * lv, rng)
    ),
    "Brightness": lambda im, lv, rng, fill: ImageEnhance.Brightness(im).enhance(
        1 + _signed(0.9 * lv, rng)
    ),
    "Sharpness": lambda im, lv, rng, fill: ImageEnhance.Sharpness(im).enhance(
        1 + _signed(0.9 * lv, rng)
    ),
    "ShearX": lambda im, lv, rng, fill: _affine(im, (1, _signed(0.3 * lv, rng), 0, 0, 1, 0), fill),
    "ShearY": lambda im, lv, rng, fill: _affine(im, (1, 0, 0, _signed(0.3 * lv, rng), 1, 0), fill),
    "TranslateX": lambda im, lv, rng, fill: _affine(
        im, (1, 0, _signed(0.45 * lv, rng) * im.size[0], 0, 1, 0), fill
    ),
    "TranslateY": lambda im, lv, rng, fill: _affine(
        im, (1, 0, 0, 0, 1, _signed(0.45 * lv, rng) * im.size[1]), fill
    ),
}


@dataclasses.dataclass(frozen=True)
class RandAugment:
    """RandAugment: ``num_ops`` ops drawn uniformly (with replacement), each at one magnitude.

    Attributes:
        num_ops: ops applied per image (N).
        magnitude: strength M on a 0..10 scale (docs/method.md §8: m9).
        magnitude_std: the magnitude of each op is drawn from ``Normal(M, std)`` clipped to
            [0, 10] (timm's ``mstd``); 0 keeps it fixed.
        fill: grey level of pixels uncovered by geometric ops.
        ops: names from ``RAND_AUGMENT_OPS``.
    """

    num_ops: int = 2
    magnitude: float = 9.0
    magnitude_std: float = 0.5
    fill: int = 128
    ops: tuple[str, ...] = tuple(RAND_AUGMENT_OPS)

    def __post_init__(self):
        unknown = set(self.ops) - set(RAND_AUGMENT_OPS)
        if unknown:
            raise ValueError(
                f"unknown RandAugment ops {sorted(unknown)}; known: {sorted(RAND_AUGMENT_OPS)}."
            )
        if not 0 <= self.magnitude <= _MAX_LEVEL:
            raise ValueError(f"RandAugment magnitude must be in [0, 10], got {self.magnitude}.")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 ``[H, W, C]`` -> uint8 ``[H, W, C]``."""
        channels = _check_image(image).shape[-1]
        pil = _to_pil(image)
        for op_index in rng.integers(0, len(self.ops), size=self.num_ops):
            magnitude = self.magnitude
            if self.magnitude_std > 0:
                magnitude = float(np.clip(rng.normal(magnitude, self.magnitude_std), 0, 10))
            op = RAND_AUGMENT_OPS[self.ops[int(op_index)]]
            pil = op(pil, magnitude / _MAX_LEVEL, rng, self.fill)
        return _from_pil(pil, channels)


# ----------------------------------------------------------------------------- float ops


def normalize(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 ``[H, W, C]`` -> float32 ``(x / 255 - mean) / std`` per channel."""
    std = np.asarray(std, np.float32)
    scale = 1.0 / (255.0 * std)  # (x / 255 - mean) / std == x * scale - mean / std
    offset = np.asarray(mean, np.float32) / std
    out = np.multiply(image, scale, dtype=np.float32)
    out -= offset
    return out


def random_erasing(
    image: np.ndarray,
    rng: np.random.Generator,
    probability: float = 0.25,
    scale: tuple[float, float] = (0.02, 1 / 3),
    ratio: tuple[float, float] = (0.3, 3.3),
    attempts: int = 10,
) -> np.ndarray:
    """Random erasing on a normalised float image (Zhong et al. 2020).

    With ``probability``, a rectangle of area fraction in ``scale`` and log-uniform aspect in
    ``ratio`` is replaced by standard-normal noise per pixel and channel (timm's ``pixel``
    mode; the noise matches the normalised data's scale).

    Args:
        image: float32 ``[H, W, C]``, normalised.
        rng: random generator.
        probability: chance of erasing one rectangle.
        scale: range of the erased area as a fraction of the image.
        ratio: range of the rectangle's aspect ratio (height / width).
        attempts: tries to fit a rectangle before giving up (image left unchanged).

    Returns:
        float32 ``[H, W, C]`` (a copy when erased).
    """
    if rng.random() >= probability:
        return image
    h, w, c = image.shape
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = h * w * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        eh = int(round(math.sqrt(target_area * aspect)))
        ew = int(round(math.sqrt(target_area / aspect)))
        if 0 < eh < h and 0 < ew < w:
            top = int(rng.integers(0, h - eh + 1))
            left = int(rng.integers(0, w - ew + 1))
            out = np.array(image, np.float32, copy=True)
            out[top : top + eh, left : left + ew] = rng.standard_normal((eh, ew, c))
            return out
    return image
