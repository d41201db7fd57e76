"""Event readers against files written here in the real formats; binning, resize, augmentation."""

import numpy as np
import pytest

from tks_jax.data import events as ev

# ---------------------------------------------------------------------------------------------
# Writers of the original binary formats, written from the format descriptions.


def _aedat2_bytes(sensor_x, sensor_y, raw_pol, ts, header=(b"#!AER-DAT2.0", b"# made in a test")):
    addr = (np.asarray(sensor_y, np.uint32) << 8) | (np.asarray(sensor_x, np.uint32) << 1)
    addr |= np.asarray(raw_pol, np.uint32)
    body = b"".join(
        int(a).to_bytes(4, "big") + int(t).to_bytes(4, "big") for a, t in zip(addr, ts, strict=True)
    )
    return b"".join(line + b"\r\n" for line in header) + body


def _atis_bytes(x, y, p, ts):
    out = bytearray()
    for xi, yi, pi, ti in zip(x, y, p, ts, strict=True):
        word = (int(xi) << 32) | (int(yi) << 24) | (int(pi) << 23) | int(ti)
        out += word.to_bytes(5, "big")
    return bytes(out)


def test_aedat2_reader_decodes_known_events(tmp_path):
    sensor_x = [0, 127, 5, 64]
    sensor_y = [0, 3, 127, 10]
    raw_pol = [0, 1, 1, 0]
    ts = [100, 200, 200, 4_000_000_000]
    path = tmp_path / "cifar10_cat_0.aedat"
    path.write_bytes(_aedat2_bytes(sensor_x, sensor_y, raw_pol, ts))
    e = ev.read_aedat2(path)
    # Authors' mapping: x = 127 - sensor_y, y = 127 - sensor_x, p = 1 - raw bit.
    np.testing.assert_array_equal(e["x"], [127, 124, 0, 117])
    np.testing.assert_array_equal(e["y"], [127, 0, 122, 63])
    np.testing.assert_array_equal(e["p"], [1, 0, 0, 1])
    np.testing.assert_array_equal(e["t"], ts)
    assert e["t"].dtype == np.int64


def test_aedat2_unwraps_32bit_timestamps():
    data = _aedat2_bytes([1, 1, 1], [1, 1, 1], [0, 0, 0], [2**32 - 10, 2**32 - 1, 5])
    e = ev.parse_aedat2(data)
    np.testing.assert_array_equal(e["t"], [2**32 - 10, 2**32 - 1, 2**32 + 5])


def test_aedat2_header_only_is_empty():
    e = ev.parse_aedat2(_aedat2_bytes([], [], [], []))
    assert all(v.size == 0 for v in e.values())


def test_aedat2_truncated_names_file_and_offset(tmp_path):
    good = _aedat2_bytes([1, 2], [3, 4], [0, 1], [10, 20])
    header_len = len(b"#!AER-DAT2.0\r\n# made in a test\r\n")
    path = tmp_path / "broken.aedat"
    path.write_bytes(good[:-3])  # the second record loses 3 of its 8 bytes
    with pytest.raises(ev.EventFileError) as info:
        ev.read_aedat2(path)
    assert str(path) in str(info.value)
    assert f"byte offset {header_len + 8}" in str(info.value)
    assert info.value.offset == header_len + 8


def test_aedat_other_version_and_unterminated_header_rejected():
    with pytest.raises(ev.EventFileError, match="version"):
        ev.parse_aedat2(b"#!AER-DAT1.0\r\n" + bytes(6), "old.aedat")
    with pytest.raises(ev.EventFileError, match="byte offset 0"):
        ev.parse_aedat2(b"#!AER-DAT2.0 no newline", "cut.aedat")


def test_ncaltech_reader_decodes_known_events(tmp_path):
    x = [0, 239, 17, 100]
    y = [0, 179, 90, 5]
    p = [1, 0, 1, 0]
    ts = [0, 1, 2**23 - 1, 300_000]
    path = tmp_path / "image_0001.bin"
    path.write_bytes(_atis_bytes(x, y, p, ts))
    e = ev.read_ncaltech_bin(path)
    np.testing.assert_array_equal(e["x"], x)
    np.testing.assert_array_equal(e["y"], y)
    np.testing.assert_array_equal(e["p"], p)
    np.testing.assert_array_equal(e["t"], ts)


def test_ncaltech_overflow_marker_shifts_later_timestamps():
    # Marker (y == 240) between the 1st and 2nd events: +2**13 us from there on.
    data = _atis_bytes([1, 0, 2, 3], [1, 240, 2, 3], [0, 0, 1, 1], [50, 0, 10, 20])
    e = ev.parse_ncaltech_bin(data)
    np.testing.assert_array_equal(e["t"], [50, 10 + 2**13, 20 + 2**13])
    np.testing.assert_array_equal(e["x"], [1, 2, 3])


def test_ncaltech_truncated_names_file_and_offset(tmp_path):
    path = tmp_path / "image_0007.bin"
    path.write_bytes(_atis_bytes([1, 2, 3], [1, 2, 3], [0, 1, 0], [1, 2, 3])[:-2])
    with pytest.raises(ev.EventFileError) as info:
        ev.read_ncaltech_bin(path)
    assert str(path) in str(info.value) and "byte offset 10" in str(info.value)


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
# Resize (PyTorch bilinear, align_corners=False) and augmentation.


def _torch_bilinear_reference(img, out_h, out_w):
    """Per-pixel loop of PyTorch's align_corners=False bilinear (no antialias), [H, W]."""
    in_h, in_w = img.shape
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        sy = max((i + 0.5) * in_h / out_h - 0.5, 0.0)
        y0 = min(int(np.floor(sy)), in_h - 1)
        y1, wy = min(y0 + 1, in_h - 1), sy - y0
        for j in range(out_w):
            sx = max((j + 0.5) * in_w / out_w - 0.5, 0.0)
            x0 = min(int(np.floor(sx)), in_w - 1)
            x1, wx = min(x0 + 1, in_w - 1), sx - x0
            out[i, j] = (
                (1 - wy) * (1 - wx) * img[y0, x0]
                + (1 - wy) * wx * img[y0, x1]
                + wy * (1 - wx) * img[y1, x0]
                + wy * wx * img[y1, x1]
            )
    return out


@pytest.mark.parametrize("in_hw,out_hw", [((16, 12), (6, 6)), ((5, 7), (9, 4)), ((6, 6), (6, 6))])
def test_resize_matches_pytorch_formula(in_hw, out_hw):
    rng = np.random.default_rng(1)
    frames = rng.random((2, *in_hw, 2)).astype(np.float32)
    got = ev.resize_bilinear(frames, out_hw)
    assert got.shape == (2, *out_hw, 2) and got.dtype == np.float32
    for t in range(2):
        for c in range(2):
            want = _torch_bilinear_reference(frames[t, :, :, c], *out_hw)
            np.testing.assert_allclose(got[t, :, :, c], want, rtol=1e-5, atol=1e-6)


def test_resize_by_half_averages_2x2_blocks():
    # align_corners=False at scale 2 samples half-way between pixels: a 2x2 mean (hand check).
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    got = ev.resize_bilinear(img, (2, 2))[0, :, :, 0]
    np.testing.assert_allclose(got, [[2.5, 4.5], [10.5, 12.5]])


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
