"""Event-camera recording files: strict binary readers (NumPy, no JAX).

An *event record* is a dict of 1-D arrays of equal length ``N`` (one entry per event):

- ``t``: timestamps in microseconds (int64 after reading a file),
- ``x``: column (0 = left), ``y``: row (0 = top),
- ``p``: polarity, 1 = ON (brightness increase), 0 = OFF.

Formats (layouts checked against the datasets' own readers, re-implemented here):

- DVS-CIFAR10 (Li et al. 2017) ships AEDAT 2.0 files written by jAER for a DVS128 sensor: ASCII
  header lines starting with ``#`` (the first one ``#!AER-DAT2.0``), then big-endian records of
  ``(uint32 address, uint32 timestamp [us])``. Address bits: ``addr & 1`` is the polarity bit (0
  = ON, as in jAER's DVS128 extractor and the dataset's ``dat2mat.m``), ``(addr >> 1) & 0x7F``
  the sensor x and ``(addr >> 8) & 0x7F`` the sensor y (jAER's y points up); bit 15 is not part
  of them and not checked (the authors' reader ignores it too). We map them to image coordinates
  exactly like the reader the TKS authors trained with (BrainCog's tonic fork, also
  spikingjelly's ``CIFAR10DVS``): ``x = 127 - sensor_y``, ``y = 127 - sensor_x``, ``p = 1 -
  (addr & 1)``. This is a transpose of jAER's display orientation; it only matters for which
  axis the flip augmentation mirrors, and we keep it so our frames match the ones behind the
  paper's numbers. 32-bit timestamp wrap-arounds (a backwards jump larger than 2**31 us) are
  unwrapped.
- N-Caltech101 (Orchard et al. 2015), ATIS sensor: 5 bytes (40 bits) per event, big-endian
  bit order: bits 39-32 x, bits 31-24 y, bit 23 polarity (1 = ON), bits 22-0 timestamp [us].
  An event with ``y == 240`` is a timestamp-overflow marker, not an event: every later
  timestamp gets ``+2**13`` (the increment used by the dataset author's reference reader,
  gorchard/event-Python, and the authors' tonic fork). Events lie in ``x < 240``, ``y < 180``
  (``NCALTECH101_SENSOR_SIZE``, as spikingjelly).

The readers are strict: a recording that cannot be a real one raises :class:`EventFileError`
naming the file and the reason (``reason`` attribute, one line), so that ``prepare`` can list
every bad file at once:

- empty file (0 bytes); AEDAT header only, or an ATIS file of overflow markers only (no events);
- no ``#!AER-DAT2.0`` first line; another AEDAT version (3.1, 4.0 / ``.aedat4``: a format
  mismatch, the message says which format was found);
- coordinates outside the sensor (ATIS ``x >= 240`` or ``y >= 180``; AEDAT addresses with bits
  16-31 set, which the DVS128 layout never uses);
- timestamps that go backwards (after the 32-bit wrap rule / the overflow markers);
- a payload that is not a whole number of records (truncated; the byte offset is named).
"""

from __future__ import annotations

import os

import numpy as np

Events = dict[str, np.ndarray]

# DVS128 (DVS-CIFAR10) geometry and AEDAT 2.0 address layout.
DVS128_SENSOR_SIZE = (128, 128)  # (H, W)
AEDAT2_MAGIC = b"#!AER-DAT2.0"
_AEDAT_MAGIC_PREFIX = b"#!AER-DAT"
_AEDAT2_RECORD_BYTES = 8
_DVS128_POLARITY_MASK = 0x1
_DVS128_X_SHIFT, _DVS128_X_MASK = 1, 0x7F
_DVS128_Y_SHIFT, _DVS128_Y_MASK = 8, 0x7F
_DVS128_UNUSED_ADDRESS_BITS = 0xFFFF0000  # bits 16-31: outside the DVS128 address layout
_UINT32_WRAP = 1 << 32

# ATIS (N-Caltech101) geometry and 40-bit record layout.
NCALTECH101_SENSOR_SIZE = (180, 240)  # (H, W)
_ATIS_RECORD_BYTES = 5
_ATIS_OVERFLOW_Y = 240
_ATIS_OVERFLOW_INCREMENT_US = 1 << 13  # as in the dataset author's reference reader

