"""Which convolution ``conv='auto'`` runs on this backend, and which CPU-only settings apply.

Part of ``benchmarks/device_check.sh`` (stage "platform"); runs in its own process so that the
orchestrator never holds the accelerator. Only public entry points are used: the models come
from ``tks_jax.models.get_model`` with the model option ``conv``, and "which algorithm ran" is
read off the traced program: the number of ``conv_general_dilated`` primitives in the forward
pass's jaxpr (sub-jaxprs of ``custom_vjp``, ``remat``, ``scan`` etc. included). ``conv='direct'``
never uses Winograd, so its count is the number of convolution layers; every layer that
``conv='auto'`` computes with Winograd F(2x2, 3x3) is a ``conv_general_dilated`` fewer (its
tiles become ``dot_general``). Expected (``docs/method.md`` §17, speed options): on CPU,
``auto`` replaces the float32 3x3 stride-1 layers with >= 16 channels; on a GPU it keeps XLA's
(cuDNN's) convolution for every layer.

    python -m benchmarks.device.platform_check --out platform_raw.json [--models resnet19]
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import json
import os
from collections.abc import Iterable
from typing import Any

CONV_PRIMITIVE = "conv_general_dilated"
CPU_FLAG_PREFIX = "--xla_cpu_"


def _sub_jaxprs(value: Any) -> Iterable[Any]:
    """Jaxprs inside an equation parameter (a jaxpr, a closed jaxpr or a list of them)."""
    if hasattr(value, "eqns"):
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        yield value.jaxpr
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _sub_jaxprs(v)


def count_primitives(jaxpr: Any) -> collections.Counter:
    """Primitive names of ``jaxpr`` (a ``Jaxpr`` or ``ClosedJaxpr``) counted recursively."""
    counts: collections.Counter = collections.Counter()
    stack = list(_sub_jaxprs(jaxpr))
    while stack:
        j = stack.pop()
        for eqn in j.eqns:
            counts[eqn.primitive.name] += 1
            for value in eqn.params.values():
                stack.extend(_sub_jaxprs(value))
    return counts


def forward_primitives(
    model_name: str, conv: str, *, dtype: str = "float32", width: float = 1.0, batch: int = 1
) -> collections.Counter:
    """Primitive counts of one forward pass (``train=False``) of a zoo model at its
    benchmark input size (``benchmarks/arch.py``), traced on abstract values (no compute)."""
    import jax
    import jax.numpy as jnp

    from benchmarks import arch
    from tks_jax import models

    (h, w, c), num_steps = arch.INPUTS[model_name]
    model = models.get_model(
        model_name, num_classes=arch.NUM_CLASSES, width=width, conv=conv, dtype=dtype
    )
    shape = (num_steps, batch, h, w, c) if model_name == "vgg_snn" else (batch, h, w, c)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, num_steps=num_steps, train=False), x
    )
    jaxpr = jax.make_jaxpr(
        lambda v, x: model.apply(v, x, num_steps=num_steps, train=False)
    )(variables, x)
    return count_primitives(jaxpr)


def conv_check(model_name: str, backend: str, *, dtype: str = "float32") -> dict[str, Any]:
    """Compares ``conv='auto'`` with ``conv='direct'`` and states what this backend expects.

    Returns a check record: ``ok`` is True when, on CPU (float32 or bfloat16), auto computes at
    least one layer with Winograd (fewer ``conv_general_dilated``), and elsewhere none (the
    same count).
    """
    counts = {
        conv: forward_primitives(model_name, conv, dtype=dtype)[CONV_PRIMITIVE]
        for conv in ("auto", "direct")
    }
    winograd_layers = counts["direct"] - counts["auto"]
    on_cpu = backend == "cpu"
    if on_cpu and dtype in ("float32", "bfloat16"):
        expected = "auto computes the eligible 3x3 layers with Winograd (fewer XLA convs)"
        ok = 0 < winograd_layers < counts["direct"]
    else:
        expected = "auto keeps XLA's convolution for every layer"
        ok = winograd_layers == 0 and counts["direct"] > 0
    return {
        "check": "conv_auto_algorithm",
        "model": model_name,
        "dtype": dtype,
        "backend": backend,
        "conv_layers": counts["direct"],
        "xla_convs_with_auto": counts["auto"],
        "winograd_layers_with_auto": winograd_layers,
        "expected": expected,
        "ok": bool(ok),
    }


def compiled_conv_calls(model_name: str) -> dict[str, Any]:
    """On a GPU: how many cuDNN convolution custom calls the compiled forward (``conv='auto'``,
    batch 2) contains. Recorded, not asserted (XLA may also fuse or rewrite convolutions)."""
    import jax
    import jax.numpy as jnp

    from benchmarks import arch
    from tks_jax import models

    (h, w, c), num_steps = arch.INPUTS[model_name]
    model = models.get_model(model_name, num_classes=arch.NUM_CLASSES, conv="auto")
    shape = (num_steps, 2, h, w, c) if model_name == "vgg_snn" else (2, h, w, c)
    x = jnp.zeros(shape, jnp.float32)
    variables = model.init(jax.random.key(0), x, num_steps=num_steps, train=False)
    fwd = jax.jit(lambda v, x: model.apply(v, x, num_steps=num_steps, train=False))
    text = fwd.lower(variables, x).compile().as_text() or ""
    return {
        "check": "compiled_conv_calls",
        "model": model_name,
        "cudnn_conv_custom_calls": text.count("__cudnn$conv"),
        "hlo_convolution_ops": text.count(" convolution("),
        "ok": None,  # informational
    }


def xla_flags_check(backend: str) -> dict[str, Any]:
    """What ``train.py`` would add to ``XLA_FLAGS`` on this machine (``xla_env``), and whether
    an XLA:CPU-only flag would be set on an accelerator backend."""
    from tks_jax.training import xla_env

    try:
        jaxlib = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        jaxlib = None
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    flags = xla_env.recommended_xla_flags(env, jaxlib) or ""
    cpu_flag = CPU_FLAG_PREFIX in flags
    return {
        "check": "train_xla_flags",
        "backend": backend,
        "jaxlib": jaxlib,
        "train_py_would_set": flags,
        "sets_xla_cpu_flag": cpu_flag,
        "expected": "any" if backend == "cpu" else "no XLA:CPU flag on an accelerator",
        "ok": True if backend == "cpu" else not cpu_flag,
    }


def run(models: list[str], *, compile_check: bool) -> dict[str, Any]:
    import jax

    backend = jax.default_backend()
    device = jax.devices()[0]
    checks = [conv_check(m, backend) for m in models]
    checks.append(conv_check(models[0], backend, dtype="bfloat16"))
    checks.append(xla_flags_check(backend))
    if compile_check and backend != "cpu":
        checks.append(compiled_conv_calls(models[0]))
    return {
        "backend": backend,
        "device_kind": device.device_kind,
        "jax": jax.__version__,
        "checks": checks,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--models", default="resnet19,vgg_snn")
    p.add_argument("--no-compile", action="store_true", help="skip the compiled-HLO count")
    args = p.parse_args(argv)
    result = run(args.models.split(","), compile_check=not args.no_compile)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    for c in result["checks"]:
        print(json.dumps(c))


if __name__ == "__main__":
    main()
