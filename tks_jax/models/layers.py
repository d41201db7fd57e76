"""Building blocks of the spiking model zoo: time folding, conv/linear, tdBN/TEBN/BN, LIF.

Spec: ``shared/spec/tks-method.md`` sections 1 (LIF), 6 (normalisation) and 7 (architectures);
layout: ``shared/DESIGN.md`` ("Shapes and time").

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

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tks_jax import spiking
from tks_jax.models import chunking, winograd

Array = jax.Array
Dtype = Any

NORMS = ("tdbn", "tebn", "bn")
BN_MOMENTUM = 0.9  # = PyTorch momentum 0.1 (flax keeps `momentum` of the old statistics).
BN_EPSILON = 1e-5  # PyTorch's default.
# Variable collection of the streaming state (``tks_jax.inference``): each LIF's membrane
# ``membrane`` and each TEBN norm's step counter ``step``. Only used when the caller makes it
# mutable (never by ``init`` or training).
STREAM_STATE = "lif_state"

# PyTorch's default kaiming_uniform_(a=sqrt(5)): gain^2 = 2 / (1 + 5), bound = sqrt(3 * 1/3 /
# fan_in) = 1/sqrt(fan_in).
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


# --------------------------------------------------------------------------------------------
# Convolution whose weight gradient is a GEMM (performance, issue 6).
#
# On XLA:CPU the weight gradient of a convolution runs as a convolution over the batch with
# huge windows and layout copies, several times slower per FLOP than the forward pass (a VGG-SNN
# training step spent about half its time there). Here the forward and the input gradient stay
# XLA's convolutions and the weight gradient becomes im2col(x)^T @ dy (Dumoulin & Visin's
# convolution arithmetic), accumulated over chunks of the batch so that the im2col buffer stays
# small. Same maths; tests/test_perf_equivalence.py checks it against lax's gradient.
# --------------------------------------------------------------------------------------------

# Bytes of one chunk's im2col buffer: bounds the extra memory of the weight gradient. Measured
# with benchmarks/wgrad_layout.py: 8-16 MB chunks run the weight gradient of large-image layers
# up to 25 % faster than 64 MB (the buffer stays in cache), and 8 MB has the lowest peak memory.
_WGRAD_CHUNK_BYTES = 8 * 2**20
_NHWC = ("NHWC", "HWIO", "NHWC")


def _im2col_weight_grad(x: Array, g: Array, kernel_shape, strides, padding) -> Array:
    """``dW[i, j, c, o] = sum_{n, h, w} xpad[n, s*h + i, s*w + j, c] * g[n, h, w, o]``.

    Channel-major im2col: ``[kh*kw*Cin, N*Ho*Wo] @ [N*Ho*Wo, Cout]``, a plain GEMM (the
    row-major ``[N*Ho*Wo, kh*kw*Cin]`` contracted on its first axis runs at the same speed).
    """
    kh, kw, cin, cout = kernel_shape
    sh, sw = strides
    n, ho, wo, _ = g.shape
    per_sample = ho * wo * kh * kw * cin * x.dtype.itemsize
    chunk = chunking.chunk_size(n, per_sample, _WGRAD_CHUNK_BYTES)
    xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))

    def chunk_grad(xp_c: Array, g_c: Array) -> Array:
        m = xp_c.shape[0] * ho * wo
        # One transpose of the (small) padded input; each tap is then a strided slice whose
        # rows are already the GEMM's, ordered (i, j, c) as in HWIO.
        xt = jnp.transpose(xp_c, (3, 0, 1, 2))
        cols = [
            xt[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
            for i in range(kh)
            for j in range(kw)
        ]
        cols = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=0)
        return jax.lax.dot_general(
            cols.reshape(kh * kw * cin, m),
            g_c.reshape(m, cout),
            (((1,), (0,)), ((), ())),
            preferred_element_type=jnp.float32,
        )

    return chunking.sum_over_chunks(chunk_grad, (xp, g), chunk).reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_nhwc(x: Array, w: Array, strides, padding) -> Array:
    return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


def _conv_nhwc_fwd(x, w, strides, padding):
    return _conv_nhwc(x, w, strides, padding), (x, w)


def _conv_nhwc_bwd(strides, padding, res, g):
    x, w = res
    _, input_grad = jax.vjp(
        lambda x_: jax.lax.conv_general_dilated(x_, w, strides, padding, dimension_numbers=_NHWC),
        x,
    )
    dw = _im2col_weight_grad(x, g, w.shape, strides, padding)
    return input_grad(g)[0], dw.astype(w.dtype)


_conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


# How ``Conv`` computes a convolution (the model option ``conv``):
# - "auto": on CPU, Winograd F(2x2, 3x3) (``models/winograd.py``) for float32 3x3 stride-1
#   convolutions with at least ``_WINOGRAD_MIN_CHANNELS`` input and output channels, XLA's
#   forward and input gradient with the GEMM weight gradient above for the others; on GPU/TPU,
#   XLA's convolution unchanged.
# - "winograd": Winograd for every 3x3 stride-1 convolution, on any backend and dtype; the
#   others as "auto".
# - "direct": never Winograd (the direct convolution; on CPU still with the GEMM weight
#   gradient), e.g. to reproduce results bit for bit across versions.
# Winograd differs from the direct convolution by fp32 rounding only (~1e-6 relative).
# Measured with benchmarks/winograd.py (fwd + both grads, ResNet-19 / VGG-SNN layers): 1.3-2.3x
# faster than the direct path for >= 64 channels, slower for the 2-3 channel input layers.
CONV_ALGORITHMS = ("auto", "winograd", "direct")
_WINOGRAD_MIN_CHANNELS = 16


def _conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    *,
    algorithm: str = "auto",
    **kwargs,
):
    """``lax.conv_general_dilated`` (the signature ``flax.linen.Conv`` calls) computed as
    ``algorithm`` says (see ``CONV_ALGORITHMS``) for plain 2-D NHWC convolutions; anything else
    goes to lax unchanged."""
    if algorithm not in CONV_ALGORITHMS:
        raise ValueError(f"Unknown conv algorithm {algorithm!r}; choose one of {CONV_ALGORITHMS}.")
    on_cpu = jax.default_backend() == "cpu"  # cuDNN / TPU weight gradients are fast already
    plain = (
        lhs.ndim == 4
        and not kwargs
        and not isinstance(padding, str)
        and feature_group_count == 1
        and all(d == 1 for d in (lhs_dilation or (1,)))
        and all(d == 1 for d in (rhs_dilation or (1,)))
        and dimension_numbers == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    )
    winograd_shape = (
        plain
        and tuple(rhs.shape[:2]) == (3, 3)
        and tuple(int(s) for s in window_strides) == (1, 1)
        and tuple(tuple(int(v) for v in p) for p in padding) == ((1, 1), (1, 1))
    )
    if algorithm == "winograd" and winograd_shape:
        return winograd.conv3x3(lhs, rhs)
    if (
        algorithm == "auto"
        and on_cpu
        and winograd_shape
        and lhs.dtype == rhs.dtype == jnp.float32
        and min(rhs.shape[2], rhs.shape[3]) >= _WINOGRAD_MIN_CHANNELS
    ):
        return winograd.conv3x3(lhs, rhs)
    if not (plain and on_cpu):
        return jax.lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            precision=precision,
            **kwargs,
        )
    padding = tuple(tuple(int(v) for v in p) for p in padding)
    return _conv_nhwc(lhs, rhs, tuple(int(s) for s in window_strides), padding)


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
      algorithm: how to compute it, one of ``CONV_ALGORITHMS`` (same result up to fp32
        rounding; "auto" is the fastest measured on each backend).
    """

    features: int
    kernel_size: int = 3
    strides: int = 1
    dtype: Dtype = jnp.float32
    algorithm: str = "auto"

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
            # Winograd / GEMM weight gradient on CPU (issue 6)
            conv_general_dilated=functools.partial(
                _conv_general_dilated, algorithm=self.algorithm
            ),
            name="conv",
        )
        folded = fold(x) if x.ndim == 5 else x
        y = conv(folded)
        return unfold(y, x.shape[0]) if x.ndim == 5 else y


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


