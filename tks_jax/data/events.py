"""Event-camera recordings: binary readers, events -> frames, resize and augmentation (NumPy).

Everything here is host-side NumPy, used inside grain transforms; nothing needs JAX.

An *event record* is a dict of 1-D arrays of equal length ``N`` (one entry per event):

- ``t``: timestamps in microseconds (any integer dtype; int64 after reading a file),
- ``x``: column (0 = left), ``y``: row (0 = top),
- ``p``: polarity, 1 = ON (brightness increase), 0 = OFF.

Binary formats (layouts checked against the datasets' own readers, re-implemented here):

- DVS-CIFAR10 (Li et al. 2017) ships AEDAT 2.0 files written by jAER for a DVS128 sensor:
  ASCII header lines starting with ``#`` (the first one ``#!AER-DAT2.0``), then big-endian
  records of ``(uint32 address, uint32 timestamp [us])``. Address bits: ``addr & 1`` is the
  polarity bit (0 = ON, as in jAER's DVS128 extractor and the dataset's ``dat2mat.m``),
  ``(addr >> 1) & 0x7F`` the sensor x and ``(addr >> 8) & 0x7F`` the sensor y (jAER's y points
  up). We map them to image coordinates exactly like the reader the TKS authors trained with
  (BrainCog's tonic fork, also spikingjelly's ``CIFAR10DVS``):
  ``x = 127 - sensor_y``, ``y = 127 - sensor_x``, ``p = 1 - (addr & 1)``. This is a transpose
  of jAER's display orientation; it only matters for which axis the flip augmentation mirrors,
  and we keep it so our frames match the ones behind the paper's numbers. 32-bit timestamp
  wrap-arounds (a backwards jump larger than 2**31 us) are unwrapped.
- N-Caltech101 (Orchard et al. 2015), ATIS sensor: 5 bytes (40 bits) per event, big-endian
  bit order: bits 39-32 x, bits 31-24 y, bit 23 polarity (1 = ON), bits 22-0 timestamp [us].
  An event with ``y == 240`` is a timestamp-overflow marker, not an event: every later
  timestamp gets ``+2**13`` (the increment used by the dataset author's reference reader,
  gorchard/event-Python; recordings last ~300 ms, far below the 2**23 us range, so the marker
  does not occur in the released files). Sample sizes vary (up to ~240 x 180); we use a fixed
  sensor of ``H, W = 180, 240`` (as spikingjelly) and drop any event outside it.

A file whose payload is not a whole number of records (truncated or corrupt) raises
:class:`EventFileError` naming the file and the byte offset of the first incomplete record.

Events -> frames (spec section 8): the recording is cut into ``T`` bins of equal duration over
``[t_first, t_last]`` (``t_first = min t``, ``t_last = max t``). Event ``t`` goes to bin
``floor((t - t_first) * T / (t_last - t_first))`` computed in exact integer arithmetic, so
bins are half-open ``[edge_k, edge_{k+1})``: an event exactly on an inner edge belongs to the
later bin, and the last event (``t == t_last``, index ``T``) is put into the last bin.
Counts per (bin, row, column, polarity) give float32 frames ``[T, H, W, 2]`` (channel 0 = OFF,
channel 1 = ON). A recording with zero events, or whose events all share one timestamp (zero
duration, so no bins can be defined), gives all-zero frames.

Resize: bilinear with PyTorch's ``F.interpolate(mode='bilinear', align_corners=False)``
semantics (half-pixel centres, source coordinate clamped at 0, no antialiasing), which is what
the authors apply to the count frames; done separably with two small interpolation matrices.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping

import numpy as np
import scipy.ndimage

Events = dict[str, np.ndarray]

# DVS128 (DVS-CIFAR10) geometry and AEDAT 2.0 address layout.
DVS128_SENSOR_SIZE = (128, 128)  # (H, W)
_AEDAT2_RECORD_BYTES = 8
_DVS128_POLARITY_MASK = 0x1
_DVS128_X_SHIFT, _DVS128_X_MASK = 1, 0x7F
_DVS128_Y_SHIFT, _DVS128_Y_MASK = 8, 0x7F
_UINT32_WRAP = 1 << 32

# ATIS (N-Caltech101) geometry and 40-bit record layout.
NCALTECH101_SENSOR_SIZE = (180, 240)  # (H, W)
_ATIS_RECORD_BYTES = 5
_ATIS_OVERFLOW_Y = 240
_ATIS_OVERFLOW_INCREMENT_US = 1 << 13  # as in the dataset author's reference reader


class EventFileError(ValueError):
    """A recording file that cannot be parsed (truncated or corrupt).

    Attributes:
      path: the file.
      offset: byte offset in the file where the problem starts.
    """

    def __init__(self, path: str | os.PathLike, offset: int, what: str):
        self.path = os.fspath(path)
        self.offset = int(offset)
        super().__init__(
            f"{self.path}: {what} at byte offset {self.offset}. The file is truncated or "
            "corrupt; re-download or re-extract it (or remove it from the dataset folder)."
        )


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


def parse_aedat2(data: bytes, path: str | os.PathLike = "<bytes>") -> Events:
    """Parses the bytes of a DVS128 AEDAT 2.0 file (DVS-CIFAR10), see the module docstring.

    Args:
      data: the whole file content.
      path: file name, used in error messages only.

    Returns:
      Event record with ``N`` events: ``t`` int64 [N] (us), ``x``/``y`` uint16 [N] in
      ``[0, 128)``, ``p`` uint8 [N].

    Raises:
      EventFileError: a header line without end, an AEDAT version other than 2.0, or a payload
        that is not a whole number of 8-byte records.
    """
    pos = 0
    first = True
    while pos < len(data) and data[pos] == ord("#"):
        end = data.find(b"\n", pos)
        if end < 0:
            raise EventFileError(path, pos, "unterminated AEDAT header line")
        line = data[pos:end].strip()
        if first and line.startswith(b"#!AER-DAT") and not line.startswith(b"#!AER-DAT2"):
            version = line[len(b"#!AER-DAT") :].decode("ascii", "replace")
            raise EventFileError(
                path, pos, f"unsupported AEDAT version {version!r} (expected 2.0, DVS128)"
            )
        first = False
        pos = end + 1
    payload = len(data) - pos
    n = payload // _AEDAT2_RECORD_BYTES
    if payload % _AEDAT2_RECORD_BYTES:
        raise EventFileError(
            path,
            pos + n * _AEDAT2_RECORD_BYTES,
            f"incomplete AEDAT record ({payload % _AEDAT2_RECORD_BYTES} trailing bytes of an "
            f"{_AEDAT2_RECORD_BYTES}-byte record)",
        )
    records = np.frombuffer(data, dtype=">u4", count=2 * n, offset=pos).reshape(n, 2)
    addr = records[:, 0].astype(np.uint32)
    sensor_x = (addr >> _DVS128_X_SHIFT) & _DVS128_X_MASK
    sensor_y = (addr >> _DVS128_Y_SHIFT) & _DVS128_Y_MASK
    width_1, height_1 = DVS128_SENSOR_SIZE[1] - 1, DVS128_SENSOR_SIZE[0] - 1
    return {
        "t": _unwrap_uint32(records[:, 1]),
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
      Event record: ``t`` int64 [N] (us, overflow markers applied), ``x``/``y`` uint16 [N],
      ``p`` uint8 [N] (1 = ON). Overflow markers (``y == 240``) are removed.

    Raises:
      EventFileError: the length is not a multiple of 5 bytes.
    """
    n = len(data) // _ATIS_RECORD_BYTES
    if len(data) % _ATIS_RECORD_BYTES:
        raise EventFileError(
            path,
            n * _ATIS_RECORD_BYTES,
            f"incomplete event ({len(data) % _ATIS_RECORD_BYTES} trailing bytes of a "
            f"{_ATIS_RECORD_BYTES}-byte record)",
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
    return {
        "t": t[keep],
        "x": x[keep].astype(np.uint16),
        "y": y[keep].astype(np.uint16),
        "p": p[keep].astype(np.uint8),
    }


def read_ncaltech_bin(path: str | os.PathLike) -> Events:
    """Reads an N-Caltech101 ``.bin`` file; see :func:`parse_ncaltech_bin`."""
    with open(path, "rb") as f:
        return parse_ncaltech_bin(f.read(), path)


def events_to_frames(
    events: Mapping[str, np.ndarray], num_steps: int, sensor_size: tuple[int, int]
) -> np.ndarray:
    """Counts events in ``num_steps`` equal-duration bins (spec section 8).

    See the module docstring for the exact bin assignment (half-open bins, last event in the
    last bin, empty or zero-duration recordings -> zeros). Events outside the sensor are
    dropped.

    Args:
      events: event record with ``t``, ``x``, ``y``, ``p`` arrays of length N.
      num_steps: T, the number of time bins (>= 1).
      sensor_size: ``(H, W)``.

    Returns:
      float32 counts ``[T, H, W, 2]``; channel 0 OFF, channel 1 ON.
    """
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    num_steps = int(num_steps)
    height, width = sensor_size
    frames_shape = (num_steps, height, width, 2)
    t = np.asarray(events["t"]).astype(np.int64)
    if t.size == 0:
        return np.zeros(frames_shape, np.float32)
    t_first, t_last = int(t.min()), int(t.max())
    duration = t_last - t_first
    if duration == 0:
        return np.zeros(frames_shape, np.float32)
    x = np.asarray(events["x"]).astype(np.int64)
    y = np.asarray(events["y"]).astype(np.int64)
    p = (np.asarray(events["p"]) > 0).astype(np.int64)
    # Exact integer bin index; (t_last - t_first) * T stays far below 2**63 for us timestamps.
    step = np.minimum((t - t_first) * num_steps // duration, num_steps - 1)
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    flat = ((step * height + y) * width + x) * 2 + p
    counts = np.bincount(flat[inside], minlength=num_steps * height * width * 2)
    return counts.astype(np.float32).reshape(frames_shape)


@functools.lru_cache(maxsize=32)
def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Interpolation matrix of PyTorch's bilinear ``align_corners=False`` along one axis.

    Args:
      in_size: source length.
      out_size: destination length.

    Returns:
      float32 ``[out_size, in_size]`` with rows summing to 1 (cached, read-only).
    """
    scale = in_size / out_size
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.maximum(src, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    matrix = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, lo), 1.0 - frac)
    np.add.at(matrix, (rows, hi), frac)
    matrix = matrix.astype(np.float32)
    matrix.flags.writeable = False
    return matrix


def resize_bilinear(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``[T, H, W, C]`` frames to ``[T, h, w, C]`` (align_corners=False)."""
    _, height, width, _ = frames.shape
    out_h, out_w = size
    if (height, width) == (out_h, out_w):
        return frames.astype(np.float32, copy=False)
    rows = bilinear_matrix(height, out_h)
    cols = bilinear_matrix(width, out_w)
    # Batched float32 matmuls on [T, C, H, W] (an order of magnitude faster than einsum here).
    planes = np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32)
    out = np.matmul(np.matmul(rows, planes), cols.T)
    return np.ascontiguousarray(out.transpose(0, 2, 3, 1))


def random_crop(frames: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-pads H and W by ``pad`` and crops back at a random offset, the same for all T.

    Args:
      frames: ``[T, H, W, C]``.
      pad: padding on each side, in pixels.
      rng: NumPy generator.

    Returns:
      ``[T, H, W, C]``.
    """
    _, height, width, _ = frames.shape
    padded = np.pad(frames, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    top = int(rng.integers(0, 2 * pad + 1))
    left = int(rng.integers(0, 2 * pad + 1))
    return padded[:, top : top + height, left : left + width, :]


def rotate(frames: np.ndarray, degrees: float) -> np.ndarray:
    """Rotates ``[T, H, W, C]`` frames about their centre (bilinear, zeros outside)."""
    if degrees == 0:
        return frames
    out = scipy.ndimage.rotate(
        frames, degrees, axes=(2, 1), reshape=False, order=1, mode="constant", cval=0.0
    )
    return out.astype(np.float32, copy=False)


def augment_dvs(
    frames: np.ndarray,
    rng: np.random.Generator,
    *,
    pad: int = 4,
    flip_prob: float = 0.5,
    max_rotation: float = 15.0,
) -> np.ndarray:
    """DVS-CIFAR10 training augmentation (spec section 8), one draw for all T frames.

    Random crop with zero padding ``pad``, horizontal flip with probability ``flip_prob``, then
    a rotation by an angle drawn uniformly from ``[-max_rotation, max_rotation]`` degrees.

    Args:
      frames: ``[T, H, W, C]`` float32.
      rng: NumPy generator (grain passes one per record).
      pad: crop padding in pixels.
      flip_prob: probability of a horizontal flip.
      max_rotation: maximum absolute rotation angle in degrees.

    Returns:
      ``[T, H, W, C]`` float32.
    """
    out = random_crop(frames, pad, rng) if pad > 0 else frames
    if rng.random() < flip_prob:
        out = out[:, :, ::-1, :]
    angle = float(rng.uniform(-max_rotation, max_rotation)) if max_rotation > 0 else 0.0
    out = rotate(np.ascontiguousarray(out), angle)
    return np.ascontiguousarray(out, dtype=np.float32)
