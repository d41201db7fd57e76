"""Event datasets: per-class split, prepare -> array_record store -> source, transforms, errors."""

import os

import numpy as np
import pytest

from tks_jax.data import event_datasets as ed
from tks_jax.data import events as ev


def _write_aedat(path, rng, n):
    addr = rng.integers(0, 1 << 15, n).astype(np.uint32)
    ts = np.sort(rng.integers(0, 1_000_000, n)).astype(np.uint32) + 7_000_000
    body = np.stack([addr, ts], axis=1).astype(">u4").tobytes()
    path.write_bytes(b"#!AER-DAT2.0\r\n# test\r\n" + body)


def _write_atis(path, rng, n):
    x = rng.integers(0, 240, n)
    y = rng.integers(0, 180, n)
    p = rng.integers(0, 2, n)
    t = np.sort(rng.integers(0, 300_000, n))
    words = (x << 32) | (y << 24) | (p << 23) | t
    path.write_bytes(b"".join(int(w).to_bytes(5, "big") for w in words))


@pytest.fixture(scope="module")
def dvs_tree(tmp_path_factory):
    """Fake DVS-CIFAR10 download: CIFAR10DVS/<class>/cifar10_<class>_<i>.aedat, 12 per class."""
    root = tmp_path_factory.mktemp("dvs_manual")
    rng = np.random.default_rng(0)
    for name in ed.DVS_CIFAR10_CLASSES:
        folder = root / "CIFAR10DVS" / name
        folder.mkdir(parents=True)
        for i in range(12):
            _write_aedat(folder / f"cifar10_{name}_{i}.aedat", rng, int(rng.integers(0, 60)))
        (folder / "notes.txt").write_text("not a recording")
    return root


