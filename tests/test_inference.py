"""Streaming inference (tks_jax.inference) equals the all-steps model, step for step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tks_jax import inference, models
from tks_jax.training.build import init_variables

T, B = 3, 2


def _variables(model, x, num_steps):
    variables = init_variables(model, jax.random.PRNGKey(0), x, num_steps=num_steps)
    # Large norm scales, non-trivial running statistics and TEBN scales so that every layer
    # fires and the per-step scales matter.
    key = jax.random.PRNGKey(5)

    def perturb(path, v):
        name = jax.tree_util.keystr(path)
        k = jax.random.fold_in(key, hash(name) % 1000)
        if "step_scale" in name:
            return v * jax.random.uniform(k, v.shape, minval=0.5, maxval=2.0)
        if "scale" in name:
            return v * 8.0
        if "mean" in name:
            return v + 0.1 * jax.random.normal(k, v.shape)
        if "var" in name:
            return v * jax.random.uniform(k, v.shape, minval=0.5, maxval=1.5)
        return v

    return jax.tree_util.tree_map_with_path(perturb, variables)


# One case runs in `make test-fast`; the other models and norms are `slow` (the full suite).
_SLOW = pytest.mark.slow
CASES = [
    ("vgg_snn", {}, "events"),
    pytest.param("vgg_snn", {"norm": "bn"}, "static", marks=_SLOW),
    pytest.param("resnet19", {}, "static", marks=_SLOW),
    pytest.param("resnet19", {"norm": "tebn", "num_steps": 4}, "static", marks=_SLOW),
    pytest.param("vgg_snn", {"norm": "tebn", "num_steps": T}, "events", marks=_SLOW),
    pytest.param("sew_resnet18", {}, "static", marks=_SLOW),
    pytest.param("sew_resnet19", {"connect": "iand"}, "static", marks=_SLOW),
    pytest.param("sew_resnet34", {"norm": "tdbn"}, "static", marks=_SLOW),
    pytest.param("sew_resnet50", {}, "static", marks=_SLOW),
]


@pytest.mark.parametrize("name, options, kind", CASES)
def test_stepping_equals_all_steps(name, options, kind):
    size = 32 if name in ("sew_resnet18", "sew_resnet34", "sew_resnet50") else 16
    model = models.get_model(name, num_classes=4, width=0.0625, **options)
    rng = np.random.default_rng(0)
    if kind == "events":
        x = (rng.random((T, B, size, size, 2)) < 0.3).astype(np.float32)
        frames = x
    else:
        x = rng.random((B, size, size, 3)).astype(np.float32)
        frames = np.broadcast_to(x, (T,) + x.shape)
    variables = _variables(model, x, T)
    want = np.asarray(jax.jit(functools.partial(model.apply, num_steps=T, train=False))(
        variables, x))
    state = inference.init_state(model, variables, frames[0])
    step = jax.jit(inference.step, static_argnums=0)
    got = []
    for t in range(T):
        logits, state = step(model, variables, state, frames[t])
        got.append(np.asarray(logits))
    np.testing.assert_allclose(np.stack(got), want, rtol=1e-5, atol=1e-5)
    assert int(state["t"]) == T
    # Not vacuous: the carried membranes are not all zero after T steps, and (event input)
    # the logits change over time.
    assert any(np.any(np.asarray(v)) for v in jax.tree_util.tree_leaves(state["lif_state"]))
    if kind == "events":
        assert np.abs(want[-1] - want[0]).max() > 1e-3


@pytest.mark.slow
def test_state_layout_and_tebn_limit():
    model = models.get_model("resnet19", num_classes=4, width=0.0625, norm="tebn", num_steps=2)
    x = np.ones((B, 16, 16, 3), np.float32)
    variables = init_variables(model, jax.random.PRNGKey(0), x, num_steps=2)
    assert set(variables) == {"params", "batch_stats"}  # init creates no streaming state
    state = inference.init_state(model, variables, x)
    leaves = jax.tree_util.tree_leaves_with_path(state["lif_state"])
    names = {jax.tree_util.keystr(p).split("'")[-2] for p, _ in leaves}
    assert names == {"membrane", "step"}
    for p, v in leaves:
        assert not np.any(np.asarray(v)), jax.tree_util.keystr(p)  # zeros
    stem = state["lif_state"]["stem"]["lif"]["membrane"]
    assert stem.shape == (B, 16, 16, 8)
    for _ in range(2):
        _, state = inference.step(model, variables, state, x)
    with pytest.raises(ValueError, match="per-step scales"):
        inference.step(model, variables, state, x)


@pytest.mark.slow
def test_run_steps_and_remat_model():
    model = models.get_model("vgg_snn", num_classes=4, width=0.0625, remat=True)
    x = np.random.default_rng(1).random((B, 16, 16, 2)).astype(np.float32)
    variables = _variables(model, x, T)
    want = model.apply(variables, x, num_steps=T, train=False)
    got = jax.jit(inference.run_steps, static_argnums=(0, 3))(model, variables, x, T)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_bad_input():
    model = models.get_model("vgg_snn", num_classes=4, width=0.0625)
    x = jnp.ones((B, 16, 16, 2))
    # The checks come before any arithmetic: the variables' shapes are enough.
    variables = jax.eval_shape(
        functools.partial(model.init, num_steps=1), jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        inference.init_state(model, variables, jnp.ones((T, B, 16, 16, 2)))
    state = inference.init_state(model, variables, x)
    with pytest.raises(ValueError, match="pass x\\[t\\]"):
        inference.step(model, variables, state, jnp.ones((16, 16, 2)))


def test_streamed_bf16_membrane_is_float32_and_equals_the_all_steps_lif():
    # One LIF layer stepped through the streaming state on bf16 currents: the carried membrane
    # is float32 (as in ``spiking.lif``) and the spikes equal the all-steps layer's.
    from tks_jax.models import layers

    lif = layers.LIF()
    currents = jnp.asarray(
        np.random.default_rng(3).normal(0.4, 0.5, size=(12, 2, 5)), jnp.bfloat16)
    want = lif.apply({}, currents)
    state = {layers.STREAM_STATE: {}}
    got = []
    for t in range(12):
        s, new = lif.apply(state, currents[t:t + 1], mutable=[layers.STREAM_STATE])
        state = dict(new)
        assert state[layers.STREAM_STATE]["membrane"].dtype == jnp.float32
        assert s.dtype == jnp.bfloat16
        got.append(s[0])
    assert 0 < float(want.astype(jnp.float32).mean()) < 1
    np.testing.assert_array_equal(np.asarray(jnp.stack(got), np.float32),
                                  np.asarray(want, np.float32))
