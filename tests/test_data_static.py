"""Tests of the static datasets: augmentations against NumPy references, and the real pipeline
on ``tfds.testing.mock_data`` (which in tfds 4.9.10 also mocks ``tfds.data_source``)."""

import json

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from tks_jax.data import augment, get_dataset, prepare, static

# ----------------------------------------------------------------------------- augmentations


def _image(h=12, w=10, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def test_random_crop_with_padding_is_a_window_of_the_zero_padded_image():
    image = _image(8, 8)
    padded = np.zeros((16, 16, 3), np.uint8)
    padded[4:12, 4:12] = image
    offsets = set()
    for seed in range(60):
        out = augment.random_crop_with_padding(image, np.random.default_rng(seed), 8, 4)
        assert out.shape == (8, 8, 3)
        found = [
            (i, j)
            for i in range(9)
            for j in range(9)
            if np.array_equal(padded[i : i + 8, j : j + 8], out)
        ]
        assert found, "output is not a window of the padded image"
        offsets.update(found)
    rows = {i for i, _ in offsets}
    assert min(rows) == 0 and max(rows) == 8  # the whole padding range is used


def test_horizontal_flip():
    image = _image()
    np.testing.assert_array_equal(
        augment.random_horizontal_flip(image, np.random.default_rng(0), probability=1.0),
        image[:, ::-1],
    )
    np.testing.assert_array_equal(
        augment.random_horizontal_flip(image, np.random.default_rng(0), probability=0.0), image
    )


def test_inception_crop_box_respects_scale_and_ratio():
    h, w = 100, 150
    for seed in range(50):
        top, left, ch, cw = augment.inception_crop_box(h, w, np.random.default_rng(seed))
        assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w
        area = ch * cw / (h * w)
        assert 0.08 * 0.9 <= area <= 1.0
        assert 3 / 4 * 0.9 <= cw / ch <= 4 / 3 * 1.1
    # Impossible scale: falls back to the largest centred crop with the ratio clamped.
    box = augment.inception_crop_box(100, 300, np.random.default_rng(0), scale=(5.0, 6.0))
    assert box == (0, (300 - 133) // 2, 100, 133)


def test_random_resized_crop_full_box_is_identity():
    image = _image(16, 16)
    out = augment.random_resized_crop(
        image, np.random.default_rng(0), 16, scale=(1.0, 1.0), ratio=(1.0, 1.0)
    )
    np.testing.assert_array_equal(out, image)
    out = augment.random_resized_crop(_image(37, 51), np.random.default_rng(1), 24)
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8


def test_resize_shorter_side_and_center_crop():
    out = augment.resize_shorter_side(_image(300, 400), 256)
    assert out.shape == (256, 341, 3)
    image = _image(10, 14)
    np.testing.assert_array_equal(augment.center_crop(image, 6), image[2:8, 4:10])
    # A constant image stays constant under bilinear resizing.
    flat = np.full((30, 40, 3), 77, np.uint8)
    np.testing.assert_array_equal(augment.resize_shorter_side(flat, 20), 77)
    with pytest.raises(ValueError, match="center-crop"):
        augment.center_crop(image, 11)


def test_normalize_formula():
    image = _image()
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    expected = (image / 255.0 - np.array(mean)) / np.array(std)
    out = augment.normalize(image, mean, std)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_random_erasing_changes_one_rectangle():
    x = np.full((32, 32, 3), 100.0, np.float32)  # noise is ~N(0,1): never exactly 100
    np.testing.assert_array_equal(augment.random_erasing(x, np.random.default_rng(0), 0.0), x)
    for seed in range(20):
        out = augment.random_erasing(x, np.random.default_rng(seed), probability=1.0)
        changed = np.any(out != x, axis=-1)
        rows, cols = np.nonzero(changed)
        assert rows.size > 0
        box = changed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all()  # the changed pixels form exactly one filled rectangle
        assert 0.02 * 0.8 <= box.size / (32 * 32) <= 1 / 3 * 1.2
    assert np.all(x == 100.0)  # input not modified in place


def _apply_op(name, image, level, seed=0, fill=128):
    pil = augment._to_pil(image)
    out = augment.RAND_AUGMENT_OPS[name](pil, level, np.random.default_rng(seed), fill)
    return augment._from_pil(out, image.shape[-1])


def test_rand_augment_pixel_ops_against_numpy():
    image = _image(9, 7)
    x = image.astype(np.int32)
    np.testing.assert_array_equal(_apply_op("Invert", image, 0.5), 255 - x)
    # Solarize at level 0.5: threshold 128, pixels >= 128 inverted.
    np.testing.assert_array_equal(_apply_op("Solarize", image, 0.5), np.where(x >= 128, 255 - x, x))
    # Posterize at level 0.5: 8 - 2 = 6 bits kept.
    np.testing.assert_array_equal(_apply_op("Posterize", image, 0.5), x & 0b11111100)
    # SolarizeAdd at level 0.5: +55 below 128, clipped at 255.
    np.testing.assert_array_equal(
        _apply_op("SolarizeAdd", image, 0.5), np.where(x < 128, np.minimum(x + 55, 255), x)
    )
    # Brightness at level 0: factor 1, identity.
    np.testing.assert_array_equal(_apply_op("Brightness", image, 0.0), image)


def test_rand_augment_translate_shifts_by_whole_pixels():
    image = _image(10, 20)
    out = _apply_op("TranslateX", image, 1.0)  # 0.45 * 20 = 9 pixels, either direction
    left = np.array_equal(out[:, :11], image[:, 9:]) and np.all(out[:, 11:] == 128)
    right = np.array_equal(out[:, 9:], image[:, :11]) and np.all(out[:, :9] == 128)
    assert left != right


def test_rand_augment_policy():
    image = _image()
    twice = augment.RandAugment(num_ops=2, magnitude=9, ops=("Invert",))
    np.testing.assert_array_equal(twice(image, np.random.default_rng(0)), image)
    once = augment.RandAugment(num_ops=1, magnitude=9, ops=("Invert",))
    np.testing.assert_array_equal(once(image, np.random.default_rng(0)), 255 - image)
    full = augment.RandAugment()
    a = full(image, np.random.default_rng(3))
    np.testing.assert_array_equal(a, full(image, np.random.default_rng(3)))
    assert a.shape == image.shape and a.dtype == np.uint8
    outs = {full(image, np.random.default_rng(s)).tobytes() for s in range(10)}
    assert len(outs) > 5
    grey = augment.RandAugment()(_image(c=1), np.random.default_rng(0))
    assert grey.shape == (12, 10, 1)
    with pytest.raises(ValueError, match="unknown RandAugment ops"):
        augment.RandAugment(ops=("Blur",))
    with pytest.raises(ValueError, match="magnitude"):
        augment.RandAugment(magnitude=11)


def test_augment_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        augment.random_crop_with_padding(np.zeros((4, 4, 3), np.float32), None, 4, 1)


# ----------------------------------------------------------------------------- datasets (mock)

EXPECTED = {
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
    "imagenet2012": ((224, 224, 3), 1000),
    "caltech_birds2011": ((224, 224, 3), 200),
    "stanford_dogs": ((224, 224, 3), 120),
    "cars196": ((224, 224, 3), 196),
}
NUM_MOCK = 10


@pytest.fixture
def mock_tfds():
    with tfds.testing.mock_data(num_examples=NUM_MOCK):
        yield


def _get(name, split, train, **kwargs):
    kwargs.setdefault("shard_index", 0)
    kwargs.setdefault("shard_count", 1)
    return get_dataset(name, split, batch_size=4, train=train, data_dir="/nonexistent", **kwargs)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_mock_datasets_through_the_real_pipeline(mock_tfds, name):
    shape, num_classes = EXPECTED[name]
    it, info = _get(name, "train", True, seed=0)
    b = next(it)
    assert info.input_shape == shape and info.num_classes == num_classes
    assert info.num_examples == NUM_MOCK and not info.is_event
    assert b["image"].shape == (4, *shape) and b["image"].dtype == np.float32
    assert b["label"].shape == (4,) and b["label"].dtype == np.int32
    assert b["mask"].all() and np.isfinite(b["image"]).all()
    assert ((b["label"] >= 0) & (b["label"] < num_classes)).all()
    it, info = _get(name, "test", False)
    batches = list(it)
    assert len(batches) == 3 and sum(int(x["mask"].sum()) for x in batches) == NUM_MOCK
    assert all(x["image"].shape == (4, *shape) for x in batches)


def test_cifar_eval_is_the_normalised_record(mock_tfds):
    source = tfds.data_source("cifar10", split="test", data_dir="/nonexistent")
    raw = np.stack([source[i]["image"] for i in range(4)]).astype(np.float64)
    it, _ = _get("cifar10", "test", False)
    b = next(it)
    mean, std = np.array(static.CIFAR10_MEAN), np.array(static.CIFAR10_STD)
    np.testing.assert_allclose((b["image"] * std + mean) * 255.0, raw, atol=1e-3)
    np.testing.assert_array_equal(b["label"], [source[i]["label"] for i in range(4)])


def test_train_augmentation_changes_images_and_is_seeded(mock_tfds):
    def first(seed):
        it, _ = _get("cifar10", "train", True, seed=seed)
        return [next(it) for _ in range(2)]

    a, b, c = first(1), first(1), first(2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
    assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_state_restore_through_get_dataset(mock_tfds):
    it, _ = _get("cifar10", "train", True, seed=4)
    for _ in range(3):
        next(it)
    state = json.dumps(it.get_state())
    expected = next(it)
    it2, _ = _get("cifar10", "train", True, seed=4)
    it2.set_state(json.loads(state))
    np.testing.assert_array_equal(next(it2)["image"], expected["image"])


def test_two_hosts_and_max_examples(mock_tfds):
    total = 0
    for host in range(2):
        it, info = _get("cars196", "test", False, shard_index=host, shard_count=2, max_examples=7)
        assert info.num_examples == 7
        total += sum(int(b["mask"].sum()) for b in it)
    assert total == 7


# ----------------------------------------------------------------------------- real files


def _fake_cifar_images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


class Cifar10(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A tiny dataset stored exactly like a prepared tfds ``cifar10`` (same name, version and
    features; PNG-encoded by PIL, so writing it needs no TensorFlow)."""

    VERSION = tfds.core.Version("3.0.2")
    SIZES = {"train": (6, 0), "test": (5, 1)}

    def _info(self):
        features = tfds.features.FeaturesDict(
            {
                "id": tfds.features.Text(),
                "image": tfds.features.Image(shape=(32, 32, 3)),
                "label": tfds.features.ClassLabel(num_classes=10),
            }
        )
        return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(*size) for split, size in self.SIZES.items()}

    def _generate_examples(self, n, seed):
        for i, image in enumerate(_fake_cifar_images(n, seed)):
            yield i, {"id": str(i), "image": PIL.Image.fromarray(image), "label": (3 * i) % 10}


@pytest.fixture(scope="module")
def real_cifar_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds_cifar"))
    Cifar10(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir


def test_real_array_record_files_are_read_without_tensorflow(real_cifar_dir):
    """The real read path (no mock): tfds.data_source + PIL decoding + our transforms."""
    it, info = get_dataset(
        "cifar10",
        "test",
        batch_size=4,
        train=False,
        data_dir=real_cifar_dir,
        shard_index=0,
        shard_count=1,
    )
    assert info.num_examples == 5 and info.class_names == tuple(str(i) for i in range(10))
    batches = list(it)
    images = np.concatenate([b["image"] for b in batches])[:5]
    mean, std = np.array(static.CIFAR10_MEAN), np.array(static.CIFAR10_STD)
    np.testing.assert_allclose((images * std + mean) * 255.0, _fake_cifar_images(5, 1), atol=1e-3)
    labels = np.concatenate([b["label"] for b in batches])[:5]
    np.testing.assert_array_equal(labels, [(3 * i) % 10 for i in range(5)])
    it, _ = get_dataset(
        "cifar10",
        "train",
        batch_size=4,
        train=True,
        data_dir=real_cifar_dir,
        shard_index=0,
        shard_count=1,
    )
    b = next(it)
    assert b["image"].shape == (4, 32, 32, 3) and b["image"].dtype == np.float32


# ----------------------------------------------------------------------------- errors


def test_missing_dataset_names_path_and_command(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        get_dataset("cifar100", "train", batch_size=2, train=True, data_dir=str(tmp_path))
    msg = str(e.value)
    assert "cifar100" in msg and str(tmp_path / "cifar100") in msg
    assert "python -m tks_jax.data.prepare cifar100" in msg


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("cifar11", "train"), {}, "Unknown dataset"),
        (("cifar10", "val"), {}, "Unknown split"),
        (("cifar10", "train"), {"max_examples": 0}, "max_examples"),
        (("dvs_cifar10", "train"), {}, "num_steps"),
        (("cifar10", "train"), {"shard_index": 3, "shard_count": 2}, "shard_index"),
    ],
)
def test_bad_arguments(tmp_path, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_dataset(*args, batch_size=2, train=True, data_dir=str(tmp_path), **kwargs)


def test_prepare_cli_errors(tmp_path, capsys):
    assert prepare.main(["imagenet2012", "--data_dir", str(tmp_path)]) == 1
    assert "--manual_dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        prepare.main(["not_a_dataset", "--data_dir", str(tmp_path)])
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        assert prepare.main(["cifar10", "--data_dir", str(tmp_path)]) == 1
        assert "pip install -e .[prepare]" in capsys.readouterr().err
