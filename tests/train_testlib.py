"""Helpers shared by the training tests (not a test module): tiny configs and subprocess runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def tiny_config(**overrides) -> ml_collections.ConfigDict:
    """mnist_default shrunk to synthetic 16x16 data, VGG-SNN width 1/8, T = 2, 2 steps/epoch."""
    from configs import mnist_default

    c = mnist_default.get_config()
    c.unlock()
    c.experiment = "tiny"
    c.data.name = "synthetic"
    c.data.image_shape = (16, 16, 1)  # VGG-SNN pools 4 times: 16 -> 1
    c.data.num_classes = 4
    c.data.synthetic_examples = 16
    c.data.max_train_examples = None
    c.data.max_eval_examples = None
    c.num_steps = 2
    c.batch_size = 8  # 16 examples -> 2 steps per epoch
    c.eval_batch_size = 8
    c.num_epochs = 2
    c.optimizer.schedule_granularity = "epoch"
    c.log_every_steps = 1
    c.checkpoint_every_steps = 2
    c.async_checkpointing = False
    c.tensorboard = False
    for key, value in overrides.items():
        target = c
        *path, last = key.split(".")
        for p in path:
            target = target[p]
        target[last] = value
    return c


def run_child(script: str, *args: str, env: dict | None = None, timeout: float = 120):
    """Runs ``script`` (Python source) in a fresh interpreter from the repo root."""
    full_env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", script, *args], cwd=REPO, env=full_env, capture_output=True,
        text=True, timeout=timeout,
    )


def dump_config(config: ml_collections.ConfigDict, path: str) -> str:
    with open(path, "w") as f:
        json.dump(config.to_dict(), f)
    return path


def load_final_params(workdir: str) -> dict:
    """The params of the latest checkpoint in ``workdir`` as a flat ``{path: np.ndarray}``.

    Restores with the topology that wrote the checkpoint (call it in a process like the writer).
    """
    import jax
    import orbax.checkpoint as ocp

    from tks_jax.training import checkpointing

    manager = checkpointing.make_manager(
        os.path.join(workdir, "checkpoints"), max_to_keep=10, async_save=False
    )
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    manager.close()
    flat = jax.tree_util.tree_flatten_with_path(restored["state"]["params"])[0]
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}, step


def tiny_model(num_classes: int = 4):
    """A one-conv spiking net (conv -> BN -> LIF -> mean pool -> dense): compiles in seconds.

    Same calling convention as ``tks_jax.models``; its LIF sows firing statistics.
    """
    import flax.linen as nn
    import jax.numpy as jnp

    from tks_jax.models import layers

    class TinySNN(nn.Module):
        num_classes: int

        @nn.compact
        def __call__(self, x, *, num_steps: int, train: bool = False):
            if x.ndim == 4:  # static: direct encoding, repeated over T
                x = jnp.broadcast_to(x, (num_steps, *x.shape))
            t, b = x.shape[:2]
            y = nn.Conv(4, (3, 3), use_bias=False)(x.reshape((t * b, *x.shape[2:])))
            y = nn.BatchNorm(use_running_average=not train, momentum=0.9)(y)
            s = layers.LIF()(y.reshape((t, b, *y.shape[1:])))
            return nn.Dense(self.num_classes)(s.mean(axis=(2, 3)))

    return TinySNN(num_classes)


CHILD_PREAMBLE = """
import json, os, signal, sys
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
import jax
"""
