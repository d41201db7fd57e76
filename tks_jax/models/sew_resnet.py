"""Spike-element-wise (SEW) ResNets: SEW-ResNet-18/34/50 (ImageNet) and SEW-ResNet-19 (CIFAR).

``docs/method.md`` §7; Fang et al., "Deep Residual Learning in Spiking Neural Networks",
NeurIPS 2021.

SEW block: ``out = LIF(Norm(conv(LIF(Norm(conv(x, stride)))))); out = g(out, id)`` with
``id = LIF(Norm(conv1x1(x, stride)))`` when the shape changes, else ``x``, and the connect
function ``g``: ADD ``out + id`` (default), IAND ``(1 - out) * id``, AND ``out * id``.
The Bottleneck (SEW-ResNet-50) is conv1x1 -> conv3x3(stride) -> conv1x1(x4), each followed by
Norm and LIF, as in SpikingJelly's ``sew_resnet`` (stride on the 3x3 conv, torchvision v1.5).

- SEW-ResNet-18/34/50: conv7x7 s2 -> Norm -> LIF -> maxpool 3 s2; stages 64-128-256-512
  (x4 for Bottleneck) with [2,2,2,2] / [3,4,6,3] / [3,4,6,3] blocks, stride 2 at the first
  block of stages 2-4; global average pool -> FC(C).
- SEW-ResNet-19: conv3x3(3->64) -> Norm -> LIF; stages 128-256-512 with 3, 3, 2 basic blocks
  (stride 2 at the first block of stages 2 and 3); global average pool -> FC(512->256) ->
  LIF -> FC(256->C).

With ``norm='tdbn'`` every norm gets ``a = 1``: SEW adds spikes after the LIF, so no BN sits
directly before a residual addition (choice; ``docs/method.md`` §6 defines ``a`` for
ResNet-19).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from tks_jax.models import base, layers

Array = jax.Array

CONNECTS = ("add", "iand", "and")


def connect(out: Array, identity: Array, how: str) -> Array:
    """SEW connect function ``g(A, S)`` of the residual spikes ``out`` and ``identity``."""
    if how == "add":
        return out + identity
    if how == "iand":
        return (1 - out) * identity
    if how == "and":
        return out * identity
    raise ValueError(f"Unknown SEW connect function {how!r}; choose one of {list(CONNECTS)}.")


class _SEWBlock(nn.Module):
    """The options of a SEW residual block.

    Attributes:
      features: output channels (``SEWBasicBlock``) or channels of the 3x3 conv
        (``SEWBottleneck``, which outputs ``expansion * features``).
      strides: stride of the strided conv and the downsample.
      config: shared options.
      connect: ``'add'``, ``'iand'`` or ``'and'``.
    """

    features: int
    strides: int
    config: base.SpikingConfig
    connect: str = "add"


class SEWBasicBlock(_SEWBlock):
    """Two 3x3 conv-norm-LIF units (the first strided) and a spike-element-wise shortcut."""

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        """``[T, B, H, W, C] -> [T, B, H/s, W/s, features]``."""
        cfg = self.config
        out = base.ConvNormLIF(self.features, 3, self.strides, cfg, name="unit1")(x, train=train)
        out = base.ConvNormLIF(self.features, 3, 1, cfg, name="unit2")(out, train=train)
        identity = _downsample(x, self.features, self.strides, cfg, train)
        return connect(out, identity, self.connect)


class SEWBottleneck(_SEWBlock):
    """1x1 -> 3x3(stride) -> 1x1(x4) conv-norm-LIF units and a SEW shortcut.

    Attributes:
      expansion: output channels per ``features`` (4).
    """

    expansion: int = 4

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        """``[T, B, H, W, C] -> [T, B, H/s, W/s, 4 * features]``."""
        cfg = self.config
        out_features = self.features * self.expansion
        out = base.ConvNormLIF(self.features, 1, 1, cfg, name="unit1")(x, train=train)
        out = base.ConvNormLIF(self.features, 3, self.strides, cfg, name="unit2")(out, train=train)
        out = base.ConvNormLIF(out_features, 1, 1, cfg, name="unit3")(out, train=train)
        identity = _downsample(x, out_features, self.strides, cfg, train)
        return connect(out, identity, self.connect)


def _downsample(
    x: Array, features: int, strides: int, cfg: base.SpikingConfig, train: bool
) -> Array:
    """``LIF(Norm(conv1x1(x, stride)))`` when the shape changes, else ``x`` (inside a block)."""
    if strides == 1 and x.shape[-1] == features:
        return x
    return base.ConvNormLIF(features, 1, strides, cfg, name="downsample")(x, train=train)


class SEWResNet(base.SpikingNet):
    """SEW-ResNet family (``docs/method.md`` §7). Options: see ``base.SpikingNet``.

    Attributes:
      stage_sizes: blocks per stage.
      block: ``'basic'`` or ``'bottleneck'``.
      connect: SEW connect function, ``'add'`` (default), ``'iand'`` or ``'and'``.
      stem: ``'imagenet'`` (conv7x7 s2 + maxpool, 64 channels) or ``'cifar'`` (conv3x3 s1, 64
        channels, no pool).
      stage_widths: channels per stage (before ``width``; Bottleneck outputs 4x).
      hidden: features of the spiking hidden FC (None: a single FC read-out).
    """

    stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
    block: str = "basic"
    connect: str = "add"
    stem: str = "imagenet"
    stage_widths: tuple[int, ...] = (64, 128, 256, 512)
    hidden: int | None = None

    @nn.compact
    def __call__(self, x: Array, *, num_steps: int, train: bool = False) -> Array:
        """Per-step logits ``[T, B, num_classes]``; arguments as ``SpikingNet.__call__``."""
        if self.connect not in CONNECTS:
            raise ValueError(
                f"Unknown SEW connect function {self.connect!r}; choose one of {list(CONNECTS)}."
            )
        x, num_steps = self.check_input(x, num_steps)
        cfg = self.config
        if self.stem == "imagenet":
            unit = base.ConvNormLIF(self.channels(64), 7, 2, cfg, name="stem")
            x = base.apply_stem(unit, x, num_steps=num_steps, train=train)
            x = layers.max_pool(x, 3, 2, 1)
        else:
            unit = base.ConvNormLIF(self.channels(64), 3, 1, cfg, name="stem")
            x = base.apply_stem(unit, x, num_steps=num_steps, train=train)
        block_cls = SEWBottleneck if self.block == "bottleneck" else SEWBasicBlock
        stages = zip(self.stage_widths, self.stage_sizes, strict=True)
        for i, (features, blocks) in enumerate(stages):
            for j in range(blocks):
                strides = 2 if (i > 0 and j == 0) else 1
                x = block_cls(
                    self.channels(features), strides, cfg, self.connect, name=f"layer{i + 1}_{j}"
                )(x, train=train)
        x = layers.global_avg_pool(x)
        if self.hidden is not None:
            x = layers.Linear(self.channels(self.hidden), dtype=self.dtype, name="fc1")(x)
            x = cfg.make_lif(name="fc1_lif")(x)
        logits = layers.Linear(self.num_classes, dtype=self.dtype, name="fc")(x)
        return logits.astype(jnp.float32)
