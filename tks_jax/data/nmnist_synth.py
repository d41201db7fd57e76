"""A simulated event camera that turns static MNIST digits into N-MNIST-like recordings.

N-MNIST (Orchard et al. 2015) was recorded by moving an ATIS sensor (34 x 34 pixels used) in
three saccades that trace a triangle, ~100 ms each, in front of a static digit on a monitor.
We simulate the same with the digit moving and the sensor still (only relative motion
matters), vectorised over digits:

1. The 28 x 28 digit (uint8 -> intensity ``I = pixel / 255`` in [0, 1]) is placed into a
   34 x 34 black field with its top-left corner at ``(row, col)``; sub-pixel positions use a
   bilinear shift (zero outside the digit).
2. The position follows the closed triangle ``SACCADE_VERTICES`` A -> B -> C -> A, one saccade
   per edge, ``SACCADE_DURATION_US`` each (300 ms in total), sampled in
   ``STEPS_PER_SACCADE`` equal steps per saccade at constant speed (the longest edge moves
   ~0.45 px per step).
3. Every pixel keeps a reference log intensity ``ref`` (initialised to the first image's
   ``log(I + LOG_EPS)``). At step k the new log intensity ``L_k`` is compared with it: with
   ``n = floor(|L_k - ref| / CONTRAST_THRESHOLD)`` the pixel emits ``n`` events of polarity
   ON (1) if ``L_k > ref`` else OFF (0), and ``ref`` moves by ``n`` thresholds towards
   ``L_k`` (several events per step are allowed; the residue below one threshold carries
   over). No noise events and no refractory period.
4. Timestamps (integer microseconds): the ``j``-th event (j = 0..n-1) of a pixel in step k
   (which spans ``[(k - 1) dt, k dt)``, ``dt = SACCADE_DURATION_US / STEPS_PER_SACCADE``) is
   placed where a linear log-intensity ramp crosses its threshold level,
   ``((k - 1) + (j + 1) * CONTRAST_THRESHOLD / |L_k - ref|) * dt``, minus a jitter drawn
   uniformly from ``[0, JITTER_US)``, clipped to ``[(k - 1) dt, k dt - 1]``. Events of a
   recording are sorted by time (stable, ties in pixel order).

Determinism: the jitter is a counter-based hash (splitmix64) of ``(seed, split, example
index, step, pixel, j)``, so an example's events depend only on its own digit, its index in
the split and the seed, and not on the chunking or on how many examples are generated.

Sizing: about 1.2k events per digit on average (min ~600 on MNIST), stored as 7 bytes per
event (t uint32, x, y, p uint8), so ~8 kB per recording: ~250 MB for the default store of
20k train + 10k test digits (``event_datasets.NMNIST_SYNTH_NUM_TRAIN``), ~575 MB for all 70k.
Simulation costs ~1.2 ms per digit on one core; writing the tfds store adds about as much.

References:
  Orchard, Jayawant, Cohen, Thakor. "Converting Static Image Datasets to Spiking Neuromorphic
  Datasets Using Saccades." Frontiers in Neuroscience 9 (2015).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

SENSOR_SIZE = (34, 34)  # (H, W) as N-MNIST
DIGIT_SIZE = 28
# Top-left (row, col) of the digit in the 34 x 34 field at the three triangle corners; the
# digit (28 px) plus the largest offset (5 px) stays inside the field (<= 33).
SACCADE_VERTICES = ((1.0, 1.0), (5.0, 3.0), (1.0, 5.0))
SACCADE_DURATION_US = 100_000  # ~100 ms per saccade, 300 ms per recording (N-MNIST)
STEPS_PER_SACCADE = 10  # motion samples per saccade (dt = 10 ms)
# Log-intensity change per event (ON and OFF alike). Higher than a real DVS (~0.15-0.3) so that
# a recording has ~1.2k events (real N-MNIST: ~4k) and the full set stays a few hundred MB.
CONTRAST_THRESHOLD = 0.6
LOG_EPS = 0.25  # log(I + eps): keeps the black background finite and damps dark-pixel noise
JITTER_US = 500  # timestamp jitter, uniform in [0, JITTER_US)
DEFAULT_CHUNK = 250  # digits simulated together (cache-sized float32 [chunk, 34, 34] fields)

RECORDING_DURATION_US = len(SACCADE_VERTICES) * SACCADE_DURATION_US


def saccade_positions(steps_per_saccade: int) -> np.ndarray:
    """Digit positions along the closed triangle A -> B -> C -> A.

    Args:
      steps_per_saccade: motion samples per saccade.

    Returns:
      float64 ``[K + 1, 2]`` (row, col) offsets, ``K = 3 * steps_per_saccade``; entry 0 is A.
    """
    vertices = np.asarray(SACCADE_VERTICES, np.float64)
    ends = np.roll(vertices, -1, axis=0)
    fractions = np.arange(1, steps_per_saccade + 1) / steps_per_saccade
    path = [vertices[:1]]
    for start, end in zip(vertices, ends, strict=True):
        path.append(start + fractions[:, None] * (end - start))
    return np.concatenate(path, axis=0)


def place_digits(images: np.ndarray, row: float, col: float) -> np.ndarray:
    """Places digits into the sensor field at a sub-pixel offset (bilinear shift).

    Args:
      images: float32 ``[B, 28, 28]`` intensities.
      row: top-left row offset, ``0 <= row <= 34 - 28 - 1`` when fractional.
      col: top-left column offset (same range).

    Returns:
      float32 ``[B, 34, 34]``.
    """
    batch = images.shape[0]
    height, width = SENSOR_SIZE
    r0, c0 = int(np.floor(row)), int(np.floor(col))
    fr, fc = float(row - r0), float(col - c0)
    # Padded by one row/column on top/left so that q[:, :-1] is the digit shifted down by 1.
    q = np.zeros((batch, height + 1, width + 1), np.float32)
    q[:, 1 + r0 : 1 + r0 + DIGIT_SIZE, 1 + c0 : 1 + c0 + DIGIT_SIZE] = images
    rows = (1.0 - fr) * q[:, 1:, :] + fr * q[:, :-1, :]  # separable: rows, then columns
    return (1.0 - fc) * rows[:, :, 1:] + fc * rows[:, :, :-1]


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hash_uniform(*keys: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) floats from integer keys (broadcast), a pure function of the keys."""
    with np.errstate(over="ignore"):
        h = np.zeros(np.broadcast_shapes(*(np.shape(k) for k in keys)), np.uint64)
        for key in keys:
            h = _splitmix64(h ^ np.asarray(key).astype(np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def simulate_chunk(
    images: np.ndarray, indices: np.ndarray, *, seed: int, split_id: int
) -> list[dict[str, np.ndarray]]:
    """Simulates the event camera for a chunk of digits (see the module docstring).

    Args:
      images: uint8 ``[B, 28, 28]`` or ``[B, 28, 28, 1]`` digits.
      indices: int ``[B]`` index of each digit in its split (keys the jitter).
      seed: generator seed.
      split_id: 0 for train, 1 for test (keys the jitter).

    Returns:
      ``B`` event records, each ``t`` uint32, ``x``/``y`` uint8, ``p`` uint8, sorted by time.
    """
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]
    if images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE):
        raise ValueError(f"expected digits [B, 28, 28(, 1)], got shape {images.shape}.")
    intensity = images.astype(np.float32) / 255.0
    batch = intensity.shape[0]
    width = SENSOR_SIZE[1]
    dt = SACCADE_DURATION_US / STEPS_PER_SACCADE
    positions = saccade_positions(STEPS_PER_SACCADE)
    ref = np.log(place_digits(intensity, *positions[0]) + np.float32(LOG_EPS))
    inv_threshold = np.float32(1.0 / CONTRAST_THRESHOLD)
    parts: list[tuple[np.ndarray, ...]] = []
    for k in range(1, positions.shape[0]):
        log_i = np.log(place_digits(intensity, *positions[k]) + np.float32(LOG_EPS))
        diff = log_i - ref
        count = np.floor(np.abs(diff) * inv_threshold)
        # step 3 of the module docstring: ref moves by n thresholds towards L_k.
        ref += np.copysign(count, diff) * np.float32(CONTRAST_THRESHOLD)
        b, y, x = np.nonzero(count)
        n = count[b, y, x].astype(np.int64)
        if n.size == 0:
            continue
        # Expand each pixel into its n events, j = 0..n-1.
        rep = np.repeat(np.arange(n.size), n)
        j = np.arange(rep.size) - np.repeat(np.cumsum(n) - n, n)
        frac = (j + 1) * CONTRAST_THRESHOLD / np.abs(diff[b, y, x])[rep]
        jitter = JITTER_US * _hash_uniform(
            seed, split_id, indices[b[rep]], k, y[rep] * width + x[rep], j
        )
        t = np.floor((k - 1 + frac) * dt - jitter)
        t = np.clip(t, (k - 1) * dt, k * dt - 1).astype(np.int64)
        polarity = (diff[b, y, x] > 0).astype(np.uint8)[rep]
        parts.append((b[rep], t, x[rep], y[rep], polarity))
    records = []
    if not parts:
        return [_empty_record() for _ in range(batch)]
    b, t, x, y, p = (np.concatenate(c) for c in zip(*parts, strict=True))
    order = np.lexsort((t, b))  # by digit, then time; stable for ties
    b, t, x, y, p = b[order], t[order], x[order], y[order], p[order]
    bounds = np.concatenate([[0], np.cumsum(np.bincount(b, minlength=batch))])
    for i in range(batch):
        s = slice(bounds[i], bounds[i + 1])
        records.append(
            {
                "t": t[s].astype(np.uint32),
                "x": x[s].astype(np.uint8),
                "y": y[s].astype(np.uint8),
                "p": p[s],
            }
        )
    return records


def _empty_record() -> dict[str, np.ndarray]:
    return {
        "t": np.zeros((0,), np.uint32),
        "x": np.zeros((0,), np.uint8),
        "y": np.zeros((0,), np.uint8),
        "p": np.zeros((0,), np.uint8),
    }


def simulate(
    images: np.ndarray,
    *,
    seed: int = 0,
    split_id: int = 0,
    start_index: int = 0,
    chunk_size: int = DEFAULT_CHUNK,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields one event record per digit, in order, simulating ``chunk_size`` digits at a time.

    Args:
      images: uint8 ``[N, 28, 28]`` or ``[N, 28, 28, 1]``.
      seed: generator seed.
      split_id: 0 train, 1 test.
      start_index: index in the split of ``images[0]`` (keys the jitter).
      chunk_size: digits per vectorised chunk (does not change the result).

    Yields:
      Event records (``t`` uint32 us, ``x``, ``y``, ``p`` uint8), sorted by time.
    """
    for start in range(0, len(images), chunk_size):
        chunk = images[start : start + chunk_size]
        indices = start_index + start + np.arange(len(chunk))
        yield from simulate_chunk(chunk, indices, seed=seed, split_id=split_id)
