"""What every stage worker shares: timed stream I/O, its one log record per item, and
how a failed image is passed on.

Each worker wraps its streams in a :class:`Meter`, which separates the time spent
waiting for input (starvation), blocked sending (backpressure) and working. The
analyzer reads these field names (``stage``, ``worker``, ``t_start``, ``t_end``,
``wait_in_s``, ``wait_out_s``, ``busy_s``, ``queue_in``, ``cpu_s``), so renaming one
is an interface change. ``cpu_s`` counts the CPU time of the work a stage hands to a
worker thread (:meth:`Meter.in_thread`); the engine's own threads are not in it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from batchsr.pipeline.background import BackgroundThreads
from batchsr.records import Failed

__all__ = ["Meter", "failed_from", "pass_failed"]

T = TypeVar("T")
U = TypeVar("U")
V = TypeVar("V")


class Meter(Generic[T]):
    """Timed receive and send for one worker of one stage.

    Args:
        stage: the stage name written into every record.
        worker: the worker's index within its stage.
    """

    def __init__(self, stage: str, worker: int = 0) -> None:
        self.stage = stage
        self.log = structlog.get_logger().bind(stage=stage, worker=worker)
        self._t_start = 0.0
        self._wait_in = 0.0
        self._wait_out = 0.0
        self._queue_in = 0
        self._cpu_s: float | None = None

    async def in_thread(
        self,
        func: Callable[..., V],
        *args: Any,
        threads: BackgroundThreads | None = None,
    ) -> V:
        """``func(*args)`` in a worker thread (one of ``threads`` if given, else
        anyio's), its thread's CPU seconds counted into the item's record (``cpu_s``):
        unlike busy seconds, they do not grow while the thread waits for a core that
        other stages hold."""

        spent: list[float] = []

        def timed() -> V:
            t = time.thread_time()
            try:
                return func(*args)
            finally:  # a failed call's work counts too (NIQE raises after most of it)
                spent.append(time.thread_time() - t)

        try:
            if threads is None:
                return await anyio.to_thread.run_sync(timed)
            return await threads.run(timed)
        finally:
            if spent:
                self._cpu_s = (self._cpu_s or 0.0) + spent[0]

    async def receive(self, stream: MemoryObjectReceiveStream[T]) -> T | None:
        """The next item, or None once the upstream has closed."""
        self._queue_in = stream.statistics().current_buffer_used
        t = time.perf_counter()
        try:
            item = await stream.receive()
        except anyio.EndOfStream:
            return None
        finally:
            self._wait_in += time.perf_counter() - t
        self._t_start = time.perf_counter()
        return item

    async def work(
        self, receive: MemoryObjectReceiveStream[V | Failed], send: MemoryObjectSendStream[Any]
    ) -> AsyncIterator[V]:
        """Each image to work on until the upstream closes; one that failed upstream is
        passed on unchanged (:func:`pass_failed`) instead."""
        while (item := await self.receive(receive)) is not None:  # type: ignore[arg-type]
            if isinstance(item, Failed):
                await pass_failed(self, send, item)
                continue
            yield item  # type: ignore[misc]

    def receive_nowait(self, stream: MemoryObjectReceiveStream[T]) -> T:
        """The next item if one is buffered; raises ``anyio.WouldBlock`` otherwise."""
        self._queue_in = stream.statistics().current_buffer_used
        item = stream.receive_nowait()
        self._t_start = time.perf_counter()
        return item

    async def send(self, stream: MemoryObjectSendStream[U], item: U) -> None:
        t = time.perf_counter()
        await stream.send(item)
        self._wait_out += time.perf_counter() - t

    async def hold(self, wait: Awaitable[None]) -> None:
        """Wait on something downstream (the memory budget): counted as blocked."""
        t = time.perf_counter()
        await wait
        self._wait_out += time.perf_counter() - t

    def done(self, event: str = "item_done", **fields: Any) -> None:
        """Write the item's record and reset the waits for the next item."""
        t_end = time.perf_counter()
        self.log.info(
            event,
            t_start=self._t_start,
            t_end=t_end,
            busy_s=t_end - self._t_start - self._wait_out,
            wait_in_s=self._wait_in,
            wait_out_s=self._wait_out,
            queue_in=self._queue_in,
            **({} if self._cpu_s is None else {"cpu_s": self._cpu_s}),
            **fields,
        )
        self._wait_in = 0.0
        self._wait_out = 0.0
        self._cpu_s = None


def failed_from(err: BaseException, *, image_id: int, name: str, stage: str, log: Any) -> Failed:
    """Turn an exception caught at a stage boundary into a ``Failed`` record, logged
    at error level with its traceback."""
    log.error(
        "image_failed",
        image_id=image_id,
        name=name,
        error_type=type(err).__name__,
        error=str(err),
        exc_info=err,
    )
    return Failed(
        id=image_id, name=name, stage=stage, error_type=type(err).__name__, message=str(err)
    )


async def pass_failed(
    meter: Meter[Any], send: MemoryObjectSendStream[Failed], item: Failed
) -> None:
    """Send an image that failed upstream on unchanged, as this stage's item for it: its
    one ``Failed`` record travels to the report, so a bad image is one row."""
    await meter.send(send, item)
    meter.done(image_id=item.id, failed=True)
