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
from tks_jax.models import chunked, layers

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

        if (
            cfg.remat
            and train
            and x.ndim == 5
            and num_steps is None
            and jnp.dtype(cfg.dtype) == jnp.float32
            and not self.is_mutable_collection("intermediates")
            and self._chunks(x) > 1
        ):
            return self._chunked(x)
        if cfg.remat:
            # Recompute conv, norm and LIF in the backward pass: only the unit's input is
            # stored (same parameter tree). Alone (every unit), VGG-SNN T=32: peak memory
            # 0.77x, time +3%; large units take the chunked path above instead (issue 6).
            unit = nn.remat(unit)
        return unit(self, x)

    def _chunks(self, x: Array) -> int:
        """Number of time chunks the chunked unit would take (1: it fits in one, and plain
        ``nn.remat`` is cheaper: two conv forwards instead of three)."""
        pad = self.kernel_size // 2
        h, w = ((d + 2 * pad - self.kernel_size) // self.strides + 1 for d in x.shape[2:4])
        per_step = x.shape[1] * h * w * self.features * 4
        return x.shape[0] // chunked.chunk_steps(x.shape[0], per_step)

    def _chunked(self, x: Array) -> Array:
        """Training with ``remat``: the unit a few time steps at a time (``models/chunked.py``),
        on the same variables as ``Conv``, ``Norm`` and ``LIF`` (identical paths and inits)."""
        cfg = self.config
        kernel = _ConvVars((self.kernel_size, self.kernel_size, x.shape[-1], self.features),
                           name="conv")()
        norm = _NormVars(self.features, cfg.norm, self.alpha, cfg.v_threshold, cfg.num_steps,
                         name="norm")
        scale, bias, ra_mean, ra_var, step_scale = norm(x.shape[0])
        spikes, mean, var = chunked.conv_norm_lif(
            x, kernel, scale, bias, step_scale,
            strides=self.strides, padding=self.kernel_size // 2, algorithm=cfg.conv,
            epsilon=layers.BN_EPSILON, tau=cfg.tau, v_threshold=cfg.v_threshold,
            surrogate=spiking.get_surrogate(cfg.surrogate, cfg.surrogate_alpha),
            detach_reset=cfg.detach_reset,
        )
        if not self.is_initializing():
            m = layers.BN_MOMENTUM
            ra_mean.value = m * ra_mean.value + (1 - m) * mean
            ra_var.value = m * ra_var.value + (1 - m) * var
        return spikes


class _KernelVar(nn.Module):
    """``flax.linen.Conv``'s kernel variable (no computation)."""

    shape: tuple[int, ...]

    @nn.compact
    def __call__(self) -> Array:
        return self.param("kernel", layers.torch_kernel_init, self.shape, jnp.float32)


class _ConvVars(nn.Module):
    """The variables of ``layers.Conv`` (``conv/kernel``), for the chunked unit."""

    shape: tuple[int, ...]

    @nn.compact
    def __call__(self) -> Array:
        return _KernelVar(self.shape, name="conv")()


class _BatchNormVars(nn.Module):
    """``flax.linen.BatchNorm``'s variables: params scale and bias, batch_stats mean and var."""

    features: int
    scale_init: float

    @nn.compact
    def __call__(self):
        shape = (self.features,)
        scale = self.param("scale", nn.initializers.constant(self.scale_init), shape, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, shape, jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(shape, jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones(shape, jnp.float32))
        return scale, bias, ra_mean, ra_var


class _NormVars(nn.Module):
    """The variables of ``layers.Norm`` (``bn/...``, TEBN's ``step_scale``), same checks."""

    features: int
    kind: str
    alpha: float
    v_threshold: float
    max_steps: int | None

    @nn.compact
    def __call__(self, num_steps: int):
        if self.kind not in layers.NORMS:
            raise ValueError(f"Unknown norm {self.kind!r}; choose one of {list(layers.NORMS)}.")
        scale_init = self.alpha * self.v_threshold if self.kind == "tdbn" else 1.0
        scale, bias, ra_mean, ra_var = _BatchNormVars(self.features, scale_init, name="bn")()
        step_scale = None
        if self.kind == "tebn":
            if self.max_steps is None:
                raise ValueError("norm='tebn' needs num_steps (the number of per-step scales).")
            if num_steps > self.max_steps:
                raise ValueError(
                    f"TEBN has {self.max_steps} per-step scales (num_steps={self.max_steps} at "
                    f"construction) but was run with T={num_steps}; run with T <= "
                    f"{self.max_steps} or build the model with a larger num_steps."
                )
            p = self.param("step_scale", nn.initializers.ones, (self.max_steps,), jnp.float32)
            step_scale = p[:num_steps]
        return scale, bias, ra_mean, ra_var, step_scale


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
