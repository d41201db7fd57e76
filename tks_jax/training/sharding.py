"""Data parallelism: a one-axis device mesh, shardings, and host-to-device batch transfer.

Parameters and optimiser state are replicated (``P()``); batches are split along their batch
axis over the mesh axis ``data``. Because ``jax.jit`` partitions the *global* computation,
BatchNorm statistics are taken over the global batch and results do not depend on the number of
devices (up to float reduction order).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
    """Returns a 1-D mesh over all (global) devices with axis name ``'data'``.

    ``axis_types=Auto`` keeps the classic GSPMD behaviour of ``jax.jit`` with
    ``in_shardings``/``out_shardings`` (newer JAX releases default to explicit axes).
    """
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of parameters, optimiser state and scalars: a full copy on every device."""
    return NamedSharding(mesh, P())


def batch_shardings(mesh: Mesh, batch: Mapping[str, np.ndarray], *, is_event: bool) -> dict:
    """Shardings of one batch dict: the batch axis split over ``'data'``.

    Args:
      mesh: the device mesh.
      batch: dict of host arrays; ``image`` is ``[B, H, W, C]`` (static) or ``[T, B, H, W, C]``
        (events, time-major, batch axis 1); every other entry has the batch axis first.
      is_event: whether ``image`` is time-major.

    Returns:
      A dict with the same keys mapping to ``NamedSharding``.
    """
    out = {}
    for key in batch:
        spec = P(None, DATA_AXIS) if (key == "image" and is_event) else P(DATA_AXIS)
        out[key] = NamedSharding(mesh, spec)
    return out


def to_global_batch(
    batch: Mapping[str, np.ndarray], shardings: Mapping[str, NamedSharding]
) -> dict[str, jax.Array]:
    """Assembles the global batch from every process's local part.

    Each host passes only the examples it read (its shard of the data);
    ``jax.make_array_from_process_local_data`` concatenates them along the sharded axis.
    """
    return {
        k: jax.make_array_from_process_local_data(shardings[k], np.asarray(v))
        for k, v in batch.items()
    }
