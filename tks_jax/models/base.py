"""What every spiking model of the zoo shares: options, input handling, the conv-norm-LIF unit.

Spec: ``shared/spec/tks-method.md`` section 7 (direct encoding, time-major layout).
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tks_jax import spiking
from tks_jax.models import layers

Array = jax.Array
Dtype = Any


@dataclasses.dataclass(frozen=True)
class SpikingConfig:
    """Neuron and normalisation options shared by all layers of one model (hashable).

    Attributes:
      norm: ``'tdbn'``, ``'tebn'`` or ``'bn'`` (spec section 6).
      num_steps: number of TEBN per-step scales; None when ``norm != 'tebn'``.
      tau, v_threshold, surrogate, surrogate_alpha, detach_reset, remat: LIF options
        (``tks_jax.spiking.lif``).
      dtype: compute dtype.
      conv: how convolutions are computed (``layers.CONV_ALGORITHMS``).
    """

    norm: str = "tdbn"
    num_steps: int | None = None
    tau: float = 2.0
    v_threshold: float = 0.5
    surrogate: str | spiking.Surrogate = "qgate"
    surrogate_alpha: float | None = None
    detach_reset: bool = True
    remat: bool = False
    dtype: Dtype = jnp.float32
    conv: str = "auto"

    def make_lif(self, name: str | None = None) -> layers.LIF:
        """A LIF layer with these options (call inside a compact method)."""
        return layers.LIF(
            tau=self.tau,
            v_threshold=self.v_threshold,
            surrogate=self.surrogate,
            surrogate_alpha=self.surrogate_alpha,
            detach_reset=self.detach_reset,
            remat=self.remat,
            name=name,
        )

    def make_norm(self, alpha: float = 1.0, name: str | None = None) -> layers.Norm:
        """A norm layer; ``alpha`` is tdBN's factor ``a`` (spec section 6)."""
        return layers.Norm(
            kind=self.norm,
            alpha=alpha,
            v_threshold=self.v_threshold,
            max_steps=self.num_steps,
            dtype=self.dtype,
            name=name,
        )

    def make_conv(
        self, features: int, kernel_size: int = 3, strides: int = 1, name: str | None = None
    ) -> layers.Conv:
        """A bias-free conv with ``padding = kernel_size // 2``."""
        return layers.Conv(
            features, kernel_size, strides, dtype=self.dtype, algorithm=self.conv, name=name
        )


class ConvNormLIF(nn.Module):
    """``LIF(Norm(Conv(x)))``, the unit of every model (spec section 7).

    Attributes:
      features: output channels.
      kernel_size: conv kernel size.
      strides: conv stride.
      config: shared options.
      alpha: tdBN factor of the norm.
    """

    features: int
    kernel_size: int
    strides: int
    config: SpikingConfig
    alpha: float = 1.0

    @nn.compact
    def __call__(self, x: Array, *, train: bool, num_steps: int | None = None) -> Array:
        """Applies conv, norm and LIF.

        Args:
          x: ``[T, B, H, W, C]``; or a static ``[B, H, W, C]`` with ``num_steps`` (conv and norm
            run once, the result is broadcast over T before the LIF).
          train: training mode of the norm.
          num_steps: T for a static input, else None.

        Returns:
          Spikes ``[T, B, H', W', features]``.
        """
        cfg = self.config

        def unit(mdl: ConvNormLIF, x: Array) -> Array:
            y = cfg.make_conv(mdl.features, mdl.kernel_size, mdl.strides, name="conv")(x)
            y = cfg.make_norm(mdl.alpha, name="norm")(y, train=train, num_steps=num_steps)
            return cfg.make_lif(name="lif")(y)

        if cfg.remat:
            # Recompute conv, norm and LIF in the backward pass: only the unit's input is
            # stored (same parameter tree). VGG-SNN T=32: peak memory 0.78x, time +9% (issue 6).
            unit = nn.remat(unit)
        return unit(self, x)


