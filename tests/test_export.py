"""NIR export (docs/export.md): round trip, step-by-step semantics, bad input.

The reference simulator below is written here from NIR's node definitions (NumPy, float64,
one step at a time; every node's input is the sum of its incoming edges), independent of
the exporter and of the models' JAX code.
"""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import nir  # the [test] extra declares it
import numpy as np
import pytest

from tks_jax import export, models
from tks_jax.data import nmnist_synth
from tks_jax.data.mnist import load_mnist_arrays

# --------------------------------------------------------------------------------------------
# Reference simulator of the exported node types.
# --------------------------------------------------------------------------------------------


def _conv2d(x, weight, bias, stride, padding):
    """x [B, C, H, W], weight [O, C, kh, kw] -> [B, O, H', W'] (cross-correlation)."""
    ph, pw = padding
    sh, sw = stride
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    o, c, kh, kw = weight.shape
    ho = (xp.shape[2] - kh) // sh + 1
    wo = (xp.shape[3] - kw) // sw + 1
    out = np.zeros((x.shape[0], o, ho, wo))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
            out += np.einsum("bchw,oc->bohw", patch, weight[:, :, i, j])
    return out + bias[None, :, None, None]


def _pool2d(x, kernel, stride, padding, mean):
    ph, pw = padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    kh, kw = kernel
    sh, sw = stride
    ho = (xp.shape[2] - kh) // sh + 1
    wo = (xp.shape[3] - kw) // sw + 1
    out = np.zeros(x.shape[:2] + (ho, wo))
    for i in range(kh):
        for j in range(kw):
            out += xp[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
    return out / (kh * kw) if mean else out


def _topological(graph):
    order, seen = [], set()
    preds = {k: [a for a, b in graph.edges if b == k] for k in graph.nodes}

    def visit(k):
        if k in seen:
            return
        seen.add(k)
        for p in preds[k]:
            visit(p)
        order.append(k)

    for k in graph.nodes:
        visit(k)
    return order, preds


def simulate(graph, frames):
    """Runs a NIR graph for ``frames`` ``[T, B, C, H, W]`` with dt = 1; returns per-step
    outputs ``[T, B, ...]`` and each LIF and Threshold node's count of ones."""
    order, preds = _topological(graph)
    state, spikes, outputs = {}, {}, []
    for frame in frames:
        values = {}
        for k in order:
            node = graph.nodes[k]
            if isinstance(node, nir.Input):
                values[k] = np.asarray(frame, np.float64)
                continue
            x = sum(values[p] for p in preds[k])
            if isinstance(node, nir.Output):
                values[k] = x
            elif isinstance(node, nir.Conv2d):
                values[k] = _conv2d(x, node.weight, node.bias, node.stride, node.padding)
            elif isinstance(node, nir.AvgPool2d | nir.SumPool2d):
                values[k] = _pool2d(x, node.kernel_size, node.stride, node.padding,
                                    mean=isinstance(node, nir.AvgPool2d))
            elif isinstance(node, nir.Flatten):
                assert node.start_dim == 0 and node.end_dim == -1  # per-sample axes
                values[k] = x.reshape(x.shape[0], -1)
            elif isinstance(node, nir.Affine):
                values[k] = x @ node.weight.T + node.bias
            elif isinstance(node, nir.Scale):
                values[k] = x * node.scale
            elif isinstance(node, nir.Threshold):
                values[k] = (x > node.threshold).astype(np.float64)
                spikes[k] = spikes.get(k, 0.0) + values[k].sum()
            elif isinstance(node, nir.LIF):
                # tau dv/dt = (v_leak - v) + r I, forward Euler with dt = 1; strict threshold;
                # reset to v_reset in the same step.
                v = state.get(k, np.zeros_like(x))
                v = v + ((node.v_leak - v) + node.r * x) / node.tau
                s = (v > node.v_threshold).astype(np.float64)
                state[k] = np.where(s > 0, node.v_reset, v)
                spikes[k] = spikes.get(k, 0.0) + s.sum()
                values[k] = s
            else:  # pragma: no cover
                raise NotImplementedError(type(node).__name__)
        outputs.append(values["output"])
    return np.stack(outputs), spikes


# --------------------------------------------------------------------------------------------
# Inputs and models.
# --------------------------------------------------------------------------------------------


def _mnist_images(n):
    images, _ = load_mnist_arrays(verify=False)["test"]
    return np.asarray(images[:n], np.float32) / 255.0  # [n, 28, 28, 1]


def _nmnist_frames(n, num_steps):
    """Simulated N-MNIST recordings of the first test digits, binned into ``[T, n, 34, 34, 2]``
    event counts (ON / OFF polarity channels)."""
    images, _ = load_mnist_arrays(verify=False)["test"]
    frames = np.zeros((num_steps, n, 34, 34, 2), np.float32)
    for i, rec in enumerate(nmnist_synth.simulate(np.asarray(images[:n]), split_id=1)):
        step = np.minimum(rec["t"].astype(np.int64) * num_steps
                          // nmnist_synth.RECORDING_DURATION_US, num_steps - 1)
        np.add.at(frames, (step, i, rec["y"], rec["x"], rec["p"]), 1.0)
    return frames


def _random_variables(model, x, num_steps, seed):
    """Variables of ``model`` with the structure of ``model.init`` (from ``jax.eval_shape``, no
    forward pass) and random values: PyTorch-like kernels and non-trivial BN statistics and
    affine parameters (a trained network's are not 0/1)."""
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.asarray(x), num_steps=num_steps))
    rng = np.random.default_rng(seed)

    def fill(path, s):
        name = jax.tree_util.keystr(path)
        if name.endswith("['kernel']"):
            bound = 1.5 * np.sqrt(3.0 / np.prod(s.shape[:-1]))
            return rng.uniform(-bound, bound, s.shape).astype(np.float32)
        if name.endswith("['mean']"):
            return rng.normal(0.0, 0.2, s.shape).astype(np.float32)
        if name.endswith("['var']"):
            return rng.uniform(0.3, 2.0, s.shape).astype(np.float32)
        if name.endswith("['scale']"):
            return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
        if name.endswith("['bias']"):
            return rng.normal(0.3, 0.3, s.shape).astype(np.float32)
        raise AssertionError(f"unexpected variable {name}")

    return jax.tree_util.tree_map_with_path(fill, shapes)


