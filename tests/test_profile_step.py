"""The profiler's attribution of ops to what they compute (``benchmarks/profile_step.py``).

The kernels name each gradient with ``jax.named_scope``; these tests compile real gradients and
check that every convolution op of the compiled HLO lands in the pass it belongs to.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest

from benchmarks import profile_step
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


# --- Cores kept busy, from a trace's thread events (hand-computed cases) ----------------------

START, STOP = profile_step.REGION_START, profile_step.REGION_STOP


def _occupancy(threads, group=None, cores=None):
    return profile_step.core_occupancy(threads, group or (lambda name: name), cores)


def test_a_task_on_another_thread_works_for_the_open_op():
    cpu, wall, idle, busy = _occupancy({
        "a": [("fusion.1", 0, 10), ("ThunkExecutor::Execute", 0, 10)],  # runtime event: ignored
        "b": [(START, 2, 0), (STOP, 6, 0)],
    })
    assert cpu == {"fusion.1": 14} and wall == {"fusion.1": 10}
    assert idle == {"fusion.1": 6}  # thread b idle before and after its task
    assert busy == {1: 6, 2: 4}


def test_tasks_after_their_op_returned_count_for_it():
    # An Eigen contraction's event closes before its tasks finish.
    cpu, wall, idle, busy = _occupancy({
        "a": [("dot.3", 0, 4)],
        "b": [(START, 1, 0), (STOP, 8, 0)],
    })
    assert cpu == {"dot.3": 11} and wall == {"dot.3": 8}
    assert idle == {"dot.3": 5}
    assert busy == {1: 5, 2: 3}


def test_the_innermost_op_counts_and_idle_gaps_are_counted():
    cpu, wall, idle, busy = _occupancy({
        "a": [("while.2", 0, 10), ("add_fusion", 2, 3), ("copy.1", 14, 2)],
        "b": [],
    })
    assert cpu == {"while.2": 7, "add_fusion": 3, "copy.1": 2}
    assert wall == cpu == idle  # one thread at a time, the other idle
    assert busy == {1: 12, 0: 4}


def test_concurrent_ops_share_the_idle_core_and_groups_merge():
    threads = {"a": [("x.1", 0, 4)], "b": [("y.1", 2, 4), (STOP, 3, 0)]}  # stray stop: ignored
    cpu, wall, idle, busy = _occupancy(threads)
    assert cpu == {"x.1": 4, "y.1": 4} and wall == {"x.1": 4, "y.1": 4}
    assert idle == {"x.1": 2, "y.1": 2}  # alone for 2 each; side by side nothing is idle
    assert busy == {1: 4, 2: 2}
    cpu, wall, idle, _ = _occupancy(threads, lambda name: "both")
    assert cpu == {"both": 8} and wall == {"both": 6} and idle == {"both": 4}
    # On a machine with four cores, two more were idle all along.
    _, _, idle, _ = _occupancy(threads, cores=4)
    assert idle == {"x.1": 2 * 3 + 2 * 2 / 2, "y.1": 2 * 3 + 2 * 2 / 2}


def test_occupancy_of_a_real_trace(tmp_path):
    """On a real XLA:CPU trace: every op event is counted in full, wall time never exceeds
    CPU time, and the busy-thread histogram covers the traced span."""
    import glob

    x = jnp.ones((512, 512))
    f = jax.jit(lambda a: jnp.tanh(a @ a) @ a)
    f(x).block_until_ready()
    with jax.profiler.trace(str(tmp_path)):
        f(x).block_until_ready()
    prof = jax.profiler.ProfileData.from_file(
        glob.glob(str(tmp_path / "**" / "*.xplane.pb"), recursive=True)[0]
    )
    threads = profile_step.xla_thread_events(prof)
    own: dict = {}
    for evs in threads.values():
        for name, _, dur in evs:
            if profile_step._is_op(name):
                own[name] = own.get(name, 0) + dur
    assert any("tanh" in name for name in own), own  # the elementwise op between the dots
    cpu, wall, idle, busy = profile_step.core_occupancy(threads)
    assert set(own) <= set(cpu)
    for name, dur in own.items():
        assert cpu[name] >= dur - 1
    for name in cpu:
        assert wall[name] <= cpu[name] + 1
        assert 0 <= idle[name] <= len(threads) * wall[name] + 1
    starts = [s for evs in threads.values() for _, s, _ in evs]
    ends = [s + d for evs in threads.values() for _, s, d in evs]
    assert sum(busy.values()) <= max(ends) - min(starts) + 1
    assert sum(busy.values()) >= max(own.values())
