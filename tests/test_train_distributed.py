"""Data parallelism: 8 simulated CPU devices and two processes (jax.distributed, gloo)
reproduce the single-device run (BatchNorm over the global batch)."""

import os
import socket

import jax
import numpy as np
import pytest
import train_testlib as tl

from tks_jax import train_lib
from tks_jax.training import loop

pytestmark = pytest.mark.slow

STEPS = 3

CHILD = tl.CHILD_PREAMBLE + """
mode, cfg_path, workdir, out = sys.argv[1:5]
if mode == "devices8":
    jax.config.update("jax_num_cpu_devices", 8)
else:  # "proc0" / "proc1": two processes on localhost
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(sys.argv[5], num_processes=2, process_id=int(mode[-1]))
import ml_collections
import numpy as np
import train_testlib as tl
from tks_jax import train_lib
from tks_jax.training import loop
config = ml_collections.ConfigDict(json.load(open(cfg_path)))
if mode == "devices8":  # a batch that does not split over 8 devices is refused up front
    bad = ml_collections.ConfigDict(config.to_dict())
    bad.batch_size = 12
    try:
        train_lib.train_and_evaluate(bad, workdir + "_bad", model=tl.tiny_model())
    except ValueError as e:
        print("BATCH_ERROR", e)
losses = []
result = train_lib.train_and_evaluate(
    config, workdir, model=tl.tiny_model(),
    step_hooks=[lambda s, m: losses.append(float(m["loss"]))])
print("DEVICES", jax.device_count(), "PROCESSES", jax.process_count())
params, step = tl.load_final_params(workdir)
if jax.process_index() == 0:
    np.savez(out, losses=np.array(losses), step=step, **params)
"""


def _config():
    return tl.tiny_config(max_train_steps=STEPS)


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    if jax.device_count() != 1:
        pytest.skip("the reference run needs a single-device pytest process")
    workdir = tmp_path_factory.mktemp("one")
    losses = []
    train_lib.train_and_evaluate(_config(), str(workdir), model=tl.tiny_model(),
                                 step_hooks=[lambda s, m: losses.append(float(m["loss"]))])
    return np.array(losses), tl.load_final_params(str(workdir))[0]


def _compare(single_device, out):
    losses, params = single_device
    other = np.load(out)
    np.testing.assert_allclose(other["losses"], losses, rtol=1e-5, atol=1e-5)
    assert other["step"] == STEPS
    for key in params:
        np.testing.assert_allclose(other[key], params[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_eight_devices_match_one(single_device, tmp_path):
    cfg = tl.dump_config(_config(), str(tmp_path / "c.json"))
    out = str(tmp_path / "out.npz")
    proc = tl.run_child(CHILD, "devices8", cfg, str(tmp_path / "run"), out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DEVICES 8 PROCESSES 1" in proc.stdout
    assert ("BATCH_ERROR Invalid config: batch_size=12 is not divisible by the number of "
            "devices (8)") in proc.stdout
    _compare(single_device, out)
    # A checkpoint written by 8 devices restores onto this single-device process.
    rep = loop.evaluate_workdir(str(tmp_path / "run"), model=tl.tiny_model())
    assert rep["run"]["step"] == STEPS and rep["metrics"]["num_examples"] == 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(single_device, tmp_path):
    """Two hosts on localhost, each feeding half of every batch (CPU collectives via gloo)."""
    import subprocess
    import sys

    cfg = tl.dump_config(_config(), str(tmp_path / "c.json"))
    out = str(tmp_path / "out.npz")
    address = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ, PYTHONPATH=tl.REPO, JAX_PLATFORMS="cpu")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, f"proc{i}", cfg, str(tmp_path / "run"), out, address],
            cwd=tl.REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    results = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append((p.returncode, stdout, stderr))
    for rc, stdout, stderr in results:
        assert rc == 0, stderr[-3000:]
        assert "DEVICES 2 PROCESSES 2" in stdout
    _compare(single_device, out)
    # Each host checkpointed its own data-iterator position.
    data_dir = tmp_path / "run" / "checkpoints" / str(STEPS) / "data"
    files = sorted(f for f in os.listdir(data_dir) if f.startswith("process_"))
    assert files == ["process_0-of-2.json", "process_1-of-2.json"]
