"""Building blocks of the spiking model zoo: time folding, conv/linear, tdBN/TEBN/BN, LIF.

Method: ``docs/method.md`` §1 (LIF), §6 (normalisation) and §7 (architectures).

Activations are time-major ``[T, B, ...]``. Stateless layers run on the folded ``[T*B, ...]``
batch (a reshape, never a transpose); only ``LIF`` is sequential, through
``tks_jax.spiking.lif`` (a ``lax.scan`` over T). Static-image stems are computed once on
``[B, ...]`` and broadcast over T by ``Norm``.

Weight initialisation follows PyTorch's defaults, as SpikingJelly and the authors' code get
them: conv and linear kernels ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (``kaiming_uniform_`` with
``a = sqrt(5)``), linear biases the same bound; BN scale 1 (tdBN: ``alpha * v_threshold``),
bias 0.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from tks_jax import spiking
from tks_jax.models import kernels

Array = jax.Array
Dtype = Any

NORMS = ("tdbn", "tebn", "bn")
CONV_ALGORITHMS = kernels.CONV_ALGORITHMS  # values of ``Conv``'s algorithm (the model option)
BN_MOMENTUM = 0.9  # = PyTorch momentum 0.1 (flax keeps `momentum` of the old statistics).
BN_EPSILON = 1e-5  # PyTorch's default.
# Variable collection of the streaming state (``tks_jax.inference``): each LIF's membrane
# ``membrane`` and each TEBN norm's step counter ``step``. Only used when the caller makes it
# mutable (never by ``init`` or training).
STREAM_STATE = "lif_state"

# PyTorch's default kaiming_uniform_(a=sqrt(5)): gain^2 = 2 / (1 + 5), bound = sqrt(3 * 1/3 /
# fan_in) = 1/sqrt(fan_in).
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> Callable:
    """PyTorch's default bias init of ``nn.Linear``/``nn.Conv2d``: ``U(-1/sqrt(fan_in), ..)``."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def fold(x: Array) -> Array:
    """Merges time and batch: ``[T, B, ...] -> [T*B, ...]`` (a reshape, no copy)."""
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def unfold(x: Array, num_steps: int) -> Array:
    """Splits time and batch: ``[T*B, ...] -> [T, B, ...]``."""
    return x.reshape((num_steps, x.shape[0] // num_steps) + x.shape[1:])


def repeat_steps(x: Array, num_steps: int) -> Array:
    """``x`` at every step: ``[B, ...] -> [T, B, ...]``, as ``jnp.broadcast_to``.

    The gradient, the sum of the ``T`` step gradients, is written as ``T - 1`` additions of
    slices in step order (in float32 at least). XLA fuses those into one elementwise kernel
    over all cores, where the reduction over the leading axis that autodiff of
    ``broadcast_to`` emits runs many times slower on XLA:CPU (measured in
    ``benchmarks/README.md``, "The static stem's gradient over T").
    """
    if num_steps < 1:
        raise ValueError(f"repeat_steps needs num_steps >= 1; got {num_steps}")
    return _repeat_steps(x, int(num_steps))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _repeat_steps(x: Array, num_steps: int) -> Array:
    return jnp.broadcast_to(x[None], (num_steps,) + x.shape)


def _repeat_steps_fwd(x, num_steps):
    return _repeat_steps(x, num_steps), None


def _repeat_steps_bwd(num_steps, _, g):
    wide = jnp.promote_types(g.dtype, jnp.float32)  # bfloat16 gradients add in float32
    total = g[0].astype(wide)
    for t in range(1, num_steps):
        total = total + g[t].astype(wide)
    return (total.astype(g.dtype),)


_repeat_steps.defvjp(_repeat_steps_fwd, _repeat_steps_bwd)


def scaled_channels(channels: int, width: float) -> int:
    """Channels times the width multiplier, rounded to a multiple of 8 (at least 8).

    ``width = 1`` returns ``channels`` unchanged for every count used by the zoo.
    """
    if width == 1.0:
        return channels
    return max(8, int(round(channels * width / 8.0)) * 8)


class Conv(nn.Module):
    """Bias-free 2-D convolution (PyTorch ``padding = kernel // 2``) on time-major input.

    Operation counts and energy: ``tks_jax.cost`` (from the inputs each call receives).

    Attributes:
      features: output channels.
      kernel_size: square kernel size.
      strides: square stride.
      dtype: compute dtype (parameters are float32).
      conv_general_dilated: the convolution function, with ``lax.conv_general_dilated``'s
        signature (injected into ``flax.linen.Conv``); ``kernels.conv_function(algorithm)``
        for one of ``CONV_ALGORITHMS`` (same result up to rounding). Default: ``'auto'``.
    """

    features: int
    kernel_size: int = 3
    strides: int = 1
    dtype: Dtype = jnp.float32
    conv_general_dilated: Callable = kernels.conv_function("auto")

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Applies the convolution.

        Args:
          x: ``[T, B, H, W, C]`` (folded to ``[T*B, H, W, C]`` inside) or ``[B, H, W, C]``.

        Returns:
          ``[T, B, H', W', features]`` or ``[B, H', W', features]``.
        """
        pad = self.kernel_size // 2
        conv = nn.Conv(
            self.features,
            (self.kernel_size, self.kernel_size),
            strides=(self.strides, self.strides),
            padding=((pad, pad), (pad, pad)),
            use_bias=False,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=torch_kernel_init,
            conv_general_dilated=self.conv_general_dilated,
            name="conv",
        )
        folded = fold(x) if x.ndim == 5 else x
        y = conv(folded)
        return unfold(y, x.shape[0]) if x.ndim == 5 else y

    def kernel(self) -> Array:
        """The kernel ``[k, k, Cin, features]`` (float32), for a unit that computes the
        convolution itself (``kernels.conv_norm_lif``). Only after ``init``."""
        return self.variables["params"]["conv"]["kernel"]


class Linear(nn.Module):
    """Dense layer with bias and PyTorch's default init; acts on the last axis of any shape.

    Operation counts and energy: ``tks_jax.cost``.

    Attributes:
      features: output features.
      dtype: compute dtype (parameters are float32).
    """

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """``[..., in] -> [..., features]``."""
        return nn.Dense(
            self.features,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=torch_kernel_init,
            bias_init=torch_bias_init(x.shape[-1]),
            name="dense",
        )(x)


class BatchNormState(NamedTuple):
    """A ``Norm``'s variables: BN ``scale``, ``bias``, running ``mean``, ``var`` ``[C]`` and
    TEBN's ``step_scale`` ``[T]`` (None for tdBN and BN)."""

    scale: Array
    bias: Array
    mean: Array
    var: Array
    step_scale: Array | None


class Norm(nn.Module):
    """tdBN, TEBN or plain BN over the folded time-batch (``docs/method.md`` §6).

    All three take their statistics over ``(T, B, H, W)`` per channel, which is BatchNorm on
    the ``T*B`` batch (momentum 0.9 in flax terms = PyTorch 0.1, eps 1e-5). Under ``jax.jit``
    with a batch sharded over devices these are global-batch statistics. Running variances
    are the biased batch variances (PyTorch stores the unbiased one; the difference is a
    factor ``n/(n-1)`` with ``n = T*B*H*W``).

    - ``tdbn`` (Zheng et al. 2021): the BN scale starts at ``alpha * v_threshold``.
    - ``tebn`` (Duan et al. 2022): after BN, step ``t`` is multiplied by a learnable scalar
      ``p_t`` (init 1). ``p`` has ``max_steps`` entries (the configured T). A run with
      ``T < max_steps`` uses ``p_1..p_T`` (causal: the first steps of a longer run are
      unchanged); ``T > max_steps`` raises ``ValueError``. When the ``STREAM_STATE``
      collection is mutable (``tks_jax.inference``), the call continues a run: it uses
      ``p_{t0+1}..p_{t0+T}`` with ``t0`` read from (and advanced in) the variable ``step``.
    - ``bn``: BN with scale 1, bias 0.

    Attributes:
      kind: one of ``NORMS``.
      alpha: tdBN factor ``a`` (1, or ``1/sqrt(2)`` before a residual addition).
      v_threshold: the LIF threshold, for tdBN's scale init.
      max_steps: number of TEBN scales (required for ``tebn``, ignored otherwise).
      dtype: compute dtype.
    """

    kind: str = "tdbn"
    alpha: float = 1.0
    v_threshold: float = 0.5
    max_steps: int | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool, num_steps: int | None = None) -> Array:
        """Normalises ``x``.

        Args:
          x: ``[T, B, ..., C]``; or ``[B, ..., C]`` together with ``num_steps``, meaning the
            same input at every step (direct encoding: BN runs once on ``[B, ...]``, which has
            the same statistics as the ``T`` copies, then the result is broadcast).
          train: batch statistics (and update the running ones) if True, else running ones.
          num_steps: T for the broadcast case; None when ``x`` is already time-major.

        Returns:
          ``[T, B, ..., C]``.
        """
        self._check_kind()
        y = nn.BatchNorm(
            use_running_average=not train,
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            scale_init=nn.initializers.constant(self.scale_init),
            name="bn",
        )(x)
        if num_steps is not None:
            y = repeat_steps(y, num_steps)
        if self.kind == "tebn":
            steps = y.shape[0]
            self._check_steps(steps)
            p = self.param("step_scale", nn.initializers.ones, (self.max_steps,), jnp.float32)
            if self.is_mutable_collection(STREAM_STATE) and not self.is_initializing():
                # Streaming: these ``steps`` steps continue the run at step ``t0`` (0-based).
                t0 = self.variable(STREAM_STATE, "step", jnp.zeros, (), jnp.int32)
                p_run = jax.lax.dynamic_slice(p, (t0.value,), (steps,))
                t0.value = t0.value + steps
            else:
                p_run = p[:steps]
            y = y * p_run.astype(y.dtype).reshape((steps,) + (1,) * (y.ndim - 1))
        return y

    @property
    def scale_init(self) -> float:
        """Initial BN scale: ``alpha * v_threshold`` for tdBN, else 1."""
        return self.alpha * self.v_threshold if self.kind == "tdbn" else 1.0

    def _check_kind(self) -> None:
        if self.kind not in NORMS:
            raise ValueError(f"Unknown norm {self.kind!r}; choose one of {list(NORMS)}.")

    def _check_steps(self, steps: int) -> None:
        """TEBN runs T <= max_steps steps (it has one scale per step)."""
        if self.max_steps is None:
            raise ValueError("norm='tebn' needs num_steps (the number of per-step scales).")
        if steps > self.max_steps:
            raise ValueError(
                f"TEBN has {self.max_steps} per-step scales (num_steps={self.max_steps} at "
                f"construction) but was run with T={steps}; run with T <= {self.max_steps} "
                "or build the model with a larger num_steps."
            )

    def batch_norm_state(self, num_steps: int) -> BatchNormState:
        """This norm's variables, for a unit that computes the normalisation itself
        (``kernels.conv_norm_lif``). Only after ``init`` (the variables exist).

        Args:
          num_steps: T of the run (TEBN uses its first T scales; checked as in ``__call__``).

        Returns:
          A ``BatchNormState``.
        """
        self._check_kind()
        params, stats = self.variables["params"], self.variables["batch_stats"]
        step_scale = None
        if self.kind == "tebn":
            self._check_steps(num_steps)
            step_scale = params["step_scale"][:num_steps]
        return BatchNormState(
            scale=params["bn"]["scale"], bias=params["bn"]["bias"], mean=stats["bn"]["mean"],
            var=stats["bn"]["var"], step_scale=step_scale,
        )

    def update_running_stats(self, mean: Array, var: Array) -> None:
        """Moves the running statistics towards a batch's ``mean`` and (biased) ``var``
        ``[C]`` with ``BN_MOMENTUM``, as ``flax.linen.BatchNorm`` does in training."""
        old = self.variables["batch_stats"]["bn"]
        m = BN_MOMENTUM
        self.put_variable(
            "batch_stats", "bn",
            {"mean": m * old["mean"] + (1 - m) * mean, "var": m * old["var"] + (1 - m) * var},
        )


@dataclasses.dataclass(repr=False, eq=False)
class LIFOptions:
    """The LIF neuron's options, declared once: the fields of ``LIF``, of the models
    (``base.SpikingNet``) and of their layer options (``base.SpikingConfig``).

    A plain dataclass base (its subclasses make their own ``repr``, equality and hash).

    Attributes:
      tau, v_threshold, surrogate, surrogate_alpha, detach_reset, remat: see ``spiking.lif``.
    """

    tau: float = 2.0
    v_threshold: float = 0.5
    surrogate: str | spiking.Surrogate = "qgate"
    surrogate_alpha: float | None = None
    detach_reset: bool = True
    remat: bool = False


class LIF(LIFOptions, nn.Module):
    """Multi-step LIF layer over ``[T, B, ...]`` (``tks_jax.spiking.lif``; ``docs/method.md`` §1).

    When the ``intermediates`` collection is mutable, sows per call:
    ``spike_rate`` (mean spike probability over T, B and neurons), ``spikes_per_image``
    (spikes summed over T and neurons, averaged over B) and ``neurons`` (neurons per step and
    image). ``spike_summary`` in ``tks_jax.models`` reads them.

    Attributes:
      tau, v_threshold, surrogate, surrogate_alpha, detach_reset, remat: ``LIFOptions``.
      backend: see ``spiking.lif``.
    """

    backend: str = "auto"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """``[T, B, ...]`` currents -> ``[T, B, ...]`` spikes (dtype of ``x``).

        With the ``STREAM_STATE`` collection mutable (``tks_jax.inference``; inference only,
        no surrogate gradient), the membrane starts from the variable ``membrane`` (zeros when
        absent) instead of 0 and the membrane after the last step is written back.
        """
        if self.is_mutable_collection(STREAM_STATE) and not self.is_initializing():
            u = self.variable(STREAM_STATE, "membrane", jnp.zeros, x.shape[1:],
                              spiking.membrane_dtype(x.dtype))
            s, _, u.value = spiking.lif_forward(x, self.tau, self.v_threshold, 1, u0=u.value)
            return s
        s = spiking.lif(
            x,
            tau=self.tau,
            v_threshold=self.v_threshold,
            surrogate=spiking.get_surrogate(self.surrogate, self.surrogate_alpha),
            detach_reset=self.detach_reset,
            remat=self.remat,
            backend=self.backend,
        )
        if self.is_mutable_collection("intermediates"):
            batch = x.shape[1]
            neurons = math.prod(x.shape[2:])
            total = jnp.sum(jax.lax.stop_gradient(s), dtype=jnp.float32)
            self.sow("intermediates", "spike_rate", total / s.size)
            self.sow("intermediates", "spikes_per_image", total / batch)
            self.sow("intermediates", "neurons", jnp.asarray(neurons, jnp.float32))
        return s


def avg_pool(x: Array, window: int) -> Array:
    """Average pooling, stride = window, floor (PyTorch ``AvgPool2d``); ``[T,B,H,W,C]``."""
    y = nn.avg_pool(fold(x), (window, window), strides=(window, window), padding="VALID")
    return unfold(y, x.shape[0])


def max_pool(x: Array, window: int, strides: int, padding: int) -> Array:
    """Max pooling with symmetric padding (PyTorch ``MaxPool2d``); ``[T,B,H,W,C]`` or 4-D."""
    pads: Sequence[tuple[int, int]] = ((padding, padding), (padding, padding))
    if x.ndim == 5:
        y = nn.max_pool(fold(x), (window, window), strides=(strides, strides), padding=pads)
        return unfold(y, x.shape[0])
    return nn.max_pool(x, (window, window), strides=(strides, strides), padding=pads)


def global_avg_pool(x: Array) -> Array:
    """Mean over H and W: ``[T, B, H, W, C] -> [T, B, C]``."""
    return jnp.mean(x, axis=(2, 3))
