#!/usr/bin/env bash
# The demo (see README). Filled in as the parts land.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -c 'import rclpy, fusionocc_msgs.msg, fusionocc_core; print("demo: environment ready")'
