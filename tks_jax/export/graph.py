"""Export trained spiking networks to NIR, the Neuromorphic Intermediate Representation.

    graph = to_nir(model, variables, input_shape=(34, 34, 2), num_steps=10)
    nir.write("model.nir", graph)

    python -m tks_jax.export --workdir runs/nmnist_synth_default --out model.nir   # (cli.py)

NIR (PyPI ``nir``; Pedersen et al., Nature Communications 2024) describes a network as a graph
of continuous-time nodes: simulators (snnTorch, Norse, Sinabs, Rockpool, Lava, ...) and chips
read it. ``docs/export.md`` derives the mapping; in short, per time step and per sample:

- ``Conv -> Norm`` (tdBN or BN, inference statistics, tdBN's scale included) becomes one
  ``nir.Conv2d`` with the norm folded into its weights and bias (``docs/method.md §6``);
- every LIF becomes ``nir.LIF(tau, r=1, v_leak=0, v_threshold, v_reset=0)``, whose forward
  Euler step with ``dt = 1`` is exactly ``u += (I - u) / tau`` (``docs/method.md §1``); the
  strict ``u > v_th`` comparison, the same-step hard reset and ``dt = 1`` are recorded in the
  node's and the graph's metadata, since NIR leaves them to the simulator;
- average pools are ``nir.AvgPool2d``, the global average pool ``nir.AvgPool2d`` over the
  whole map followed by ``nir.Flatten``, read-outs ``nir.Affine`` (the per-step logits);
- residual sums are edges: NIR sums every edge arriving at a node. ResNet-19's
  ``LIF(norm(conv(x)) + shortcut)`` is two edges into the block's LIF; a SEW ADD block's
  ``out + identity`` is two edges into an identity ``nir.Scale`` (scale 1) named ``.add``.
- Operations of spikes that NIR has no node for are written exactly with NIR nodes, valid
  because their inputs are binary spikes: SEW-ResNet's 3x3 max pool (after the stem LIF) is
  ``nir.SumPool2d`` then ``nir.Threshold(0)`` (a max of 0/1 values is 1 iff their sum is
  > 0); SEW AND ``out * id`` is ``Threshold(1.5)`` of ``out + id``; IAND ``(1 - out) * id``
  is ``Threshold(0.5)`` of ``id - out`` (``out`` through ``nir.Scale(-1)``).

TEBN (per-step BN scales, time-varying weights) and bfloat16/float16 compute have no exact
NIR form: ``to_nir`` raises ``ValueError`` naming the layer and the reason.

Layout: tks-jax computes on time-major NHWC ``[T, B, H, W, C]``; NIR nodes see one step of
one sample, channel first ``[C, H, W]``. The ``input`` node records that shape; kernels are
transposed from HWIO to OIHW, and the read-out's weight columns are permuted from the
``(h, w, c)`` flatten order of tks-jax to NIR's ``(c, h, w)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

try:  # optional dependency: pip install 'tks-jax[export]'
    import nir
except ImportError:  # pragma: no cover - exercised only without the extra
    nir = None

from tks_jax.models import layers
from tks_jax.models.resnet import ResNet19
from tks_jax.models.sew_resnet import CONNECTS, SEWResNet
from tks_jax.models.vgg_snn import VGG_SNN_PLAN, VGGSNN

# What NIR leaves to the simulator, as these graphs mean it (also in each LIF's metadata).
NEURON_SEMANTICS = {
    "discretisation": "forward Euler with dt = 1 (one time step per input frame)",
    "threshold": "spike at a step when v > v_threshold (strict), after integrating that step",
    "reset": "hard reset: v = v_reset (0) in the same step as the spike",
    "initial_state": "v = 0 at the first step of every sample",
}
INPUT_LAYOUT = (
    "time-major; one [C, H, W] frame per step and sample (NCHW per step with a batch); static "
    "images (direct encoding) are presented unchanged at every step"
)
READOUT = (
    "the Affine read-out gives logits at every step; tks-jax predicts the argmax of their "
    "mean over the steps"
)


class ExportError(ValueError):
    """A model or option that NIR cannot express exactly (names the layer and the reason)."""


def require_nir():
    if nir is None:
        raise ImportError(
            "tks_jax.export needs the 'nir' package: pip install 'tks-jax[export]' "
            "(or pip install 'nir>=1.0')."
        )
    return nir


# --------------------------------------------------------------------------------------------
# Parameter-tree access.
# --------------------------------------------------------------------------------------------


def _get(tree: Mapping[str, Any], path: Sequence[str], collection: str) -> Any:
    node: Any = tree
    for i, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node:
            raise ExportError(
                f"variables['{collection}'] has no '{'/'.join(path[: i + 1])}': the variables "
                "do not belong to this model (pass model.init(...) or a restored checkpoint "
                "of the same architecture and options)."
            )
        node = node[key]
    return node


def _has(tree: Mapping[str, Any], path: Sequence[str]) -> bool:
    node: Any = tree
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def _f32(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Graph builder.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Builder:
    """Collects NIR nodes and edges; tracks each node's per-step output shape."""

    params: Mapping[str, Any]
    stats: Mapping[str, Any]
    tau: float
    v_threshold: float
    nodes: dict[str, Any] = dataclasses.field(default_factory=dict)
    edges: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    shapes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)

    def add(self, name: str, node: Any, shape: tuple[int, ...], *sources: str) -> str:
        if name in self.nodes:  # pragma: no cover - a builder bug, not user input
            raise AssertionError(f"duplicate NIR node name {name!r}")
        self.nodes[name] = node
        self.shapes[name] = tuple(int(s) for s in shape)
        self.edges.extend((src, name) for src in sources)
        return name

    def conv_norm(
        self, src: str, conv_path: Sequence[str], norm_path: Sequence[str], strides: int,
        name: str,
    ) -> str:
        """``Norm(Conv(x))`` (inference statistics) folded into one ``nir.Conv2d``."""
        kernel = np.asarray(_get(self.params, [*conv_path, "conv", "kernel"], "params"),
                            np.float64)
        kh, kw, cin, cout = kernel.shape
        c, h, w = self.shapes[src]
        if cin != c:
            raise ExportError(
                f"{'/'.join(conv_path)}: kernel expects {cin} input channels but its input "
                f"{src!r} has {c}; the variables do not match the model or input_shape."
            )
        scale = np.asarray(_get(self.params, [*norm_path, "bn", "scale"], "params"), np.float64)
        bias = np.asarray(_get(self.params, [*norm_path, "bn", "bias"], "params"), np.float64)
        mean = np.asarray(_get(self.stats, [*norm_path, "bn", "mean"], "batch_stats"), np.float64)
        var = np.asarray(_get(self.stats, [*norm_path, "bn", "var"], "batch_stats"), np.float64)
        # y = (conv(x) - mean) * scale / sqrt(var + eps) + bias   (docs/method.md §6)
        gain = scale / np.sqrt(var + layers.BN_EPSILON)
        weight = np.transpose(kernel, (3, 2, 0, 1)) * gain[:, None, None, None]  # OIHW
        folded_bias = bias - mean * gain
        pad = kh // 2
        out_h = (h + 2 * pad - kh) // strides + 1
        out_w = (w + 2 * pad - kw) // strides + 1
        if out_h < 1 or out_w < 1:
            raise ExportError(
                f"{'/'.join(conv_path)}: input {h}x{w} is too small for a {kh}x{kw} stride "
                f"{strides} convolution; export with a larger input_shape."
            )
        node = nir.Conv2d(
            input_shape=(h, w), weight=_f32(weight), stride=strides, padding=pad, dilation=1,
            groups=1, bias=_f32(folded_bias),
            metadata={"tks_jax_layers": f"{'/'.join(conv_path)} + {'/'.join(norm_path)} "
                      "(norm folded, inference statistics)"},
        )
        return self.add(name, node, (cout, out_h, out_w), src)

    def lif(self, name: str, layer: str, *sources: str) -> str:
        shape = self.shapes[sources[0]]
        node = nir.LIF(
            tau=np.full(shape, self.tau, np.float32),
            r=np.ones(shape, np.float32),
            v_leak=np.zeros(shape, np.float32),
            v_threshold=np.full(shape, self.v_threshold, np.float32),
            v_reset=np.zeros(shape, np.float32),
            metadata={"tks_jax_layer": layer, **NEURON_SEMANTICS},
        )
        return self.add(name, node, shape, *sources)

    def unit(self, src: str, path: Sequence[str], strides: int) -> str:
        """``base.ConvNormLIF`` at ``path``: folded conv then LIF."""
        prefix = ".".join(path)
        conv = self.conv_norm(src, [*path, "conv"], [*path, "norm"], strides, f"{prefix}.conv")
        return self.lif(f"{prefix}.lif", "/".join([*path, "lif"]), conv)

    def avg_pool(self, src: str, name: str, kernel: tuple[int, int], stride: tuple[int, int]
                 ) -> str:
        c, h, w = self.shapes[src]
        out = (c, (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1)
        node = nir.AvgPool2d(kernel_size=np.array(kernel), stride=np.array(stride),
                             padding=np.array([0, 0]))
        return self.add(name, node, out, src)

    def global_pool_flatten(self, src: str) -> str:
        """``layers.global_avg_pool``: AvgPool2d over the whole map, then Flatten to [C]."""
        c, h, w = self.shapes[src]
        pool = self.avg_pool(src, "global_pool", (h, w), (h, w))
        return self.flatten(pool)

    def flatten(self, src: str) -> str:
        shape = self.shapes[src]
        node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1,
                           metadata={"order": "(c, h, w), per sample: start_dim 0 is the "
                                     "channel axis (NIR types have no batch axis)"})
        return self.add("flatten", node, (math.prod(shape),), src)

    def affine(self, src: str, path: str, name: str, spatial: tuple[int, int, int] | None = None
               ) -> str:
        """``layers.Linear`` at ``path``; ``spatial=(C, H, W)`` when its input was flattened
        from tks-jax's ``(h, w, c)`` order (its rows are permuted to NIR's ``(c, h, w)``)."""
        kernel = np.asarray(_get(self.params, [path, "dense", "kernel"], "params"), np.float32)
        bias = np.asarray(_get(self.params, [path, "dense", "bias"], "params"), np.float32)
        (features,) = self.shapes[src]
        if kernel.shape[0] != features:
            raise ExportError(
                f"{path}: expects {kernel.shape[0]} input features but gets {features} from "
                f"{src!r}; the variables do not match the model or input_shape."
            )
        if spatial is not None:
            c, h, w = spatial
            kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)
        node = nir.Affine(weight=np.ascontiguousarray(kernel.T), bias=bias,
                          metadata={"tks_jax_layer": path})
        return self.add(name, node, (kernel.shape[1],), src)

    def graph(self, metadata: dict[str, Any]) -> Any:
        return nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=metadata,
                            type_check=True)


