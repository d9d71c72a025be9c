#!/usr/bin/env bash
# `make demo` after setup: see scripts/demo.py for the steps.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/demo.py "$@"
