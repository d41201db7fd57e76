r"""The accelerator check behind ``benchmarks/device_check.sh``: stages, budgets, result files.

Stages, in this order, each in child processes (this process never imports JAX, so that it
never holds the accelerator), each with a time limit; what a stage finished before its limit
is kept, the rest is recorded as skipped or timed out, and the next stage runs:

- ``platform``: ``conv='auto'`` against ``conv='direct'`` in the traced forward pass (which
  convolution runs), the XLA flags ``train.py`` would set (``platform_check.py``);
- ``tests``: the model / loss / spiking / train-step tests under ``JAX_PLATFORMS`` (pytest);
- ``bench``: training-step throughput and peak accelerator memory of tks-jax
  (``benchmarks/train_step.py``) and SpikingJelly (``benchmarks/peers/sj_train_step.py``, each
  LIF backend it offers) for ResNet-19 T=4 batch 64 and 128 and VGG-SNN T=10 batch 32, float32
  and bfloat16; a bf16 GEMM as the measured ceiling; achieved FLOP/s as a fraction of the
  device's dense bf16 peak (``peaks.py``) and of that GEMM;
- ``train``: ``train.py`` on ``configs/nmnist_synth_default.py`` (its 8k/2k recordings, both
  epochs), time to accuracy, heap-trim calls and ``XLA_FLAGS`` (``train_probe.py``).

Files under ``--out``: ``summary.json`` (machine, stage status and times, peaks),
``platform.json`` (every check with ``expected`` and ``ok``), ``tests.json``, ``bench.jsonl``
(one record per run, ``status`` ok / failed / timeout / skipped), ``train.json`` and
``table.md`` (``table.py``). The exit status is 0 only if every stage finished and every check
and test passed.

``--smoke`` runs every stage at tiny size on CPU (the same code paths; numbers meaningless):
``tests/test_device_check.py`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from typing import Any

from benchmarks.device import peaks, table
from benchmarks.train_step import REPO_ROOT

# Seconds per stage on the GPU; unused time carries over to the next stage.
FULL_BUDGETS = {"platform": 30, "tests": 90, "bench": 240, "train": 90}
SMOKE_BUDGETS = {"platform": 90, "tests": 90, "bench": 240, "train": 240}
STAGES = tuple(FULL_BUDGETS)

# Most telling first: a stage stopped at its limit keeps the results of the tests run so far.
FULL_TESTS = [
    "tests/test_models.py",
    "tests/test_losses.py",
    "tests/test_train.py",
    "tests/test_spiking.py",
    "tests/test_train_optim.py",
    "tests/test_perf_equivalence.py",
]
SMOKE_TESTS = ["tests/test_losses.py", "-k", "test_lam_endpoints"]

# (model, batch, dtype) at full width and the model's own T (benchmarks/arch.py: ResNet-19
# T=4, VGG-SNN T=10), in order of priority: if the stage runs out of time, both models and
# both dtypes have been measured before the second ResNet-19 batch size.
FULL_BENCH = [
    ("resnet19", 64, "float32"),
    ("vgg_snn", 32, "float32"),
    ("resnet19", 64, "bfloat16"),
    ("vgg_snn", 32, "bfloat16"),
    ("resnet19", 128, "float32"),
    ("resnet19", 128, "bfloat16"),
]
SMOKE_BENCH = [("vgg_snn", 2, "bfloat16")]  # one compile; the dtype option exercised


class Budget:
    """A global deadline and per-stage limits; time a stage leaves unused carries over."""

    def __init__(self, total_s: float, stages: dict[str, float]):
        self.deadline = time.monotonic() + total_s
        self.stages = stages
        self.slack = 0.0

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def stage_limit(self, name: str) -> float:
        return min(self.stages[name] + self.slack, self.remaining())

    def settle(self, name: str, used: float) -> None:
        self.slack = max(0.0, self.stages[name] + self.slack - used)


# Runs its arguments with SIGINT back at its default disposition. A parent that ignores
# SIGINT (a background job, a pytest-xdist worker) passes the ignore on through fork and exec,
# and the command could not handle the SIGINT sent on timeout. A wrapper process rather than
# Popen's ``preexec_fn``, which runs Python in the forked child of a multi-threaded parent
# (JAX's threads), where a lock held by another thread at the fork never comes free.
_EXEC_WITH_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def run_cmd(cmd: list[str], timeout: float, env: dict[str, str] | None = None,
            log: str | None = None, grace: float = 10.0) -> tuple[int | None, str]:
    """Runs ``cmd`` in its own process group from the repository root. On timeout the group
    gets SIGINT (pytest then still writes its report of the tests run so far) and, ``grace``
    seconds later, SIGKILL. Returns ``(returncode or None on timeout, combined output)``."""
    full_env = {**os.environ, **(env or {})}
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, "-c", _EXEC_WITH_DEFAULT_SIGINT, *cmd],
                                cwd=REPO_ROOT, env=full_env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, text=True)
        try:
            code: int | None = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            code = None
        out.seek(0)
        text = out.read()
    if log:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{text}\n[exit {code}]\n")
    return code, text


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def _write_json(path: str, obj: Any) -> None:
    tmp = path + ".part"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


class Check:
    """One device-check run: the output folder, the budget and the records so far."""

    def __init__(self, out: str, smoke: bool, budget_s: float):
        self.out = out
        self.smoke = smoke
        self.budget = Budget(budget_s, SMOKE_BUDGETS if smoke else FULL_BUDGETS)
        self.platform = "cpu" if smoke else "cuda"
        # XLA_FLAGS as given (benchmarks/train_step.py would otherwise add its CPU flag).
        self.env = {"JAX_PLATFORMS": self.platform, "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
                    "PYTHONUNBUFFERED": "1"}
        self.log = os.path.join(out, "log.txt")
        self.checks: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {
            "mode": "smoke (CPU, tiny sizes: numbers are meaningless)" if smoke else "full",
            "platform": self.platform,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "budget_s": budget_s,
            "stages": {},
        }

    # -- bookkeeping --------------------------------------------------------------------------

    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def save(self) -> None:
        _write_json(self.path("summary.json"), self.summary)
        _write_json(self.path("platform.json"), {"checks": self.checks})

    def stage(self, name: str, fn) -> None:
        limit = self.budget.stage_limit(name)
        t0 = time.monotonic()
        if limit < 5:
            self.summary["stages"][name] = {"status": "skipped", "reason": "time budget spent"}
            self.save()
            return
        print(f"== stage {name} (limit {limit:.0f} s)", flush=True)
        try:
            status = fn(limit)
        except Exception as e:  # noqa: BLE001  (recorded; the next stage still runs)
            status = {"status": "failed", "error": f"{type(e).__name__}: {e}"[-2000:]}
        used = time.monotonic() - t0
        self.budget.settle(name, used)
        self.summary["stages"][name] = {**status, "seconds": round(used, 1),
                                        "limit_s": round(limit, 1)}
        self.save()

    # -- stages ------------------------------------------------------------------------------

    def stage_platform(self, limit: float) -> dict[str, Any]:
        raw = self.path("platform_raw.json")
        cmd = [sys.executable, "-m", "benchmarks.device.platform_check", "--out", raw]
        if self.smoke:
            cmd += ["--no-compile", "--models", "vgg_snn"]
        code, text = run_cmd(cmd, limit, self.env, self.log)
        if code is None:
            return {"status": "timeout"}
        if code != 0 or not os.path.exists(raw):
            return {"status": "failed", "error": text[-2000:]}
        with open(raw) as f:
            result = json.load(f)
        os.remove(raw)
        self.summary.update(backend=result["backend"], device_kind=result["device_kind"],
                            jax=result["jax"])
        self.checks.extend(result["checks"])
        return {"status": "ok"}

    def stage_tests(self, limit: float) -> dict[str, Any]:
        if self.smoke:
            selection = SMOKE_TESTS
        else:
            selection = [t for t in FULL_TESTS if os.path.exists(os.path.join(REPO_ROOT, t))]
        with tempfile.TemporaryDirectory() as tmp:
            junit = os.path.join(tmp, "junit.xml")
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   f"--junitxml={junit}", *selection]
            code, text = run_cmd(cmd, limit, self.env, self.log)
            result = parse_junit(junit) if os.path.exists(junit) else {}
        result.update(selection=selection, exit_code=code, output_tail=text[-3000:])
        _write_json(self.path("tests.json"), result)
        if code is None:
            return {"status": "timeout"}
        ok = code == 0 and result.get("tests", 0) > 0
        return {"status": "ok" if ok else "failed"}

    def _peer_probe(self, python: str, timeout: float) -> dict[str, Any]:
        script = os.path.join(REPO_ROOT, "benchmarks", "peers", "sj_train_step.py")
        code, text = run_cmd([python, script, "--probe"], timeout, self.env, self.log)
        probe = _last_json(text) if code == 0 else None
        if probe is None:
            last = text.strip().splitlines()[-1] if text.strip() else f"exit {code}"
            return {"available": False,
                    "reason": f"torch/spikingjelly not importable by {python}: {last}"}
        return {"available": True, **probe}

    def stage_bench(self, limit: float) -> dict[str, Any]:
        from benchmarks.peers import compare

        stop = time.monotonic() + limit
        path = self.path("bench.jsonl")
        peer = self._peer_probe(self.peer_python, min(60.0, limit / 4))
        self.summary["spikingjelly"] = peer
        configs = SMOKE_BENCH if self.smoke else FULL_BENCH
        common = ({"width": 0.125, "num_steps": 2, "steps": 1, "warmup": 1} if self.smoke
                  else {"width": 1.0, "num_steps": 0, "steps": 5, "warmup": 2})
        per_run = limit if self.smoke else 90.0

        def left() -> float:
            return stop - time.monotonic()

        def record(rec: dict[str, Any]) -> None:
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")

        gemm = {"mode": "gemm", "dtype": "bfloat16", "n": 256 if self.smoke else 8192}
        ceiling = self._run_tks(gemm, min(per_run, left()))
        record(ceiling)
        measured = ceiling.get("gflop_per_s") if ceiling.get("status") == "ok" else None

        runs = []
        for model, batch, dtype in configs:
            cfg = {"model": model, "batch": batch, "mode": "train", "source": "tks",
                   "options": {"dtype": dtype}, **common}
            runs.append(("tks_jax", None, cfg))
            for backend in peer.get("backends", ["torch"]):
                runs.append(("spikingjelly", backend, cfg))
        n_ok = n_bad = 0
        for framework, backend, cfg in runs:
            key = {"framework": framework, "model": cfg["model"], "batch": cfg["batch"],
                   "dtype": cfg["options"]["dtype"], "mode": "train"}
            if framework == "spikingjelly":
                key["sj_backend"] = backend
                if not peer["available"]:
                    record({**key, "status": "skipped", "reason": peer["reason"]})
                    continue
            if left() < 5:
                record({**key, "status": "skipped", "reason": "bench stage time budget spent"})
                n_bad += 1
                continue
            timeout = min(per_run, left())
            if framework == "tks_jax":
                rec = self._run_tks(cfg, timeout)
            else:
                peer_cfg = {**cfg, "sj_backend": backend,
                            "device": "cuda" if peer.get("cuda") else "cpu"}
                rec = self._run_peer(compare, peer_cfg, timeout)
            rec = {**key, **rec}
            if rec.get("status") == "ok":
                n_ok += 1
                rec.update(flop_fractions(rec, self.summary.get("device_kind", ""), measured))
            else:
                n_bad += 1
            record(rec)
        peak = peaks.bf16_peak(self.summary.get("device_kind", ""))
        self.summary["bf16_peak"] = (
            {"tflops": peak[0], "source": peak[1]} if peak
            else {"tflops": None, "source": f"no entry for {self.summary.get('device_kind')!r}"}
        )
        self.summary["measured_bf16_gemm_tflops"] = None if measured is None else measured / 1e3
        # Runs skipped because SpikingJelly is not importable are recorded with the reason and
        # do not fail the stage; runs that failed, timed out or found no time do.
        status = "failed" if not n_ok else "partial" if n_bad else "ok"
        return {"status": status, "runs_ok": n_ok, "runs": len(runs)}

    def _run_tks(self, cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "benchmarks.train_step", "--single", json.dumps(cfg)]
        code, text = run_cmd(cmd, timeout, self.env, self.log)
        return _status(code, text, timeout)

    def _run_peer(self, compare, cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
        cmd = [self.peer_python, compare.PEER_SCRIPT, "--single", json.dumps(cfg)]
        code, text = run_cmd(cmd, timeout, self.env, self.log)
        return _status(code, text, timeout)

    def stage_train(self, limit: float) -> dict[str, Any]:
        work = tempfile.mkdtemp(prefix="tks_device_train_")
        data_dir, workdir = os.path.join(work, "data"), os.path.join(work, "run")
        out = self.path("train.json")
        if self.smoke:
            store = ["--num-train", "64", "--num-test", "32"]
            overrides = ["--config.smoke=True", "--config.num_steps=2"]
        else:
            # The config reads the first 8000 / 2000 recordings: a store of exactly those
            # holds the same data and is simulated in a fraction of the time.
            store = ["--num-train", "8000", "--num-test", "2000"]
            overrides = ["--config.eval_every_epochs=1"]
        train_args = ["--config", "configs/nmnist_synth_default.py", "--workdir", workdir,
                      f"--config.data.data_dir={data_dir}", *overrides]
        cmd = [sys.executable, "-m", "benchmarks.device.train_probe", "--out", out,
               "--data-dir", data_dir, *store, "--", *train_args]
        # train.py's own choice of XLA_FLAGS is under test: do not pass ours.
        env = {k: v for k, v in self.env.items() if k != "XLA_FLAGS"}
        saved = os.environ.pop("XLA_FLAGS", None)
        try:
            code, text = run_cmd(cmd, limit, env, self.log)
        finally:
            if saved is not None:
                os.environ["XLA_FLAGS"] = saved
        if code is None or not os.path.exists(out):
            # Partial: what train.py logged before it was stopped.
            from benchmarks.device.train_probe import read_metrics, time_to_accuracy

            rec = {"status": "timeout" if code is None else "failed", "train_py_args": train_args,
                   "output_tail": text[-2000:]}
            rec.update(time_to_accuracy(read_metrics(os.path.join(workdir, "metrics.jsonl")),
                                        os.path.getmtime(work), [0.8, 0.9, 0.95]))
            _write_json(out, rec)
        with open(out) as f:
            rec = json.load(f)
        shutil.rmtree(work, ignore_errors=True)
        if "heap_trim_calls" in rec:
            self.checks.extend(host_checks(rec, self.summary.get("backend", self.platform)))
        return {"status": rec.get("status", "failed")}

    # -- driver ------------------------------------------------------------------------------

    def run(self, stages: list[str], peer_python: str) -> int:
        self.peer_python = peer_python
        os.makedirs(self.out, exist_ok=True)
        for name in ("bench.jsonl", "tests.json", "train.json", "table.md"):
            if os.path.exists(self.path(name)):
                os.remove(self.path(name))
        self.save()
        for name in stages:
            self.stage(name, getattr(self, f"stage_{name}"))
        self.summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.save()
        table.write_table(self.out)
        stages_ok = all(s.get("status") == "ok" for s in self.summary["stages"].values())
        checks_ok = all(c.get("ok") is not False for c in self.checks)
        return 0 if stages_ok and checks_ok else 1


def _status(code: int | None, text: str, timeout: float) -> dict[str, Any]:
    if code is None:
        return {"status": "timeout", "reason": f"over {timeout:.0f} s"}
    rec = _last_json(text) if code == 0 else None
    if rec is None:
        return {"status": "failed", "error": text[-1500:]}
    return {**rec, "status": "ok"}


def flop_fractions(rec: dict[str, Any], device_kind: str,
                   measured_gflops: float | None) -> dict[str, Any]:
    """Achieved FLOP/s of a benchmark record over the dense bf16 peak of its device and over
    the measured bf16 GEMM, from the analytic count (``benchmarks/arch.py``) and, where the
    record has it, XLA's ``cost_analysis``."""
    kind = rec.get("device_kind") or device_kind
    peak = peaks.bf16_peak(kind)
    step_s, flop = rec["step_s_median"], rec["gflop_per_step"] * 1e9
    out: dict[str, Any] = {"bf16_peak_tflops": peak[0] if peak else None}
    out["frac_bf16_peak"] = peaks.fraction_of_peak(flop, step_s, peak[0]) if peak else None
    xla = rec.get("xla_gflop_per_step")
    out["frac_bf16_peak_xla_flops"] = (
        peaks.fraction_of_peak(xla * 1e9, step_s, peak[0])
        if peak and isinstance(xla, int | float) and xla == xla else None
    )
    out["frac_measured_gemm"] = (
        peaks.fraction_of_peak(flop, step_s, measured_gflops / 1e3) if measured_gflops else None
    )
    return out


