"""The training loop on tiny synthetic data with a one-conv SNN (fast to compile).

Covers: compile once across epochs (lam is a traced argument), lam / learning-rate schedules
per epoch, report files, exact resume after a killed process (bitwise), SIGTERM, non-finite
loss, refusing an incompatible workdir.
"""

import json
import os
import signal

import numpy as np
import pytest
import train_testlib as tl

from tks_jax import report, train_lib
from tks_jax.training import loop, sharding

pytestmark = pytest.mark.slow


def _train(workdir, config=None, hooks=(), **kw):
    config = config or tl.tiny_config()
    return train_lib.train_and_evaluate(config, str(workdir), model=tl.tiny_model(),
                                        step_hooks=hooks, **kw)


def _recorder():
    seen = []
    return seen, lambda step, m: seen.append(
        (step, float(m["loss"]), float(m["lam"]), float(m["lr"])))


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """4 steps (2 epochs of 2 steps) without interruption."""
    workdir = tmp_path_factory.mktemp("straight")
    seen, hook = _recorder()
    model = tl.tiny_model()
    config = tl.tiny_config(eval_every_epochs=1)  # a runtime key: resuming runs may differ
    result = train_lib.train_and_evaluate(config, str(workdir), model=model, step_hooks=[hook])
    return workdir, result, seen, model


def test_two_epochs_compile_once_with_epoch_schedules(straight_run):
    workdir, result, seen, _ = straight_run
    assert result["step"] == 4 and not result["preempted"]
    assert result["train_step_traces"] == 1  # lam changed at the epoch boundary: no retrace
    # lam(epoch) = 0.7 * epoch / 2 (docs/method.md §4), constant within an epoch.
    assert [s[2] for s in seen] == pytest.approx([0.0, 0.0, 0.35, 0.35])
    # Per-epoch cosine without warm-up: lr(e) = min + (peak - min)(1 + cos(pi e / 2)) / 2,
    # peak = 0.032 * 8 / 1024 (linear scaling rule).
    peak, floor = 0.032 * 8 / 1024, 1e-5
    expected = [peak, peak, floor + (peak - floor) / 2, floor + (peak - floor) / 2]
    assert [s[3] for s in seen] == pytest.approx(expected, rel=1e-5)
    assert all(np.isfinite(s[1]) for s in seen)


def test_report_and_logs_written(straight_run):
    workdir, result, _, model = straight_run
    rep = report.load_report(result["report_dir"])
    m = rep["metrics"]
    assert m["num_examples"] == 16 and len(m["first_k_accuracy"]) == 2
    assert m["first_k_accuracy"][-1] == pytest.approx(m["top1"])
    assert 0 <= m["aurc_logit"] <= 1000 and "LIF_0" in m["spikes"]
    for name in ("report.md", "accuracy_vs_num_steps.png", "per_step_accuracy.png"):
        assert os.path.getsize(os.path.join(result["report_dir"], name)) > 0
    lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [x["step"] for x in lines if x["split"] == "train"] == [1, 2, 3, 4]
    # Evaluated after epoch 1 and at the end, with one compiled eval step.
    assert [x["step"] for x in lines if x["split"] == "eval"] == [2, 4]
    assert all("aurc_logit" in x for x in lines if x["split"] == "eval")
    eval_step = loop._jitted_eval_step(model, 2, sharding.make_mesh())
    assert eval_step.num_compilations() == 1
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["loss"]["name"] == "tks" and config["num_steps"] == 2
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[-1] == "4"


KILLED_CHILD = tl.CHILD_PREAMBLE + """
import ml_collections
import train_testlib as tl
from tks_jax import train_lib
config = ml_collections.ConfigDict(json.load(open(sys.argv[1])))
def die(step, metrics):
    if step == 3:  # after the checkpoint of step 2, before any of step 3
        os.kill(os.getpid(), signal.SIGKILL)
train_lib.train_and_evaluate(config, sys.argv[2], model=tl.tiny_model(), step_hooks=[die])
"""


