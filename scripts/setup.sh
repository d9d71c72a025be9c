#!/usr/bin/env bash
# One-command, idempotent setup: .venv with torch 2.13.0 (CPU wheel), the pinned Python
# dependencies, the PyPI ROS 2 Jazzy wheels, fusionocc_msgs (and, where tf2_msgs is missing, the
# test-only tf2_msgs) built with rosidl into the venv, and this project installed editable.
# Each step leaves a stamp only when it finished, so an interrupted run simply resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-$ROOT/.venv}
BUILD=$ROOT/build/rosidl
export PIP_DISABLE_PIP_VERSION_CHECK=1

die() { echo "setup: $*" >&2; exit 1; }
say() { echo "setup: $*"; }

# --- system tools -----------------------------------------------------------------------------
command -v "$PYTHON" >/dev/null || die "missing $PYTHON (Python 3.11 with venv and headers is required)"
for tool in cmake make c++ cc; do
  command -v "$tool" >/dev/null || die "missing system tool '$tool' (Debian: apt-get install cmake make g++)"
done
PYINC=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$PYINC/Python.h" ] || die "missing Python headers ($PYINC/Python.h; Debian: apt-get install python3.11-dev)"

# --- venv and Python dependencies -------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY=$VENV/bin/python
# re-install when the pins, setup.py or the set of top-level packages change (editable mapping)
pins_hash=$( (cat requirements.txt setup.py; ls -d */__init__.py) | sha1sum | cut -c1-12)
stamp=$VENV/.fusionocc-deps-$pins_hash
if [ ! -f "$stamp" ]; then
  say "installing torch 2.13.0 and the pinned dependencies (requirements.txt)"
  # torch first and pinned: 2.13.0 resolves to the CPU wheel on our machines (README: Setup).
  "$PY" -m pip install -q torch==2.13.0
  "$PY" -m pip install -q -e ".[ros,dev]"
  rm -f "$VENV"/.fusionocc-deps-*
  touch "$stamp"
else
  say "python dependencies up to date"
fi

# --- rosidl interface packages ----------------------------------------------------------------
# The wheels bake their manylinux build paths into exported CMake files; point them at this venv.
NPINC=$("$PY" -c 'import numpy; print(numpy.get_include())')
VPYINC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
{ grep -rlZ /opt/python/cp311-cp311 "$VENV/share" --include='*.cmake' 2>/dev/null || true; } | xargs -0 -r sed -i \
  -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g" \
  -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/core/include#$NPINC#g" \
  -e "s#/opt/python/cp311-cp311/include/python3.11#$VPYINC#g"

build_interface() {  # build_interface <name> <source dir>: rosidl build + install into the venv
  local name=$1 src=$2
  local h; h=$( (find "$src" -type f -print0 | sort -z | xargs -0 cat; echo "$VENV") | sha1sum | cut -c1-12)
  local stamp=$VENV/.fusionocc-msg-$name-$h
  if [ -f "$stamp" ]; then say "$name up to date"; return; fi
  say "building $name with rosidl"
  (
    export PATH=$VENV/bin:$PATH AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV
    cmake -S "$src" -B "$BUILD/$name" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" \
      -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >"$BUILD/$name.log" 2>&1 \
    && cmake --build "$BUILD/$name" -j"$(nproc)" >>"$BUILD/$name.log" 2>&1 \
    && cmake --install "$BUILD/$name" >>"$BUILD/$name.log" 2>&1
  ) || die "building $name failed (log: $BUILD/$name.log): $(grep -m1 -iE 'error' "$BUILD/$name.log" || tail -n1 "$BUILD/$name.log")"
  rm -f "$VENV"/.fusionocc-msg-"$name"-*
  touch "$stamp"
}
mkdir -p "$BUILD"
if "$PY" -c 'import tf2_msgs.msg' 2>/dev/null && [ ! -f "$VENV"/share/tf2_msgs/.fusionocc-test-support ]; then
  say "tf2_msgs comes from the ROS install; not building the test stand-in"
else
  build_interface tf2_msgs "$ROOT/test_support/tf2_msgs"
  touch "$VENV/share/tf2_msgs/.fusionocc-test-support"
fi
build_interface fusionocc_msgs "$ROOT/fusionocc_msgs"

"$PY" -c 'import rclpy, fusionocc_msgs.msg, tf2_msgs.msg, torch, fusionocc_core' \
  || die "the environment does not import (rclpy, fusionocc_msgs, tf2_msgs, torch, fusionocc_core)"
say "ready: $VENV ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
