r"""Throughput and memory of the tks-jax training step and inference (not a test).

Measures, per configuration (model, batch, width, mode):

- throughput in images/s: median over timed steps after warm-up; compile time separately;
- peak resident memory of the process (each configuration runs in its own subprocess);
- achieved GFLOP/s (conv + dense FLOPs from ``benchmarks/arch.py``) as a fraction of a large
  fp32 GEMM measured in JAX in the same invocation.

Usage::

    .venv/bin/python -m benchmarks.train_step                       # full sweep, table + JSONL
    .venv/bin/python -m benchmarks.train_step --models vgg_snn --batches 16 --widths 1.0 \
        --modes train --steps 3
    .venv/bin/python -m benchmarks.train_step --single '{"model": "vgg_snn", ...}'  # one config

Results are appended as JSON lines to ``benchmarks/results/tks_jax.jsonl`` (``--out``).
The SpikingJelly side and the alternating runner live in ``benchmarks/peers``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _machine() -> dict[str, Any]:
    return {
        "host_cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------------------------
# One configuration, in this process.
# --------------------------------------------------------------------------------------------


def _build_model(name: str, width: float, source: str, options: dict[str, Any]):
    from benchmarks import arch

    if source == "tks":
        from tks_jax import models

        return models.get_model(name, num_classes=arch.NUM_CLASSES, width=width, **options)
    from benchmarks import reference_models

    return reference_models.MODELS[name](width=width, num_classes=arch.NUM_CLASSES, **options)


def _mean_ce(logits, labels):
    try:
        from tks_jax.losses import mean_ce
    except ImportError:  # losses not there yet: the same formula (docs/method.md §4, Eq. 6)
        import optax

        return optax.softmax_cross_entropy_with_integer_labels(logits.mean(0), labels).mean()
    return mean_ce(logits, labels)


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def build_step(cfg: dict[str, Any]):
    """The benchmarked computation of one configuration, ready to run.

    Returns ``(jitted, args, n_params)``: for ``mode='train'`` the full training step
    ``jitted(state, x, y) -> (state, loss)`` (forward over all steps, CE of the mean logits,
    backward, AdamW; the state is donated), for ``'infer'`` the forward pass
    ``jitted(variables, x)``. Also used by ``benchmarks/profile_step.py``.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from benchmarks import arch
    from tks_jax.training import build

    name, batch, width = cfg["model"], int(cfg.get("batch", 1)), float(cfg["width"])
    (h, w, c), num_steps = arch.INPUTS[name]
    num_steps = int(cfg.get("num_steps") or num_steps)
    model = _build_model(name, width, cfg.get("source", "reference"), cfg.get("options", {}))
    rng = np.random.default_rng(0)
    if name == "vgg_snn":  # event frames: small non-negative counts, time-major
        x = rng.poisson(0.3, size=(num_steps, batch, h, w, c)).astype(np.float32)
    else:  # static image, direct-encoded inside the model
        x = rng.standard_normal((batch, h, w, c)).astype(np.float32)
    y = rng.integers(0, arch.NUM_CLASSES, size=(batch,)).astype(np.int32)
    x, y = jnp.asarray(x), jnp.asarray(y)

    variables = build.init_variables(model, jax.random.key(0), x, num_steps=num_steps,
                                     train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))

    if cfg["mode"] == "train":
        # AdamW, weight decay only on kernels (docs/method.md §9).
        tx = optax.adamw(
            6.25e-4, weight_decay=0.01, mask=lambda p: jax.tree.map(lambda a: a.ndim > 1, p)
        )
        state = {"params": params, "batch_stats": batch_stats, "opt": tx.init(params)}

        def step_fn(state, x, y):
            def loss_fn(p):
                logits, updates = model.apply(
                    {"params": p, "batch_stats": state["batch_stats"]},
                    x,
                    num_steps=num_steps,
                    train=True,
                    mutable=["batch_stats"],
                )
                return _mean_ce(logits, y), updates["batch_stats"]

            (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
            upd, opt = tx.update(grads, state["opt"], state["params"])
            new = {"params": optax.apply_updates(state["params"], upd), "batch_stats": stats}
            return {**new, "opt": opt}, loss

        return jax.jit(step_fn, donate_argnums=0), (state, x, y), n_params

    def step_fn(variables, x):
        return model.apply(variables, x, num_steps=num_steps, train=False)

    return jax.jit(step_fn), (variables, x), n_params


def run_single(cfg: dict[str, Any]) -> dict[str, Any]:
    """Benchmarks one configuration in this process and returns a result record."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks import arch

    name, batch, width = cfg["model"], int(cfg.get("batch", 1)), float(cfg["width"])
    mode, steps, warmup = cfg["mode"], int(cfg.get("steps", 0)), int(cfg.get("warmup", 0))
    (h, w, c), num_steps = arch.INPUTS[name]
    num_steps = int(cfg.get("num_steps") or num_steps)

    if mode == "params":  # parameter count only, no compute
        model = _build_model(name, width, cfg.get("source", "reference"), cfg.get("options", {}))
        shape = (num_steps, 1, h, w, c) if name == "vgg_snn" else (1, h, w, c)
        shapes = jax.eval_shape(
            lambda: model.init(
                jax.random.key(0), jnp.zeros(shape), num_steps=num_steps, train=False
            )
        )
        n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes["params"]))
        return {"framework": "tks_jax", "model": name, "width": width, "params": n}

    jitted, args, n_params = build_step(cfg)
    expected = arch.num_params(name, width)
    if mode == "train":
        state, x, y = args

    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    # As train.py does on CPU: the compiler's freed heap back to the OS before the steps run
    # (host-side only; on a GPU the step's buffers live in device memory).
    heap_trim = False
    if jax.default_backend() == "cpu":
        from tks_jax.training import host_memory

        heap_trim = host_memory.release_freed_memory()
    # XLA's own account of the step's memory: arguments, outputs and temporaries (exact, and
    # free of the runtime's and compiler's share that peak RSS includes).
    mem = compiled.memory_analysis()
    xla_mb = None if mem is None else {
        k: round(getattr(mem, f"{k}_size_in_bytes", 0) / 2**20, 1)
        for k in ("argument", "output", "temp", "alias")}
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0] if cost else {}
    xla_flops = float((cost or {}).get("flops", float("nan")))

    times, cpus, loads, faults, sys_s = [], [], [], [], []
    for i in range(warmup + steps):
        t0, c0 = time.perf_counter(), _cpu_s()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        if mode == "train":
            state, loss = compiled(state, x, y)
            jax.block_until_ready((state, loss))
        else:
            out = compiled(*args)
            jax.block_until_ready(out)
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
            cpus.append(_cpu_s() - c0)
            loads.append(os.getloadavg()[0])
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            faults.append(ru1.ru_minflt - ru0.ru_minflt)
            sys_s.append(ru1.ru_stime - ru0.ru_stime)
    model_flops = arch.flops(name, width, batch, train=(mode == "train"))
    device = jax.devices()[0]
    # Accelerator memory: the allocator's high-water mark of this process (None on CPU).
    stats = device.memory_stats() or {}
    peak_device = stats.get("peak_bytes_in_use")
    return {
        "framework": "tks_jax",
        "model": name,
        "batch": batch,
        "width": width,
        "mode": mode,
        "num_steps": num_steps,
        "source": cfg.get("source", "reference"),
        "options": cfg.get("options", {}),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "params": n_params,
        "params_expected": expected,
        "compile_s": round(compile_s, 3),
        **arch.step_rates(batch, times, cpus, model_flops),
        "xla_gflop_per_step": xla_flops / 1e9,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        # Page faults and kernel CPU time per timed step (medians): fresh buffers faulted in.
        "minor_faults_per_step": statistics.median(faults) if faults else None,
        "sys_cpu_s_median": round(statistics.median(sys_s), 3) if sys_s else None,
        "xla_memory_mb": xla_mb,
        "peak_device_mb": None if peak_device is None else round(peak_device / 2**20, 1),
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "heap_trim": heap_trim,
        "loadavg_1m": [round(v, 2) for v in loads],
        "jax": jax.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **_machine(),
    }


def gemm_peak(n: int = 4096, repeats: int = 5, dtype: str = "float32") -> dict[str, Any]:
    """Achieved GFLOP/s of an ``n x n`` by ``n x n`` matmul in JAX (median of repeats), on
    random data of ``dtype`` (``'float32'`` or ``'bfloat16'``)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32).astype(dtype)
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {
        "framework": "tks_jax",
        "mode": "gemm",
        "n": n,
        "dtype": dtype,
        "device_kind": jax.devices()[0].device_kind,
        "gflop_per_s": 2.0 * n**3 / med / 1e9,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **_machine(),
    }


