"""The fast paths of the performance work equal the straightforward ones.

- ``spiking.lif(backend='custom_vjp')`` (one custom VJP over the whole scan) vs
  ``backend='scan'`` (the per-step scan differentiated by JAX), and vs a NumPy BPTT written here.
- ``models.kernels.conv`` convolution with the GEMM weight gradient vs
  ``lax.conv_general_dilated`` (float32 and float64).
- ``models.kernels.winograd.conv3x3`` (Winograd F(2x2, 3x3)) vs lax and vs NumPy, and the
  model option ``conv`` that selects it.
- ``models.kernels.conv_norm_lif`` (the chunked unit) vs the whole-batch unit.

Small shapes, fixed seeds, no timings.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tks_jax import spiking
from tks_jax.models import base, kernels
from tks_jax.models.kernels import conv_norm_lif, winograd, winograd_f4
from tks_jax.training.build import init_variables

SURROGATES = ["qgate", "sigmoid", "atan", "rectangle", "triangle"]


def _currents(shape, seed=0, dtype=np.float32):
    # Mean 0.6, spread 0.8 around the threshold 0.5: spikes, resets and surrogate slopes.
    return jnp.asarray(np.random.default_rng(seed).normal(0.6, 0.8, size=shape).astype(dtype))


def _scan_lif(x, surrogate, detach_reset):
    """``(spikes, membranes)`` of the 'scan' backend: autodiff of the per-step scan."""
    return spiking.lif(
        x, surrogate=surrogate, detach_reset=detach_reset, return_membrane=True, backend="scan"
    )


def _loss(lif_fn, weights, with_membrane):
    def f(x):
        out = lif_fn(x)
        if with_membrane:
            spikes, membranes = out
            return jnp.sum(spikes * weights) + jnp.sum(jnp.sin(membranes) * weights)
        return jnp.sum(out[0] * weights)

    return f


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("return_membrane", [True, False])
def test_lif_fast_path_matches_autodiff(surrogate, detach_reset, return_membrane):
    x = _currents((6, 3, 4))
    w = jnp.asarray(np.random.default_rng(1).normal(size=x.shape).astype(np.float32))
    sur = spiking.get_surrogate(surrogate)

    def fast(x):
        out = spiking.lif(
            x, surrogate=sur, detach_reset=detach_reset, return_membrane=return_membrane
        )
        return out if return_membrane else (out,)

    def slow(x):
        s, m = _scan_lif(x, sur, detach_reset)
        return (s, m) if return_membrane else (s,)

    for a, b in zip(jax.jit(fast)(x), jax.jit(slow)(x), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    g_fast = jax.jit(jax.grad(_loss(fast, w, return_membrane)))(x)
    g_slow = jax.jit(jax.grad(_loss(slow, w, return_membrane)))(x)
    assert float(jnp.max(jnp.abs(g_slow))) > 0.1  # the gradient is not trivially zero
    np.testing.assert_allclose(np.asarray(g_fast), np.asarray(g_slow), rtol=1e-5, atol=1e-6)


def test_lif_backend_option():
    x = _currents((4, 3), seed=8)

    def top_level(**kw):  # the outermost primitives: one custom VJP, or the scan itself
        jaxpr = jax.make_jaxpr(lambda c: spiking.lif(c, **kw))(x).jaxpr
        return {e.primitive.name for e in jaxpr.eqns}

    assert "scan" not in top_level() and "scan" not in top_level(backend="custom_vjp")
    assert "scan" in top_level(backend="scan")
    np.testing.assert_array_equal(spiking.lif(x, backend="scan"), spiking.lif(x))
    with pytest.raises(ValueError, match="Unknown LIF backend 'fused'"):
        spiking.lif(x, backend="fused")
    with pytest.raises(ValueError, match="'custom_vjp' needs Python-number tau"):
        jax.grad(lambda tau: jnp.sum(spiking.lif(x, tau=tau, backend="custom_vjp")))(2.0)


def _numpy_lif_bptt(x, g_spikes, tau=2.0, vth=0.5, alpha=2.0):
    """Forward and BPTT of the LIF with detached reset and QGate surrogate, in NumPy."""
    steps = x.shape[0]
    u = np.zeros(x.shape[1:])
    hs, ss = [], []
    for t in range(steps):
        h = u + (x[t] - u) / tau
        s = (h > vth).astype(np.float64)
        hs.append(h)
        ss.append(s)
        u = h * (1 - s)
    g_x = np.zeros_like(x, dtype=np.float64)
    g_u = np.zeros(x.shape[1:])  # dL/du_t, u after reset
    for t in reversed(range(steps)):
        slope = np.maximum(alpha - alpha**2 * np.abs(hs[t] - vth), 0.0)
        g_h = g_spikes[t] * slope + g_u * (1 - ss[t])
        g_x[t] = g_h / tau
        g_u = g_h * (1 - 1 / tau)
    return np.stack(ss), g_x


@pytest.mark.parametrize("steps", [8, spiking.UNROLLED_FORWARD_MAX_STEPS + 4])
def test_lif_fast_path_matches_numpy_bptt(steps):
    # Up to UNROLLED_FORWARD_MAX_STEPS the forward scan is unrolled fully, above it loops.
    x = _currents((steps, 5), seed=3)
    g = np.random.default_rng(4).normal(size=x.shape)
    spikes_np, gx_np = _numpy_lif_bptt(np.asarray(x, np.float64), g)
    spikes, vjp = jax.vjp(lambda c: spiking.lif(c), x)
    (gx,) = vjp(jnp.asarray(g, jnp.float32))
    np.testing.assert_array_equal(np.asarray(spikes), spikes_np)
    np.testing.assert_allclose(np.asarray(gx), gx_np, rtol=1e-5, atol=1e-6)


def test_lif_forward_unrolled_and_looped_agree_bitwise(monkeypatch):
    x = _currents((6, 3, 4), seed=12)
    u0 = jnp.asarray(np.random.default_rng(13).uniform(0, 0.5, size=(3, 4)), jnp.float32)

    def forward():  # a new function each time: nothing cached from the other path
        return lambda x, u0: spiking.lif_forward(x, 2.0, 0.5, u0=u0)

    def scan_unroll():
        eqns = jax.make_jaxpr(forward())(x, u0).jaxpr.eqns
        (scan,) = [e for e in eqns if e.primitive.name == "scan"]
        return scan.params["unroll"]

    unrolled = jax.jit(forward())(x, u0)
    assert scan_unroll() in (6, True)  # T <= UNROLLED_FORWARD_MAX_STEPS: all steps, no loop
    monkeypatch.setattr(spiking, "UNROLLED_FORWARD_MAX_STEPS", 0)
    looped = jax.jit(forward())(x, u0)
    assert scan_unroll() == 1
    assert float(jnp.sum(unrolled[0])) > 0  # some spikes
    for a, b in zip(unrolled, looped, strict=True):  # spikes, charged membranes, last membrane
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("unroll", [1, 3, True])
def test_lif_fast_path_unroll_and_vmap(unroll):
    x = _currents((5, 2, 3, 4), seed=5)
    sur = spiking.get_surrogate("qgate")

    def fast(x):
        return jnp.sum(spiking.lif(x, unroll=unroll) ** 2 * jnp.arange(x.size).reshape(x.shape))

    def slow(x):
        s, _ = _scan_lif(x, sur, True)
        return jnp.sum(s**2 * jnp.arange(x.size).reshape(x.shape))

    np.testing.assert_allclose(jax.grad(fast)(x), jax.grad(slow)(x), rtol=1e-5, atol=1e-6)
    # vmap over a leading axis (time stays axis 0 of each element)
    batched = jax.vmap(jax.grad(fast))(jnp.stack([x, 2 * x]))
    np.testing.assert_allclose(batched[1], jax.grad(slow)(2 * x), rtol=1e-5, atol=1e-6)


def test_lif_fast_path_bfloat16_forward_matches():
    # bf16 currents: spikes in bf16, the membrane integrated in float32 (``spiking.lif``), so
    # the reference is the autodiff scan on the same currents in float32.
    x = _currents((4, 16), seed=6).astype(jnp.bfloat16)
    sur = spiking.get_surrogate("qgate")
    fast = spiking.lif(x, return_membrane=True)
    slow = _scan_lif(x.astype(jnp.float32), sur, True)
    assert fast[0].dtype == jnp.bfloat16 and fast[1].dtype == jnp.float32
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b))
    g_fast = jax.grad(lambda c: jnp.sum(spiking.lif(c).astype(jnp.float32)))(x)
    g_slow = jax.grad(lambda c: jnp.sum(_scan_lif(c, sur, True)[0]))(x.astype(jnp.float32))
    assert g_fast.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(g_fast, np.float32), np.asarray(g_slow), rtol=1e-2, atol=1e-3
    )


def test_lif_traced_tau_takes_the_autodiff_path():
    # tau as a traced value (e.g. learned): gradients w.r.t. tau still exist.
    x = _currents((4, 6), seed=7)
    g = jax.grad(lambda tau: jnp.sum(spiking.lif(x, tau=tau, return_membrane=True)[1]))(2.0)
    assert np.isfinite(float(g)) and float(g) != 0.0
    g_scan = jax.grad(
        lambda tau: jnp.sum(spiking.lif(x, tau=tau, return_membrane=True, backend="scan")[1])
    )(2.0)
    assert float(g_scan) == float(g)


# --------------------------------------------------------------------------------------------
# Convolution with the GEMM weight gradient (tks_jax.models.layers).
# --------------------------------------------------------------------------------------------


def _lax_conv(x, w, strides, padding):
    return jax.lax.conv_general_dilated(
        x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@pytest.mark.parametrize(
    "kernel,stride,hw,chunk_bytes",
    [(3, 1, 6, None), (3, 2, 7, None), (1, 2, 6, None), (3, 1, 5, 1), (3, 1, 6, 4000)],
)
def test_conv_gemm_weight_grad_matches_lax(monkeypatch, kernel, stride, hw, chunk_bytes):

    # chunk_bytes: force the chunked scan over the batch (1 or a few samples)
    budget = {} if chunk_bytes is None else {"wgrad_chunk_bytes": chunk_bytes}
    rng = np.random.default_rng(10)
    x = jnp.asarray(rng.normal(size=(4, hw, hw, 3)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 5)).astype(np.float32))
    pad = kernel // 2
    padding = ((pad, pad), (pad, pad))
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))

    def fast(x, w):
        return kernels.conv_general_dilated(
            x, w, (stride, stride), padding, None, None, dn, **budget
        )

    ref_out = _lax_conv(x, w, (stride, stride), padding)
    out = jax.jit(fast)(x, w)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), rtol=1e-5, atol=1e-5)
    cot = jnp.asarray(rng.normal(size=ref_out.shape).astype(np.float32))
    g_ref = jax.vjp(lambda x, w: _lax_conv(x, w, (stride, stride), padding), x, w)[1](cot)
    g_fast = jax.jit(lambda x, w, c: jax.vjp(fast, x, w)[1](c))(x, w, cot)
    for a, b in zip(g_fast, g_ref, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


def test_conv_weight_grad_against_numpy():
    # dW[i, j, c, o] = sum_{n, h, w} xpad[n, h + i, w + j, c] * g[n, h, w, o], written out.

    rng = np.random.default_rng(11)
    x = rng.normal(size=(2, 4, 4, 2))
    g = rng.normal(size=(2, 4, 4, 3))
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    dw_np = np.zeros((3, 3, 2, 3))
    for i in range(3):
        for j in range(3):
            dw_np[i, j] = np.einsum("nhwc,nhwo->co", xp[:, i : i + 4, j : j + 4], g)
    dn = jax.lax.conv_dimension_numbers((2, 4, 4, 2), (3, 3, 2, 3), ("NHWC", "HWIO", "NHWC"))
    w = jnp.zeros((3, 3, 2, 3), jnp.float32)
    _, vjp = jax.vjp(
        lambda w: kernels.conv_general_dilated(
            jnp.asarray(x, jnp.float32), w, (1, 1), ((1, 1), (1, 1)), None, None, dn
        ),
        w,
    )
    (dw,) = vjp(jnp.asarray(g, jnp.float32))
    np.testing.assert_allclose(np.asarray(dw), dw_np, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "algorithm,kernel,stride", [("direct", 3, 1), ("direct", 3, 2), ("winograd", 3, 1)]
)
def test_conv_weight_grad_float64_matches_lax(algorithm, kernel, stride):
    # With float64 operands the weight gradient (im2col GEMM or Winograd) accumulates in
    # float64: it matches lax's to float64 rounding, far below float32's ~1e-8 relative.
    with jax.enable_x64(True):
        rng = np.random.default_rng(17)
        x = jnp.asarray(rng.normal(size=(3, 7, 6, 5)), jnp.float64)
        w = jnp.asarray(rng.normal(size=(kernel, kernel, 5, 4)), jnp.float64)
        pad = ((1, 1), (1, 1))
        dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
        conv = kernels.conv_function(algorithm)
        out, vjp = jax.vjp(lambda x, w: conv(x, w, (stride, stride), pad, None, None, dn), x, w)
        ref, ref_vjp = jax.vjp(lambda x, w: _lax_conv(x, w, (stride, stride), pad), x, w)
        cot = jnp.asarray(rng.normal(size=ref.shape), jnp.float64)
        (gx, gw), (gx_ref, gw_ref) = vjp(cot), ref_vjp(cot)
        assert gw.dtype == jnp.float64 and out.dtype == jnp.float64
        for a, r in ((out, ref), (gx, gx_ref), (gw, gw_ref)):
            err = float(jnp.max(jnp.abs(a - r)) / jnp.max(jnp.abs(r)))
            assert err < 1e-12, err


@pytest.mark.slow
def test_conv_module_gradients_match_plain_flax_conv():
    # The zoo's Conv layer (GEMM weight gradient inside) against flax.linen.Conv with XLA's
    # own convolution, on the same parameters.
    import flax.linen as nn

    from tks_jax.models import layers

    x = jnp.asarray(np.random.default_rng(12).normal(size=(2, 3, 6, 6, 4)).astype(np.float32))
    mod = layers.Conv(features=8, kernel_size=3, strides=2)
    params = mod.init(jax.random.key(0), x)["params"]
    plain = nn.Conv(8, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False)

    def loss_fast(p):
        return jnp.sum(jnp.sin(mod.apply({"params": p}, x)))

    def loss_plain(p):
        y = plain.apply({"params": p["conv"]}, x.reshape((6, 6, 6, 4)))
        return jnp.sum(jnp.sin(y))

    np.testing.assert_allclose(loss_fast(params), loss_plain(params), rtol=1e-5)
    g_fast = jax.grad(loss_fast)(params)["conv"]["kernel"]
    g_plain = jax.grad(loss_plain)(params)["conv"]["kernel"]
    np.testing.assert_allclose(np.asarray(g_fast), np.asarray(g_plain), rtol=1e-4, atol=1e-5)


def _model_loss(name, x, y, steps, **options):
    """A zoo model's initial variables and its training loss at T = ``steps``: ``params ->
    (mean CE, (logits, updated batch_stats))``, 4 classes (``options``: ``get_model``'s)."""
    from tks_jax import losses, models

    model = models.get_model(name, num_classes=4, **options)
    variables = init_variables(model, jax.random.key(0), x, num_steps=steps, train=False)

    def loss(p):
        logits, upd = model.apply(
            {"params": p, "batch_stats": variables["batch_stats"]},
            x, num_steps=steps, train=True, mutable=["batch_stats"],
        )
        return losses.mean_ce(logits, y), (logits, upd["batch_stats"])

    return variables, loss


def _vgg_loss_and_grads(x, y, **options):
    variables, loss = _model_loss("vgg_snn", x, y, x.shape[0], width=0.125, **options)
    (value, (_, stats)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        variables["params"]
    )
    return variables, value, stats, grads, loss


@pytest.mark.slow
@pytest.mark.parametrize(
    "norm,chunk_bytes,chunked_units,conv",
    [
        # One step per chunk in every unit (TEBN: per-step scales too). The direct convolution
        # compiles in half the time; the chunked units with Winograd are the case below and
        # test_chunked_remat_under_data_parallel_sharding.
        ("tebn", 1, 8, "direct"),
        # conv1-4 one step per chunk, conv5-8 fit in one chunk (both steps): nn.remat
        ("tdbn", 2 * 16 * 16 * 8 * 4, 4, "auto"),
    ],
)
def test_model_remat_chunked_units_match_whole_batch(monkeypatch, norm, chunk_bytes, chunked_units,
                                                     conv):
    # remat=True trains each conv-norm-LIF unit a few steps at a time (kernels.conv_norm_lif) when
    # its output spans several chunks, else rematerialises it whole (nn.remat): same parameter
    # tree and initial values, same loss, running statistics and gradients as remat=False.
    if chunk_bytes is not None:
        monkeypatch.setattr(base, "UNIT_CHUNK_BYTES", chunk_bytes)
    calls = []
    original = conv_norm_lif.conv_norm_lif
    monkeypatch.setattr(
        conv_norm_lif, "conv_norm_lif", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    rng = np.random.default_rng(13)
    x = jnp.asarray(rng.poisson(0.5, (2, 2, 16, 16, 2)).astype(np.float32))
    y = jnp.array([1, 2])
    extra = {"num_steps": 2} if norm == "tebn" else {}
    extra["conv"] = conv
    v0, l0, s0, g0, _ = _vgg_loss_and_grads(x, y, norm=norm, remat=False, **extra)
    assert not calls
    v1, l1, s1, g1, loss1 = _vgg_loss_and_grads(x, y, norm=norm, remat=True, **extra)
    assert len(calls) == chunked_units
    assert jax.tree.structure(v0) == jax.tree.structure(v1)
    for a, b in zip(jax.tree.leaves(v0), jax.tree.leaves(v1), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(float(l1), float(l0), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s0), jax.tree.leaves(s1), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
    # Units not chunked are rematerialised whole (a checkpoint in the jaxpr).
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: loss1(p)[0]))(v1["params"]))
    assert (("checkpoint" in jaxpr) or ("remat" in jaxpr)) == (chunked_units < 8)


