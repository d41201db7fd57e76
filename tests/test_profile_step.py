"""The profiler's attribution of ops to what they compute (``benchmarks/profile_step.py``).

The kernels name each gradient with ``jax.named_scope``; these tests compile real gradients and
check that every convolution op of the compiled HLO lands in the pass it belongs to.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest

from benchmarks.profile_step import _role
from tks_jax.models import kernels


def _roles(fn, *args) -> set[str]:
    hlo = jax.jit(fn).lower(*args).compile().as_text()
    origins = re.findall(r'op_name="([^"]+)"', hlo)
    return {_role(o) for o in origins}


@pytest.mark.parametrize("algorithm,stride", [("winograd", 1), ("direct", 1), ("direct", 2)])
def test_conv_gradients_are_attributed_to_their_pass(algorithm, stride):
    x = jnp.ones((2, 8, 8, 16))
    w = jnp.ones((3, 3, 16, 16))
    conv = kernels.conv_function(algorithm)

    def loss(x, w):
        y = conv(x, w, (stride, stride), ((1, 1), (1, 1)), None, None,
                 jax.lax.conv_dimension_numbers(x.shape, w.shape, kernels.conv.NHWC))
        return jnp.sum(y**2)

    roles = _roles(jax.grad(loss, argnums=(0, 1)), x, w)
    stages = {r.split(":")[0] for r in roles if r.startswith("conv ")}
    assert stages == {"conv forward", "conv input grad", "conv weight grad"}
    if algorithm == "winograd":
        for stage in ("forward", "input grad", "weight grad"):
            assert f"conv {stage}: Winograd tile transforms" in roles
        assert "conv weight grad: im2col copies" not in roles
    else:
        assert "conv weight grad: im2col copies" in roles
        assert not any("Winograd" in r for r in roles)


@pytest.mark.parametrize(
    "origin,role",
    [
        ("jvp(VGGSNN)/conv1/conv/conv_general_dilated", "conv forward: GEMM / XLA conv"),
        ("transpose(jvp(VGGSNN))/conv1/conv/conv_general_dilated",
         "conv input grad: GEMM / XLA conv"),
        ("transpose(jvp(M))/b/conv/weight_grad/while/body/im2col/transpose",
         "conv weight grad: im2col copies"),
        ("transpose(jvp(M))/b/conv/weight_grad/while/body/winograd_grad_tiles/add",
         "conv weight grad: Winograd tile transforms"),
        ("jvp(M)/b/conv/while/body/winograd_gemm/dot_general", "conv forward: GEMM / XLA conv"),
        ("transpose(jvp(M))/b/norm/reduce_sum", "normalisation backward"),
        ("jvp(M)/b/lif/while/body/mul", "LIF forward"),
        ("jvp(M)/head/dot_general", "other forward"),
        ("", "unattributed"),
    ],
)
def test_role_of_an_origin(origin, role):
    assert _role(origin) == role
