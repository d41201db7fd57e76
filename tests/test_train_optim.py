"""Learning-rate schedule and weight-decay mask (docs/method.md §9), against hand formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import train_testlib as tl

from tks_jax import models
from tks_jax.training import optim


def _config(granularity="epoch"):
    c = tl.tiny_config()
    c.batch_size = 128
    c.num_epochs = 6
    c.optimizer.base_learning_rate = 5e-3
    c.optimizer.base_batch_size = 1024
    c.optimizer.warmup_epochs = 2
    c.optimizer.warmup_init_learning_rate = 1e-6
    c.optimizer.min_learning_rate = 1e-5
    c.optimizer.schedule_granularity = granularity
    return c


def test_linear_scaling_rule():
    assert optim.peak_learning_rate(_config()) == pytest.approx(6.25e-4)


def test_per_epoch_warmup_then_cosine():
    peak, init, floor = 6.25e-4, 1e-6, 1e-5
    sched = optim.make_schedule(_config("epoch"), steps_per_epoch=10)

    def cosine(epoch):  # 2 warm-up epochs, 6 in total
        return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * (epoch - 2) / 4))

    expected = {0: init, 9: init, 10: init + (peak - init) / 2, 19: init + (peak - init) / 2,
                20: peak, 29: peak, 40: cosine(4), 59: cosine(5), 60: floor, 1000: floor}
    for step, lr in expected.items():
        assert float(sched(step)) == pytest.approx(lr, rel=1e-5), step


def test_per_step_granularity_uses_fractional_epochs():
    peak, init = 6.25e-4, 1e-6
    sched = optim.make_schedule(_config("step"), steps_per_epoch=10)
    assert float(sched(5)) == pytest.approx(init + (peak - init) * 0.5 / 2, rel=1e-5)
    assert float(sched(45)) == pytest.approx(
        1e-5 + 0.5 * (peak - 1e-5) * (1 + math.cos(math.pi * 2.5 / 4)), rel=1e-5)


def test_weight_decay_only_on_kernels():
    model = models.get_model("resnet19", num_classes=10, width=0.125, norm="tebn", num_steps=2)
    params = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), num_steps=2)
    )["params"]
    mask = optim.weight_decay_mask(params)
    flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(mask)}
    decayed = {k for k, v in flat.items() if v}
    assert decayed and all(k.endswith("['kernel']") for k in decayed)
    assert not any(flat[k] for k in flat if k.endswith(("['bias']", "['scale']")))
    assert any("step_scale" in k for k in flat)  # TEBN's per-step scales exist, not decayed
    assert not any(flat[k] for k in flat if "step_scale" in k)


def test_adamw_with_zero_gradient_decays_kernels_only():
    c = _config()
    c.optimizer.warmup_epochs = 0
    tx = optim.make_optimizer(c, lambda step: 0.1)
    params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones((3,))},
              "norm": {"scale": jnp.ones((3,))}}
    grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new["dense"]["kernel"], 1 - 0.1 * 0.01)  # lr * wd * w
    np.testing.assert_array_equal(new["dense"]["bias"], 1.0)
    np.testing.assert_array_equal(new["norm"]["scale"], 1.0)


@pytest.mark.parametrize("name,norm,optimizer", [
    ("vgg_snn", "tdbn", "adamw"),
    # At LLVM level 0 the read-out bias of this one differs in the last bits.
    pytest.param("resnet19", "tebn", "sgd", marks=pytest.mark.slow),
])
def test_initial_state_equals_the_default_compilation_bitwise(name, norm, optimizer):
    """The state training starts from (compiled with ``build.INIT_COMPILER_OPTIONS_CPU`` on
    CPU) is bit for bit what ``jax.jit`` with XLA's default options computes: same seed, same
    parameters as before the option existed."""
    from tks_jax.training import build, sharding

    config = tl.tiny_config(**{"model.name": name, "model.norm": norm,
                               "optimizer.name": optimizer})
    info = type("Info", (), {"input_shape": (32, 32, 3), "is_event": False})()
    model = build.build_model(config, num_classes=10)
    init_fn = build.make_init_fn(model, optim.make_optimizer(
        config, optim.make_schedule(config, 2)), info, config)
    repl = sharding.replicated(sharding.make_mesh())
    state = build.initial_state(init_fn, 7, repl)
    reference = jax.jit(init_fn)(jax.random.PRNGKey(7))
    flat, tree = jax.tree_util.tree_flatten_with_path(state)
    assert tree == jax.tree.structure(reference)
    for (path, x), y in zip(flat, jax.tree.leaves(reference), strict=True):
        assert x.dtype == y.dtype and x.sharding.is_equivalent_to(repl, x.ndim)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y),
                                      err_msg=jax.tree_util.keystr(path))
    # model.init compiled alone the same way (tests and benchmarks) gives the same parameters.
    variables = build.init_variables(model, jax.random.PRNGKey(7),
                                     np.zeros((1, 32, 32, 3), np.float32),
                                     num_steps=config.num_steps, train=False)
    for a, b in zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(state["params"]),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Not vacuous: the kernels are random draws, not constants.
    kernels = [np.asarray(x) for (path, x) in flat
               if "params" in jax.tree_util.keystr(path) and x.ndim == 4]
    assert kernels and all(k.std() > 0 for k in kernels)


def test_initial_state_without_the_compile_option(monkeypatch):
    """An XLA that does not know the option: the state compiles with the defaults instead."""
    from tks_jax.training import build, sharding

    def init_fn(rng):
        return {"w": jax.random.uniform(rng, (3, 4)), "step": jnp.zeros((), jnp.int32)}

    monkeypatch.setattr(build, "INIT_COMPILER_OPTIONS_CPU", {"xla_no_such_option": 1})
    state = build.initial_state(init_fn, 3, sharding.replicated(sharding.make_mesh()))
    want = jax.jit(init_fn)(jax.random.PRNGKey(3))
    np.testing.assert_array_equal(np.asarray(state["w"]), np.asarray(want["w"]))
