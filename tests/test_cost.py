"""Tests of tks_jax.cost: exact fan-out, synaptic operations, MACs and energy on tiny networks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tks_jax import cost, models
from tks_jax.models import layers
from tks_jax.training.build import init_variables


def np_synops_per_output(x, k, s, cout):
    """Reference: for every output position, count the nonzero inputs in its window (loops).

    x: [H, W, C] of one step and image; padding k // 2.
    """
    h, w, _ = x.shape
    p = k // 2
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    nonzero = np.count_nonzero(x, axis=-1)
    total = 0
    for oi in range(ho):
        for oj in range(wo):
            i0, j0 = oi * s - p, oj * s - p  # the window, clipped to the map
            total += int(nonzero[max(i0, 0):i0 + k, max(j0, 0):j0 + k].sum())
    return cout * total


def test_fanout_hand_values():
    # 3x3, stride 1, pad 1 on 4 positions: borders reach 2 outputs, inner ones 3.
    np.testing.assert_array_equal(cost.fanout_1d(4, 3, 1, 1), [2, 3, 3, 2])
    # 3x3, stride 2, pad 1 on 4 positions (outputs 0, 1 at centres 0, 2):
    # h=0: (o0,i1); h=1: (o0,i2), (o1,i0); h=2: (o1,i1); h=3: (o1,i2).
    np.testing.assert_array_equal(cost.fanout_1d(4, 3, 2, 1), [1, 2, 1, 1])
    # 1x1 stride 2 on 5: outputs at 0, 2, 4.
    np.testing.assert_array_equal(cost.fanout_1d(5, 1, 2, 0), [1, 0, 1, 0, 1])
    # 7x7 stride 2 pad 3 on 4: outputs 0, 1 (centres 0, 2): every h within 3 of a centre.
    np.testing.assert_array_equal(cost.fanout_1d(4, 7, 2, 3), [2, 2, 2, 2])
    np.testing.assert_array_equal(cost.conv_fanout(2, 3, 3, 1, 1), [[4, 6, 4], [4, 6, 4]])


def test_fanout_bad_input():
    with pytest.raises(ValueError, match="stride"):
        cost.fanout_1d(4, 3, 0, 1)
    with pytest.raises(ValueError, match="pad"):
        cost.fanout_1d(4, 3, 1, -1)


class Tiny(nn.Module):
    """Event input -> conv3x3 (3 ch) -> LIF -> conv3x3 stride 2 (2 ch) -> LIF -> read-out (5)."""

    @nn.compact
    def __call__(self, x, *, num_steps, train=False):
        y = layers.LIF(v_threshold=0.1)(layers.Conv(3, 3, 1, name="c1")(x))
        z = layers.LIF(v_threshold=0.1)(layers.Conv(2, 3, 2, name="c2")(y))
        return layers.Linear(5, name="fc")(z.reshape(z.shape[:2] + (-1,)))


def test_tiny_network_hand_counts():
    t, b = 2, 2
    x = np.zeros((t, b, 4, 4, 1), np.float32)
    x[0, 0, 0, 0] = 1  # corner: 2 x 2 taps, 3 output channels -> 12
    x[1, 0, 1, 1] = 1  # inner: 3 x 3 taps -> 27
    x[1, 1, 0, 2] = 1  # top edge: 2 x 3 taps -> 18
    x[1, 1, 3, 3] = 1  # other corner -> 12
    model = Tiny()
    variables = model.init(jax.random.PRNGKey(0), x, num_steps=t)
    logits, ops = cost.layer_ops(model, variables, x, t)
    assert logits.shape == (t, b, 5)
    assert list(ops["ac"]) == ["c1", "c2"]  # binary event frames are spikes
    assert list(ops["mac"]) == ["fc"]
    np.testing.assert_allclose(np.asarray(ops["ac"]["c1"]), [[12, 0], [27, 30]])
    # The read-out: dense 2x2x2 inputs x 5 outputs at every step and image.
    np.testing.assert_allclose(np.asarray(ops["mac"]["fc"]), np.full((t, b), 40.0))
    # c2 reads the spikes of c1's LIF: compare with counting per output.
    _, records = cost.capture_layer_inputs(model, variables, x, t)
    s = np.asarray(records[1].x)
    assert set(np.unique(s)) <= {0.0, 1.0}
    ref = [[np_synops_per_output(s[i, j], 3, 2, 2) for j in range(b)] for i in range(t)]
    np.testing.assert_allclose(np.asarray(ops["ac"]["c2"]), ref)
    assert np.sum(ref) > 0  # the check is not vacuous
    # Energy: ACs x 0.9 + MACs x 4.6 per step and image.
    e = cost.energy_per_step(ops, cost.EnergyModel())
    want = 0.9 * (np.asarray(ops["ac"]["c1"]) + np.asarray(ref)) + 4.6 * 40
    np.testing.assert_allclose(np.asarray(e), want, rtol=1e-6)
    e2 = cost.energy_per_step(ops, cost.EnergyModel(e_ac_pj=1.0, e_mac_pj=0.0))
    np.testing.assert_allclose(np.asarray(e2), np.asarray(ops["ac"]["c1"]) + np.asarray(ref))
    assert cost.total_ops(ops) == pytest.approx(
        {"synops": (39 + 30 + np.sum(ref)) / b, "macs": 40 * t})


def test_real_valued_frames_cost_macs():
    t, b = 2, 1
    x = np.full((t, b, 4, 4, 1), 0.5, np.float32)
    model = Tiny()
    variables = model.init(jax.random.PRNGKey(0), x, num_steps=t)
    _, ops = cost.layer_ops(model, variables, x, t)
    np.testing.assert_allclose(np.asarray(ops["mac"]["c1"]), 4 * 4 * 3 * 9 * 1)
    with pytest.raises(ValueError, match="input_spikes"):
        jax.jit(lambda v, x: cost.layer_ops(model, v, x, t))(variables, x)
    jitted = jax.jit(lambda v, x: cost.layer_ops(model, v, x, t, input_spikes=False)[1])
    np.testing.assert_allclose(np.asarray(jitted(variables, x)["mac"]["c1"]), 432)


@pytest.mark.parametrize(
    "name",
    [pytest.param("resnet19", marks=pytest.mark.slow), "vgg_snn",
     pytest.param("sew_resnet18", marks=pytest.mark.slow)],
)
def test_zoo_counts_per_output(name):
    t, b = 2, 2
    size = 16 if name != "sew_resnet18" else 32
    model = models.get_model(name, num_classes=3, width=0.0625)
    x = jax.random.uniform(jax.random.PRNGKey(1), (b, size, size, 3))
    variables = init_variables(model, jax.random.PRNGKey(0), x, num_steps=t)
    # Large BN scales so that every layer fires (at init the currents are too small).
    variables = jax.tree_util.tree_map_with_path(
        lambda path, v: v * 8.0 if "scale" in jax.tree_util.keystr(path) else v, variables)
    _, records = cost.capture_layer_inputs(model, variables, x, t)
    ops = cost.ops_from_records(records, t, input_spikes=False)
    # First layer: the static image, dense MACs once (charged to step 1); and the read-out.
    first, readout = records[0], records[-1]
    assert list(ops["mac"]) == [first.path, readout.path]
    k, cin = first.kernel, first.x.shape[-1]
    ho, wo, cout = first.y_shape[-3:]
    stem = np.asarray(ops["mac"][first.path])
    np.testing.assert_allclose(stem[0], ho * wo * cout * k * k * cin)
    np.testing.assert_allclose(stem[1:], 0)
    np.testing.assert_allclose(np.asarray(ops["mac"][readout.path]),
                               readout.x.shape[-1] * 3)
    assert list(ops["ac"]) == [r.path for r in records[1:-1]]
    for rec in records[1:-1]:
        got = np.asarray(ops["ac"][rec.path])
        xr = np.asarray(rec.x)
        if rec.layer == "conv":
            ref = [[np_synops_per_output(xr[i, j], rec.kernel, rec.stride, rec.features)
                    for j in range(b)] for i in range(t)]
        else:
            ref = rec.features * np.count_nonzero(xr.reshape(t, b, -1), axis=-1)
        np.testing.assert_allclose(got, ref, err_msg=rec.path)
    assert sum(float(np.sum(v)) for v in ops["ac"].values()) > 0


def test_summarize_and_exit_energy():
    e = np.array([[10.0, 20.0], [1.0, 2.0], [1.0, 2.0]])  # [T=3, N=2]
    ops = {"ac": {"a": np.array([[6, 2], [0, 0], [2, 0]])},
           "mac": {"b": np.array([[4, 4], [4, 4], [4, 4]])}}
    summ = cost.summarize({k: {n: v.sum(1) for n, v in d.items()} for k, d in ops.items()},
                          e, steps=np.array([1, 3]))
    assert summ["per_layer"] == {"a": {"kind": "ac", "ops_per_image": 5.0},
                                 "b": {"kind": "mac", "ops_per_image": 12.0}}
    assert summ["synops_per_image"] == 5.0
    assert summ["macs_per_image"] == 12.0
    np.testing.assert_allclose(summ["energy_pj_first_k"], [15.0, 16.5, 18.0])
    assert summ["energy_pj_exit"] == pytest.approx((10.0 + 24.0) / 2)
    np.testing.assert_allclose(np.asarray(cost.exit_energy(jnp.asarray(e), jnp.array([1, 3]))),
                               [10.0, 24.0])
    with pytest.raises(ValueError, match="steps must be"):
        cost.summarize({}, e, steps=np.array([0, 3]))


def test_energy_model_bad_input():
    with pytest.raises(ValueError, match="e_ac_pj"):
        cost.EnergyModel(e_ac_pj=-1.0)