# --------------------------------------------------------------------------------------------
# Architectures (each mirrors the model's __call__; parameter paths as in the model files).
# --------------------------------------------------------------------------------------------


def _vgg(b: _Builder, x: str) -> str:
    index, pool = 0, 0
    for item in VGG_SNN_PLAN:
        if item == "A":
            pool += 1
            c, h, w = b.shapes[x]
            if h < 2 or w < 2:
                raise ExportError(
                    f"pool{pool} (2x2 average pool after conv{index}): the map is {h}x{w}, too "
                    "small; "
                    "VGG-SNN needs inputs of at least 16x16 pixels."
                )
            x = b.avg_pool(x, f"pool{pool}", (2, 2), (2, 2))
            continue
        index += 1
        x = b.unit(x, [f"conv{index}"], 1)
    spatial = b.shapes[x]
    x = b.flatten(x)
    return b.affine(x, "fc", "fc", spatial=spatial)


def _resnet19(model: ResNet19, b: _Builder, x: str) -> str:
    x = b.unit(x, ["stem"], 1)
    for i, blocks in enumerate(model.stage_sizes):
        for j in range(blocks):
            strides = 2 if (i > 0 and j == 0) else 1
            name = f"layer{i + 1}_{j}"
            out = b.unit(x, [name, "unit1"], strides)
            out = b.conv_norm(out, [name, "conv2"], [name, "norm2"], 1, f"{name}.conv2")
            if _has(b.params, [name, "shortcut_conv"]):
                short = b.conv_norm(x, [name, "shortcut_conv"], [name, "shortcut_norm"],
                                    strides, f"{name}.shortcut")
            else:
                short = x
            if b.shapes[out] != b.shapes[short]:
                raise ExportError(
                    f"{name}: residual branch {b.shapes[out]} and shortcut {b.shapes[short]} "
                    "differ in shape; the variables do not match the model."
                )
            # LIF(norm2(conv2(out)) + shortcut): NIR sums the two edges into the LIF.
            x = b.lif(f"{name}.lif2", f"{name}/lif2", out, short)
    x = b.global_pool_flatten(x)
    x = b.affine(x, "fc1", "fc1")
    x = b.lif("fc1_lif", "fc1_lif", x)
    return b.affine(x, "fc2", "fc2")


