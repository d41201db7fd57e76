"""The SpikingJelly (PyTorch) side of the benchmark: the same models and training step.

Runs in its own virtualenv (``benchmarks/peers/requirements.txt``); it imports only
``benchmarks/arch.py`` from this repository (pure Python), so both frameworks build the same
layers. Multi-step mode (``step_mode='m'``, input ``[T, B, C, H, W]``), LIF with tau 2,
threshold 0.5, hard reset to 0, detached reset, piecewise-quadratic surrogate (alpha 2);
convolutions and BatchNorm on the folded ``T*B`` batch (SpikingJelly's ``SeqToANNContainer``
inside ``layer.Conv2d`` etc.). The training step is forward over all steps, cross-entropy of
the mean logits, backward, AdamW (weight decay on kernels only), as on the JAX side.

Config keys beyond the model's: ``device`` (``'cpu'``, default, or ``'cuda'``: timed with
``torch.cuda.synchronize``, memory from ``torch.cuda.max_memory_allocated``),
``options.dtype = 'bfloat16'`` (the forward under ``torch.autocast`` to bfloat16, parameters
float32, as tks-jax's ``dtype`` option), and ``sj_backend``: the LIF implementation, ``'torch'``
or ``'cupy'`` for SpikingJelly releases whose ``LIFNode`` takes ``backend=``, ``'torch'``,
``'triton'`` or ``'cuda'`` for 2.x (set through its ``SJ_LIF_CUDA_IMPLEMENTATION`` before import;
an unavailable one is an error, never a silent fallback). ``--probe`` prints the versions and
the backends this environment offers.

Usage (normally through ``benchmarks/peers/compare.py``)::

    benchmarks/peers/.venv/bin/python benchmarks/peers/sj_train_step.py \
        --single '{"model": "vgg_snn", "batch": 16, "width": 1.0, "mode": "train", \
                   "steps": 3, "warmup": 1}'
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import arch  # noqa: E402  (benchmarks/arch.py, pure Python)

# SpikingJelly modules, imported by _import_spikingjelly() once the LIF backend is known.
functional = layer = neuron = surrogate = None
_LIF_BACKEND: str | None = None  # for LIFNode(backend=...) in releases that take it
SJ2_BACKENDS = ("torch", "triton", "cuda", "auto")
SJ2_BACKEND_ENV = "SJ_LIF_CUDA_IMPLEMENTATION"


def _lif_takes_backend() -> bool:
    import inspect

    return "backend" in inspect.signature(neuron.LIFNode.__init__).parameters


def _import_spikingjelly(backend: str | None) -> None:
    """Imports SpikingJelly with the LIF implementation ``backend`` (None: its default)."""
    global functional, layer, neuron, surrogate, _LIF_BACKEND
    if backend in SJ2_BACKENDS:
        # 2.x reads it when its operators are imported; older releases ignore it.
        os.environ[SJ2_BACKEND_ENV] = backend
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    if backend is None:
        return
    if _lif_takes_backend():
        if backend not in ("torch", "cupy"):
            raise SystemExit(
                f"sj_backend={backend!r}: this SpikingJelly's LIFNode takes backend 'torch' or "
                "'cupy'."
            )
        _LIF_BACKEND = backend
    elif backend == "cupy":
        raise SystemExit(
            "sj_backend='cupy': this SpikingJelly (2.x) has no cupy backend; its CUDA LIF "
            f"implementations are chosen with {SJ2_BACKEND_ENV} (torch, triton, cuda)."
        )
    elif backend not in SJ2_BACKENDS:
        raise SystemExit(f"Unknown sj_backend {backend!r}; choose one of {SJ2_BACKENDS}.")


def probe() -> dict[str, Any]:
    """Versions and the LIF backends this environment offers (no GPU work)."""
    import importlib.metadata
    import importlib.util

    _import_spikingjelly(None)
    cuda = torch.cuda.is_available()
    backends = ["torch"]
    if _lif_takes_backend():
        if cuda and importlib.util.find_spec("cupy") is not None:
            backends.append("cupy")
    elif cuda and importlib.util.find_spec("triton") is not None:
        backends.append("triton")
    return {
        "torch": torch.__version__,
        "spikingjelly": importlib.metadata.version("spikingjelly"),
        "cuda": cuda,
        "device_name": torch.cuda.get_device_name(0) if cuda else None,
        "lif_takes_backend": _lif_takes_backend(),
        "backends": backends,
    }


def _lif() -> nn.Module:
    extra = {"backend": _LIF_BACKEND} if _LIF_BACKEND else {}
    return neuron.LIFNode(
        tau=2.0,
        v_threshold=0.5,
        v_reset=0.0,
        decay_input=True,
        detach_reset=True,
        surrogate_function=surrogate.PiecewiseQuadratic(alpha=2.0),
        step_mode="m",
        **extra,
    )


def _conv_bn(spec: arch.Layer, step_mode: str = "m") -> list[nn.Module]:
    pad = spec.kernel // 2
    return [
        layer.Conv2d(spec.cin, spec.cout, spec.kernel, spec.stride, pad, bias=False,
                     step_mode=step_mode),
        layer.BatchNorm2d(spec.cout, step_mode=step_mode),
    ]


def vgg_snn(width: float) -> nn.Module:
    specs = arch.vgg_snn(width)
    mods: list[nn.Module] = []
    hw = 48
    for spec in specs[:-1]:
        if spec.hw != hw:
            mods.append(layer.AvgPool2d(2, 2, step_mode="m"))
            hw = spec.hw
        mods += [*_conv_bn(spec), _lif()]
    mods += [
        layer.AvgPool2d(2, 2, step_mode="m"),
        layer.Flatten(start_dim=1, step_mode="m"),
        layer.Linear(specs[-1].cin, specs[-1].cout, step_mode="m"),
    ]
    return nn.Sequential(*mods)


class _BasicBlock(nn.Module):
    def __init__(self, conv1: arch.Layer, conv2: arch.Layer, short: arch.Layer | None):
        super().__init__()
        self.branch = nn.Sequential(*_conv_bn(conv1), _lif(), *_conv_bn(conv2))
        self.short = nn.Sequential(*_conv_bn(short)) if short else nn.Identity()
        self.out = _lif()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.branch(x) + self.short(x))


class ResNet19(nn.Module):
    def __init__(self, width: float, num_steps: int):
        super().__init__()
        specs = {s.name: s for s in arch.resnet19(width)}
        self.num_steps = num_steps
        # Direct encoding: the first conv + BN is the same at every step; computed once.
        self.stem = nn.Sequential(*_conv_bn(specs["stem"], step_mode="s"))
        self.stem_lif = _lif()
        blocks = sorted({n.split(".")[0] for n in specs if "." in n})
        self.blocks = nn.Sequential(
            *[_BasicBlock(specs[f"{b}.conv1"], specs[f"{b}.conv2"], specs.get(f"{b}.short"))
              for b in blocks]
        )
        self.fc1 = layer.Linear(specs["fc1"].cin, specs["fc1"].cout, step_mode="m")
        self.fc1_lif = _lif()
        self.fc2 = layer.Linear(specs["fc2"].cin, specs["fc2"].cout, step_mode="m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = h.unsqueeze(0).expand(self.num_steps, *h.shape)
        h = self.blocks(self.stem_lif(h))
        h = h.mean(dim=(3, 4))
        return self.fc2(self.fc1_lif(self.fc1(h)))


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run_single(cfg: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(0)
    name, batch, width = cfg["model"], int(cfg.get("batch", 1)), float(cfg["width"])
    mode, steps, warmup = cfg["mode"], int(cfg.get("steps", 0)), int(cfg.get("warmup", 0))
    (h, w, c), num_steps = arch.INPUTS[name]
    num_steps = int(cfg.get("num_steps") or num_steps)
    device = torch.device(cfg.get("device", "cpu"))
    dtype = (cfg.get("options") or {}).get("dtype") or "float32"
    if dtype not in ("float32", "bfloat16"):
        raise SystemExit(f"dtype {dtype!r}: the SpikingJelly side runs float32 or bfloat16.")
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    if name == "vgg_snn":
        net = vgg_snn(width)
        x = torch.poisson(torch.full((num_steps, batch, c, h, w), 0.3))
    else:
        net = ResNet19(width, num_steps)
        x = torch.randn(batch, c, h, w)
    y = torch.randint(0, arch.NUM_CLASSES, (batch,))
    n_params = sum(p.numel() for p in net.parameters())
    if mode == "params":
        return {"framework": "spikingjelly", "model": name, "width": width, "params": n_params}
    net, x, y = net.to(device), x.to(device), y.to(device)

    def forward() -> torch.Tensor:
        # bfloat16 as tks-jax's dtype option: compute in bf16, parameters stay float32.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            return net(x)

    if mode == "train":
        net.train()
        decay = [p for p in net.parameters() if p.ndim > 1]
        no_decay = [p for p in net.parameters() if p.ndim <= 1]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
            lr=6.25e-4,
        )

        def step() -> None:
            functional.reset_net(net)
            logits = forward()
            loss = nn.functional.cross_entropy(logits.float().mean(0), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        net.eval()

        def step() -> None:
            with torch.inference_mode():
                functional.reset_net(net)
                forward()

    times, cpus, loads, first = [], [], [], None
    for i in range(warmup + steps):
        t0, c0 = time.perf_counter(), _cpu_s()
        step()
        if cuda:
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        if i == 0:
            first = dt
        if i >= warmup:
            times.append(dt)
            cpus.append(_cpu_s() - c0)
            loads.append(os.getloadavg()[0])
    model_flops = arch.flops(name, width, batch, train=(mode == "train"))
    peak_device = torch.cuda.max_memory_allocated(device) if cuda else None
    return {
        "framework": "spikingjelly",
        "model": name,
        "batch": batch,
        "width": width,
        "mode": mode,
        "num_steps": num_steps,
        "options": {"dtype": dtype},
        "device": str(device),
        "device_kind": torch.cuda.get_device_name(device) if cuda else "cpu",
        "sj_backend": cfg.get("sj_backend") or "default",
        "params": n_params,
        "params_expected": arch.num_params(name, width),
        "compile_s": 0.0,
        "first_step_s": first,
        **arch.step_rates(batch, times, cpus, model_flops),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "peak_device_mb": None if peak_device is None else round(peak_device / 2**20, 1),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "loadavg_1m": [round(v, 2) for v in loads],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "host_cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def gemm_peak(n: int = 4096, repeats: int = 5, device: str = "cpu") -> dict[str, Any]:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)

    def mm() -> None:
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()

    mm()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm()
        times.append(time.perf_counter() - t0)
    return {"framework": "spikingjelly", "mode": "gemm", "n": n, "device": device,
            "gflop_per_s": 2.0 * n**3 / statistics.median(times) / 1e9,
            "loadavg_1m": round(os.getloadavg()[0], 2), "time": time.strftime("%H:%M:%S")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--single", help="JSON config of one run")
    p.add_argument("--probe", action="store_true", help="print versions and LIF backends")
    args = p.parse_args()
    if args.probe:
        print(json.dumps(probe()))
        return
    if not args.single:
        p.error("give --single CONFIG or --probe")
    cfg = json.loads(args.single)
    if cfg.get("mode") == "gemm":
        _import_spikingjelly(None)
        rec = gemm_peak(int(cfg.get("n", 4096)), device=cfg.get("device", "cpu"))
    else:
        _import_spikingjelly(cfg.get("sj_backend"))
        rec = run_single(cfg)
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
