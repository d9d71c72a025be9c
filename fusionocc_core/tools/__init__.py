"""Offline console tools: fusionocc-train, fusionocc-eval, fusionocc-score (no ROS needed)."""
