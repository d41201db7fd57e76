"""Giving the heap that XLA's compiler freed back to the operating system.

Compiling a training step allocates and frees a few hundred MB of small blocks (HLO passes,
LLVM). glibc keeps freed heap pages in its arenas, so they stay in the process's resident
memory while the step's buffers (large, ``mmap``-ed) come on top; ``malloc_trim(0)`` after
compiling lowers the peak resident memory (measured in ``benchmarks/README.md``). Called by
the training entry points only (``training.compiled.CompiledOnFirstCall`` with
``release_host_memory=True``). This module must not import JAX.
"""

from __future__ import annotations

import ctypes
import sys


def release_freed_memory() -> bool:
    """Returns free heap pages of every malloc arena to the OS (glibc ``malloc_trim(0)``).

    Returns:
      True if glibc was found and called, False elsewhere (macOS, musl, Windows: a no-op).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True
