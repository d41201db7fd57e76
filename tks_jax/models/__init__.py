"""Spiking model zoo: VGG-SNN, ResNet-19, SEW-ResNet-18/19/34/50 with tdBN, TEBN or BN.

Spec: ``shared/spec/tks-method.md`` sections 6-7. Usage::

    model = get_model("resnet19", num_classes=10)
    variables = model.init(rng, x, num_steps=4, train=False)   # {'params', 'batch_stats'}
    logits, state = model.apply(variables, x, num_steps=4, train=True, mutable=["batch_stats"])
    logits = model.apply(variables, x, num_steps=4)            # [T, B, num_classes], float32
    _, inter = model.apply(variables, x, num_steps=4, mutable=["intermediates"])
    spike_summary(inter["intermediates"])                     # per-LIF-layer firing

``x`` is a static batch ``[B, H, W, C]`` (direct encoding, repeated over T by the model) or
event frames ``[T, B, H, W, C]`` with ``T == num_steps``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from tks_jax import spiking
from tks_jax.models import layers
from tks_jax.models.base import SpikingConfig, SpikingNet
from tks_jax.models.layers import LIF, NORMS, Norm
from tks_jax.models.resnet import ResNet19
from tks_jax.models.sew_resnet import CONNECTS, SEWResNet
from tks_jax.models.vgg_snn import VGGSNN

# name -> (constructor, default norm). Defaults: ResNet-19 uses tdBN (spec section 6, "TKS"
# rows); VGG-SNN tdBN (the spec's normalisation for the paper's models); SEW-ResNets plain BN
# (as in SpikingJelly / the SEW paper).
MODELS: dict[str, Callable[..., SpikingNet]] = {
    "vgg_snn": VGGSNN,
    "resnet19": ResNet19,
    "sew_resnet18": functools.partial(SEWResNet, stage_sizes=(2, 2, 2, 2), block="basic"),
    "sew_resnet19": functools.partial(
        SEWResNet,
        stage_sizes=(3, 3, 2),
        block="basic",
        stem="cifar",
        stage_widths=(128, 256, 512),
        hidden=256,
    ),
    "sew_resnet34": functools.partial(SEWResNet, stage_sizes=(3, 4, 6, 3), block="basic"),
    "sew_resnet50": functools.partial(SEWResNet, stage_sizes=(3, 4, 6, 3), block="bottleneck"),
}

DEFAULT_NORM = {
    "vgg_snn": "tdbn",
    "resnet19": "tdbn",
    "sew_resnet18": "bn",
    "sew_resnet19": "bn",
    "sew_resnet34": "bn",
    "sew_resnet50": "bn",
}

OPTIONS = (
    "width",
    "norm",
    "num_steps",
    "tau",
    "v_threshold",
    "surrogate",
    "surrogate_alpha",
    "detach_reset",
    "remat",
    "dtype",
    "connect",
    "conv",
)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def model_names() -> list[str]:
    """Names accepted by ``get_model``."""
    return sorted(MODELS)


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"Model option {name} must be a number > 0, got {value!r}.")
    return float(value)


def _dtype(value: Any) -> Any:
    if isinstance(value, str):
        if value not in _DTYPES:
            raise ValueError(f"Unknown dtype {value!r}; choose one of {sorted(_DTYPES)}.")
        return _DTYPES[value]
    dt = jnp.dtype(value)
    if dt.name not in _DTYPES:
        raise ValueError(f"Unsupported compute dtype {dt}; choose one of {sorted(_DTYPES)}.")
    return _DTYPES[dt.name]


def get_model(name: str, *, num_classes: int, **options: Any) -> SpikingNet:
    """Builds a model of the zoo.

    Args:
      name: one of ``model_names()``.
      num_classes: classes of the read-out.
      **options: any of ``OPTIONS``:
        width (float, default 1.0): channel multiplier, channels rounded to multiples of 8.
        norm ('tdbn' | 'tebn' | 'bn'): default per model (``DEFAULT_NORM``).
        num_steps (int): only for ``norm='tebn'``, the number of per-step scales = the largest
          T the model runs (smaller T uses the first scales); required with TEBN, ignored
          otherwise.
        tau (2.0), v_threshold (0.5), surrogate ('qgate'), surrogate_alpha (None = the
          surrogate's default), detach_reset (True): LIF options.
        remat (False): trade compute for memory in training. Float32 conv-norm-LIF units
          whose output spans several time chunks (``models/chunked.py``) run a few steps at a
          time with a hand-written backward; the others are rematerialised whole (``nn.remat``).
          VGG-SNN at T = 32: 0.39x the peak memory, -36 % speed.
        dtype ('float32' | 'bfloat16' or a jnp dtype): compute dtype; params stay float32.
        connect ('add' | 'iand' | 'and'): SEW models only; other models accept only 'add'
          or None.
        conv ('auto' | 'winograd' | 'direct'): how convolutions are computed (same result up
          to fp32 rounding). 'auto' (default) is the fastest measured: on CPU, Winograd
          F(2x2, 3x3) for 3x3 stride-1 float32 convolutions with >= 16 channels; 'direct'
          never uses Winograd; 'winograd' uses it for every 3x3 stride-1 convolution.

    Returns:
      An unbound ``flax.linen.Module``; call ``init``/``apply`` with ``x, num_steps=T,
      train=...``.

    Raises:
      ValueError: unknown name or option, or an invalid option value.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {model_names()}.")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"Unknown model option(s) {unknown} for {name!r}; valid options are "
            f"{sorted(OPTIONS)} (plus num_classes)."
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}.")
    kwargs: dict[str, Any] = {"num_classes": num_classes}
    norm = options.get("norm") or DEFAULT_NORM[name]
    if norm not in NORMS:
        raise ValueError(f"Unknown norm {norm!r}; choose one of {list(NORMS)}.")
    kwargs["norm"] = norm
    num_steps = options.get("num_steps")
    if num_steps is not None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"Model option num_steps must be an int >= 1, got {num_steps!r}.")
        kwargs["num_steps"] = num_steps
    elif norm == "tebn":
        raise ValueError(
            "norm='tebn' needs num_steps (the number of per-step scales, i.e. the training T); "
            "pass num_steps=T to get_model."
        )
    for key in ("width", "tau", "v_threshold"):
        if options.get(key) is not None:
            kwargs[key] = _positive(key, options[key])
    if options.get("surrogate_alpha") is not None:
        kwargs["surrogate_alpha"] = _positive("surrogate_alpha", options["surrogate_alpha"])
    if options.get("surrogate") is not None:
        kwargs["surrogate"] = options["surrogate"]
    # Validates surrogate name and alpha now rather than at the first call.
    spiking.get_surrogate(kwargs.get("surrogate", "qgate"), kwargs.get("surrogate_alpha"))
    for key in ("detach_reset", "remat"):
        if options.get(key) is not None:
            kwargs[key] = bool(options[key])
    if options.get("dtype") is not None:
        kwargs["dtype"] = _dtype(options["dtype"])
    if options.get("conv") is not None:
        if options["conv"] not in layers.CONV_ALGORITHMS:
            raise ValueError(
                f"Unknown conv algorithm {options['conv']!r}; choose one of "
                f"{list(layers.CONV_ALGORITHMS)}."
            )
        kwargs["conv"] = options["conv"]
    connect = options.get("connect")
    if connect is not None:
        if connect not in CONNECTS:
            raise ValueError(
                f"Unknown SEW connect function {connect!r}; choose one of {list(CONNECTS)}."
            )
        if name.startswith("sew_"):
            kwargs["connect"] = connect
        elif connect != "add":
            raise ValueError(
                f"connect={connect!r} applies to SEW models only "
                f"({[n for n in model_names() if n.startswith('sew_')]}), not {name!r}."
            )
    return MODELS[name](**kwargs)


