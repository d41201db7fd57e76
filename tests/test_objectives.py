"""The loss registry: config keys are argument names, one table drives loss, lam and checks."""

import glob
import importlib
import inspect
import os

import numpy as np
import pytest
import train_testlib  # noqa: F401  (puts the repo root on sys.path for `configs`)

from tks_jax import losses
from tks_jax.training import config_lib, objectives

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config():
    return importlib.import_module("configs.mnist_default").get_config()


def _data(seed=0, num_steps=3, batch=4, num_classes=5):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(num_steps, batch, num_classes)).astype(np.float32)
    return z, rng.integers(0, num_classes, size=batch).astype(np.int32)


def test_config_keys_are_argument_names():
    for name, obj in objectives.OBJECTIVES.items():
        params = inspect.signature(obj.loss).parameters
        for key in obj.args:
            assert params[key].kind == inspect.Parameter.KEYWORD_ONLY, (name, key)
        if obj.scheduled:
            assert obj.scheduled in params
            assert set(obj.schedule_args) <= set(inspect.signature(obj.schedule).parameters)
        assert set(obj.ranges) <= set(obj.args + obj.schedule_args), name


def test_every_config_loss_key_is_read_by_an_objective():
    read = {"name"} | {k for o in objectives.OBJECTIVES.values() for k in o.args + o.schedule_args}
    paths = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
    names = [os.path.basename(p)[:-3] for p in paths if not p.endswith(("__init__.py",
                                                                          "common.py"))]
    assert names
    for name in names:
        config = importlib.import_module(f"configs.{name}").get_config()
        assert set(config.loss) == read, name
    assert config_lib.LOSSES == tuple(objectives.OBJECTIVES)


def test_compute_loss_calls_the_loss_with_the_config_values():
    z, y = _data()
    config = _config()
    lam = np.float32(0.25)
    loss = config.loss
    loss.smoothing, loss.lamb, loss.means, loss.temperature = 0.2, 0.3, 0.5, 2.0
    expected = {
        "baseline": losses.mean_ce(z, y),
        "ls": losses.label_smoothing(z, y, smoothing=0.2),
        "tet": losses.tet(z, y, lamb=0.3, means=0.5),
        "tks": losses.tks(z, y, temperature=2.0, lam=0.25),
    }
    for name, ref in expected.items():
        loss.name = name
        value, aux = objectives.compute_loss(loss, z, y, lam)
        np.testing.assert_allclose(float(value), float(ref), rtol=1e-6)
        assert set(aux) == ({"ce", "kd"} if name == "tks" else set())
    _, aux = losses.tks(z, y, temperature=2.0, lam=0.25, return_aux=True)
    np.testing.assert_allclose(float(objectives.compute_loss(loss, z, y, lam)[1]["kd"]),
                               float(aux["kd"]))


def test_lam_at_is_the_ramp_for_tks_and_zero_otherwise():
    config = _config()
    config.num_epochs, config.loss.peak = 10, 0.7
    assert [objectives.lam_at(config, e) for e in (0, 3, 9)] == [
        np.float32(0.0), np.float32(0.21), np.float32(0.63)]
    assert isinstance(objectives.lam_at(config, 3), np.float32)
    config.loss.name = "tet"
    assert objectives.lam_at(config, 3) == 0.0


@pytest.mark.parametrize("name,key,value,message", [
    ("tks", "temperature", 0.0, "loss.temperature must be > 0, got 0.0"),
    ("tks", "peak", 1.5, r"loss.peak must lie in \[0, 1\], got 1.5"),
    ("ls", "smoothing", 1.0, r"loss.smoothing must lie in \[0, 1\), got 1.0"),
    ("tet", "lamb", -0.5, r"loss.lamb must lie in \[0, 1\], got -0.5"),
    ("tet", "means", float("nan"), "loss.means must be a finite number, got nan"),
])
def test_validation_names_key_value_and_range(name, key, value, message):
    config = _config()
    config.loss.name = name
    config.loss[key] = value
    with pytest.raises(ValueError, match=f"Invalid config: {message}"):
        objectives.validate(config.loss)
    with pytest.raises(ValueError, match=message):
        config_lib.validate_config(config)


def test_non_numbers_are_refused():
    loss = {"name": "tks", "temperature": 3.0, "detach_teacher": False, "peak": True}
    with pytest.raises(ValueError, match="Invalid config: loss.peak must be a number, got True"):
        objectives.validate(loss)
    loss.update(peak=0.7, temperature="3")
    with pytest.raises(ValueError, match="loss.temperature must be a number, got '3'"):
        objectives.validate(loss)
    objectives.validate(dict(loss, temperature=3))  # an int is a number


def test_unknown_name_and_missing_key():
    with pytest.raises(ValueError, match=r"unknown loss.name 'kl'; choose one of \['baseline'"):
        objectives.get("kl")
    loss = {"name": "tks", "temperature": 3.0, "detach_teacher": False, "lambda_peak": 0.7}
    with pytest.raises(ValueError, match=r"loss.peak is missing \(it was called "
                                         r"loss.lambda_peak before\)"):
        objectives.validate(loss)


def test_legacy_keys_of_a_saved_config_are_mapped():
    old = {"seed": 0, "loss": {"name": "tet", "tet_lamb": 0.01, "tet_means": 2.0,
                               "lambda_peak": 0.3, "smoothing": 0.1}}
    new = objectives.upgrade_legacy_keys(old)
    assert new == {"seed": 0, "loss": {"name": "tet", "lamb": 0.01, "means": 2.0, "peak": 0.3,
                                       "smoothing": 0.1}}
    assert "tet_lamb" in old["loss"]  # the input is not modified
    both = objectives.upgrade_legacy_keys({"loss": {"peak": 0.5, "lambda_peak": 0.3}})
    assert both["loss"] == {"peak": 0.5}
    assert objectives.upgrade_legacy_keys({"seed": 1}) == {"seed": 1}


def test_a_workdir_saved_with_old_keys_is_compatible(tmp_path):
    import json

    config = _config()
    saved = config.to_dict()
    saved["loss"]["lambda_peak"] = saved["loss"].pop("peak")
    saved["loss"]["tet_lamb"] = saved["loss"].pop("lamb")
    saved["loss"]["tet_means"] = saved["loss"].pop("means")
    (tmp_path / "config.json").write_text(json.dumps(saved))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "1").mkdir()
    from tks_jax.training import workdir as workdir_lib

    assert workdir_lib.check_workdir(str(tmp_path), config)["resume"]  # resumes, no refusal
