"""Tests of the grain pipeline (tks_jax.data.pipeline) on tiny synthetic sources."""

import json
import math

import grain
import numpy as np
import pytest

from tks_jax.data import pipeline

NUM = 23  # not a multiple of the batch sizes or host counts used below


def _source(n=NUM, labels=None):
    labels = np.arange(n) % 3 if labels is None else labels
    # The image encodes the example index, so batches can be traced back to examples.
    return [{"image": np.full((2, 2, 1), i, np.uint8), "label": int(labels[i])} for i in range(n)]


class _ToFloat(grain.transforms.Map):
    def map(self, ex):
        return {"image": ex["image"].astype(np.float32), "label": ex["label"]}


class _Jitter(grain.transforms.RandomMap):
    """Adds a random offset in [0, 0.5): the index stays recoverable with floor()."""

    def random_map(self, ex, rng):
        return {"image": ex["image"].astype(np.float32) + rng.uniform(0, 0.5), "label": ex["label"]}


def _ids(batch):
    return np.floor(batch["image"][:, 0, 0, 0]).astype(int)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _read_ids(**kwargs):
    ds = pipeline.build_dataset(_source(), transforms=[_ToFloat()], **kwargs)
    ids, masks = [], []
    for b in ds:
        ids.append(_ids(b))
        masks.append(b["mask"])
    return np.concatenate(ids), np.concatenate(masks), len(ids)


@pytest.mark.parametrize("batch_size", [4, 5])
def test_eval_two_hosts_disjoint_cover_and_equal_batch_counts(batch_size):
    seen, counts = [], []
    for host in range(2):
        ids, mask, n_batches = _read_ids(
            batch_size=batch_size, train=False, shard_index=host, shard_count=2
        )
        seen.append(ids[mask])
        counts.append(n_batches)
    assert counts[0] == counts[1]  # multi-host eval needs the same number of steps
    assert counts[0] == math.ceil(math.ceil(NUM / 2) / batch_size)
    assert not set(seen[0]) & set(seen[1])
    assert sorted(np.concatenate(seen)) == list(range(NUM))


def test_eval_padding_and_mask():
    ds = pipeline.build_dataset(_source(10), transforms=[_ToFloat()], batch_size=4, train=False)
    batches = list(ds)
    assert [b["mask"].tolist() for b in batches] == [
        [True] * 4,
        [True] * 4,
        [True, True] + [False] * 2,
    ]
    for b in batches:
        assert b["image"].shape == (4, 2, 2, 1) and b["image"].dtype == np.float32
        assert b["label"].dtype == np.int32 and b["mask"].dtype == bool
    # In order, one pass, every example exactly once.
    ids = np.concatenate([_ids(b)[b["mask"]] for b in batches])
    np.testing.assert_array_equal(ids, np.arange(10))
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(labels, np.arange(10) % 3)


def test_eval_drop_remainder_drops_partial_batch():
    ds = pipeline.build_dataset(
        _source(10), transforms=[_ToFloat()], batch_size=4, train=False, drop_remainder=True
    )
    assert [int(b["mask"].sum()) for b in ds] == [4, 4]


def test_train_finite_epochs_pads_last_batch_when_keeping_remainder():
    ds = pipeline.build_dataset(
        _source(10),
        transforms=[_ToFloat()],
        batch_size=4,
        train=True,
        num_epochs=1,
        drop_remainder=False,
    )
    batches = list(ds)
    assert [int(b["mask"].sum()) for b in batches] == [4, 4, 2]
    ids = np.concatenate([_ids(b)[b["mask"]] for b in batches])
    assert sorted(ids) == list(range(10))


def test_train_two_hosts_disjoint_each_epoch_and_reshuffled():
    per_host = NUM // 2
    epochs = {}
    for host in range(2):
        ds = pipeline.build_dataset(
            _source(),
            transforms=[_ToFloat()],
            batch_size=1,
            train=True,
            seed=3,
            shard_index=host,
            shard_count=2,
            num_epochs=2,
        )
        ids = np.concatenate([_ids(b) for b in ds])
        assert len(ids) == 2 * per_host
        epochs[host] = (ids[:per_host], ids[per_host:])
        # Each epoch is a permutation of this host's shard, and the order changes per epoch.
        assert sorted(epochs[host][0]) == sorted(epochs[host][1])
        assert list(epochs[host][0]) != list(epochs[host][1])
    assert not set(epochs[0][0]) & set(epochs[1][0])
    assert len(set(epochs[0][0]) | set(epochs[1][0])) == 2 * per_host


def test_train_determinism_per_seed():
    def first(seed):
        ds = pipeline.build_dataset(
            _source(), transforms=[_Jitter()], batch_size=4, train=True, seed=seed
        )
        return np.stack([b["image"] for b in _take(iter(ds), 5)])

    np.testing.assert_array_equal(first(7), first(7))
    assert not np.array_equal(first(7), first(8))