@pytest.mark.slow
def test_chunked_unit_against_whole_batch_reference():
    # The pure function, several chunk sizes, TEBN scales, with and without detached reset,
    # against BatchNorm statistics + spiking.lif on the whole batch written out here.

    sur = spiking.get_surrogate("qgate", 2.0)
    rng = np.random.default_rng(14)
    t, b, hw, c, o = 6, 2, 6, 3, 4
    x = jnp.asarray(rng.normal(size=(t, b, hw, hw, c)).astype(np.float32))
    k = jnp.asarray(rng.normal(size=(3, 3, c, o)).astype(np.float32)) * 0.5
    scale = jnp.asarray(rng.uniform(0.5, 1.5, size=o).astype(np.float32))
    bias = jnp.asarray(rng.normal(size=o).astype(np.float32)) * 0.3
    p = jnp.asarray(rng.uniform(0.5, 1.5, size=t).astype(np.float32))
    wts = jnp.asarray(rng.normal(size=(t, b, hw, hw, o)).astype(np.float32))

    def reference(x, k, scale, bias, p, detach):
        z = _lax_conv(x.reshape((t * b, hw, hw, c)), k, (1, 1), ((1, 1), (1, 1)))
        mean = z.mean((0, 1, 2))
        var = jnp.maximum(0.0, (z * z).mean((0, 1, 2)) - mean**2)
        cur = ((z - mean) * (jax.lax.rsqrt(var + 1e-5) * scale) + bias).reshape(t, b, hw, hw, o)
        if p is not None:
            cur = cur * p.reshape(-1, 1, 1, 1, 1)
        s = spiking.lif(cur, tau=2.0, v_threshold=0.5, surrogate=sur, detach_reset=detach)
        return s, mean, var

    # (TEBN scales, detach_reset, steps per chunk): each option and chunk size at least once
    for step_scale, detach, tc in [(None, True, 1), (p, True, 2), (None, False, 3), (p, False, 6)]:
        def fast(x, k, scale, bias, step_scale, detach=detach, tc=tc):
            return conv_norm_lif.conv_norm_lif(
                x, k, scale, bias, step_scale, strides=1, padding=1,
                algorithm="direct", epsilon=1e-5, tau=2.0, v_threshold=0.5,
                surrogate=sur, detach_reset=detach, steps_per_chunk=tc,
            )

        def ref(x, k, scale, bias, step_scale, detach=detach):
            return reference(x, k, scale, bias, step_scale, detach)

        args = (x, k, scale, bias, step_scale)
        out, out_ref = fast(*args), ref(*args)
        np.testing.assert_array_equal(np.asarray(out[0]), np.asarray(out_ref[0]))
        for a, r in zip(out[1:], out_ref[1:], strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(r), rtol=1e-5, atol=1e-6)
        argnums = (0, 1, 2, 3) if step_scale is None else (0, 1, 2, 3, 4)
        grads = [
            jax.grad(lambda *a, f=f: jnp.sum(f(*a)[0] * wts), argnums=argnums)(*args)
            for f in (fast, ref)
        ]
        for a, r in zip(*grads, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(r), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="steps_per_chunk=4 does not divide T=6"):
        conv_norm_lif.conv_norm_lif(
            x, k, scale, bias, None, strides=1, padding=1, algorithm="direct", epsilon=1e-5,
            tau=2.0, v_threshold=0.5, surrogate=sur, detach_reset=True, steps_per_chunk=4,
        )


