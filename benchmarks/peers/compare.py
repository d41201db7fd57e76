r"""tks-jax vs SpikingJelly, side by side: one command, both frameworks in alternation.

Every configuration runs as a fresh subprocess per framework (so that peak memory is the
process's own), alternating the order each round, so that both see the same machine load. Before
timing anything, the parameter counts of the two models are compared (they must be equal).
Each run records the 1-minute load average next to its numbers; ``cpu s`` is CPU seconds per
step (all threads), which moves far less than wall time when other processes share the machine;
``cores`` is CPU over wall time (how many cores each framework keeps busy during a step).

Setup, once (a separate environment for PyTorch + SpikingJelly, CPU build)::

    python3 -m venv benchmarks/peers/.venv
    benchmarks/peers/.venv/bin/pip install -r benchmarks/peers/requirements.txt

Run (from the repository root)::

    .venv/bin/python -m benchmarks.peers.compare                   # all configurations
    .venv/bin/python -m benchmarks.peers.compare --models vgg_snn --batches 16 --widths 1.0 \
        --modes train --rounds 2

Prints a table with the ratio tks-jax / SpikingJelly (throughput, and peak memory) per
configuration and appends every run to ``benchmarks/results/compare.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Any

from benchmarks import arch, train_step

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_SCRIPT = os.path.join(HERE, "sj_train_step.py")
DEFAULT_PEER_PYTHON = os.path.join(HERE, ".venv", "bin", "python")


def run_peer(python: str, cfg: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    """Runs one SpikingJelly configuration in a subprocess and returns its record."""
    cmd = [python, PEER_SCRIPT, "--single", json.dumps(cfg)]
    return train_step.run_json(cmd, f"SpikingJelly run {cfg}", timeout=timeout)


def check_params(python: str, source: str, options: dict, models, widths) -> None:
    """Raises if the two frameworks' models differ in parameter count."""
    for model in models:
        for width in widths:
            cfg = {"model": model, "width": width, "batch": 1, "mode": "params",
                   "source": source, "options": options}
            ours = train_step.run_in_subprocess(cfg)["params"]
            theirs = run_peer(python, cfg)["params"]
            expected = arch.num_params(model, width)
            print(f"params {model} width {width}: tks-jax {ours:,}  SpikingJelly {theirs:,}  "
                  f"(arch.py {expected:,})")
            if ours != theirs:
                raise SystemExit(
                    f"Parameter counts differ for {model} width {width}: tks-jax {ours} vs "
                    f"SpikingJelly {theirs}. The two models are not the same architecture; fix "
                    "the model (or benchmarks/arch.py) before timing."
                )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    train_step.add_sweep_arguments(p)
    p.add_argument("--rounds", type=int, default=1, help="alternations per configuration")
    p.add_argument("--options", default="{}", help="JSON dict of tks-jax model options")
    p.add_argument("--peer-python", default=DEFAULT_PEER_PYTHON,
                   help="python of the SpikingJelly environment")
    p.add_argument("--out", default=os.path.join(train_step.RESULTS_DIR, "compare.jsonl"))
    args = p.parse_args(argv)

    if not os.path.exists(args.peer_python):
        raise SystemExit(
            f"No SpikingJelly environment at {args.peer_python}. Create it with\n"
            "  python3 -m venv benchmarks/peers/.venv\n"
            "  benchmarks/peers/.venv/bin/pip install -r benchmarks/peers/requirements.txt\n"
            "or pass --peer-python."
        )
    models = args.models.split(",")
    widths = [float(w) for w in args.widths.split(",")]
    options = json.loads(args.options)
    check_params(args.peer_python, args.source, options, models, widths)

    peaks = {"tks_jax": train_step.run_in_subprocess({"mode": "gemm"}),
             "spikingjelly": run_peer(args.peer_python, {"mode": "gemm"})}
    for rec in peaks.values():
        train_step.append_jsonl(args.out, rec)
    peak = peaks["tks_jax"]["gflop_per_s"]
    print(f"fp32 GEMM 4096^3: JAX {peak:.1f} GFLOP/s, torch "
          f"{peaks['spikingjelly']['gflop_per_s']:.1f} GFLOP/s (fractions below use JAX's)")
    print(train_step.HEADER)
    summary = []
    for model in models:
        for width in widths:
            for batch in [int(b) for b in args.batches.split(",")]:
                for mode in args.modes.split(","):
                    cfg = {"model": model, "batch": batch, "width": width, "mode": mode,
                           "steps": args.steps, "warmup": args.warmup, "source": args.source,
                           "options": options}
                    recs: dict[str, list[dict]] = {"tks_jax": [], "spikingjelly": []}
                    for r in range(args.rounds):
                        order = ["tks_jax", "spikingjelly"]
                        for fw in order if r % 2 == 0 else order[::-1]:
                            rec = (train_step.run_in_subprocess(cfg) if fw == "tks_jax"
                                   else run_peer(args.peer_python, cfg))
                            rec["gemm_peak_gflop_per_s"] = peak
                            rec["round"] = r
                            train_step.append_jsonl(args.out, rec)
                            recs[fw].append(rec)
                            print(train_step.format_row(rec, peak), flush=True)
                    speed = {fw: statistics.median(x["img_per_s"] for x in v)
                             for fw, v in recs.items()}
                    cpu = {fw: statistics.median(x["cpu_s_median"] for x in v)
                           for fw, v in recs.items()}
                    mem = {fw: max(x["peak_rss_mb"] for x in v) for fw, v in recs.items()}
                    # Cores kept busy during a step (CPU seconds over wall seconds, per run).
                    cores = {fw: statistics.median(x["cpu_s_median"] / x["step_s_median"]
                                                   for x in v) for fw, v in recs.items()}
                    row = {"model": model, "width": width, "batch": batch, "mode": mode,
                           "speed_ratio": speed["tks_jax"] / speed["spikingjelly"],
                           "cpu_ratio": cpu["spikingjelly"] / cpu["tks_jax"],
                           "memory_ratio": mem["tks_jax"] / mem["spikingjelly"],
                           "img_per_s": speed, "peak_rss_mb": mem, "cores_busy": cores,
                           "fraction_of_peak": {fw: arch.flops(model, width, batch,
                                                               mode == "train") * s / batch
                                                / 1e9 / peak for fw, s in speed.items()}}
                    train_step.append_jsonl(args.out, {"summary": row})
                    summary.append(row)
                    print(f"   ratio tks-jax/SpikingJelly: speed {row['speed_ratio']:.2f}x, "
                          f"by CPU time {row['cpu_ratio']:.2f}x, memory "
                          f"{row['memory_ratio']:.2f}x; cores busy {cores['tks_jax']:.2f} / "
                          f"{cores['spikingjelly']:.2f}", flush=True)

    print("\nSummary (tks-jax / SpikingJelly; speed > 1 and memory < 1 favour tks-jax)")
    print(f"{'model':>9} {'width':>5} {'batch':>5} {'mode':>6} {'jax img/s':>9} {'sj img/s':>9} "
          f"{'speed':>6} {'cpu':>6} {'memory':>7} {'jax %pk':>7} {'sj %pk':>7} {'cores':>9}")
    for row in summary:
        print(f"{row['model']:>9} {row['width']:>5} {row['batch']:>5} {row['mode']:>6} "
              f"{row['img_per_s']['tks_jax']:>9.2f} {row['img_per_s']['spikingjelly']:>9.2f} "
              f"{row['speed_ratio']:>5.2f}x {row['cpu_ratio']:>5.2f}x "
              f"{row['memory_ratio']:>6.2f}x {row['fraction_of_peak']['tks_jax']:>7.0%} "
              f"{row['fraction_of_peak']['spikingjelly']:>7.0%} "
              f"{row['cores_busy']['tks_jax']:>4.2f}/{row['cores_busy']['spikingjelly']:.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