def test_resume_after_kill_is_bitwise_identical(straight_run, tmp_path):
    workdir_straight = straight_run[0]
    workdir = tmp_path / "killed"
    cfg = tl.dump_config(tl.tiny_config(), str(tmp_path / "c.json"))
    proc = tl.run_child(KILLED_CHILD, cfg, str(workdir))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]
    seen, hook = _recorder()
    result = _train(workdir, hooks=[hook])  # resumes at step 2
    assert [s[0] for s in seen] == [3, 4] and result["step"] == 4
    straight, step_a = tl.load_final_params(str(workdir_straight))
    resumed, step_b = tl.load_final_params(str(workdir))
    assert step_a == step_b == 4 and straight.keys() == resumed.keys()
    for key in straight:
        np.testing.assert_array_equal(straight[key], resumed[key], err_msg=key)
    assert result["eval"]["top1"] == straight_run[1]["eval"]["top1"]


def test_sigterm_saves_and_stops(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    hook = lambda step, m: os.kill(os.getpid(), signal.SIGTERM) if step in (1, 2) else None
    result = _train(tmp_path, hooks=[hook])
    assert result["preempted"] and result["step"] == 1 and result["eval"] is None
    assert os.listdir(tmp_path / "checkpoints") == ["1"]
    assert signal.getsignal(signal.SIGTERM) is before  # previous handler restored
    # Preempted again right after the periodic checkpoint of step 2: no duplicate save.
    seen, rec = _recorder()
    result = _train(tmp_path, hooks=[rec, hook])
    assert [s[0] for s in seen] == [2] and result["preempted"] and result["step"] == 2
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]
    seen, rec = _recorder()
    result = _train(tmp_path, hooks=[rec])
    assert [s[0] for s in seen] == [3, 4] and not result["preempted"]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    # A learning rate of ~1e30 makes the parameters explode after the first update: the
    # checkpoint of step 1 has finite but huge parameters (not sane, still kept).
    config = tl.tiny_config(**{"optimizer.base_learning_rate": 1e32, "checkpoint_every_steps": 1})
    with pytest.raises(train_lib.NonFiniteLossError, match=r"Non-finite loss or gradient at "
                                                           r"step 2 .*No sane checkpoint.*"
                                                           r"resume_with_changes"):
        _train(tmp_path, config)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]
    params, _ = tl.load_final_params(str(tmp_path))
    assert all(np.isfinite(v).all() for v in params.values())


def test_workdir_with_other_config_is_refused_unless_overwrite(tmp_path):
    _train(tmp_path, tl.tiny_config(max_train_steps=1))
    changed = tl.tiny_config(**{"max_train_steps": 1, "loss.temperature": 2.0})
    with pytest.raises(ValueError, match=r"loss.temperature: 3.0 -> 2.0.*--config.overwrite"):
        _train(tmp_path, changed)
    changed.overwrite = True
    seen, hook = _recorder()
    result = _train(tmp_path, changed, hooks=[hook])
    assert [s[0] for s in seen] == [1] and result["step"] == 1  # started afresh
    stored = json.load(open(tmp_path / "config.json"))
    assert stored["loss"]["temperature"] == 2.0


def test_invalid_config_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="loss.peak must lie in"):
        _train(tmp_path, tl.tiny_config(**{"loss.peak": 2.0}))
    assert not os.path.exists(tmp_path / "checkpoints")


def test_resume_with_the_grain_pipeline_of_mnist(tmp_path):
    """Exact continuation also holds for a real grain iterator (offline MNIST, shuffled)."""
    overrides = {"data.name": "mnist", "data.max_train_examples": 32,
                 "data.max_eval_examples": 16, "batch_size": 8, "num_epochs": 1}
    model = tl.tiny_model(num_classes=10)
    config = tl.tiny_config(**overrides)
    train_lib.train_and_evaluate(config, str(tmp_path / "a"), model=model)
    cfg = tl.dump_config(config, str(tmp_path / "c.json"))
    child = KILLED_CHILD.replace("tl.tiny_model()", "tl.tiny_model(num_classes=10)")
    proc = tl.run_child(child, cfg, str(tmp_path / "b"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    train_lib.train_and_evaluate(config, str(tmp_path / "b"), model=model)
    a, step_a = tl.load_final_params(str(tmp_path / "a"))
    b, step_b = tl.load_final_params(str(tmp_path / "b"))
    assert step_a == step_b == 4
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
