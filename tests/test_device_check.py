"""The accelerator check's CPU side: script syntax, a CPU smoke run of every stage, the table,
the FLOP-fraction arithmetic and the platform checks (``benchmarks/device_check.sh``)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import pytest

from benchmarks import arch
from benchmarks.device import check, peaks, platform_check, table, train_probe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "device_check.sh")


# ---------------------------------------------------------------------------------------------
# The script and its CPU smoke run.
# ---------------------------------------------------------------------------------------------


def test_script_syntax():
    proc = subprocess.run(["bash", "-n", SCRIPT], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_script_rejects_unknown_arguments(tmp_path):
    proc = subprocess.run(["bash", SCRIPT, "--gpu-please"], capture_output=True, text=True,
                          env={**os.environ, "OUT": str(tmp_path)})
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_budgets_fit_eight_minutes():
    text = open(SCRIPT).read()
    default = int(re.search(r'DEVICE_CHECK_BUDGET_S:-(\d+)', text).group(1))
    hard_margin = int(re.search(r'"\$\(\(budget \+ (\d+)\)\)"', text).group(1))
    assert sum(check.FULL_BUDGETS.values()) <= default
    assert default + hard_margin <= 8 * 60
    assert list(check.FULL_BUDGETS) == list(check.SMOKE_BUDGETS) == list(check.STAGES)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One CPU smoke run of the whole script (every stage, tiny sizes)."""
    out = tmp_path_factory.mktemp("device_check")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "DEVICE_CHECK_DRY": "1",
           "DEVICE_CHECK_BUDGET_S": "900"}
    env.pop("XLA_FLAGS", None)
    t0 = time.monotonic()
    proc = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=env,
                          timeout=1200)
    return out, proc, time.monotonic() - t0


