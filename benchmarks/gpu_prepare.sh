#!/usr/bin/env bash
# What gpu_checks.sh needs on a lent GPU machine that has no internet, made here (once per checkout;
# all three are git-ignored and travel with the device tool's `carry`):
#   .whl/               wheels of rosbags and its dependencies for the device's Python 3.12
#                       (numpy and typing_extensions are left out: the device has its own)
#   .gpu_data/bag/      one synthetic scene of 20 key-frames (six 1600x900 JPEGs, ~260k LiDAR
#                       points merged per frame) converted with fusionocc-convert
#   .old_tree_<REV>/    `git archive REV`: the tree to measure against in the same run
#   benchmarks/gpu_prepare.sh [OLD_REV]        (default a2fb174, the last tree measured on the H200)
# Then: run `bash benchmarks/gpu_checks.sh $OUT/gpu .gpu_data/bag .old_tree_<REV>` on the device with
# carry [".whl", ".gpu_data", ".old_tree_<REV>"] (about 35 MB of the 64 MB allowed).
set -eu
rev=${1:-a2fb174}
cd "$(git rev-parse --show-toplevel)"
bin=${VENV_BIN:-.venv/bin}  # where setup put the fusionocc-* tools

if [ ! -d .whl ]; then
  echo "== wheels for the device (Python 3.12, manylinux x86_64) -> .whl/"
  tmp=$(mktemp -d)
  python3 -m pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
    --platform manylinux2014_x86_64 -d "$tmp" "$(grep -E '^rosbags==' requirements.txt)"
  rm -f "$tmp"/numpy-* "$tmp"/typing_extensions-*
  mv "$tmp" .whl
fi
if [ ! -d .gpu_data/bag ]; then
  echo "== a synthetic scene of 20 key-frames, converted -> .gpu_data/bag/"
  tmp=$(mktemp -d)
  "$bin/fusionocc-synth" "$tmp/data" --scenes 1 --keyframes 20 --seed 0
  "$bin/fusionocc-convert" --data-root "$tmp/data" --version v1.0-mini --out "$tmp/bags"
  mkdir -p .gpu_data
  mv "$tmp/bags"/* .gpu_data/bag
  rm -rf "$tmp"
fi
if [ ! -d ".old_tree_$rev" ]; then
  echo "== git archive $rev -> .old_tree_$rev/"
  mkdir ".old_tree_$rev"
  git archive "$rev" | tar -x -C ".old_tree_$rev"
fi
du -sh .whl .gpu_data ".old_tree_$rev"
echo "carry: [\".whl\", \".gpu_data\", \".old_tree_$rev\"]"
