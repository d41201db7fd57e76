"""Tests of tks_jax.spiking against independent references (docs/method.md §1 and §2).

References written here, not taken from the code under test:
  * the surrogate derivatives as NumPy formulas;
  * the LIF dynamics as a NumPy loop over time (float64);
  * the LIF gradient as a plain Python loop over time in JAX, whose spike uses a
    straight-through construction (``H(x)`` forward, ``g(x)`` backward) instead of
    ``jax.custom_vjp``, and its own ``stop_gradient`` on the reset.
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from tks_jax import spiking

# --------------------------------------------------------------------------------------------
# Independent references.
# --------------------------------------------------------------------------------------------


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# dS/dx of every surrogate, written from its formula (NumPy, float64).
NP_SURROGATE_GRADS = {
    "qgate": lambda x, a: np.where(np.abs(x) <= 1.0 / a, a - a * a * np.abs(x), 0.0),
    "sigmoid": lambda x, a: a * _np_sigmoid(a * x) * (1.0 - _np_sigmoid(a * x)),
    "atan": lambda x, a: (a / 2.0) / (1.0 + (math.pi / 2.0 * a * x) ** 2),
    "rectangle": lambda x, a: np.where(np.abs(x) < 0.5 / a, a, 0.0),
    "triangle": lambda x, a: a * np.clip(1.0 - np.abs(x), 0.0, None),
}

# The same formulas in jnp, for the straight-through reference spike below.
JNP_SURROGATE_GRADS = {
    "qgate": lambda x, a: jnp.where(jnp.abs(x) <= 1.0 / a, a - a * a * jnp.abs(x), 0.0),
    "sigmoid": lambda x, a: a * jax.nn.sigmoid(a * x) * (1.0 - jax.nn.sigmoid(a * x)),
    "atan": lambda x, a: (a / 2.0) / (1.0 + (math.pi / 2.0 * a * x) ** 2),
    "rectangle": lambda x, a: jnp.where(jnp.abs(x) < 0.5 / a, a, 0.0),
    "triangle": lambda x, a: a * jnp.clip(1.0 - jnp.abs(x), 0.0, None),
}

DEFAULT_ALPHAS = {"qgate": 2.0, "sigmoid": 4.0, "atan": 2.0, "rectangle": 1.0, "triangle": 1.0}
SURROGATE_NAMES = sorted(DEFAULT_ALPHAS)


def np_lif(currents, tau, v_threshold):
    """NumPy loop of docs/method.md §1; returns spikes and membranes after reset (float64)."""
    currents = np.asarray(currents, np.float64)
    u = np.zeros(currents.shape[1:])
    spikes, membranes = [], []
    for current in currents:
        u = u + (current - u) / tau
        s = (u > v_threshold).astype(np.float64)
        u = u * (1.0 - s)
        spikes.append(s)
        membranes.append(u)
    return np.stack(spikes), np.stack(membranes)


def ref_spike(x, name, alpha):
    """Heaviside forward, surrogate backward, without custom_vjp (straight-through form)."""
    heaviside = jax.lax.stop_gradient((x > 0).astype(x.dtype))
    slope = jax.lax.stop_gradient(JNP_SURROGATE_GRADS[name](x, alpha))
    return heaviside + slope * (x - jax.lax.stop_gradient(x))


def ref_lif_loop(currents, *, tau, v_threshold, name, alpha, detach_reset):
    """Plain Python loop over time in JAX (docs/method.md §1)."""
    u = jnp.zeros(currents.shape[1:], currents.dtype)
    spikes, membranes = [], []
    for t in range(currents.shape[0]):
        u = u + (currents[t] - u) / tau
        s = ref_spike(u - v_threshold, name, alpha)
        u = u * (1.0 - (jax.lax.stop_gradient(s) if detach_reset else s))
        spikes.append(s)
        membranes.append(u)
    return jnp.stack(spikes), jnp.stack(membranes)


def _currents(seed, shape, scale=1.0, offset=0.5):
    return (np.random.default_rng(seed).normal(size=shape) * scale + offset).astype(np.float32)


# --------------------------------------------------------------------------------------------
# spike() and the surrogates.
# --------------------------------------------------------------------------------------------


class SpikeTest(parameterized.TestCase):
    @parameterized.parameters(jnp.float32, jnp.bfloat16, jnp.float16)
    def test_forward_is_exact_strict_step_and_keeps_dtype(self, dtype):
        x = jnp.asarray([-3.0, -1e-3, -0.0, 0.0, 1e-3, 0.5, 7.0], dtype)
        for name in SURROGATE_NAMES:
            s = spiking.spike(x, name)
            self.assertEqual(s.dtype, dtype)
            np.testing.assert_array_equal(
                np.asarray(s, np.float32), [0, 0, 0, 0, 1, 1, 1], err_msg=name
            )

    @parameterized.product(name=SURROGATE_NAMES, alpha=[None, 0.7, 3.0])
    def test_backward_equals_formula_on_grid(self, name, alpha):
        a = DEFAULT_ALPHAS[name] if alpha is None else alpha
        # Grid offset by an irrational step so that no point sits on a kink/boundary.
        x = np.linspace(-2.5, 2.5, 401) + math.sqrt(2) * 1e-4
        cot = np.random.default_rng(0).uniform(0.5, 2.0, size=x.shape)
        surrogate = spiking.get_surrogate(name, alpha)
        _, vjp = jax.vjp(lambda v: spiking.spike(v, surrogate), jnp.asarray(x, jnp.float32))
        (grad,) = vjp(jnp.asarray(cot, jnp.float32))
        expected = cot * NP_SURROGATE_GRADS[name](x, a)
        np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-5, atol=1e-6)
        # Also by name through spike()'s string interface (default alpha).
        if alpha is None:
            g = jax.grad(lambda v: jnp.sum(spiking.spike(v, name)))(jnp.asarray(x, jnp.float32))
            np.testing.assert_allclose(np.asarray(g), NP_SURROGATE_GRADS[name](x, a), atol=1e-6)

    def test_qgate_default_is_the_papers(self):
        # docs/method.md §2: 2 - 4|x| on |x| <= 0.5, peak 2, area exactly 1.
        x = jnp.asarray([0.0, 0.1, -0.25, 0.5, 0.6], jnp.float32)
        g = jax.vmap(jax.grad(lambda v: spiking.spike(v)))(x)
        np.testing.assert_allclose(np.asarray(g), [2.0, 1.6, 1.0, 0.0, 0.0], atol=1e-6)
        grid = np.linspace(-1, 1, 20001)
        area = np.trapezoid(np.asarray(spiking.QGate().grad(jnp.asarray(grid, jnp.float32))), grid)
        self.assertAlmostEqual(area, 1.0, places=4)

    @parameterized.parameters(*SURROGATE_NAMES)
    def test_bf16_gradient_stays_bf16(self, name):
        x = jnp.asarray([-0.2, 0.0, 0.3], jnp.bfloat16)
        g = jax.grad(lambda v: jnp.sum(spiking.spike(v, name).astype(jnp.float32)))(x)
        self.assertEqual(g.dtype, jnp.bfloat16)
        expected = NP_SURROGATE_GRADS[name](np.asarray(x, np.float64), DEFAULT_ALPHAS[name])
        np.testing.assert_allclose(np.asarray(g, np.float32), expected, rtol=2e-2, atol=1e-2)

    def test_get_surrogate(self):
        self.assertEqual(spiking.get_surrogate("qgate"), spiking.QGate(alpha=2.0))
        self.assertEqual(spiking.get_surrogate("piecewise_quadratic", 3), spiking.QGate(3.0))
        obj = spiking.ATan(alpha=5.0)
        self.assertIs(spiking.get_surrogate(obj), obj)
        for name in SURROGATE_NAMES:
            self.assertIsInstance(spiking.get_surrogate(name), spiking.Surrogate)
            self.assertEqual(spiking.get_surrogate(name).alpha, DEFAULT_ALPHAS[name])

    def test_bad_input(self):
        with pytest.raises(ValueError, match="Unknown surrogate 'relu'"):
            spiking.get_surrogate("relu")
        with pytest.raises(ValueError, match="alpha must be > 0"):
            spiking.get_surrogate("sigmoid", alpha=0.0)
        with pytest.raises(ValueError, match="set the sharpness on the object"):
            spiking.get_surrogate(spiking.QGate(2.0), alpha=3.0)
        with pytest.raises(TypeError, match="floating-point"):
            spiking.spike(jnp.arange(3), "qgate")
        with pytest.raises(ValueError, match="Unknown surrogate"):
            spiking.spike(jnp.zeros(3), "nope")


# --------------------------------------------------------------------------------------------
# lif(): forward against NumPy.
# --------------------------------------------------------------------------------------------


class LifForwardTest(chex.TestCase):
    def test_hand_computed_constant_input(self):
        # tau = 2, v_th = 0.5, I = 1: u = 0.5 (not > 0.5, strict), 0.75 (spike, reset), ...
        spikes, membranes = spiking.lif(jnp.ones((5, 1)), return_membrane=True)
        np.testing.assert_array_equal(np.asarray(spikes)[:, 0], [0, 1, 0, 1, 0])
        np.testing.assert_allclose(np.asarray(membranes)[:, 0], [0.5, 0.0, 0.5, 0.0, 0.5])

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(
        (2.0, 0.5, (7, 3, 4)),
        (1.5, 1.0, (6, 5)),
        (4.0, 0.2, (5, 2, 2, 3)),
        (1.0, 0.3, (4, 6)),  # tau = 1: u_t = I_t, no memory
        (2.0, 0.5, (1, 8)),  # T = 1
    )
    def test_matches_numpy_loop(self, tau, v_threshold, shape):
        currents = _currents(int(tau * 10 + v_threshold * 100), shape, scale=1.0, offset=0.6)
        fn = self.variant(
            functools.partial(spiking.lif, tau=tau, v_threshold=v_threshold, return_membrane=True)
        )
        spikes, membranes = fn(jnp.asarray(currents))
        ref_s, ref_u = np_lif(currents, tau, v_threshold)
        chex.assert_shape([spikes, membranes], shape)
        chex.assert_type([spikes, membranes], jnp.float32)
        np.testing.assert_array_equal(np.asarray(spikes), ref_s)
        np.testing.assert_allclose(np.asarray(membranes), ref_u, rtol=1e-5, atol=1e-6)
        # Non-trivial data: some neurons fire and some do not.
        self.assertTrue(0 < ref_s.mean() < 1)
        # Without return_membrane only the spikes come back.
        only = spiking.lif(jnp.asarray(currents), tau=tau, v_threshold=v_threshold)
        np.testing.assert_array_equal(np.asarray(only), ref_s)

    @parameterized.product(unroll=[1, 3, True], remat=[False, True])
    def test_unroll_and_remat_do_not_change_forward(self, unroll, remat):
        currents = _currents(3, (6, 4, 3))
        spikes, membranes = spiking.lif(
            jnp.asarray(currents), unroll=unroll, remat=remat, return_membrane=True
        )
        ref_s, ref_u = np_lif(currents, 2.0, 0.5)
        np.testing.assert_array_equal(np.asarray(spikes), ref_s)
        np.testing.assert_allclose(np.asarray(membranes), ref_u, rtol=1e-5, atol=1e-6)

    def test_bf16_in_bf16_out(self):
        # Multiples of 1/4 with tau = 2 and T = 4 keep every membrane exact (also in bf16's 8
        # bits), so the float64 NumPy loop is an exact reference.
        rng = np.random.default_rng(4)
        currents = rng.integers(-4, 9, size=(4, 3, 4)) / 4.0
        spikes, membranes = spiking.lif(jnp.asarray(currents, jnp.bfloat16), return_membrane=True)
        chex.assert_type(spikes, jnp.bfloat16)
        chex.assert_type(membranes, jnp.float32)  # the membrane integrates in float32
        ref_s, ref_u = np_lif(currents, 2.0, 0.5)
        self.assertTrue(0 < ref_s.mean() < 1)
        np.testing.assert_array_equal(np.asarray(spikes, np.float64), ref_s)
        np.testing.assert_array_equal(np.asarray(membranes, np.float64), ref_u)

    @parameterized.parameters("custom_vjp", "scan")
    def test_bf16_currents_integrate_in_float32(self, backend):
        # Over 32 steps a bfloat16 membrane (8 significant bits) would round every charge and
        # decay; in float32 the bf16 run equals the float32 run on the same (bf16) currents,
        # spikes and membranes, and its gradient is the float32 gradient rounded to bf16.
        currents = jnp.asarray(_currents(7, (32, 64), scale=0.4, offset=0.3), jnp.bfloat16)
        wide = currents.astype(jnp.float32)
        s16, u16 = spiking.lif(currents, return_membrane=True, backend=backend)
        s32, u32 = spiking.lif(wide, return_membrane=True, backend=backend)
        self.assertTrue(0 < float(s32.mean()) < 1)
        np.testing.assert_array_equal(np.asarray(s16, np.float32), np.asarray(s32))
        np.testing.assert_array_equal(np.asarray(u16), np.asarray(u32))
        # A membrane rounded to bf16 at every step drifts away from it (the test has teeth).
        ref_s, _ = np_lif(np.asarray(wide, np.float64), 2.0, 0.5)
        np.testing.assert_array_equal(np.asarray(s32), ref_s)
        u, drifted = jnp.zeros(64, jnp.bfloat16), []
        for t in range(32):
            h = u + (currents[t] - u) / jnp.bfloat16(2.0)
            drifted.append(h > 0.5)
            u = h * (1 - (h > 0.5)).astype(jnp.bfloat16)
        self.assertGreater(int(np.sum(np.stack(drifted) != ref_s.astype(bool))), 0)
        cot = jnp.asarray(_currents(8, (32, 64)), jnp.bfloat16)
        g16 = jax.grad(lambda c: jnp.vdot(spiking.lif(c, backend=backend), cot).astype(
            jnp.float32))(currents)
        g32 = jax.grad(lambda c: jnp.vdot(spiking.lif(c, backend=backend),
                                          cot.astype(jnp.float32)))(wide)
        chex.assert_type(g16, jnp.bfloat16)
        np.testing.assert_array_equal(np.asarray(g16, np.float32),
                                      np.asarray(g32.astype(jnp.bfloat16), np.float32))

    def test_no_state_between_calls(self):
        currents = jnp.asarray(_currents(5, (4, 3)))
        first = spiking.lif(currents, return_membrane=True)
        second = spiking.lif(currents, return_membrane=True)
        chex.assert_trees_all_equal(first, second)

    def test_vmap_over_batch(self):
        currents = jnp.asarray(_currents(6, (3, 5, 4)))  # [B, T, N], vmapped over B
        out = jax.vmap(spiking.lif)(currents)
        for b in range(3):
            np.testing.assert_array_equal(np.asarray(out[b]), np_lif(currents[b], 2.0, 0.5)[0])

    def test_bad_input(self):
        with pytest.raises(ValueError, match=r"time-major currents \[T, ...\]"):
            spiking.lif(jnp.float32(1.0))
        with pytest.raises(ValueError, match="T >= 1"):
            spiking.lif(jnp.zeros((0, 3)))
        with pytest.raises(TypeError, match="floating-point currents"):
            spiking.lif(jnp.ones((3, 2), jnp.int32))
        with pytest.raises(ValueError, match="tau must be > 0"):
            spiking.lif(jnp.ones((3, 2)), tau=0.0)
        with pytest.raises(ValueError, match="v_threshold must be > 0"):
            spiking.lif(jnp.ones((3, 2)), v_threshold=-0.5)
        with pytest.raises(ValueError, match="Unknown surrogate"):
            spiking.lif(jnp.ones((3, 2)), surrogate="step")


# --------------------------------------------------------------------------------------------
# lif(): gradients against the Python-loop reference.
# --------------------------------------------------------------------------------------------


class LifGradientTest(parameterized.TestCase):
    @parameterized.product(name=SURROGATE_NAMES, detach_reset=[True, False], remat=[False, True])
    def test_gradient_matches_python_loop(self, name, detach_reset, remat):
        alpha, tau, v_threshold = DEFAULT_ALPHAS[name], 2.0, 0.5
        currents = jnp.asarray(_currents(7, (6, 10), scale=0.8, offset=0.7))
        rng = np.random.default_rng(8)
        w_s = jnp.asarray(rng.normal(size=currents.shape), jnp.float32)
        w_u = jnp.asarray(rng.normal(size=currents.shape), jnp.float32)

        def loss(spikes, membranes):
            return jnp.sum(w_s * spikes) + jnp.sum(w_u * membranes**2)

        def loss_lif(c):
            return loss(
                *spiking.lif(
                    c,
                    tau=tau,
                    v_threshold=v_threshold,
                    surrogate=spiking.get_surrogate(name),
                    detach_reset=detach_reset,
                    remat=remat,
                    return_membrane=True,
                )
            )

        def loss_ref(c):
            return loss(
                *ref_lif_loop(
                    c,
                    tau=tau,
                    v_threshold=v_threshold,
                    name=name,
                    alpha=alpha,
                    detach_reset=detach_reset,
                )
            )

        value, grad = jax.jit(jax.value_and_grad(loss_lif))(currents)
        ref_value, ref_grad = jax.value_and_grad(loss_ref)(currents)
        np.testing.assert_allclose(float(value), float(ref_value), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(grad), np.asarray(ref_grad), rtol=1e-4, atol=1e-5)
        self.assertGreater(float(jnp.abs(grad).max()), 0.0)

    def test_detach_reset_changes_gradient(self):
        # Guards the test above against a reset path that is never exercised.
        currents = jnp.asarray(_currents(7, (6, 10), scale=0.8, offset=0.7))

        def g(detach):
            return jax.grad(lambda c: jnp.sum(spiking.lif(c, detach_reset=detach) * c))(currents)

        self.assertGreater(float(jnp.abs(g(True) - g(False)).max()), 1e-3)

    def test_gradient_through_time_is_full_bptt(self):
        # A spike at t = 1 depends on I_0 through the membrane (no detach of u across time).
        currents = jnp.asarray([[0.6], [0.5]], jnp.float32)  # u = 0.3, then 0.4 (no spike)
        grad = jax.grad(lambda c: spiking.lif(c)[1, 0])(currents)
        # d s_1/d u_1 = qgate(0.4 - 0.5) = 2 - 4*0.1 = 1.6; du_1/dI_0 = 1/4, du_1/dI_1 = 1/2.
        np.testing.assert_allclose(np.asarray(grad)[:, 0], [1.6 / 4, 1.6 / 2], rtol=1e-5)