@pytest.fixture(scope="module")
def dvs_prepared(dvs_tree, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("dvs_data")
    ed.prepare_event_dataset("dvs_cifar10", data_dir=str(data_dir), manual_dir=str(dvs_tree))
    return str(data_dir)


def test_natural_key_orders_numbers_numerically():
    names = ["a_10.aedat", "a_2.aedat", "a_1.aedat", "a_100.aedat"]
    assert sorted(names, key=ed.natural_key) == [
        "a_1.aedat",
        "a_2.aedat",
        "a_10.aedat",
        "a_100.aedat",
    ]


def test_split_per_class_first_90_percent_by_name(tmp_path):
    counts = {"cat": 10, "dog": 3, "emu": 25}
    for name, n in counts.items():
        (tmp_path / name).mkdir()
        for i in range(n):
            (tmp_path / name / f"rec_{i}.bin").write_bytes(b"")
        (tmp_path / name / "readme.md").write_text("ignored")
    splits = ed.split_per_class(str(tmp_path), ["cat", "dog", "emu"], ".bin")
    for label, n in enumerate(counts.values()):
        n_train = (9 * n) // 10  # floor of 90 %
        train = [os.path.basename(p) for p, lab in splits["train"] if lab == label]
        test = [os.path.basename(p) for p, lab in splits["test"] if lab == label]
        assert train == [f"rec_{i}.bin" for i in range(n_train)]
        assert test == [f"rec_{i}.bin" for i in range(n_train, n)]
    assert len(splits["train"]) == 9 + 2 + 22 and len(splits["test"]) == 1 + 1 + 3


def test_split_per_class_missing_class_folder(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="dog"):
        ed.split_per_class(str(tmp_path), ["cat", "dog"], ".bin")


def test_dvs_prepare_and_source(dvs_tree, dvs_prepared):
    assert ed.is_prepared("dvs_cifar10", dvs_prepared)
    train, train_labels = ed.get_event_source("dvs_cifar10", "train", dvs_prepared)
    test, test_labels = ed.get_event_source("dvs_cifar10", "test", dvs_prepared)
    assert len(train) == 10 * 10 and len(test) == 10 * 2  # floor(0.9 * 12) = 10 per class
    np.testing.assert_array_equal(np.bincount(train_labels), [10] * 10)
    np.testing.assert_array_equal(np.bincount(test_labels), [2] * 10)
    assert train_labels.dtype == np.int64
    # Labels stored beside the records agree with the records.
    assert [int(train[i]["label"]) for i in range(len(train))] == train_labels.tolist()
    # Stored in a mixed order: the first 10 records are not all one class.
    assert len(set(train_labels[:10].tolist())) > 1
    # Each record holds the events of its file (timestamps relative to the first event).
    builder = ed.DvsCifar10(data_dir=dvs_prepared)
    files = builder.info.metadata["files"]["test"]
    assert sorted(files) == sorted(
        f"{c}/cifar10_{c}_{i}.aedat" for c in ed.DVS_CIFAR10_CLASSES for i in (10, 11)
    )
    root = os.path.join(dvs_tree, "CIFAR10DVS")
    for i in (0, 5):
        want = ev.read_aedat2(os.path.join(root, files[i]))
        got = test[i]
        np.testing.assert_array_equal(got["x"], want["x"])
        np.testing.assert_array_equal(got["y"], want["y"])
        np.testing.assert_array_equal(got["p"], want["p"])
        if want["t"].size:
            np.testing.assert_array_equal(got["t"], want["t"] - want["t"].min())
        assert got["t"].dtype == np.uint32
        assert int(got["label"]) == ed.DVS_CIFAR10_CLASSES.index(files[i].split("/")[0])


def test_dvs_transforms(dvs_tree, dvs_prepared):
    test, _ = ed.get_event_source("dvs_cifar10", "test", dvs_prepared)
    files = ed.DvsCifar10(data_dir=dvs_prepared).info.metadata["files"]["test"]
    record = next(test[i] for i in range(len(test)) if test[i]["t"].size > 5)
    index = next(i for i in range(len(test)) if test[i]["t"].size > 5)
    (to_frames,) = ed.event_transforms("dvs_cifar10", num_steps=4, train=False)
    out = to_frames.map(record)
    assert out["image"].shape == (4, 48, 48, 2) and out["image"].dtype == np.float32
    assert out["label"].dtype == np.int32 and out["label"] == record["label"]
    # Same as binning + resizing the original file's events directly.
    raw = ev.read_aedat2(os.path.join(dvs_tree, "CIFAR10DVS", files[index]))
    want = ev.resize_bilinear(ev.events_to_frames(raw, 4, (128, 128)), (48, 48))
    np.testing.assert_allclose(out["image"], want, rtol=1e-6)
    to_frames2, augment = ed.event_transforms("dvs_cifar10", num_steps=4, train=True)
    a = augment.random_map(to_frames2.map(record), np.random.default_rng(5))
    b = augment.random_map(to_frames2.map(record), np.random.default_rng(5))
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["image"].shape == (4, 48, 48, 2) and not np.array_equal(a["image"], out["image"])
    # Event datasets without augmentation, and bad T.
    assert len(ed.event_transforms("ncaltech101", num_steps=3, train=True)) == 1
    with pytest.raises(ValueError, match="num_steps"):
        ed.event_transforms("dvs_cifar10", num_steps=0, train=False)


def test_get_dataset_serves_time_major_event_batches(dvs_prepared):
    from tks_jax.data import get_dataset

    it, info = get_dataset(
        "dvs_cifar10",
        "test",
        batch_size=8,
        num_steps=3,
        train=False,
        data_dir=dvs_prepared,
        shard_index=0,
        shard_count=1,
    )
    batch = next(it)
    assert batch["image"].shape == (3, 8, 48, 48, 2) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (8,) and info.input_shape == (3, 48, 48, 2)
    assert info.num_examples == 20 and info.is_event and info.num_classes == 10


def test_not_prepared_error_names_dataset_path_and_command(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        ed.get_event_source("ncaltech101", "train", str(tmp_path))
    message = str(info.value)
    assert "ncaltech101" in message
    assert os.path.join(str(tmp_path), "ncaltech101", "1.0.0") in message
    assert "python -m tks_jax.data.prepare ncaltech101" in message
    with pytest.raises(FileNotFoundError, match="nmnist_synth"):
        ed.get_event_source("nmnist_synth", "test", str(tmp_path), auto_prepare=False)


def test_missing_manual_dir_error(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        ed.prepare_event_dataset(
            "dvs_cifar10", data_dir=str(tmp_path), manual_dir=str(tmp_path / "nowhere")
        )
    assert "dvs_cifar10" in str(info.value) and "nowhere" in str(info.value)
    assert "--manual_dir" in str(info.value)


def test_bad_names_and_splits(dvs_prepared):
    with pytest.raises(ValueError, match="Unknown event dataset"):
        ed.get_event_source("dvs_mnist", "train", dvs_prepared)
    with pytest.raises(ValueError, match="split"):
        ed.get_event_source("dvs_cifar10", "validation", dvs_prepared)


def test_corrupt_file_fails_prepare_without_leaving_a_dataset(tmp_path):
    rng = np.random.default_rng(1)
    manual = tmp_path / "manual"
    for name in ed.DVS_CIFAR10_CLASSES:
        (manual / name).mkdir(parents=True)
        for i in range(2):
            _write_aedat(manual / name / f"cifar10_{name}_{i}.aedat", rng, 10)
    bad = manual / "horse" / "cifar10_horse_0.aedat"
    bad.write_bytes(bad.read_bytes()[:-5])
    data_dir = tmp_path / "data"
    with pytest.raises(ev.EventFileError) as info:
        ed.prepare_event_dataset("dvs_cifar10", data_dir=str(data_dir), manual_dir=str(manual))
    assert str(bad) in str(info.value) and "byte offset" in str(info.value)
    assert not ed.is_prepared("dvs_cifar10", str(data_dir))
    with pytest.raises(FileNotFoundError):
        ed.get_event_source("dvs_cifar10", "train", str(data_dir))
    # After fixing the file, prepare succeeds in the same data_dir.
    _write_aedat(bad, rng, 10)
    ed.prepare_event_dataset("dvs_cifar10", data_dir=str(data_dir), manual_dir=str(manual))
    source, labels = ed.get_event_source("dvs_cifar10", "train", str(data_dir))
    assert len(source) == len(labels) == 10


def test_ncaltech101_prepare_class_folders(tmp_path):
    rng = np.random.default_rng(2)
    manual = tmp_path / "manual"
    names = ["BACKGROUND_Google", "Faces_easy"] + [f"class{i:03d}" for i in range(99)]
    for name in names:
        folder = manual / "Caltech101" / name
        folder.mkdir(parents=True)
        for i in range(1, 3):
            _write_atis(folder / f"image_{i:04d}.bin", rng, 8)
    (manual / "Caltech101_annotations").mkdir()
    spec = ed.EVENT_DATASETS["ncaltech101"]
    assert spec.class_balanced and spec.num_classes == 101 and spec.output_size == (48, 48)
    data_dir = str(tmp_path / "data")
    ed.prepare_event_dataset("ncaltech101", data_dir=data_dir, manual_dir=str(manual))
    train, train_labels = ed.get_event_source("ncaltech101", "train", data_dir)
    test, test_labels = ed.get_event_source("ncaltech101", "test", data_dir)
    # floor(0.9 * 2) = 1 train and 1 test file per class.
    np.testing.assert_array_equal(np.sort(train_labels), np.arange(101))
    np.testing.assert_array_equal(np.sort(test_labels), np.arange(101))
    assert train.dataset_info.features["label"].names == sorted(names)
    (to_frames,) = ed.event_transforms("ncaltech101", num_steps=2, train=True)
    out = to_frames.map(train[0])
    assert out["image"].shape == (2, 48, 48, 2)

    # A tree with a missing class is refused with a clear message.
    (manual / "Caltech101" / "class000" / "image_0001.bin").unlink()
    (manual / "Caltech101" / "class000" / "image_0002.bin").unlink()
    with pytest.raises(ValueError, match="found 100 class folders"):
        ed.prepare_event_dataset(
            "ncaltech101", data_dir=str(tmp_path / "d2"), manual_dir=str(manual)
        )


def test_prepare_command_line(dvs_tree, tmp_path, capsys):
    from tks_jax.data import prepare

    data_dir = str(tmp_path / "cli")
    missing = str(tmp_path / "absent")
    assert prepare.main(["dvs_cifar10", "--data_dir", data_dir, "--manual_dir", missing]) == 1
    assert "absent" in capsys.readouterr().err
    argv = ["dvs_cifar10", "--data_dir", data_dir, "--manual_dir", str(dvs_tree)]
    assert prepare.main(argv) == 0
    assert ed.is_prepared("dvs_cifar10", data_dir)
    # A second run finds the prepared store and leaves it alone.
    assert prepare.main(argv) == 0
