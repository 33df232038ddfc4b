"""``run.py`` as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import REPO


def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python run.py ARGS`` as a user would (paths as given); never raises on a
    failing exit."""
    return subprocess.run(
        [sys.executable, str(REPO / "run.py"), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
