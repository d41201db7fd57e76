"""Tests of the spiking model zoo (tks_jax.models): shapes, parameter counts, direct encoding,
causality over T, BatchNorm state, jit equality, errors.

Compile time dominates on CPU, so models are tiny (width 0.125, 8-32 pixels, T <= 3),
initialised with an ``rbg`` key (much cheaper to compile than threefry) or, where the init
values do not matter, given NumPy values on ``jax.eval_shape`` shapes (no init compile).
Full-size models are only traced (``jax.eval_shape``) for their parameter counts.
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tks_jax import models, spiking
from tks_jax.models import layers, sew_resnet
from tks_jax.models.resnet import ResNet19
from tks_jax.training.build import init_variables

ALL = ("vgg_snn", "resnet19", "sew_resnet18", "sew_resnet19", "sew_resnet34", "sew_resnet50")


def _key(seed: int = 0):
    return jax.random.key(seed, impl="rbg")


def _init(model, x, num_steps):
    return init_variables(model, _key(), x, num_steps=num_steps, train=False)


def _apply_fn(model, num_steps, train, mutable=False):
    def fn(variables, x):
        kwargs = {"mutable": mutable} if mutable else {}
        return model.apply(variables, x, num_steps=num_steps, train=train, **kwargs)

    return fn


def _count(tree) -> int:
    return sum(math.prod(a.shape) for a in jax.tree.leaves(tree))


def _param_count(model, input_shape, num_steps=1) -> int:
    shapes = jax.eval_shape(
        functools.partial(model.init, num_steps=num_steps, train=False),
        _key(),
        jax.ShapeDtypeStruct(input_shape, jnp.float32),
    )
    return _count(shapes["params"])


# --------------------------------------------------------------------------------------------
# Reference parameter counts, written from the layer lists of docs/method.md §7 (PyTorch
# conventions: conv without bias = cin*cout*k*k, BN with affine = 2*c, FC with bias).
# --------------------------------------------------------------------------------------------


def _conv(cin, cout, k):
    return cin * cout * k * k


def _bn(c):
    return 2 * c


def _fc(i, o):
    return i * o + o


def _ref_vgg_snn(num_classes, in_ch=2, flat_hw=3 * 3):
    # 64C3-128C3-AP2-256C3-256C3-AP2-512C3-512C3-AP2-512C3-512C3-AP2-FC, each C3 conv+BN.
    chans = [in_ch, 64, 128, 256, 256, 512, 512, 512, 512]
    n = sum(_conv(a, b, 3) + _bn(b) for a, b in zip(chans[:-1], chans[1:], strict=True))
    return n + _fc(512 * flat_hw, num_classes)


def _ref_resnet19(num_classes):
    # conv3x3(3->128)+BN; BasicBlocks 128x3, 256x3, 512x2 (two conv3x3+BN each, conv1x1+BN
    # shortcut when the shape changes); FC(512->256), FC(256->C).
    n = _conv(3, 128, 3) + _bn(128)
    cin = 128
    for cout, blocks in ((128, 3), (256, 3), (512, 2)):
        for _ in range(blocks):
            n += _conv(cin, cout, 3) + _bn(cout) + _conv(cout, cout, 3) + _bn(cout)
            if cin != cout:
                n += _conv(cin, cout, 1) + _bn(cout)
            cin = cout
    return n + _fc(512, 256) + _fc(256, num_classes)


def _ref_sew_resnet19(num_classes):
    # conv3x3(3->64)+BN; SEW BasicBlocks 128x3, 256x3, 512x2 (downsample conv1x1+BN);
    # FC(512->256), FC(256->C).
    n = _conv(3, 64, 3) + _bn(64)
    cin = 64
    for cout, blocks in ((128, 3), (256, 3), (512, 2)):
        for _ in range(blocks):
            n += _conv(cin, cout, 3) + _bn(cout) + _conv(cout, cout, 3) + _bn(cout)
            if cin != cout:
                n += _conv(cin, cout, 1) + _bn(cout)
            cin = cout
    return n + _fc(512, 256) + _fc(256, num_classes)


def _ref_torchvision_resnet(blocks, bottleneck, num_classes):
    # torchvision ResNet: conv7x7(3->64)+BN, stages 64-128-256-512 (x4 for Bottleneck),
    # downsample conv1x1+BN at the first block of a stage when the shape changes, FC.
    n = _conv(3, 64, 7) + _bn(64)
    cin = 64
    for planes, count in zip((64, 128, 256, 512), blocks, strict=True):
        for b in range(count):
            stride = 2 if (planes != 64 and b == 0) else 1
            if bottleneck:
                cout = 4 * planes
                n += _conv(cin, planes, 1) + _conv(planes, planes, 3) + _conv(planes, cout, 1)
                n += _bn(planes) * 2 + _bn(cout)
            else:
                cout = planes
                n += _conv(cin, cout, 3) + _conv(cout, cout, 3) + 2 * _bn(cout)
            if stride != 1 or cin != cout:
                n += _conv(cin, cout, 1) + _bn(cout)
            cin = cout
    return n + _fc(cin, num_classes)


def test_reference_counts_match_torchvision():
    # Published torchvision counts (1000 classes) check the layer-list formula itself.
    assert _ref_torchvision_resnet((2, 2, 2, 2), False, 1000) == 11_689_512
    assert _ref_torchvision_resnet((3, 4, 6, 3), False, 1000) == 21_797_672
    assert _ref_torchvision_resnet((3, 4, 6, 3), True, 1000) == 25_557_032


@pytest.mark.parametrize(
    "name,num_classes,input_shape,expected",
    [
        ("vgg_snn", 10, (1, 48, 48, 2), _ref_vgg_snn(10)),
        ("vgg_snn", 101, (1, 48, 48, 2), _ref_vgg_snn(101)),
        ("resnet19", 10, (1, 32, 32, 3), _ref_resnet19(10)),
        ("resnet19", 100, (1, 32, 32, 3), _ref_resnet19(100)),
        ("sew_resnet19", 10, (1, 32, 32, 3), _ref_sew_resnet19(10)),
        ("sew_resnet18", 1000, (1, 32, 32, 3), 11_689_512),
        ("sew_resnet34", 1000, (1, 32, 32, 3), 21_797_672),
        ("sew_resnet50", 1000, (1, 32, 32, 3), 25_557_032),
        ("sew_resnet18", 200, (1, 32, 32, 3), _ref_torchvision_resnet((2, 2, 2, 2), False, 200)),
        ("sew_resnet50", 120, (1, 32, 32, 3), _ref_torchvision_resnet((3, 4, 6, 3), True, 120)),
    ],
)
def test_full_size_parameter_counts(name, num_classes, input_shape, expected):
    model = models.get_model(name, num_classes=num_classes)
    assert _param_count(model, input_shape) == expected


def test_resnet19_count_is_the_known_12_6m():
    # ResNet-19 of Zheng et al. (2021) with 10 classes: 12.63 M parameters (written by hand:
    # stem 3,712 + stages 886,272 + 3,280,384 + 8,393,728 + head 131,328 + 2,570).
    assert _ref_resnet19(10) == 3_712 + 886_272 + 3_280_384 + 8_393_728 + 131_328 + 2_570
    assert _ref_resnet19(10) == 12_697_994


def test_tebn_adds_one_scale_per_step_and_norm():
    plain = _param_count(models.get_model("resnet19", num_classes=10), (1, 32, 32, 3))
    tebn = models.get_model("resnet19", num_classes=10, norm="tebn", num_steps=4)
    # ResNet-19 has 1 + 8*2 + 2 shortcut norms = 19 norm layers, each with T = 4 scales.
    assert _param_count(tebn, (1, 32, 32, 3), num_steps=4) == plain + 19 * 4
    assert models.max_num_steps(tebn) == 4
    assert models.max_num_steps(models.get_model("resnet19", num_classes=10)) is None


@pytest.mark.parametrize("hw,flat", [(48, 512 * 3 * 3), (34, 512 * 2 * 2), (28, 512 * 1 * 1)])
def test_vgg_flatten_follows_input_size(hw, flat):
    model = models.get_model("vgg_snn", num_classes=10)
    shapes = jax.eval_shape(
        functools.partial(model.init, num_steps=2), _key(), jnp.zeros((2, 1, hw, hw, 2))
    )
    assert shapes["params"]["fc"]["dense"]["kernel"].shape == (flat, 10)


def test_width_multiplier_scales_channels():
    assert [layers.scaled_channels(c, 1.0) for c in (64, 128, 256, 512)] == [64, 128, 256, 512]
    assert [layers.scaled_channels(c, 0.125) for c in (64, 128, 256, 512)] == [8, 16, 32, 64]
    assert [layers.scaled_channels(c, 0.3) for c in (64, 512)] == [16, 152]  # 19.2, 153.6
    assert layers.scaled_channels(64, 0.01) == 8  # never below 8
    shapes = jax.eval_shape(
        functools.partial(
            models.get_model("sew_resnet50", num_classes=5, width=0.25).init, num_steps=1
        ),
        _key(),
        jnp.zeros((1, 32, 32, 3)),
    )
    assert shapes["params"]["fc"]["dense"]["kernel"].shape == (4 * 128, 5)


# --------------------------------------------------------------------------------------------
# Every registered model: forward and backward at small size.
# --------------------------------------------------------------------------------------------


def _torch_like_values(shapes, seed=0):
    """Parameters with PyTorch-default-like values drawn in NumPy from ``eval_shape`` shapes.

    Skips compiling ``init`` (as costly as the forward pass) in the tests that only need some
    valid parameters: kernels U(+-1/sqrt(fan_in)), BN scale 1 / bias 0, running mean 0 / var 1.
    """
    rng = np.random.default_rng(seed)

    def value(path, s):
        leaf = str(path[-1])
        if "mean" in leaf or ("bias" in leaf and "bn" in str(path)):
            return np.zeros(s.shape, np.float32)
        if "var" in leaf or "scale" in leaf:
            return np.ones(s.shape, np.float32)
        fan_in = math.prod(s.shape[:-1]) if len(s.shape) > 1 else s.shape[0]
        bound = 1.0 / math.sqrt(fan_in)
        return rng.uniform(-bound, bound, s.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(value, shapes)


@pytest.mark.parametrize(
    "name", [n if n == "vgg_snn" else pytest.param(n, marks=pytest.mark.slow) for n in ALL]
)
def test_forward_backward_small(name):
    num_steps, batch, classes = 2, 2, 7
    model = models.get_model(name, num_classes=classes, width=0.125)
    if name == "vgg_snn":  # event frames [T, B, H, W, 2]
        x = jax.random.uniform(_key(1), (num_steps, batch, 16, 16, 2), maxval=3.0)
    else:  # static images, direct encoding
        x = 2.0 * jax.random.normal(_key(1), (batch, 32, 32, 3))
    shapes = jax.eval_shape(
        functools.partial(model.init, num_steps=num_steps, train=False), _key(), x
    )
    assert set(shapes) == {"params", "batch_stats"}
    variables = _torch_like_values(shapes)

    def loss_fn(params, x):
        logits, state = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            x,
            num_steps=num_steps,
            train=True,
            mutable=["batch_stats"],
        )
        return jnp.mean(logits**2), (logits, state)

    grads, (logits, state) = jax.jit(jax.grad(loss_fn, has_aux=True))(variables["params"], x)
    assert logits.shape == (num_steps, batch, classes)
    assert logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    chex.assert_trees_all_equal_shapes(grads, shapes["params"])
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    # The gradient reaches the first conv through every LIF layer (surrogate gradients).
    stem = "conv1" if name == "vgg_snn" else "stem"
    assert float(jnp.abs(grads[stem]["conv"]["conv"]["kernel"]).sum()) > 0
    # Training mode updated the running statistics.
    old = jax.tree.leaves(variables["batch_stats"])
    new = jax.tree.leaves(state["batch_stats"])
    assert all(not np.allclose(a, b) for a, b in zip(old, new, strict=True))


# --------------------------------------------------------------------------------------------
# Behaviour over time, BatchNorm state, jit: on a small ResNet-19 (static stem, residual and
# shortcut paths, spiking FC head). Plain BN keeps the tiny net spiking at initialisation.
# --------------------------------------------------------------------------------------------


def _tiny_resnet(**kwargs):
    opts = dict(num_classes=5, width=0.125, norm="bn", stage_sizes=(1, 1), stage_widths=(128, 256))
    opts.update(kwargs)
    return ResNet19(**opts)


def _lively(variables, train_fn, x, steps=40):
    """Variables under which every layer of a tiny net fires in inference mode.

    PyTorch-default init leaves the hidden spiking FC silent in so small a net: scale it up so
    that the logits change over time. Running statistics are converged to the batch statistics
    (0.9^40 of the init is left), so that inference-mode BN does not silence the net.
    """
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: 10.0 * a if "fc1" in str(path[0]) else a, variables["params"]
    )
    stats = variables["batch_stats"]
    for _ in range(steps):
        _, state = train_fn({"params": params, "batch_stats": stats}, x)
        stats = state["batch_stats"]
    return {"params": params, "batch_stats": stats}


class _Tiny:
    """A small trained-statistics ResNet-19 with memoised jitted apply functions."""

    def __init__(self):
        self.model = _tiny_resnet()
        self.x = 2.0 * jax.random.normal(_key(2), (3, 8, 8, 3))
        shapes = jax.eval_shape(
            functools.partial(self.model.init, num_steps=3, train=False), _key(), self.x
        )
        variables = _torch_like_values(shapes)
        self.init_stats = variables["batch_stats"]
        self.variables = _lively(variables, self.fn(3, True), self.x)

    @functools.cache  # noqa: B019 - one instance per test module
    def fn(self, num_steps, train):
        mutable = ["batch_stats"] if train else False
        return jax.jit(_apply_fn(self.model, num_steps, train, mutable))


@pytest.fixture(scope="module")
def tiny():
    return _Tiny()


@pytest.mark.slow
def test_direct_encoding_equals_repeated_frames(tiny):
    x, variables = tiny.x, tiny.variables
    frames = jnp.broadcast_to(x, (3,) + x.shape)
    np.testing.assert_allclose(
        tiny.fn(3, False)(variables, x), tiny.fn(3, False)(variables, frames), rtol=1e-5, atol=1e-5
    )
    # Training mode: same logits and same new statistics (BN over T copies = BN over one).
    s_logits, s_state = tiny.fn(3, True)(variables, x)
    f_logits, f_state = tiny.fn(3, True)(variables, frames)
    np.testing.assert_allclose(s_logits, f_logits, rtol=1e-4, atol=1e-4)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
        s_state["batch_stats"],
        f_state["batch_stats"],
    )


@pytest.mark.slow
def test_causal_over_steps_and_any_T(tiny):
    x, variables = tiny.x, tiny.variables
    full = tiny.fn(3, False)(variables, x)
    assert full.shape == (3, 3, 5)
    for k in (1, 2):
        short = tiny.fn(k, False)(variables, x)
        assert short.shape == (k, 3, 5)
        np.testing.assert_allclose(short, full[:k], rtol=1e-5, atol=1e-5)
    # The steps differ (the membrane carries information), so the check above is not vacuous.
    assert not np.allclose(full[0], full[-1])


@pytest.mark.slow
def test_tebn_causal_and_limited():
    model = _tiny_resnet(norm="tebn", num_steps=3)
    x = 2.0 * jax.random.normal(_key(3), (3, 2, 8, 8, 3))
    variables = _torch_like_values(
        jax.eval_shape(functools.partial(model.init, num_steps=3, train=False), _key(), x)
    )
    # Distinct per-step scales, so that using the wrong p_t would show.
    params = jax.tree_util.tree_map_with_path(
        lambda path, p: p * jnp.array([1.0, 0.5, 2.0]) if "step_scale" in str(path[-1]) else p,
        variables["params"],
    )
    variables = {"params": params, "batch_stats": variables["batch_stats"]}
    variables = _lively(variables, jax.jit(_apply_fn(model, 3, True, ["batch_stats"])), x)
    full = jax.jit(_apply_fn(model, 3, False))(variables, x)
    short = jax.jit(_apply_fn(model, 2, False))(variables, x[:2])
    np.testing.assert_allclose(short, full[:2], rtol=1e-5, atol=1e-5)
    assert not np.allclose(full[0], full[1])
    with pytest.raises(ValueError, match="TEBN"):
        model.apply(variables, jnp.concatenate([x, x[:1]]), num_steps=4)


def test_batchnorm_stats_update_in_training_and_are_used_in_inference(tiny):
    x, variables = tiny.x, tiny.variables
    stats = variables["batch_stats"]
    # The fixture ran training steps: the running means moved away from 0.
    assert not np.allclose(stats["stem"]["norm"]["bn"]["mean"], 0.0)
    # Inference reads the running statistics: other statistics, other logits.
    infer = tiny.fn(3, False)
    out_trained = infer(variables, x)
    out_fresh = infer({"params": variables["params"], "batch_stats": tiny.init_stats}, x)
    assert not np.allclose(out_trained, out_fresh)
    # Inference does not depend on the other samples of the batch; training does.
    other = x.at[1:].set(5.0 * jax.random.normal(_key(7), x[1:].shape))
    np.testing.assert_allclose(infer(variables, other)[:, 0], out_trained[:, 0], atol=1e-5)
    train = tiny.fn(3, True)
    assert not np.allclose(train(variables, other)[0][:, 0], train(variables, x)[0][:, 0])


@pytest.mark.slow
def test_jit_equals_no_jit_and_no_state_leaks(tiny):
    x, variables = tiny.x, tiny.variables
    # Training mode (batch statistics and their update); inference mode shares every layer but
    # BN's running-statistics branch, which the other tests run under jit.
    eager = _apply_fn(tiny.model, 3, True, ["batch_stats"])(variables, x)
    jitted = tiny.fn(3, True)(variables, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), eager, jitted)
    # Two calls on other data in between give identical results: nothing persists.
    infer = tiny.fn(3, False)
    first = infer(variables, x)
    infer(variables, 10.0 * jnp.ones_like(x))
    np.testing.assert_array_equal(infer(variables, x), first)


def test_tdbn_scale_init():
    model = _tiny_resnet(norm="tdbn")
    p = _init(model, jnp.zeros((1, 8, 8, 3)), 1)["params"]
    v_th = 0.5
    # a = 1 for a block's first norm and the stem, 1/sqrt(2) before the residual addition and
    # on the shortcut (docs/method.md §6).
    np.testing.assert_allclose(p["stem"]["norm"]["bn"]["scale"], v_th)
    np.testing.assert_allclose(p["layer1_0"]["unit1"]["norm"]["bn"]["scale"], v_th)
    np.testing.assert_allclose(p["layer1_0"]["norm2"]["bn"]["scale"], v_th / math.sqrt(2))
    np.testing.assert_allclose(p["layer2_0"]["shortcut_norm"]["bn"]["scale"], v_th / math.sqrt(2))
    assert "shortcut_norm" not in p["layer1_0"]  # 16 -> 16 channels, stride 1: identity


def test_bfloat16_compute_float32_params_and_logits():
    model = _tiny_resnet(dtype=jnp.bfloat16, stage_sizes=(1,), stage_widths=(128,))
    x = jax.random.normal(_key(4), (2, 8, 8, 3))
    shapes = jax.eval_shape(functools.partial(model.init, num_steps=2), _key(), x)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(shapes))
    variables = _torch_like_values(shapes)
    logits, state = jax.jit(_apply_fn(model, 2, True, ["batch_stats"]))(variables, x)
    assert logits.dtype == jnp.float32 and logits.shape == (2, 2, 5)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(state))
    assert np.all(np.isfinite(logits))
    assert models.get_model("resnet19", num_classes=3, dtype="bfloat16").dtype == jnp.bfloat16


# --------------------------------------------------------------------------------------------
# Layers against NumPy.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tdbn", "tebn", "bn"])
def test_norm_matches_numpy(kind):
    t, b, c = 3, 4, 5
    x = np.asarray(jax.random.normal(_key(5), (t, b, 2, 2, c))) * 3.0 + 1.0
    norm = layers.Norm(kind=kind, alpha=0.7, v_threshold=0.5, max_steps=4)
    variables = norm.init(_key(), x, train=False)
    p = np.array([0.5, 1.5, 2.0, 9.0], np.float32)
    params = dict(variables["params"])
    if kind == "tebn":
        params["step_scale"] = jnp.asarray(p)
    variables = {"params": params, "batch_stats": variables["batch_stats"]}
    y, state = norm.apply(variables, x, train=True, mutable=["batch_stats"])
    mean = x.mean(axis=(0, 1, 2, 3))
    var = x.var(axis=(0, 1, 2, 3))
    gamma = 0.7 * 0.5 if kind == "tdbn" else 1.0
    ref = (x - mean) / np.sqrt(var + 1e-5) * gamma
    if kind == "tebn":
        ref = ref * p[:t, None, None, None, None]
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    # PyTorch momentum 0.1: new = 0.9 * old + 0.1 * batch (old mean 0, old var 1).
    np.testing.assert_allclose(state["batch_stats"]["bn"]["mean"], 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(state["batch_stats"]["bn"]["var"], 0.9 + 0.1 * var, rtol=1e-5)
    # Inference uses the running statistics.
    variables = {"params": params, "batch_stats": state["batch_stats"]}
    y_eval = norm.apply(variables, x[:2], train=False)
    rm, rv = 0.1 * mean, 0.9 + 0.1 * var
    ref = (x[:2] - rm) / np.sqrt(rv + 1e-5) * gamma
    if kind == "tebn":
        ref = ref * p[:2, None, None, None, None]
    np.testing.assert_allclose(y_eval, ref, rtol=1e-4, atol=1e-4)
    # Static input broadcast over T equals the repeated input.
    y_static = norm.apply(variables, x[0], train=False, num_steps=3)
    y_rep = norm.apply(variables, np.broadcast_to(x[0], (3,) + x[0].shape), train=False)
    np.testing.assert_allclose(y_static, y_rep, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("num_steps", [1, 2, 5])
def test_repeat_steps_values_and_gradient_against_numpy(num_steps):
    x = np.asarray(jax.random.normal(_key(11), (3, 2, 2, 4)), np.float32)
    g = np.asarray(jax.random.normal(_key(12), (num_steps,) + x.shape), np.float32)
    y, vjp = jax.vjp(lambda a: layers.repeat_steps(a, num_steps), jnp.asarray(x))
    assert y.shape == (num_steps,) + x.shape
    np.testing.assert_array_equal(y, np.broadcast_to(x, y.shape))
    (dx,) = vjp(jnp.asarray(g))
    np.testing.assert_allclose(dx, g.astype(np.float64).sum(0), rtol=1e-6, atol=1e-6)
    # Under jit, inside a loss: d/dx sum_t w_t * y_t = sum_t w_t.
    w = np.arange(1, num_steps + 1, dtype=np.float32)
    grad = jax.jit(jax.grad(
        lambda a: jnp.sum(layers.repeat_steps(a, num_steps) * w[:, None, None, None, None])
    ))(jnp.asarray(x))
    np.testing.assert_allclose(grad, np.full(x.shape, w.sum()), rtol=1e-6)


def test_repeat_steps_bfloat16_sums_in_float32():
    # 1 + 8 * 2^-9: each 2^-9 alone is lost when added to 1 in bfloat16 (8 mantissa bits),
    # all eight together (2^-6) are not.
    g = jnp.concatenate([jnp.ones((1, 2)), jnp.full((8, 2), 2.0**-9)]).astype(jnp.bfloat16)
    _, vjp = jax.vjp(lambda a: layers.repeat_steps(a, 9), jnp.zeros((2,), jnp.bfloat16))
    (dx,) = vjp(g)
    assert dx.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(dx, np.float32), [1 + 2.0**-6] * 2)


def test_repeat_steps_rejects_no_steps():
    with pytest.raises(ValueError, match="num_steps >= 1"):
        layers.repeat_steps(jnp.zeros((2, 3)), 0)


def test_lif_layer_and_spike_summary():
    x = np.asarray(jax.random.uniform(_key(6), (4, 3, 2, 5), minval=0.0, maxval=2.0))
    lif = layers.LIF(tau=2.0, v_threshold=0.5)
    spikes, state = lif.apply({}, x, mutable=["intermediates"])
    np.testing.assert_array_equal(spikes, spiking.lif(x, tau=2.0, v_threshold=0.5))
    # NumPy LIF (docs/method.md §1) for the expected statistics.
    u = np.zeros(x.shape[1:])
    ref = []
    for t in range(x.shape[0]):
        u = u + (x[t] - u) / 2.0
        s = (u > 0.5).astype(np.float32)
        u = u * (1 - s)
        ref.append(s)
    ref = np.stack(ref)
    np.testing.assert_array_equal(spikes, ref)
    summary = models.spike_summary({"block": state["intermediates"]})
    assert list(summary) == ["block"]
    assert summary["block"]["rate"] == pytest.approx(ref.mean())
    assert summary["block"]["spikes_per_image"] == pytest.approx(ref.sum() / 3)
    assert summary["block"]["neurons"] == 10
    # Both LIF backends give the NumPy spikes; an unknown one is refused.
    for backend in ("scan", "custom_vjp"):
        out = layers.LIF(backend=backend).apply({}, x)
        np.testing.assert_array_equal(out, ref)
    with pytest.raises(ValueError, match="Unknown LIF backend 'fast'"):
        layers.LIF(backend="fast").apply({}, x)


def test_model_spike_summary_lists_every_lif_layer(tiny):
    fn = jax.jit(_apply_fn(tiny.model, 2, False, ["intermediates"]))
    _, state = fn(tiny.variables, tiny.x)
    summary = models.spike_summary(state["intermediates"])
    # stem + 2 blocks x 2 LIF + the hidden FC's LIF.
    # Sorted by path (jit returns dicts with sorted keys).
    assert list(summary) == [
        "fc1_lif",
        "layer1_0/lif2",
        "layer1_0/unit1/lif",
        "layer2_0/lif2",
        "layer2_0/unit1/lif",
        "stem/lif",
    ]
    assert summary["stem/lif"]["neurons"] == 8 * 8 * 16
    for stats in summary.values():
        assert 0.0 < stats["rate"] < 1.0
        expected = stats["rate"] * stats["neurons"] * 2  # T = 2 steps
        assert stats["spikes_per_image"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("how,fn", [("add", np.add), ("iand", None), ("and", np.logical_and)])
def test_sew_connect(how, fn):
    a = np.array([0.0, 0.0, 1.0, 1.0])
    s = np.array([0.0, 1.0, 0.0, 1.0])
    out = sew_resnet.connect(jnp.asarray(a), jnp.asarray(s), how)
    expected = np.logical_and(np.logical_not(a), s) if how == "iand" else fn(a, s)
    np.testing.assert_array_equal(out, expected.astype(np.float32))


def test_pytorch_default_init_bounds():
    conv = layers.Conv(512, kernel_size=3)
    w = conv.init(_key(), jnp.zeros((1, 3, 3, 512)))["params"]["conv"]["kernel"]
    bound = 1.0 / math.sqrt(3 * 3 * 512)  # kaiming_uniform(a=sqrt(5)): 1/sqrt(fan_in)
    assert w.shape == (3, 3, 512, 512)
    assert np.abs(w).max() <= bound
    assert np.std(w) == pytest.approx(bound / math.sqrt(3), rel=0.02)  # std of U(-b, b)
    fc = layers.Linear(10).init(_key(), jnp.zeros((1, 512)))["params"]["dense"]
    assert np.abs(fc["kernel"]).max() <= 1.0 / math.sqrt(512)
    assert np.abs(fc["bias"]).max() <= 1.0 / math.sqrt(512) and np.all(fc["bias"] != 0)


# --------------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------------


def test_registry():
    assert models.model_names() == sorted(ALL)
    assert set(models.MODELS) == set(ALL)
    assert isinstance(
        models.get_model("sew_resnet19", num_classes=3, connect="iand"), models.SEWResNet
    )


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("resnet20", {}, r"Unknown model 'resnet20'.*sew_resnet50"),
        ("resnet19", {"widht": 0.5}, r"Unknown model option.*'widht'.*'width'"),
        ("resnet19", {"norm": "ln"}, r"Unknown norm 'ln'.*tebn"),
        ("resnet19", {"norm": "tebn"}, r"tebn.*num_steps"),
        ("resnet19", {"num_steps": 0}, r"num_steps"),
        ("resnet19", {"width": -1}, r"width"),
        ("resnet19", {"surrogate": "relu"}, r"Unknown surrogate.*qgate"),
        ("resnet19", {"dtype": "int8"}, r"dtype.*bfloat16"),
        ("resnet19", {"connect": "iand"}, r"SEW models only"),
        ("sew_resnet18", {"connect": "or"}, r"connect.*'add', 'iand', 'and'"),
    ],
)
def test_get_model_errors(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.get_model(name, num_classes=10, **kwargs)


@pytest.mark.parametrize(
    "shape,num_steps,match",
    [
        ((8, 8, 3), 2, r"rank 3"),
        ((1, 2, 2, 8, 8, 3), 2, r"rank 6"),
        ((3, 2, 8, 8, 3), 2, r"T=3.*num_steps=2"),
        ((2, 8, 8, 3), 0, r"num_steps must be >= 1"),
        ((2, 8, 8, 3), 2.5, r"num_steps must be a Python int"),
    ],
)
def test_bad_input(shape, num_steps, match):
    model = _tiny_resnet()
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(functools.partial(model.init, num_steps=num_steps), _key(), jnp.zeros(shape))