def _sew_connect(b: _Builder, name: str, how: str, out: str, identity: str) -> str:
    shape = b.shapes[out]
    if b.shapes[identity] != shape:
        raise ExportError(
            f"{name}: residual branch {shape} and identity {b.shapes[identity]} differ in "
            "shape; the variables do not match the model."
        )
    meta = {"tks_jax_layer": f"{name} (SEW connect {how!r})"}
    if how == "add":  # out + id: an identity node summing its two input edges
        return b.add(f"{name}.add", nir.Scale(scale=np.ones(shape, np.float32), metadata=meta),
                     shape, out, identity)
    if how == "and":  # out * id of spikes = H(out + id - 1.5)
        return b.add(f"{name}.and", nir.Threshold(threshold=np.full(shape, 1.5, np.float32),
                                                  metadata=meta), shape, out, identity)
    # iand: (1 - out) * id of spikes = H(id - out - 0.5)
    neg = b.add(f"{name}.neg_out", nir.Scale(scale=np.full(shape, -1.0, np.float32),
                                             metadata=meta), shape, out)
    return b.add(f"{name}.iand", nir.Threshold(threshold=np.full(shape, 0.5, np.float32),
                                               metadata=meta), shape, neg, identity)


def _sew(model: SEWResNet, b: _Builder, x: str) -> str:
    if model.stem == "imagenet":
        x = b.unit(x, ["stem"], 2)
        # layers.max_pool(x, 3, 2, 1) of the stem's spikes: max of 0/1 values = H(sum > 0);
        # PyTorch pads max pooling with -inf, a sum pool with 0: the same for spikes >= 0.
        c, h, w = b.shapes[x]
        out = (c, (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1)
        pool = nir.SumPool2d(kernel_size=np.array([3, 3]), stride=np.array([2, 2]),
                             padding=np.array([1, 1]),
                             metadata={"tks_jax_layer": "max_pool(3, stride 2, pad 1) of spikes, "
                                       "as SumPool2d then Threshold(0)"})
        x = b.add("stem_pool.sum", pool, out, x)
        x = b.add("stem_pool.any", nir.Threshold(threshold=np.zeros(out, np.float32)), out, x)
    else:
        x = b.unit(x, ["stem"], 1)
    for i, blocks in enumerate(model.stage_sizes):
        for j in range(blocks):
            strides = 2 if (i > 0 and j == 0) else 1
            name = f"layer{i + 1}_{j}"
            if model.block == "bottleneck":
                out = b.unit(x, [name, "unit1"], 1)
                out = b.unit(out, [name, "unit2"], strides)
                out = b.unit(out, [name, "unit3"], 1)
            else:
                out = b.unit(x, [name, "unit1"], strides)
                out = b.unit(out, [name, "unit2"], 1)
            identity = b.unit(x, [name, "downsample"], strides) if _has(
                b.params, [name, "downsample"]) else x
            x = _sew_connect(b, name, model.connect, out, identity)
    x = b.global_pool_flatten(x)
    if model.hidden is not None:
        x = b.affine(x, "fc1", "fc1")
        x = b.lif("fc1_lif", "fc1_lif", x)
    return b.affine(x, "fc", "fc")


# --------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------


def check_exportable(model: Any) -> None:
    """Raises ``ExportError`` (a ``ValueError``) if ``model`` has no exact NIR form.

    Args:
      model: a ``tks_jax.models`` network.

    Raises:
      ExportError: naming the layer and the reason (unsupported architecture, TEBN, a
        non-float32 compute dtype, an unknown SEW connect function).
    """
    if not isinstance(model, VGGSNN | ResNet19 | SEWResNet):
        raise ExportError(
            f"{type(model).__name__}: no NIR export for this model; supported are VGGSNN, "
            "ResNet19 and SEWResNet (tks_jax.models)."
        )
    first = "conv1" if isinstance(model, VGGSNN) else "stem"
    if model.norm == "tebn":
        raise ExportError(
            f"{first}/norm (and every other norm): TEBN multiplies step t by its own learned "
            "scale p_t, a time-varying weight that NIR's static nodes cannot express; export a "
            "model trained with norm='tdbn' or 'bn'."
        )
    if model.norm not in layers.NORMS:
        raise ExportError(f"{first}/norm: unknown norm {model.norm!r}.")
    import jax.numpy as jnp

    if jnp.dtype(model.dtype) != jnp.float32:
        raise ExportError(
            f"{first}/conv: the model computes in {jnp.dtype(model.dtype).name}; NIR's "
            "parameters run in float32 and the spikes could differ. Rebuild the model with "
            "dtype='float32' to export (its parameters are float32 already)."
        )
    if isinstance(model, SEWResNet) and model.connect not in CONNECTS:
        raise ExportError(
            f"SEW blocks: unknown connect function {model.connect!r}; choose one of "
            f"{list(CONNECTS)}."
        )


def to_nir(
    model: Any,
    variables: Mapping[str, Any],
    input_shape: Sequence[int],
    *,
    num_steps: int | None = None,
) -> nir.NIRGraph:
    """Converts a tks-jax spiking network with its trained variables into a ``nir.NIRGraph``.

    The graph computes, step by step, what ``model.apply(variables, x, num_steps=T,
    train=False)`` computes (``docs/export.md``): running-average norms folded into the
    convolutions, LIF neurons with ``dt = 1`` semantics recorded in metadata, per-step logits
    at the ``output`` node.

    Args:
      model: a ``VGGSNN``, ``ResNet19`` or ``SEWResNet`` (``tks_jax.models.get_model``).
      variables: ``{'params': ..., 'batch_stats': ...}`` of that model (from ``model.init``
        or a checkpoint).
      input_shape: one step's input as the model takes it, ``(H, W, C)`` (NHWC without batch).
      num_steps: the T the model was trained/evaluated with, recorded in the metadata only
        (NIR graphs run for any number of steps).

    Returns:
      A type-checked ``nir.NIRGraph`` with nodes ``input`` (per-step shape ``[C, H, W]``), ...,
      ``output`` (``[num_classes]``).

    Raises:
      ExportError (a ``ValueError``): the model or an option has no exact NIR form, or the
        variables / input shape do not fit the model; the message names the layer.
      ImportError: the ``nir`` package is missing.
    """
    require_nir()
    check_exportable(model)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ExportError(
            "input_shape must be one step's (H, W, C) with positive sizes, got "
            f"{tuple(input_shape)} (drop the time and batch axes; NIR's input node records "
            "[C, H, W] per step)."
        )
    if num_steps is not None and (isinstance(num_steps, bool) or int(num_steps) < 1):
        raise ExportError(f"num_steps must be an int >= 1 or None, got {num_steps!r}.")
    if "params" not in variables:
        raise ExportError("variables has no 'params' collection (pass model.init(...) output).")
    h, w, c = shape
    b = _Builder(params=variables["params"], stats=variables.get("batch_stats", {}),
                 tau=float(model.tau), v_threshold=float(model.v_threshold))
    x = b.add("input", nir.Input(input_type={"input": np.array([c, h, w])},
                                 metadata={"layout": INPUT_LAYOUT}), (c, h, w))
    if isinstance(model, VGGSNN):
        arch, logits = "vgg_snn", _vgg(b, x)
    elif isinstance(model, ResNet19):
        arch, logits = "resnet19", _resnet19(model, b, x)
    else:
        arch, logits = "sew_resnet", _sew(model, b, x)
    (classes,) = b.shapes[logits]
    if classes != model.num_classes:
        raise ExportError(
            f"read-out has {classes} outputs but the model has num_classes={model.num_classes}; "
            "the variables do not belong to this model."
        )
    b.add("output", nir.Output(output_type={"output": np.array([classes])}), (classes,), logits)
    metadata: dict[str, Any] = {
        "source": "tks-jax",
        "architecture": arch,
        "norm": f"{model.norm} (folded into the convolutions, inference statistics)",
        "dt": 1.0,
        "time_unit": "one simulation step per input frame",
        "input_layout": INPUT_LAYOUT,
        "readout": READOUT,
        **{f"neuron_{k}": v for k, v in NEURON_SEMANTICS.items()},
        "edge_semantics": "a node's inputs are the sum of all its incoming edges",
    }
    if num_steps is not None:
        metadata["num_steps"] = int(num_steps)
    return b.graph(metadata)
