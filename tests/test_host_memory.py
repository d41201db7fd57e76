"""``host_memory.release_freed_memory`` gives freed heap pages back to the OS."""

from __future__ import annotations

import os
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


# --- glibc's huge-page tunable -------------------------------------------------------------

HUGE = host_memory.HUGE_PAGES_TUNABLE


@pytest.mark.parametrize(
    "env, libc, thp, want",
    [
        ({}, (2, 36), "madvise", HUGE),
        ({}, (2, 35), "madvise", HUGE),
        ({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}, (2, 36), "madvise",
         "glibc.malloc.tcache_count=0:" + HUGE),  # the user's tunables are kept
        ({}, (2, 34), "madvise", None),  # glibc without the tunable
        ({}, None, "madvise", None),  # not glibc
        ({}, (2, 36), "always", None),  # large mappings get huge pages anyway
        ({}, (2, 36), "never", None),  # asking would do nothing
        ({}, (2, 36), None, None),  # no THP information
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, (2, 36), "madvise", None),  # user chose
        ({"GLIBC_TUNABLES": HUGE}, (2, 36), "madvise", None),  # already set: no loop
        ({host_memory.TUNABLES_OPT_OUT_ENV: "1"}, (2, 36), "madvise", None),
    ],
)
def test_recommended_glibc_tunables(env, libc, thp, want):
    assert host_memory.recommended_glibc_tunables(env, libc, thp) == want


@pytest.mark.parametrize(
    "text, want",
    [("always [madvise] never\n", "madvise"), ("[always] madvise never", "always"),
     ("always madvise [never]", "never"), ("always madvise never", None), ("", None)],
)
def test_thp_mode_reads_the_bracketed_word(tmp_path, text, want):
    path = tmp_path / "enabled"
    path.write_text(text)
    assert host_memory.thp_mode(str(path)) == want
    assert host_memory.thp_mode(str(tmp_path / "missing")) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc is Linux's")
def test_glibc_version_matches_the_standard_library():
    import platform

    lib, version = platform.libc_ver()
    want = tuple(int(v) for v in version.split(".")[:2]) if lib == "glibc" else None
    assert host_memory.glibc_version() == want


def test_reexec_restarts_the_same_command_with_the_tunable(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(host_memory, "glibc_version", lambda: (2, 36))
    monkeypatch.setattr(host_memory, "thp_mode", lambda: "madvise")
    calls = []
    argv = ["/usr/bin/python3", "-m", "tks_jax.evaluate", "--workdir", "runs/x"]
    env = {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    host_memory.reexec_with_huge_pages(env, argv, execve=lambda *a: calls.append(a))
    assert calls == [(sys.executable, [sys.executable, *argv[1:]],
                      {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:" + HUGE})]
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}  # untouched
    # Nothing to add (the restarted process, an opt-out, or another OS): no restart.
    for env in ({"GLIBC_TUNABLES": HUGE}, {host_memory.TUNABLES_OPT_OUT_ENV: "1"}):
        host_memory.reexec_with_huge_pages(env, argv, execve=lambda *a: calls.append(a))
    monkeypatch.setattr(sys, "platform", "darwin")
    host_memory.reexec_with_huge_pages({}, argv, execve=lambda *a: calls.append(a))
    assert len(calls) == 1


# A command that announces itself, restarts itself if recommended, and reports what it runs with.
_REEXEC_PROBE = r"""
import os, sys
print("start", os.getpid(), flush=True)
from tks_jax.training import host_memory
host_memory.reexec_with_huge_pages()
print("tunables", os.environ.get("GLIBC_TUNABLES", ""), sys.argv[1:])
"""


@pytest.mark.slow  # child processes
def test_reexec_in_a_real_process():
    env = {k: v for k, v in os.environ.items()
           if k not in ("GLIBC_TUNABLES", host_memory.TUNABLES_OPT_OUT_ENV)}
    want = host_memory.recommended_glibc_tunables(
        env, host_memory.glibc_version(), host_memory.thp_mode())
    out = subprocess.run([sys.executable, "-c", _REEXEC_PROBE, "a b", "c"], env=env,
                         capture_output=True, text=True, check=True, timeout=120).stdout
    lines = out.splitlines()
    starts = [line for line in lines if line.startswith("start")]
    # Restarted once when there was something to add (same PID: execve), else not at all.
    assert len(starts) == (1 if want is None else 2)
    assert len({line.split()[1] for line in starts}) == 1
    assert lines[-1] == f"tunables {want or ''} ['a b', 'c']"
    # With the opt-out the command runs once, as started.
    out = subprocess.run([sys.executable, "-c", _REEXEC_PROBE],
                         env={**env, host_memory.TUNABLES_OPT_OUT_ENV: "1"},
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.count("start") == 1 and out.splitlines()[-1] == "tunables  []"