_SHALLOW_SEW = dict(width=0.05, stage_sizes=(1, 1), stage_widths=(64, 128), stem="cifar",
                   norm="bn")
CASES = {
    # name: (get_model options, input kind, T)
    "vgg_snn": (dict(width=0.05), "events", 4),
    "resnet19": (dict(width=0.05), "mnist", 3),
    "sew_resnet19": (dict(width=0.05), "mnist", 3),
    # AND / IAND thin the spikes at every block: two shallow stages keep them all firing.
    "sew_and": (dict(connect="and", **_SHALLOW_SEW), "mnist", 3),
    "sew_iand": (dict(connect="iand", **_SHALLOW_SEW), "mnist", 3),
    "sew_resnet18": (dict(width=0.05), "mnist", 3),
    # SEW-ResNet-50's bottleneck block (1x1 -> 3x3 stride -> 1x1 x4) and ImageNet stem.
    "sew_bottleneck": (dict(connect="add", block="bottleneck", stage_sizes=(1, 1),
                            stage_widths=(64, 128), width=0.05, norm="bn"), "mnist", 3),
}


def _build(case):
    options, kind, num_steps = CASES[case]
    options = {k: v for k, v in options.items() if v is not None}
    if case.startswith("sew_") and "connect" in options:
        model = models.SEWResNet(num_classes=10, conv="direct", **options)
    else:
        model = models.get_model(case, num_classes=10, conv="direct", **options)
    if kind == "events":
        x = _nmnist_frames(3, num_steps)
        frame_shape = x.shape[2:]
        nchw = np.transpose(x, (0, 1, 4, 2, 3))
    else:
        x = _mnist_images(3)
        frame_shape = x.shape[1:]
        nchw = np.broadcast_to(np.transpose(x, (0, 3, 1, 2))[None], (num_steps, *x.shape[:1],
                                                                      1, 28, 28))
    variables = _random_variables(model, x, num_steps, seed=1)
    return model, variables, x, frame_shape, nchw, num_steps


