"""``host_memory.release_freed_memory`` gives freed heap pages back to the OS."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tks_jax.training import host_memory

# In a fresh interpreter: fill the heap with 8 KB blocks (below glibc's mmap threshold), free
# all but the last one (it pins the heap top, so free() alone cannot shrink the heap), and
# print the resident set before and after the call.
_PROBE = r"""
import ctypes
from tks_jax.training import host_memory

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
blocks = [libc.malloc(8192) for _ in range(40000)]  # ~320 MB
for b in blocks:
    ctypes.memset(b, 1, 8192)  # touch: resident
for b in blocks[:-1]:
    libc.free(b)
before = rss_mb()
called = host_memory.release_freed_memory()
print(called, before, rss_mb())
"""


@pytest.mark.slow  # a child process
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim is Linux's")
def test_release_freed_memory_shrinks_resident_heap():
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    called, before, after = out[0] == "True", float(out[1]), float(out[2])
    assert called
    assert before - after > 200, (before, after)  # most of the ~320 MB freed blocks


def test_release_freed_memory_is_a_no_op_off_linux(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert host_memory.release_freed_memory() is False
