"""What every spiking model of the zoo shares: options, input handling, the conv-norm-LIF unit.

Method: ``docs/method.md`` §7 (direct encoding, time-major layout).
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tks_jax import spiking
from tks_jax.models import kernels, layers
from tks_jax.models.kernels import conv_norm_lif

Array = jax.Array
Dtype = Any

# Bytes of one time chunk's conv output in the memory-saving unit (``ConvNormLIF``): bounds
# its live transients. Read at trace time.
UNIT_CHUNK_BYTES = conv_norm_lif.CHUNK_BYTES


@dataclasses.dataclass(repr=False, eq=False)
class _NormOptions:
    """The first two fields of ``SpikingOptions``."""

    norm: str = "tdbn"
    num_steps: int | None = None


# A dataclass lists its bases' fields from the last base to the first: norm, num_steps, the
# LIF options, then dtype and conv (the order of the positional constructor arguments).
@dataclasses.dataclass(repr=False, eq=False)
class SpikingOptions(layers.LIFOptions, _NormOptions):
    """The neuron and normalisation options of a model, declared once: the fields of
    ``SpikingConfig`` and of every model (``SpikingNet``).

    Attributes:
      norm: ``'tdbn'``, ``'tebn'`` or ``'bn'`` (``docs/method.md`` §6).
      num_steps: number of TEBN per-step scales (see ``SpikingNet``).
      tau, v_threshold, surrogate, surrogate_alpha, detach_reset, remat: LIF options
        (``layers.LIFOptions``, ``tks_jax.spiking.lif``).
      dtype: compute dtype.
      conv: how convolutions are computed (``kernels.CONV_ALGORITHMS``).
    """

    dtype: Dtype = jnp.float32
    conv: str = "auto"


# Hashable, as a flax module attribute must be; not frozen, since a frozen dataclass cannot
# derive from the options base it shares with the (non-frozen) flax modules.
@dataclasses.dataclass(unsafe_hash=True)
class SpikingConfig(SpikingOptions):
    """Neuron and normalisation options shared by all layers of one model (hashable; the
    fields of ``SpikingOptions``, with ``num_steps`` None when ``norm != 'tebn'``)."""

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
        """A norm layer; ``alpha`` is tdBN's factor ``a`` (``docs/method.md`` §6)."""
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
        """A bias-free conv with ``padding = kernel_size // 2``, computed by the algorithm
        ``conv`` (``kernels.conv_function``)."""
        return layers.Conv(
            features, kernel_size, strides, dtype=self.dtype,
            conv_general_dilated=kernels.conv_function(self.conv), name=name,
        )


