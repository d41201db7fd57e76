"""Straightforward Flax versions of VGG-SNN and ResNet-19, built from ``benchmarks/arch.py``.

The benchmark's baseline: convolutions on the folded ``T*B`` batch with ``flax.linen.Conv``,
BatchNorm over the folded batch (tdBN statistics), LIF as ``tks_jax.spiking.lif``. They follow
the calling convention of ``tks_jax.models`` (``model.apply(vars, x, num_steps=T, train=...)``
-> logits ``[T, B, C]``), so the benchmark can use either.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks import arch
from tks_jax import spiking
from tks_jax.models import kernels

# "lax": XLA's convolution and its autodiff; "gemm_wgrad": on CPU, XLA's forward and input
# gradient with the weight gradient as one GEMM (the zoo's conv="direct", ``kernels.conv``).
CONV_IMPLS = {"lax": None, "gemm_wgrad": kernels.conv_function("direct")}


def _fold(x: jax.Array) -> jax.Array:
    return x.reshape((-1,) + x.shape[2:])


class _ConvBN(nn.Module):
    layer: arch.Layer
    conv_impl: str = "lax"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        k = self.layer.kernel
        pad = k // 2
        x = nn.Conv(
            self.layer.cout,
            (k, k),
            strides=self.layer.stride,
            padding=[(pad, pad), (pad, pad)],
            use_bias=False,
            conv_general_dilated=CONV_IMPLS[self.conv_impl],
        )(x)
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)


def _lif(x: jax.Array, num_steps: int, impl: str = "fast", unroll: int = 1) -> jax.Array:
    """LIF on a folded ``[T*B, ...]`` array; returns the folded spikes.

    ``impl``: "fast" is ``tks_jax.spiking.lif`` (backend "custom_vjp": one custom VJP over the
    whole scan); "autodiff" is its backend "scan" (the per-step scan differentiated by JAX).
    """
    seq = x.reshape((num_steps, -1) + x.shape[1:])
    if impl == "autodiff":
        spikes = spiking.lif(seq, tau=2.0, v_threshold=0.5, backend="scan")
    else:
        spikes = spiking.lif(seq, tau=2.0, v_threshold=0.5, unroll=unroll)
    return _fold(spikes)


class _ReferenceNet(nn.Module):
    """The options both reference models take."""

    width: float = 1.0
    num_classes: int = arch.NUM_CLASSES
    conv_impl: str = "lax"
    lif_impl: str = "fast"
    lif_unroll: int = 1

    def _spike(self, h: jax.Array, num_steps: int) -> jax.Array:
        """The LIF layer of this model on folded currents ``[T * B, ...]``."""
        return _lif(h, num_steps, self.lif_impl, self.lif_unroll)


class VGGSNN(_ReferenceNet):
    """VGG-SNN (``docs/method.md`` §7) on event input ``[T, B, 48, 48, 2]``."""

    @nn.compact
    def __call__(self, x: jax.Array, *, num_steps: int, train: bool) -> jax.Array:
        layers = arch.vgg_snn(self.width, self.num_classes)
        h = _fold(x)
        for layer in layers[:-1]:
            if h.shape[1] != layer.hw:  # AP2 between groups
                h = nn.avg_pool(h, (2, 2), strides=(2, 2))
            h = self._spike(_ConvBN(layer, self.conv_impl)(h, train), num_steps)
        h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = h.reshape(h.shape[0], -1)
        logits = nn.Dense(self.num_classes)(h)
        return logits.reshape((num_steps, -1, self.num_classes))


class ResNet19(_ReferenceNet):
    """ResNet-19 with tdBN (``docs/method.md`` §7) on static input ``[B, 32, 32, 3]``."""

    @nn.compact
    def __call__(self, x: jax.Array, *, num_steps: int, train: bool) -> jax.Array:
        layers = {layer.name: layer for layer in arch.resnet19(self.width, self.num_classes)}
        # Direct encoding: the first conv + BN is the same at every step; compute it once.
        h = _ConvBN(layers["stem"], self.conv_impl)(x, train)
        h = jnp.broadcast_to(h[None], (num_steps,) + h.shape)
        h = self._spike(_fold(h), num_steps)
        names = sorted({n.split(".")[0] for n in layers if "." in n})
        for name in names:
            out = self._spike(_ConvBN(layers[f"{name}.conv1"], self.conv_impl)(h, train), num_steps)
            out = _ConvBN(layers[f"{name}.conv2"], self.conv_impl)(out, train)
            short = layers.get(f"{name}.short")
            h = self._spike(
                out + (_ConvBN(short, self.conv_impl)(h, train) if short else h), num_steps
            )
        h = jnp.mean(h, axis=(1, 2))
        h = self._spike(nn.Dense(layers["fc1"].cout)(h), num_steps)
        logits = nn.Dense(self.num_classes)(h)
        return logits.reshape((num_steps, -1, self.num_classes))


MODELS = {"vgg_snn": VGGSNN, "resnet19": ResNet19}