_CORRUPT_HINT = (
    "The file is truncated or corrupt; re-download or re-extract it (or remove it from the "
    "dataset folder)."
)
_FORMAT_HINT = (
    "CIFAR10-DVS's original recordings are AEDAT 2.0 (jAER, DVS128, first line "
    "'#!AER-DAT2.0'); use those original .aedat files, not a converted copy."
)


class EventFileError(ValueError):
    """A recording file that cannot be used (see the module docstring for the checks).

    Attributes:
      path: the file.
      reason: what is wrong, one line (listed by ``prepare``).
      offset: byte offset in the file where the problem starts, or ``None``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        reason: str,
        *,
        offset: int | None = None,
        hint: str = _CORRUPT_HINT,
    ):
        self.path = os.fspath(path)
        self.offset = None if offset is None else int(offset)
        self.reason = reason if offset is None else f"{reason} at byte offset {self.offset}"
        super().__init__(f"{self.path}: {self.reason}. {hint}")


def empty_events() -> Events:
    """Returns an event record with zero events (canonical dtypes)."""
    return {
        "t": np.zeros((0,), np.int64),
        "x": np.zeros((0,), np.uint16),
        "y": np.zeros((0,), np.uint16),
        "p": np.zeros((0,), np.uint8),
    }


def _unwrap_uint32(ts: np.ndarray) -> np.ndarray:
    """Unwraps 32-bit timestamp counters: a backwards jump > 2**31 counts as one wrap."""
    t = ts.astype(np.int64)
    if t.size < 2:
        return t
    wraps = np.concatenate([[0], np.cumsum(np.diff(t) < -(_UINT32_WRAP // 2))])
    return t + wraps * _UINT32_WRAP


def _check_monotonic(t: np.ndarray, path: str | os.PathLike, rule: str) -> None:
    back = np.flatnonzero(np.diff(t) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise EventFileError(
            path,
            f"timestamps not monotonic beyond {rule} ({back.size} backwards steps, the first "
            f"at event {i}: {int(t[i - 1])} -> {int(t[i])} us)",
        )


def _aedat_version_error(path: str | os.PathLike, line: bytes) -> EventFileError:
    version = line[len(_AEDAT_MAGIC_PREFIX) :].decode("ascii", "replace").strip()
    name = "AEDAT 4.0 (.aedat4)" if version.startswith("4") else f"AEDAT {version}"
    return EventFileError(
        path,
        f"found an {name} file (first line {line.decode('ascii', 'replace')!r}); this reader "
        "reads AEDAT 2.0 only",
        hint=_FORMAT_HINT,
    )


def parse_aedat2(data: bytes, path: str | os.PathLike = "<bytes>") -> Events:
    """Parses the bytes of a DVS128 AEDAT 2.0 file (DVS-CIFAR10), see the module docstring.

    Args:
      data: the whole file content.
      path: file name, used in error messages only.

    Returns:
      Event record with ``N >= 1`` events: ``t`` int64 [N] (us, non-decreasing), ``x``/``y``
      uint16 [N] in ``[0, 128)``, ``p`` uint8 [N].

    Raises:
      EventFileError: empty, no ``#!AER-DAT2.0`` first line, another AEDAT version, an
        unterminated header line, header only, a truncated record, address bits outside the
        DVS128 layout, or timestamps that go backwards (not a 32-bit wrap).
    """
    if not data:
        raise EventFileError(path, "empty file (0 bytes)")
    first_line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not first_line.startswith(_AEDAT_MAGIC_PREFIX):
        raise EventFileError(
            path,
            f"no '#!AER-DAT2.0' first line (starts with {data[:16]!r}): not an AEDAT 2.0 recording",
            hint=_FORMAT_HINT,
        )
    if not first_line.startswith(AEDAT2_MAGIC):
        raise _aedat_version_error(path, first_line)
    pos = 0
    while pos < len(data) and data[pos] == ord("#"):
        end = data.find(b"\n", pos)
        if end < 0:
            raise EventFileError(path, "unterminated AEDAT header line", offset=pos)
        pos = end + 1
    payload = len(data) - pos
    if payload == 0:
        raise EventFileError(path, "header only: no events")
    n = payload // _AEDAT2_RECORD_BYTES
    if payload % _AEDAT2_RECORD_BYTES:
        raise EventFileError(
            path,
            f"incomplete AEDAT record ({payload % _AEDAT2_RECORD_BYTES} trailing bytes of an "
            f"{_AEDAT2_RECORD_BYTES}-byte record)",
            offset=pos + n * _AEDAT2_RECORD_BYTES,
        )
    records = np.frombuffer(data, dtype=">u4", count=2 * n, offset=pos).reshape(n, 2)
    addr = records[:, 0].astype(np.uint32)
    outside = np.flatnonzero(addr & _DVS128_UNUSED_ADDRESS_BITS)
    if outside.size:
        i = int(outside[0])
        raise EventFileError(
            path,
            f"coordinates outside the 128 x 128 DVS128 sensor ({outside.size} of {n} addresses "
            f"use bits 16-31, the first event {i}: address 0x{int(addr[i]):08x}); not a DVS128 "
            "recording, or corrupt",
        )
    t = _unwrap_uint32(records[:, 1])
    _check_monotonic(t, path, "the 32-bit wrap rule (a backwards jump > 2**31 us)")
    sensor_x = (addr >> _DVS128_X_SHIFT) & _DVS128_X_MASK
    sensor_y = (addr >> _DVS128_Y_SHIFT) & _DVS128_Y_MASK
    width_1, height_1 = DVS128_SENSOR_SIZE[1] - 1, DVS128_SENSOR_SIZE[0] - 1
    return {
        "t": t,
        "x": (width_1 - sensor_y).astype(np.uint16),
        "y": (height_1 - sensor_x).astype(np.uint16),
        "p": (1 - (addr & _DVS128_POLARITY_MASK)).astype(np.uint8),
    }


def read_aedat2(path: str | os.PathLike) -> Events:
    """Reads a DVS-CIFAR10 AEDAT 2.0 file; see :func:`parse_aedat2`."""
    with open(path, "rb") as f:
        return parse_aedat2(f.read(), path)


def parse_ncaltech_bin(data: bytes, path: str | os.PathLike = "<bytes>") -> Events:
    """Parses the bytes of an N-Caltech101 (ATIS, 40 bits per event) file.

    Args:
      data: the whole file content.
      path: file name, used in error messages only.

    Returns:
      Event record with ``N >= 1`` events: ``t`` int64 [N] (us, overflow markers applied,
      non-decreasing), ``x``/``y`` uint16 [N] inside ``NCALTECH101_SENSOR_SIZE``, ``p`` uint8
      [N] (1 = ON). Overflow markers (``y == 240``) are removed.

    Raises:
      EventFileError: empty, a length that is not a multiple of 5 bytes, overflow markers
        only, coordinates outside the sensor, or timestamps that go backwards.
    """
    if not data:
        raise EventFileError(path, "empty file (0 bytes)")
    n = len(data) // _ATIS_RECORD_BYTES
    if len(data) % _ATIS_RECORD_BYTES:
        raise EventFileError(
            path,
            f"incomplete event ({len(data) % _ATIS_RECORD_BYTES} trailing bytes of a "
            f"{_ATIS_RECORD_BYTES}-byte record)",
            offset=n * _ATIS_RECORD_BYTES,
        )
    raw = np.frombuffer(data, dtype=np.uint8, count=n * _ATIS_RECORD_BYTES).reshape(n, 5)
    raw = raw.astype(np.int64)
    x, y = raw[:, 0], raw[:, 1]
    p = raw[:, 2] >> 7
    t = ((raw[:, 2] & 0x7F) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    overflow = y == _ATIS_OVERFLOW_Y
    # Each marker shifts the timestamps of every record from itself onwards.
    t = t + np.cumsum(overflow) * _ATIS_OVERFLOW_INCREMENT_US
    keep = ~overflow
    if not keep.any():
        raise EventFileError(path, f"no events ({n} timestamp-overflow markers only)")
    t, x, y, p = t[keep], x[keep], y[keep], p[keep]
    height, width = NCALTECH101_SENSOR_SIZE
    outside = np.flatnonzero((x >= width) | (y >= height))
    if outside.size:
        i = int(outside[0])
        raise EventFileError(
            path,
            f"coordinates outside the {width} x {height} sensor ({outside.size} of {t.size} "
            f"events, the first event {i}: x={int(x[i])}, y={int(y[i])})",
        )
    _check_monotonic(t, path, "the overflow-marker rule")
    return {
        "t": t,
        "x": x.astype(np.uint16),
        "y": y.astype(np.uint16),
        "p": p.astype(np.uint8),
    }


def read_ncaltech_bin(path: str | os.PathLike) -> Events:
    """Reads an N-Caltech101 ``.bin`` file; see :func:`parse_ncaltech_bin`."""
    with open(path, "rb") as f:
        return parse_ncaltech_bin(f.read(), path)
