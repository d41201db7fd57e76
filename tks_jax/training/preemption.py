"""Preemption: SIGTERM asks the loop to save a checkpoint and stop (exit code 75 in train.py)."""

from __future__ import annotations

import signal
import threading

import numpy as np


class StopRequest:
    """Catches SIGTERM (preemption) and asks the loop to save and return."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def should_stop(stop: StopRequest, step: int, every: int, num_processes: int) -> bool:
    """Whether to save and stop now; all hosts agree (every ``every`` steps) when multi-host."""
    if num_processes == 1:
        return stop.requested
    if step % every:
        return False
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray(stop.requested, np.int32))
    return bool(np.any(flags))
