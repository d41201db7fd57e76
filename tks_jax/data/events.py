"""Events -> frames: time binning, frame extent, bilinear resize and augmentation (NumPy).

Everything here is host-side NumPy, used inside grain transforms; nothing needs JAX. Event
records (dicts of ``t``, ``x``, ``y``, ``p`` arrays) and the file readers are described in
``tks_jax.data.event_formats``. docs/data.md tabulates where our defaults differ from the
authors' pipeline (BrainCog's ``get_dvsc10_data`` / ``get_NCALTECH101_data`` with their tonic
fork) and why.

Time bins (docs/method.md §8), ``binning=``:

- ``'equal'`` (default): ``T`` bins of equal duration over ``[t_first, t_last]``
  (``t_first = min t``, ``t_last = max t``). Event ``t`` goes to bin
  ``floor((t - t_first) * T / (t_last - t_first))`` computed in exact integer arithmetic, so
  bins are half-open ``[edge_k, edge_{k+1})``: an event exactly on an inner edge belongs to the
  later bin, and the last event (``t == t_last``, index ``T``) is put into the last bin. A
  recording with zero events, or whose events all share one timestamp (zero duration, so no
  bins can be defined), gives all-zero frames.
- ``'authors'``: the tonic fork's ``slice_by_time_bins`` on the timestamps *as read* (absolute,
  not shifted to 0): ``window = t[-1] // T`` (``t[-1]``: the last event in file order), bin
  ``k`` holds the events with ``t[0] + k * window <= t < t[0] + (k + 1) * window`` (found with
  a left ``searchsorted`` as the fork does). A recording that does not start near 0 has a
  window far longer than its duration divided by ``T``: its events bunch into the first bins;
  events at or after ``t[0] + T * window`` are dropped; ``t[-1] < T`` gives empty frames.

Frame extent: a fixed sensor ``(H, W)`` (events outside it are dropped), or, with
``sensor_size=None``, the authors' per-recording extent for N-Caltech101 (their fork's
``NCALTECH101.sensor_size`` is ``None``): the dataset shifts ``x`` and ``y`` so that their
minimum is 0, then ``ToFrame`` sizes the frame ``H = max(y) + 1``, ``W = max(x) + 1`` with as
many polarity channels as the recording has distinct polarities. A recording with a single
polarity gets one channel in the fork (all its events counted in it); the authors' code turns
such one-channel frames into two by repeating the channel (``dvs_channel_check_expend``, used
for their N-CARS and DVS128 Gesture loaders; their N-Caltech101 loader has no such step and
could not batch it), and so do we: both channels hold the counts of all its events. Frames
are always ``[T, H, W, 2]`` float32 counts, channel 0 = OFF, channel 1 = ON.

Resize: bilinear with exactly PyTorch's ``F.interpolate(mode='bilinear', align_corners=True)``
definition, which is what the authors apply to the count frames of both datasets: output
pixel ``i`` samples the source at ``i * (in - 1) / (out - 1)`` (0 when ``out == 1``), so the
corner pixels of input and output coincide; no antialiasing. Done separably with two small
interpolation matrices.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import scipy.ndimage

BINNINGS = ("equal", "authors")


def _equal_bins(t: np.ndarray, num_steps: int) -> np.ndarray | None:
    """Bin index per event for ``'equal'`` binning, or ``None`` when no bins exist."""
    if t.size == 0:
        return None
    t_first, t_last = int(t.min()), int(t.max())
    duration = t_last - t_first
    if duration == 0:
        return None
    # Exact integer bin index; (t_last - t_first) * T stays far below 2**63 for us timestamps.
    return np.minimum((t - t_first) * num_steps // duration, num_steps - 1)


def authors_bins(t: np.ndarray, num_steps: int) -> np.ndarray:
    """Bin index per event of the tonic fork's ``slice_by_time_bins`` (-1: dropped).

    Args:
      t: timestamps as read, int [N], in file order.
      num_steps: T.

    Returns:
      int64 [N]: bin ``k`` in ``[0, T)``, or -1 for events that fall in no bin.
    """
    t = np.asarray(t).astype(np.int64)
    step = np.full(t.shape, -1, np.int64)
    if t.size == 0:
        return step
    window = int(t[-1]) // num_steps
    starts = int(t[0]) + window * np.arange(num_steps, dtype=np.int64)
    first = np.searchsorted(t, starts, side="left")
    last = np.searchsorted(t, starts + window, side="left")
    for k in range(num_steps):
        step[first[k] : last[k]] = k
    return step


def events_to_frames(
    events: Mapping[str, np.ndarray],
    num_steps: int,
    sensor_size: tuple[int, int],
    *,
    binning: str = "equal",
) -> np.ndarray:
    """Counts events in ``num_steps`` time bins on a fixed frame (docs/method.md §8).

    See the module docstring for the two binning rules. Events outside the frame are dropped.

    Args:
      events: event record with ``t``, ``x``, ``y``, ``p`` arrays of length N (for
        ``binning='authors'``, ``t`` as read from the file, not shifted).
      num_steps: T, the number of time bins (>= 1).
      sensor_size: ``(H, W)``.
      binning: ``'equal'`` or ``'authors'``.

    Returns:
      float32 counts ``[T, H, W, 2]``; channel 0 OFF, channel 1 ON.
    """
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    if binning not in BINNINGS:
        raise ValueError(f"binning must be one of {BINNINGS}, got {binning!r}.")
    num_steps = int(num_steps)
    height, width = sensor_size
    frames_shape = (num_steps, height, width, 2)
    t = np.asarray(events["t"]).astype(np.int64)
    step = _equal_bins(t, num_steps) if binning == "equal" else authors_bins(t, num_steps)
    if step is None:
        return np.zeros(frames_shape, np.float32)
    x = np.asarray(events["x"]).astype(np.int64)
    y = np.asarray(events["y"]).astype(np.int64)
    p = (np.asarray(events["p"]) > 0).astype(np.int64)
    keep = (step >= 0) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
    flat = ((step * height + y) * width + x) * 2 + p
    counts = np.bincount(flat[keep], minlength=num_steps * height * width * 2)
    return counts.astype(np.float32).reshape(frames_shape)


def recording_extent(events: Mapping[str, np.ndarray]) -> tuple[dict, tuple[int, int], int]:
    """The authors' per-recording frame (N-Caltech101), see the module docstring.

    Args:
      events: event record.

    Returns:
      ``(shifted, (H, W), num_polarities)``: the record with ``x`` and ``y`` shifted so that
      their minimum is 0, the frame ``H = max(y) + 1``, ``W = max(x) + 1`` of the shifted
      events, and the number of distinct polarities (0 for an empty record, whose frame is
      ``(1, 1)``).
    """
    x = np.asarray(events["x"]).astype(np.int64)
    y = np.asarray(events["y"]).astype(np.int64)
    if x.size == 0:
        return dict(events), (1, 1), 0
    x, y = x - x.min(), y - y.min()
    num_polarities = int(np.unique(np.asarray(events["p"]) > 0).size)
    shifted = {**events, "x": x, "y": y}
    return shifted, (int(y.max()) + 1, int(x.max()) + 1), num_polarities


def recording_to_frames(
    events: Mapping[str, np.ndarray],
    num_steps: int,
    sensor_size: tuple[int, int] | None,
    *,
    binning: str = "equal",
) -> np.ndarray:
    """Frames on a fixed sensor, or (``sensor_size=None``) on the recording's own extent.

    Args:
      events: event record (``t`` as read for ``binning='authors'``).
      num_steps: T.
      sensor_size: ``(H, W)``, or ``None`` for :func:`recording_extent` (a single-polarity
        recording then fills both channels with the counts of all its events).
      binning: ``'equal'`` or ``'authors'``.

    Returns:
      float32 ``[T, H, W, 2]`` (``H, W`` of the sensor or of the recording's extent).
    """
    if sensor_size is not None:
        return events_to_frames(events, num_steps, sensor_size, binning=binning)
    shifted, extent, num_polarities = recording_extent(events)
    if num_polarities == 1:
        shifted["p"] = np.zeros_like(np.asarray(shifted["p"]))
    frames = events_to_frames(shifted, num_steps, extent, binning=binning)
    if num_polarities == 1:
        frames[..., 1] = frames[..., 0]
    return frames


@functools.lru_cache(maxsize=256)
def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Interpolation matrix of PyTorch's bilinear ``align_corners=True`` along one axis.

    Output index ``i`` samples source position ``i * (in_size - 1) / (out_size - 1)`` (0 when
    ``out_size == 1``) between its two neighbouring pixels.

    Args:
      in_size: source length.
      out_size: destination length.

    Returns:
      float32 ``[out_size, in_size]`` with rows summing to 1 (cached, read-only).
    """
    scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    src = np.arange(out_size, dtype=np.float64) * scale
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
    """Bilinear resize of ``[T, H, W, C]`` frames to ``[T, h, w, C]`` (align_corners=True)."""
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
    """DVS-CIFAR10 training augmentation (docs/method.md §8), one draw for all T frames.

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
