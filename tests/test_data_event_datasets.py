"""Event datasets: prepare -> array_record store -> source, transforms, bad files."""

import os

import numpy as np
import pytest

from tks_jax.data import event_datasets as ed
from tks_jax.data import event_formats as ef
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
            _write_aedat(folder / f"cifar10_{name}_{i}.aedat", rng, int(rng.integers(1, 60)))
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


def test_split_per_class_python_round_of_90_percent_by_name(tmp_path):
    # Python's round on 0.9 * n (ties to even): 5 -> 4.5 -> 4, 15 -> 13.5 -> 14, 12 -> 11.
    counts = {"cat": 10, "dog": 3, "emu": 25, "fox": 5, "gnu": 15, "hen": 12}
    want_train = {"cat": 9, "dog": 3, "emu": 22, "fox": 4, "gnu": 14, "hen": 11}
    for name, n in counts.items():
        (tmp_path / name).mkdir()
        for i in range(n):
            (tmp_path / name / f"rec_{i}.bin").write_bytes(b"")
        (tmp_path / name / "readme.md").write_text("ignored")
    splits = ed.split_per_class(str(tmp_path), list(counts), ".bin")
    for label, (name, n) in enumerate(counts.items()):
        n_train = round(0.9 * n)
        assert n_train == want_train[name]
        train = [os.path.basename(p) for p, lab in splits["train"] if lab == label]
        test = [os.path.basename(p) for p, lab in splits["test"] if lab == label]
        # Natural name order: rec_2 before rec_10.
        assert train == [f"rec_{i}.bin" for i in range(n_train)]
        assert test == [f"rec_{i}.bin" for i in range(n_train, n)]
    assert len(splits["train"]) == sum(want_train.values())


