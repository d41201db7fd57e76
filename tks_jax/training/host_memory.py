"""Giving the heap that XLA's compiler freed back to the operating system.

Compiling a training step allocates and frees a few hundred MB of small blocks (HLO passes,
LLVM). glibc keeps freed heap pages in its arenas, so they stay in the process's resident
memory while the step's buffers (large, ``mmap``-ed) come on top; ``malloc_trim(0)`` after
compiling lowers the peak resident memory (measured in ``benchmarks/README.md``). Called by
the training entry points only (``training.compiled.CompiledOnFirstCall`` with
``release_host_memory=True``).

Transparent huge pages for malloc. XLA:CPU allocates a step's temporary buffers afresh on
every execution; glibc serves such large blocks with new ``mmap``-ed pages, and the kernel
faults them in 4 KB at a time, every step. With the glibc tunable ``glibc.malloc.hugetlb=1``
(glibc >= 2.35) malloc asks for transparent huge pages on those mappings, which the kernel
grants when its THP mode is ``madvise``. glibc reads tunables only when a process starts, so
``reexec_with_huge_pages`` restarts the command with the tunable set (the training and
evaluation entry points call it first). Measured effect in ``benchmarks/README.md``.

This module must not import JAX.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Mapping, Sequence


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


HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
# Set to keep GLIBC_TUNABLES (and the process) as started.
TUNABLES_OPT_OUT_ENV = "TKS_KEEP_GLIBC_TUNABLES"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def glibc_version() -> tuple[int, int] | None:
    """The running glibc's (major, minor), or ``None`` when the C library is not glibc."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, OSError, ValueError):  # no confstr name, musl, odd version
        return None


def thp_mode(path: str = THP_MODE_FILE) -> str | None:
    """The kernel's transparent-huge-page mode (the bracketed word of ``path``:
    ``always``, ``madvise`` or ``never``), or ``None`` when unreadable."""
    try:
        with open(path) as f:
            words = f.read().split()
    except OSError:
        return None
    chosen = [w[1:-1] for w in words if w.startswith("[") and w.endswith("]")]
    return chosen[0] if len(chosen) == 1 else None


def recommended_glibc_tunables(
    env: Mapping[str, str], libc: tuple[int, int] | None, thp: str | None
) -> str | None:
    """The ``GLIBC_TUNABLES`` value to run with, or ``None`` to leave it as it is.

    Adds ``glibc.malloc.hugetlb=1`` to the user's tunables when glibc has it (>= 2.35) and
    the kernel grants huge pages to mappings that ask (THP mode ``madvise``; under ``always``
    they already get them, under ``never`` asking does nothing), unless the user set that
    tunable either way or ``TKS_KEEP_GLIBC_TUNABLES`` is set.
    """
    if env.get(TUNABLES_OPT_OUT_ENV) or libc is None or libc < (2, 35) or thp != "madvise":
        return None
    current = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in current:
        return None
    return f"{current}:{HUGE_PAGES_TUNABLE}" if current else HUGE_PAGES_TUNABLE


def reexec_with_huge_pages(
    env: Mapping[str, str] | None = None,
    argv: Sequence[str] | None = None,
    execve: Callable[..., object] = os.execve,
) -> None:
    """Restarts this command with ``recommended_glibc_tunables`` in its environment, when
    there is something to add; otherwise returns and nothing changes.

    Call it first thing in a ``__main__`` entry point, before JAX or anything else starts
    threads or allocates: ``os.execve`` replaces the process (same PID) and does not return.
    The command is rebuilt from ``sys.orig_argv`` (``python train.py ...`` or ``python -m
    module ...``). The restarted process finds the tunable already set, so this happens once.

    Args:
      env: the environment (default ``os.environ``).
      argv: the interpreter's command line (default ``sys.orig_argv``).
      execve: ``os.execve`` (replaceable in tests).
    """
    if not sys.platform.startswith("linux"):
        return
    env = os.environ if env is None else env
    tunables = recommended_glibc_tunables(env, glibc_version(), thp_mode())
    if tunables is None:
        return
    argv = list(sys.orig_argv if argv is None else argv)
    sys.stdout.flush()
    sys.stderr.flush()
    execve(sys.executable, [sys.executable, *argv[1:]], {**env, "GLIBC_TUNABLES": tunables})
