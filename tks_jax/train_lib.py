"""Training library entry points (the loop lives in ``tks_jax.training``).

Usage from a notebook::

    from configs import mnist_default
    from tks_jax import train_lib
    result = train_lib.train_and_evaluate(mnist_default.get_config(), "runs/mnist")
"""

from tks_jax.training import (
    NonFiniteLossError,
    evaluate_state,
    evaluate_workdir,
    train_and_evaluate,
    validate_config,
)
from tks_jax.training.errors import (
    CheckpointRestoreError,
    ConfigError,
    DiskFullError,
    NonFiniteParamsError,
    TrainingError,
    WorkdirError,
    WorkdirLockedError,
)

__all__ = [
    "CheckpointRestoreError", "ConfigError", "DiskFullError", "NonFiniteLossError",
    "NonFiniteParamsError", "TrainingError", "WorkdirError", "WorkdirLockedError",
    "evaluate_state", "evaluate_workdir", "train_and_evaluate", "validate_config",
]
