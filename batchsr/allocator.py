"""Keep glibc's malloc from growing the heap with the number of images processed.

The stages run numpy work in many worker threads, and glibc gives each thread its own
malloc arena (up to 8 per core). Multi-megabyte arrays (decoded images, SR batches,
PNG buffers) freed in one arena and allocated in another fragment them, so the peak
RSS kept creeping up over a long run: 281 MiB after 10 contest images, 436 MiB after
200 (``benchmarks/memory.py``). Two arenas remove the creep without costing
throughput, since the heavy work here happens inside numpy, zlib and onnxruntime, not
in malloc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["limit_malloc_arenas"]

_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas; call before worker threads start.

    Returns:
        True if applied; False where the C library is not glibc (nothing changes).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
