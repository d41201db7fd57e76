"""The simulated N-MNIST camera: reference check, determinism, sane polarity/timing, storage."""

import numpy as np
import pytest
import scipy.ndimage

from tks_jax.data import event_datasets as ed
from tks_jax.data import events as ev
from tks_jax.data import nmnist_synth as ns


def _synthetic_digits(n, seed=0):
    """Digit-like uint8 strokes: a bar and a ring of random size and brightness."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    out = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        cy, cx = rng.integers(10, 18, 2)
        radius = rng.integers(4, 9)
        ring = np.abs(np.hypot(yy - cy, xx - cx) - radius) < 1.5
        bar = (np.abs(xx - cx) < 2) & (yy > 4) & (yy < 24) if i % 2 else np.zeros_like(ring)
        out[i][ring | bar] = rng.integers(150, 256)
    return out


def _reference_counts(digit):
    """Independent per-pixel loop: counts [K, 34, 34, 2] of (step, y, x, polarity) events."""
    steps = ns.STEPS_PER_SACCADE
    vertices = np.asarray(ns.SACCADE_VERTICES)
    positions = [vertices[0]]
    for a, b in zip(vertices, np.roll(vertices, -1, axis=0), strict=True):
        positions += [a + (b - a) * s / steps for s in range(1, steps + 1)]
    field = np.zeros((34, 34))
    field[:28, :28] = digit / 255.0
    logs = [
        np.log(
            scipy.ndimage.shift(field, pos, order=1, mode="grid-constant", cval=0.0) + ns.LOG_EPS
        )
        for pos in positions
    ]
    counts = np.zeros((len(positions) - 1, 34, 34, 2))
    ref = logs[0].copy()
    for k in range(1, len(positions)):
        for y in range(34):
            for x in range(34):
                while abs(logs[k][y, x] - ref[y, x]) >= ns.CONTRAST_THRESHOLD - 1e-6:
                    on = logs[k][y, x] > ref[y, x]
                    ref[y, x] += ns.CONTRAST_THRESHOLD if on else -ns.CONTRAST_THRESHOLD
                    counts[k - 1, y, x, int(on)] += 1
    return counts


def test_events_match_independent_simulation():
    digits = _synthetic_digits(2)
    records = ns.simulate_chunk(digits, np.arange(2), seed=0, split_id=0)
    dt = ns.SACCADE_DURATION_US // ns.STEPS_PER_SACCADE
    for digit, rec in zip(digits, records, strict=True):
        want = _reference_counts(digit)
        got = np.zeros_like(want)
        np.add.at(got, (rec["t"] // dt, rec["y"], rec["x"], rec["p"]), 1)
        # float32 vs float64 rounding may move an event exactly at a threshold: allow 0.5 %.
        mismatch = np.abs(got - want).sum()
        assert mismatch <= 0.005 * want.sum(), (mismatch, want.sum())
        assert want.sum() > 100


def test_deterministic_and_independent_of_chunking_and_subset():
    digits = _synthetic_digits(7)
    a = list(ns.simulate(digits, seed=3, chunk_size=3))
    b = list(ns.simulate(digits, seed=3, chunk_size=7))
    c = list(ns.simulate(digits[:4], seed=3))
    for ra, rb in zip(a, b, strict=True):
        for key in "txyp":
            np.testing.assert_array_equal(ra[key], rb[key])
    for ra, rc in zip(a[:4], c, strict=True):
        np.testing.assert_array_equal(ra["t"], rc["t"])
    other = list(ns.simulate(digits, seed=4))
    assert not all(np.array_equal(r["t"], o["t"]) for r, o in zip(a, other, strict=True))
    # The seed only moves timestamps (jitter); the event pixels stay the same.
    np.testing.assert_array_equal(a[0]["x"].size, other[0]["x"].size)


def test_polarity_balance_timing_and_frames():
    digits = _synthetic_digits(6, seed=1)
    records = list(ns.simulate(digits, seed=0))
    for rec in records:
        t = rec["t"].astype(np.int64)
        assert rec["t"].dtype == np.uint32 and rec["x"].dtype == np.uint8
        assert t.size > 100
        assert np.all(np.diff(t) >= 0)  # sorted
        assert t.min() >= 0 and t.max() < ns.RECORDING_DURATION_US
        # Every saccade (100 ms) produces events.
        per_saccade = np.bincount(t // ns.SACCADE_DURATION_US, minlength=3)
        assert np.all(per_saccade > 0)
        # The path is closed, so ON and OFF nearly balance.
        assert 0.4 <= rec["p"].mean() <= 0.6
        assert rec["x"].max() < 34 and rec["y"].max() < 34
        frames = ev.events_to_frames(rec, 10, ns.SENSOR_SIZE)
        assert frames.shape == (10, 34, 34, 2)
        assert np.all(frames.sum(axis=(1, 2, 3)) > 0)


def test_blank_digit_gives_no_events():
    (rec,) = ns.simulate_chunk(np.zeros((1, 28, 28), np.uint8), np.arange(1), seed=0, split_id=0)
    assert rec["t"].size == 0
    assert not ev.events_to_frames(rec, 4, ns.SENSOR_SIZE).any()


def test_rejects_wrong_digit_shape():
    with pytest.raises(ValueError, match="28"):
        ns.simulate_chunk(np.zeros((2, 32, 32), np.uint8), np.arange(2), seed=0, split_id=0)


def test_prepare_store_and_load(tmp_path):
    train_images, test_images = _synthetic_digits(12, 2), _synthetic_digits(5, 3)
    arrays = {
        "train": (train_images, np.arange(12) % 10),
        "test": (test_images, np.arange(5)),
    }
    data_dir = str(tmp_path)
    ed.prepare_event_dataset("nmnist_synth", data_dir=data_dir, arrays=arrays, num_train=9, seed=1)
    train, labels = ed.get_event_source("nmnist_synth", "train", data_dir)
    test, test_labels = ed.get_event_source("nmnist_synth", "test", data_dir)
    assert len(train) == 9 and len(test) == 5
    np.testing.assert_array_equal(labels, np.arange(9))
    np.testing.assert_array_equal(test_labels, np.arange(5))
    want = list(ns.simulate(train_images[:9], seed=1, split_id=0))
    for i in (0, 8):
        for key in "txyp":
            np.testing.assert_array_equal(train[i][key], want[i][key])
    meta = ed.NmnistSynth(data_dir=data_dir).info.metadata["generator"]
    assert meta["seed"] == 1 and meta["contrast_threshold"] == ns.CONTRAST_THRESHOLD
    (to_frames,) = ed.event_transforms("nmnist_synth", num_steps=5, train=True)
    out = to_frames.map(test[2])
    assert out["image"].shape == (5, 34, 34, 2) and out["image"].sum() == test[2]["t"].size
    with pytest.raises(ValueError, match="unexpected"):
        ed.prepare_event_dataset("nmnist_synth", data_dir=str(tmp_path / "x"), frames=3)


def _prepare_in_subprocess(data_dir, seed):
    """Runs in a spawned process: prepares the tiny store and returns the first record."""
    import time

    simulate = ns.simulate

    def slow_simulate(*args, **kwargs):  # widen the race window: both start before either ends
        time.sleep(3)
        yield from simulate(*args, **kwargs)

    ns.simulate = slow_simulate
    train_images, test_images = _synthetic_digits(12, 2), _synthetic_digits(5, 3)
    arrays = {"train": (train_images, np.arange(12) % 10), "test": (test_images, np.arange(5))}
    ed.prepare_event_dataset("nmnist_synth", data_dir=data_dir, arrays=arrays, num_train=9,
                             seed=seed)
    train, _ = ed.get_event_source("nmnist_synth", "train", data_dir, auto_prepare=False)
    return len(train), train[0]["t"].tolist()


@pytest.mark.slow  # a child process
def test_concurrent_preparers_do_not_collide(tmp_path):
    # Two processes preparing the same dataset at once (parallel runs of the ablation study)
    # used to fail in the second one with "FileExistsError: Cannot rename ... incomplete";
    # with the prepare lock both return the one dataset the first of them wrote.
    import concurrent.futures
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        futures = [pool.submit(_prepare_in_subprocess, str(tmp_path), 1) for _ in range(2)]
        results = [f.result(timeout=300) for f in futures]
    assert results[0] == results[1] and results[0][0] == 9
    want = next(iter(ns.simulate(_synthetic_digits(12, 2)[:1], seed=1, split_id=0)))
    assert results[0][1] == want["t"].tolist()
    leftovers = [p.name for p in (tmp_path / "nmnist_synth").iterdir() if p.name != ed.VERSION]
    assert leftovers == []