def test_iterator_state_save_restore_resumes_at_same_batch():
    ds = pipeline.build_dataset(_source(), transforms=[_Jitter()], batch_size=3, train=True, seed=1)
    it = iter(ds)
    _take(it, 9)  # crosses an epoch boundary (23 // 3 = 7 batches per epoch)
    state = json.loads(json.dumps(it.get_state()))  # JSON-serialisable, as a checkpoint stores it
    expected = _take(it, 4)
    restored = iter(ds)
    restored.set_state(state)
    for a, b in zip(expected, _take(restored, 4), strict=True):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_class_balanced_probabilities_hand_computed():
    p = pipeline.class_balanced_probabilities(np.array([0, 0, 0, 1, 2, 2]))
    # 3 classes, each 1/3; split evenly inside a class.
    np.testing.assert_allclose(p, [1 / 9, 1 / 9, 1 / 9, 1 / 3, 1 / 6, 1 / 6])


def test_class_balanced_sampling_frequencies():
    labels = np.array([0] * 70 + [1] * 25 + [2] * 5)
    ds = pipeline.build_dataset(
        _source(100, labels),
        transforms=[_ToFloat()],
        batch_size=10,
        train=True,
        seed=0,
        labels=labels,
        class_balanced=True,
    )
    got = np.concatenate([b["label"] for b in _take(iter(ds), 300)])  # 3000 draws, 30 epochs
    freq = np.bincount(got, minlength=3) / len(got)
    # Binomial std of a frequency at p = 1/3, n = 3000 is 0.0086; 4 sigma.
    np.testing.assert_allclose(freq, [1 / 3] * 3, atol=0.035)
    # Uniform sampling would give 0.70 / 0.25 / 0.05: the test can tell the difference.
    assert freq[2] > 0.25


def test_class_balanced_two_hosts_take_disjoint_positions_of_one_stream():
    labels = np.arange(40) % 4
    parent = grain.MapDataset.source(_source(40, labels))
    full = pipeline.ClassBalancedMapDataset(parent, labels, seed=5)
    hosts = [
        pipeline.ClassBalancedMapDataset(parent, labels, seed=5, shard_index=h, shard_count=2)
        for h in range(2)
    ]
    for epoch in range(2):
        global_draws = full.epoch_indices(epoch)
        np.testing.assert_array_equal(hosts[0].epoch_indices(epoch), global_draws[0::2])
        np.testing.assert_array_equal(hosts[1].epoch_indices(epoch), global_draws[1::2])
    assert not np.array_equal(full.epoch_indices(0), full.epoch_indices(1))
    # Element i of the dataset is the draw's example.
    assert hosts[1][3]["label"] == labels[hosts[1].epoch_indices(0)[3]]


def test_time_major_output():
    src = [
        {
            "image": np.arange(3 * 2 * 2 * 2, dtype=np.float32).reshape(3, 2, 2, 2) + 100 * i,
            "label": i,
        }
        for i in range(4)
    ]
    ds = pipeline.build_dataset(src, transforms=[], batch_size=2, train=False, time_major=True)
    b = next(iter(ds))
    assert b["image"].shape == (3, 2, 2, 2, 2)  # [T, B, H, W, C]
    for t in range(3):
        for i in range(2):
            np.testing.assert_array_equal(b["image"][t, i], src[i]["image"][t])


@pytest.mark.slow
def test_worker_processes_give_the_same_batches():
    kwargs = dict(transforms=[_Jitter()], batch_size=4, train=True, seed=2)
    a = _take(iter(pipeline.build_dataset(_source(), **kwargs)), 3)
    b = _take(iter(pipeline.build_dataset(_source(), num_workers=1, **kwargs)), 3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=2, shard_index=2, shard_count=2), "shard_index"),
        (dict(batch_size=2, shard_count=0), "shard_count"),
        (dict(batch_size=2, num_epochs=0), "num_epochs"),
        (dict(batch_size=2, class_balanced=True), "labels"),
        (dict(batch_size=2, class_balanced=True, labels=np.zeros(3)), "one label per example"),
        (dict(batch_size=2, shard_count=50), "cannot be split"),
    ],
)
def test_bad_input_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipeline.build_dataset(_source(), transforms=[], train=True, **kwargs)


def test_empty_source_error():
    with pytest.raises(ValueError, match="empty"):
        pipeline.build_dataset([], transforms=[], batch_size=2, train=False)


# ----------------------------------------------------------------------------- event dispatch


