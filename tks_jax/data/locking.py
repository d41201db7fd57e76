"""An inter-process lock around preparing a dataset on disk.

tfds writes a dataset into ``incomplete.*`` and renames it into place; two processes preparing
the same dataset at once (parallel runs of a study, several hosts on a shared file system)
both generate it and the second rename fails with ``FileExistsError``. Preparation therefore
runs under an exclusive ``fcntl`` lock on ``<data_dir>/.<name>.prepare.lock``, and the caller
checks again, inside the lock, whether another process finished first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator


@contextlib.contextmanager
def prepare_lock(data_dir: str | os.PathLike, name: str) -> Iterator[str]:
    """Holds an exclusive lock for preparing dataset ``name`` in ``data_dir``; yields its path.

    Blocks while another process holds it. The lock file is left in place (removing it would
    race with a process that is about to lock it); it is empty and harmless.
    """
    data_dir = os.fspath(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, f".{name}.prepare.lock")
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
