"""The anytime report section: calibration on validation, numbers on test, markdown and plot."""

import json
import math
import os

import numpy as np
import pytest

from tks_jax import anytime, anytime_eval, cost, report
from tks_jax.training.build import init_variables


def _split(seed, n=40, t=4, c=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, size=n)
    z = rng.normal(size=(t, n, c))
    z[:, np.arange(n), y] += np.linspace(0.5, 2.0, t)[:, None]
    energy = np.tile(np.array([[100.0], [10.0], [10.0], [10.0]]), (1, n))  # stem at step 1
    ops = {"ac": {"conv2": np.full(t, 5.0 * n)}, "mac": {"stem": np.array([20.0 * n, 0, 0, 0])}}
    return {"logits": z.astype(np.float32), "labels": y, "energy": energy, "ops_sum": ops}


def test_anytime_metrics_calibrates_on_validation_and_reports_test():
    val, test = _split(0), _split(1)
    a = anytime_eval.anytime_metrics(val, test, max_drop=0.05, confidence="softmax",
                                     energy=cost.EnergyModel())
    thr = anytime.calibrate(val["logits"], val["labels"], max_drop=0.05)
    assert a["threshold"] == thr
    pred, steps = anytime.predict(test["logits"], thr)
    steps = np.asarray(steps)
    assert a["test"]["mean_steps"] == pytest.approx(steps.mean())
    assert a["test"]["accuracy"] == pytest.approx(np.mean(np.asarray(pred) == test["labels"]))
    # Energy per image under the rule: 100 pJ for step 1 plus 10 per further step.
    assert a["energy_pj_per_image"] == pytest.approx(np.mean(100 + 10 * (steps - 1)))
    assert a["energy_pj_full"] == pytest.approx(130.0)
    assert a["curve_fixed_k"]["mean_steps"] == [1, 2, 3, 4]
    assert a["curve_fixed_k"]["accuracy"][-1] == a["full_accuracy"]
    assert a["cost"]["synops_per_image"] == pytest.approx(20.0)
    assert a["cost"]["macs_per_image"] == pytest.approx(20.0)


def test_report_with_anytime_section(tmp_path):
    val, test = _split(2), _split(3)
    a = anytime_eval.anytime_metrics(val, test, max_drop=0.0, confidence="margin",
                                     energy=cost.EnergyModel())
    a["energy_constants"] = {"e_ac_pj": 0.9, "e_mac_pj": 4.6, "source": "x"}
    metrics = {"top1": 0.5, "top5": 1.0, "aurc_logit": 1.0, "aurc_softmax": 1.0,
               "per_step_accuracy": [0.5] * 4, "first_k_accuracy": [0.5] * 4,
               "num_examples": 40, "split": "test", "num_steps": 4}
    rep = {**report.build_report(metrics), "anytime": a}
    paths = report.write_report(rep, str(tmp_path))
    assert os.path.getsize(paths["anytime_plot"]) > 0
    md = open(paths["markdown"]).read()
    assert "## Anytime inference" in md and "| test |" in md and "conv2" in md
    with open(paths["json"]) as f:
        saved = json.load(f)
    assert saved["anytime"]["test"]["mean_steps"] == pytest.approx(a["test"]["mean_steps"])
    # inf (never exit early) is written as null and shown in words.
    a2 = {**a, "threshold": math.inf}
    assert "never exits early" in "\n".join(report.format_anytime(a2))


@pytest.mark.parametrize("spec, match", [
    ("max_drop", "key=value"), ("foo=1", "key=value"), ("confidence=entropy", "confidence"),
    ("max_drop=-1", ">= 0"), ("max_drop=abc", "number"), ("save_logits=maybe", "true or false"),
])
def test_parse_spec_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        anytime_eval.parse_spec(spec)


def test_parse_spec():
    assert anytime_eval.parse_spec("max_drop=0.01, confidence=logit") == {
        **anytime_eval.DEFAULTS, "max_drop": 0.01, "confidence": "logit"}
    assert anytime_eval.parse_spec("") == anytime_eval.DEFAULTS
    assert anytime_eval.DEFAULTS["save_logits"] is False
    assert anytime_eval.parse_spec("save_logits=True")["save_logits"] is True
    assert anytime_eval.parse_spec("save_logits=no")["save_logits"] is False


def test_save_and_load_logits_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    splits = {name: {"logits": rng.normal(size=(3, n, 4)).astype(np.float32),
                     "labels": rng.integers(0, 4, n), "energy": rng.random((3, n))}
              for name, n in (("validation", 5), ("test", 7))}
    path = str(tmp_path / anytime_eval.LOGITS_NPZ)
    anytime_eval.save_logits(path, splits["validation"], splits["test"])
    assert sorted(os.listdir(tmp_path)) == [anytime_eval.LOGITS_NPZ]  # no temporary left
    back = anytime_eval.load_logits(path)
    for name, split in splits.items():
        np.testing.assert_array_equal(back[name]["logits"], split["logits"])
        np.testing.assert_array_equal(back[name]["labels"], split["labels"])
        np.testing.assert_allclose(back[name]["energy"], split["energy"], rtol=1e-6)