# --- Winograd F(2x2, 3x3) -------------------------------------------------------------------


def test_winograd_matrices_compute_a_1d_correlation():
    # F(2, 3) in 1-D: A^T [(G g) * (B^T d)] = [sum_i d[i] g[i], sum_i d[i+1] g[i]] for any
    # 4-sample d and 3-tap g (Lavin & Gray, eq. 5-7): checks the three constant matrices.

    rng = np.random.default_rng(20)
    for _ in range(5):
        d, g = rng.normal(size=4), rng.normal(size=3)
        out = winograd.AT @ ((winograd.G @ g) * (winograd.BT @ d))
        np.testing.assert_allclose(out, [d[:3] @ g, d[1:] @ g], rtol=1e-6, atol=1e-6)


def test_winograd_additions_equal_the_matrix_transforms():
    # The tile transforms written as additions equal B^T d B, G w G^T and A g A^T.
    wg = winograd
    rng = np.random.default_rng(21)
    x = rng.normal(size=(1, 2, 2, 1)).astype(np.float32)  # one tile after padding: 4x4
    v, _ = wg.input_tiles(jnp.asarray(x))
    d = np.pad(x[0, :, :, 0], 1)
    np.testing.assert_allclose(
        np.stack([t[0, 0] for t in v]).reshape(4, 4), wg.BT @ d @ wg.BT.T, atol=1e-6
    )
    w = rng.normal(size=(3, 3, 1, 1)).astype(np.float32)
    u = wg.weight_tiles(jnp.asarray(w))
    np.testing.assert_allclose(
        np.stack([t[0, 0] for t in u]).reshape(4, 4), wg.G @ w[:, :, 0, 0] @ wg.G.T, atol=1e-6
    )
    gy = rng.normal(size=(1, 2, 2, 1)).astype(np.float32)
    gt = wg.grad_tiles(jnp.asarray(gy))
    np.testing.assert_allclose(
        np.stack([t[0, 0] for t in gt]).reshape(4, 4),
        wg.AT.T @ gy[0, :, :, 0] @ wg.AT,
        atol=1e-6,
    )