@pytest.mark.parametrize("case", list(CASES))
def test_reference_simulator_reproduces_logits(case):
    model, variables, x, frame_shape, nchw, num_steps = _build(case)
    graph = export.to_nir(model, variables, frame_shape, num_steps=num_steps)
    # Through a file: what a consumer reads.
    buf = io.BytesIO()
    nir.write(buf, graph)
    buf.seek(0)
    graph = nir.read(buf)
    got, spikes = simulate(graph, nchw)
    apply = jax.jit(lambda v, x: model.apply(v, x, num_steps=num_steps, train=False))
    want = np.asarray(apply(variables, jnp.asarray(x)))
    assert got.shape == want.shape
    # Every spiking layer fires (a silent network would agree trivially) ...
    lifs = [k for k, n in graph.nodes.items() if isinstance(n, nir.LIF | nir.Threshold)]
    assert lifs and all(spikes[k] > 0 for k in lifs), {k: spikes[k] for k in lifs}
    # ... and the logits agree to float32 rounding at every step.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# --------------------------------------------------------------------------------------------
# Round trip, mapping details.
# --------------------------------------------------------------------------------------------


def _same_value(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            _same_value(a[k], b[k]) for k in a)
    if isinstance(a, str | bytes) or isinstance(b, str | bytes):
        return a == b
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype.kind == b.dtype.kind and np.array_equal(a, b)


def test_write_then_read_gives_the_same_graph(tmp_path):
    model, variables, _, frame_shape, _, num_steps = _build("resnet19")
    graph = export.to_nir(model, variables, frame_shape, num_steps=num_steps)
    path = tmp_path / "model.nir"
    nir.write(path, graph)
    back = nir.read(path)
    assert back.nodes.keys() == graph.nodes.keys()
    assert sorted(back.edges) == sorted(graph.edges)
    assert _same_value(back.metadata, graph.metadata)
    for name, node in graph.nodes.items():
        other = back.nodes[name]
        assert type(other) is type(node), name
        want, got = node.to_dict(), other.to_dict()
        assert want.keys() == got.keys(), name
        for key in want:
            assert _same_value(want[key], got[key]), (name, key)


def test_lif_parameters_match_the_library_update():
    """nir.LIF with these parameters, forward Euler at dt = 1: u += (I - u) / tau."""
    model = models.get_model("vgg_snn", num_classes=10, width=0.05, tau=4.0, v_threshold=0.75,
                             conv="direct")
    x = np.zeros((2, 1, 16, 16, 2), np.float32)
    graph = export.to_nir(model, _random_variables(model, x, 2, seed=0), (16, 16, 2))
    lif = graph.nodes["conv1.lif"]
    assert isinstance(lif, nir.LIF)
    np.testing.assert_array_equal(lif.tau, 4.0)
    np.testing.assert_array_equal(lif.r, 1.0)
    np.testing.assert_array_equal(lif.v_leak, 0.0)
    np.testing.assert_array_equal(lif.v_threshold, 0.75)
    np.testing.assert_array_equal(lif.v_reset, 0.0)
    assert lif.tau.shape == (8, 16, 16)  # one neuron per channel and pixel, [C, H, W]
    assert graph.metadata["dt"] == 1.0
    assert "strict" in lif.metadata["threshold"] and "same step" in lif.metadata["reset"]
    np.testing.assert_array_equal(graph.nodes["input"].input_type["input"], [2, 16, 16])