class SpikingNet(nn.Module):
    """Base class of the zoo: the options every model takes, and input validation.

    Subclasses implement ``__call__(x, *, num_steps, train=False) -> logits [T, B, classes]``.

    Attributes:
      num_classes: number of classes of the linear read-out.
      width: channel multiplier (channels rounded to a multiple of 8; 1.0 = the paper's).
      norm: ``'tdbn'``, ``'tebn'`` or ``'bn'``.
      num_steps: only sizes TEBN's per-step scales (the largest T the model can run with
        ``norm='tebn'``); other norms run at any T and ignore it.
      tau, v_threshold, surrogate, surrogate_alpha, detach_reset, remat: LIF options.
      dtype: compute dtype (``jnp.float32`` or ``jnp.bfloat16``); parameters and BN statistics
        are float32 and logits are returned in float32.
      conv: how convolutions are computed, one of ``layers.CONV_ALGORITHMS``.
    """

    num_classes: int = 10
    width: float = 1.0
    norm: str = "tdbn"
    num_steps: int | None = None
    tau: float = 2.0
    v_threshold: float = 0.5
    surrogate: str | spiking.Surrogate = "qgate"
    surrogate_alpha: float | None = None
    detach_reset: bool = True
    remat: bool = False
    dtype: Dtype = jnp.float32
    conv: str = "auto"

    @property
    def config(self) -> SpikingConfig:
        """The shared layer options of this model."""
        return SpikingConfig(
            norm=self.norm,
            num_steps=self.num_steps if self.norm == "tebn" else None,
            tau=self.tau,
            v_threshold=self.v_threshold,
            surrogate=self.surrogate,
            surrogate_alpha=self.surrogate_alpha,
            detach_reset=self.detach_reset,
            remat=self.remat,
            dtype=self.dtype,
            conv=self.conv,
        )

    def channels(self, c: int) -> int:
        """``c`` scaled by ``width``."""
        return layers.scaled_channels(c, self.width)

    def check_input(self, x: Array, num_steps: int) -> tuple[Array, int]:
        """Validates the input and the number of steps; casts to the compute dtype.

        Args:
          x: static images ``[B, H, W, C]`` or event frames ``[T, B, H, W, C]``.
          num_steps: T (a Python int >= 1); must equal ``x.shape[0]`` for events.

        Returns:
          ``(x, num_steps)`` with ``x`` in the compute dtype.

        Raises:
          ValueError: wrong rank, bad ``num_steps``, T mismatch, or ``num_steps`` above the
            number of TEBN scales.
        """
        try:
            num_steps = operator.index(num_steps)
        except TypeError:
            raise ValueError(
                f"num_steps must be a Python int >= 1 (static under jit), got {num_steps!r}."
            ) from None
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
        x = jnp.asarray(x)
        if x.ndim not in (4, 5):
            raise ValueError(
                f"Expected static images [B, H, W, C] or event frames [T, B, H, W, C], got an "
                f"input of shape {x.shape} (rank {x.ndim})."
            )
        if x.ndim == 5 and x.shape[0] != num_steps:
            raise ValueError(
                f"Event input has T={x.shape[0]} frames (axis 0 of shape {x.shape}) but "
                f"num_steps={num_steps}; pass num_steps={x.shape[0]} or slice the frames."
            )
        if self.norm == "tebn" and self.num_steps is not None and num_steps > self.num_steps:
            raise ValueError(
                f"This model uses TEBN with {self.num_steps} per-step scales and cannot run "
                f"num_steps={num_steps}; use num_steps <= {self.num_steps}."
            )
        return x.astype(self.dtype), num_steps


def apply_stem(unit: nn.Module, x: Array, *, num_steps: int, train: bool) -> Array:
    """Runs the first conv-norm-LIF unit on static or event input.

    Static ``[B, H, W, C]`` input (direct encoding) is convolved and normalised once and
    broadcast over ``num_steps`` (spec section 7); events ``[T, B, H, W, C]`` are folded.

    Returns:
      Spikes ``[T, B, H', W', C']``.
    """
    if x.ndim == 4:
        return unit(x, train=train, num_steps=num_steps)
    return unit(x, train=train)