def test_split_rule_on_the_real_class_counts():
    # The per-class counts of the N-Caltech101 release (the authors' fork lists them): the
    # round rule gives 7839 training recordings where the floor gave 7795.
    counts = [467, 435, 200, 798, 55, 800, 42, 42, 47, 54, 46, 33, 128, 98, 43, 85, 91, 50, 43]
    counts += [123, 47, 59, 62, 107, 47, 69, 73, 70, 50, 51, 57, 67, 52, 65, 68, 75, 64, 53]
    counts += [64, 85, 67, 67, 45, 34, 34, 51, 99, 100, 42, 54, 88, 80, 31, 64, 86, 114, 61]
    counts += [81, 78, 41, 66, 43, 40, 87, 32, 76, 55, 35, 39, 47, 38, 45, 53, 34, 57, 82, 59]
    counts += [49, 40, 63, 39, 84, 57, 35, 64, 45, 86, 59, 64, 35, 85, 49, 86, 75, 239, 37]
    counts += [59, 34, 56, 39, 60]
    assert len(counts) == 101 and sum(counts) == 8709
    train = [ed.event_split.num_train(n) for n in counts]
    assert sum(train) == 7839 and sum(9 * n // 10 for n in counts) == 7795
    assert sum(t != 9 * n // 10 for t, n in zip(train, counts, strict=True)) == 44


def test_split_per_class_missing_class_folder(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="dog"):
        ed.split_per_class(str(tmp_path), ["cat", "dog"], ".bin")


def test_dvs_prepare_and_source(dvs_tree, dvs_prepared):
    assert ed.is_prepared("dvs_cifar10", dvs_prepared)
    train, train_labels = ed.get_event_source("dvs_cifar10", "train", dvs_prepared)
    test, test_labels = ed.get_event_source("dvs_cifar10", "test", dvs_prepared)
    assert len(train) == 10 * 11 and len(test) == 10 * 1  # round(0.9 * 12) = 11 per class
    np.testing.assert_array_equal(np.bincount(train_labels), [11] * 10)
    np.testing.assert_array_equal(np.bincount(test_labels), [1] * 10)
    assert train_labels.dtype == np.int64
    # Labels stored beside the records agree with the records.
    assert [int(train[i]["label"]) for i in range(len(train))] == train_labels.tolist()
    # Stored in a mixed order: the first 10 records are not all one class.
    assert len(set(train_labels[:10].tolist())) > 1
    # Each record holds the events of its file (timestamps relative to the first event).
    builder = ed.DvsCifar10(data_dir=dvs_prepared)
    files = builder.info.metadata["files"]["test"]
    assert sorted(files) == sorted(f"{c}/cifar10_{c}_11.aedat" for c in ed.DVS_CIFAR10_CLASSES)
    root = os.path.join(dvs_tree, "CIFAR10DVS")
    for i in (0, 5):
        want = ef.read_aedat2(os.path.join(root, files[i]))
        got = test[i]
        np.testing.assert_array_equal(got["x"], want["x"])
        np.testing.assert_array_equal(got["y"], want["y"])
        np.testing.assert_array_equal(got["p"], want["p"])
        # Stored relative to the first timestamp, which is kept: t0 + t is the file's t.
        np.testing.assert_array_equal(got["t"], want["t"] - want["t"][0])
        assert int(got["t0"]) == want["t"][0] >= 7_000_000
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
    raw = ef.read_aedat2(os.path.join(dvs_tree, "CIFAR10DVS", files[index]))
    want = ev.resize_bilinear(ev.events_to_frames(raw, 4, (128, 128)), (48, 48))
    np.testing.assert_allclose(out["image"], want, rtol=1e-6)
    # The authors' bins need the file's own timestamps (here starting after 7 s): t0 + t.
    (authors,) = ed.event_transforms(
        "dvs_cifar10", num_steps=4, train=False, frames={"binning": "authors"}
    )
    got = authors.map(record)["image"]
    want = ev.resize_bilinear(ev.events_to_frames(raw, 4, (128, 128), binning="authors"), (48, 48))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not np.allclose(got, out["image"])
    with pytest.raises(ValueError, match="extent"):
        ed.event_transforms("dvs_cifar10", num_steps=4, train=False, frames={"extent": "x"})
    with pytest.raises(ValueError, match="unknown event frame option"):
        ed.event_transforms("dvs_cifar10", num_steps=4, train=False, frames={"bins": "equal"})
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
    assert info.num_examples == 10 and info.is_event and info.num_classes == 10


def test_get_dataset_passes_the_frame_options(dvs_prepared):
    from tks_jax.data import get_dataset

    kwargs = dict(batch_size=4, num_steps=3, train=False, data_dir=dvs_prepared)
    kwargs.update(shard_index=0, shard_count=1)
    default = next(get_dataset("dvs_cifar10", "test", **kwargs)[0])["image"]
    it, _ = get_dataset("dvs_cifar10", "test", event_frames={"binning": "authors"}, **kwargs)
    authors = next(it)["image"]
    test, _ = ed.get_event_source("dvs_cifar10", "test", dvs_prepared)
    (to_frames,) = ed.event_transforms(
        "dvs_cifar10", num_steps=3, train=False, frames={"binning": "authors"}
    )
    want = np.stack([to_frames.map(test[i])["image"] for i in range(4)], axis=1)
    np.testing.assert_allclose(authors, want, rtol=1e-6)
    assert not np.allclose(authors, default)


def test_not_prepared_error_names_dataset_path_and_command(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        ed.get_event_source("ncaltech101", "train", str(tmp_path))
    message = str(info.value)
    assert "ncaltech101" in message
    assert os.path.join(str(tmp_path), "ncaltech101", "1.1.0") in message
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


def test_aedat4_only_tree_names_the_format(tmp_path):
    manual = tmp_path / "manual"
    for name in ed.DVS_CIFAR10_CLASSES:
        (manual / name).mkdir(parents=True)
        (manual / name / f"{name}_0.aedat4").write_bytes(b"#!AER-DAT4.0\r\n")
    with pytest.raises(FileNotFoundError) as info:
        ed.prepare_event_dataset(
            "dvs_cifar10", data_dir=str(tmp_path / "data"), manual_dir=str(manual)
        )
    message = str(info.value)
    assert "found instead: 10 .aedat4 files" in message and "AEDAT 2.0" in message


def test_bad_names_and_splits(dvs_prepared):
    with pytest.raises(ValueError, match="Unknown event dataset"):
        ed.get_event_source("dvs_mnist", "train", dvs_prepared)
    with pytest.raises(ValueError, match="split"):
        ed.get_event_source("dvs_cifar10", "validation", dvs_prepared)


def _small_dvs_tree(manual, rng, per_class=2):
    for name in ed.DVS_CIFAR10_CLASSES:
        (manual / name).mkdir(parents=True)
        for i in range(per_class):
            _write_aedat(manual / name / f"cifar10_{name}_{i}.aedat", rng, 10)


def _assert_nothing_written(data_dir, name):
    assert not ed.is_prepared(name, str(data_dir))
    folder = data_dir / name
    assert not folder.exists() or list(folder.iterdir()) == []


def test_one_bad_file_of_each_kind_is_listed_and_nothing_is_written(tmp_path, capsys):
    from tks_jax.data import prepare

    rng = np.random.default_rng(1)
    manual = tmp_path / "manual"
    _small_dvs_tree(manual, rng, per_class=6)
    good = (manual / "cat" / "cifar10_cat_0.aedat").read_bytes()
    header = b"#!AER-DAT2.0\r\n# test\r\n"
    record = (3 << 1).to_bytes(4, "big") + (5).to_bytes(4, "big")
    bad = {
        "airplane/cifar10_airplane_0.aedat": (b"", "empty file"),
        "automobile/cifar10_automobile_1.aedat": (header, "header only"),
        "bird/cifar10_bird_2.aedat": (b"\x00" * 16, "no '#!AER-DAT2.0' first line"),
        "deer/cifar10_deer_0.aedat": (
            header + (1 << 24).to_bytes(4, "big") + bytes(4),
            "outside the 128 x 128",
        ),
        "dog/cifar10_dog_1.aedat": (
            header + record + (3 << 1).to_bytes(4, "big") + (4).to_bytes(4, "big"),
            "not monotonic",
        ),
        "frog/cifar10_frog_2.aedat": (good[:-3], "incomplete AEDAT record"),
        "horse/cifar10_horse_0.aedat": (b"#!AER-DAT3.1\r\n" + bytes(16), "AEDAT 3.1"),
    }
    for rel, (data, _) in bad.items():
        (manual / rel).write_bytes(data)
    data_dir = tmp_path / "data"
    with pytest.raises(ed.BadRecordingsError) as info:
        ed.prepare_event_dataset("dvs_cifar10", data_dir=str(data_dir), manual_dir=str(manual))
    message = str(info.value)
    assert f"{len(bad)} of 60 recordings" in message and "--skip_bad_files" in message
    assert sorted(os.path.relpath(p, manual) for p, _ in info.value.bad) == sorted(bad)
    for rel, (_, reason) in bad.items():
        line = next(x for x in message.splitlines() if x.strip().startswith(str(manual / rel)))
        assert reason in line, (rel, line)
    _assert_nothing_written(data_dir, "dvs_cifar10")
    # The command line exits non-zero with the same list.
    argv = ["dvs_cifar10", "--data_dir", str(data_dir), "--manual_dir", str(manual)]
    assert prepare.main(argv) == 1
    err = capsys.readouterr().err
    assert all(str(manual / rel) in err for rel in bad)
    _assert_nothing_written(data_dir, "dvs_cifar10")

    # --skip_bad_files: prepared without them, listed in the metadata and in the output; every
    # other file keeps its split (per class of 6: round(5.4) = 5 train, 1 test).
    assert prepare.main(argv + ["--skip_bad_files"]) == 0
    out = capsys.readouterr().out
    assert f"{len(bad)} bad recordings left out" in out
    skipped = ed.skipped_recordings("dvs_cifar10", str(data_dir))
    assert sorted(item["file"] for item in skipped) == sorted(bad)
    assert {item["split"] for item in skipped} == {"train"}
    for item in skipped:
        assert bad[item["file"]][1] in item["reason"] and item["file"] in out
    source, labels = ed.get_event_source("dvs_cifar10", "train", str(data_dir))
    assert len(source) == len(labels) == 50 - len(bad)
    files = ed.DvsCifar10(data_dir=str(data_dir)).info.metadata["files"]["train"]
    assert not set(files) & set(bad)


def test_skip_bad_files_keeps_the_others_in_their_split(tmp_path):
    rng = np.random.default_rng(2)
    manual = tmp_path / "manual"
    _small_dvs_tree(manual, rng, per_class=12)
    (manual / "ship" / "cifar10_ship_11.aedat").write_bytes(b"")  # the one test file of ship
    data_dir = str(tmp_path / "data")
    ed.prepare_event_dataset(
        "dvs_cifar10", data_dir=data_dir, manual_dir=str(manual), skip_bad_files=True
    )
    _, train_labels = ed.get_event_source("dvs_cifar10", "train", data_dir)
    _, test_labels = ed.get_event_source("dvs_cifar10", "test", data_dir)
    np.testing.assert_array_equal(np.bincount(train_labels), [11] * 10)
    ship = ed.DVS_CIFAR10_CLASSES.index("ship")
    np.testing.assert_array_equal(np.bincount(test_labels, minlength=10), [1] * 8 + [0, 1])
    assert ship == 8
    (item,) = ed.skipped_recordings("dvs_cifar10", data_dir)
    assert item == {
        "file": "ship/cifar10_ship_11.aedat",
        "split": "test",
        "reason": "empty file (0 bytes)",
    }


def test_ncaltech101_prepare_class_folders_split_and_extent(tmp_path):
    rng = np.random.default_rng(2)
    manual = tmp_path / "manual"
    names = list(ed.NCALTECH101_CLASSES)
    for name in names:
        folder = manual / "Caltech101" / name
        folder.mkdir(parents=True)
        for i in range(1, 6):
            _write_atis(folder / f"image_{i:04d}.bin", rng, 8)
    (manual / "Caltech101_annotations").mkdir()
    spec = ed.EVENT_DATASETS["ncaltech101"]
    assert spec.class_balanced and spec.num_classes == 101 and spec.output_size == (48, 48)
    assert names == sorted(names) and names[:2] == ["BACKGROUND_Google", "Faces_easy"]
    data_dir = str(tmp_path / "data")
    ed.prepare_event_dataset("ncaltech101", data_dir=data_dir, manual_dir=str(manual))
    train, train_labels = ed.get_event_source("ncaltech101", "train", data_dir)
    test, test_labels = ed.get_event_source("ncaltech101", "test", data_dir)
    # 5 per class: round(4.5) = 4 train (ties to even), the 5th by name is test.
    np.testing.assert_array_equal(np.bincount(train_labels), [4] * 101)
    np.testing.assert_array_equal(np.bincount(test_labels), [1] * 101)
    files = ed.Ncaltech101(data_dir=data_dir).info.metadata["files"]["test"]
    assert sorted(files) == sorted(f"{c}/image_0005.bin" for c in names)
    assert train.dataset_info.features["label"].names == names
    # Default frames: the recording's own extent (the fork's), then 48 x 48.
    (to_frames,) = ed.event_transforms("ncaltech101", num_steps=2, train=True)
    out = to_frames.map(test[0])
    raw = ef.read_ncaltech_bin(os.path.join(manual, "Caltech101", files[0]))
    want = ev.resize_bilinear(ev.recording_to_frames(raw, 2, None), (48, 48))
    np.testing.assert_allclose(out["image"], want, rtol=1e-6)
    assert out["image"].shape == (2, 48, 48, 2)
    (fixed,) = ed.event_transforms(
        "ncaltech101", num_steps=2, train=False, frames={"extent": "sensor"}
    )
    want = ev.resize_bilinear(ev.events_to_frames(raw, 2, (180, 240)), (48, 48))
    np.testing.assert_allclose(fixed.map(test[0])["image"], want, rtol=1e-6)

    # Missing and unexpected class folders are named.
    for f in (manual / "Caltech101" / "emu").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match="found 100 class folders") as info:
        ed.prepare_event_dataset(
            "ncaltech101", data_dir=str(tmp_path / "d2"), manual_dir=str(manual)
        )
    assert "missing (or without .bin files): emu" in str(info.value)
    (manual / "Caltech101" / "emu" / "image_0001.bin").write_bytes(_atis_bytes_one())
    (manual / "Caltech101" / "Emu_extra").mkdir()
    (manual / "Caltech101" / "Emu_extra" / "image_0001.bin").write_bytes(_atis_bytes_one())
    with pytest.raises(ValueError, match="found 102 class folders") as info:
        ed.prepare_event_dataset(
            "ncaltech101", data_dir=str(tmp_path / "d3"), manual_dir=str(manual)
        )
    assert "unexpected: Emu_extra" in str(info.value) and "missing" not in str(info.value)


def test_ncaltech101_tree_with_one_bad_file_of_each_kind(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "manual" / "Caltech101"
    for name in ed.NCALTECH101_CLASSES:
        (root / name).mkdir(parents=True)
        _write_atis(root / name / "image_0001.bin", rng, 8)
    good = (root / "ant" / "image_0001.bin").read_bytes()
    marker = ((0 << 32) | (240 << 24)).to_bytes(5, "big")
    bad = {
        "bass/image_0001.bin": (b"", "empty file"),
        "brain/image_0001.bin": (marker * 3, "no events (3 timestamp-overflow markers only)"),
        "camera/image_0001.bin": (_atis_event(241, 7, 5) + good, "x=241, y=7"),
        "cup/image_0001.bin": (good + _atis_event(1, 1, 0), "timestamps not monotonic"),
        "emu/image_0001.bin": (good[:-1], "incomplete event"),
    }
    for rel, (data, _) in bad.items():
        (root / rel).write_bytes(data)
    data_dir = tmp_path / "data"
    with pytest.raises(ed.BadRecordingsError) as info:
        ed.prepare_event_dataset(
            "ncaltech101", data_dir=str(data_dir), manual_dir=str(tmp_path / "manual")
        )
    assert f"{len(bad)} of 101 recordings" in str(info.value)
    got = {os.path.relpath(p, root): reason for p, reason in info.value.bad}
    assert sorted(got) == sorted(bad)
    for rel, (_, reason) in bad.items():
        assert reason in got[rel], (rel, got[rel])
    _assert_nothing_written(data_dir, "ncaltech101")


def _atis_event(x, y, t):
    return ((x << 32) | (y << 24) | t).to_bytes(5, "big")


def _atis_bytes_one():
    return ((5 << 32) | (6 << 24) | (1 << 23) | 7).to_bytes(5, "big")


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


@pytest.mark.parametrize(
    "config_name,extent",
    [("dvs_cifar10_vgg_snn", "sensor"), ("ncaltech101_vgg_snn", "recording")],
)
def test_configs_name_the_frame_options_and_bad_values_are_refused(config_name, extent):
    import importlib

    import train_testlib  # noqa: F401  (puts the repo root on sys.path for `configs`)

    from tks_jax.training import config_lib

    config = importlib.import_module(f"configs.{config_name}").get_config()
    assert dict(config.data.event_frames) == {"binning": "equal", "extent": extent}
    assert ed.frame_options(config.data.name) == dict(config.data.event_frames)
    config_lib.validate_config(config)
    config.data.event_frames.binning = "authors"
    config_lib.validate_config(config)
    config.data.event_frames.binning = "fork"
    with pytest.raises(ValueError, match="data.event_frames: .*binning must be one of"):
        config_lib.validate_config(config)
