"""Strict event-file readers against files written here in the real formats, and bad files."""

import numpy as np
import pytest

from tks_jax.data import event_formats as ef

# ---------------------------------------------------------------------------------------------
# Writers of the original binary formats, written from the format descriptions.

HEADER = (b"#!AER-DAT2.0", b"# made in a test")


def aedat2_bytes(sensor_x, sensor_y, raw_pol, ts, header=HEADER):
    addr = (np.asarray(sensor_y, np.uint32) << 8) | (np.asarray(sensor_x, np.uint32) << 1)
    addr |= np.asarray(raw_pol, np.uint32)
    body = b"".join(
        int(a).to_bytes(4, "big") + int(t).to_bytes(4, "big") for a, t in zip(addr, ts, strict=True)
    )
    return b"".join(line + b"\r\n" for line in header) + body


def atis_bytes(x, y, p, ts):
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
    path.write_bytes(aedat2_bytes(sensor_x, sensor_y, raw_pol, ts))
    e = ef.read_aedat2(path)
    # Authors' mapping: x = 127 - sensor_y, y = 127 - sensor_x, p = 1 - raw bit.
    np.testing.assert_array_equal(e["x"], [127, 124, 0, 117])
    np.testing.assert_array_equal(e["y"], [127, 0, 122, 63])
    np.testing.assert_array_equal(e["p"], [1, 0, 0, 1])
    np.testing.assert_array_equal(e["t"], ts)
    assert e["t"].dtype == np.int64


def test_aedat2_unwraps_32bit_timestamps():
    data = aedat2_bytes([1, 1, 1], [1, 1, 1], [0, 0, 0], [2**32 - 10, 2**32 - 1, 5])
    e = ef.parse_aedat2(data)
    np.testing.assert_array_equal(e["t"], [2**32 - 10, 2**32 - 1, 2**32 + 5])


def test_aedat2_bit15_is_decoded_like_the_authors_reader():
    # Bit 15 is outside the x / y / polarity fields and unchecked (as the authors' reader).
    data = aedat2_bytes([3], [4], [1], [7])
    header_len = len(b"".join(line + b"\r\n" for line in HEADER))
    data = data[:header_len] + (0x8000 | (4 << 8) | (3 << 1) | 1).to_bytes(4, "big") + data[-4:]
    e = ef.parse_aedat2(data)
    assert (e["x"][0], e["y"][0], e["p"][0]) == (127 - 4, 127 - 3, 0)


def test_aedat2_truncated_names_file_and_offset(tmp_path):
    good = aedat2_bytes([1, 2], [3, 4], [0, 1], [10, 20])
    header_len = len(b"#!AER-DAT2.0\r\n# made in a test\r\n")
    path = tmp_path / "broken.aedat"
    path.write_bytes(good[:-3])  # the second record loses 3 of its 8 bytes
    with pytest.raises(ef.EventFileError) as info:
        ef.read_aedat2(path)
    assert str(path) in str(info.value)
    assert f"byte offset {header_len + 8}" in str(info.value)
    assert info.value.offset == header_len + 8
    assert "truncated or corrupt" in str(info.value)


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty file"),
        (aedat2_bytes([], [], [], []), "header only"),
        (b"\x00\x01" * 8, "no '#!AER-DAT2.0' first line"),
        (b"# jAER but no version line\r\n" + bytes(8), "no '#!AER-DAT2.0' first line"),
        (b"#!AER-DAT2.0 no newline", "unterminated AEDAT header line at byte offset 0"),
        # Address bits 16-31 set: not a DVS128 coordinate.
        (HEADER[0] + b"\r\n" + (1 << 20).to_bytes(4, "big") + bytes(4), "outside the 128 x 128"),
        # 50 us after 100 us is a backwards step, far from a 32-bit wrap.
        (aedat2_bytes([1, 1], [1, 1], [0, 0], [100, 50]), "not monotonic"),
    ],
    ids=["empty", "header_only", "binary", "no_version", "unterminated", "address", "backwards"],
)
def test_aedat2_bad_files_are_rejected_with_a_reason(data, reason):
    with pytest.raises(ef.EventFileError) as info:
        ef.parse_aedat2(data, "bad.aedat")
    assert reason in info.value.reason and str(info.value).startswith("bad.aedat: ")