def test_winograd_conv_against_numpy():
    # y[n, h, w, o] = sum_{i, j, c} xpad[n, h + i, w + j, c] * w[i, j, c, o], written out.

    rng = np.random.default_rng(22)
    x = rng.normal(size=(2, 5, 4, 3))
    w = rng.normal(size=(3, 3, 3, 2))
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y_np = sum(
        np.einsum("nhwc,co->nhwo", xp[:, i : i + 5, j : j + 4], w[i, j])
        for i in range(3)
        for j in range(3)
    )
    y = winograd.conv3x3(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))
    np.testing.assert_allclose(np.asarray(y), y_np, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "n,h,w,chunk_bytes",
    [(3, 6, 6, None), (2, 5, 7, None), (1, 1, 1, None), (4, 6, 4, 1), (6, 4, 4, 4000)],
)
def test_winograd_conv_and_gradients_match_lax(monkeypatch, n, h, w, chunk_bytes):
    # Even and odd sizes (odd ones are padded to whole tiles and cropped), a 1x1 image, and
    # the chunked paths over the batch (one sample per chunk / a few).
    budget = {} if chunk_bytes is None else {"chunk_bytes": chunk_bytes}
    rng = np.random.default_rng(23)
    x = jnp.asarray(rng.normal(size=(n, h, w, 5)).astype(np.float32))
    k = jnp.asarray(rng.normal(size=(3, 3, 5, 4)).astype(np.float32))
    pad = ((1, 1), (1, 1))
    ref, ref_vjp = jax.vjp(lambda x, k: _lax_conv(x, k, (1, 1), pad), x, k)
    out, vjp = jax.vjp(jax.jit(lambda x, k: winograd.conv3x3(x, k, **budget)), x, k)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)
    cot = jnp.asarray(rng.normal(size=ref.shape).astype(np.float32))
    for a, b in zip(vjp(cot), ref_vjp(cot), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-4)