def max_num_steps(model: nn.Module) -> int | None:
    """The largest T ``model`` can run: TEBN's number of scales, or None when unlimited."""
    if getattr(model, "norm", None) == "tebn":
        return model.num_steps
    return None


def _leaves_with_rates(tree: Mapping, prefix: tuple[str, ...] = ()):
    for key, value in tree.items():
        if isinstance(value, Mapping):
            if "spike_rate" in value:
                yield "/".join(prefix + (key,)), value
            yield from _leaves_with_rates(value, prefix + (key,))


def spike_summary(intermediates: Mapping) -> dict[str, dict[str, float]]:
    """Per-LIF-layer firing statistics from the ``intermediates`` collection.

    Args:
      intermediates: ``state['intermediates']`` of
        ``model.apply(..., mutable=['intermediates'])`` (concrete arrays, outside ``jit``).
        If a layer ran several times in the call, its values are averaged.

    Returns:
      ``{layer_path: {'rate': mean spike probability per neuron and step,
      'spikes_per_image': spikes per image summed over all steps and neurons,
      'neurons': neurons per step and image}}``, sorted by path (``layer_path`` like
      ``'layer1_0/unit1/lif'``).
    """
    summary = {}
    for path, stats in _leaves_with_rates(intermediates):
        summary[path] = {
            "rate": float(np.mean(np.asarray(stats["spike_rate"]))),
            "spikes_per_image": float(np.mean(np.asarray(stats["spikes_per_image"]))),
            "neurons": float(np.mean(np.asarray(stats["neurons"]))),
        }
    return dict(sorted(summary.items()))


__all__ = [
    "CONNECTS",
    "DEFAULT_NORM",
    "LIF",
    "MODELS",
    "NORMS",
    "OPTIONS",
    "Norm",
    "ResNet19",
    "SEWResNet",
    "SpikingConfig",
    "SpikingNet",
    "VGGSNN",
    "get_model",
    "layers",
    "max_num_steps",
    "model_names",
    "spike_summary",
]
