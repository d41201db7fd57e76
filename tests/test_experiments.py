"""The ablation study tooling: plan, configs (the loss is the only difference), penultimate
features, aggregation (mean +- std over seeds, claims) against hand-computed references, the
run records and their provenance, the committed results, and end-to-end studies of tiny runs on
synthetic data (one of them twice, in fresh processes, for bitwise determinism)."""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import pytest

from tks_jax.experiments import ablation, aggregate, figures, plan, records, runner, variants
from tks_jax.training.build import init_variables

# ------------------------------------------------------------------------------------------
# Plan and configs.
# ------------------------------------------------------------------------------------------


def test_plan_of_the_full_study():
    specs = ablation.plan_runs()
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    # 4 losses x 2 data sets x 3 seeds + 4 x 3 hard + sweep (6 T x 2 losses, T=10 shared)
    # + paired (4 losses x 10 seeds on nmnist_synth, seeds 0-2 shared with main).
    assert len(specs) == 24 + 12 + 10 + 4 * 7
    by_name = {s.name: s for s in specs}
    assert by_name["nmnist_synth_tks_T10_s0"].studies == ("main", "sweep", "paired")
    assert by_name["nmnist_synth_ls_T10_s2"].studies == ("main", "paired")
    assert by_name["nmnist_synth_tet_T10_s9"].studies == ("paired",)
    paired = [s for s in specs if "paired" in s.studies]
    assert {(s.setting, s.num_steps) for s in paired} == {("nmnist_synth", 10)}
    assert {s.seed for s in paired} == set(range(10)) and len(paired) == 40
    assert by_name["mnist_tet_T4_s2"].studies == ("main",)
    sweep = [s for s in specs if "sweep" in s.studies]
    assert sorted({s.num_steps for s in sweep}) == [1, 2, 4, 6, 8, 10]
    assert {s.loss for s in sweep} == {"baseline", "tks"}
    assert {s.seed for s in sweep} == {0}
    hard = [s for s in specs if s.studies == ("hard",)]
    assert {(s.setting, s.num_steps) for s in hard} == {("mnist_hard", 4)}


def test_plan_paired_seeds_option():
    specs = ablation.plan_runs(["paired"], paired_seeds=[3, 5], losses=["tks", "tet"])
    assert [s.name for s in specs] == ["nmnist_synth_tks_T10_s3", "nmnist_synth_tet_T10_s3",
                                       "nmnist_synth_tks_T10_s5", "nmnist_synth_tet_T10_s5"]
    with pytest.raises(ValueError, match="at least two seeds"):
        ablation.plan_runs(["paired"], paired_seeds=[0])


def test_plan_rejects_unknown_names():
    with pytest.raises(ValueError, match="Unknown studies"):
        ablation.plan_runs(["main", "cifar"])
    with pytest.raises(ValueError, match="Unknown losses"):
        ablation.plan_runs(["main"], losses=["kd"])
    with pytest.raises(ValueError, match="seed"):
        ablation.plan_runs(["main"], seeds=[])


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("budget", ablation.BUDGETS)
@pytest.mark.parametrize("setting", ["mnist", "mnist_hard", "nmnist_synth"])
def test_configs_differ_only_in_the_loss(budget, setting):
    t = ablation.DEFAULT_T[setting]
    configs = {loss: _flat(ablation.make_config(ablation.RunSpec(setting, loss, 1, t), budget)
                           .to_dict()) for loss in ablation.LOSSES}
    for loss, cfg in configs.items():
        diff = {k for k in cfg if cfg[k] != configs["baseline"][k]}
        assert diff == ({"loss.name"} if loss != "baseline" else set()), (loss, diff)
        assert cfg["seed"] == 1 and cfg["num_steps"] == t
        assert cfg["eval_every_epochs"] == 0  # no evaluation on test during training
    # The seed changes nothing else either.
    a = _flat(ablation.make_config(ablation.RunSpec(setting, "tks", 0, t), budget).to_dict())
    b = _flat(ablation.make_config(ablation.RunSpec(setting, "tks", 2, t), budget).to_dict())
    assert {k for k in a if a[k] != b[k]} == {"seed"}