class ConvNormLIF(nn.Module):
    """``LIF(Norm(Conv(x)))``, the unit of every model (``docs/method.md`` §7).

    With the model's ``remat`` in training, the unit is either rematerialised whole
    (``nn.remat``: only its input is stored) or, when ``memory_saving`` says so, computed a few
    time steps at a time by ``kernels.conv_norm_lif`` on the variables of the same ``Conv``
    and ``Norm`` (same parameter tree, same maths).

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
        if self.memory_saving(x, train=train, num_steps=num_steps):
            return self._chunked(x)

        def unit(mdl: ConvNormLIF, x: Array) -> Array:
            y = cfg.make_conv(mdl.features, mdl.kernel_size, mdl.strides, name="conv")(x)
            y = cfg.make_norm(mdl.alpha, name="norm")(y, train=train, num_steps=num_steps)
            return cfg.make_lif(name="lif")(y)

        if cfg.remat:
            # Recompute conv, norm and LIF in the backward pass: only the unit's input is
            # stored (same parameter tree).
            unit = nn.remat(unit)
        return unit(self, x)

    def memory_saving(self, x: Array, *, train: bool, num_steps: int | None) -> bool:
        """Whether this call runs the chunked unit (``kernels.conv_norm_lif``).

        Only for ``remat`` training after ``init`` on time-major float32 input (the chunked
        unit sows no ``intermediates``), and only when the output spans several chunks of
        ``UNIT_CHUNK_BYTES``: in one chunk, ``nn.remat`` is cheaper (two conv forwards
        instead of three).
        """
        cfg = self.config
        if not (cfg.remat and train and x.ndim == 5 and num_steps is None):
            return False
        if jnp.dtype(cfg.dtype) != jnp.float32 or self.is_initializing():
            return False
        if self.is_mutable_collection("intermediates"):
            return False
        pad = self.kernel_size // 2
        h, w = ((d + 2 * pad - self.kernel_size) // self.strides + 1 for d in x.shape[2:4])
        per_step = x.shape[1] * h * w * self.features * 4
        steps = conv_norm_lif.chunk_steps(x.shape[0], per_step, UNIT_CHUNK_BYTES)
        return x.shape[0] // steps > 1

    def _chunked(self, x: Array) -> Array:
        """The unit a few time steps at a time, on the variables of ``Conv`` and ``Norm``."""
        cfg = self.config
        conv = cfg.make_conv(self.features, self.kernel_size, self.strides, name="conv")
        norm = cfg.make_norm(self.alpha, name="norm")
        bn = norm.batch_norm_state(x.shape[0])
        spikes, mean, var = conv_norm_lif.conv_norm_lif(
            x, conv.kernel(), bn.scale, bn.bias, bn.step_scale,
            strides=self.strides, padding=self.kernel_size // 2, algorithm=cfg.conv,
            epsilon=layers.BN_EPSILON, tau=cfg.tau, v_threshold=cfg.v_threshold,
            surrogate=spiking.get_surrogate(cfg.surrogate, cfg.surrogate_alpha),
            detach_reset=cfg.detach_reset, chunk_bytes=UNIT_CHUNK_BYTES,
        )
        norm.update_running_stats(mean, var)
        return spikes


@dataclasses.dataclass(repr=False, eq=False)
class _ReadOutOptions:
    """The first two fields of ``SpikingNet``."""

    num_classes: int = 10
    width: float = 1.0


class SpikingNet(SpikingOptions, _ReadOutOptions, nn.Module):
    """Base class of the zoo: the options every model takes, and input validation.

    Subclasses implement ``__call__`` (per-step logits; see ``SpikingNet.__call__``).

    Attributes:
      num_classes: number of classes of the linear read-out.
      width: channel multiplier (channels rounded to a multiple of 8; 1.0 = the paper's).
      norm: ``'tdbn'``, ``'tebn'`` or ``'bn'``.
      num_steps: only sizes TEBN's per-step scales (the largest T the model can run with
        ``norm='tebn'``); other norms run at any T and ignore it.
      tau, v_threshold, surrogate, surrogate_alpha, detach_reset, remat: LIF options.
      dtype: compute dtype (``jnp.float32`` or ``jnp.bfloat16``); parameters, BN statistics and
        LIF membranes are float32 and logits are returned in float32.
      conv: how convolutions are computed, one of ``kernels.CONV_ALGORITHMS``.
    """

    @property
    def config(self) -> SpikingConfig:
        """The shared layer options of this model."""
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(SpikingOptions)}
        if self.norm != "tebn":
            options["num_steps"] = None
        return SpikingConfig(**options)

    def __call__(self, x: Array, *, num_steps: int, train: bool = False) -> Array:
        """Per-step logits (every model of the zoo implements this).

        Args:
          x: static images ``[B, H, W, C]`` (direct encoding) or event frames
            ``[T, B, H, W, C]``.
          num_steps: T.
          train: batch statistics in the norms if True.

        Returns:
          Logits ``[T, B, num_classes]`` in float32.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__.")

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
    broadcast over ``num_steps`` (``docs/method.md`` §7); events ``[T, B, H, W, C]`` are folded.

    Returns:
      Spikes ``[T, B, H', W', C']``.
    """
    if x.ndim == 4:
        return unit(x, train=train, num_steps=num_steps)
    return unit(x, train=train)