# --------------------------------------------------------------------------------------------
# Sweep: one subprocess per configuration.
# --------------------------------------------------------------------------------------------


# The XLA:CPU flags train.py sets (tks_jax/training/xla_env.py): the memory-minimising
# scheduler (VGG-SNN T=10 b16: temp 2.65 -> 1.89 GB, a little faster on 2 cores) and copy
# insertion with region analysis. They can only be set through XLA_FLAGS (compiler_options of
# jit do not reach them), before JAX starts: the benchmark does so for its subprocesses
# unless XLA_FLAGS is already set or --xla-flags is given. Written out rather than imported,
# so that importing this module does not import JAX (tests check it equals xla_env's).
RECOMMENDED_XLA_FLAGS = (
    "--xla_cpu_enable_concurrency_optimized_scheduler=false "
    "--xla_cpu_copy_insertion_use_region_analysis=true"
)


def run_json(
    cmd: list[str], what: str, env: dict[str, str] | None = None, timeout: float = 1800
) -> dict[str, Any]:
    """Runs ``cmd`` from the repository root and returns the JSON record its last line of
    output prints; a failure raises with ``what`` and the end of its stderr."""
    proc = subprocess.run(
        cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_in_subprocess(
    cfg: dict[str, Any], env: dict[str, str] | None = None, timeout: float = 1800
) -> dict[str, Any]:
    """Runs ``run_single(cfg)`` (or ``gemm_peak`` when ``cfg['mode'] == 'gemm'``) in a fresh
    Python process, so that its peak memory is its own."""
    cmd = [sys.executable, "-m", "benchmarks.train_step", "--single", json.dumps(cfg)]
    full_env = {"XLA_FLAGS": RECOMMENDED_XLA_FLAGS, **os.environ, **(env or {})}
    # glibc's huge-page tunable, decided as train.py decides it (it restarts itself with it).
    from tks_jax.training import host_memory

    tunables = host_memory.recommended_glibc_tunables(
        full_env, host_memory.glibc_version(), host_memory.thp_mode())
    if tunables is not None:
        full_env["GLIBC_TUNABLES"] = tunables
    return run_json(cmd, f"benchmark {cfg}", env=full_env, timeout=timeout)


def append_jsonl(path: str, record: dict[str, Any]) -> None:
    """Appends ``record`` as one JSON line to ``path``, creating its folder if needed."""
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def format_row(r: dict[str, Any], peak: float) -> str:
    return (
        f"{r['framework']:>12} {r['model']:>9} {r['width']:>5} {r['batch']:>5} {r['mode']:>6} "
        f"{r['img_per_s']:>8.2f} {r['gflop_per_s']:>8.1f} {r['gflop_per_s'] / peak:>6.0%} "
        f"{r.get('cpu_s_median', float('nan')):>6.2f} "
        f"{r['peak_rss_mb'] / 1024:>7.2f} {r.get('compile_s', 0):>8.1f} "
        f"{statistics.mean(r['loadavg_1m']):>5.1f}"
    )


HEADER = (
    f"{'framework':>12} {'model':>9} {'width':>5} {'batch':>5} {'mode':>6} {'img/s':>8} "
    f"{'GFLOP/s':>8} {'%peak':>6} {'cpu s':>6} {'RSS GB':>7} {'compile':>8} {'load':>5}"
)


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of a sweep's configurations (keys of ``run_single``'s config), shared with
    ``benchmarks/peers/compare.py``."""
    p.add_argument("--models", default="vgg_snn,resnet19")
    p.add_argument("--batches", default="16,32")
    p.add_argument("--widths", default="1.0,0.5")
    p.add_argument("--modes", default="train,infer")
    p.add_argument("--steps", type=int, default=3, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per run, after compiling")
    p.add_argument("--source", choices=["reference", "tks"], default="tks",
                   help="tks: tks_jax.models.get_model; reference: benchmarks/reference_models")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--single", help="JSON config: run one configuration here, print JSON.")
    add_sweep_arguments(p)
    p.add_argument("--num-steps", type=int, default=0, help="override T (0: the model's own)")
    p.add_argument("--options", default="{}",
                   help="JSON dict of model options, or a JSON list of them: variants that are "
                        "run in alternation for each configuration (--rounds times)")
    p.add_argument("--xla-flags", default="",
                   help="';'-separated XLA_FLAGS variants, alternated like --options (default: "
                        "RECOMMENDED_XLA_FLAGS unless XLA_FLAGS is set)")
    p.add_argument("--rounds", type=int, default=1, help="alternation rounds per configuration")
    p.add_argument("--out", default=os.path.join(RESULTS_DIR, "tks_jax.jsonl"))
    args = p.parse_args(argv)

    if args.single:
        cfg = json.loads(args.single)
        if cfg.get("mode") == "gemm":
            rec = gemm_peak(int(cfg.get("n", 4096)), dtype=cfg.get("dtype", "float32"))
        else:
            rec = run_single(cfg)
        print(json.dumps(rec))
        return

    variants = json.loads(args.options)
    variants = variants if isinstance(variants, list) else [variants]
    xla_variants = bool(args.xla_flags)  # ';'-separated; an empty item = no flags at all
    xla_flags = args.xla_flags.split(";") if args.xla_flags else [""]
    peak = run_in_subprocess({"mode": "gemm"})
    append_jsonl(args.out, peak)
    print(f"fp32 GEMM peak (JAX, 4096^3): {peak['gflop_per_s']:.1f} GFLOP/s")
    print(HEADER)
    for model in args.models.split(","):
        for width in [float(v) for v in args.widths.split(",")]:
            for batch in [int(v) for v in args.batches.split(",")]:
                for mode in args.modes.split(","):
                    for _ in range(args.rounds):
                        for options in variants:
                            for flags in xla_flags:
                                cfg = {
                                    "model": model, "batch": batch, "width": width,
                                    "mode": mode, "steps": args.steps, "warmup": args.warmup,
                                    "source": args.source, "options": options,
                                    "num_steps": args.num_steps,
                                }
                                env = {"XLA_FLAGS": flags.strip()} if xla_variants else None
                                rec = run_in_subprocess(cfg, env=env)
                                rec["gemm_peak_gflop_per_s"] = peak["gflop_per_s"]
                                append_jsonl(args.out, rec)
                                print(format_row(rec, peak["gflop_per_s"]),
                                      json.dumps(options), flags, flush=True)


if __name__ == "__main__":
    main()