def test_winograd_bfloat16_transforms_round_once():
    # bf16 tiles are the float32 transforms rounded once, not a chain of bf16 additions.
    rng = np.random.default_rng(24)
    x = jnp.asarray(rng.normal(size=(2, 6, 6, 4)), jnp.bfloat16)
    w = jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.bfloat16)
    g = jnp.asarray(rng.normal(size=(2, 6, 6, 5)), jnp.bfloat16)
    for fn, arg in ((lambda a: winograd.input_tiles(a)[0], x), (winograd.weight_tiles, w),
                    (winograd.grad_tiles, g)):
        low, high = fn(arg), fn(arg.astype(jnp.float32))
        for a, b in zip(low, high, strict=True):
            assert a.dtype == jnp.bfloat16
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b.astype(jnp.bfloat16)))


def test_winograd_bfloat16_error_is_a_few_roundings():
    # Against the exact (float64) convolution of the same bf16 operands: the direct bf16
    # convolution rounds only its output (~u/2.4 relative, u = 2^-8); Winograd also rounds
    # the transformed tiles. Bounded by 1.4 u: a few roundings, not an accumulation over
    # channels (the GEMMs accumulate in float32).
    u = 2.0**-8
    rng = np.random.default_rng(25)
    for x in (rng.normal(size=(4, 8, 8, 32)), (rng.random((4, 8, 8, 32)) < 0.2) * 1.0):
        xb = jnp.asarray(x, jnp.bfloat16)
        wb = jnp.asarray(rng.normal(size=(3, 3, 32, 32)) / np.sqrt(288), jnp.bfloat16)
        cot = jnp.asarray(rng.normal(size=(4, 8, 8, 32)), jnp.bfloat16)
        with jax.enable_x64(True):
            ref, ref_vjp = jax.vjp(lambda a, b: _lax_conv(a, b, (1, 1), ((1, 1), (1, 1))),
                                   xb.astype(jnp.float64), wb.astype(jnp.float64))
            refs = (ref, *ref_vjp(cot.astype(jnp.float64)))
        out, vjp = jax.vjp(winograd.conv3x3, xb, wb)
        for a, r in zip((out, *vjp(cot)), refs, strict=True):
            assert a.dtype == jnp.bfloat16
            a, r = np.asarray(a, np.float64), np.asarray(r)
            err = np.linalg.norm(a - r) / np.linalg.norm(r)
            assert 0.1 * u < err < 1.4 * u, err


def test_winograd_f4_matrices_compute_a_1d_correlation():
    rng = np.random.default_rng(30)
    d, k = rng.normal(size=6), rng.normal(size=3)
    out = winograd_f4.AT @ ((winograd_f4.G @ k) * (winograd_f4.BT @ d))
    np.testing.assert_allclose(out, [d[i : i + 3] @ k for i in range(4)], rtol=1e-12)
    # ``combine`` is the matrix product written as additions.
    parts = [rng.normal(size=(2, 3)) for _ in range(6)]
    got = winograd_f4.combine(winograd_f4.BT, parts)
    np.testing.assert_allclose(np.stack(got), np.einsum("ij,jab->iab", winograd_f4.BT, parts))


