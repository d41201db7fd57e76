"""A jitted function compiled ahead of time, one executable per argument signature.

For training entry points: ``jax.jit(...).lower(*args).compile()`` builds the executable
before the first step runs, so that the heap the compiler freed can be given back to the OS
(``host_memory``, opt-in) before the step's buffers are allocated on top of it. Which
executable a call uses is decided up front from the arguments' signature: the tree structure
and, per leaf, shape, dtype, weak type and (for ``jax.Array`` leaves) sharding.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import jax

from tks_jax.training import host_memory


def signature(args: tuple) -> Hashable:
    """What an executable is compiled for: the tree structure of ``args`` and, per leaf,
    its abstract value (shape, dtype, weak type) and, for a ``jax.Array``, its sharding."""
    leaves, treedef = jax.tree.flatten(args)
    return treedef, tuple(
        (jax.typeof(x), x.sharding if isinstance(x, jax.Array) else None) for x in leaves
    )


def _shardings_match(args: tuple, compiled: jax.stages.Compiled) -> bool:
    """Whether every ``jax.Array`` in ``args`` is placed as the executable expects (other
    leaves, NumPy arrays and Python scalars, are transferred by the call)."""
    leaves = jax.tree.leaves(args)
    expected = jax.tree.leaves(compiled.input_shardings[0])
    if len(leaves) != len(expected):
        return False
    return all(
        x.sharding.is_equivalent_to(s, x.ndim)
        for x, s in zip(leaves, expected, strict=True)
        if isinstance(x, jax.Array)
    )


def trims_host_memory() -> bool:
    """Whether the entry points give the compiler's freed heap back after compiling: on the
    CPU backend only, where the step's buffers live in the same heap (on an accelerator they
    do not, and the trim would only cost time)."""
    return jax.default_backend() == "cpu"


class CompiledOnFirstCall:
    """Runs a ``jax.jit``-ed function through executables compiled ahead of each new signature.

    The first call with a given signature (``signature``) lowers and compiles ``jitted`` for
    these arguments; later calls with the same signature run that executable. If the
    arguments are placed differently from what the executable expects (a sharding that
    ``jit`` would handle), calls with that signature go to ``jitted`` instead. Errors of the
    function itself (wrong shapes inside, for example) surface from the compilation.

    Attributes:
      jitted: the wrapped ``jax.jit`` function.
      release_host_memory: after each compilation, give the heap the compiler freed back to
        the OS (``host_memory.release_freed_memory``); meant for training entry points.
    """

    def __init__(self, jitted: Callable, *, release_host_memory: bool = False):
        """Wraps ``jitted`` (the result of ``jax.jit``; positional arguments only)."""
        if not hasattr(jitted, "lower"):
            raise TypeError(
                f"CompiledOnFirstCall needs a jax.jit-ed function (with .lower), got {jitted!r}."
            )
        self.jitted = jitted
        self.release_host_memory = release_host_memory
        self._executables: dict[Hashable, Callable] = {}
        self._num_compilations = 0

    def num_compilations(self) -> int:
        """Executables built so far: one per signature seen (ahead of time, or by ``jit`` for
        a signature whose placement the ahead-of-time executable does not take)."""
        return self._num_compilations

    def __call__(self, *args: Any) -> Any:
        key = signature(args)
        executable = self._executables.get(key)
        if executable is None:
            executable = self._compile(args)
            self._executables[key] = executable
        return executable(*args)

    def _compile(self, args: tuple) -> Callable:
        compiled = self.jitted.lower(*args).compile()
        self._num_compilations += 1
        if self.release_host_memory:
            host_memory.release_freed_memory()
        if _shardings_match(args, compiled):
            return compiled
        self._num_compilations += 1  # jit compiles its own executable for this signature
        return self.jitted
