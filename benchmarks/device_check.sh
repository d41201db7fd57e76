#!/usr/bin/env bash
# The accelerator check: one command for a machine with one NVIDIA GPU where JAX (CUDA), flax,
# optax, orbax, chex and PyTorch are installed and nothing can be downloaded. Run from anywhere:
#
#   benchmarks/device_check.sh              # full check on the GPU, about 8 minutes
#   benchmarks/device_check.sh --cpu-smoke  # every stage at tiny size on CPU (also DEVICE_CHECK_DRY=1)
#
# Stages, results and budgets: benchmarks/device/check.py; how to carry the packages the
# machine lacks: benchmarks/README.md ("On an accelerator"). Results go to $OUT when set, else
# to benchmarks/results/device/ (the smoke run: $TMPDIR/tks_device_check_smoke).
# Environment: PYTHON (default python3), DEVICE_CHECK_BUDGET_S (default 450: stages stop
# starting work after it; the hard stop is 30 s later), DEVICE_CHECK_STAGES (comma list).
set -u -o pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root" || exit 2

smoke=()
if [[ "${1:-}" == "--cpu-smoke" || "${DEVICE_CHECK_DRY:-0}" == "1" ]]; then
  smoke=(--smoke)
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--cpu-smoke]" >&2
  exit 2
fi

if [[ ${#smoke[@]} -gt 0 ]]; then  # meaningless numbers: never into the results folder
  out="${OUT:-${TMPDIR:-/tmp}/tks_device_check_smoke}"
else
  out="${OUT:-$root/benchmarks/results/device}"
fi
mkdir -p "$out"
py="${PYTHON:-python3}"
budget="${DEVICE_CHECK_BUDGET_S:-450}"
stages="${DEVICE_CHECK_STAGES:-platform,tests,bench,train}"

# Wheels built by benchmarks/device/build_wheels.sh (for CPython 3.12, the device image's) and
# carried along: installed into a throw-away folder (--no-deps), never in the CPU smoke run.
wheels="$here/device/wheels"
if [[ ${#smoke[@]} -eq 0 ]] && compgen -G "$wheels/*.whl" >/dev/null; then
  site="${DEVICE_CHECK_SITE:-/tmp/tks_device_site}"
  if ! "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "$wheels"/*.whl; then
    echo "installing $wheels/*.whl with $py failed: they are built for CPython 3.12 on" \
      "x86-64 Linux (benchmarks/device/build_wheels.sh)" >&2
    exit 2
  fi
  export PYTHONPATH="$root:$site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1

: >"$out/log.txt"
if [[ ${#smoke[@]} -eq 0 ]] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv |
    tee -a "$out/log.txt"
fi

status=0
timeout --signal=TERM --kill-after=10 "$((budget + 30))" \
  "$py" -m benchmarks.device.check --out "$out" --budget-s "$budget" --stages "$stages" \
  "${smoke[@]}" || status=$?
# The table again, from whatever was written (also after a hard stop).
if ! "$py" -m benchmarks.device.table --out "$out" >/dev/null; then
  status=1
fi
echo "device check finished with status $status; results in $out"
exit "$status"
