"""train.py's default XLA flags: added only when safe, never over the user's choice."""

import importlib.metadata
import os
import subprocess
import sys

import pytest

from tks_jax.training import xla_env

SCHED = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
REGION = "--xla_cpu_copy_insertion_use_region_analysis=true"
FLAG = f"{SCHED} {REGION}"


@pytest.mark.parametrize(
    "env,version,want",
    [
        ({}, "0.10.2", FLAG),  # measured version, nothing set: add them
        ({"XLA_FLAGS": "--xla_dump_to=/tmp/d"}, "0.10.0", "--xla_dump_to=/tmp/d " + FLAG),
        # The user already chose one (either value): only the other is added.
        ({"XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=true"}, "0.10.2",
         "--xla_cpu_enable_concurrency_optimized_scheduler=true " + REGION),
        ({"XLA_FLAGS": "--xla_cpu_copy_insertion_use_region_analysis=false"}, "0.10.2",
         "--xla_cpu_copy_insertion_use_region_analysis=false " + SCHED),
        ({"XLA_FLAGS": SCHED}, "0.10.2", SCHED + " " + REGION),
        ({"XLA_FLAGS": FLAG}, "0.10.2", None),  # both chosen: untouched
        # A flag name inside another flag's value is not a choice of that flag.
        ({"XLA_FLAGS": "--xla_dump_to=/tmp/xla_cpu_copy_insertion_use_region_analysis"},
         "0.10.2", "--xla_dump_to=/tmp/xla_cpu_copy_insertion_use_region_analysis " + FLAG),
        ({"TKS_KEEP_XLA_FLAGS": "1"}, "0.10.2", None),  # opt-out
        ({}, "0.11.0", None),  # not measured there: an unknown flag would abort XLA
        ({}, "0.1.0", None),  # "0.1." is not "0.10."
        ({}, None, None),  # no jaxlib
    ],
)
def test_recommended_xla_flags(env, version, want):
    assert xla_env.recommended_xla_flags(env, version) == want


def test_apply_sets_the_environment_it_is_given(monkeypatch):
    monkeypatch.setattr(xla_env.importlib.metadata, "version", lambda name: "0.10.2")
    env = {"XLA_FLAGS": "--a=1"}
    assert xla_env.apply_recommended_xla_flags(env) == "--a=1 " + FLAG
    assert env["XLA_FLAGS"] == "--a=1 " + FLAG
    assert xla_env.apply_recommended_xla_flags(env) is None  # idempotent
    monkeypatch.setattr(xla_env.importlib.metadata, "version", lambda name: "0.12.0")
    env = {}
    assert xla_env.apply_recommended_xla_flags(env) is None and env == {}


@pytest.mark.slow  # a child process
def test_train_py_sets_the_flags_before_xla_reads_them(tmp_path):
    # A probe flag XLA does not know makes it abort when it creates the backend: seeing that
    # abort proves train.main sets XLA_FLAGS early enough for the real flag to take effect.
    code = (
        "import importlib.metadata, sys\n"
        "sys.argv = ['train.py', '--config', 'configs/mnist_default.py', '--workdir', "
        f"{str(tmp_path / 'w')!r}, '--config.smoke=True']\n"
        "import train\n"
        "from tks_jax.training import xla_env\n"
        "xla_env.MEASURED_JAXLIB = (importlib.metadata.version('jaxlib'),)\n"
        "xla_env.RECOMMENDED_FLAGS = ('--tks_probe_flag_xyz',)\n"
        "from absl import app\n"
        "app.run(train.main)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_env.OPT_OUT_ENV)}
    env["JAX_PLATFORMS"] = "cpu"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert "Unknown flag in XLA_FLAGS: --tks_probe_flag_xyz" in proc.stderr, proc.stderr[-2000:]
    assert not os.path.exists(tmp_path / "w" / "checkpoints")  # stopped before training


def test_the_benchmarks_run_with_the_same_flags():
    from benchmarks import train_step

    assert train_step.RECOMMENDED_XLA_FLAGS == " ".join(xla_env.RECOMMENDED_FLAGS)


# Two training steps of a small ResNet-19 (Winograd convolutions, LIF scans: the loops whose
# copies region analysis changes) under the XLA_FLAGS given; prints a digest of the state and
# losses. The child does not go through train.py, so it runs with exactly those flags.
_STEP_DIGEST = r"""
import hashlib, sys
import numpy as np
import jax
from benchmarks.train_step import build_step
step, (state, x, y), _ = build_step(
    {"model": "resnet19", "batch": 2, "width": 0.125, "mode": "train", "source": "tks"})
losses = []
for _ in range(2):
    state, loss = step(state, x, y)
    losses.append(loss)
h = hashlib.sha256()
for a in jax.tree.leaves((state, losses)):
    h.update(np.asarray(a).tobytes())
print(h.hexdigest())
"""


@pytest.mark.slow  # two child processes, each compiling a training step
@pytest.mark.skipif(
    not importlib.metadata.version("jaxlib").startswith(xla_env.MEASURED_JAXLIB),
    reason="the flags are only added (and known to XLA) on the jaxlib versions measured",
)
def test_the_recommended_flags_leave_training_bitwise_equal():
    # Only the scheduler flag before; both now. A flag that changed the arithmetic would
    # change the digest (the study's records are compared bitwise across reruns).
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digests = []
    for flags in (SCHED, FLAG):
        env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
        proc = subprocess.run([sys.executable, "-c", _STEP_DIGEST], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        digests.append(proc.stdout.split()[-1])
    assert digests[0] == digests[1]
