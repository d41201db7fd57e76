"""Deprecated home of the training tests' helpers: they live in ``tests/conftest.py``.

Kept importable (``import train_testlib as tl``) for the test modules and the child processes
that still use it; new code uses ``conftest``'s fixtures or its helpers.
"""

from conftest import (  # noqa: F401
    CHILD_PREAMBLE,
    REPO,
    dump_config,
    load_final_params,
    run_child,
    tiny_config,
    tiny_model,
)