def _json(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.slow
def test_smoke_runs_every_stage_and_writes_the_files(smoke):
    out, proc, _ = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("summary.json", "platform.json", "tests.json", "bench.jsonl", "train.json",
                 "table.md", "log.txt"):
        assert (out / name).exists(), name
    # At most 8 files come back from the device machine's output folder.
    assert len(os.listdir(out)) <= 8
    summary = _json(out / "summary.json")
    assert summary["backend"] == "cpu" and summary["platform"] == "cpu"
    assert list(summary["stages"]) == list(check.STAGES)
    assert {s["status"] for s in summary["stages"].values()} == {"ok"}
    tests = _json(out / "tests.json")
    assert tests["passed"] >= 1 and tests["failures"] == tests["errors"] == 0


def _expected_winograd_layers(model: str) -> tuple[int, int]:
    """(conv layers, Winograd-eligible ones) from the architecture table: 3x3 stride-1 with
    >= 16 input and output channels (the documented rule of conv='auto' on CPU)."""
    convs = [s for s in arch.ARCHS[model](1.0) if s.kernel > 0]  # kernel 0: dense layers
    eligible = [s for s in convs if s.kernel == 3 and s.stride == 1 and min(s.cin, s.cout) >= 16]
    return len(convs), len(eligible)


@pytest.mark.slow
def test_smoke_platform_checks_see_winograd_on_cpu(smoke):
    out, _, _ = smoke
    checks = _json(out / "platform.json")["checks"]
    conv = next(c for c in checks if c["check"] == "conv_auto_algorithm"
                and c["model"] == "vgg_snn" and c["dtype"] == "float32")
    n_conv, n_eligible = _expected_winograd_layers("vgg_snn")
    assert (n_conv, n_eligible) == (8, 7)  # the first layer has 2 input channels
    assert conv["conv_layers"] == n_conv
    assert conv["winograd_layers_with_auto"] == n_eligible
    assert conv["ok"] is True
    # bfloat16 takes Winograd on CPU too, for the same layers.
    bf16 = next(c for c in checks if c["check"] == "conv_auto_algorithm"
                and c["dtype"] == "bfloat16")
    assert bf16["winograd_layers_with_auto"] == n_eligible and bf16["ok"] is True
    # train.py on CPU: the heap trim ran after compiling.
    trim = next(c for c in checks if c["check"] == "train_heap_trim")
    assert trim["heap_trim_calls"] >= 1 and trim["ok"] is True


@pytest.mark.slow
def test_smoke_bench_records_and_peer_reason(smoke):
    out, _, _ = smoke
    with open(out / "bench.jsonl") as f:
        recs = [json.loads(line) for line in f]
    gemm = [r for r in recs if r.get("mode") == "gemm"]
    assert gemm and gemm[0]["status"] == "ok" and gemm[0]["dtype"] == "bfloat16"
    ours = [r for r in recs if r.get("framework") == "tks_jax" and r.get("mode") == "train"]
    assert ours and all(r["status"] == "ok" for r in ours)
    r = ours[0]
    assert r["model"] == "vgg_snn" and r["options"] == {"dtype": "bfloat16"}
    assert r["backend"] == "cpu" and r["heap_trim"] is True  # the trim runs on CPU only
    assert r["step_s_median"] > 0 and r["peak_rss_mb"] > 0
    assert r["frac_measured_gemm"] == pytest.approx(
        r["gflop_per_s"] / gemm[0]["gflop_per_s"])
    assert r["frac_bf16_peak"] is None  # no bf16 peak for a CPU
    peer = [r for r in recs if r.get("framework") == "spikingjelly"]
    assert peer
    importable = (importlib.util.find_spec("torch") is not None
                  and importlib.util.find_spec("spikingjelly") is not None)
    for r in peer:
        if importable:
            assert r["status"] == "ok" and r["params"] == ours[0]["params"]
        else:
            assert r["status"] == "skipped"
            assert "not importable" in r["reason"] and "torch" in r["reason"]


@pytest.mark.slow
def test_smoke_train_and_table(smoke):
    out, _, _ = smoke
    train = _json(out / "train.json")
    assert train["status"] == "ok" and train["exit_code"] in (0, None)
    assert train["store"] == {"num_train": 64, "num_test": 32}
    assert train["eval"] and train["eval"][-1][1] == 2  # smoke: 2 steps, evaluated at the end
    assert "--xla_cpu_" in train["xla_flags"]  # train.py's CPU flag (jaxlib 0.10 here)
    text = (out / "table.md").read_text()
    assert "| vgg_snn | 2 | bfloat16 | tks_jax |" in text
    assert "## Platform checks" in text and "## nmnist_synth training" in text
    assert "FAIL" not in text


# ---------------------------------------------------------------------------------------------
# Pieces, on fixtures.
# ---------------------------------------------------------------------------------------------


def test_bf16_peak_table():
    assert peaks.bf16_peak("NVIDIA H200")[0] == 989.0
    assert peaks.bf16_peak("NVIDIA H100 80GB HBM3")[0] == 989.0
    assert peaks.bf16_peak("NVIDIA H100 PCIe")[0] == 756.0  # matched before plain H100
    assert peaks.bf16_peak("nvidia a100-sxm4-80gb")[0] == 312.0
    assert "datasheet" in peaks.bf16_peak("NVIDIA H200")[1]
    assert peaks.bf16_peak("cpu") is None and peaks.bf16_peak("") is None


def test_fraction_of_peak_arithmetic():
    # Half of 989 TFLOP/s: 494.5e12 FLOP in one second.
    assert peaks.fraction_of_peak(494.5e12, 1.0, 989.0) == pytest.approx(0.5)
    # 1e12 FLOP in 2 ms = 5e14 FLOP/s = 0.50556 of 989e12.
    assert peaks.fraction_of_peak(1e12, 2e-3, 989.0) == pytest.approx(5e14 / 989e12)
    for bad in [(1.0, 0.0, 989.0), (1.0, 1.0, 0.0), (1.0, float("nan"), 989.0)]:
        with pytest.raises(ValueError, match="step_s > 0"):
            peaks.fraction_of_peak(*bad)


def test_flop_fractions_of_a_record():
    rec = {"device_kind": "NVIDIA H200", "step_s_median": 1e-3, "gflop_per_step": 100.0,
           "xla_gflop_per_step": 120.0}
    f = check.flop_fractions(rec, "", measured_gflops=800e3)  # 800 TFLOP/s measured
    assert f["bf16_peak_tflops"] == 989.0
    assert f["frac_bf16_peak"] == pytest.approx(1e14 / 989e12)
    assert f["frac_bf16_peak_xla_flops"] == pytest.approx(1.2e14 / 989e12)
    assert f["frac_measured_gemm"] == pytest.approx(0.125)
    cpu = check.flop_fractions({**rec, "device_kind": "cpu", "xla_gflop_per_step": float("nan")},
                               "", None)
    assert cpu == {"bf16_peak_tflops": None, "frac_bf16_peak": None,
                   "frac_bf16_peak_xla_flops": None, "frac_measured_gemm": None}


def _write_fixture(folder):
    summary = {"mode": "full", "backend": "gpu", "device_kind": "NVIDIA H200", "jax": "0.0",
               "stages": {"bench": {"status": "ok", "seconds": 10.0, "limit_s": 20.0}},
               "bf16_peak": {"tflops": 989.0, "source": "datasheet"},
               "measured_bf16_gemm_tflops": 800.0}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "platform.json").write_text(json.dumps({"checks": [
        {"check": "train_heap_trim", "backend": "gpu", "heap_trim_calls": 1,
         "expected": "no heap trim on an accelerator", "ok": False}]}))
    base = {"model": "resnet19", "batch": 64, "dtype": "bfloat16", "mode": "train",
            "status": "ok"}
    bench = [
        {"mode": "gemm", "status": "ok", "gflop_per_s": 8e5},
        {**base, "framework": "tks_jax", "img_per_s": 2000.0, "step_s_median": 0.032,
         "peak_device_mb": 1000.0, "params": 7, "frac_bf16_peak": 0.25},
        {**base, "framework": "spikingjelly", "sj_backend": "torch", "img_per_s": 1000.0,
         "step_s_median": 0.064, "peak_device_mb": 2000.0, "params": 7},
        {**base, "framework": "spikingjelly", "sj_backend": "triton", "status": "timeout",
         "reason": "over 90 s"},
    ]
    (folder / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bench))
    (folder / "train.json").write_text(json.dumps({
        "status": "ok", "prepare_s": 20.0, "train_s": 60.0, "eval": [[30.0, 250, 0.9],
                                                                      [58.0, 500, 0.955]],
        "first_reached": {"0.9": [12.5, 100], "0.99": None}}))


