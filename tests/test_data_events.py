"""Events -> frames against references written here: both binnings, extent, resize, augmentation."""

import numpy as np
import pytest

from tks_jax.data import events as ev

# ---------------------------------------------------------------------------------------------
# Binning.


def _frames_reference(t, x, y, p, num_steps, height, width):
    """Independent loop: bin edges as exact fractions, half-open, last event -> last bin."""
    from fractions import Fraction

    out = np.zeros((num_steps, height, width, 2), np.float32)
    if len(t) == 0 or max(t) == min(t):
        return out
    t0, t1 = min(t), max(t)
    edges = [t0 + Fraction(k * (t1 - t0), num_steps) for k in range(num_steps + 1)]
    for ti, xi, yi, pi in zip(t, x, y, p, strict=True):
        if not (0 <= xi < width and 0 <= yi < height):
            continue
        k = num_steps - 1
        for b in range(num_steps):
            if edges[b] <= ti < edges[b + 1]:
                k = b
                break
        out[k, yi, xi, int(pi > 0)] += 1
    return out


def _events(t, x, y, p):
    return {"t": np.asarray(t), "x": np.asarray(x), "y": np.asarray(y), "p": np.asarray(p)}


def test_binning_edges_exactly():
    # Duration 30 over T = 3: inner edges at 10 and 20 belong to the later bin; 30 to the last.
    t = [0, 9, 10, 19, 20, 29, 30]
    x = [0, 1, 2, 3, 0, 1, 2]
    y = [0, 0, 1, 1, 2, 2, 3]
    p = [1, 0, 1, 1, 0, 1, 1]
    frames = ev.events_to_frames(_events(t, x, y, p), 3, (4, 4))
    assert frames.shape == (3, 4, 4, 2) and frames.dtype == np.float32
    np.testing.assert_array_equal(frames.sum(axis=(1, 2, 3)), [2, 2, 3])
    assert frames[1, 1, 2, 1] == 1  # t = 10 in bin 1
    assert frames[2, 2, 0, 0] == 1  # t = 20 in bin 2
    assert frames[2, 3, 2, 1] == 1  # last event in the last bin
    np.testing.assert_array_equal(frames, _frames_reference(t, x, y, p, 3, 4, 4))


def test_binning_matches_reference_on_random_events():
    rng = np.random.default_rng(0)
    n = 400
    t = rng.integers(1000, 1777, n)  # duration 776 not divisible by T = 7
    x, y = rng.integers(-1, 9, n), rng.integers(0, 6, n)  # some x outside the sensor
    p = rng.integers(0, 2, n)
    got = ev.events_to_frames(_events(t, x, y, p), 7, (5, 8))
    np.testing.assert_array_equal(got, _frames_reference(t, x, y, p, 7, 5, 8))
    inside = (x >= 0) & (x < 8) & (y < 5)
    assert got.sum() == inside.sum()


@pytest.mark.parametrize(
    "t",
    [[], [123], [5, 5, 5]],
    ids=["empty", "one_event", "single_timestamp"],
)
def test_binning_degenerate_recordings_are_zero(t):
    n = len(t)
    frames = ev.events_to_frames(_events(t, [1] * n, [1] * n, [1] * n), 4, (3, 3))
    assert frames.shape == (4, 3, 3, 2)
    assert not frames.any()


def test_binning_rejects_bad_num_steps():
    with pytest.raises(ValueError, match="num_steps"):
        ev.events_to_frames(_events([0, 1], [0, 0], [0, 0], [0, 1]), 0, (2, 2))


# ---------------------------------------------------------------------------------------------
# The authors' time bins (their tonic fork's slice_by_time_bins), per-recording extent.


def _authors_reference(t, x, y, p, num_steps, height, width):
    """The fork's formula per event: window = t[-1] // T, bin k = [t[0] + k w, t[0] + (k+1) w)."""
    out = np.zeros((num_steps, height, width, 2), np.float32)
    window = t[-1] // num_steps
    for ti, xi, yi, pi in zip(t, x, y, p, strict=True):
        for k in range(num_steps):
            if t[0] + k * window <= ti < t[0] + (k + 1) * window:
                out[k, yi, xi, int(pi > 0)] += 1
    return out


