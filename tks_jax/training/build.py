"""Building blocks shared by training and evaluation: cluster start, model, initial state."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from tks_jax.training.errors import ConfigError


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """Calls ``jax.distributed.initialize()`` (auto-detected cluster) if ``config.distributed``.

    Raises:
      ConfigError: ``distributed=True`` but no cluster was detected.
    """
    if config.get("distributed", False) and not jax.distributed.is_initialized():
        try:
            jax.distributed.initialize()
        except (ValueError, KeyError) as e:  # KeyError: a launcher's variables half set
            raise ConfigError(
                f"config.distributed=True but no cluster was detected ({e}). Run under a "
                "supported launcher (SLURM, Cloud TPU, Open MPI, Kubernetes) or set "
                "JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID on "
                "every process; for one machine pass --config.distributed=False."
            ) from None
        except RuntimeError as e:  # JAX already ran a computation in this process
            raise ConfigError(
                f"config.distributed=True needs a fresh process: {e} Start training in a new "
                "Python process (e.g. python train.py), or pass --config.distributed=False."
            ) from None


def build_model(config: ml_collections.ConfigDict, num_classes: int):
    """``tks_jax.models.get_model`` with every option spelled out in ``config.model``."""
    from tks_jax import models

    options = {k: v for k, v in config.model.to_dict().items() if k != "name"}
    if options.get("norm") == "tebn":
        options["num_steps"] = config.num_steps  # TEBN sizes its per-step scales from T.
    return models.get_model(config.model.name, num_classes=num_classes, **options)


def model_step_limit(model) -> int | None:
    """The largest T the model supports (TEBN), or None."""
    from tks_jax import models

    return models.max_num_steps(model)


def _dummy_input(info, num_steps: int) -> jnp.ndarray:
    shape = tuple(info.input_shape)
    if info.is_event:
        frame = shape[1:] if len(shape) == 4 else shape  # [T, H, W, C] or [H, W, C]
        return jnp.zeros((num_steps, 1, *frame), jnp.float32)
    return jnp.zeros((1, *shape), jnp.float32)


def make_init_fn(model, tx, info, config) -> Callable[[jax.Array], dict]:
    """``init(rng) -> state`` building params, BN statistics and optimiser state."""

    def init(rng):
        variables = model.init(rng, _dummy_input(info, config.num_steps),
                               num_steps=config.num_steps, train=False)
        params = variables["params"]
        return {
            "params": params,
            "batch_stats": variables.get("batch_stats", {}),
            "opt_state": tx.init(params),
            "step": jnp.zeros((), jnp.int32),
            "rng": rng,
            "first_nonfinite_step": jnp.full((), -1, jnp.int32),
        }

    return init


# What the initial state compiles with on CPU. The program is random-number generation only
# (the forward pass ``model.init`` traces does not reach any output and is removed), it runs
# once per training run, and LLVM's default optimisation level (2) spends most of its
# compilation time on the Threefry loops; at level 1 it compiles in less than half the time
# and gives the same state bit for bit (checked for VGG-SNN and ResNet-19 in
# tests/test_train_optim.py).
INIT_COMPILER_OPTIONS_CPU = {"xla_backend_optimization_level": 1}


def _compiled_for_init(jitted: Callable, *args) -> Callable:
    lowered = jitted.lower(*args)
    if jax.default_backend() == "cpu":
        try:
            return lowered.compile(compiler_options=INIT_COMPILER_OPTIONS_CPU)
        except Exception as e:  # an XLA that no longer knows the option: compile as jit does
            if "No such compile option" not in str(e):
                raise
    return lowered.compile()


def initial_state(init_fn, seed: int, sharding) -> dict:
    """``init_fn(PRNGKey(seed))``, compiled once, each leaf placed on ``sharding`` (a tree
    of shardings like the state, or one for every leaf). On CPU it compiles with
    ``INIT_COMPILER_OPTIONS_CPU``."""
    rng = jax.random.PRNGKey(seed)
    return _compiled_for_init(jax.jit(init_fn, out_shardings=sharding), rng)(rng)


def init_variables(model, rng: jax.Array, x, **kwargs) -> dict:
    """``model.init(rng, x, **kwargs)`` as one program, compiled like ``initial_state`` (same
    values as under ``jax.jit``). Called eagerly, ``model.init`` runs, and compiles, the
    network's forward pass one operation at a time; benchmarks and tests use this instead."""
    jitted = jax.jit(functools.partial(model.init, **kwargs))
    return _compiled_for_init(jitted, rng, x)(rng, x)


def abstract_state(init_fn, sharding) -> dict:
    """Shapes and dtypes of ``init_fn``'s state (no computation), each leaf on ``sharding``.

    Raises:
      ConfigError: the model cannot be built or initialised with these options (e.g. an
        unknown norm or a non-positive width).
    """
    try:
        abstract = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"Invalid config: the model cannot be initialised: {e}") from None
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        abstract)