def test_table_on_a_fixture(tmp_path):
    _write_fixture(tmp_path)
    text = open(table.write_table(str(tmp_path))).read()
    assert "| resnet19 | 64 | bfloat16 | tks_jax | - | 2000.0 | 32.0 | 1000 | 25.0% |" in text
    # tks-jax twice as fast at half the memory of SpikingJelly's torch backend.
    assert "| resnet19 | 64 | bfloat16 | torch | 2.00x | 0.50x | yes |" in text
    assert "timeout: over 90 s" in text
    assert "| train_heap_trim |" in text and "| FAIL |" in text
    assert "| 58.0 | 500 | 95.5% |" in text
    assert "90.0% at 12.5 s (step 100)" in text and "99.0% never" in text
    assert "Dense bf16 peak 989 TFLOP/s (datasheet)" in text


def test_table_of_an_empty_folder(tmp_path):
    text = table.render(str(tmp_path))
    assert "(not run)" in text and "(no runs)" in text


def test_parse_junit(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<testsuites><testsuite tests="4" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.test_a" name="test_ok"/>'
        '<testcase classname="tests.test_a" name="test_bad"><failure message="x"/></testcase>'
        '<testcase classname="tests.test_a" name="test_skip"><skipped/></testcase>'
        '<testcase classname="tests.test_a" name="test_ok2"/>'
        "</testsuite></testsuites>")
    r = check.parse_junit(str(xml))
    assert (r["tests"], r["passed"], r["failures"], r["skipped"]) == (4, 2, 1, 1)
    assert r["failed_ids"] == ["tests.test_a::test_bad"]