def _fake_event_source(labels):
    """Tiny synthetic recordings: example i has i + 1 ON events at pixel (0, 0)."""
    source = []
    for i, label in enumerate(labels):
        n = i + 1
        source.append(
            {
                "t": np.arange(n, dtype=np.uint32) * 10,
                "x": np.zeros(n, np.uint8),
                "y": np.zeros(n, np.uint8),
                "p": np.ones(n, np.uint8),
                "label": int(label),
            }
        )
    return source


class _FakeFrames(grain.transforms.Map):
    """All events of a record counted in bin 0 of a [T, 3, 3, 2] tensor."""

    def __init__(self, num_steps):
        self.num_steps = num_steps

    def map(self, ex):
        frames = np.zeros((self.num_steps, 3, 3, 2), np.float32)
        frames[0, 0, 0, 1] = len(ex["t"])
        return {"image": frames, "label": np.int32(ex["label"])}


@pytest.fixture
def fake_events(monkeypatch):
    """Replaces the events side's stores by tiny in-memory sources (what the pipeline needs
    from them: a source and its labels)."""
    event_datasets = pytest.importorskip("tks_jax.data.event_datasets")
    labels = {"train": np.array([0] * 12 + [1] * 3 + [2] * 1), "test": np.array([0, 1, 2])}
    calls = {}

    def get_event_source(name, split, data_dir):
        calls["source"] = (name, split, data_dir)
        return _fake_event_source(labels[split]), labels[split]

    def event_transforms(name, *, num_steps, train, seed):
        calls["transforms"] = (name, num_steps, train)
        return [_FakeFrames(num_steps)]

    monkeypatch.setattr(event_datasets, "get_event_source", get_event_source)
    monkeypatch.setattr(event_datasets, "event_transforms", event_transforms)
    return labels, calls


def test_get_dataset_events_time_major_and_padded(fake_events, tmp_path):
    from tks_jax.data import get_dataset

    _, calls = fake_events
    it, info = get_dataset(
        "dvs_cifar10",
        "test",
        batch_size=2,
        num_steps=5,
        train=False,
        data_dir=str(tmp_path),
        shard_index=0,
        shard_count=1,
    )
    assert calls["source"] == ("dvs_cifar10", "test", str(tmp_path))
    assert calls["transforms"] == ("dvs_cifar10", 5, False)
    assert info.is_event and info.input_shape == (5, 48, 48, 2) and info.num_examples == 3
    batches = list(it)
    assert [b["image"].shape for b in batches] == [(5, 2, 3, 3, 2)] * 2  # [T, B, H, W, C]
    assert [b["mask"].tolist() for b in batches] == [[True, True], [True, False]]
    counts = [b["image"][0, :, 0, 0, 1] for b in batches]
    np.testing.assert_array_equal(np.concatenate(counts)[:3], [1, 2, 3])  # in order, by example
    assert not any(b["image"][1:].any() for b in batches)


def test_get_dataset_ncaltech_trains_class_balanced(fake_events, tmp_path):
    from tks_jax.data import get_dataset

    it, info = get_dataset(
        "ncaltech101",
        "train",
        batch_size=16,
        num_steps=2,
        train=True,
        data_dir=str(tmp_path),
        shard_index=0,
        shard_count=1,
        seed=0,
    )
    got = np.concatenate([next(it)["label"] for _ in range(60)])  # 960 draws
    freq = np.bincount(got, minlength=3) / len(got)
    # Balanced: 1/3 each (std 0.015); uniform sampling would give 0.75 / 0.19 / 0.06.
    np.testing.assert_allclose(freq, [1 / 3] * 3, atol=0.07)


def test_orbax_checkpoint_of_the_iterator(tmp_path):
    """The training loop saves the iterator with grain's orbax handler; restoring resumes."""
    ocp = pytest.importorskip("orbax.checkpoint")
    ds = pipeline.build_dataset(_source(), transforms=[_Jitter()], batch_size=3, train=True)
    it = iter(ds)
    _take(it, 2)
    mgr = ocp.CheckpointManager(
        str(tmp_path), item_handlers={"data": grain.checkpoint.CheckpointHandler()}
    )
    mgr.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mgr.wait_until_finished()
    expected = next(it)
    restored = iter(ds)
    mgr.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
    np.testing.assert_array_equal(next(restored)["image"], expected["image"])


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("drop_remainder", [None, True, False])
@pytest.mark.parametrize("shard_count, batch_size", [(1, 4), (2, 3), (3, 5)])
def test_batches_per_epoch_matches_the_pipeline(train, drop_remainder, shard_count, batch_size):
    ds = pipeline.build_dataset(
        _source(),
        transforms=[_ToFloat()],
        batch_size=batch_size,
        train=train,
        shard_count=shard_count,
        num_epochs=1,
        drop_remainder=drop_remainder,
    )
    expected = pipeline.batches_per_epoch(
        NUM, batch_size, train=train, shard_count=shard_count, drop_remainder=drop_remainder
    )
    assert len(list(ds)) == expected
