#!/usr/bin/env bash
# Builds the wheels that benchmarks/device_check.sh needs on a device machine without network:
# every package of benchmarks/device/requirements-device.txt, for CPython 3.12 on x86-64 Linux
# (the device image's python3), into benchmarks/device/wheels/ (git-ignored). Binary wheels
# are downloaded as they are; a package published only as a source archive (pure Python) is
# built into a wheel here. No dependencies are resolved: the file lists each one.
#
#   benchmarks/device/build_wheels.sh        # then carry benchmarks/device/wheels to the device
#
# Environment: PYTHON (default python3, any version: the target is set explicitly).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="$here/wheels"
py="${PYTHON:-python3}"
target=(--python-version 3.12 --implementation cp --abi cp312
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  --platform manylinux1_x86_64 --platform any)

mkdir -p "$dest"
rm -f "$dest"/*.whl
grep -v '^\s*\(#\|$\)' "$here/requirements-device.txt" | while read -r spec; do
  if ! "$py" -m pip download -q --no-deps --only-binary=:all: "${target[@]}" -d "$dest" \
      "$spec" 2>/dev/null; then
    echo "no wheel for $spec: building one from its source archive"
    "$py" -m pip wheel -q --no-deps -w "$dest" "$spec"
  fi
done
# Only pure-Python wheels may come from the local build.
for whl in "$dest"/*.whl; do
  case "$whl" in
    *-none-any.whl | *cp312*manylinux*x86_64*.whl | *abi3*manylinux*x86_64*.whl) ;;
    *) echo "unexpected wheel for the device: $whl" >&2; exit 1 ;;
  esac
done
ls "$dest"
du -sh "$dest"
