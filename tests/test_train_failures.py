"""Failure handling of a training run (README "Failure handling"): workdir lock, validation
before deleting, run artefacts, bad and corrupted checkpoints, keep policy, resuming with
changed optimiser settings, disk full, non-finite evaluation, CLI errors, exit codes.

One 4-step run of the one-conv SNN is shared; each test works on a copy of it.
"""

import errno
import json
import os
import shutil
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import train_testlib as tl

from tks_jax import cli, report, train_lib
from tks_jax.training import build, checkpointing, errors, evaluate_run, optim, sharding
from tks_jax.training import workdir as workdir_lib

pytestmark = pytest.mark.slow


def _train(workdir, config=None, hooks=(), model=None):
    config = config or tl.tiny_config()
    return train_lib.train_and_evaluate(config, str(workdir), model=model or tl.tiny_model(),
                                        step_hooks=hooks)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """4 steps (2 epochs of 2), checkpoints at steps 2 and 4."""
    workdir = tmp_path_factory.mktemp("straight")
    result = _train(workdir)
    return workdir, result


@pytest.fixture
def run_copy(straight, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(straight[0], workdir)
    return workdir


class _Iterator:
    """Stands in for the data iterator: records the restored position."""

    def __init__(self, position=0):
        self.position = position
        self.restored = None

    def get_state(self):
        return {"position": self.position}

    def set_state(self, state):
        self.restored = state


# --- 1. Lock ------------------------------------------------------------------------------

HOLDER = """
import sys, time
from tks_jax.training import workdir
lock = workdir.WorkdirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_second_run_is_refused_while_the_first_holds_the_workdir(run_copy, tmp_path):
    import subprocess

    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_copy)], stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=tl.REPO), cwd=tl.REPO)
    try:
        assert child.stdout.readline().strip() == "locked"
        holder = workdir_lib.read_lock_holder(str(run_copy))
        assert holder["pid"] == child.pid
        with pytest.raises(errors.WorkdirLockedError,
                           match=rf"{run_copy}.*in use.*pid {child.pid} on host"):
            _train(run_copy)
        proc = _cli("--config", "configs/mnist_default.py", "--config.smoke=True",
                    "--workdir", str(run_copy))
        lines = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
        assert proc.returncode == 3 and len(lines) == 1, proc.stderr[-2000:]
        assert f"Workdir '{run_copy}' is in use" in lines[0] and f"pid {child.pid}" in lines[0]
        # evaluate reads without the lock while the run holds it.
        rep = train_lib.evaluate_workdir(str(run_copy), model=tl.tiny_model())
        assert rep["run"]["step"] == 4
    finally:
        child.kill()
        child.wait()
    # The holder died (SIGKILL): the kernel released its lock; the next run takes it over.
    lock = workdir_lib.WorkdirLock(str(run_copy)).acquire()
    assert lock.previous_holder["pid"] == child.pid
    # A second lock on the same workdir, even in this process, is refused.
    with pytest.raises(errors.WorkdirLockedError, match=f"pid {os.getpid()}"):
        workdir_lib.WorkdirLock(str(run_copy)).acquire()
    lock.release()
    workdir_lib.WorkdirLock(str(run_copy)).acquire().release()  # released: free again


# --- 2-3. Overwrite validates first; any artefact marks a run ------------------------------


def _snapshot(workdir) -> dict:
    return {str(p.relative_to(workdir)): p.stat().st_size for p in workdir.rglob("*")
            if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("overrides, match", [
    ({"model.norm": "foo"}, "Unknown norm 'foo'"),
    ({"batch_size": 4096, "eval_batch_size": 8}, "batch_size=4096 is larger than the 16"),
    ({"loss.temperature": -1.0}, "loss.temperature must be > 0"),
])
def test_overwrite_validates_everything_before_deleting(run_copy, overrides, match):
    before = _snapshot(run_copy)
    config = tl.tiny_config(overwrite=True, **overrides)
    with pytest.raises(errors.ConfigError, match=match):
        train_lib.train_and_evaluate(config, str(run_copy))  # builds the model from config
    assert _snapshot(run_copy) == before


def test_run_artefacts_without_checkpoints_are_not_silently_replaced(run_copy):
    shutil.rmtree(run_copy / "checkpoints")  # e.g. deleted to save space
    before = _snapshot(run_copy)
    with pytest.raises(errors.WorkdirError, match=r"incompatible config \(loss.temperature"):
        _train(run_copy, tl.tiny_config(**{"loss.temperature": 2.0}))
    assert _snapshot(run_copy) == before
    os.remove(run_copy / "config.json")  # report and metrics of an unknown config
    with pytest.raises(errors.WorkdirError, match="holds run files .*metrics.jsonl.* but no "
                                                  "config.json"):
        _train(run_copy)


# --- 4-5. Bad checkpoints -----------------------------------------------------------------


def _largest_array_file(step_dir: str) -> str:
    files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "state"))
             for f in fs if os.sep + "d" + os.sep in os.path.join(r, f)]
    return max(files, key=os.path.getsize)


def _truncate(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _flip_bit(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x10]))


def _corrupt(step_dir: str, kind: str) -> None:
    if kind == "truncated array file":
        _truncate(_largest_array_file(step_dir))
    elif kind == "flipped bit":
        _flip_bit(_largest_array_file(step_dir))
    elif kind == "missing manifest":
        os.remove(os.path.join(step_dir, "state", "manifest.ocdbt"))
    elif kind == "missing state":
        shutil.rmtree(os.path.join(step_dir, "state"))
    elif kind == "truncated iterator file":
        _truncate(os.path.join(step_dir, "data", "process_0-of-1.json"))
    elif kind == "empty step folder":
        shutil.rmtree(step_dir)
        os.mkdir(step_dir)
    else:
        raise AssertionError(kind)


KINDS = ["truncated array file", "flipped bit", "missing manifest", "missing state",
         "truncated iterator file", "empty step folder"]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_latest_checkpoint_is_moved_aside_and_the_previous_restores(run_copy, kind):
    ckpt = run_copy / "checkpoints"
    assert os.path.exists(ckpt / "4" / checkpointing.INTEGRITY_FILE)
    _corrupt(str(ckpt / "4"), kind)
    manager = checkpointing.make_manager(str(ckpt), max_to_keep=3, async_save=False)
    warnings, iterator = [], _Iterator()
    state, step, moved = checkpointing.restore_newest(manager, None, iterator,
                                                      warn=warnings.append)
    manager.close()
    assert step == 2 and moved == [4] and int(state["step"]) == 2
    expected = json.load(open(ckpt / "2" / "data" / "process_0-of-1.json"))["value"]
    assert iterator.restored == expected  # step 2's iterator position was restored
    assert sorted(os.listdir(ckpt)) == ["2", "4.corrupt"]  # moved, never deleted
    assert len(warnings) == 2 and all("\n" not in w for w in warnings)
    assert f"{ckpt}/4 does not restore" in warnings[0]


def test_no_checkpoint_restores_is_a_clear_error_and_moves_nothing(run_copy):
    ckpt = run_copy / "checkpoints"
    _corrupt(str(ckpt / "4"), "flipped bit")
    _corrupt(str(ckpt / "2"), "missing state")
    with pytest.raises(errors.CheckpointRestoreError,
                       match=r"No checkpoint .* restores \(step 4: .*CRC-32.*; step 2: "):
        _train(run_copy)
    assert sorted(os.listdir(ckpt)) == ["2", "4"]
    assert errors.CheckpointRestoreError.exit_code == 5


def test_bit_flip_is_detected_and_resume_from_the_fallback_is_bitwise(straight, run_copy):
    _flip_bit(_largest_array_file(str(run_copy / "checkpoints" / "4")))
    seen = []
    result = _train(run_copy, hooks=[lambda step, m: seen.append(step)])
    assert seen == [3, 4] and result["step"] == 4  # resumed at 2
    assert sorted(os.listdir(run_copy / "checkpoints")) == ["2", "4", "4.corrupt"]
    a, step_a = tl.load_final_params(str(straight[0]))
    b, step_b = tl.load_final_params(str(run_copy))
    assert step_a == step_b == 4
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# --- 6. Keep policy and resuming with changed optimiser settings ---------------------------


def test_keep_policy_never_rotates_out_the_newest_sane_checkpoint(tmp_path):
    manager = checkpointing.make_manager(str(tmp_path), max_to_keep=2, async_save=False)
    saver = checkpointing.Saver(manager, async_save=False)
    scales = {1: 0.5, 2: 0.7, 3: 2e4, 4: np.inf, 5: 3e9}  # diverging after step 2
    for step, scale in scales.items():
        state = {"params": {"w": jnp.full((3,), scale, jnp.float32)}, "step": jnp.int32(step)}
        saver.save(step, state, _Iterator(step))
    saver.finalize()
    assert sorted(manager.all_steps()) == [2, 4, 5]  # newest 2, plus the newest sane one
    assert saver.newest_sane_step() == 2
    manager.close()
    for step in (2, 4, 5):
        assert checkpointing.verify_integrity(str(tmp_path / str(step)))


def test_resume_with_changes_starts_from_the_newest_sane_checkpoint(run_copy, monkeypatch):
    changed = tl.tiny_config(**{"optimizer.base_learning_rate": 0.016})
    with pytest.raises(errors.WorkdirError, match=r"optimizer.base_learning_rate: 0.032 -> "
                                                  r"0.016.*resume_with_changes"):
        _train(run_copy, changed)
    changed.resume_with_changes = "optimizer.base_learning_rate,model.width"
    with pytest.raises(errors.ConfigError, match=r"only list optimiser/schedule keys.*"
                                                 r"model.width"):
        _train(run_copy, changed)
    # Pretend step 4 diverged (|param| too large): resuming goes back to step 2.
    monkeypatch.setattr(checkpointing.Saver, "newest_sane_step", lambda self: 2)
    changed.resume_with_changes = "optimizer.base_learning_rate"
    seen = []
    _train(run_copy, changed, hooks=[lambda step, m: seen.append((step, float(m["lr"])))])
    peak, floor = 0.016 * 8 / 1024, 1e-5  # the new learning rate from step 3 on
    assert [s for s, _ in seen] == [3, 4]
    assert [lr for _, lr in seen] == pytest.approx([floor + (peak - floor) / 2] * 2, rel=1e-5)
    assert sorted(os.listdir(run_copy / "checkpoints")) == ["2", "4", "4.diverged"]
    stored = json.load(open(run_copy / "config.json"))
    assert stored["optimizer"]["base_learning_rate"] == 0.016
    (entry,) = stored["history"]
    assert entry["step"] == 2
    assert entry["changes"] == {"optimizer.base_learning_rate": [0.032, 0.016]}


def test_grad_clip_can_be_switched_on_without_changing_the_optimizer_state():
    config = tl.tiny_config()
    params = {"w": jnp.arange(3.0)}
    plain = optim.make_optimizer(config, lambda s: 0.1)
    config.optimizer.grad_clip_norm = 1.0
    clipped = optim.make_optimizer(config, lambda s: 0.1)
    state = plain.init(params)
    assert jax.tree.structure(clipped.init(params)) == jax.tree.structure(state)
    grads = {"w": jnp.array([3.0, 4.0, 0.0])}  # norm 5 -> clipped to norm 1
    u_clip, _ = clipped.update(grads, state, params)
    u_ref, _ = plain.update({"w": grads["w"] / 5.0}, state, params)
    np.testing.assert_allclose(u_clip["w"], u_ref["w"], rtol=1e-6)


# --- 7. Disk full -------------------------------------------------------------------------


def test_config_json_is_written_atomically_and_disk_full_is_one_message(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    path.write_text('{"old": true}')

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(errors.DiskFullError, match=rf"No space left .*{path}.*about \d+ bytes "
                                                   r"are needed \(\d+ bytes free\)"):
        workdir_lib.write_config(str(tmp_path), tl.tiny_config())
    assert json.loads(path.read_text()) == {"old": True}  # untouched, never half-written
    assert os.listdir(tmp_path) == ["config.json"]  # no temporary file left


def test_disk_full_during_a_checkpoint_save(tmp_path, monkeypatch):
    def save(self, step, state, iterator):
        partial = tmp_path / "checkpoints" / f"{step}.orbax-checkpoint-tmp-1"
        partial.mkdir(parents=True)
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:  # orbax wraps the OSError
            raise RuntimeError("save failed") from e

    monkeypatch.setattr(checkpointing.Saver, "save", save)
    with pytest.raises(errors.DiskFullError) as info:
        _train(tmp_path)
    message = str(info.value)
    n_bytes = int(message.split("about ")[1].split(" bytes")[0])
    params_bytes = 4 * (3 * 3 * 1 * 4 + 4 * 4 + 4)  # conv, dense, dense bias (float32)
    assert n_bytes > params_bytes and str(tmp_path) in message and "\n" not in message
    assert os.listdir(tmp_path / "checkpoints") == []  # the partial save was removed
    assert info.value.exit_code == 6


# --- 8. Non-finite evaluation -------------------------------------------------------------


def _tiny_state(config, model):
    info = type("Info", (), {"input_shape": (16, 16, 1), "is_event": False})()
    tx = optim.make_optimizer(config, optim.make_schedule(config, 2))
    return jax.jit(build.make_init_fn(model, tx, info, config))(jax.random.PRNGKey(0))


def test_evaluate_refuses_non_finite_parameters_and_logits(run_copy):
    config, model = tl.tiny_config(), tl.tiny_model()
    mesh = sharding.make_mesh()
    state = _tiny_state(config, model)
    nan_state = {**state, "params": jax.tree.map(lambda x: x.at[..., 0].set(jnp.nan),
                                                 state["params"])}
    with pytest.raises(errors.NonFiniteParamsError, match="non-finite values in"):
        evaluate_run.evaluate_state(config, model, nan_state, mesh, False)
    # Finite parameters whose forward pass overflows (a dense kernel of 3e38).
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.full_like(x, 3e38) if "Dense" in jax.tree_util.keystr(p) else x,
        state["params"])
    with pytest.raises(errors.NonFiniteParamsError, match="non-finite logits"):
        evaluate_run.evaluate_state(config, model, {**state, "params": params}, mesh, False)
    # A run whose latest checkpoint holds NaN parameters: evaluate_workdir refuses it.
    manager = checkpointing.make_manager(str(run_copy / "checkpoints"), max_to_keep=3,
                                         async_save=False)
    restored = checkpointing.restore(manager, 4, None)
    restored["params"] = jax.tree.map(lambda x: np.full_like(x, np.nan), restored["params"])
    checkpointing.Saver(manager, async_save=False).save(6, restored, _Iterator())
    manager.close()
    with pytest.raises(errors.NonFiniteParamsError, match=r"checkpoint of step 6 .*non-finite"):
        train_lib.evaluate_workdir(str(run_copy), model=model)


# --- 9. CLI errors ------------------------------------------------------------------------


def _cli(*args):
    return tl.run_child("import runpy, sys; sys.argv = ['train.py', *sys.argv[1:]]; "
                        "runpy.run_path('train.py', run_name='__main__')", *args)


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    cases = [
        (["--config", "configs/mnist_default.py", "--config.lernig_rate=0.1"],
         r"unknown config field 'lernig_rate' .*Closest valid names: .*"
         r"optimizer.base_learning_rate"),
        (["--config", "configs/nope.py"], r"config file 'configs/nope.py' not found"),
        (["--config", "configs/mnist_default.py", "--config.smoke=True"],
         rf"--workdir '{afile}' is a file, not a directory"),
    ]
    for args, match in cases:
        proc = _cli(*args, "--workdir", str(afile))
        errors_ = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert len(errors_) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert __import__("re").search(match, errors_[0]), errors_[0]


DISTRIBUTED_CHILD = tl.CHILD_PREAMBLE + """
import train_testlib as tl
from tks_jax.training import build, errors
try:
    build.maybe_initialize_distributed(tl.tiny_config(distributed=True))
except errors.ConfigError as e:
    print("ConfigError:", e)
"""


def test_distributed_without_a_cluster_says_what_to_set():
    assert not any(k.startswith(("JAX_COORDINATOR", "SLURM_JOB", "OMPI_")) for k in os.environ)
    proc = tl.run_child(DISTRIBUTED_CHILD)
    assert "ConfigError: config.distributed=True but no cluster was detected" in proc.stdout, (
        proc.stdout + proc.stderr[-2000:])
    assert "JAX_COORDINATOR_ADDRESS" in proc.stdout and "distributed=False" in proc.stdout
    jax.devices()  # JAX has started in this process
    with pytest.raises(errors.ConfigError, match="needs a fresh process"):
        build.maybe_initialize_distributed(tl.tiny_config(distributed=True))


def test_closest_keys_suggests_valid_names():
    from tks_jax.training import config_lib

    config = tl.tiny_config()
    assert config_lib.closest_keys(config, "optimizer.base_learnig_rate")[0] == (
        "optimizer.base_learning_rate")
    assert "num_epochs" in config_lib.closest_keys(config, "num_epoch")


# --- 11. Exit codes, SIGTERM during the final evaluation ----------------------------------


def test_sigterm_during_final_evaluation_is_resumable(run_copy, monkeypatch):
    shutil.rmtree(run_copy / "report")
    original = evaluate_run.evaluation.run_evaluation

    def terminated_during(*args):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives after the first eval batch is drawn
        time.sleep(0.01)
        return original(*args)

    monkeypatch.setattr(evaluate_run.evaluation, "run_evaluation", terminated_during)
    result = _train(run_copy)
    assert result["preempted"] and result["eval"] is None and result["step"] == 4
    assert not os.path.exists(run_copy / "report")
    monkeypatch.setattr(evaluate_run.evaluation, "run_evaluation", original)
    seen = []
    result = _train(run_copy, hooks=[lambda step, m: seen.append(step)])
    assert seen == [] and not result["preempted"]  # nothing left to train: evaluation redone
    last = [json.loads(x) for x in open(run_copy / "metrics.jsonl")
            if json.loads(x)["split"] == "train"][-1]
    rep = report.load_report(result["report_dir"])
    assert rep["run"]["last_train"]["loss"] == pytest.approx(last["loss"])
    assert rep["run"]["step"] == 4


def test_exit_codes_are_distinct_and_preempted_is_75(capsys):
    codes = [errors.EXIT_OK, errors.EXIT_UNEXPECTED, errors.EXIT_USAGE, errors.EXIT_LOCKED,
             errors.EXIT_NON_FINITE, errors.EXIT_NO_CHECKPOINT, errors.EXIT_DISK_FULL,
             errors.EXIT_PREEMPTED]
    assert len(set(codes)) == len(codes) and errors.EXIT_PREEMPTED == 75
    assert cli.fail(errors.DiskFullError(errno.ENOSPC, "full\nsecond line")) == 6
    assert capsys.readouterr().err == "error: [Errno 28] full second line\n"
    assert cli.finish({"preempted": True, "step": 3}) == 75
    assert "Stopped by SIGTERM at step 3" in capsys.readouterr().out
