"""glibc malloc settings: with the mmap threshold fixed, freed image-sized blocks leave
the process at once, whatever was allocated before (each case in a fresh interpreter:
malloc settings are process-wide)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.paths import REPO

_CASE = """
import sys
import numpy as np
from batchsr.allocator import configure_malloc
from batchsr.pipeline.budget import resident_bytes
if sys.argv[1] == "on":
    assert configure_malloc(mmap_threshold=1 << 20)
# Freeing a 16 MiB mapped block makes glibc raise its threshold (by default) to 16 MiB:
# from then on, 4 MiB arrays (an SR image is 10 MB) come from the heap.
big = np.ones(16 << 20, dtype=np.uint8)
del big
base = resident_bytes()
blocks = [np.ones(4 << 20, dtype=np.uint8) for _ in range(50)]
last = blocks[-1]
del blocks  # all freed but the last one, which pins the top of the heap
print((resident_bytes() - base) / (1 << 20))
"""


def _retained_mib(mode: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _CASE, mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return float(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_fixed_mmap_threshold_returns_freed_blocks_to_the_system() -> None:
    assert _retained_mib("off") > 100  # glibc's default: 196 MiB of freed blocks kept
    assert _retained_mib("on") < 10  # only the live 4 MiB block
