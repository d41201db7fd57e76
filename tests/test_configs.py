"""Every experiment config loads and validates; bad configs fail early with clear messages."""

import glob
import importlib
import json
import os

import jax
import ml_collections
import pytest

from tks_jax.training import config_lib, optim

# ``configs`` is a package of the project (pyproject), importable like ``tks_jax``.
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
NAMES = sorted(
    os.path.basename(p)[:-3] for p in glob.glob(os.path.join(CONFIG_DIR, "*.py"))
    if not os.path.basename(p).startswith(("_", "common"))
)


def _get(name, arg=None):
    return importlib.import_module(f"configs.{name}").get_config(arg)


PAPER = sorted({
    "cifar10_resnet19", "cifar10_resnet19_tebn", "cifar10_sew_resnet19",
    "cifar100_resnet19", "cifar100_resnet19_tebn", "cifar100_sew_resnet19",
    "imagenet_sew_resnet34", "imagenet_sew_resnet50", "dvs_cifar10_vgg_snn",
    "ncaltech101_vgg_snn",
} | {f"{d}_sew_resnet{n}" for d in ("cub200", "dogs", "cars") for n in (18, 34)})
DEFAULTS = ["mnist_default", "nmnist_synth_default"]


def test_one_config_per_paper_experiment():
    assert set(PAPER + DEFAULTS) <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_config_file_loads_and_validates(name):
    config_lib.validate_config(_get(name))


@pytest.mark.parametrize("name", PAPER + DEFAULTS)
def test_experiment_config_smoke_and_docstring(name):
    config = _get(name)
    assert config.experiment == name
    smoke = config_lib.apply_smoke(_get(name, "smoke"))
    config_lib.validate_config(smoke)
    assert smoke.max_train_steps <= 4 and smoke.batch_size <= 8
    doc = importlib.import_module(f"configs.{name}").__doc__
    assert f"--config configs/{name}.py" in doc and "Hardware" in doc
    json.dumps(config.to_dict())  # config.json must be writable


def _family(name):
    if name.startswith(("dvs", "ncaltech", "nmnist")):
        return "event"
    return "imagenet" if name.startswith("imagenet") else "static"


@pytest.mark.parametrize("name", PAPER)
def test_paper_settings(name):
    """docs/method.md §4 and §9: tau_kd, lambda peak, T and the optimiser per data family."""
    c = _get(name)
    family = _family(name)
    temperature, peak, t = {"event": (5.0, 0.3, 10), "imagenet": (1.0, 0.7, 4),
                            "static": (3.0, 0.7, 4)}[family]
    assert (c.loss.name, c.loss.temperature, c.loss.peak, c.num_steps) == (
        "tks", temperature, peak, t)
    assert c.batch_size == 128
    assert optim.peak_learning_rate(c) == pytest.approx(6.25e-4)
    if family == "imagenet":
        assert (c.optimizer.name, c.optimizer.weight_decay) == ("adam", 0.0)
    else:
        assert (c.optimizer.name, c.optimizer.weight_decay) == ("adamw", 0.01)
    assert c.optimizer.warmup_epochs == 5 and c.optimizer.min_learning_rate == 1e-5
    assert c.optimizer.schedule_granularity == "epoch"
    assert (c.model.tau, c.model.v_threshold, c.model.surrogate) == (2.0, 0.5, "qgate")
    assert c.model.norm == ("tebn" if name.endswith("tebn") else
                            "bn" if "sew" in name else "tdbn")


def test_paper_numbers_in_configs():
    # docs/method.md §11, copied by hand.
    assert _get("cifar10_resnet19").paper.tks.to_dict() == {"top1": 96.35, "aurc": 2.76}
    assert _get("cifar100_sew_resnet19").paper.baseline.to_dict() == {"top1": 78.35,
                                                                      "aurc": 67.55}
    assert _get("ncaltech101_vgg_snn").paper.ls.top1 == 82.76
    assert _get("imagenet_sew_resnet50").paper.tks.top1 == 70.70


@pytest.mark.parametrize("name", ["cifar10_resnet19_tebn", "dvs_cifar10_vgg_snn",
                                  "imagenet_sew_resnet50", "cub200_sew_resnet18"])
def test_smoke_model_init_shapes(name):
    """Builds each smoke model and initialises it abstractly (no compute)."""
    from tks_jax.training import loop

    c = config_lib.apply_smoke(_get(name, "smoke"))
    num_classes = {"cifar10": 10, "dvs_cifar10": 10, "imagenet2012": 1000,
                   "caltech_birds2011": 200}[c.data.name]
    shape = {"cifar10": (32, 32, 3), "dvs_cifar10": (c.num_steps, 48, 48, 2),
             "imagenet2012": (224, 224, 3), "caltech_birds2011": (224, 224, 3)}[c.data.name]
    model = loop.build_model(c, num_classes)
    info = type("Info", (), {"input_shape": shape, "is_event": c.data.name == "dvs_cifar10"})
    tx = optim.make_optimizer(c, optim.make_schedule(c, 10))
    state = jax.eval_shape(loop.make_init_fn(model, tx, info, c), jax.random.PRNGKey(0))
    assert state["params"] and state["step"].shape == ()
    assert loop.model_step_limit(model) == (4 if name.endswith("tebn") else None)


