"""VGG-SNN for event data (``docs/method.md`` §7; DVS-CIFAR10 / N-Caltech101, 48x48x2, T = 10).

    64C3-128C3-AP2-256C3-256C3-AP2-512C3-512C3-AP2-512C3-512C3-AP2-FC(C)

Each C3 is conv 3x3 (stride 1, pad 1, no bias) -> norm -> LIF; AP2 is 2x2 average pooling of
the spikes; the read-out FC (with bias) is linear and non-spiking, applied at every step. The
flatten size follows the input: 48x48 gives 512*3*3 = 4608, 34x34 gives 512*2*2, 28x28 gives
512*1*1 (pooling floors, as PyTorch's ``AvgPool2d``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from tks_jax.models import base, layers

Array = jax.Array

# Channels of each C3; "A" is a 2x2 average pool (``docs/method.md`` §7).
VGG_SNN_PLAN: tuple[int | str, ...] = (64, 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A")


class VGGSNN(base.SpikingNet):
    """VGG-SNN (``docs/method.md`` §7). Options: see ``base.SpikingNet``."""

    @nn.compact
    def __call__(self, x: Array, *, num_steps: int, train: bool = False) -> Array:
        """Per-step logits ``[T, B, num_classes]``; arguments as ``SpikingNet.__call__``."""
        x, num_steps = self.check_input(x, num_steps)
        cfg = self.config
        index = 0
        for item in VGG_SNN_PLAN:
            if item == "A":
                x = layers.avg_pool(x, 2)
                continue
            index += 1
            unit = base.ConvNormLIF(self.channels(item), 3, 1, cfg, name=f"conv{index}")
            if index == 1:
                x = base.apply_stem(unit, x, num_steps=num_steps, train=train)
            else:
                x = unit(x, train=train)
        if x.shape[2] == 0 or x.shape[3] == 0:
            raise ValueError("VGG-SNN pools 4 times by 2; the input must be at least 16x16 pixels.")
        x = x.reshape(x.shape[:2] + (-1,))
        logits = layers.Linear(self.num_classes, dtype=self.dtype, name="fc")(x)
        return logits.astype(jnp.float32)
