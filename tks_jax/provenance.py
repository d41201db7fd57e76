"""Where a result came from: code commit, library versions, machine and resolved config.

``collect(config)`` is stored with every result a run writes (the ablation study's run records
and ``results.json``), so a number can be traced to the code and the arithmetic that produced it.

The ``dirty`` flag looks at the tracked source only (``tks_jax/``, ``configs/``, ``train.py``,
``pyproject.toml``): result files written into the repository do not make a tree dirty.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Mapping
from typing import Any

# Paths (relative to the repository root) whose local changes make a run's code differ from
# its commit.
SOURCE_PATHS = ("tks_jax", "configs", "train.py", "pyproject.toml")
LIBRARIES = ("jax", "jaxlib", "flax", "optax")
# Model options that change the arithmetic (and therefore the numbers) of a run.
ARITHMETIC_OPTIONS = ("conv", "dtype", "remat")


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(root: str, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_info(root: str | None = None) -> dict[str, Any]:
    """The commit of the code and whether its tracked source differs from it.

    Args:
      root: a directory inside the repository (default: the one holding ``tks_jax``).

    Returns:
      ``{'commit': 40-hex str | None, 'dirty': bool | None}``; both None outside a git
      checkout (e.g. an installed wheel) or without ``git``.
    """
    root = root or _repo_root()
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        return {"commit": None, "dirty": None}
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", *SOURCE_PATHS)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def library_versions() -> dict[str, str | None]:
    """Installed versions of jax, jaxlib, flax and optax (None when not installed)."""
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


# CPU vector extensions that decide which kernels XLA:CPU compiles, and so the last bits of a
# CPU run (two x86_64 machines with and without AVX-512 give different floating-point sums).
CPU_ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16",
                 "asimd", "sve", "sve2")


def cpu_from_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model and vector extensions from the text of Linux's ``/proc/cpuinfo``.

    Returns:
      ``{'cpu_model': str | None, 'cpu_isa': [flags of CPU_ISA_FLAGS the CPU has, in that
      order]}``; the first processor's entry is read (x86 ``model name``/``flags``, Arm
      ``Features``).
    """
    model, flags = None, set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if model is None and key in ("model name", "cpu model", "hardware"):
            model = value.strip() or None
        elif not flags and key in ("flags", "features"):
            flags = set(value.split())
    return {"cpu_model": model, "cpu_isa": [f for f in CPU_ISA_FLAGS if f in flags]}


def cpu_info() -> dict[str, Any]:
    """``cpu_from_cpuinfo`` of this machine; on systems without ``/proc/cpuinfo``, the model
    from ``platform.processor()`` and an empty ``cpu_isa``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return cpu_from_cpuinfo(f.read())
    except OSError:
        return {"cpu_model": platform.processor() or None, "cpu_isa": []}


def machine_info() -> dict[str, Any]:
    """OS, CPU architecture, model and vector extensions, Python, core count, JAX backend and
    device kind."""
    import jax

    devices = jax.devices()
    return {
        "system": platform.system(), "machine": platform.machine(), **cpu_info(),
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "backend": jax.default_backend(), "device_kind": devices[0].device_kind,
        "device_count": len(devices),
    }


def _to_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "to_dict"):  # ml_collections.ConfigDict
        return config.to_dict()
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"config must be a ConfigDict or a mapping, got {type(config).__name__}.")


def arithmetic_options(config: Any) -> dict[str, Any]:
    """The model options of ``config`` that change a run's arithmetic.

    Returns:
      ``{'conv': ..., 'dtype': ..., 'remat': ...}`` from ``config.model``; None where the config
      leaves an option to the model's default.
    """
    model = _to_dict(config).get("model") or {}
    return {k: model.get(k) for k in ARITHMETIC_OPTIONS}


def collect(config: Any = None, *, git: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Provenance of a result computed now with ``config``.

    Args:
      config: the resolved run config (``ml_collections.ConfigDict`` or a mapping); None for
        results without a config.
      git: ``git_info()`` taken when the computation started (a training run records the code
        it started with, not a commit made while it trained); None: taken now.

    Returns:
      A JSON-serialisable dict: ``git`` (``commit``, ``dirty``), ``versions`` (jax, jaxlib,
      flax, optax), ``machine`` (``machine_info``), ``arithmetic`` (``arithmetic_options``) and
      ``config`` (the whole resolved config as a dict).
    """
    cfg = _to_dict(config)
    git = dict(git) if git is not None else git_info()
    return {"git": git, "versions": library_versions(), "machine": machine_info(),
            "arithmetic": arithmetic_options(cfg), "config": cfg}


def code_version(prov: Mapping[str, Any] | None) -> str:
    """A short label of the code a provenance record came from: ``'<commit>'``,
    ``'<commit>+dirty'`` or ``'unknown'`` (no git, or a record from before provenance)."""
    git = (prov or {}).get("git") or {}
    commit = git.get("commit")
    if not commit:
        return "unknown"
    return commit + ("+dirty" if git.get("dirty") else "")
