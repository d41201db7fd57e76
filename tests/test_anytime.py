"""Tests of tks_jax.anytime (exit rule, threshold sweep, calibration) against NumPy loops."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tks_jax import anytime

# --------------------------------------------------------------------------------------------
# References written with plain loops.
# --------------------------------------------------------------------------------------------


def np_softmax(v):
    e = np.exp(v - np.max(v))
    return e / e.sum()


def np_confidence(v, kind):
    if kind == "logit":
        return float(np.max(v))
    p = np.sort(np_softmax(v))[::-1]
    return float(p[0]) if kind == "softmax" else float(p[0] - p[1])


def np_predict(logits, threshold, kind):
    """The exit rule by a loop over samples and steps (float64)."""
    logits = np.asarray(logits, np.float64)
    t, b, _ = logits.shape
    preds, steps = [], []
    for j in range(b):
        total = np.zeros(logits.shape[-1])
        for k in range(1, t + 1):
            total = total + logits[k - 1, j]
            mean = total / k
            if np_confidence(mean, kind) >= threshold or k == t:
                preds.append(int(np.argmax(mean)))
                steps.append(k)
                break
    return np.array(preds), np.array(steps)


def np_calibrate(logits, labels, max_drop, kind):
    """Brute force: every distinct confidence value (and inf) as threshold, via np_predict."""
    t = logits.shape[0]
    means = np.cumsum(np.asarray(logits, np.float64), 0) / np.arange(1, t + 1)[:, None, None]
    values = {np_confidence(m, kind) for m in means.reshape(-1, means.shape[-1])}
    full_pred, _ = np_predict(logits, math.inf, kind)
    full_acc = np.mean(full_pred == labels)
    best = None
    for thr in sorted(values | {math.inf}):
        pred, steps = np_predict(logits, thr, kind)
        acc = np.mean(pred == labels)
        if acc >= full_acc - max_drop - 1e-12:
            key = (steps.mean(), -acc)
            if best is None or key < best[0]:
                best = (key, thr)
    return best[1], best[0][0], -best[0][1]


def _data(seed, t=5, b=40, c=4, scale=1.0):
    rng = np.random.default_rng(seed)
    # Logits that get sharper with k, as a trained anytime model's.
    z = rng.normal(size=(t, b, c)) * scale
    y = rng.integers(0, c, size=b)
    z[:, np.arange(b), y] += np.linspace(0.2, 1.5, t)[:, None]
    return z.astype(np.float32), y.astype(np.int32)


# --------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", anytime.CONFIDENCES)
@pytest.mark.parametrize("seed", [0, 1])
def test_predict_matches_loop(kind, seed):
    z, _ = _data(seed)
    means = np.cumsum(z.astype(np.float64), 0) / np.arange(1, 6)[:, None, None]
    confs = np.array([[np_confidence(means[k, j], kind) for j in range(z.shape[1])]
                      for k in range(z.shape[0])])
    # Thresholds between the observed values (avoid float32-vs-float64 ties at the boundary).
    for thr in np.quantile(confs, [0.1, 0.4, 0.7, 0.95]) + 1e-4:
        pred, steps = anytime.predict(z, float(thr), kind)
        ref_pred, ref_steps = np_predict(z, thr, kind)
        np.testing.assert_array_equal(np.asarray(steps), ref_steps)
        np.testing.assert_array_equal(np.asarray(pred), ref_pred)


def test_predict_hand_case():
    # Sample 0: step 1 mean [2, 0] -> softmax 0.881 >= 0.8: stops at 1, class 0.
    # Sample 1: step 1 [0, 0] (0.5), step 2 mean [0, 1] (0.731), step 3 mean [0, 2] (0.881):
    #   stops at 3, class 1.
    # Sample 2: never sure ([0, 0] throughout): T = 3, class 0 (first maximum on the tie).
    z = np.zeros((3, 3, 2), np.float32)
    z[0, 0] = [2.0, 0.0]
    z[1, 0] = [2.0, 0.0]
    z[2, 0] = [-9.0, 9.0]
    z[1, 1] = [0.0, 2.0]
    z[2, 1] = [0.0, 4.0]
    pred, steps = anytime.predict(z, 0.8, "softmax")
    np.testing.assert_array_equal(np.asarray(steps), [1, 3, 3])
    np.testing.assert_array_equal(np.asarray(pred), [0, 1, 0])
    # Max logit: sample 1's running means have max 0, 1, 2 -> threshold 1 stops it at 2.
    pred, steps = anytime.predict(z, 1.0, "logit")
    np.testing.assert_array_equal(np.asarray(steps), [1, 2, 3])
    np.testing.assert_array_equal(np.asarray(pred), [0, 1, 0])
    # Margin at step 1 of sample 0: 0.881 - 0.119 = 0.762.
    _, steps = anytime.predict(z, 0.76, "margin")
    assert int(steps[0]) == 1
    _, steps = anytime.predict(z, 0.77, "margin")
    # Step 2 has the same mean [2, 0] (0.762); step 3's mean [-5/3, 3] has margin 0.981.
    assert int(steps[0]) == 3


def test_predict_threshold_edges():
    z, _ = _data(3)
    _, conf = anytime.running_confidence(z, "softmax")
    pred_t, steps = anytime.predict(z, float(np.max(conf)) + 1e-3, "softmax")
    np.testing.assert_array_equal(np.asarray(steps), 5)  # above all -> T
    np.testing.assert_array_equal(np.asarray(pred_t), np.argmax(z.mean(0), -1))
    pred_1, steps = anytime.predict(z, float(np.min(conf)), "softmax")
    np.testing.assert_array_equal(np.asarray(steps), 1)  # at or below all -> 1
    np.testing.assert_array_equal(np.asarray(pred_1), np.argmax(z[0], -1))
    _, steps = anytime.predict(z, math.inf, "softmax")
    np.testing.assert_array_equal(np.asarray(steps), 5)
    _, steps = anytime.predict(z, -math.inf, "logit")
    np.testing.assert_array_equal(np.asarray(steps), 1)


def test_predict_equality_counts_as_sure():
    # Confidence exactly equal to the threshold stops (>=): max logit 0.5 at step 1.
    z = np.array([[[0.5, 0.25]], [[0.5, 0.25]]], np.float32)
    _, steps = anytime.predict(z, 0.5, "logit")
    assert int(steps[0]) == 1
    _, steps = anytime.predict(z, np.nextafter(np.float32(0.5), np.float32(1)), "logit")
    assert int(steps[0]) == 2


def test_predict_single_step():
    z, _ = _data(4, t=1)
    pred, steps = anytime.predict(z, 0.99, "softmax")
    np.testing.assert_array_equal(np.asarray(steps), 1)
    np.testing.assert_array_equal(np.asarray(pred), np.argmax(z[0], -1))


def test_predict_jit_and_vmap():
    z, _ = _data(5)
    pred, steps = anytime.predict(z, 0.6, "margin")
    jp, js = jax.jit(anytime.predict, static_argnums=2)(z, jnp.float32(0.6), "margin")
    np.testing.assert_array_equal(np.asarray(jp), np.asarray(pred))
    np.testing.assert_array_equal(np.asarray(js), np.asarray(steps))
    # vmap over thresholds.
    thrs = jnp.array([0.3, 0.6, 0.9])
    vp, vs = jax.vmap(lambda t: anytime.predict(z, t, "margin"))(thrs)
    for i, t in enumerate([0.3, 0.6, 0.9]):
        rp, rs = anytime.predict(z, t, "margin")
        np.testing.assert_array_equal(np.asarray(vs[i]), np.asarray(rs))
        np.testing.assert_array_equal(np.asarray(vp[i]), np.asarray(rp))


@pytest.mark.parametrize(
    "logits, kwargs, match",
    [
        (np.zeros((3, 2), np.float32), {}, r"\[T, B, C\]"),
        (np.zeros((0, 2, 3), np.float32), {}, r"\[T, B, C\]"),
        (np.zeros((2, 2, 3), np.float32), {"confidence": "entropy"}, "confidence must be"),
        (np.zeros((2, 2, 1), np.float32), {"confidence": "margin"}, "at least 2"),
    ],
)
def test_predict_bad_input(logits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        anytime.predict(logits, 0.5, **kwargs)


def test_predict_integer_logits_rejected():
    with pytest.raises(TypeError, match="floating"):
        anytime.predict(np.zeros((2, 2, 3), np.int32), 0.5)


# --------------------------------------------------------------------------------------------
# threshold_sweep and calibrate
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", anytime.CONFIDENCES)
def test_sweep_matches_predict_at_every_threshold(kind):
    z, y = _data(6, b=25)
    sweep = anytime.threshold_sweep(z, y, kind)
    assert sweep["threshold"][0] == math.inf
    assert np.all(np.diff(sweep["threshold"]) < 0)
    for thr, ms, acc in zip(sweep["threshold"], sweep["mean_steps"], sweep["accuracy"],
                            strict=True):
        pred, steps = anytime.predict(z, float(thr), kind)
        assert float(np.mean(np.asarray(steps))) == pytest.approx(ms)
        assert float(np.mean(np.asarray(pred) == y)) == pytest.approx(acc)
    # Mean steps fall (weakly) as the threshold falls; the lowest threshold stops all at 1.
    assert np.all(np.diff(sweep["mean_steps"]) <= 0)
    assert sweep["mean_steps"][-1] == 1.0


@pytest.mark.parametrize("kind", anytime.CONFIDENCES)
@pytest.mark.parametrize("max_drop", [0.0, 0.05, 0.2])
def test_calibrate_matches_brute_force(kind, max_drop):
    z, y = _data(7, b=30, scale=1.5)
    thr = anytime.calibrate(z, y, max_drop=max_drop, confidence=kind)
    _, ref_steps, ref_acc = np_calibrate(z, y, max_drop, kind)
    pred, steps = anytime.predict(z, thr, kind)
    assert float(np.mean(np.asarray(steps))) == pytest.approx(ref_steps)
    assert float(np.mean(np.asarray(pred) == y)) == pytest.approx(ref_acc)
    full = np.mean(np.argmax(z.mean(0), -1) == y)
    assert float(np.mean(np.asarray(pred) == y)) >= full - max_drop - 1e-12


def test_calibrate_hand_case():
    # Two samples, T = 2, C = 2, max-logit confidence.
    # Sample 0 (label 0): means [3, 0] then [3, 0]: right at step 1 with confidence 3.
    # Sample 1 (label 1): step 1 [1, 0] (wrong, conf 1), step 2 mean [1, 2] (right, conf 2).
    z = np.array([[[3, 0], [1, 0]], [[3, 0], [1, 4]]], np.float32)
    y = np.array([0, 1])
    # Full T: both right. Threshold in (1, 3] stops sample 0 at 1 and sample 1 at 2 (1.5 mean
    # steps, both right); <= 1 stops both at 1 (sample 1 wrong).
    thr = anytime.calibrate(z, y, max_drop=0.0, confidence="logit")
    assert 2.0 < thr <= 3.0  # midpoint between the records 3 and 2: 2.5
    assert thr == 2.5
    pred, steps = anytime.predict(z, thr, "logit")
    np.testing.assert_array_equal(np.asarray(steps), [1, 2])
    # Allowing a 50-point drop buys the single-step rule.
    thr = anytime.calibrate(z, y, max_drop=0.5, confidence="logit")
    _, steps = anytime.predict(z, thr, "logit")
    np.testing.assert_array_equal(np.asarray(steps), [1, 1])


def test_calibrate_never_exits_returns_inf():
    # Step 1 is always wrong and as confident as step 2: only T keeps the accuracy.
    z = np.array([[[2, 0]], [[-4, 4]]], np.float32)  # means [2, 0] then [-1, 2]
    y = np.array([1])
    assert anytime.calibrate(z, y, max_drop=0.0, confidence="softmax") == math.inf


def test_calibrate_ties_in_confidence():
    # All samples share the same confidence: either all exit at 1 or none does.
    z = np.tile(np.array([[[2.0, 0.0]]], np.float32), (3, 4, 1))
    y = np.array([0, 0, 1, 0])
    thr = anytime.calibrate(z, y, max_drop=0.0)
    _, steps = anytime.predict(z, thr)
    np.testing.assert_array_equal(np.asarray(steps), 1)  # same accuracy at 1 as at T


@pytest.mark.parametrize(
    "labels, kwargs, match",
    [
        (np.array([0, 1]), {}, "labels must be integer"),
        (np.array([0, 1, 5]), {}, "must lie in"),
        (np.array([0.0, 1.0, 1.0]), {}, "labels must be integer"),
        (np.array([0, 1, 1]), {"max_drop": -0.1}, "max_drop"),
        (np.array([0, 1, 1]), {"max_drop": float("nan")}, "max_drop"),
    ],
)
def test_calibrate_bad_input(labels, kwargs, match):
    z, _ = _data(8, b=3, c=3)
    with pytest.raises(ValueError, match=match):
        anytime.calibrate(z, labels, **kwargs)


def test_calibrate_non_finite_logits():
    z, y = _data(9, b=3)
    z[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        anytime.calibrate(z, y)


def test_summarize():
    s = anytime.summarize(np.array([1, 1, 2, 4]), np.array([0, 1, 1, 2]), np.array([0, 1, 0, 2]))
    assert s["accuracy"] == 0.75
    assert s["mean_steps"] == 2.0
    assert s["median_steps"] == 1.5
    assert s["p90_steps"] == pytest.approx(np.percentile([1, 1, 2, 4], 90))
