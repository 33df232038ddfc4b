"""Keep glibc's malloc from making peak memory depend on the run's history.

:func:`configure_malloc` makes them at start-up:

- **Two arenas.** The stages run numpy work in many worker threads, and glibc gives
  each thread its own malloc arena (up to 8 per core). Multi-megabyte arrays freed in
  one arena and allocated in another fragment them, so the peak RSS kept creeping up
  over a long run: 281 MiB after 10 contest images, 436 MiB after 200.
- **A fixed mmap threshold**, on request (``memory.mmap_threshold_kib``). By default
  glibc raises its threshold each time a large mapped block is freed (up to 32 MiB),
  after which SR images, batches and NIQE's planes come from the heap, where a freed
  block is kept or returned depending on what lies above it. The peak then varies by
  4-14% between runs of one folder (up to 20% between a 40- and a 160-image run). With
  the threshold fixed at 1 MiB every block that size or larger is mapped on allocation
  and unmapped on free, so RSS follows what is live: 1-2% between runs
  (``benchmarks/memory.py --mixed``). It costs 10-15% of throughput here (each fresh
  mapping is page faults: about 7 ms for one of NIQE's 27 MB planes), so it is for
  hosts sized to a predictable peak, not the default.

Two arenas cost no throughput: the heavy work runs inside numpy, zlib and onnxruntime.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["configure_malloc"]

# glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def configure_malloc(arenas: int = 2, mmap_threshold: int | None = None) -> bool:
    """Cap glibc's malloc arenas and, if given, fix its mmap threshold (bytes); call
    before worker threads start.

    Returns:
        True if applied; False where the C library is not glibc (nothing changes).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        applied = bool(libc.mallopt(_M_ARENA_MAX, arenas))
        if mmap_threshold is not None:
            applied = applied and bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
        return applied
    except (OSError, AttributeError):
        return False
