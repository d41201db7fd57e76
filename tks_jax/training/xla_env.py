"""XLA:CPU flags that ``train.py`` sets by default, before JAX creates its backend.

On XLA:CPU the memory-minimising scheduler
(``--xla_cpu_enable_concurrency_optimized_scheduler=false``) cut a VGG-SNN training step's peak
memory from 3.85 to 3.01 GB and made it 8 % faster (ResNet-19: 2.94 -> 2.12 GB, 6 % faster) on
jaxlib 0.10; copy insertion with region analysis
(``--xla_cpu_copy_insertion_use_region_analysis=true``) inserts fewer copies around the
loops (the chunked convolutions, the LIF scan) and made ResNet-19 at half width about 3 %
faster, with bitwise equal results (``benchmarks/README.md``). XLA reads ``XLA_FLAGS`` once,
when the first computation creates the backend, and aborts on a flag it does not know, so the
flags are added only for the jaxlib versions they were measured on, each only if the user has
not set it either way, and never when ``TKS_KEEP_XLA_FLAGS`` is set. This module must not
import JAX.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Mapping, MutableMapping

SCHEDULER_FLAG_NAME = "xla_cpu_enable_concurrency_optimized_scheduler"
# The flags, in the order they are appended.
RECOMMENDED_FLAGS = (
    f"--{SCHEDULER_FLAG_NAME}=false",
    "--xla_cpu_copy_insertion_use_region_analysis=true",
)
# jaxlib versions (prefixes) on which the flags exist and were measured to help.
MEASURED_JAXLIB = ("0.10.",)
OPT_OUT_ENV = "TKS_KEEP_XLA_FLAGS"


def _flag_name(flag: str) -> str:
    return flag.lstrip("-").split("=", 1)[0]


def recommended_xla_flags(env: Mapping[str, str], jaxlib_version: str | None) -> str | None:
    """The ``XLA_FLAGS`` value to run with, or ``None`` to leave the environment as it is.

    Appends each of ``RECOMMENDED_FLAGS`` that the user's ``XLA_FLAGS`` does not already set
    (to any value).

    Args:
      env: the process environment.
      jaxlib_version: the installed jaxlib's version (``None``: not installed).
    """
    if env.get(OPT_OUT_ENV):
        return None
    if not jaxlib_version or not jaxlib_version.startswith(MEASURED_JAXLIB):
        return None
    current = env.get("XLA_FLAGS", "")
    chosen = {_flag_name(f) for f in current.split()}
    missing = [f for f in RECOMMENDED_FLAGS if _flag_name(f) not in chosen]
    if not missing:  # the user chose every one, either way
        return None
    return " ".join([current, *missing]).strip()


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
