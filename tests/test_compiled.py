"""``training.compiled.CompiledOnFirstCall``: one ahead-of-time executable per signature."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tks_jax.training import compiled, host_memory


def _weighted_sum():
    return jax.jit(lambda a, b: (a * b).sum(axis=0))


def test_one_executable_per_signature_and_numpy_results():
    step = compiled.CompiledOnFirstCall(_weighted_sum())
    a = jnp.arange(6.0).reshape(3, 2)
    np.testing.assert_allclose(step(a, 2.0), [12.0, 18.0])  # (0+2+4)*2, (1+3+5)*2
    assert step.num_compilations() == 1
    np.testing.assert_allclose(step(a, 3.0), [18.0, 27.0])  # same signature: same executable
    np.testing.assert_allclose(step(np.asarray(a), 1.0), [6.0, 9.0])  # NumPy, same aval
    assert step.num_compilations() == 2  # a NumPy leaf has no sharding: its own signature
    b = jnp.ones((4, 5))
    np.testing.assert_allclose(step(b, 1.0), np.full(5, 4.0))  # other shape: compiled too
    assert step.num_compilations() == 3
    np.testing.assert_allclose(step(a, np.float32(1.0)), [6.0, 9.0])  # strong-typed scalar
    assert step.num_compilations() == 4
    np.testing.assert_allclose(step(b, 2.0), np.full(5, 8.0))
    np.testing.assert_allclose(step(a, 5.0), [30.0, 45.0])
    assert step.num_compilations() == 4


def test_signature_covers_structure_shape_dtype_and_weak_type():
    a = jnp.ones((2, 3))
    sig = compiled.signature
    assert sig((a, 1.0)) == sig((jnp.zeros((2, 3)), 7.0))
    assert sig((a, 1.0)) != sig((a.astype(jnp.bfloat16), 1.0))
    assert sig((a, 1.0)) != sig((jnp.ones((3, 2)), 1.0))
    assert sig((a, 1.0)) != sig((a, jnp.float32(1.0)))  # weak vs strong scalar
    assert sig(({"x": a}, 1.0)) != sig(({"y": a}, 1.0))


def test_heap_release_is_opt_in(monkeypatch):
    trims = []
    monkeypatch.setattr(host_memory, "release_freed_memory", lambda: trims.append(1) or True)
    a = jnp.ones((2, 2))
    quiet = compiled.CompiledOnFirstCall(_weighted_sum())
    quiet(a, 1.0)
    assert trims == []
    step = compiled.CompiledOnFirstCall(_weighted_sum(), release_host_memory=True)
    step(a, 1.0)
    step(a, 2.0)
    assert trims == [1]  # once per compilation, not per call
    step(jnp.ones((3, 2)), 1.0)
    assert trims == [1, 1]


def test_errors_of_the_function_are_not_swallowed():
    step = compiled.CompiledOnFirstCall(jax.jit(lambda a, b: a @ b))
    with pytest.raises(TypeError, match="dot_general"):
        step(jnp.ones((2, 3)), jnp.ones((2, 3)))
    assert step.num_compilations() == 0
    with pytest.raises(TypeError, match="needs a jax.jit-ed function"):
        compiled.CompiledOnFirstCall(lambda a: a)


_SHARDED_CHILD = """
import jax
jax.config.update("jax_num_cpu_devices", 2)
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tks_jax.training.compiled import CompiledOnFirstCall

mesh = Mesh(np.array(jax.devices()), ("d",))
split = NamedSharding(mesh, P("d"))
jitted = jax.jit(lambda a: a * 2, in_shardings=split)
step = CompiledOnFirstCall(jitted)
a = jax.device_put(jnp.arange(4.0), split)
np.testing.assert_allclose(step(a), [0, 2, 4, 6])
assert step.num_compilations() == 1
# An array on one device: the executable expects the split placement, so jit takes it (and
# moves it) rather than the executable failing.
u = jnp.arange(4.0)
np.testing.assert_allclose(step(u), [0, 2, 4, 6])
assert step.num_compilations() == 3, step.num_compilations()
np.testing.assert_allclose(step(a + 1), [2, 4, 6, 8])
assert step.num_compilations() == 3
print("SHARDED_OK")
"""


def test_placement_mismatch_goes_to_jit():
    from conftest import run_child

    # The limit catches a hang, not slowness: 8 virtual devices on a loaded 2-core CPU take minutes.
    proc = run_child(_SHARDED_CHILD, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SHARDED_OK" in proc.stdout