@pytest.mark.parametrize(
    "n,h,w,min_side,chunk_bytes",
    [(2, 16, 16, 16, None), (3, 17, 19, 16, None), (2, 5, 7, 1, None), (4, 16, 18, 16, 1)],
)
def test_winograd_f4_weight_grad_matches_lax(n, h, w, min_side, chunk_bytes):
    # Whole and partial 4x4 tiles, a small image forced onto F(4x4), one sample per chunk;
    # float64, so any error above rounding is a wrong index or coefficient.
    budget = {} if chunk_bytes is None else {"chunk_bytes": chunk_bytes}
    rule = {"f4_weight_grad_min_side": min_side, "f4_weight_grad_min_channels": 1}
    assert winograd.uses_f4_weight_grad((n, h, w, 3), (3, 3, 3, 4), jnp.float64, min_side, 1)
    with jax.enable_x64(True):
        rng = np.random.default_rng(31)
        x = jnp.asarray(rng.normal(size=(n, h, w, 3)))
        k = jnp.asarray(rng.normal(size=(3, 3, 3, 4)))
        ref, ref_vjp = jax.vjp(lambda x, k: _lax_conv(x, k, (1, 1), ((1, 1), (1, 1))), x, k)
        out, vjp = jax.vjp(lambda x, k: winograd.conv3x3(x, k, **rule, **budget), x, k)
        cot = jnp.asarray(rng.normal(size=ref.shape))
        for a, b in zip((out, *vjp(cot)), (ref, *ref_vjp(cot)), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-10)


def test_winograd_f4_weight_grad_float32_error():
    # F(4x4)'s coefficients (up to 8 and 1/24) round more than F(2x2)'s: a few 1e-6 relative
    # (norm) in float32 against the exact gradient, still far below what a training step
    # notices.
    rng = np.random.default_rng(32)
    x = (rng.random((4, 16, 16, 32)) < 0.3) * 1.0  # spikes, as in the models
    k = rng.normal(size=(3, 3, 32, 32)) / np.sqrt(288)
    cot = rng.normal(size=(4, 16, 16, 32))
    with jax.enable_x64(True):
        _, ref_vjp = jax.vjp(lambda a, b: _lax_conv(a, b, (1, 1), ((1, 1), (1, 1))),
                             jnp.asarray(x), jnp.asarray(k))
        want = np.asarray(ref_vjp(jnp.asarray(cot))[1])
    errors = {}
    for min_side in (16, 10**9):  # F(4x4), F(2x2)
        _, vjp = jax.vjp(
            lambda a, b, s=min_side: winograd.conv3x3(
                a, b, f4_weight_grad_min_side=s, f4_weight_grad_min_channels=1
            ),
            jnp.asarray(x, jnp.float32), jnp.asarray(k, jnp.float32),
        )
        got = np.asarray(vjp(jnp.asarray(cot, jnp.float32))[1], np.float64)
        errors[min_side] = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert errors[16] < 5e-6 and errors[10**9] < 1e-6, errors
    assert errors[16] != errors[10**9], errors  # the two paths really differ


@pytest.mark.parametrize(
    "shape,cout,dtype,f4",
    [((2, 16, 16, 128), 128, jnp.float32, True), ((2, 16, 15, 128), 128, jnp.float32, False),
     ((2, 16, 16, 128), 64, jnp.float32, False), ((2, 16, 16, 64), 128, jnp.float32, False),
     ((2, 32, 32, 128), 128, jnp.bfloat16, False), ((2, 16, 16, 128), 128, jnp.float64, True)],
)
def test_winograd_weight_grad_tile_choice(shape, cout, dtype, f4):
    # The default rule (>= 16 pixels a side, >= 128 channels in and out, not bfloat16). 36
    # weight-gradient GEMMs for F(4x4), 16 for F(2x2) (plus 16 each for the forward and the
    # input gradient).
    w_shape = (3, 3, shape[-1], cout)
    assert winograd.uses_f4_weight_grad(shape, w_shape, dtype) == f4
    with jax.enable_x64(dtype == jnp.float64):
        x = jnp.zeros(shape, dtype)
        k = jnp.zeros(w_shape, dtype)
        jaxpr = jax.make_jaxpr(jax.grad(lambda a, b: winograd.conv3x3(a, b).sum(), (0, 1)))(x, k)
    assert str(jaxpr).count("dot_general") == 32 + (36 if f4 else 16)


@pytest.mark.parametrize("min_side,chunk_bytes,loops", [(16, 1, 1), (10**9, 1, 1),
                                                       (16, None, 0), (10**9, None, 0)])
def test_winograd_backward_computes_both_gradients_per_chunk(min_side, chunk_bytes, loops):
    # Both gradients come from one loop over the batch's chunks (or straight-line code when
    # one chunk holds the batch): a separate weight-gradient loop was scheduled at the end of
    # the backward pass, keeping every layer's output gradient alive until then. 16 input-
    # gradient GEMMs per chunk plus 36 (F(4x4)) or 16 (F(2x2)) weight-gradient ones.
    budget = {} if chunk_bytes is None else {"chunk_bytes": chunk_bytes}
    x, k = jnp.zeros((4, 16, 16, 8)), jnp.zeros((3, 3, 8, 8))
    f = functools.partial(winograd.conv3x3, f4_weight_grad_min_side=min_side,
                          f4_weight_grad_min_channels=1, **budget)
    out, vjp = jax.vjp(f, x, k)
    backward = str(jax.make_jaxpr(vjp)(out))
    assert backward.count("scan[") == loops
    assert backward.count("dot_general") == 16 + (36 if min_side == 16 else 16)