def test_anytime_record_keeps_the_summary():
    from tks_jax.experiments import runner

    assert runner.anytime_record(None) is None
    section = {"threshold": 0.9, "confidence": "softmax", "max_drop": 0.005,
               "validation": {"accuracy": 1.0}, "test": {"accuracy": 0.5}, "full_accuracy": 0.6,
               "energy_pj_per_image": 1.0, "energy_pj_full": 2.0,
               "curve_fixed_k": {"accuracy": [0.5]}, "curve_thresholds": {"accuracy": [0.1]},
               "cost": {"energy_pj_first_k": [1.0, 2.0], "per_layer": {}}}
    rec = runner.anytime_record(section)
    assert "curve_thresholds" not in rec and "cost" not in rec
    assert rec["energy_pj_first_k"] == [1.0, 2.0] and rec["test"] == {"accuracy": 0.5}


@pytest.mark.slow
def test_collect_with_a_zoo_model():
    import jax

    from tks_jax import models

    model = models.get_model("vgg_snn", num_classes=3, width=0.0625)
    x = np.random.default_rng(0).random((3, 16, 16, 2)).astype(np.float32)
    variables = init_variables(model, jax.random.PRNGKey(0), x, num_steps=2)
    batch = {"image": x, "label": np.array([0, 1, 2]), "mask": np.array([True, True, False])}
    out = anytime_eval.collect(model, variables, [batch], 2, cost.EnergyModel(),
                               input_spikes=False)
    assert out["logits"].shape == (2, 2, 3) and out["energy"].shape == (2, 2)
    _, ops = cost.layer_ops(model, variables, x, 2)
    want = np.asarray(cost.energy_per_step(ops, cost.EnergyModel()))[:, :2]
    np.testing.assert_allclose(out["energy"], want, rtol=1e-6)
    np.testing.assert_allclose(out["ops_sum"]["mac"]["fc"], np.asarray(ops["mac"]["fc"])[:, :2]
                               .sum(1))
    # The next split (or the next run's equal network) reuses the executable.
    compiled = anytime_eval._logits_ops_energy._cache_size()
    same = models.get_model("vgg_snn", num_classes=3, width=0.0625)
    again = anytime_eval.collect(same, variables, [batch], 2, cost.EnergyModel(),
                                 input_spikes=False)
    assert anytime_eval._logits_ops_energy._cache_size() == compiled
    np.testing.assert_array_equal(again["logits"], out["logits"])


@pytest.mark.slow
def test_add_to_report_end_to_end(tmp_path):
    """A tiny trained run: evaluate, then the anytime section lands in report.json / .md."""
    import train_testlib as tl

    from tks_jax import train_lib
    from tks_jax.training import loop

    workdir = str(tmp_path / "run")
    config = tl.tiny_config()
    # The training run's final report includes it, and keeps the per-step logits.
    config.anytime = "max_drop=0.2,save_logits=true"
    train_lib.train_and_evaluate(config, workdir, model=tl.tiny_model())
    trained = report.load_report(os.path.join(workdir, "report"))["anytime"]
    assert trained["max_drop"] == 0.2 and trained["confidence"] == "softmax"
    assert 1.0 <= trained["test"]["mean_steps"] <= 2.0
    # The stored logits reproduce the report's exit rule without the network.
    stored = anytime_eval.load_logits(os.path.join(workdir, "report", anytime_eval.LOGITS_NPZ))
    assert stored["test"]["logits"].shape[0] == 2 and stored["validation"]["labels"].size > 0
    thr = anytime.calibrate(stored["validation"]["logits"], stored["validation"]["labels"],
                            max_drop=0.2)
    assert thr == pytest.approx(trained["threshold"] if trained["threshold"] is not None
                                else math.inf)
    pred, steps = anytime.predict(stored["test"]["logits"], thr)
    assert float(np.mean(steps)) == pytest.approx(trained["test"]["mean_steps"])
    assert float(np.mean(np.asarray(pred) == stored["test"]["labels"])) == pytest.approx(
        trained["test"]["accuracy"])
    rep = loop.evaluate_workdir(workdir, model=tl.tiny_model())
    rep = anytime_eval.add_to_report(workdir, rep, "max_drop=0.1,confidence=logit",
                                     model=tl.tiny_model())
    saved = report.load_report(rep["report_dir"])
    a = saved["anytime"]
    assert a["confidence"] == "logit" and a["max_drop"] == 0.1
    assert 1.0 <= a["test"]["mean_steps"] <= 2.0
    assert a["validation"]["accuracy"] >= 0.0
    assert os.path.exists(os.path.join(rep["report_dir"], report.PLOT_ANYTIME))
    assert "## Anytime inference" in open(os.path.join(rep["report_dir"], report.REPORT_MD)).read()


def test_add_to_report_needs_a_validation_split(tmp_path):
    import train_testlib as tl

    config = tl.tiny_config()
    config.data.name = "mnist"
    os.makedirs(tmp_path / "run")
    tl.dump_config(config, str(tmp_path / "run" / "config.json"))
    with pytest.raises(ValueError, match="validation_size"):
        anytime_eval.add_to_report(str(tmp_path / "run"), {"metrics": {}}, "")