def test_authors_bins_hand_case():
    # t[-1] = 100, T = 4 -> window 25 from t[0] = 10: [10, 35) [35, 60) [60, 85) [85, 110).
    t = [10, 34, 35, 59, 84, 85, 100]
    np.testing.assert_array_equal(ev.authors_bins(t, 4), [0, 0, 1, 1, 2, 3, 3])
    # t[-1] = 99 -> window 24: [10, 34) ... [82, 106); 99 is in the last bin.
    np.testing.assert_array_equal(ev.authors_bins([10, 33, 34, 99], 4), [0, 0, 1, 3])
    # t[-1] < T: window 0, every bin empty.
    np.testing.assert_array_equal(ev.authors_bins([0, 1, 2], 4), [-1, -1, -1])


def test_authors_binning_of_a_recording_starting_at_5_s():
    # 300 ms of events starting at 5 s: window = 5.3e6 // 10 = 530 ms > the whole recording,
    # so everything lands in the first bin; the equal-duration default spreads it over 10.
    rng = np.random.default_rng(4)
    n = 500
    t = np.sort(rng.integers(5_000_000, 5_300_001, n))
    x, y, p = rng.integers(0, 6, n), rng.integers(0, 5, n), rng.integers(0, 2, n)
    events = _events(t, x, y, p)
    got = ev.events_to_frames(events, 10, (5, 6), binning="authors")
    np.testing.assert_array_equal(got, _authors_reference(t, x, y, p, 10, 5, 6))
    assert got[0].sum() == n and not got[1:].any()
    equal = ev.events_to_frames(events, 10, (5, 6))
    assert (equal.sum(axis=(1, 2, 3)) > 0).all()


def test_authors_binning_drops_the_tail_like_the_fork():
    # t[-1] = 1003, T = 4: window 250 from t[0] = 3 covers [3, 1003): the last event is dropped.
    rng = np.random.default_rng(5)
    t = np.sort(np.concatenate([[3, 1003], rng.integers(3, 1004, 300)]))
    x, y, p = rng.integers(0, 4, t.size), rng.integers(0, 4, t.size), rng.integers(0, 2, t.size)
    got = ev.events_to_frames(_events(t, x, y, p), 4, (4, 4), binning="authors")
    np.testing.assert_array_equal(got, _authors_reference(t, x, y, p, 4, 4, 4))
    assert got.sum() == np.sum(t < 1003)
    with pytest.raises(ValueError, match="binning"):
        ev.events_to_frames(_events(t, x, y, p), 4, (4, 4), binning="fork")