class Norm(nn.Module):
    """tdBN, TEBN or plain BN over the folded time-batch (spec section 6).

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
        if self.kind not in NORMS:
            raise ValueError(f"Unknown norm {self.kind!r}; choose one of {list(NORMS)}.")
        scale = self.alpha * self.v_threshold if self.kind == "tdbn" else 1.0
        y = nn.BatchNorm(
            use_running_average=not train,
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            scale_init=nn.initializers.constant(scale),
            name="bn",
        )(x)
        if num_steps is not None:
            y = jnp.broadcast_to(y[None], (num_steps,) + y.shape)
        if self.kind == "tebn":
            if self.max_steps is None:
                raise ValueError("norm='tebn' needs num_steps (the number of per-step scales).")
            steps = y.shape[0]
            if steps > self.max_steps:
                raise ValueError(
                    f"TEBN has {self.max_steps} per-step scales (num_steps={self.max_steps} at "
                    f"construction) but was run with T={steps}; run with T <= {self.max_steps} "
                    "or build the model with a larger num_steps."
                )
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


class LIF(nn.Module):
    """Multi-step LIF layer over ``[T, B, ...]`` (``tks_jax.spiking.lif``; spec section 1).

    When the ``intermediates`` collection is mutable, sows per call:
    ``spike_rate`` (mean spike probability over T, B and neurons), ``spikes_per_image``
    (spikes summed over T and neurons, averaged over B) and ``neurons`` (neurons per step and
    image). ``spike_summary`` in ``tks_jax.models`` reads them.

    Attributes:
      tau, v_threshold, surrogate, surrogate_alpha, detach_reset, remat: see ``spiking.lif``.
    """

    tau: float = 2.0
    v_threshold: float = 0.5
    surrogate: str | spiking.Surrogate = "qgate"
    surrogate_alpha: float | None = None
    detach_reset: bool = True
    remat: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """``[T, B, ...]`` currents -> ``[T, B, ...]`` spikes (dtype of ``x``).

        With the ``STREAM_STATE`` collection mutable (``tks_jax.inference``; inference only,
        no surrogate gradient), the membrane starts from the variable ``membrane`` (zeros when
        absent) instead of 0 and the membrane after the last step is written back.
        """
        if self.is_mutable_collection(STREAM_STATE) and not self.is_initializing():
            u = self.variable(STREAM_STATE, "membrane", jnp.zeros, x.shape[1:], x.dtype)
            s, _, u.value = spiking._lif_forward(x, self.tau, self.v_threshold, 1, u0=u.value)
            return s
        s = spiking.lif(
            x,
            tau=self.tau,
            v_threshold=self.v_threshold,
            surrogate=spiking.get_surrogate(self.surrogate, self.surrogate_alpha),
            detach_reset=self.detach_reset,
            remat=self.remat,
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