@pytest.mark.parametrize(
    "backend, trims, flags, ok",
    [("cpu", 2, "--xla_cpu_x=false", (True, True)),
     ("cpu", 0, "", (False, True)),
     ("gpu", 0, "", (True, True)),
     ("gpu", 1, "--xla_cpu_x=false", (False, False))],
)
def test_host_checks(backend, trims, flags, ok):
    got = check.host_checks({"heap_trim_calls": trims, "xla_flags": flags}, backend)
    assert [c["check"] for c in got] == ["train_heap_trim", "train_ran_with_xla_flags"]
    assert tuple(c["ok"] for c in got) == ok


def test_count_primitives_looks_inside_nested_jaxprs():
    def f(x, w):
        conv = lambda x: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME")  # noqa: E731
        y = jax.checkpoint(conv)(x)  # one conv inside a remat sub-jaxpr
        y = jax.lax.scan(lambda c, _: (conv(c), None), y, None, length=3)[0]  # one in a scan
        return conv(y) @ jnp.ones((4, 4))  # one at top level, plus a dot_general

    x = jax.ShapeDtypeStruct((1, 2, 4, 4), jnp.float32)
    w = jax.ShapeDtypeStruct((2, 2, 3, 3), jnp.float32)
    counts = platform_check.count_primitives(jax.make_jaxpr(f)(x, w))
    assert counts["conv_general_dilated"] == 3
    assert counts["dot_general"] == 1


def test_budget_carries_unused_time_over():
    b = check.Budget(1000.0, {"a": 10.0, "b": 20.0})
    assert b.stage_limit("a") == pytest.approx(10.0)
    b.settle("a", 4.0)
    assert b.stage_limit("b") == pytest.approx(26.0)
    b.settle("b", 30.0)  # overran: no slack left, never negative
    assert b.slack == 0.0
    short = check.Budget(3.0, {"a": 10.0})
    assert short.stage_limit("a") <= 3.0


@pytest.mark.slow
def test_run_cmd_kills_on_timeout():
    t0 = time.monotonic()
    code, _ = check.run_cmd(["bash", "-c", "sleep 30"], timeout=1.0, grace=1.0)
    assert code is None and time.monotonic() - t0 < 20
    # SIGINT first: a program that handles it still reports (as pytest writes its JUnit file).
    # The timeout leaves the shell time to start and install its trap on a loaded machine (a
    # SIGINT that arrives before the trap exists is not the behaviour under test).
    code, text = check.run_cmd(
        ["bash", "-c", "trap 'echo interrupted; exit 130' INT; sleep 30 & wait"],
        timeout=4.0, grace=10.0)
    assert code is None and "interrupted" in text
    # Even when this process ignores SIGINT (as a background job does), the command gets it.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code, text = check.run_cmd(
            ["bash", "-c", "trap 'echo interrupted; exit 130' INT; sleep 30 & wait"],
            timeout=4.0, grace=10.0)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code is None and "interrupted" in text
    code, text = check.run_cmd(["bash", "-c", "echo hi; exit 3"], timeout=30.0)
    assert code == 3 and text.strip() == "hi"


def test_time_to_accuracy():
    records = [
        {"step": 20, "split": "train", "time": 110.0, "top1": 0.5},
        {"step": 40, "split": "train", "time": 120.0, "top1": 0.92},
        {"step": 40, "split": "eval", "time": 125.0, "top1": 0.9},
        {"step": 60, "split": "train", "time": 130.0, "top1": 0.97},
    ]
    r = train_probe.time_to_accuracy(records, 100.0, [0.9, 0.95, 0.99])
    assert r["train"] == [[10.0, 20, 0.5], [20.0, 40, 0.92], [30.0, 60, 0.97]]
    assert r["eval"] == [[25.0, 40, 0.9]]
    assert r["first_reached"] == {"0.9": [20.0, 40], "0.95": [30.0, 60], "0.99": None}