def test_winograd_rejects_other_kernels():
    with pytest.raises(ValueError, match=r"w \[3, 3, C, O\]"):
        winograd.conv3x3(jnp.zeros((1, 4, 4, 2)), jnp.zeros((5, 5, 2, 3)))
    with pytest.raises(ValueError, match="x \\[N, H, W, C\\]"):
        winograd.conv3x3(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 2, 3)))


def _uses_winograd(fn, *args) -> bool:
    # Winograd's custom VJP replaces the convolution primitive in the jaxpr.
    jaxpr = str(jax.make_jaxpr(fn)(*args))
    return "conv_general_dilated" not in jaxpr and "custom_vjp_call" in jaxpr


@pytest.mark.parametrize(
    "algorithm,kernel,stride,cin,expected",
    [
        ("auto", 3, 1, 16, True),
        ("auto", 3, 1, 8, False),  # too few channels: slower than the direct conv
        ("auto", 3, 2, 16, False),  # stride 2: Winograd F(2x2, 3x3) is for stride 1
        ("auto", 1, 1, 16, False),
        ("winograd", 3, 1, 8, True),
        ("winograd", 3, 2, 16, False),
        ("direct", 3, 1, 16, False),
    ],
)
def test_conv_algorithm_dispatch(algorithm, kernel, stride, cin, expected):
    x = jnp.ones((2, 8, 8, cin))
    w = jnp.ones((kernel, kernel, cin, 16))
    pad = ((kernel // 2, kernel // 2),) * 2
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))

    def conv(x, w):
        return kernels.conv_function(algorithm)(x, w, (stride, stride), pad, None, None, dn)

    assert _uses_winograd(conv, x, w) == expected
    np.testing.assert_allclose(
        np.asarray(jax.jit(conv)(x, w)),
        np.asarray(_lax_conv(x, w, (stride, stride), pad)),
        rtol=1e-5,
    )


@pytest.mark.parametrize("dtype,expected", [(jnp.float32, True), (jnp.bfloat16, True),
                                            (jnp.float16, False)])
def test_conv_auto_uses_winograd_for_float32_and_bfloat16(dtype, expected):
    x = jnp.ones((2, 8, 8, 16), dtype)
    w = jnp.ones((3, 3, 16, 16), dtype)
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))

    def conv(x, w):
        return kernels.conv_function("auto")(x, w, (1, 1), ((1, 1), (1, 1)), None, None, dn)

    assert _uses_winograd(conv, x, w) == expected
    assert conv(x, w).dtype == dtype


def test_conv_algorithm_bad_value():
    from tks_jax import models

    dn = jax.lax.conv_dimension_numbers((1, 4, 4, 2), (3, 3, 2, 2), ("NHWC", "HWIO", "NHWC"))
    with pytest.raises(ValueError, match="Unknown conv algorithm 'fft'"):
        kernels.conv_general_dilated(
            jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2)), (1, 1), ((1, 1), (1, 1)), None,
            None, dn, algorithm="fft",
        )
    with pytest.raises(ValueError, match="Unknown conv algorithm 'fft'"):
        kernels.conv_function("fft")
    with pytest.raises(ValueError, match="Unknown conv algorithm 'fft'.*auto"):
        models.get_model("resnet19", num_classes=10, conv="fft")


@pytest.mark.slow
def test_model_conv_option_same_outputs_and_gradients():
    # VGG-SNN at width 1/4 (16-128 channels): "auto" runs its 3x3 convs with >= 16 input
    # channels by Winograd, "direct" by XLA's convolution; logits, batch statistics and
    # gradients agree.
    rng = np.random.default_rng(24)
    x = jnp.asarray(rng.poisson(0.5, (2, 2, 16, 16, 2)).astype(np.float32))
    y = jnp.array([1, 3])
    results, convs = [], []
    for conv in ("direct", "auto"):
        variables, loss = _model_loss("vgg_snn", x, y, 2, width=0.25, conv=conv)
        jaxpr = str(jax.make_jaxpr(loss)(variables["params"]))
        convs.append(jaxpr.count("conv_general_dilated"))
        (value, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
            variables["params"]
        )
        results.append((value, aux, grads))
    # The first conv (2 input channels) stays direct; the seven others are Winograd.
    assert 0 < convs[1] < convs[0]
    (v0, a0, g0), (v1, a1, g1) = results
    np.testing.assert_allclose(float(v1), float(v0), rtol=1e-5)
    for a, b in zip(jax.tree.leaves((a0, g0)), jax.tree.leaves((a1, g1)), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-3, atol=2e-5)


_SHARDED_CHILD = """
import jax
jax.config.update("jax_num_cpu_devices", 8)
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tks_jax import losses, models
from tks_jax.models import base

base.UNIT_CHUNK_BYTES = 1  # every unit chunked, one step per chunk
rng = np.random.default_rng(15)
x = jnp.asarray(rng.poisson(0.5, (2, 8, 16, 16, 2)).astype(np.float32))
y = jnp.asarray(rng.integers(0, 4, 8))
model = models.get_model("vgg_snn", num_classes=4, width=0.125, remat=True, conv="auto")
variables = jax.jit(lambda k, x: model.init(k, x, num_steps=2, train=False))(jax.random.key(0), x)

def loss(p, x, y):
    logits, upd = model.apply({"params": p, "batch_stats": variables["batch_stats"]}, x,
                              num_steps=2, train=True, mutable=["batch_stats"])
    return losses.mean_ce(logits, y), upd["batch_stats"]

step = jax.jit(jax.value_and_grad(loss, has_aux=True))
ref = step(variables["params"], x, y)
mesh = Mesh(np.array(jax.devices()), ("data",))
xs = jax.device_put(x, NamedSharding(mesh, P(None, "data")))
ys = jax.device_put(y, NamedSharding(mesh, P("data")))
out = step(variables["params"], xs, ys)
assert len(xs.sharding.device_set) == 8
for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(out), strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
print("SHARDED_OK")
"""


