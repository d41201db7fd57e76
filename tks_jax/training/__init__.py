"""Training and evaluation: state, steps, sharding, checkpointing, the loop, logging."""

from tks_jax.training.config_lib import validate_config
from tks_jax.training.loop import (
    NonFiniteLossError,
    evaluate_state,
    evaluate_workdir,
    train_and_evaluate,
)

__all__ = [
    "NonFiniteLossError", "evaluate_state", "evaluate_workdir", "train_and_evaluate",
    "validate_config",
]
