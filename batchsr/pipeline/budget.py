"""Admission budgets: what the images in flight may take of a shared capacity.

Two budgets use it: the memory limit (bytes, from tiling to the report row) and the
in-flight window (one unit per image, from tiling to the stitched image).

Buffer sizes bound the *number* of items on each edge, but an image's footprint grows
with its pixels: its float tiles, the engine's float outputs (x16 pixels), the stitched
and saved SR image, the PNG encoder's and NIQE's transients. Eight 2040x1632 photos in
flight weigh what a hundred contest crops do. With ``memory.max_mib`` set, the tile
stage asks the budget for an image's estimated cost before cutting it, and the report
stage gives it back when the image's row arrives; the tile stage is the gate because
everything large is made after it (a decoded input is 3 bytes a pixel, and at most
``queues.decoded`` of them wait before it).

Never a deadlock: an image is admitted whenever nothing is held, however large, and the
tile stage sends its partly filled batch before it waits (the images in that batch
must be able to finish and give their share back).
"""

from __future__ import annotations

import os
import resource
import sys
from typing import NamedTuple

import anyio

__all__ = ["MIB", "Budget", "BudgetStats", "image_cost", "resident_bytes"]

MIB = 1 << 20


def resident_bytes() -> int:
    """This process's resident memory now (Linux ``/proc``), else its peak so far."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes


def image_cost(height: int, width: int, *, scale: int, bytes_per_pixel: float) -> int:
    """Bytes one image holds at its peak in the pipeline, estimated from its output
    pixel count (``bytes_per_pixel`` is measured: ``benchmarks/memory.py``)."""
    return int(height * width * scale * scale * bytes_per_pixel)


class BudgetStats(NamedTuple):
    """What the budget did over a run (logged at its end)."""

    capacity_bytes: int
    peak_bytes: int
    peak_images: int
    waits: int
    wait_s: float
    oversized: int


class Budget:
    """A capacity shared by the images in flight; one task acquires (the tile stage).

    Args:
        capacity_bytes: what the images may hold together (bytes, or images for the
            in-flight window).
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity = capacity_bytes
        self._held: dict[int, int] = {}
        self._used = 0
        self._released = anyio.Event()
        self._peak = 0
        self._peak_images = 0
        self._waits = 0
        self._wait_s = 0.0
        self._oversized = 0

    def fits(self, cost: int) -> bool:
        """Whether an image of ``cost`` bytes would be admitted now."""
        return not self._held or self._used + cost <= self.capacity

    async def acquire(self, image_id: int, cost: int) -> None:
        """Wait until ``cost`` bytes fit (at once when nothing is held), then hold them."""
        if not self.fits(cost):
            self._waits += 1
            t = anyio.current_time()
            while not self.fits(cost):
                await self._released.wait()
            self._wait_s += anyio.current_time() - t
        if cost > self.capacity:
            self._oversized += 1
        self._held[image_id] = cost
        self._used += cost
        self._peak = max(self._peak, self._used)
        self._peak_images = max(self._peak_images, len(self._held))

    def release(self, image_id: int) -> None:
        """Give back what ``image_id`` holds (nothing if it held nothing: an image that
        failed before tiling)."""
        cost = self._held.pop(image_id, None)
        if cost is None:
            return
        self._used -= cost
        released, self._released = self._released, anyio.Event()
        released.set()

    def stats(self) -> BudgetStats:
        return BudgetStats(
            capacity_bytes=self.capacity,
            peak_bytes=self._peak,
            peak_images=self._peak_images,
            waits=self._waits,
            wait_s=round(self._wait_s, 4),
            oversized=self._oversized,
        )
