"""Evaluation metrics (host side) and report files, against hand-computed values."""

import json
import math
import os

import numpy as np
import pytest

from tks_jax import report
from tks_jax.training import evaluation


def _aurc_reference(confidence, correct):
    """Risk of the i most confident samples, averaged over i (no ties in these tests)."""
    order = np.argsort(-confidence)
    errors = 1.0 - correct[order]
    return np.mean(np.cumsum(errors) / np.arange(1, len(errors) + 1))


def test_aurc_hand_computed():
    # Two classes; confidences (max logit) 0.3, 0.9, 0.1, 0.8 with right/right/wrong/wrong.
    # Sorted: 0.9 (right), 0.8 (wrong), 0.3 (right), 0.1 (wrong):
    # risks at coverage 1..4 = 0, 1/2, 1/3, 2/4.
    mean_logits = np.array([[0.3, 0.0], [0.0, 0.9], [0.1, 0.0], [0.0, 0.8]], np.float32)
    labels = np.array([0, 1, 1, 0])
    pred = mean_logits.argmax(-1)[None]
    m = evaluation.compute_metrics(mean_logits, labels, pred, pred, 2)
    assert m["aurc_logit"] == pytest.approx(1000 * (0 + 0.5 + 1 / 3 + 0.5) / 4, rel=1e-5)
    assert m["top1"] == 0.5


def _numpy_reference(logits, labels):
    """Independent per-metric loops over samples; logits [T, N, C]."""
    t, n, c = logits.shape
    mean = logits.mean(0)
    top1 = np.mean([np.argmax(mean[i]) == labels[i] for i in range(n)])
    top5 = np.mean([labels[i] in np.argsort(-mean[i])[:5] for i in range(n)])
    per_step = [np.mean([np.argmax(logits[s, i]) == labels[i] for i in range(n)])
                for s in range(t)]
    first_k = [np.mean([np.argmax(logits[: k + 1, i].mean(0)) == labels[i] for i in range(n)])
               for k in range(t)]
    return top1, top5, per_step, first_k


def test_compute_metrics_matches_reference():
    rng = np.random.default_rng(0)
    t, n, c = 3, 50, 7
    logits = rng.normal(size=(t, n, c)).astype(np.float32)
    labels = rng.integers(0, c - 1, size=n)  # class c-1 never appears
    logits[:, np.arange(n), labels] += 1.0  # better than chance
    step_pred = logits.argmax(-1)
    firstk = (np.cumsum(logits, 0) / np.arange(1, t + 1)[:, None, None]).argmax(-1)
    m = evaluation.compute_metrics(logits.mean(0), labels, step_pred, firstk, c)
    top1, top5, per_step, first_k = _numpy_reference(logits, labels)
    assert m["top1"] == pytest.approx(top1)
    assert m["top5"] == pytest.approx(top5)
    np.testing.assert_allclose(m["per_step_accuracy"], per_step)
    np.testing.assert_allclose(m["first_k_accuracy"], first_k)
    assert m["first_k_accuracy"][-1] == pytest.approx(top1)  # k = T is the full prediction
    per_class = m["per_class_accuracy_first_step"]
    assert len(per_class) == c and math.isnan(per_class[-1])
    for k in range(c - 1):
        sel = labels == k
        assert per_class[k] == pytest.approx(np.mean(step_pred[0, sel] == k))
    mean = logits.mean(0)
    correct = mean.argmax(-1) == labels
    soft = np.exp(mean) / np.exp(mean).sum(-1, keepdims=True)
    assert m["aurc_logit"] == pytest.approx(1000 * _aurc_reference(mean.max(-1), correct),
                                            rel=1e-5)
    assert m["aurc_softmax"] == pytest.approx(1000 * _aurc_reference(soft.max(-1), correct),
                                              rel=1e-5)
    assert m["num_examples"] == n


def test_compute_metrics_refuses_non_finite_logits():
    """A diverged model's NaN logits are refused, not reported as a plausible accuracy."""
    mean_logits = np.array([[0.3, 0.0], [np.nan, np.nan], [0.1, 0.0]], np.float32)
    labels = np.array([0, 1, 1])
    pred = np.zeros((1, 3), np.int64)
    with pytest.raises(ValueError, match=r"1 example\(s\) are not finite.*first at index 1"):
        evaluation.compute_metrics(mean_logits, labels, pred, pred, 2)


def _example_report():
    metrics = {
        "num_examples": 4, "top1": 0.75, "top5": 1.0, "aurc_logit": 12.5, "aurc_softmax": 20.0,
        "per_step_accuracy": [0.5, 0.75], "first_k_accuracy": [0.5, 0.75],
        "per_class_accuracy_first_step": [1.0, float("nan"), 0.0],
        "spikes": {"conv1/lif": {"rate": 0.1, "spikes_per_image": 30.0, "neurons": 150.0}},
        "spikes_per_image": 30.0, "num_steps": 2, "split": "test",
    }
    config = {"experiment": "x", "data": {"name": "cifar10"}, "model": {"name": "resnet19"},
              "loss": {"name": "tks"}, "num_steps": 2,
              "paper": {"tks": {"top1": 96.35, "aurc": 2.76}}}
    return report.build_report(metrics, config, step=10, train={"loss": 0.5})


def test_write_report_files_parse(tmp_path):
    rep = _example_report()
    paths = report.write_report(rep, str(tmp_path / "r"))
    for p in paths.values():
        assert os.path.getsize(p) > 0
    with open(paths["json"]) as f:
        data = json.load(f)  # strict JSON: NaN became null
    assert data["metrics"]["per_class_accuracy_first_step"] == [1.0, None, 0.0]
    assert data["run"]["step"] == 10 and data["metrics"]["top1"] == 0.75
    assert report.load_report(str(tmp_path / "r"))["run"]["experiment"] == "x"
    with open(paths["first_k_plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_markdown_table_has_the_numbers():
    md = report.format_markdown(_example_report())
    assert "| top-1 (%) | 75.00 |" in md
    assert "| AURC x1000, max-logit confidence (paper) | 12.50 |" in md
    assert "| paper top-1 (%) | 96.35 |" in md  # the paper's number for this loss
    assert "| 1 | 50.00 | 50.00 |" in md and "| 2 | 75.00 | 75.00 |" in md
    assert "| conv1/lif | 0.1000 | 30.0 |" in md


def test_report_records_where_it_came_from(tmp_path):
    """report.json carries the code's commit, the library versions, the machine and the
    options that change the arithmetic, so a number can be traced to what produced it."""
    import subprocess

    import jax

    rep = _example_report()
    paths = report.write_report(rep, str(tmp_path / "r"))
    with open(paths["json"]) as f:
        prov = json.load(f)["provenance"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(__file__)))
    if head.returncode == 0:  # a git checkout (CI's fresh clone is one)
        assert prov["git"]["commit"] == head.stdout.strip()
        assert isinstance(prov["git"]["dirty"], bool)
    assert prov["versions"]["jax"] == jax.__version__
    assert prov["machine"]["backend"] == jax.default_backend()
    assert prov["arithmetic"] == {"conv": None, "dtype": None, "remat": None}
    assert prov["config"]["model"] == {"name": "resnet19"}
    assert "provenance" not in report.build_report({"top1": 1.0})  # no config, no record
