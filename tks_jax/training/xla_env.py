"""XLA:CPU flags that ``train.py`` sets by default, before JAX creates its backend.

On XLA:CPU the memory-minimising scheduler
(``--xla_cpu_enable_concurrency_optimized_scheduler=false``) cut a VGG-SNN training step's peak
memory from 3.85 to 3.01 GB and made it 8 % faster (ResNet-19: 2.94 -> 2.12 GB, 6 % faster) on
jaxlib 0.10 (``benchmarks/README.md``). XLA reads ``XLA_FLAGS`` once, when the first
computation creates the backend, and aborts on a flag it does not know, so the flag is added
only for the jaxlib versions it was measured on, only if the user has not set it either way,
and never when ``TKS_KEEP_XLA_FLAGS`` is set. This module must not import JAX.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Mapping, MutableMapping

SCHEDULER_FLAG_NAME = "xla_cpu_enable_concurrency_optimized_scheduler"
LOW_MEMORY_FLAGS = f"--{SCHEDULER_FLAG_NAME}=false"
# jaxlib versions (prefixes) on which the flag exists and was measured to help.
MEASURED_JAXLIB = ("0.10.",)
OPT_OUT_ENV = "TKS_KEEP_XLA_FLAGS"


def recommended_xla_flags(env: Mapping[str, str], jaxlib_version: str | None) -> str | None:
    """The ``XLA_FLAGS`` value to run with, or ``None`` to leave the environment as it is.

    Args:
      env: the process environment.
      jaxlib_version: the installed jaxlib's version (``None``: not installed).
    """
    if env.get(OPT_OUT_ENV):
        return None
    current = env.get("XLA_FLAGS", "")
    if SCHEDULER_FLAG_NAME in current:  # the user chose, either way
        return None
    if not jaxlib_version or not jaxlib_version.startswith(MEASURED_JAXLIB):
        return None
    return f"{current} {LOW_MEMORY_FLAGS}".strip()


def apply_recommended_xla_flags(env: MutableMapping[str, str] | None = None) -> str | None:
    """Sets ``XLA_FLAGS`` in ``env`` (default ``os.environ``) as recommended; returns the value
    set, or ``None`` if nothing changed. Call it before JAX's first computation."""
    env = os.environ if env is None else env
    try:
        version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        version = None
    flags = recommended_xla_flags(env, version)
    if flags is not None:
        env["XLA_FLAGS"] = flags
    return flags
