"""The validation split carved from training data (tks_jax.data.validation_indices)."""

import grain
import numpy as np
import pytest

from tks_jax import data
from tks_jax.data import static


def test_validation_indices_hand_case():
    # 10 examples: class 0 x 6, class 1 x 3, class 2 x 1. size 5: shares 3, 1.5, 0.5 ->
    # floors 3, 1, 0; one left goes to the largest remainder, tie 0.5 = 0.5 -> class 1.
    labels = np.array([0, 1, 0, 0, 2, 1, 0, 0, 1, 0])
    idx = data.validation_indices(labels, 5, seed=0)
    assert idx.shape == (5,) and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=3), [3, 2, 0])


def test_validation_indices_per_class_and_fixed():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=400)
    counts = np.bincount(labels)
    idx = data.validation_indices(labels, 100, seed=3)
    got = np.bincount(labels[idx], minlength=4)
    assert got.sum() == 100 and len(set(idx.tolist())) == 100
    # Proportional: each class within one of its exact share.
    assert np.all(np.abs(got - 100 * counts / 400) < 1)
    np.testing.assert_array_equal(idx, data.validation_indices(labels, 100, seed=3))
    assert not np.array_equal(idx, data.validation_indices(labels, 100, seed=4))


@pytest.mark.parametrize("size", [0, 10, 11, -1, 2.5, True])
def test_validation_indices_bad_size(size):
    with pytest.raises(ValueError, match="validation_size"):
        data.validation_indices(np.arange(10) % 2, size)


class _ToExample(grain.transforms.Map):
    def map(self, record):
        return {"image": np.full((2, 2, 1), record["id"], np.float32),
                "label": np.int32(record["label"])}


@pytest.fixture
def fake_static(monkeypatch):
    labels = {"train": np.array([i % 3 for i in range(30)]), "test": np.array([0, 1, 2])}

    def get_static_source(name, split, data_dir):
        return [{"id": i, "label": int(y)} for i, y in enumerate(labels[split])]

    monkeypatch.setattr(static, "get_static_source", get_static_source)
    monkeypatch.setattr(static, "static_transforms", lambda name, train: [_ToExample()])
    return labels


def _ids(name, split, train, **kwargs):
    it, info = data.get_dataset(name, split, batch_size=4, train=train, shard_index=0,
                                shard_count=1, num_epochs=1, drop_remainder=False, **kwargs)
    ids = np.concatenate([b["image"][b["mask"], 0, 0, 0] for b in it]).astype(int)
    return ids, info


def test_get_dataset_validation_is_disjoint_from_train(fake_static, tmp_path):
    kw = {"validation_size": 6, "validation_seed": 1, "data_dir": str(tmp_path)}
    val, info = _ids("mnist", "validation", False, **kw)
    assert info.num_examples == 6
    np.testing.assert_array_equal(np.sort(val), data.validation_indices(
        fake_static["train"], 6, seed=1))
    np.testing.assert_array_equal(np.bincount(fake_static["train"][val]), [2, 2, 2])
    train, info = _ids("mnist", "train", True, **kw)
    assert info.num_examples == 24
    assert set(train.tolist()) | set(val.tolist()) == set(range(30))
    assert not set(train.tolist()) & set(val.tolist())
    # Without validation_size the training split is whole; test is unaffected.
    train_all, _ = _ids("mnist", "train", True, data_dir=str(tmp_path))
    assert sorted(train_all.tolist()) == list(range(30))
    test, _ = _ids("mnist", "test", False, **kw)
    assert sorted(test.tolist()) == [0, 1, 2]


def test_get_dataset_validation_needs_a_size(fake_static, tmp_path):
    with pytest.raises(ValueError, match="validation_size"):
        data.get_dataset("mnist", "validation", batch_size=2, train=False,
                         data_dir=str(tmp_path), shard_index=0, shard_count=1)