def test_config_budgets_and_settings():
    cfg = ablation.make_config(ablation.RunSpec("nmnist_synth", "tks", 0, 10), "full")
    assert cfg.data.name == "nmnist_synth" and cfg.loss.temperature == 5.0
    assert cfg.loss.peak == 0.3  # event data (docs/method.md §4)
    hard = ablation.make_config(ablation.RunSpec("mnist_hard", "tks", 0, 4), "full")
    easy = ablation.make_config(ablation.RunSpec("mnist", "tks", 0, 4), "full")
    assert hard.data.max_train_examples < easy.data.max_train_examples
    assert hard.loss.peak == 0.7 and hard.loss.temperature == 3.0
    # Learning rate 2e-3 whatever the batch (linear scaling rule of docs/method.md §9).
    for c in (cfg, hard, easy):
        lr = c.optimizer.base_learning_rate * c.batch_size / c.optimizer.base_batch_size
        assert lr == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="budget"):
        ablation.make_config(ablation.RunSpec("mnist", "tks", 0, 4), "huge")
    from configs import ablation as ablation_configs

    with pytest.raises(ValueError, match="setting"):
        ablation_configs.get_config("cifar10,full")


# ------------------------------------------------------------------------------------------
# Penultimate features.
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("event", [False, True])
def test_penultimate_features_feed_the_readout(event):
    from tks_jax import models

    model = models.get_model("vgg_snn", num_classes=5, width=0.0625)
    t, b = 3, 2
    shape = (t, b, 16, 16, 2) if event else (b, 16, 16, 1)
    x = jax.random.uniform(jax.random.PRNGKey(1), shape) * (3.0 if event else 1.0)
    variables = init_variables(model, jax.random.PRNGKey(0), x, num_steps=t)
    feats, logits = jax.jit(
        lambda v, x: ablation.penultimate_features(model, v, x, num_steps=t))(variables, x)
    np.testing.assert_allclose(logits, model.apply(variables, x, num_steps=t), rtol=1e-6)
    dense = variables["params"]["fc"]["dense"]
    feats, kernel, bias = (np.asarray(a, np.float64) for a in (feats, dense["kernel"],
                                                               dense["bias"]))
    assert feats.shape == (t, b, kernel.shape[0])
    # Spikes averaged by the last 2x2 pool: values in {0, .25, .5, .75, 1}.
    assert np.all(np.isin(np.round(feats * 4), np.arange(5)))
    np.testing.assert_allclose(feats @ kernel + bias, np.asarray(logits), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# Aggregation.
# ------------------------------------------------------------------------------------------


def test_mean_std_matches_numpy():
    ms = ablation.mean_std([0.9, 0.92, 0.97])
    assert ms["mean"] == pytest.approx(np.mean([0.9, 0.92, 0.97]))
    assert ms["std"] == pytest.approx(np.sqrt(((np.array([0.9, 0.92, 0.97]) - 0.93) ** 2).sum()
                                              / 2))
    assert ablation.mean_std([0.5])["std"] is None


def test_silhouette_against_the_formula():
    # Four points on a line, classes {0, 0, 1, 1} at 0, 1, 4, 6.
    x = np.array([[0.0], [1.0], [4.0], [6.0]])
    y = np.array([0, 0, 1, 1])
    # s = (b - a) / max(a, b); a = mean distance within the class, b = to the other class.
    a = np.array([1, 1, 2, 2])
    b = np.array([5, 4, 3.5, 5.5])
    expected = np.mean((b - a) / np.maximum(a, b))
    assert ablation.silhouette(x, y) == pytest.approx(expected)


def test_aggregate_groups_and_table(fake_study):
    out, results = fake_study.out, fake_study.results
    g = results["groups"]
    assert set(g) == {"mnist", "nmnist_synth"}
    assert list(g["mnist"]) == list(ablation.LOSSES)
    for (setting, loss), values in fake_study.top1.items():
        assert g[setting][loss]["top1"]["mean"] == pytest.approx(np.mean(values))
        assert g[setting][loss]["top1"]["std"] == pytest.approx(np.std(values, ddof=1))
        assert g[setting][loss]["aurc_logit"]["mean"] == pytest.approx(
            100 * (1 - np.mean(values)))
        assert g[setting][loss]["seeds"] == [0, 1, 2]
    # The sweep's T = 1, 2 runs stay out of the T = 10 group and go to the sweep.
    assert results["sweep"] == {"baseline": {"1": 0.5, "2": 0.7}, "tks": {"1": 0.6, "2": 0.69}}
    table = open(os.path.join(out, ablation.TABLE_MD)).read()
    assert "| mnist (T=4) | tks | 3 | 96.00 ± 1.00 | 4.00 ± 1.00 | 95.00 ± 1.00 |" in table
    assert "| nmnist_synth (T=10) | baseline | 3 | 82.00 ± 2.00 | 18.00 ± 2.00 |" in table
    # Per-class accuracy of a class absent from the split (None) stays NaN -> null in JSON.
    saved = json.load(open(os.path.join(out, ablation.RESULTS_JSON)))
    assert saved["groups"]["mnist"]["tks"]["per_class_accuracy_first_step"]["mean"][-1] is None
    summary = open(os.path.join(out, ablation.SUMMARY_MD)).read()
    assert "--budget smoke" in summary and table in summary and "![fig5_tsne.png]" in summary
    assert "| tks | 60.00 | 69.00 |" in summary  # the sweep table
    # 18 main runs of 2 s, 4 sweep runs of 1 s.
    assert results["total_run_wall_s"] == pytest.approx(18 * 2.0 + 4 * 1.0)


def test_claims_on_known_numbers(fake_study):
    results = fake_study.results
    claims = {(c["claim"].split(":")[0], c["setting"]): c for c in results["claims"]}
    # mnist: TKS 96 > TET 94; AURC 4 < 6; drop 1 vs 30 points; every step higher.
    assert claims[("1a", "mnist")]["held"] and "+2.00 points" in claims[("1a", "mnist")][
        "evidence"]
    # 2 x standard error of the difference: 2 * 100 * sqrt(0.01^2 / 3 + 0.01^2 / 3) = 1.63.
    assert "beyond seed noise: 2 x s.e. = 1.63" in claims[("1a", "mnist")]["evidence"]
    assert claims[("1b", "mnist")]["held"]
    assert claims[("2", "mnist")]["held"]
    assert "baseline 30.00 points, TKS 1.00 points" in claims[("2", "mnist")]["evidence"]
    assert claims[("3", "mnist")]["held"]
    assert claims[("4", "mnist")]["held"]  # tighter tks clusters
    # nmnist: TKS 80 < baseline 82 -> 1a, 1b fail; its later steps are below the baseline's.
    assert not claims[("1a", "nmnist_synth")]["held"]
    assert not claims[("1b", "nmnist_synth")]["held"]
    assert not claims[("3", "nmnist_synth")]["held"]
    # Sweep: +10 at T=1, -1 at T=2 -> not at every T.
    sweep = claims[("2b (Fig. 3b)", "nmnist_synth")]
    assert not sweep["held"] and "1: +10.00" in sweep["evidence"] and "2: -1.00" in sweep[
        "evidence"]


def test_figures_and_tsne_written(fake_study):
    out, results = fake_study.out, fake_study.results
    for name in figures.FILES.values():
        path = os.path.join(out, name)
        assert os.path.getsize(path) > 1000, name
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert set(results["tsne"]) == {"mnist/baseline", "mnist/tks", "nmnist_synth/baseline",
                                    "nmnist_synth/tks"}
    emb = np.load(os.path.join(out, results["tsne"]["mnist/tks"]))
    assert emb["embedding"].shape == (60, 2) and np.all(np.isfinite(emb["embedding"]))


def test_study_dir_refuses_another_budget(tmp_path, fake_study_writer):
    fake_study_writer(str(tmp_path))
    with pytest.raises(ValueError, match="budget 'smoke'"):
        ablation.run_study(str(tmp_path), budget="quick", studies=["main"])


def test_cli_errors(tmp_path, capsys):
    assert ablation.main(["--out", str(tmp_path / "none"), "--aggregate-only"]) == 2
    assert "run the study first" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ablation.main(["--out", str(tmp_path), "--seeds", "a,b"])
    assert ablation.main(["--out", str(tmp_path), "--dry-run", "--studies", "sweep"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 12 and lines[0].startswith("nmnist_synth_baseline_T1_s0")


def test_overrides_parse_and_apply():
    assert ablation.parse_overrides(["model.dtype=bfloat16", "num_epochs=3", "model.remat=true",
                                     "data.image_shape=[16, 16, 2]"]) == {
        "model.dtype": "bfloat16", "num_epochs": 3, "model.remat": True,
        "data.image_shape": [16, 16, 2]}
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        ablation.parse_overrides(["model.dtype"])
    spec = ablation.RunSpec("nmnist_synth", "tks", 1, 10)
    plain = ablation.make_config(spec, "smoke")
    c = ablation.apply_overrides(ablation.make_config(spec, "smoke"),
                                 {"model.dtype": "bfloat16", "num_epochs": 3})
    assert c.model.dtype == "bfloat16" and c.num_epochs == 3
    # Nothing else changed: the loss, seed and T of the plan included.
    changed = {k for k, v in _flat(c.to_dict()).items() if _flat(plain.to_dict())[k] != v}
    assert changed == {"model.dtype", "num_epochs"}
    for bad, message in [({"model.no_such_key": 1}, "has no 'model.no_such_key'"),
                         ({"nope.dtype": 1}, "has no 'nope'"),
                         ({"seed": 3}, "set per run by the study's plan"),
                         ({"loss.name": "tet"}, "set per run by the study's plan"),
                         ({"num_epochs": "many"}, r"num_epochs='many'")]:
        with pytest.raises(ValueError, match=message):
            ablation.apply_overrides(ablation.make_config(spec, "smoke"), bad)


def test_summary_command_names_a_partial_plan_and_its_overrides():
    from tks_jax.experiments import summary

    overrides = {"model.dtype": "bfloat16", "num_epochs": 3, "model.remat": True}
    partial = {"budget": "full", "overrides": overrides, "sessions": [
        {"started": "s", "wall_s": 1.0, "runs_trained": 2, "jobs": 2, "machine": "m",
         "studies": ["main"], "seeds": [0, 1, 2], "losses": ["tks"]},
        {"started": "s", "wall_s": 1.0, "runs_trained": 0, "jobs": 1, "machine": "m",
         "studies": ["sweep"], "seeds": [0], "losses": ["tks"]}]}
    cmd = summary.command(partial, "out")
    assert cmd == ("python -m tks_jax.experiments.ablation --out out --budget full "
                   "--studies main,sweep --losses tks --set model.dtype=bfloat16 "
                   "--set model.remat=true --set num_epochs=3 --jobs 2")
    # The printed overrides read back as the same values.
    sets = [part.split(" ", 1)[0] for part in cmd.split("--set ")[1:]]
    assert ablation.parse_overrides(sets) == overrides
    full = {"budget": "full", "sessions": [
        {"started": "s", "wall_s": 1.0, "runs_trained": 74, "jobs": 1, "machine": "m",
         "studies": list(plan.STUDIES), "seeds": list(plan.SEEDS), "losses": list(plan.LOSSES)}]}
    assert summary.command(full, "out") == (
        "python -m tks_jax.experiments.ablation --out out --budget full")


def test_study_refuses_other_overrides_and_bad_ones(tmp_path, fake_study_writer, monkeypatch,
                                                    capsys):
    out = str(tmp_path)
    fake_study_writer(out)  # a study without overrides
    monkeypatch.setattr(runner, "_run_in_worker", lambda a: pytest.fail("trained"))
    before = open(os.path.join(out, runner.STUDY_JSON)).read()
    with pytest.raises(ValueError, match=r"config overrides \{\}, not \{'model.dtype'"):
        runner.run_study(out, budget="smoke", studies=["sweep"], seeds=[0], sweep_steps=[3],
                         overrides={"model.dtype": "bfloat16"}, log=lambda _: None)
    # A bad key is refused on the command line before anything is written.
    assert ablation.main(["--out", str(tmp_path / "new"), "--budget", "smoke", "--studies",
                          "sweep", "--set", "model.dtyp=bfloat16"]) == 2
    assert "has no 'model.dtyp'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "new")
    assert open(os.path.join(out, runner.STUDY_JSON)).read() == before


# ------------------------------------------------------------------------------------------
# End to end: two tiny runs on synthetic event data.
# ------------------------------------------------------------------------------------------


def _use_synthetic_data(monkeypatch, examples, epochs, broken=frozenset()):
    """Makes the study's runs train on tiny synthetic event data (runs named in ``broken``
    get an unknown data set, so that they fail)."""
    make_config = plan.make_config

    def config(spec, budget):
        c = make_config(spec, budget)
        c.data.name = "no_such_dataset" if spec.name in broken else "synthetic_events"
        c.data.image_shape = (16, 16, 2)
        c.data.num_classes = 3
        c.data.synthetic_examples = examples
        c.data.max_train_examples = None
        c.data.max_eval_examples = None
        c.batch_size = c.eval_batch_size = 8
        c.num_epochs = epochs
        return c

    monkeypatch.setattr(plan, "make_config", config)


@pytest.mark.slow
def test_run_study_end_to_end(tmp_path, monkeypatch):
    _use_synthetic_data(monkeypatch, examples=24, epochs=2)
    out = str(tmp_path / "study")
    lines = []
    results = ablation.run_study(out, budget="smoke", studies=["sweep"], seeds=[0],
                                 sweep_steps=[2], feature_examples=16, log=lines.append)
    names = {"nmnist_synth_baseline_T2_s0", "nmnist_synth_tks_T2_s0"}
    assert set(results["runs"]) == names
    recs = records.read_records(out)
    assert set(recs) == names
    for name, run in results["runs"].items():
        rep = json.load(open(os.path.join(out, "runs", name, "report", "report.json")))
        assert recs[name]["metrics"] == rep["metrics"]  # the record holds the whole report
        assert run["top1"] == rep["metrics"]["top1"]
        assert rep["run"]["loss"] == run["loss"] and run["step"] == 2 * 24 // 8
        feats = np.load(os.path.join(out, "runs", name, records.FEATURES_NPZ))
        assert feats["features"].shape[0] == 16 and feats["labels"].shape == (16,)
        assert recs[name]["silhouette"] == pytest.approx(
            ablation.silhouette(feats["features"], feats["labels"]))
        # Provenance: this checkout's commit, the resolved config with the arithmetic options.
        prov = recs[name]["provenance"]
        assert prov["versions"]["jax"] == jax.__version__
        assert prov["config"]["loss"]["name"] == run["loss"]
        assert prov["config"]["data"]["name"] == "synthetic_events"
        assert prov["arithmetic"] == {k: prov["config"]["model"].get(k)
                                      for k in ("conv", "dtype", "remat")}
        assert run["provenance"] == {k: v for k, v in prov.items() if k != "config"}
        assert run["config"] == prov["config"]
    assert results["sweep"]["tks"]["2"] == results["runs"]["nmnist_synth_tks_T2_s0"]["top1"]
    assert os.path.exists(os.path.join(out, figures.FILES["fig_same_t"]))
    # A second call trains nothing (the runs are finished) and keeps the numbers.
    lines.clear()
    again = ablation.run_study(out, budget="smoke", studies=["sweep"], seeds=[0],
                               sweep_steps=[2], feature_examples=16, log=lines.append)
    assert "2 already finished" in lines[0]
    assert again["sweep"] == results["sweep"]
    assert len(json.load(open(os.path.join(out, runner.STUDY_JSON)))["sessions"]) == 2
    # The results folder without its training directories aggregates to the same numbers.
    shutil.rmtree(os.path.join(out, records.RUNS_DIR))
    assert aggregate.aggregate(out, log=lambda _: None)["groups"] == results["groups"]


@pytest.mark.slow
def test_study_with_an_override_records_it(tmp_path, monkeypatch):
    _use_synthetic_data(monkeypatch, examples=16, epochs=1)
    # A commit lands while the run trains: the run and its report record the code it started
    # with; the study's session (written after) the new one.
    from tks_jax import provenance, train_lib

    head = {"commit": "a" * 40, "dirty": False}
    monkeypatch.setattr(provenance, "git_info", lambda root=None: dict(head))
    train = train_lib.train_and_evaluate

    def train_then_commit(*args, **kwargs):
        result = train(*args, **kwargs)
        head["commit"] = "b" * 40
        return result

    monkeypatch.setattr(train_lib, "train_and_evaluate", train_then_commit)
    out = str(tmp_path / "study")
    results = ablation.run_study(out, budget="smoke", studies=["sweep"], seeds=[0],
                                 losses=["tks"], sweep_steps=[2], feature_examples=8,
                                 overrides={"model.dtype": "bfloat16"}, log=lambda _: None)
    (name, run), = results["runs"].items()
    assert run["provenance"]["arithmetic"]["dtype"] == "bfloat16"
    assert run["config"]["model"]["dtype"] == "bfloat16"
    study = json.load(open(os.path.join(out, runner.STUDY_JSON)))
    assert study["overrides"] == {"model.dtype": "bfloat16"}
    assert run["provenance"]["git"]["commit"] == "a" * 40
    report = json.load(open(os.path.join(out, "runs", name, "report", "report.json")))
    assert report["provenance"]["git"]["commit"] == "a" * 40
    assert study["sessions"][-1]["code_version"] == "b" * 40


@pytest.mark.slow
def test_failed_run_does_not_stop_the_study(tmp_path, monkeypatch):
    broken = {"nmnist_synth_baseline_T2_s0"}
    _use_synthetic_data(monkeypatch, examples=16, epochs=1, broken=broken)
    out = str(tmp_path / "study")
    kwargs = dict(budget="smoke", studies=["sweep"], seeds=[0], sweep_steps=[2],
                  feature_examples=8, log=lambda line: None)
    with pytest.raises(RuntimeError, match=r"1 of 2 runs failed[\s\S]*baseline_T2_s0"):
        ablation.run_study(out, **kwargs)
    assert set(records.read_records(out)) == {"nmnist_synth_tks_T2_s0"}
    study = json.load(open(os.path.join(out, runner.STUDY_JSON)))
    assert study["sessions"][-1]["failed"] == ["nmnist_synth_baseline_T2_s0"]
    # Fixed, the same call trains only the failed run.
    broken.clear()
    lines = []
    results = ablation.run_study(out, **{**kwargs, "log": lines.append})
    assert "1 already finished" in lines[0]
    assert set(results["runs"]) == {"nmnist_synth_baseline_T2_s0", "nmnist_synth_tks_T2_s0"}


STUDY_CHILD = """
import json, sys
from tks_jax.experiments import plan, runner

make_config = plan.make_config


def config(spec, budget):
    c = make_config(spec, budget)
    c.data.name = "synthetic_events"
    c.data.image_shape = (16, 16, 2)
    c.data.num_classes = 3
    c.data.synthetic_examples = 16
    c.data.max_train_examples = None
    c.data.max_eval_examples = None
    c.batch_size = c.eval_batch_size = 8
    c.num_epochs = 2
    return c


plan.make_config = config
runner.run_study(sys.argv[1], budget="smoke", studies=["sweep"], seeds=[0], losses=["tks"],
                 sweep_steps=[2], feature_examples=16, log=lambda line: None)
"""


@pytest.mark.slow
def test_study_is_deterministic_across_processes(tmp_path):
    """Same command, same commit, same machine: the same records bitwise (CPU)."""
    from conftest import run_child

    outs = [str(tmp_path / name) for name in ("a", "b")]
    for out in outs:
        proc = run_child(STUDY_CHILD, out, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (records.read_records(out)["nmnist_synth_tks_T2_s0"] for out in outs)
    for rec in (a, b):  # timings differ; everything computed must not
        del rec["wall_s"], rec["cpu_s"]
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    reports = [open(os.path.join(out, "runs", "nmnist_synth_tks_T2_s0", "report",
                                 "report.json")).read() for out in outs]
    assert reports[0] == reports[1]


# ------------------------------------------------------------------------------------------
# Run records: one commit per results folder; the committed results regenerate.
# ------------------------------------------------------------------------------------------


def _with_commit(out: str, name: str, commit: str, dirty: bool = False) -> None:
    recs = records.read_records(out)
    recs[name]["provenance"]["git"] = {"commit": commit, "dirty": dirty}
    os.remove(records.runs_path(out))
    records.append_records(out, recs.values())


def test_aggregate_refuses_mixed_commits(tmp_path, fake_study_writer, capsys):
    out = str(tmp_path)
    fake_study_writer(out)
    _with_commit(out, "mnist_tks_T4_s1", "f" * 40, dirty=True)
    with pytest.raises(ValueError, match=r"2 code versions[\s\S]*f{40}\+dirty: mnist_tks_T4_s1\n"):
        aggregate.aggregate(out, log=lambda _: None)
    assert ablation.main(["--out", out, "--aggregate-only"]) == 2
    err = capsys.readouterr().err
    assert "mnist_tks_T4_s1" in err and "--allow-mixed-commits" in err
    assert ablation.main(["--out", out, "--aggregate-only", "--allow-mixed-commits"]) == 0
    versions = json.load(open(os.path.join(out, ablation.RESULTS_JSON)))["code_versions"]
    assert versions["f" * 40 + "+dirty"] == ["mnist_tks_T4_s1"]
    assert len(versions) == 2 and sum(len(v) for v in versions.values()) == 22


def test_study_refuses_to_add_runs_of_other_code(tmp_path, fake_study_writer, monkeypatch):
    out = str(tmp_path)
    fake_study_writer(out)  # recorded at a commit that is not this checkout's
    trained = []
    monkeypatch.setattr(runner, "_run_in_worker", lambda a: trained.append(a))
    with pytest.raises(ValueError, match=r"holds runs from other code[\s\S]*--allow-mixed"):
        runner.run_study(out, budget="smoke", studies=["sweep"], seeds=[0], sweep_steps=[3],
                         log=lambda _: None)
    assert trained == []


def test_finished_runs_join_a_study_planned_later(tmp_path, fake_study_writer, monkeypatch):
    """The sweep's T = 10 runs are the main study's seed-0 runs: planned after they trained,
    the sweep counts them without training them again."""
    out = str(tmp_path)
    fake_study_writer(out)  # T = 10 seed-0 runs recorded under "main" only
    monkeypatch.setattr(runner, "_run_in_worker", lambda a: pytest.fail(f"trained {a[0].name}"))
    kwargs = dict(budget="smoke", studies=["sweep"], seeds=[0], sweep_steps=[1, 2, 10],
                  log=lambda _: None)
    results = runner.run_study(out, **kwargs)
    assert results["sweep"] == {"baseline": {"1": 0.5, "2": 0.7, "10": 0.80},
                                "tks": {"1": 0.6, "2": 0.69, "10": 0.78}}
    recs = records.read_records(out)
    for loss in ("baseline", "tks"):
        assert recs[f"nmnist_synth_{loss}_T10_s0"]["studies"] == ["main", "sweep"]
    assert recs["nmnist_synth_tks_T10_s1"]["studies"] == ["main"]  # not planned by the sweep
    lines = open(records.runs_path(out)).read().splitlines()
    runner.run_study(out, **kwargs)  # nothing left to tag: runs.jsonl unchanged
    assert open(records.runs_path(out)).read().splitlines() == lines


def test_variants_compare_paired_seeds(tmp_path, fake_study_writer, capsys):
    ref, var = str(tmp_path / "ref"), str(tmp_path / "var")
    fake_study_writer(ref)
    os.makedirs(var)
    # The variant: top-1 +1 point on every mnist run of seeds 0 and 1 (seed 2 not run), the
    # same numbers on nmnist_synth.
    lines = []
    for rec in records.read_records(ref).values():
        if rec["seed"] == 2 and rec["setting"] == "mnist":
            continue
        if rec["setting"] == "mnist":
            rec = {**rec, "metrics": {**rec["metrics"], "top1": rec["metrics"]["top1"] + 0.01}}
        lines.append(rec)
    records.append_records(var, lines)
    with open(os.path.join(var, runner.STUDY_JSON), "w") as f:
        json.dump({"budget": "smoke", "sessions": [], "overrides": {"model.dtype": "bfloat16"}},
                  f)
    rows = variants.compare(ref, var)
    by = {(r["setting"], r["loss"], r["metric"]): r for r in rows}
    up = by[("mnist", "tks", "top1")]
    assert up["seeds"] == [0, 1]
    assert up["mean"] == pytest.approx(1.0) and up["verdict"] == "higher"
    assert up["reference"] == pytest.approx([96.0, 95.0])  # FAKE_TOP1 of seeds 0 and 1
    assert up["reference_std"] == pytest.approx(np.std([96.0, 95.0], ddof=1))
    same = by[("nmnist_synth", "tks", "top1")]
    assert same["seeds"] == [0, 1, 2] and same["mean"] == 0 and same["verdict"] == "not separable"
    assert by[("mnist", "tks", "aurc_logit")]["mean"] == 0  # only top-1 was changed
    # Sweep runs have one seed: no interval, no row.
    assert not any(r["num_steps"] in (1, 2) for r in rows)
    assert variants.main([ref, var, "--out", str(tmp_path / "t.md")]) == 0
    out = capsys.readouterr().out
    assert "(model.dtype=bfloat16)" in out and "(no overrides)" in out
    assert "| mnist (T=4) | tks | top1 (%) | 2 | 95.50 ± 0.71 | 96.50 | +1.00 |" in out
    assert open(tmp_path / "t.md").read() == out
    # Nothing to pair (the sweep has one seed per T), or no runs at all: clear errors, exit 2.
    sweep_only = str(tmp_path / "sweep_only")
    os.makedirs(sweep_only)
    records.append_records(sweep_only, [r for r in records.read_records(ref).values()
                                        if r["studies"] == ["sweep"]])
    with pytest.raises(ValueError, match="pairs with one of"):
        variants.compare(ref, sweep_only)
    assert variants.main([ref, str(tmp_path / "missing")]) == 2
    assert "holds no runs" in capsys.readouterr().err


def test_records_reject_a_broken_line(tmp_path, fake_study_writer):
    fake_study_writer(str(tmp_path))
    with open(records.runs_path(str(tmp_path)), "a") as f:
        f.write("{not json\n")
    with pytest.raises(ValueError, match="line 23: not JSON"):
        records.read_records(str(tmp_path))


@pytest.mark.parametrize("study", ["ablation", "ablation_quick", "bf16/float32",
                                   "bf16/bfloat16"])
def test_committed_results_regenerate(study, tmp_path, repo_root):
    """``--aggregate-only`` on the committed runs.jsonl gives the committed tables, and every
    row of the README's results table is in the regenerated table."""
    src = os.path.join(repo_root, "results", study)
    out = str(tmp_path / study)
    os.makedirs(out)
    for name in (records.RUNS_JSONL, runner.STUDY_JSON):
        shutil.copy(os.path.join(src, name), out)
    shutil.copytree(os.path.join(src, aggregate.TSNE_DIR), os.path.join(out, aggregate.TSNE_DIR))
    assert ablation.main(["--out", out, "--aggregate-only"]) == 0
    for name in (ablation.TABLE_MD, ablation.CLAIMS_MD):
        assert open(os.path.join(out, name)).read() == open(os.path.join(src, name)).read(), name
    fresh = json.load(open(os.path.join(out, ablation.RESULTS_JSON)))
    committed = json.load(open(os.path.join(src, ablation.RESULTS_JSON)))
    assert fresh == committed
    if study == "ablation":
        readme = open(os.path.join(repo_root, "README.md")).read()
        table = open(os.path.join(out, ablation.TABLE_MD)).read()
        rows = [line for line in readme.splitlines()
                if line.startswith(("| mnist", "| nmnist")) and line.count("|") == 8]
        assert len(rows) == len(table.strip().splitlines()) - 2  # every data row of the table
        for row in rows:
            assert row.replace("**", "") in table, row


def test_committed_bf16_comparison_regenerates(tmp_path, repo_root, monkeypatch):
    """``results/bf16/comparison.md`` is what the variants command prints for the committed
    float32 and bfloat16 folders."""
    monkeypatch.chdir(repo_root)
    out = str(tmp_path / "comparison.md")
    assert variants.main(["results/bf16/float32", "results/bf16/bfloat16", "--out", out]) == 0
    assert open(out).read() == open(os.path.join(repo_root, "results/bf16/comparison.md")).read()