@pytest.mark.slow  # a child process
def test_chunked_remat_under_data_parallel_sharding():
    # The chunked units with the batch split over 8 devices (BatchNorm statistics are global
    # sums across devices) give the single-device loss, running statistics and gradients.
    from conftest import run_child

    # The limit catches a hang, not slowness: 8 virtual devices on a loaded 2-core CPU take minutes.
    proc = run_child(_SHARDED_CHILD, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SHARDED_OK" in proc.stdout


@pytest.mark.slow
def test_resnet19_remat_covers_whole_blocks():
    # remat=True on ResNet-19: the first unit of each block chunked or rematerialised, the
    # second half (conv, norm, shortcut, LIF) rematerialised; same tree, loss and gradients.
    # The direct convolution: what is rematerialised does not depend on the algorithm, and it
    # compiles in half the time (remat with Winograd: the VGG-SNN tests above).
    x = jnp.asarray(np.random.default_rng(16).normal(size=(2, 8, 8, 3)).astype(np.float32))
    y = jnp.array([0, 3])
    out = []
    for remat in (False, True):
        variables, loss_aux = _model_loss("resnet19", x, y, 2, width=0.125, remat=remat,
                                           conv="direct")

        def loss(p, loss_aux=loss_aux):
            return loss_aux(p)[0]

        jaxpr = str(jax.make_jaxpr(jax.grad(loss))(variables["params"]))
        out.append((jaxpr, jax.jit(jax.value_and_grad(loss))(variables["params"])))
    # 8 blocks x 2 halves + stem: every one a checkpoint (the units are too small to chunk).
    assert out[1][0].count("checkpoint") + out[1][0].count("remat") >= 17
    assert "checkpoint" not in out[0][0] and "remat" not in out[0][0]
    (l0, g0), (l1, g1) = out[0][1], out[1][1]
    np.testing.assert_allclose(float(l1), float(l0), rtol=1e-5)
    assert jax.tree.structure(g0) == jax.tree.structure(g1)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)


def _input_grad_numpy(g, w, input_shape, strides, padding):
    """dx[n, s*h + i - pt, s*w + j - pl] += g[n, h, w] @ W[i, j]^T, written out."""
    n, ho, wo, _ = g.shape
    kh, kw = w.shape[:2]
    (sh, sw), (pt, pl) = strides, (padding[0][0], padding[1][0])
    dx = np.zeros(input_shape)
    for h in range(ho):
        for c in range(wo):
            for i in range(kh):
                for j in range(kw):
                    r, q = sh * h + i - pt, sw * c + j - pl
                    if 0 <= r < input_shape[1] and 0 <= q < input_shape[2]:
                        dx[:, r, q] += g[:, h, c] @ w[i, j].T
    return dx


@pytest.mark.parametrize(
    "kernel,strides,hw,padding",
    [
        ((3, 3), (2, 2), (8, 8), ((1, 1), (1, 1))),
        ((3, 3), (2, 2), (7, 9), ((1, 1), (1, 1))),  # odd sizes: the last row/column is cut
        ((1, 1), (2, 2), (6, 6), ((0, 0), (0, 0))),  # a strided shortcut
        ((2, 3), (3, 2), (9, 7), ((0, 2), (1, 0))),  # asymmetric everything
        ((3, 3), (2, 2), (5, 5), ((2, 0), (0, 2))),  # taps that land in the padding
    ],
)
def test_col2im_input_grad_against_numpy(kernel, strides, hw, padding):
    rng = np.random.default_rng(23)
    x_shape = (2, *hw, 3)
    w = rng.normal(size=(*kernel, 3, 4))
    out_shape = jax.eval_shape(
        lambda x, w: _lax_conv(x, w, strides, padding),
        jax.ShapeDtypeStruct(x_shape, jnp.float32), jax.ShapeDtypeStruct(w.shape, jnp.float32),
    ).shape
    g = rng.normal(size=out_shape)
    dx = kernels.conv.col2im_input_grad(
        jnp.asarray(g, jnp.float32), jnp.asarray(w, jnp.float32), x_shape, strides, padding
    )
    assert dx.shape == x_shape and dx.dtype == jnp.float32
    ref = _input_grad_numpy(g, w, x_shape, strides, padding)
    np.testing.assert_allclose(np.asarray(dx), ref, rtol=1e-5, atol=1e-5)


def test_strided_conv_input_grad_bfloat16_accumulates_in_float32():
    # bfloat16 operands: the products accumulate in float32 and the gradient is rounded to
    # bfloat16 once, so it is within one bfloat16 rounding of the float64 gradient.
    rng = np.random.default_rng(29)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 32)), jnp.bfloat16)
    w = jnp.asarray(rng.normal(size=(3, 3, 32, 16)) / 10, jnp.bfloat16)
    pad = ((1, 1), (1, 1))
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
    out, vjp = jax.vjp(lambda x: kernels.conv_general_dilated(x, w, (2, 2), pad, None, None, dn), x)
    g = jnp.asarray(rng.normal(size=out.shape), jnp.bfloat16)
    (dx,) = vjp(g)
    assert dx.dtype == jnp.bfloat16
    ref = _input_grad_numpy(
        np.asarray(g, np.float64), np.asarray(w, np.float64), x.shape, (2, 2), pad
    )
    err = np.abs(np.asarray(dx, np.float64) - ref)
    assert np.all(err <= 2**-8 * np.abs(ref) + 1e-6), float(np.max(err / (np.abs(ref) + 1e-6)))
