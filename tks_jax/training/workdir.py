"""The run directory's lifecycle: exclusive lock, run artefacts, config.json, atomic writes.

A workdir holds one run: ``config.json`` (the config and its ``history`` of changes made on
resume), ``checkpoints/``, ``metrics.jsonl``, ``tensorboard/``, ``report/`` and the lock file
``.lock``. While a run trains, it holds an exclusive ``fcntl`` lock on ``.lock`` (process 0 on
multi-host runs); a second run on the same workdir stops at once with ``WorkdirLockedError``.
Readers (``tks_jax.evaluate``) do not take the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator, Mapping
from typing import Any

import ml_collections

from tks_jax import json_utils
from tks_jax.training import config_lib, objectives
from tks_jax.training.errors import (
    ConfigError,
    DiskFullError,
    WorkdirError,
    WorkdirLockedError,
)

CONFIG_FILE = config_lib.CONFIG_FILE
CHECKPOINT_DIR = config_lib.CHECKPOINT_DIR
LOCK_FILE = ".lock"
HISTORY_KEY = "history"
# Everything a run writes; any of them marks the workdir as holding a run.
ARTEFACTS = (CONFIG_FILE, CHECKPOINT_DIR, "metrics.jsonl", "tensorboard", "report")
# Keys that --config.resume_with_changes may change on resume: the optimiser and its schedule
# (same parameter and optimiser-state shapes; optimizer.name would change the state's shape).
RESUMABLE_PREFIX = "optimizer."
NOT_RESUMABLE = ("optimizer.name",)


# ------------------------------------------------------------------------------------------
# Lock.
# ------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def read_lock_holder(workdir: str) -> dict[str, Any] | None:
    """The ``{'pid', 'host', 'since'}`` last written into the lock file, or None."""
    try:
        with open(os.path.join(workdir, LOCK_FILE)) as f:
            return json.loads(f.read() or "null")
    except (OSError, ValueError):
        return None


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "an unknown process"
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("since", 0)))
    return f"pid {holder.get('pid')} on host {holder.get('host')} (since {since})"


class WorkdirLock:
    """An exclusive, process-lifetime lock on a workdir (``fcntl.flock`` on ``workdir/.lock``).

    The kernel releases the lock when its holder exits in any way (also ``kill -9``), so a
    crashed run never blocks the next one; the pid and host written into the file name the
    holder in the refusal and tell a stale file (dead pid on this host) from a live holder.

    Args:
      workdir: the run directory (created if missing).
      enabled: False on processes other than 0 (they rely on process 0's lock).
    """

    def __init__(self, workdir: str, *, enabled: bool = True):
        self.workdir = workdir
        self.enabled = enabled
        self._fd: int | None = None
        self.previous_holder: dict[str, Any] | None = None  # a stale holder taken over

    def acquire(self) -> WorkdirLock:
        if not self.enabled:
            return self
        path = os.path.join(self.workdir, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WorkdirLockedError(
                f"Workdir {self.workdir!r} is in use by another run: "
                f"{_describe(read_lock_holder(self.workdir))}. Wait for it to finish (or stop "
                "it), or use another --workdir."
            ) from None
        except OSError as e:  # a filesystem without flock support
            os.close(fd)
            raise WorkdirError(
                f"Cannot lock {path} ({e.strerror}): the filesystem does not support flock. "
                "Use a --workdir on a filesystem that does."
            ) from None
        old = read_lock_holder(self.workdir)
        if old and old.get("host") == socket.gethostname() and not _pid_alive(old.get("pid", -1)):
            self.previous_holder = old  # crashed holder: the kernel already released its lock
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # no holder recorded once released
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ------------------------------------------------------------------------------------------
# Paths and atomic writes.
# ------------------------------------------------------------------------------------------


def check_directory_path(path: str | None, what: str) -> None:
    """Raises ``ConfigError`` if ``path`` exists but is not a directory."""
    if path and os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{what} {path!r} is a file, not a directory; pass a directory path.")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception in its chain) is an out-of-space error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(path: str, bytes_needed: int) -> DiskFullError:
    """The one-line error for a full disk under ``path``."""
    try:
        free = shutil.disk_usage(path if os.path.isdir(path) else os.path.dirname(path)).free
        free_msg = f"{free} bytes free"
    except OSError:
        free_msg = "free space unknown"
    return DiskFullError(
        errno.ENOSPC,
        f"No space left on device writing under {path!r}: about {bytes_needed} bytes are needed "
        f"({free_msg}). Partial files were removed; free space (or move --workdir) and re-run "
        "the same command to resume from the last complete checkpoint.",
    )


def write_json_atomic(path: str, payload: Any) -> None:
    """``json_utils.write_json`` (never half-written), with a full disk as one clear error.

    Raises:
      DiskFullError: no space for the file (the temporary file is removed, ``path`` unchanged).
    """
    try:
        json_utils.write_json(path, payload, sort_keys=True)
    except OSError as e:
        if is_disk_full(e):
            size = len(json.dumps(json_utils.json_safe(payload), indent=2).encode())
            raise disk_full_error(path, size) from None
        raise


# ------------------------------------------------------------------------------------------
# config.json and run artefacts.
# ------------------------------------------------------------------------------------------


def read_config(workdir: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(config dict, history)`` stored in ``workdir/config.json``.

    Raises:
      FileNotFoundError: the workdir has no ``config.json``.
      WorkdirError: ``config.json`` is not valid JSON.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: --workdir must be the directory of a training run "
            "(train.py writes config.json there)."
        )
    try:
        with open(path) as f:
            stored = objectives.upgrade_legacy_keys(json.load(f))
    except ValueError as e:
        raise WorkdirError(f"{path} is not valid JSON ({e}); restore it or pass "
                           "--config.overwrite=True to start afresh.") from None
    history = stored.pop(HISTORY_KEY, [])
    return stored, history


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config stored in ``workdir/config.json`` (without its history)."""
    return ml_collections.ConfigDict(read_config(workdir)[0])


def write_config(workdir: str, config: ml_collections.ConfigDict,
                 history: list[dict[str, Any]] = ()) -> None:
    """Writes ``config.json`` atomically, with ``history`` (changes made on resume)."""
    payload = json.loads(config.to_json_best_effort())
    if history:
        payload[HISTORY_KEY] = list(history)
    write_json_atomic(os.path.join(workdir, CONFIG_FILE), payload)


def run_artefacts(workdir: str) -> list[str]:
    """Names of the run artefacts present in ``workdir`` (an empty folder counts as absent)."""
    found = []
    for name in ARTEFACTS:
        path = os.path.join(workdir, name)
        if os.path.isdir(path) and not os.listdir(path):
            continue
        if os.path.exists(path):
            found.append(name)
    return found


def has_checkpoints(workdir: str) -> bool:
    path = os.path.join(workdir, CHECKPOINT_DIR)
    return os.path.isdir(path) and any(n.isdigit() for n in os.listdir(path))


def parse_resume_changes(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The keys of ``config.resume_with_changes`` (comma-separated), validated.

    Raises:
      ConfigError: a key outside the optimiser/schedule settings.
    """
    raw = config.get("resume_with_changes") or ""
    keys = tuple(k.strip() for k in (raw.split(",") if isinstance(raw, str) else raw)
                 if k.strip())
    bad = [k for k in keys if not k.startswith(RESUMABLE_PREFIX) or k in NOT_RESUMABLE]
    if bad:
        raise ConfigError(
            f"resume_with_changes may only list optimiser/schedule keys ({RESUMABLE_PREFIX}*, "
            f"not {', '.join(NOT_RESUMABLE)}), got {bad}. Other changes need a new --workdir."
        )
    return keys


def check_workdir(workdir: str, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Decides what a run may do with ``workdir``; changes nothing on disk.

    Any run artefact (``config.json``, ``checkpoints/``, ``metrics.jsonl``, ``tensorboard/``,
    ``report/``) marks the workdir as holding a run. Its stored config must equal ``config``
    up to ``config_lib.RUNTIME_KEYS`` and the keys named in ``config.resume_with_changes``;
    otherwise the run is refused unless ``config.overwrite``.

    Returns:
      ``{'resume': bool, 'fresh': bool, 'history': [...], 'changes': {key: [old, new]}}``:
      ``resume`` when checkpoints of a compatible run exist; ``fresh`` when the workdir's
      artefacts are to be replaced (new run, or overwrite).

    Raises:
      WorkdirError: the workdir holds another run (or one whose config cannot be read).
      ConfigError: ``resume_with_changes`` names a key that may not change.
    """
    check_directory_path(workdir, "--workdir")
    overwrite = bool(config.get("overwrite", False))
    allowed = parse_resume_changes(config)
    decision = {"resume": False, "fresh": True, "history": [], "changes": {}}
    artefacts = run_artefacts(workdir) if os.path.isdir(workdir) else []
    if not artefacts or overwrite:
        return decision
    if CONFIG_FILE not in artefacts:
        raise WorkdirError(
            f"Workdir {workdir!r} holds run files ({', '.join(artefacts)}) but no {CONFIG_FILE}, "
            "so their config cannot be checked. Use a new --workdir, or pass "
            "--config.overwrite=True to discard them."
        )
    old, history = read_config(workdir)
    new = config.to_dict()
    diffs = config_lib.config_differences(old, new)
    changes = {}
    flat_old, flat_new = config_lib.flatten(old), config_lib.flatten(new)
    for key in allowed:
        if flat_old.get(key) != flat_new.get(key):
            changes[key] = [flat_old.get(key), flat_new.get(key)]
    blocking = [d for d in diffs if d.split(":")[0] not in changes]
    if blocking:
        shown = "; ".join(blocking[:10]) + (" ..." if len(blocking) > 10 else "")
        hint = ""
        if any(d.startswith(RESUMABLE_PREFIX) for d in blocking):
            hint = (" To resume with other optimiser settings (e.g. after a non-finite loss), "
                    "name them: --config.resume_with_changes=optimizer.base_learning_rate,...")
        raise WorkdirError(
            f"Workdir {workdir!r} holds a run with an incompatible config ({shown}). Use a new "
            f"--workdir, or pass --config.overwrite=True to discard the old run.{hint}"
        )
    if not has_checkpoints(workdir):
        return {**decision, "history": history}  # same run, nothing trained: start afresh
    return {"resume": True, "fresh": False, "history": history, "changes": changes}


def clear_run(workdir: str) -> None:
    """Deletes the run artefacts (not ``.lock`` nor unrelated files) of ``workdir``."""
    for name in ARTEFACTS:
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def last_train_metrics(workdir: str, step: int) -> dict[str, float]:
    """The last ``train`` record of ``metrics.jsonl`` at or before ``step`` ({} if none).

    A resumed run that trains no further step (e.g. preempted during the final evaluation)
    reports these as its last training block.
    """
    path = os.path.join(workdir, "metrics.jsonl")
    best: dict[str, Any] = {}
    with contextlib.suppress(OSError):
        for line in open(path):  # noqa: SIM115
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash
            if rec.get("split") == "train" and rec.get("step", 1 << 62) <= step:
                best = rec
    return {k: float(v) for k, v in best.items()
            if k not in ("step", "split", "time", "epoch", "images_per_sec")}


@contextlib.contextmanager
def translate_disk_full(path: str, bytes_needed: int, cleanup=()) -> Iterator[None]:
    """Turns an out-of-space error inside the block into one ``DiskFullError``.

    Args:
      path: the directory being written (named in the message).
      bytes_needed: the size of what was being written.
      cleanup: callables run before raising (remove partial files).
    """
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:  # orbax wraps OSError in its own exceptions
        if not is_disk_full(e):
            raise
        for fn in cleanup:
            with contextlib.suppress(Exception):
                fn()
        raise disk_full_error(path, bytes_needed) from None


def changes_record(step: int, changes: Mapping[str, Any]) -> dict[str, Any]:
    """One ``config.json`` history entry: resumed at ``step`` with ``changes``."""
    return {"step": int(step), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "changes": dict(changes)}
