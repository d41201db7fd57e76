"""Performance kernels of the model zoo: convolution algorithms and the chunked unit.

A leaf package: it imports nothing from ``tks_jax.models`` (only ``tks_jax.spiking`` for the
LIF's forward and backward), and every memory budget or threshold is an argument with a
default. The models choose among these; the maths is the same as the plain layers (checked in
``tests/test_perf_equivalence.py``).

- ``conv``: ``conv_general_dilated`` (lax's signature) with the algorithm ``'auto'``,
  ``'winograd'`` or ``'direct'``; the im2col (GEMM) weight gradient.
- ``winograd``: 3x3 stride-1 convolution by Winograd F(2x2, 3x3), both gradients included.
- ``winograd_f4``: the weight gradient by F(4x4, 3x3), which ``winograd`` uses for larger
  float32/float64 layers.
- ``conv_norm_lif``: ``LIF(BN(conv(x)))`` a few time steps at a time with a hand-written
  backward (the memory-saving path of the models' ``remat``).
- ``chunking``: splitting a leading axis into chunks under a byte budget.
"""

from tks_jax.models.kernels import chunking, conv, conv_norm_lif, winograd, winograd_f4
from tks_jax.models.kernels.conv import (
    CONV_ALGORITHMS,
    check_algorithm,
    conv_function,
    conv_gemm_weight_grad,
    conv_general_dilated,
    im2col_weight_grad,
)
from tks_jax.models.kernels.winograd import conv3x3

__all__ = [
    "CONV_ALGORITHMS",
    "check_algorithm",
    "chunking",
    "conv",
    "conv3x3",
    "conv_function",
    "conv_gemm_weight_grad",
    "conv_general_dilated",
    "conv_norm_lif",
    "im2col_weight_grad",
    "winograd",
    "winograd_f4",
]