def test_norm_folds_into_conv_by_hand():
    """One channel, hand-made numbers: W' = W * s / sqrt(var + eps), b' = b - mean * s / ..."""
    model = models.get_model("vgg_snn", num_classes=10, width=0.05, conv="direct")
    x = np.zeros((1, 1, 16, 16, 2), np.float32)
    variables = _random_variables(model, x, 1, seed=0)
    p, bs = variables["params"]["conv1"], variables["batch_stats"]["conv1"]
    kernel = np.asarray(p["conv"]["conv"]["kernel"])  # HWIO [3, 3, 2, 8]
    scale, bias = np.asarray(p["norm"]["bn"]["scale"]), np.asarray(p["norm"]["bn"]["bias"])
    mean, var = np.asarray(bs["norm"]["bn"]["mean"]), np.asarray(bs["norm"]["bn"]["var"])
    conv = export.to_nir(model, variables, (16, 16, 2)).nodes["conv1.conv"]
    o, c, i, j = 5, 1, 0, 2
    g = scale[o] / np.sqrt(var[o] + 1e-5)
    assert conv.weight[o, c, i, j] == pytest.approx(kernel[i, j, c, o] * g, rel=1e-6)
    assert conv.bias[o] == pytest.approx(bias[o] - mean[o] * g, rel=1e-5, abs=1e-6)
    assert tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (1, 1)


def test_residual_sums_are_edges():
    model, variables, _, frame_shape, _, _ = _build("resnet19")
    graph = export.to_nir(model, variables, frame_shape)
    into = lambda k: sorted(a for a, b in graph.edges if b == k)  # noqa: E731
    # ResNet-19: identity shortcut and projection shortcut both end in the block's LIF.
    assert into("layer1_1.lif2") == ["layer1_0.lif2", "layer1_1.conv2"]
    assert into("layer2_0.lif2") == ["layer2_0.conv2", "layer2_0.shortcut"]
    model, variables, _, frame_shape, _, _ = _build("sew_resnet19")
    graph = export.to_nir(model, variables, frame_shape)
    assert isinstance(graph.nodes["layer1_1.add"], nir.Scale)
    assert into("layer1_1.add") == ["layer1_0.add", "layer1_1.unit2.lif"]


# --------------------------------------------------------------------------------------------
# Bad input: a clear error naming the layer, never a silently different network.
# --------------------------------------------------------------------------------------------


def test_tebn_is_refused_naming_the_layer():
    model = models.get_model("resnet19", num_classes=10, width=0.05, norm="tebn", num_steps=2)
    with pytest.raises(export.ExportError, match=r"stem/norm.*TEBN.*time-varying"):
        export.to_nir(model, {"params": {}}, (8, 8, 3))


def test_low_precision_compute_is_refused():
    model = models.get_model("vgg_snn", num_classes=10, width=0.05, dtype="bfloat16")
    with pytest.raises(export.ExportError, match=r"conv1/conv.*bfloat16.*float32"):
        export.to_nir(model, {"params": {}}, (16, 16, 2))


def test_unsupported_model_is_refused():
    import flax.linen as nn

    with pytest.raises(export.ExportError, match=r"Dense: no NIR export"):
        export.to_nir(nn.Dense(3), {"params": {}}, (16, 16, 2))


def test_variables_of_another_model_are_refused():
    model = models.get_model("vgg_snn", num_classes=10, width=0.05, conv="direct")
    other = models.get_model("resnet19", num_classes=10, width=0.05, conv="direct")
    variables = _random_variables(other, np.zeros((1, 8, 8, 3), np.float32), 1, seed=0)
    with pytest.raises(export.ExportError, match=r"'conv1'.*do not belong to this model"):
        export.to_nir(model, variables, (16, 16, 3))


