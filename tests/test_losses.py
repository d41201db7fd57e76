"""Tests of tks_jax.losses against NumPy references written here (docs/method.md §4 and §5)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from tks_jax import losses

# --------------------------------------------------------------------------------------------
# NumPy references (float64, loops where docs/method.md speaks per sample / per step).
# --------------------------------------------------------------------------------------------


def np_log_softmax(x):
    x = np.asarray(x, np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_mean_ce(z, y):
    log_p = np_log_softmax(np.asarray(z, np.float64).mean(axis=0))
    return -np.mean([log_p[b, y[b]] for b in range(len(y))])


def np_label_smoothing(z, y, eps):
    log_p = np_log_softmax(np.asarray(z, np.float64).mean(axis=0))
    per_sample = [(1 - eps) * -log_p[b, y[b]] + eps * np.mean(-log_p[b]) for b in range(len(y))]
    return np.mean(per_sample)


def np_tet(z, y, lamb, means):
    z = np.asarray(z, np.float64)
    ce = np.mean([[-np_log_softmax(z[t, b])[y[b]] for b in range(len(y))] for t in range(len(z))])
    return (1 - lamb) * ce + lamb * np.mean((z - means) ** 2)


def np_teacher(z, y, temperature):
    z = np.asarray(z, np.float64)
    num_steps, batch, num_classes = z.shape
    teacher = np.zeros((batch, num_classes))
    for b in range(batch):
        acc = np.zeros(num_classes)
        for t in range(num_steps):
            if np.argmax(z[t, b]) == y[b]:  # NumPy argmax: first maximal index
                acc += z[t, b]
        e = np.exp(acc / temperature - np.max(acc / temperature))
        teacher[b] = e / e.sum()
    return teacher


def np_tks(z, y, temperature, lam):
    z = np.asarray(z, np.float64)
    q = np_teacher(z, y, temperature)
    kd = np.mean(
        [temperature**2 * np.mean(-(q * np_log_softmax(z[t])).sum(-1)) for t in range(len(z))]
    )
    return (1 - lam) * np_mean_ce(z, y) + lam * kd, np_mean_ce(z, y), kd


def _data(seed, num_steps, batch, num_classes, scale=2.0):
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(num_steps, batch, num_classes)) * scale).astype(np.float32)
    y = rng.integers(0, num_classes, size=batch).astype(np.int32)
    return z, y


SHAPES = [(1, 5, 3), (4, 6, 10), (10, 3, 2), (3, 1, 7)]

# --------------------------------------------------------------------------------------------
# Values against NumPy, with and without jit.
# --------------------------------------------------------------------------------------------


class BaselineLossesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*SHAPES)
    def test_mean_ce(self, num_steps, batch, num_classes):
        z, y = _data(0, num_steps, batch, num_classes)
        value = self.variant(losses.mean_ce)(z, y)
        chex.assert_shape(value, ())
        chex.assert_type(value, jnp.float32)
        np.testing.assert_allclose(float(value), np_mean_ce(z, y), rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*SHAPES)
    def test_label_smoothing(self, *shape):
        z, y = _data(1, *shape)
        fn = self.variant(lambda z, y, eps: losses.label_smoothing(z, y, smoothing=eps))
        for eps in (0.0, 0.1, 0.5, 1.0):
            value = fn(z, y, jnp.float32(eps))
            np.testing.assert_allclose(float(value), np_label_smoothing(z, y, eps), rtol=1e-5)

    def test_label_smoothing_default_and_zero(self):
        z, y = _data(2, 4, 6, 10)
        np.testing.assert_allclose(
            float(losses.label_smoothing(z, y)), np_label_smoothing(z, y, 0.1), rtol=1e-5
        )
        np.testing.assert_allclose(
            float(losses.label_smoothing(z, y, smoothing=0.0)),
            float(losses.mean_ce(z, y)),
            rtol=1e-6,
        )

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*SHAPES)
    def test_tet(self, *shape):
        z, y = _data(3, *shape)
        fn = self.variant(lambda z, y, lamb, means: losses.tet(z, y, lamb=lamb, means=means))
        for lamb, means in ((0.0, 1.0), (1e-3, 1.0), (0.5, 0.0), (0.5, -2.0)):
            value = fn(z, y, jnp.float32(lamb), jnp.float32(means))
            np.testing.assert_allclose(float(value), np_tet(z, y, lamb, means), rtol=1e-5)

    def test_tet_defaults(self):
        z, y = _data(4, 4, 6, 10)
        np.testing.assert_allclose(float(losses.tet(z, y)), np_tet(z, y, 1e-3, 1.0), rtol=1e-5)

    def test_t1_baselines_are_plain_ce(self):
        # With T = 1, the mean CE and TET(lamb = 0) both reduce to the ordinary CE.
        z, y = _data(5, 1, 6, 4)
        plain = -np.mean(np_log_softmax(z[0])[np.arange(6), y])
        np.testing.assert_allclose(float(losses.mean_ce(z, y)), plain, rtol=1e-5)
        np.testing.assert_allclose(float(losses.tet(z, y, lamb=0.0)), plain, rtol=1e-5)


class TksTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*SHAPES)
    def test_tks_matches_numpy(self, *shape):
        z, y = _data(6, *shape)
        fn = self.variant(
            lambda z, y, temperature, lam: losses.tks(
                z, y, temperature=temperature, lam=lam, return_aux=True
            )
        )
        for temperature, lam in ((1.0, 0.0), (3.0, 0.35), (0.5, 1.0), (5.0, 0.7)):
            value, aux = fn(z, y, jnp.float32(temperature), jnp.float32(lam))
            ref, ref_ce, ref_kd = np_tks(z, y, temperature, lam)
            chex.assert_shape(value, ())
            chex.assert_type(value, jnp.float32)
            np.testing.assert_allclose(float(value), ref, rtol=1e-5)
            np.testing.assert_allclose(float(aux["ce"]), ref_ce, rtol=1e-5)
            np.testing.assert_allclose(float(aux["kd"]), ref_kd, rtol=1e-5)
            np.testing.assert_allclose(
                np.asarray(aux["teacher"]), np_teacher(z, y, temperature), rtol=1e-5, atol=1e-7
            )
            chex.assert_shape(aux["kd_per_step"], (shape[0],))
            np.testing.assert_allclose(float(jnp.mean(aux["kd_per_step"])), ref_kd, rtol=1e-5)
        any_correct = np.any(np.argmax(z, -1) == y[None], axis=0).mean()
        np.testing.assert_allclose(float(aux["teacher_fraction"]), any_correct)
        # Python-number hyper-parameters, without return_aux: the same scalar.
        np.testing.assert_allclose(
            float(losses.tks(z, y, temperature=5.0, lam=0.7)), float(value), rtol=1e-6
        )

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(1.0, 3.0)
    def test_teacher_matches_numpy(self, temperature):
        z, y = _data(7, 5, 8, 4)
        fn = functools.partial(losses.tks_teacher, temperature=temperature)
        q = self.variant(fn)(z, y)
        chex.assert_shape(q, (8, 4))
        chex.assert_type(q, jnp.float32)
        np.testing.assert_allclose(np.asarray(q), np_teacher(z, y, temperature), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(q).sum(-1), 1.0, rtol=1e-6)

    def test_no_correct_step_gives_uniform_teacher(self):
        # Label 0 but class 1 always wins: no step is correct.
        z = np.zeros((3, 4, 5), np.float32)
        z[:, :, 1] = 2.0
        z[:, :, 0] = np.arange(12, dtype=np.float32).reshape(3, 4) * 0.1  # < 2, never argmax
        y = np.zeros(4, np.int32)
        q = losses.tks_teacher(z, y, temperature=3.0)
        np.testing.assert_array_equal(np.asarray(q), np.full((4, 5), 0.2, np.float32))
        value, aux = losses.tks(z, y, temperature=3.0, lam=0.7, return_aux=True)
        # Uniform teacher: kd = tau^2 * mean_{t,b} mean_c(-log_softmax(z_t[b])).
        kd = 9.0 * np.mean(-np_log_softmax(z).mean(-1))
        np.testing.assert_allclose(float(aux["kd"]), kd, rtol=1e-5)
        np.testing.assert_allclose(float(value), 0.3 * np_mean_ce(z, y) + 0.7 * kd, rtol=1e-5)
        self.assertEqual(float(aux["teacher_fraction"]), 0.0)

    def test_all_steps_correct_sums_the_logits(self):
        rng = np.random.default_rng(8)
        z = rng.normal(size=(4, 3, 6)).astype(np.float32)
        y = np.array([2, 0, 5], np.int32)
        z[:, np.arange(3), y] += 10.0  # every step predicts the label
        temperature = 3.0
        summed = z.sum(axis=0).astype(np.float64) / temperature  # sum, not mean (docs/method.md §4)
        expected = np.exp(summed - summed.max(-1, keepdims=True))
        expected /= expected.sum(-1, keepdims=True)
        q = losses.tks_teacher(z, y, temperature=temperature)
        np.testing.assert_allclose(np.asarray(q), expected, rtol=1e-5, atol=1e-7)
        value, aux = losses.tks(z, y, temperature=temperature, lam=0.5, return_aux=True)
        np.testing.assert_allclose(
            float(value), np_tks(z, y, temperature, 0.5)[0], rtol=1e-5, atol=1e-6
        )
        self.assertEqual(float(aux["teacher_fraction"]), 1.0)

    def test_t1_teacher_is_own_logits_or_uniform(self):
        z = np.array([[[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]]], np.float32)  # [1, 2, 3]
        y = np.array([0, 2], np.int32)  # sample 0 correct, sample 1 wrong
        q = np.asarray(losses.tks_teacher(z, y, temperature=2.0))
        e = np.exp(np.array([2.0, 1.0, 0.0]) / 2.0)
        np.testing.assert_allclose(q[0], e / e.sum(), rtol=1e-6)
        np.testing.assert_allclose(q[1], np.full(3, 1 / 3), rtol=1e-6)
        np.testing.assert_allclose(
            float(losses.tks(z, y, temperature=2.0, lam=0.4)),
            np_tks(z, y, 2.0, 0.4)[0],
            rtol=1e-6,
        )

    def test_argmax_ties_go_to_first_index(self):
        # Step 0 ties classes 0 and 1: argmax is 0, so it is correct for label 0 only.
        z = np.array([[[1.0, 1.0, 0.0]], [[0.0, 2.0, 0.0]]], np.float32)
        q0 = np.asarray(losses.tks_teacher(z, np.array([0]), temperature=1.0))
        e = np.exp([1.0, 1.0, 0.0])
        np.testing.assert_allclose(q0[0], e / e.sum(), rtol=1e-6)
        q1 = np.asarray(losses.tks_teacher(z, np.array([1]), temperature=1.0))
        e = np.exp([0.0, 2.0, 0.0])  # only step 1 selected
        np.testing.assert_allclose(q1[0], e / e.sum(), rtol=1e-6)

    def test_one_class_dominating(self):
        z, _ = _data(9, 4, 8, 5, scale=1.0)
        z[..., 3] += 15.0  # class 3 wins every step of every sample
        y = np.array([3, 3, 0, 1, 3, 2, 4, 3], np.int32)
        for lam in (0.0, 0.7):
            value, aux = losses.tks(z, y, temperature=3.0, lam=lam, return_aux=True)
            np.testing.assert_allclose(float(value), np_tks(z, y, 3.0, lam)[0], rtol=1e-5)
        np.testing.assert_allclose(float(aux["teacher_fraction"]), 0.5)
        for fn, ref in (
            (losses.mean_ce, np_mean_ce(z, y)),
            (losses.label_smoothing, np_label_smoothing(z, y, 0.1)),
            (losses.tet, np_tet(z, y, 1e-3, 1.0)),
        ):
            np.testing.assert_allclose(float(fn(z, y)), ref, rtol=1e-5)

    def test_large_logits_stay_finite(self):
        fns = {
            "tks": jax.jit(
                jax.value_and_grad(functools.partial(losses.tks, temperature=3.0, lam=0.7))
            ),
            "mean_ce": jax.jit(jax.value_and_grad(losses.mean_ce)),
            "label_smoothing": jax.jit(jax.value_and_grad(losses.label_smoothing)),
            "tet": jax.jit(jax.value_and_grad(losses.tet)),
        }
        for scale in (1e3, 3e4):
            z, y = _data(10, 4, 6, 5, scale=scale)
            z[:2, np.arange(6), y] = scale * 5  # some correct steps, huge teacher logits (sum)
            refs = {
                "tks": np_tks(z, y, 3.0, 0.7)[0],
                "mean_ce": np_mean_ce(z, y),
                "label_smoothing": np_label_smoothing(z, y, 0.1),
                "tet": np_tet(z, y, 1e-3, 1.0),
            }
            for name, fn in fns.items():
                value, grad = fn(jnp.asarray(z), y)
                self.assertTrue(np.isfinite(float(value)), name)
                self.assertTrue(np.all(np.isfinite(np.asarray(grad))), name)
                np.testing.assert_allclose(float(value), refs[name], rtol=1e-4, err_msg=name)
            q = losses.tks_teacher(z, y, temperature=1.0)
            self.assertTrue(np.all(np.isfinite(np.asarray(q))))

    def test_lam_endpoints(self):
        z, y = _data(11, 3, 5, 4)
        np.testing.assert_allclose(
            float(losses.tks(z, y, temperature=3.0, lam=0.0)),
            float(losses.mean_ce(z, y)),
            rtol=1e-6,
        )
        _, aux = losses.tks(z, y, temperature=3.0, lam=0.5, return_aux=True)
        np.testing.assert_allclose(
            float(losses.tks(z, y, temperature=3.0, lam=1.0)), float(aux["kd"]), rtol=1e-6
        )


# --------------------------------------------------------------------------------------------
# Gradients.
# --------------------------------------------------------------------------------------------


def jnp_tks_reference(z, y, temperature, lam, teacher_mask=None, constant_teacher=None):
    """TKS in jnp, written for the test: the correct-step mask comes from NumPy (it is not
    differentiable), the teacher is built inside (gradient flows) or given as a constant."""
    num_classes = z.shape[-1]
    one_hot = jax.nn.one_hot(y, num_classes)
    ce = -jnp.mean(jnp.sum(one_hot * jax.nn.log_softmax(jnp.mean(z, 0)), -1))
    if constant_teacher is None:
        q = jax.nn.softmax(jnp.sum(z * teacher_mask[..., None], 0) / temperature)
    else:
        q = constant_teacher
    kd = temperature**2 * jnp.mean(-jnp.sum(q[None] * jax.nn.log_softmax(z), -1))
    return (1 - lam) * ce + lam * kd


class TksGradientTest(chex.TestCase):
    def test_detach_teacher_same_value_different_gradients(self):
        z, y = _data(12, 4, 6, 5, scale=1.5)
        z = jnp.asarray(z)
        kw = dict(temperature=3.0, lam=0.7)
        v_live, g_live = jax.jit(jax.value_and_grad(lambda x: losses.tks(x, y, **kw)))(z)
        v_det, g_det = jax.jit(
            jax.value_and_grad(lambda x: losses.tks(x, y, detach_teacher=True, **kw))
        )(z)
        np.testing.assert_allclose(float(v_live), float(v_det), rtol=1e-7)
        self.assertGreater(float(jnp.abs(g_live - g_det).max()), 1e-3)

        mask = (np.argmax(np.asarray(z), -1) == y[None]).astype(np.float32)
        self.assertTrue(0 < mask.mean() < 1)
        ref_live = jax.jit(
            jax.grad(lambda x: jnp_tks_reference(x, y, 3.0, 0.7, teacher_mask=mask))
        )(z)
        const_q = jnp.asarray(np_teacher(np.asarray(z), y, 3.0), jnp.float32)
        ref_det = jax.jit(
            jax.grad(lambda x: jnp_tks_reference(x, y, 3.0, 0.7, constant_teacher=const_q))
        )(z)
        np.testing.assert_allclose(np.asarray(g_live), np.asarray(ref_live), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.asarray(g_det), np.asarray(ref_det), rtol=1e-4, atol=1e-6)

    def test_unselected_steps_get_no_teacher_gradient(self):
        # With lam = 1 and a detached teacher every step's gradient is the student term only;
        # the difference live - detached is non-zero only on the selected (correct) steps.
        z, y = _data(13, 4, 6, 5, scale=1.5)
        g = {
            d: jax.jit(
                jax.grad(
                    lambda x, d=d: losses.tks(x, y, temperature=2.0, lam=1.0, detach_teacher=d)
                )
            )(jnp.asarray(z))
            for d in (True, False)
        }
        diff = np.abs(np.asarray(g[False] - g[True])).max(-1)  # [T, B]
        correct = np.argmax(z, -1) == y[None]
        np.testing.assert_array_equal(diff[~correct], 0.0)
        self.assertTrue(np.all(diff[correct] > 0))

    def test_gradients_match_finite_differences(self):
        z, y = _data(14, 2, 3, 4)
        for fn in (
            losses.mean_ce,
            losses.label_smoothing,
            losses.tet,
            functools.partial(losses.tks, temperature=3.0, lam=0.5),
        ):
            grad = np.asarray(jax.jit(jax.grad(fn))(jnp.asarray(z, jnp.float32), y))
            z64 = z.astype(np.float64)
            ref = np.zeros_like(z64)
            eps = 1e-4
            ref_fn = {
                losses.mean_ce: lambda x: np_mean_ce(x, y),
                losses.label_smoothing: lambda x: np_label_smoothing(x, y, 0.1),
                losses.tet: lambda x: np_tet(x, y, 1e-3, 1.0),
            }.get(fn, lambda x: np_tks(x, y, 3.0, 0.5)[0])
            for idx in np.ndindex(z.shape):
                plus, minus = z64.copy(), z64.copy()
                plus[idx] += eps
                minus[idx] -= eps
                ref[idx] = (ref_fn(plus) - ref_fn(minus)) / (2 * eps)
            np.testing.assert_allclose(grad, ref, rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------------------------
# Transformations, traced hyper-parameters, dtypes.
# --------------------------------------------------------------------------------------------


class TransformTest(chex.TestCase):
    def test_traced_lam_and_temperature_under_jit(self):
        z, y = _data(15, 3, 4, 5)

        @jax.jit
        def step(z, y, lam, temperature):
            return jax.value_and_grad(lambda x: losses.tks(x, y, temperature=temperature, lam=lam))(
                z
            )

        for lam, temperature in ((0.0, 1.0), (0.42, 3.0), (1.0, 5.0)):
            value, _ = step(z, y, jnp.float32(lam), jnp.float32(temperature))
            np.testing.assert_allclose(float(value), np_tks(z, y, temperature, lam)[0], rtol=1e-5)
        self.assertEqual(step._cache_size(), 1)  # no recompile per lam

    def test_vmap_over_a_leading_axis(self):
        rng = np.random.default_rng(16)
        z = rng.normal(size=(3, 4, 5, 6)).astype(np.float32)  # [E, T, B, C]
        y = rng.integers(0, 6, size=(3, 5)).astype(np.int32)
        lam = jnp.asarray([0.1, 0.5, 0.9], jnp.float32)
        values = jax.vmap(lambda a, b, c: losses.tks(a, b, temperature=2.0, lam=c))(z, y, lam)
        for e in range(3):
            np.testing.assert_allclose(
                float(values[e]), np_tks(z[e], y[e], 2.0, float(lam[e]))[0], rtol=1e-5
            )
        ce = jax.vmap(losses.mean_ce)(z, y)
        np.testing.assert_allclose(
            np.asarray(ce), [np_mean_ce(z[e], y[e]) for e in range(3)], rtol=1e-5
        )
        q = jax.vmap(functools.partial(losses.tks_teacher, temperature=2.0))(z, y)
        chex.assert_shape(q, (3, 5, 6))

    @parameterized.parameters(jnp.bfloat16, jnp.float16)
    def test_low_precision_logits_are_upcast(self, dtype):
        z, y = _data(17, 4, 6, 5)
        z_low = jnp.asarray(z, dtype)
        z_rounded = np.asarray(z_low, np.float64)  # what the function actually sees
        cases = (
            (
                functools.partial(losses.tks, temperature=3.0, lam=0.7),
                np_tks(z_rounded, y, 3.0, 0.7)[0],
            ),
            (losses.mean_ce, np_mean_ce(z_rounded, y)),
            (losses.label_smoothing, np_label_smoothing(z_rounded, y, 0.1)),
            (losses.tet, np_tet(z_rounded, y, 1e-3, 1.0)),
        )
        for fn, ref in cases:
            value = fn(z_low, y)
            chex.assert_type(value, jnp.float32)
            np.testing.assert_allclose(float(value), ref, rtol=1e-5)
            grad = jax.grad(fn)(z_low, y)
            chex.assert_type(grad, dtype)  # the cotangent keeps the input dtype
        q = losses.tks_teacher(z_low, y, temperature=3.0)
        chex.assert_type(q, jnp.float32)

    def test_accepts_lists_and_int64_labels(self):
        z, y = _data(18, 2, 3, 4)
        value = losses.mean_ce(z.tolist(), np.asarray(y, np.int64))
        np.testing.assert_allclose(float(value), np_mean_ce(z, y), rtol=1e-5)


# --------------------------------------------------------------------------------------------
# The lambda ramp.
# --------------------------------------------------------------------------------------------


class TksLambdaTest(parameterized.TestCase):
    @parameterized.parameters(
        (0, 10, 0.7, 0.0),
        (1, 10, 0.7, 0.07),
        (9, 10, 0.7, 0.63),
        (10, 10, 0.7, 0.7),
        (150, 600, 0.3, 0.075),
        (0, 1, 1.0, 0.0),
    )
    def test_values(self, epoch, num_epochs, peak, expected):
        value = losses.tks_lambda(epoch, num_epochs, peak)
        self.assertIsInstance(value, float)
        self.assertAlmostEqual(value, expected, places=12)

    def test_linear_and_monotone(self):
        values = np.array([losses.tks_lambda(e, 600, 0.7) for e in range(600)])
        np.testing.assert_allclose(values, 0.7 * np.arange(600) / 600, rtol=1e-12)
        self.assertTrue(np.all(np.diff(values) > 0))

    def test_traceable(self):
        fn = jax.jit(lambda e: losses.tks_lambda(e, 100, 0.7))
        np.testing.assert_allclose(float(fn(jnp.int32(25))), 0.175, rtol=1e-6)
        np.testing.assert_allclose(float(losses.tks_lambda(jnp.int32(25), 100, 0.7)), 0.175)

    @parameterized.parameters(
        (0, 0, 0.7, "num_epochs must be a scalar >= 1"),
        (0, -5, 0.7, "num_epochs must be a scalar >= 1"),
        (0, 10, 1.5, r"peak must lie in \[0.0, 1.0\], got 1.5"),
        (0, 10, -0.1, r"peak must lie in \[0.0, 1.0\]"),
        (-1, 10, 0.7, r"epoch must be a scalar in \[0, num_epochs=10\]"),
        (11, 10, 0.7, r"epoch must be a scalar in \[0, num_epochs=10\]"),
    )
    def test_bad_input(self, epoch, num_epochs, peak, message):
        with pytest.raises(ValueError, match=message):
            losses.tks_lambda(epoch, num_epochs, peak)


# --------------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------------

ALL_LOSSES = {
    "mean_ce": losses.mean_ce,
    "label_smoothing": losses.label_smoothing,
    "tet": losses.tet,
    "tks": functools.partial(losses.tks, temperature=3.0, lam=0.5),
    "tks_teacher": functools.partial(losses.tks_teacher, temperature=3.0),
}


class BadInputTest(parameterized.TestCase):
    @parameterized.parameters(*ALL_LOSSES)
    def test_shape_dtype_and_label_errors(self, name):
        fn = ALL_LOSSES[name]
        z, y = _data(19, 3, 4, 5)
        with pytest.raises(ValueError, match=rf"{name}: logits must be time-major \[T, B, C\]"):
            fn(z[0], y)  # rank 2: forgot the time axis
        with pytest.raises(ValueError, match=r"rank 3"):
            fn(z[None], y)
        with pytest.raises(ValueError, match=r"batch sizes differ.*B = 4"):
            fn(z, y[:3])
        with pytest.raises(ValueError, match=r"labels must be integer class indices of shape"):
            fn(z, jax.nn.one_hot(y, 5).astype(jnp.int32))
        with pytest.raises(TypeError, match="labels must be an integer dtype"):
            fn(z, y.astype(np.float32))
        with pytest.raises(TypeError, match="logits must be floating point"):
            fn(z.astype(np.int32), y)
        with pytest.raises(
            ValueError, match=r"labels must lie in \[0, 4\].*got values in \[0, 5\]"
        ):
            fn(z, np.array([0, 1, 5, 2], np.int32))
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
            fn(z, np.array([0, -1, 2, 2], np.int32))
        with pytest.raises(ValueError, match=r"T, B, C >= 1"):
            fn(np.zeros((0, 4, 5), np.float32), y)

    @parameterized.parameters(0.0, -1.0, float("nan"), float("inf"))
    def test_bad_temperature(self, temperature):
        z, y = _data(20, 3, 4, 5)
        with pytest.raises(ValueError, match=r"tks: temperature must lie in \(0.0, inf\)"):
            losses.tks(z, y, temperature=temperature, lam=0.5)
        with pytest.raises(ValueError, match=r"tks_teacher: temperature must lie in"):
            losses.tks_teacher(z, y, temperature=temperature)

    @parameterized.parameters(-0.1, 1.1, float("nan"))
    def test_bad_lam(self, lam):
        z, y = _data(21, 3, 4, 5)
        with pytest.raises(ValueError, match=r"tks: lam must lie in \[0.0, 1.0\]"):
            losses.tks(z, y, temperature=3.0, lam=lam)
        with pytest.raises(ValueError, match=r"tks: lam must lie in"):
            losses.tks(z, y, temperature=3.0, lam=jnp.float32(lam))  # concrete array

    def test_bad_scalars_of_baselines(self):
        z, y = _data(22, 3, 4, 5)
        with pytest.raises(ValueError, match=r"smoothing must lie in \[0.0, 1.0\], got 1.5"):
            losses.label_smoothing(z, y, smoothing=1.5)
        with pytest.raises(ValueError, match=r"tet: lamb must lie in \[0.0, 1.0\]"):
            losses.tet(z, y, lamb=-0.5)
        with pytest.raises(ValueError, match="lam must be a scalar"):
            losses.tks(z, y, temperature=3.0, lam=np.array([0.1, 0.2]))

    def test_errors_are_static_under_jit(self):
        z, y = _data(23, 3, 4, 5)
        with pytest.raises(ValueError, match="batch sizes differ"):
            jax.jit(losses.mean_ce)(z, y[:2])
        # A traced out-of-range lam cannot be checked and must not break tracing.
        fn = jax.jit(lambda lam: losses.tks(z, y, temperature=3.0, lam=lam))
        self.assertTrue(np.isfinite(float(fn(jnp.float32(0.5)))))


# --------------------------------------------------------------------------------------------
# Per-example output and the where= mask.
# --------------------------------------------------------------------------------------------


def np_per_example(name, z, y, **kw):
    """Per-example references: each loss of a one-example batch."""
    ref = {"mean_ce": np_mean_ce, "label_smoothing": np_label_smoothing, "tet": np_tet,
           "tks": lambda z, y, temperature, lam: np_tks(z, y, temperature, lam)[0]}[name]
    return np.array([ref(z[:, b:b + 1], y[b:b + 1], *kw.values()) for b in range(len(y))])


PER_EXAMPLE = {
    "mean_ce": (losses.mean_ce, {}),
    "label_smoothing": (losses.label_smoothing, {"smoothing": 0.2}),
    "tet": (losses.tet, {"lamb": 0.3, "means": 0.5}),
    "tks": (losses.tks, {"temperature": 2.0, "lam": 0.6}),
}


class ReductionAndMaskTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*PER_EXAMPLE)
    def test_none_mean_and_where_against_numpy(self, name):
        fn, kw = PER_EXAMPLE[name]
        z, y = _data(30, 3, 6, 4)
        ref = np_per_example(name, z, y, **kw)
        mask = np.array([True, False, True, True, False, True])
        none = self.variant(lambda z, y: fn(z, y, reduction="none", **kw))(z, y)
        chex.assert_shape(none, (6,))
        np.testing.assert_allclose(np.asarray(none), ref, rtol=1e-5)
        mean = self.variant(lambda z, y: fn(z, y, **kw))(z, y)
        np.testing.assert_allclose(float(mean), ref.mean(), rtol=1e-5)
        masked = self.variant(lambda z, y, m: fn(z, y, where=m, **kw))(z, y, mask)
        np.testing.assert_allclose(float(masked), ref[mask].mean(), rtol=1e-5)
        masked_none = self.variant(
            lambda z, y, m: fn(z, y, where=m, reduction="none", **kw)
        )(z, y, mask)
        np.testing.assert_allclose(np.asarray(masked_none), np.where(mask, ref, 0.0), rtol=1e-5)

    @parameterized.parameters(*PER_EXAMPLE)
    def test_padded_batches_compose_to_the_dataset_mean(self, name):
        fn, kw = PER_EXAMPLE[name]
        z, y = _data(31, 2, 7, 5)
        full = float(fn(z, y, **kw))
        # Two batches of 4, the second padded with a copy of example 0 (mask False).
        pad_z = np.concatenate([z, z[:, :1]], axis=1)
        pad_y = np.concatenate([y, y[:1]])
        mask = np.arange(8) < 7
        total = sum(
            float(jnp.sum(fn(pad_z[:, s], pad_y[s], where=mask[s], reduction="none", **kw)))
            for s in (slice(0, 4), slice(4, 8))
        )
        np.testing.assert_allclose(total / 7, full, rtol=1e-5)
        # The padded example also drops out of the gradient.
        grad = jax.grad(lambda x: fn(x, pad_y[4:], where=mask[4:], **kw))(pad_z[:, 4:])
        np.testing.assert_array_equal(np.asarray(grad[:, 3]), 0.0)

    def test_tks_aux_is_the_mean_over_selected_examples(self):
        z, y = _data(32, 3, 5, 4)
        mask = np.array([True, True, False, True, False])
        _, aux = losses.tks(z, y, temperature=2.0, lam=0.5, where=mask, return_aux=True)
        _, ref_ce, ref_kd = np_tks(z[:, mask], y[mask], 2.0, 0.5)
        np.testing.assert_allclose(float(aux["ce"]), ref_ce, rtol=1e-5)
        np.testing.assert_allclose(float(aux["kd"]), ref_kd, rtol=1e-5)
        _, sub = losses.tks(z[:, mask], y[mask], temperature=2.0, lam=0.5, return_aux=True)
        np.testing.assert_allclose(np.asarray(aux["kd_per_step"]), np.asarray(sub["kd_per_step"]),
                                   rtol=1e-5)
        np.testing.assert_allclose(float(aux["teacher_fraction"]), float(sub["teacher_fraction"]))

    def test_nothing_selected_gives_nan_mean(self):
        z, y = _data(33, 2, 3, 4)
        value = losses.mean_ce(z, y, where=np.zeros(3, bool))
        self.assertTrue(np.isnan(float(value)))

    def test_bad_reduction_and_mask(self):
        z, y = _data(34, 2, 3, 4)
        with pytest.raises(ValueError, match=r"tet: reduction must be one of \('mean', 'none'\)"):
            losses.tet(z, y, reduction="sum")
        with pytest.raises(ValueError, match=r"where must be a boolean mask of shape \[B\]"):
            losses.mean_ce(z, y, where=np.ones(4, bool))
        with pytest.raises(ValueError, match=r"where must be a boolean mask.*dtype int32"):
            losses.tks(z, y, temperature=1.0, lam=0.5, where=np.ones(3, np.int32))


# --------------------------------------------------------------------------------------------
# Under jit: static shape checks always, invalid traced values give NaN or a checkify error.
# --------------------------------------------------------------------------------------------


class JitValueTest(parameterized.TestCase):
    def test_non_scalar_hyper_parameters_are_refused_under_jit(self):
        z, y = _data(40, 3, 4, 5)
        two = jnp.asarray([0.1, 0.2])
        cases = {
            "lam": lambda v: losses.tks(z, y, temperature=3.0, lam=v),
            "temperature": lambda v: losses.tks(z, y, temperature=v, lam=0.5),
            "smoothing": lambda v: losses.label_smoothing(z, y, smoothing=v),
            "lamb": lambda v: losses.tet(z, y, lamb=v),
            "means": lambda v: losses.tet(z, y, means=v),
        }
        for name, fn in cases.items():
            for call in (fn, jax.jit(fn)):  # eager and traced alike
                with pytest.raises(ValueError, match=rf"{name} must be a scalar, got an array of "
                                                     r"shape \(2,\)"):
                    call(two)
        with pytest.raises(ValueError, match="temperature must be a scalar"):
            jax.jit(lambda v: losses.tks_teacher(z, y, temperature=v))(two)

    def test_invalid_traced_values_give_nan(self):
        z, y = _data(41, 3, 4, 5)
        tks = jax.jit(lambda t, lam: losses.tks(z, y, temperature=t, lam=lam))
        self.assertTrue(np.isfinite(float(tks(3.0, 0.5))))
        for t, lam in ((0.0, 0.5), (-1.0, 0.5), (3.0, 1.5), (3.0, -0.1), (jnp.nan, 0.5)):
            self.assertTrue(np.isnan(float(tks(t, lam))), (t, lam))
        teacher = jax.jit(lambda t: losses.tks_teacher(z, y, temperature=t))(-2.0)
        self.assertTrue(np.all(np.isnan(np.asarray(teacher))))
        ls = jax.jit(lambda s: losses.label_smoothing(z, y, smoothing=s))
        self.assertTrue(np.isnan(float(ls(1.5))))
        tet = jax.jit(lambda lamb: losses.tet(z, y, lamb=lamb))
        self.assertTrue(np.isnan(float(tet(-0.5))))

    @parameterized.parameters(*PER_EXAMPLE)
    def test_out_of_range_traced_label_is_nan_for_its_example(self, name):
        fn, kw = PER_EXAMPLE[name]
        z, y = _data(42, 2, 4, 3)
        bad = np.array([0, 3, 1, -1], np.int32)  # C = 3: labels 3 and -1 are out of range
        per_example = jax.jit(lambda y: fn(z, y, reduction="none", **kw))(bad)
        np.testing.assert_array_equal(np.isnan(np.asarray(per_example)),
                                      [False, True, False, True])
        self.assertTrue(np.isnan(float(jax.jit(lambda y: fn(z, y, **kw))(bad))))
        # A masked-out (padding) example does not poison the mean.
        mask = np.array([True, False, True, False])
        value = jax.jit(lambda y: fn(z, y, where=mask, **kw))(bad)
        ref = np_per_example(name, z[:, [0, 2]], bad[[0, 2]], **kw).mean()
        np.testing.assert_allclose(float(value), ref, rtol=1e-5)

    def test_checked_stages_checkify_errors(self):
        from jax.experimental import checkify

        z, y = _data(43, 3, 4, 5)
        fn = checkify.checkify(jax.jit(
            lambda z, y, t, lam: losses.tks(z, y, temperature=t, lam=lam, checked=True)
        ))
        err, value = fn(z, y, 3.0, 0.5)
        self.assertIsNone(err.get())
        np.testing.assert_allclose(float(value), np_tks(z, y, 3.0, 0.5)[0], rtol=1e-5)
        err, _ = fn(z, y, -1.0, 0.5)
        with pytest.raises(checkify.JaxRuntimeError, match=r"tks: temperature must lie in "
                                                           r"\(0.0, inf\), got -1.0"):
            err.throw()
        err, _ = fn(z, y, 3.0, 1.5)
        self.assertIn("tks: lam must lie in [0.0, 1.0], got 1.5", err.get())
        err, _ = fn(z, np.array([0, 1, 9, 2], np.int32), 3.0, 0.5)
        self.assertIn("tks: labels must lie in [0, 4]", err.get())
        ls = checkify.checkify(jax.jit(
            lambda s: losses.label_smoothing(z, y, smoothing=s, checked=True)))
        self.assertIn("smoothing must lie in [0.0, 1.0], got 2.0", ls(2.0)[0].get())
        # Eager calls raise plain ValueErrors whether checked or not.
        with pytest.raises(ValueError, match="temperature must lie in"):
            losses.tks(z, y, temperature=-1.0, lam=0.5, checked=True)


# --------------------------------------------------------------------------------------------
# The lambda ramp as an optax-style schedule, and the docstring examples.
# --------------------------------------------------------------------------------------------


class TksLambdaScheduleTest(parameterized.TestCase):
    def test_matches_the_formula_and_tks_lambda(self):
        schedule = losses.tks_lambda_schedule(0.7, 600)
        values = np.array([schedule(e) for e in range(601)])
        self.assertEqual(values.dtype, np.float32)
        np.testing.assert_allclose(values, 0.7 * np.arange(601) / 600, rtol=1e-6)
        for e in (0, 17, 599):
            self.assertEqual(np.float32(losses.tks_lambda(e, 600, 0.7)), schedule(e))

    def test_optimizer_steps(self):
        schedule = losses.tks_lambda_schedule(0.3, 4, steps_per_epoch=10)
        expected = [0.3 * (s // 10) / 4 for s in range(40)]
        np.testing.assert_allclose([schedule(s) for s in range(40)], expected, rtol=1e-6)
        jitted = jax.jit(schedule)
        np.testing.assert_allclose([float(jitted(jnp.int32(s))) for s in (0, 9, 10, 39)],
                                   [0.0, 0.0, 0.075, 0.225], rtol=1e-6)

    def test_traced_epoch_and_out_of_range(self):
        schedule = jax.jit(losses.tks_lambda_schedule(0.7, 100))
        np.testing.assert_allclose(float(schedule(jnp.int32(25))), 0.175, rtol=1e-6)
        for bad in (-1, 101):
            self.assertTrue(np.isnan(float(schedule(jnp.int32(bad)))))
            with pytest.raises(ValueError, match=r"epoch must be a scalar in \[0, num_epochs=100"):
                losses.tks_lambda_schedule(0.7, 100)(bad)

    @parameterized.parameters(
        (1.5, 10, None, r"peak must lie in \[0.0, 1.0\], got 1.5"),
        (0.7, 0, None, "num_epochs must be a scalar >= 1"),
        (0.7, 10, 0, "steps_per_epoch must be an int >= 1"),
    )
    def test_bad_arguments(self, peak, num_epochs, steps_per_epoch, message):
        with pytest.raises(ValueError, match=message):
            losses.tks_lambda_schedule(peak, num_epochs, steps_per_epoch=steps_per_epoch)


def test_docstring_examples_run():
    import doctest

    from tks_jax import schedules

    for module in (losses, schedules):  # every public function has an Examples block
        result = doctest.testmod(module, raise_on_error=False, verbose=False)
        assert result.attempted >= 5 and result.failed == 0, module.__name__
