"""``tks_jax.evaluate``: evaluating a run's latest checkpoint at another T, and its errors."""

import json
import os

import pytest
import train_testlib as tl

from tks_jax import report, train_lib
from tks_jax.training import loop

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    result = train_lib.train_and_evaluate(tl.tiny_config(), str(workdir), model=tl.tiny_model())
    return workdir, result


def test_fewer_steps_equals_first_k_of_the_training_run(run):
    """A causal SNN with inference-mode BN: running 1 step gives the first step of 2."""
    workdir, result = run
    rep = loop.evaluate_workdir(str(workdir), num_steps=1, model=tl.tiny_model())
    m = rep["metrics"]
    assert m["num_steps"] == 1 and len(m["per_step_accuracy"]) == 1
    assert m["top1"] == pytest.approx(result["eval"]["first_k_accuracy"][0])
    assert m["per_step_accuracy"][0] == pytest.approx(result["eval"]["per_step_accuracy"][0])
    assert rep["report_dir"] == os.path.join(str(workdir), "report", "test_T1")
    assert report.load_report(rep["report_dir"])["run"]["step"] == 4


def test_default_evaluation_reproduces_the_training_report(run):
    workdir, result = run
    rep = loop.evaluate_workdir(str(workdir), model=tl.tiny_model())
    assert rep["report_dir"] == os.path.join(str(workdir), "report")
    for key in ("top1", "top5", "aurc_logit", "aurc_softmax", "first_k_accuracy"):
        assert rep["metrics"][key] == pytest.approx(result["eval"][key]), key


def test_missing_run_and_bad_num_steps(tmp_path, run):
    with pytest.raises(FileNotFoundError, match="must be the directory of a training run"):
        loop.evaluate_workdir(str(tmp_path))
    with pytest.raises(ValueError, match="--num_steps must be an integer >= 1, got 0"):
        loop.evaluate_workdir(str(run[0]), num_steps=0, model=tl.tiny_model())


def test_more_steps_than_tebn_supports_is_refused(tmp_path):
    config = tl.tiny_config(**{"model.name": "resnet19", "model.norm": "tebn", "num_steps": 4})
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    with pytest.raises(ValueError, match=r"--num_steps=6 is larger than the model supports "
                                         r"\(4: TEBN"):
        loop.evaluate_workdir(str(tmp_path), num_steps=6)


def test_cli_reports_errors_without_traceback(tmp_path):
    proc = tl.run_child("from tks_jax import evaluate; from absl import app; "
                        "import sys; sys.argv[0] = 'evaluate'; app.run(evaluate.main)",
                        "--workdir", str(tmp_path))
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "config.json not found" in proc.stderr
    assert "Traceback" not in proc.stderr