def test_input_shape_mismatch_is_refused():
    model = models.get_model("vgg_snn", num_classes=10, width=0.05, conv="direct")
    variables = _random_variables(model, np.zeros((1, 1, 16, 16, 2), np.float32), 1, seed=0)
    with pytest.raises(export.ExportError, match=r"conv1/conv.*2 input channels.*has 3"):
        export.to_nir(model, variables, (16, 16, 3))
    with pytest.raises(export.ExportError, match=r"pool4.*too small"):
        export.to_nir(model, variables, (12, 12, 2))
    with pytest.raises(export.ExportError, match=r"one step's \(H, W, C\)"):
        export.to_nir(model, variables, (1, 16, 16, 2))


def test_cli_reports_a_missing_run(tmp_path, capsys):
    assert export.main(["--workdir", str(tmp_path / "none"), "--out", str(tmp_path / "m.nir")]) == 1
    assert "config.json" in capsys.readouterr().err
    assert not (tmp_path / "m.nir").exists()


class _NoIterator:
    """Stands in for the training iterator in a checkpoint (its position is not exported)."""

    def get_state(self):
        return {}


@pytest.mark.slow
def test_cli_exports_the_latest_checkpoint(tmp_path):
    """A run directory as train.py leaves it (config.json, orbax checkpoints written by the
    training code); the CLI's graph equals ``to_nir`` of the newest checkpoint's variables,
    and the reference simulator reproduces the model on those variables."""
    import train_testlib as tl

    from tks_jax.training import build, checkpointing, input_pipeline, optim

    config = tl.tiny_config(**{"model.conv": "direct"})  # VGG-SNN width 1/8, 16x16x1, T = 2
    tl.dump_config(config, str(tmp_path / "config.json"))
    _, info = input_pipeline.get_dataset(
        config, config.data.eval_split, train=False, batch_size=2, num_steps=config.num_steps,
        seed=0, shard_index=0, shard_count=1)
    model = build.build_model(config, info.num_classes)
    init = build.make_init_fn(model, optim.make_optimizer(config, optim.make_schedule(config, 1)),
                             info, config)
    x = _mnist_images(2)[:, 6:22, 6:22]  # [2, 16, 16, 1]
    manager = checkpointing.make_manager(str(tmp_path / "checkpoints"), max_to_keep=3,
                                         async_save=False)
    saver = checkpointing.Saver(manager, async_save=False)
    saved = {}
    for step, seed in ((2, 3), (4, 4)):  # the export must take the newest
        state = jax.eval_shape(init, jax.random.PRNGKey(0))
        state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), state)
        variables = _random_variables(model, x, config.num_steps, seed=seed)
        state.update(params=variables["params"], batch_stats=variables["batch_stats"])
        saver.save(step, state, _NoIterator())
        saved[step] = variables
    manager.wait_until_finished()
    manager.close()

    out = tmp_path / "model.nir"
    assert export.main(["--workdir", str(tmp_path), "--out", str(out)]) == 0
    graph = nir.read(out)
    want = export.to_nir(model, saved[4], (16, 16, 1))
    assert graph.nodes.keys() == want.nodes.keys()
    for name, node in want.nodes.items():
        for key, value in node.to_dict().items():
            if key != "metadata":
                assert _same_value(value, graph.nodes[name].to_dict()[key]), (name, key)
    assert graph.metadata["checkpoint_step"] == 4
    assert graph.metadata["num_steps"] == config.num_steps
    nchw = np.broadcast_to(np.transpose(x, (0, 3, 1, 2))[None], (config.num_steps, 2, 1, 16, 16))
    got, _ = simulate(graph, nchw)
    logits = model.apply(saved[4], jnp.asarray(x), num_steps=config.num_steps, train=False)
    np.testing.assert_allclose(got, np.asarray(logits), rtol=1e-4,
                               atol=1e-4 * np.abs(logits).max())
