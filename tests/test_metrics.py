"""Tests of tks_jax.metrics against NumPy / brute-force references (docs/method.md §10)."""

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from tks_jax import metrics

# --------------------------------------------------------------------------------------------
# References.
# --------------------------------------------------------------------------------------------


def _data(seed, num_steps, batch, num_classes, scale=1.0):
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(num_steps, batch, num_classes)) * scale).astype(np.float32)
    y = rng.integers(0, num_classes, size=batch).astype(np.int32)
    return z, y


def np_first_argmax(v):
    """Index of the first maximum of a 1-D vector, by a plain loop."""
    best = 0
    for i in range(1, len(v)):
        if v[i] > v[best]:
            best = i
    return best


def risks_of_order(order, correct):
    """Risk at coverage i/n for a given ranking (loop)."""
    risks, errors = [], 0
    for i, idx in enumerate(order, start=1):
        errors += 0 if correct[idx] else 1
        risks.append(errors / i)
    return np.array(risks)


def brute_aurc(confidence, correct, ties):
    """AURC by brute force: 'stable' sorts with Python's stable sort; 'average' enumerates
    every permutation ranking by confidence (descending) and averages their AURC."""
    n = len(confidence)
    if ties == "stable":
        order = sorted(range(n), key=lambda i: -confidence[i])
        return risks_of_order(order, correct).mean()
    values = []
    for perm in itertools.permutations(range(n)):
        if all(confidence[perm[i]] >= confidence[perm[i + 1]] for i in range(n - 1)):
            values.append(risks_of_order(perm, correct).mean())
    return np.mean(values)


def brute_optimal_aurc(correct):
    """Minimum AURC over every permutation of the samples."""
    n = len(correct)
    return min(risks_of_order(p, correct).mean() for p in itertools.permutations(range(n)))


def np_softmax_max(scores):
    s = np.asarray(scores, np.float64)
    e = np.exp(s - s.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).max(-1)


# --------------------------------------------------------------------------------------------
# Accuracies.
# --------------------------------------------------------------------------------------------


class AccuracyTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((1, 7, 4), (5, 9, 3), (3, 6, 10))
    def test_per_step_and_first_k(self, num_steps, batch, num_classes):
        z, y = _data(0, num_steps, batch, num_classes)
        per_step = self.variant(metrics.per_step_accuracy)(z, y)
        first_k = self.variant(metrics.first_k_accuracy)(z, y)
        chex.assert_shape([per_step, first_k], (num_steps,))
        chex.assert_type([per_step, first_k], jnp.float32)
        ref_step = [
            np.mean([np_first_argmax(z[t, b]) == y[b] for b in range(batch)])
            for t in range(num_steps)
        ]
        ref_first = []
        for k in range(1, num_steps + 1):
            mean_k = z[:k].astype(np.float64).mean(axis=0)
            ref_first.append(np.mean([np_first_argmax(mean_k[b]) == y[b] for b in range(batch)]))
        np.testing.assert_allclose(np.asarray(per_step), ref_step, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(first_k), ref_first, rtol=1e-6)
        # Entry 0 of first_k is step 0 alone; the last entry is the usual top-1.
        np.testing.assert_allclose(float(first_k[0]), float(per_step[0]))
        np.testing.assert_allclose(float(first_k[-1]), float(metrics.top_k_accuracy(z, y)))

    def test_first_k_hand_case(self):
        # Sample of label 1: step 0 says 0, step 1 strongly says 1; the mean of 2 steps says 1.
        z = np.array([[[1.0, 0.0]], [[0.0, 3.0]], [[1.5, 0.0]]], np.float32)
        y = np.array([1], np.int32)
        np.testing.assert_array_equal(np.asarray(metrics.per_step_accuracy(z, y)), [0, 1, 0])
        np.testing.assert_array_equal(np.asarray(metrics.first_k_accuracy(z, y)), [0, 1, 1])
        # With 2.0 at the last step the 3-step mean ties (1, 1): the first index (0) wins.
        z[2, 0, 0] = 2.0
        np.testing.assert_array_equal(np.asarray(metrics.first_k_accuracy(z, y)), [0, 1, 0])

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(1, 2, 3, 5)
    def test_top_k(self, k):
        z, y = _data(1, 3, 20, 5)
        value = self.variant(functools.partial(metrics.top_k_accuracy, k=k))(z, y)
        mean = z.astype(np.float64).mean(0)
        # Independent ranking: stable sort of -score, so equal scores keep the lower index first.
        ref = np.mean([y[b] in np.argsort(-mean[b], kind="stable")[:k] for b in range(20)])
        np.testing.assert_allclose(float(value), ref, rtol=1e-6)
        if k == 5:
            self.assertEqual(float(value), 1.0)

    def test_top_k_ties_go_to_the_lower_index(self):
        scores = np.array([[1.0, 1.0, 1.0, 0.0]] * 3, np.float32)  # [B, C] scores
        y = np.array([0, 0, 1], np.int32)
        # Ranking 0, 1, 2, 3: top-1 = {0}, top-2 = {0, 1}.
        np.testing.assert_allclose(float(metrics.top_k_accuracy(scores, y, k=1)), 2 / 3)
        np.testing.assert_allclose(float(metrics.top_k_accuracy(scores, y, k=2)), 1.0)
        y = np.array([2, 3, 1], np.int32)
        np.testing.assert_allclose(float(metrics.top_k_accuracy(scores, y, k=2)), 1 / 3)
        np.testing.assert_allclose(float(metrics.top_k_accuracy(scores, y, k=3)), 2 / 3)

    def test_scores_and_logits_give_the_same_answer(self):
        z, y = _data(2, 4, 12, 6)
        mean = jnp.mean(jnp.asarray(z), axis=0)
        for fn in (
            metrics.top_k_accuracy,
            metrics.per_class_accuracy,
            metrics.aurc,
            metrics.aurc_optimal,
        ):
            np.testing.assert_allclose(np.asarray(fn(z, y)), np.asarray(fn(mean, y)), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_per_class(self):
        z, y = _data(3, 3, 30, 5)
        y[y == 4] = 0  # class 4 has no sample -> NaN
        value = self.variant(functools.partial(metrics.per_class_accuracy, num_classes=5))(z, y)
        chex.assert_shape(value, (5,))
        pred = [np_first_argmax(v) for v in z.astype(np.float64).mean(0)]
        for c in range(4):
            members = [b for b in range(30) if y[b] == c]
            self.assertTrue(members)
            expected = np.mean([pred[b] == c for b in members])
            np.testing.assert_allclose(float(value[c]), expected, rtol=1e-6)
        self.assertTrue(np.isnan(float(value[4])))

    def test_bf16_logits(self):
        z, y = _data(4, 3, 16, 4)
        z16 = jnp.asarray(z, jnp.bfloat16)
        z_seen = np.asarray(z16, np.float32)
        for fn in (metrics.per_step_accuracy, metrics.first_k_accuracy, metrics.top_k_accuracy):
            out = fn(z16, y)
            chex.assert_type(out, jnp.float32)
            np.testing.assert_allclose(np.asarray(out), np.asarray(fn(z_seen, y)), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# AURC.
# --------------------------------------------------------------------------------------------


class AurcTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(seed=[0, 1, 2], ties=["average", "stable"])
    def test_risk_coverage_curve_against_brute_force(self, seed, ties):
        rng = np.random.default_rng(seed)
        n = 7
        # Few distinct values -> many ties, the case where 'average' and 'stable' differ.
        confidence = rng.integers(0, 3, size=n).astype(np.float32)
        correct = rng.random(n) < 0.5
        fn = self.variant(functools.partial(metrics.risk_coverage_curve, ties=ties))
        risks = fn(confidence, correct)
        chex.assert_shape(risks, (n,))
        np.testing.assert_allclose(
            float(jnp.mean(risks)), brute_aurc(confidence, correct, ties), rtol=1e-6
        )
        if ties == "stable":
            order = sorted(range(n), key=lambda i: -confidence[i])
            np.testing.assert_allclose(np.asarray(risks), risks_of_order(order, correct), rtol=1e-6)

    def test_average_ties_do_not_depend_on_the_order(self):
        confidence = np.array([2.0, 1.0, 2.0, 1.0, 2.0, 0.0], np.float32)
        correct = np.array([1, 0, 0, 1, 1, 0], bool)
        perm = np.array([5, 2, 0, 4, 3, 1])
        curve = functools.partial(metrics.risk_coverage_curve, ties="average")
        np.testing.assert_allclose(
            np.asarray(curve(confidence, correct)),
            np.asarray(curve(confidence[perm], correct[perm])),
            rtol=1e-6,
        )
        stable = functools.partial(metrics.risk_coverage_curve, ties="stable")
        self.assertFalse(
            np.allclose(
                np.asarray(stable(confidence, correct)),
                np.asarray(stable(confidence[perm], correct[perm])),
            )
        )

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(confidence=["logit", "softmax"], ties=["average", "stable"])
    def test_aurc_against_brute_force(self, confidence, ties):
        scores = np.array(
            [
                [2.0, 0.5, 0.1],  # confident, correct (label 0)
                [1.0, 1.2, 0.0],  # label 0: wrong
                [0.3, 0.2, 3.0],  # label 2: correct, highest logit
                [4.0, 3.9, 3.8],  # label 1: wrong; high logit but low softmax
                [0.0, 0.9, 0.1],  # label 1: correct
                [0.5, 0.5, 0.4],  # label 0: correct (tie -> first index)
            ],
            np.float32,
        )
        labels = np.array([0, 0, 2, 1, 1, 0], np.int32)
        fn = self.variant(functools.partial(metrics.aurc, confidence=confidence, ties=ties))
        value = fn(scores, labels)
        chex.assert_shape(value, ())
        chex.assert_type(value, jnp.float32)
        correct = np.array([np_first_argmax(s) == t for s, t in zip(scores, labels, strict=True)])
        np.testing.assert_array_equal(correct, [1, 0, 1, 0, 1, 1])
        conf = scores.max(-1) if confidence == "logit" else np_softmax_max(scores)
        np.testing.assert_allclose(float(value), brute_aurc(conf, correct, ties), rtol=1e-6)

    def test_logit_and_softmax_confidence_differ(self):
        # The wrong sample has the largest max-logit but the smallest max-softmax.
        scores = np.array([[4.0, 3.9, 3.8], [2.0, 0.0, 0.0], [0.0, 1.5, 0.0]], np.float32)
        labels = np.array([1, 0, 1], np.int32)
        logit = float(metrics.aurc(scores, labels, confidence="logit"))
        soft = float(metrics.aurc(scores, labels, confidence="softmax"))
        np.testing.assert_allclose(logit, np.mean([1, 1 / 2, 1 / 3]), rtol=1e-6)
        np.testing.assert_allclose(soft, np.mean([0, 0, 1 / 3]), rtol=1e-6)

    @parameterized.parameters(0, 1, 2, 3)
    def test_perfect_ranking_gives_optimal_aurc(self, seed):
        rng = np.random.default_rng(seed)
        n, num_classes = 7, 4
        labels = rng.integers(0, num_classes, size=n).astype(np.int32)
        correct = rng.random(n) < 0.6
        correct[:2] = [True, False]  # at least one of each

        def make_scores(correct_high):
            # The winning class gets a high (5..6) or low (1..2) score: correct samples win with
            # their label, wrong ones with another class.
            scores = np.zeros((n, num_classes), np.float32)
            for b in range(n):
                high = correct[b] == correct_high
                winner = labels[b] if correct[b] else (labels[b] + 1) % num_classes
                scores[b, winner] = (5.0 if high else 1.0) + rng.random()
            return scores

        perfect = make_scores(correct_high=True)  # every correct sample ranked first
        optimal = float(metrics.aurc_optimal(perfect, labels))
        np.testing.assert_allclose(optimal, brute_optimal_aurc(correct), rtol=1e-6, atol=1e-7)
        for confidence in ("logit", "softmax"):
            value = float(metrics.aurc(perfect, labels, confidence=confidence))
            np.testing.assert_allclose(value, optimal, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(
                float(metrics.excess_aurc(perfect, labels, confidence=confidence)), 0.0, atol=1e-6
            )
        # Errors ranked first: the worst AURC of all orders, strictly above the optimum.
        worst = make_scores(correct_high=False)
        self.assertEqual(float(metrics.aurc_optimal(worst, labels)), optimal)
        worst_brute = max(
            risks_of_order(p, correct).mean() for p in itertools.permutations(range(n))
        )
        np.testing.assert_allclose(float(metrics.aurc(worst, labels)), worst_brute, rtol=1e-6)
        self.assertGreater(worst_brute, optimal)

    def test_optimal_aurc_closed_form_and_extremes(self):
        # N = 4 with one error: risks at i = 1..4 are 0, 0, 0, 1/4.
        scores = np.eye(4, dtype=np.float32)
        labels = np.array([0, 1, 2, 0], np.int32)
        np.testing.assert_allclose(float(metrics.aurc_optimal(scores, labels)), 1 / 16)
        all_right = np.arange(4, dtype=np.int32)
        self.assertEqual(float(metrics.aurc(scores, all_right)), 0.0)
        self.assertEqual(float(metrics.aurc_optimal(scores, all_right)), 0.0)
        all_wrong = np.array([1, 2, 3, 0], np.int32)
        self.assertEqual(float(metrics.aurc(scores, all_wrong)), 1.0)
        self.assertEqual(float(metrics.aurc_optimal(scores, all_wrong)), 1.0)

    def test_excess_aurc_is_non_negative(self):
        for seed in range(3):
            z, y = _data(10 + seed, 2, 40, 3)
            value = float(metrics.excess_aurc(z, y))
            self.assertGreaterEqual(value, -1e-7)
            np.testing.assert_allclose(
                value,
                float(metrics.aurc(z, y)) - float(metrics.aurc_optimal(z, y)),
                atol=1e-7,
            )


# --------------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------------


class BadInputTest(parameterized.TestCase):
    def test_errors(self):
        z, y = _data(20, 3, 4, 5)
        with pytest.raises(ValueError, match=r"per_step_accuracy: logits must be time-major"):
            metrics.per_step_accuracy(z[0], y)
        with pytest.raises(ValueError, match=r"first_k_accuracy: logits must be time-major"):
            metrics.first_k_accuracy(z[None], y)
        with pytest.raises(ValueError, match=r"aurc: expected per-step logits \[T, B, C\]"):
            metrics.aurc(z[0, 0], y)
        with pytest.raises(ValueError, match=r"batch sizes differ.*B = 4"):
            metrics.top_k_accuracy(z, y[:2])
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\].*\[0, 7\]"):
            metrics.per_step_accuracy(z, np.array([0, 1, 7, 2], np.int32))
        with pytest.raises(TypeError, match="labels must be an integer dtype"):
            metrics.top_k_accuracy(z, y.astype(np.float32))
        with pytest.raises(TypeError, match="must be floating point"):
            metrics.aurc(z.astype(np.int32), y)
        with pytest.raises(ValueError, match=r"k must be an int in \[1, C=5\], got 0"):
            metrics.top_k_accuracy(z, y, k=0)
        with pytest.raises(ValueError, match=r"k must be an int in \[1, C=5\], got 6"):
            metrics.top_k_accuracy(z, y, k=6)
        with pytest.raises(ValueError, match=r"confidence must be one of \('logit', 'softmax'\)"):
            metrics.aurc(z, y, confidence="entropy")
        with pytest.raises(ValueError, match=r"ties must be one of"):
            metrics.aurc(z, y, ties="random")
        with pytest.raises(ValueError, match=r"num_classes=10 but the scores have C = 5"):
            metrics.per_class_accuracy(z, y, num_classes=10)
        with pytest.raises(ValueError, match=r"same length"):
            metrics.risk_coverage_curve(np.zeros(3, np.float32), np.zeros(4, bool))

    def test_static_options_under_jit(self):
        z, y = _data(21, 3, 4, 5)
        fn = jax.jit(metrics.aurc, static_argnames=("confidence", "ties"))
        np.testing.assert_allclose(
            float(fn(z, y, confidence="softmax")),
            float(metrics.aurc(z, y, confidence="softmax")),
            rtol=1e-6,
        )
        top2 = jax.jit(metrics.top_k_accuracy, static_argnums=2)
        np.testing.assert_allclose(float(top2(z, y, 2)), float(metrics.top_k_accuracy(z, y, 2)))


# --------------------------------------------------------------------------------------------
# Predictions, accuracies of predictions and the where= mask.
# --------------------------------------------------------------------------------------------


class PredictionsAndMaskTest(chex.TestCase):
    def test_predictions_against_loops(self):
        z, y = _data(30, 4, 6, 5)
        step = np.asarray(metrics.per_step_predictions(z))
        firstk = np.asarray(metrics.first_k_predictions(z))
        for t in range(4):
            for b in range(6):
                self.assertEqual(step[t, b], np_first_argmax(z[t, b]))
                self.assertEqual(firstk[t, b], np_first_argmax(z[: t + 1, b].mean(0)))
        self.assertEqual(step.dtype, np.int32)

    def test_accuracy_and_class_accuracy_of_predictions(self):
        pred = np.array([[0, 1, 2, 2, 1], [0, 0, 2, 1, 1]], np.int32)
        y = np.array([0, 1, 2, 1, 0], np.int32)
        np.testing.assert_allclose(np.asarray(metrics.accuracy(pred, y)), [3 / 5, 3 / 5])
        np.testing.assert_allclose(float(metrics.accuracy(pred[0], y)), 3 / 5)
        # class 0: examples 0, 4 -> 1 of 2 right; class 1: examples 1, 3 -> 1 of 2; class 2: 1/1.
        np.testing.assert_allclose(np.asarray(metrics.class_accuracy(pred[0], y, 4)),
                                   [0.5, 0.5, 1.0, np.nan])
        mask = np.array([True, True, True, False, False])
        np.testing.assert_allclose(np.asarray(metrics.class_accuracy(pred[0], y, 3, where=mask)),
                                   [1.0, 1.0, 1.0])
        with pytest.raises(ValueError, match="predictions must be integer class indices"):
            metrics.accuracy(np.zeros((2, 5), np.float32), y)
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\] for C = 2"):
            metrics.class_accuracy(pred[0], y, 2)

    @chex.variants(with_jit=True, without_jit=True)
    def test_where_equals_the_metric_of_the_selected_examples(self):
        z, y = _data(31, 3, 9, 4)
        mask = np.array([1, 0, 1, 1, 0, 1, 1, 0, 1], bool)
        sub_z, sub_y = z[:, mask], y[mask]
        cases = (
            (metrics.top_k_accuracy, {}), (metrics.top_k_accuracy, {"k": 2}),
            (metrics.per_step_accuracy, {}), (metrics.first_k_accuracy, {}),
            (metrics.per_class_accuracy, {}),
        )
        for fn, kw in cases:
            masked = self.variant(lambda z, y, m, fn=fn, kw=kw: fn(z, y, where=m, **kw))
            np.testing.assert_allclose(np.asarray(masked(z, y, mask)),
                                       np.asarray(fn(sub_z, sub_y, **kw)), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Non-finite logits and out-of-range labels: ValueError when concrete, NaN when traced.
# --------------------------------------------------------------------------------------------

LOGIT_METRICS = {
    "top_k_accuracy": metrics.top_k_accuracy,
    "per_step_accuracy": metrics.per_step_accuracy,
    "first_k_accuracy": metrics.first_k_accuracy,
    "per_class_accuracy": metrics.per_class_accuracy,
    "aurc": metrics.aurc,
    "aurc_optimal": metrics.aurc_optimal,
    "excess_aurc": metrics.excess_aurc,
}


class NonFiniteTest(parameterized.TestCase):
    @parameterized.parameters(*LOGIT_METRICS)
    def test_concrete_non_finite_logits_raise(self, name):
        fn = LOGIT_METRICS[name]
        z, y = _data(40, 3, 5, 4)
        for bad in (np.nan, np.inf):
            z_bad = z.copy()
            z_bad[1, 2, 0] = bad
            with pytest.raises(ValueError, match=r"logits/scores of 1 example\(s\) are not "
                                                 r"finite.*first at index 2"):
                fn(z_bad, y)
        with pytest.raises(ValueError, match=r"of 5 example\(s\) are not finite"):
            fn(np.full_like(z, np.nan), y)  # an all-NaN (diverged) model

    @parameterized.parameters(*LOGIT_METRICS)
    def test_traced_non_finite_logits_and_bad_labels_give_nan(self, name):
        fn = jax.jit(LOGIT_METRICS[name])
        z, _ = _data(41, 3, 5, 4)
        y = np.array([0, 1, 2, 3, 0], np.int32)  # every class present: per-class is finite
        self.assertTrue(np.all(np.isfinite(np.asarray(fn(z, y)))))
        z_bad = z.copy()
        z_bad[0, 3, 1] = np.nan
        self.assertTrue(np.all(np.isnan(np.asarray(fn(z_bad, y)))))
        self.assertTrue(np.all(np.isnan(np.asarray(fn(z, np.array([0, 1, 4, 2, 3], np.int32))))))

    def test_masked_out_non_finite_rows_are_ignored(self):
        z, y = _data(42, 3, 5, 4)
        z_bad = z.copy()
        z_bad[:, 4] = np.nan  # padding row with garbage
        mask = np.array([True, True, True, True, False])
        np.testing.assert_allclose(float(metrics.top_k_accuracy(z_bad, y, where=mask)),
                                   float(metrics.top_k_accuracy(z[:, :4], y[:4])))
        np.testing.assert_allclose(
            np.asarray(jax.jit(metrics.first_k_accuracy)(z_bad, y, where=mask)),
            np.asarray(metrics.first_k_accuracy(z[:, :4], y[:4])))

    def test_risk_coverage_curve_refuses_non_finite_confidence(self):
        conf = np.array([0.5, np.nan, 0.2], np.float32)
        correct = np.array([True, False, True])
        with pytest.raises(ValueError, match="risk_coverage_curve: .* not finite"):
            metrics.risk_coverage_curve(conf, correct)
        curve = jax.jit(metrics.risk_coverage_curve)(conf, correct)
        self.assertTrue(np.all(np.isnan(np.asarray(curve))))


def test_docstring_examples_run():
    import doctest

    from tks_jax import selective

    for module in (metrics, selective):  # every public function has an Examples block
        result = doctest.testmod(module, raise_on_error=False, verbose=False)
        assert result.attempted >= 8 and result.failed == 0, module.__name__