# --- Bad input: each case fails before anything runs, naming the key and what is allowed. ---

BAD = [
    ("data.name", "cifar11", "unknown data.name 'cifar11'; choose one of"),
    ("model.name", "resnet20", "unknown model.name 'resnet20'; choose one of"),
    ("loss.name", "kl", "unknown loss.name 'kl'; choose one of"),
    ("num_steps", 0, "num_steps (T) must be an integer >= 1, got 0"),
    ("eval_num_steps", -2, "eval_num_steps (T) must be an integer >= 1"),
    ("loss.temperature", 0.0, "loss.temperature must be > 0, got 0.0"),
    ("loss.temperature", -1.0, "loss.temperature must be > 0"),
    ("loss.peak", 1.5, "loss.peak must lie in [0, 1], got 1.5"),
    ("loss.peak", -0.1, "loss.peak must lie in [0, 1]"),
    ("optimizer.schedule_granularity", "batch", "optimizer.schedule_granularity must be one of"),
    ("optimizer.name", "lamb", "unknown optimizer.name 'lamb'"),
    ("model.conv", "fft", "unknown model.conv 'fft'; choose one of ['auto', 'winograd', 'direct']"),
]


@pytest.mark.parametrize("key,value,message", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_config_values(key, value, message):
    c = ml_collections.ConfigDict(_get("cifar10_resnet19").to_dict())
    *path, last = key.split(".")
    target = c
    for p in path:
        target = target[p]
    target[last] = value
    with pytest.raises(ValueError, match="Invalid config: ") as e:
        config_lib.validate_config(c)
    assert message in str(e.value)


def test_batch_not_divisible_by_devices():
    c = _get("cifar10_resnet19")
    config_lib.validate_config(c, num_devices=8)  # 128 = 8 x 16
    c.batch_size = 100
    with pytest.raises(ValueError, match=r"batch_size=100 is not divisible by the number of "
                                         r"devices \(8\); use a multiple of 8"):
        config_lib.validate_config(c, num_devices=8)


def test_eval_steps_beyond_tebn_limit():
    config_lib.check_num_steps_supported(None, 100, "eval_num_steps")  # tdBN: any T
    config_lib.check_num_steps_supported(4, 4, "eval_num_steps")
    with pytest.raises(ValueError, match="eval_num_steps=6 is larger than the model supports "
                                         r"\(4: TEBN"):
        config_lib.check_num_steps_supported(4, 6, "eval_num_steps")


def test_config_accepts_every_conv_algorithm_and_refuses_others():
    from tks_jax.models import kernels

    for algorithm in kernels.CONV_ALGORITHMS:
        c = _get("cifar10_resnet19")
        c.model.conv = algorithm
        config_lib.validate_config(c)
    c = _get("cifar10_resnet19")
    c.model.conv = "fft"
    with pytest.raises(ValueError, match="model.conv"):
        config_lib.validate_config(c)


def test_incompatible_workdir_refused(tmp_path):
    from tks_jax.training import workdir as workdir_lib

    def resume(c):
        return workdir_lib.check_workdir(str(tmp_path), c)["resume"]

    c = _get("cifar10_resnet19")
    assert not resume(c)  # empty: a new run
    (tmp_path / "config.json").write_text(json.dumps(c.to_dict()))
    assert not resume(c)  # same config, no checkpoint yet: a new run
    c.loss.temperature = 2.0
    with pytest.raises(ValueError, match="loss.temperature"):  # artefacts of another run
        resume(c)
    c.loss.temperature = 3.0
    (tmp_path / "checkpoints" / "10").mkdir(parents=True)
    assert resume(c)  # same config: resume
    c.log_every_steps = 7  # runtime keys may change on resume
    assert resume(c)
    # How the model computes may change too (same parameters, same maths): remat to fit a
    # smaller machine, the conv algorithm, or a run saved before model.conv existed.
    old = c.to_dict()
    del old["model"]["conv"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    c.model.remat, c.model.conv = True, "direct"
    assert resume(c)
    c.loss.temperature = 2.0
    with pytest.raises(ValueError, match=r"incompatible config \(loss.temperature: 3.0 -> 2.0\)"
                                         r".*--config.overwrite=True"):
        resume(c)
    c.overwrite = True
    assert not resume(c)  # overwrite: start afresh
    c.overwrite = False
    (tmp_path / "config.json").unlink()  # checkpoints of an unknown config are not discarded
    with pytest.raises(ValueError, match="holds run files .checkpoints. but no config.json"):
        resume(c)


def test_smoke_arg_and_unknown_arg():
    assert _get("mnist_default", "smoke").smoke
    with pytest.raises(ValueError, match="Unknown config argument 'fast'"):
        _get("mnist_default", "fast")


def test_anytime_report_is_checked_before_training():
    c = _get("mnist_default")
    c.anytime = "max_drop=0.005"
    with pytest.raises(ValueError, match="data.validation_size"):  # nothing to calibrate on
        config_lib.validate_config(c)
    c.data.validation_size = 5000
    config_lib.validate_config(c)
    c.anytime = "max_drop=0.005,confidence=entropy"
    with pytest.raises(ValueError, match="anytime: .*confidence must be one of"):
        config_lib.validate_config(c)