def parse_junit(path: str) -> dict[str, Any]:
    """Counts and failing test ids of a pytest JUnit XML file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites)
              for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(f"{case.get('classname')}::{case.get('name')}")
    return {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"]
            - counts["skipped"], "failed_ids": failed}


def host_checks(rec: dict[str, Any], backend: str) -> list[dict[str, Any]]:
    """Checks on what ``train.py`` did on the host: the heap trim (``host_memory``) and XLA:CPU
    flags are for CPU runs; on an accelerator neither should happen."""
    on_cpu = backend == "cpu"
    trims = rec["heap_trim_calls"]
    flags = rec.get("xla_flags", "")
    cpu_flag = "--xla_cpu_" in flags
    return [
        {"check": "train_heap_trim", "backend": backend, "heap_trim_calls": trims,
         "expected": "trim after compiling (CPU)" if on_cpu else "no heap trim on an accelerator",
         "ok": trims > 0 if on_cpu else trims == 0},
        {"check": "train_ran_with_xla_flags", "backend": backend, "xla_flags": flags,
         "sets_xla_cpu_flag": cpu_flag,
         "expected": "any" if on_cpu else "no XLA:CPU flag on an accelerator",
         "ok": True if on_cpu else not cpu_flag},
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the result files")
    p.add_argument("--smoke", action="store_true", help="every stage at tiny size on CPU")
    p.add_argument("--budget-s", type=float, default=450.0, help="global time limit (s)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"subset of {STAGES}")
    p.add_argument("--peer-python", default=sys.executable,
                   help="python with torch + spikingjelly (default: this one)")
    args = p.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise SystemExit(f"Unknown stage(s) {unknown}; choose from {STAGES}.")
    check = Check(args.out, args.smoke, args.budget_s)
    code = check.run(stages, args.peer_python)
    print(open(os.path.join(args.out, "table.md")).read())
    sys.exit(code)


if __name__ == "__main__":
    main()
