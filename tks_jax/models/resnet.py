"""ResNet-19 with tdBN (``docs/method.md`` §7; CIFAR 32x32x3, T = 4; Zheng et al. 2021).

    conv3x3(3->128) -> tdBN -> LIF
    stages of BasicBlocks: widths 128, 256, 512; 3, 3, 2 blocks; stride 2 at the first block
      of stages 2 and 3
    global average pool -> FC(512->256) -> LIF -> FC(256->C)

BasicBlock: ``LIF(tdBN_a(conv3x3(LIF(tdBN(conv3x3(x, stride))))) + shortcut(x))`` with
``shortcut = tdBN_a(conv1x1(x, stride))`` when the shape changes, else ``x``;
``a = 1/sqrt(2)`` (``docs/method.md`` §6). Both FC layers have a bias (PyTorch
``nn.Linear``).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from tks_jax.models import base, layers

Array = jax.Array

# tdBN's a before a residual addition (docs/method.md §6).
RESIDUAL_ALPHA = 1.0 / math.sqrt(2.0)


class BasicBlock(nn.Module):
    """ResNet-19 basic block on ``[T, B, H, W, C]`` (``docs/method.md`` §7).

    Attributes:
      features: output channels.
      strides: stride of the first conv and of the shortcut.
      config: shared options.
    """

    features: int
    strides: int
    config: base.SpikingConfig

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        """``[T, B, H, W, C] -> [T, B, H/s, W/s, features]`` spikes."""
        cfg = self.config
        out = base.ConvNormLIF(self.features, 3, self.strides, cfg, name="unit1")(x, train=train)

        def tail(mdl: BasicBlock, out: Array, x: Array) -> Array:
            out = cfg.make_conv(mdl.features, 3, 1, name="conv2")(out)
            out = cfg.make_norm(RESIDUAL_ALPHA, name="norm2")(out, train=train)
            if mdl.strides != 1 or x.shape[-1] != mdl.features:
                shortcut = cfg.make_conv(mdl.features, 1, mdl.strides, name="shortcut_conv")(x)
                shortcut = cfg.make_norm(RESIDUAL_ALPHA, name="shortcut_norm")(
                    shortcut, train=train
                )
            else:
                shortcut = x
            return cfg.make_lif(name="lif2")(out + shortcut)

        if cfg.remat:  # the second half of the block recomputed too (same parameter tree)
            tail = nn.remat(tail)
        return tail(self, out, x)


class ResNet19(base.SpikingNet):
    """ResNet-19 (``docs/method.md`` §7). Options: see ``base.SpikingNet``; default norm tdBN.

    Attributes:
      stage_widths: channels of the three stages (before ``width``).
      stage_sizes: blocks per stage.
      stem_width: channels of the stem conv.
      hidden: features of the spiking hidden FC layer.
    """

    stage_widths: tuple[int, ...] = (128, 256, 512)
    stage_sizes: tuple[int, ...] = (3, 3, 2)
    stem_width: int = 128
    hidden: int = 256

    @nn.compact
    def __call__(self, x: Array, *, num_steps: int, train: bool = False) -> Array:
        """Per-step logits ``[T, B, num_classes]``; arguments as ``SpikingNet.__call__``."""
        x, num_steps = self.check_input(x, num_steps)
        cfg = self.config
        stem = base.ConvNormLIF(self.channels(self.stem_width), 3, 1, cfg, name="stem")
        x = base.apply_stem(stem, x, num_steps=num_steps, train=train)
        stages = zip(self.stage_widths, self.stage_sizes, strict=True)
        for i, (features, blocks) in enumerate(stages):
            for j in range(blocks):
                strides = 2 if (i > 0 and j == 0) else 1
                x = BasicBlock(self.channels(features), strides, cfg, name=f"layer{i + 1}_{j}")(
                    x, train=train
                )
        x = layers.global_avg_pool(x)
        x = layers.Linear(self.channels(self.hidden), dtype=self.dtype, name="fc1")(x)
        x = cfg.make_lif(name="fc1_lif")(x)
        logits = layers.Linear(self.num_classes, dtype=self.dtype, name="fc2")(x)
        return logits.astype(jnp.float32)
