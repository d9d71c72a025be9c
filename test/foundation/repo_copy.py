"""Copy what a clone of this repository holds (tracked + untracked-not-ignored files), for tests that
build or install from a clean tree (colcon workspace, wheel)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def copy_repo(dst: Path) -> None:
    """Copy the files `git ls-files -co --exclude-standard` lists into dst (symlinks kept as links)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           check=True, capture_output=True).stdout.split(b"\0")
    for rel in filter(None, (f.decode() for f in files)):
        src = REPO / rel
        if not src.exists() and not src.is_symlink():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst / rel)
        else:
            shutil.copy2(src, dst / rel)
