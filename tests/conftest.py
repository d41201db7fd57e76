"""Shared test helpers and fixtures.

Helpers (plain functions, also used by child processes through ``train_testlib``):
``tiny_config``, ``tiny_model``, ``run_child``, ``dump_config``, ``load_final_params``,
``CHILD_PREAMBLE`` and ``write_fake_study`` (a hand-made ablation results folder).

Fixtures: ``fake_study`` (a results folder, aggregated), ``fake_study_writer`` and
``repo_root``.

The repository root is importable in tests through ``pythonpath`` in pyproject's pytest section
(``configs``, ``benchmarks``); child processes get it through ``PYTHONPATH`` (``run_child``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


# ------------------------------------------------------------------------------------------
# A hand-made ablation results folder (no training): known numbers in, known tables out.
# ------------------------------------------------------------------------------------------

# top-1 per (setting, loss) and seed; AURC = 100 * (1 - top1) so it is known too.
FAKE_TOP1 = {
    ("mnist", "baseline"): [0.90, 0.92, 0.94],
    ("mnist", "ls"): [0.91, 0.91, 0.91],
    ("mnist", "tet"): [0.93, 0.95, 0.94],
    ("mnist", "tks"): [0.96, 0.95, 0.97],
    ("nmnist_synth", "baseline"): [0.80, 0.82, 0.84],
    ("nmnist_synth", "tks"): [0.78, 0.80, 0.82],
}
FAKE_T = {"mnist": 4, "nmnist_synth": 10}
FAKE_SWEEP = {"baseline": {1: 0.5, 2: 0.7}, "tks": {1: 0.6, 2: 0.69}}
FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _fake_per_step(top1: float, t: int, loss: str) -> list[float]:
    # baseline: first step far below; tks: flat. Every tks step beats the baseline's on mnist.
    if loss == "tks":
        return [top1 - 0.01] * t
    return [top1 - 0.3 + 0.3 * k / max(1, t - 1) for k in range(t)]


# Anytime sections of the nmnist_synth main runs: mean steps and energy (µJ) per seed; the
# exit rule's accuracy is 0.2 points below all T steps.
FAKE_ANYTIME = {
    "baseline": {"steps": [6.0, 6.5, 7.0], "energy_uj": [2.0, 2.1, 2.2]},
    "tks": {"steps": [3.0, 3.2, 3.4], "energy_uj": [1.0, 1.1, 1.2]},
}


def _fake_anytime(loss, seed, t, top1):
    steps, energy = FAKE_ANYTIME[loss]["steps"][seed], FAKE_ANYTIME[loss]["energy_uj"][seed]
    summary = {"accuracy": top1 - 0.002, "mean_steps": steps, "median_steps": steps,
               "p90_steps": float(t), "p99_steps": float(t)}
    return {"threshold": 0.9, "confidence": "softmax", "max_drop": 0.005,
            "validation": summary, "test": summary, "full_accuracy": top1,
            "energy_pj_per_image": energy * 1e6, "energy_pj_full": 4e6,
            "curve_fixed_k": {"mean_steps": list(range(1, t + 1)), "accuracy": [top1] * t}}


def _fake_record(name, setting, loss, seed, t, studies, metrics, silhouette, wall_s, cpu_s,
                 anytime=None):
    return {"anytime": anytime, "name": name, "setting": setting, "loss": loss, "seed": seed,
            "num_steps": t,
            "studies": studies, "budget": "smoke", "step": 10, "wall_s": wall_s,
            "cpu_s": cpu_s, "metrics": metrics, "silhouette": silhouette,
            "feature_examples": 60,
            "provenance": {"git": {"commit": FAKE_COMMIT, "dirty": False},
                           "versions": {"jax": "0.0"}, "machine": {"backend": "cpu"},
                           "arithmetic": {"conv": "auto", "dtype": "float32", "remat": False},
                           "config": {"seed": seed, "loss": {"name": loss}}}}


def write_fake_study(out_dir: str, *, num_classes: int = 3, n: int = 60) -> None:
    """Writes ``runs.jsonl`` (18 main runs of ``FAKE_TOP1`` and 4 sweep runs of
    ``FAKE_SWEEP``), the features of the t-SNE runs and a ``study.json``.

    Silhouettes are those of the written features (tks: tighter clusters than the others).
    """
    from tks_jax.experiments import features, records

    rng = np.random.default_rng(0)
    lines = []
    for (setting, loss), values in FAKE_TOP1.items():
        t = FAKE_T[setting]
        for seed, top1 in enumerate(values):
            name = f"{setting}_{loss}_T{t}_s{seed}"
            per_step = _fake_per_step(top1, t, loss)
            metrics = {
                "top1": top1, "top5": 1.0, "aurc_logit": 100 * (1 - top1),
                "aurc_softmax": 90 * (1 - top1), "first_k_accuracy": [per_step[0]] + [top1] * (
                    t - 1), "per_step_accuracy": per_step, "num_examples": n,
                "per_class_accuracy_first_step": [per_step[0]] * (num_classes - 1) + [None],
            }
            labels = np.arange(n) % num_classes
            spread = 0.2 if loss == "tks" else 1.0
            feats = (3.0 * np.eye(num_classes)[labels]
                     + spread * rng.normal(size=(n, num_classes))).astype(np.float32)
            run_dir = records.run_dir(out_dir, name)
            os.makedirs(run_dir, exist_ok=True)
            np.savez(os.path.join(run_dir, records.FEATURES_NPZ), features=feats,
                     labels=labels.astype(np.int32))
            anytime = _fake_anytime(loss, seed, t, top1) if setting == "nmnist_synth" else None
            lines.append(_fake_record(name, setting, loss, seed, t, ["main"], metrics,
                                      features.silhouette(feats, labels), 2.0, 3.0, anytime))
    for loss, per_t in FAKE_SWEEP.items():
        for t, v in per_t.items():
            metrics = {"top1": v, "top5": 1.0, "aurc_logit": 1.0, "aurc_softmax": 1.0,
                       "first_k_accuracy": [v] * t, "per_step_accuracy": [v] * t,
                       "num_examples": n, "per_class_accuracy_first_step": [v] * num_classes}
            lines.append(_fake_record(f"nmnist_synth_{loss}_T{t}_s0", "nmnist_synth", loss, 0,
                                      t, ["sweep"], metrics, 0.0, 1.0, 1.0))
    os.makedirs(out_dir, exist_ok=True)
    records.append_records(out_dir, lines)
    with open(os.path.join(out_dir, "study.json"), "w") as f:
        json.dump({"budget": "smoke", "sessions": [{
            "started": "2026-01-01 00:00:00", "wall_s": 60.0, "runs_trained": 22, "jobs": 1,
            "studies": ["main", "sweep"], "seeds": [0, 1, 2],
            "losses": ["baseline", "ls", "tet", "tks"], "sweep_steps": [1, 2, 10],
            "machine": "test"}]}, f)


# ------------------------------------------------------------------------------------------
# Fixtures.
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def repo_root() -> str:
    """The repository root (for paths to configs/, notebooks/, results/)."""
    return REPO


@dataclasses.dataclass(frozen=True)
class FakeStudy:
    """An aggregated hand-made results folder and the numbers it was made from."""

    out: str
    results: dict
    top1: dict = dataclasses.field(default_factory=lambda: FAKE_TOP1)
    sweep: dict = dataclasses.field(default_factory=lambda: FAKE_SWEEP)
    commit: str = FAKE_COMMIT


@pytest.fixture(scope="module")
def fake_study(tmp_path_factory) -> FakeStudy:
    """A hand-made results folder (``write_fake_study``), aggregated once per test module.
    Read it, do not modify it."""
    from tks_jax.experiments import aggregate

    out = str(tmp_path_factory.mktemp("fake_study"))
    write_fake_study(out)
    return FakeStudy(out, aggregate.aggregate(out, log=lambda _: None))


@pytest.fixture
def fake_study_writer():
    """``write_fake_study(out_dir)``: writes an unaggregated hand-made results folder."""
    return write_fake_study