@pytest.mark.parametrize(
    "line,found", [(b"#!AER-DAT3.1", "AEDAT 3.1"), (b"#!AER-DAT4.0", "AEDAT 4.0 (.aedat4)")]
)
def test_aedat_other_versions_are_a_format_mismatch(line, found):
    with pytest.raises(ef.EventFileError) as info:
        ef.parse_aedat2(line + b"\r\n" + bytes(16), "new.aedat")
    message = str(info.value)
    assert f"found an {found} file" in message
    assert "CIFAR10-DVS's original recordings are AEDAT 2.0" in message
    assert "truncated" not in message and "re-download" not in message


def test_ncaltech_reader_decodes_known_events(tmp_path):
    x = [0, 239, 17, 100]
    y = [0, 179, 90, 5]
    p = [1, 0, 1, 0]
    ts = [0, 1, 2**23 - 1, 2**23 - 1]
    path = tmp_path / "image_0001.bin"
    path.write_bytes(atis_bytes(x, y, p, ts))
    e = ef.read_ncaltech_bin(path)
    np.testing.assert_array_equal(e["x"], x)
    np.testing.assert_array_equal(e["y"], y)
    np.testing.assert_array_equal(e["p"], p)
    np.testing.assert_array_equal(e["t"], ts)


def test_ncaltech_overflow_marker_shifts_later_timestamps():
    # Marker (y == 240) between the 1st and 2nd events: +2**13 us from there on.
    data = atis_bytes([1, 0, 2, 3], [1, 240, 2, 3], [0, 0, 1, 1], [50, 0, 10, 20])
    e = ef.parse_ncaltech_bin(data)
    np.testing.assert_array_equal(e["t"], [50, 10 + 2**13, 20 + 2**13])
    np.testing.assert_array_equal(e["x"], [1, 2, 3])


def test_ncaltech_truncated_names_file_and_offset(tmp_path):
    path = tmp_path / "image_0007.bin"
    path.write_bytes(atis_bytes([1, 2, 3], [1, 2, 3], [0, 1, 0], [1, 2, 3])[:-2])
    with pytest.raises(ef.EventFileError) as info:
        ef.read_ncaltech_bin(path)
    assert str(path) in str(info.value) and "byte offset 10" in str(info.value)


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty file"),
        (atis_bytes([0, 0], [240, 240], [0, 0], [0, 0]), "no events (2 timestamp-overflow"),
        (atis_bytes([1, 240], [1, 5], [0, 1], [1, 2]), "x=240, y=5"),
        (atis_bytes([1, 3], [1, 180], [0, 1], [1, 2]), "x=3, y=180"),
        (atis_bytes([1, 2, 3], [1, 1, 1], [0, 1, 0], [10, 30, 20]), "30 -> 20 us"),
    ],
    ids=["empty", "markers_only", "x_outside", "y_outside", "backwards"],
)
def test_ncaltech_bad_files_are_rejected_with_a_reason(data, reason):
    with pytest.raises(ef.EventFileError) as info:
        ef.parse_ncaltech_bin(data, "bad.bin")
    assert reason in info.value.reason


def test_random_bytes_are_not_decoded_as_events():
    rng = np.random.default_rng(0)
    for seed_bytes in range(5):
        junk = rng.integers(0, 256, 8 * 40 + 5 * 8 * seed_bytes, dtype=np.uint8).tobytes()
        with pytest.raises(ef.EventFileError):
            ef.parse_ncaltech_bin(junk)
        with pytest.raises(ef.EventFileError):
            ef.parse_aedat2(HEADER[0] + b"\r\n" + junk)