def test_recording_extent_matches_the_fork():
    # The fork shifts x, y to start at 0, then frames are (max y + 1, max x + 1) x polarities.
    x = np.array([10, 14, 12, 11])
    y = np.array([3, 5, 9, 3])
    p = np.array([1, 0, 1, 1])
    t = np.array([0, 10, 20, 30])
    frames = ev.recording_to_frames(_events(t, x, y, p), 2, None)
    assert frames.shape == (2, 9 - 3 + 1, 14 - 10 + 1, 2)
    want = np.zeros((2, 7, 5, 2), np.float32)
    for ti, xi, yi, pi in zip(t, x - 10, y - 3, p, strict=True):
        want[min(ti * 2 // 30, 1), yi, xi, pi] += 1
    np.testing.assert_array_equal(frames, want)


def test_single_polarity_recording_fills_both_channels():
    # One polarity: the fork counts all events in one channel; we repeat it into both, as the
    # authors' dvs_channel_check_expend does for one-channel frames.
    events = _events([0, 5, 10], [0, 2, 1], [1, 0, 0], [1, 1, 1])
    frames = ev.recording_to_frames(events, 1, None)
    assert frames.shape == (1, 2, 3, 2)
    want = np.array([[0, 0, 1], [1, 0, 0]], np.float32) + np.array([[0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(frames[0, :, :, 0], want)
    np.testing.assert_array_equal(frames[0, :, :, 1], want)


# ---------------------------------------------------------------------------------------------
# Resize (PyTorch bilinear, align_corners=True) and augmentation.


def _align_corners_reference(img, out_h, out_w):
    """Per-pixel loop of F.interpolate(mode='bilinear', align_corners=True), [H, W]."""
    in_h, in_w = img.shape
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        sy = i * (in_h - 1) / (out_h - 1) if out_h > 1 else 0.0
        y0 = int(np.floor(sy))
        y1, wy = min(y0 + 1, in_h - 1), sy - y0
        for j in range(out_w):
            sx = j * (in_w - 1) / (out_w - 1) if out_w > 1 else 0.0
            x0 = int(np.floor(sx))
            x1, wx = min(x0 + 1, in_w - 1), sx - x0
            out[i, j] = (
                (1 - wy) * (1 - wx) * img[y0, x0]
                + (1 - wy) * wx * img[y0, x1]
                + wy * (1 - wx) * img[y1, x0]
                + wy * wx * img[y1, x1]
            )
    return out


@pytest.mark.parametrize(
    "in_hw,out_hw",
    [
        ((16, 12), (6, 6)),
        ((5, 7), (9, 4)),
        ((6, 6), (6, 6)),
        ((128, 128), (48, 48)),
        ((3, 4), (1, 2)),
    ],
)
def test_resize_matches_align_corners_true_definition(in_hw, out_hw):
    rng = np.random.default_rng(1)
    frames = rng.random((2, *in_hw, 2)).astype(np.float32)
    got = ev.resize_bilinear(frames, out_hw)
    assert got.shape == (2, *out_hw, 2) and got.dtype == np.float32
    for t in range(2):
        for c in range(2):
            want = _align_corners_reference(frames[t, :, :, c], *out_hw)
            np.testing.assert_allclose(got[t, :, :, c], want, rtol=1e-5, atol=1e-6)


def test_resize_align_corners_hand_cases():
    # Corners coincide: 4 -> 2 keeps the first and last pixel of each axis.
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    np.testing.assert_allclose(ev.resize_bilinear(img, (2, 2))[0, :, :, 0], [[0, 3], [12, 15]])
    # 2 -> 3 along a row inserts the midpoint.
    row = np.array([[[[2.0], [6.0]]]], np.float32)
    np.testing.assert_allclose(ev.resize_bilinear(row, (1, 3))[0, 0, :, 0], [2.0, 4.0, 6.0])


def test_augmentation_same_transform_on_all_steps_and_deterministic():
    rng = np.random.default_rng(3)
    base = rng.random((1, 48, 48, 2)).astype(np.float32)
    frames = np.repeat(base, 4, axis=0) * np.arange(1, 5, dtype=np.float32)[:, None, None, None]
    a = ev.augment_dvs(frames, np.random.default_rng(7))
    b = ev.augment_dvs(frames, np.random.default_rng(7))
    assert a.shape == frames.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    # Step t is (t + 1) * step 0 before augmentation; a shared spatial transform keeps that.
    for t in range(4):
        np.testing.assert_allclose(a[t], (t + 1) * a[0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(a, frames)


def test_random_crop_is_a_shift_with_zero_fill():
    frames = np.arange(2 * 6 * 6 * 1, dtype=np.float32).reshape(2, 6, 6, 1) + 1
    out = ev.random_crop(frames, 2, np.random.default_rng(0))
    # Find the shift: every nonzero output pixel equals the input pixel shifted by (dy, dx).
    ys, xs = np.nonzero(out[0, :, :, 0])
    value = out[0, ys[0], xs[0], 0]
    sy, sx = np.argwhere(frames[0, :, :, 0] == value)[0]
    dy, dx = sy - ys[0], sx - xs[0]
    assert abs(dy) <= 2 and abs(dx) <= 2
    shifted = np.zeros_like(frames)
    for i in range(6):
        for j in range(6):
            if 0 <= i + dy < 6 and 0 <= j + dx < 6:
                shifted[:, i, j] = frames[:, i + dy, j + dx]
    np.testing.assert_array_equal(out, shifted)


def test_rotation_by_90_degrees_is_exact():
    img = np.zeros((1, 5, 5, 1), np.float32)
    img[0, 0, 2, 0] = 1.0  # top centre
    out = ev.rotate(img, 90.0)
    assert out[0, 2, 0, 0] == pytest.approx(1.0) or out[0, 2, 4, 0] == pytest.approx(1.0)
    assert out.sum() == pytest.approx(1.0)
