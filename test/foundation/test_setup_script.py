"""scripts/setup.sh: idempotent re-runs, and a one-line stop when a system tool is missing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "scripts" / "setup.sh"


def _env_without(tmp_path: Path, missing: str) -> dict[str, str]:
    """A PATH holding links to every tool on the current PATH except `missing`."""
    shadow = tmp_path / "bin"
    shadow.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            target = os.path.join(d, name)
            if name != missing and not (shadow / name).exists() and os.access(target, os.X_OK):
                (shadow / name).symlink_to(target)
    return {**os.environ, "PATH": str(shadow)}


def test_rerun_is_a_quick_no_op() -> None:
    venv = Path(sys.executable).parent.parent
    before = sorted(p.name for p in venv.glob(".fusionocc-*"))
    out = subprocess.run(["bash", str(SETUP)], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "VENV": str(venv)})
    assert out.returncode == 0, out.stderr
    assert "python dependencies up to date" in out.stdout
    assert "fusionocc_msgs up to date" in out.stdout
    assert sorted(p.name for p in venv.glob(".fusionocc-*")) == before
    assert out.stdout.strip().splitlines()[-1].startswith("setup: ready:")


def test_missing_cmake_stops_with_one_line(tmp_path: Path) -> None:
    assert shutil.which("cmake"), "this test needs cmake on PATH to hide it"
    out = subprocess.run(["bash", str(SETUP)], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env=_env_without(tmp_path, "cmake"))
    assert out.returncode != 0
    assert out.stderr.strip() == "setup: missing system tool 'cmake' (Debian: apt-get install cmake make g++)"
