"""Worker threads at a lower CPU priority, for the stages off the contest-timed path.

The contest times each image from the start of its tiling to its stitched SR image.
On a machine whose cores the engine fills, the decode of later images and the save
and NIQE of earlier ones run at the same time and take cores from that path: on the
project's 2-core machine an engine call that takes 0.08 s alone took up to 0.19 s
beside them. These stages' threads therefore run at a higher nice value (Linux sets
it per thread): the scheduler gives them what the timed path leaves, and as the total
work is the same, the wall time is too. Measured on 12 contest images, 4 alternating
rounds: runtime_avg 0.168-0.181 s at normal priority, 0.152-0.167 s at nice 10 (the
default, ``workers.background_nice``), 0.137-0.168 s at nice 19; wall 2.11-2.37 s
throughout.

Lowering a thread's priority needs no privilege, raising it back does, so these
threads are their own pool rather than anyio's shared one, niced once when started.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import anyio

__all__ = ["BackgroundThreads"]

T = TypeVar("T")


def _lower_priority(nice: int) -> None:
    """Raise the calling thread's nice value to ``nice`` (on Linux, where a thread
    has its own; elsewhere it would renice the whole process, so nothing is done)."""
    if nice and sys.platform.startswith("linux"):
        # A sandbox that forbids it leaves the thread at normal priority.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


class BackgroundThreads:
    """A pool of ``workers`` threads at nice value ``nice`` (0: normal priority).

    A call is waited for as anyio waits for its own threads: a cancelled caller returns
    once the call has finished, so no save is still writing when the run has ended.
    Use as an async context manager, which shuts the pool down on leaving.
    """

    def __init__(self, workers: int, nice: int) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix="batchsr-background",
            initializer=_lower_priority,
            initargs=(nice,),
        )
        # The waits hold threads of anyio's too: their own limiter keeps them from
        # taking the tokens that the engine's calls draw on.
        self._waits = anyio.CapacityLimiter(workers)

    async def run(self, func: Callable[[], T]) -> T:
        """``func()`` in one of the pool's threads."""
        future = self._executor.submit(func)
        return await anyio.to_thread.run_sync(future.result, limiter=self._waits)

    async def __aenter__(self) -> BackgroundThreads:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
