"""Infer stage: K engine workers, each owning its own engine.

Workers share one input stream, so batches fan out to whichever engine is free and
results reach the stitcher in any order. The engine call runs in a worker thread, so
the event loop and the other stages go on while an engine computes (for sail that
needs the Tensor form of ``process``, which releases the GIL). Each worker converts its
output to uint8 NHWC in another thread while its engine already runs the next batch:
K workers convert in parallel, and the single stitch task only copies pixels.

Faults: a call that raises, or that runs past ``timeout_s``, turns its batch's images
into error rows naming the worker's device and the error. The worker then replaces its
engine (a timed-out call's thread cannot be killed: it is abandoned together with its
engine) and goes on. If the replacement fails too, or the next call on it fails again,
the worker retires; when the last worker retires, every batch still to come becomes
error rows, so the run always ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import numpy as np
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from numpy.typing import NDArray

from batchsr.engines.base import Engine
from batchsr.errors import EngineError, ShapeMismatchError
from batchsr.pipeline.stage import Meter, failed_from, pass_failed
from batchsr.records import Failed, SRBatch, TileBatch, freeze
from batchsr.tiling import batch_to_uint8, is_direct

__all__ = ["AbandonedCalls", "EngineSlot", "InferPool", "call_engine", "run_infer"]

T = TypeVar("T")


class AbandonedCalls:
    """Engine calls of one run that ran past their timeout. Their threads cannot be
    killed and a hung device call may never return, so whoever ends the process asks
    how many still run (``RunResult.abandoned_calls``) rather than wait for them."""

    def __init__(self) -> None:
        self._running: set[threading.Event] = set()

    def add(self, done: threading.Event) -> None:
        """Track a call whose thread sets ``done`` when it returns."""
        self._running.add(done)

    def running(self) -> int:
        """How many of them have not returned yet."""
        self._running = {done for done in self._running if not done.is_set()}
        return len(self._running)


@dataclass(slots=True)
class InferPool:
    """What the infer workers of one run share: how many are still serving, and the
    calls they abandoned.

    Owned by the event loop (only touched between awaits), so it needs no lock.
    """

    alive: int
    abandoned: AbandonedCalls = field(default_factory=AbandonedCalls)


class _Abandoned(EngineError):
    """A call ran past its timeout; its thread still runs on the old engine."""


async def call_engine(
    func: Callable[..., T], *args: object, timeout_s: float | None, abandoned: AbandonedCalls
) -> T:
    """``func(*args)`` in a worker thread, abandoned (tracked in ``abandoned``, and
    raising) after ``timeout_s``; None or 0 waits."""
    if not timeout_s:
        return await anyio.to_thread.run_sync(func, *args)
    done = threading.Event()

    def call() -> T:
        try:
            return func(*args)
        finally:
            done.set()

    with anyio.move_on_after(timeout_s):
        # abandon_on_cancel: the thread keeps running, we stop waiting for it.
        return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
    abandoned.add(done)
    raise _Abandoned(f"no result after {timeout_s:g} s (`model.engine_timeout_s`); call abandoned")


class EngineSlot:
    """One infer worker's engine: opened, replaced once after a failed call, retired
    when the replacement fails too.

    Args:
        engine: an engine already open (worker 0 reuses the one the run probed), or a
            factory to call, in a thread, to open one.
        reopen: opens a replacement engine after a failed call; None never replaces.
        timeout_s: an engine call (or open) slower than this fails; None or 0 waits.
        where: the worker (and its TPU) as logs and error rows name it.
    """

    def __init__(
        self,
        engine: Engine | Callable[[], Engine],
        *,
        reopen: Callable[[], Engine] | None,
        timeout_s: float | None,
        where: str,
        log: Any,
        abandoned: AbandonedCalls,
    ) -> None:
        self.engine: Engine | None = None
        self.where = where
        self._given = engine
        self._reopen = reopen
        self._timeout_s = timeout_s
        self._log = log
        self._abandoned = abandoned
        # The engine is a replacement that has not answered a call yet: failing again,
        # it retires the worker rather than being replaced in a loop.
        self._recovering = False

    async def open(self) -> bool:
        """Open the first engine; False (logged) if it cannot be opened."""
        try:
            given = self._given
            self.engine = given if isinstance(given, Engine) else await self._call(given)
        except Exception as err:
            self._log.error("engine_open_failed", where=self.where, error=str(err), exc_info=err)
            return False
        return True

    async def run(self, data: NDArray[np.float32]) -> NDArray[np.float32]:
        """One batch through the engine.

        Raises:
            Exception: whatever the call raised; EngineError after the timeout.
        """
        assert self.engine is not None, "run() on a retired slot"
        out = await self._call(_infer, self.engine, data)
        self._recovering = False
        return out

    async def reopen(self, after: Exception) -> bool:
        """Retire the engine whose call failed with ``after`` and open a replacement;
        False (logged) when the worker retires instead."""
        failed, self.engine = self.engine, None
        if failed is not None and not isinstance(after, _Abandoned):
            # A timed-out call still runs on its engine: that one is left to it.
            await anyio.to_thread.run_sync(failed.close)
        if self._reopen is None or self._recovering:
            self._log.error("infer_worker_retired", where=self.where, error=str(after))
            return False
        try:
            self.engine = await self._call(self._reopen)
        except Exception as err:
            self._log.error("infer_worker_retired", where=self.where, error=str(err), exc_info=err)
            return False
        self._log.warning("engine_recreated", where=self.where, after=str(after))
        self._recovering = True
        return True

    def close(self) -> None:
        """Close the engine still held at the worker's end (a retired one holds none)."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    async def _call(self, func: Callable[..., T], *args: object) -> T:
        return await call_engine(func, *args, timeout_s=self._timeout_s, abandoned=self._abandoned)


async def run_infer(
    receive: MemoryObjectReceiveStream[TileBatch | Failed],
    send: MemoryObjectSendStream[SRBatch | Failed],
    *,
    engine: Engine | Callable[[], Engine],
    worker: int = 0,
    device: int | None = None,
    reopen: Callable[[], Engine] | None = None,
    timeout_s: float | None = None,
    pool: InferPool | None = None,
) -> None:
    """Run every batch through this worker's engine; closes ``send`` and the engine at
    the end.

    Args:
        engine: an engine already open (worker 0 reuses the one the run probed), or a
            factory this worker calls, in a thread, to open its own.
        device: the TPU this worker's engine runs on (named in logs and error rows).
        reopen: opens a replacement engine after a failed call; None never replaces.
        timeout_s: an engine call (or open) slower than this fails; None or 0 waits.
        pool: shared with the run's other infer workers; None means this one is alone.
    """
    meter: Meter[TileBatch | Failed] = Meter("infer", worker)
    if device is not None:
        meter.log = meter.log.bind(device=device)
    name = f"infer-{worker}"
    pool = pool if pool is not None else InferPool(alive=1)
    slot = EngineSlot(
        engine,
        reopen=reopen,
        timeout_s=timeout_s,
        where=f"{name} (TPU {device})" if device is not None else name,
        log=meter.log,
        abandoned=pool.abandoned,
    )
    async with receive, send, anyio.create_task_group() as post:
        try:
            if await slot.open():
                await _serve(slot, meter, receive, send, post, name)
            if slot.engine is None:  # retired, or never opened
                pool.alive -= 1
                if pool.alive == 0:
                    await _fail_the_rest(slot.where, meter, receive, send)
        finally:
            slot.close()


async def _serve(
    slot: EngineSlot,
    meter: Meter[TileBatch | Failed],
    receive: MemoryObjectReceiveStream[TileBatch | Failed],
    send: MemoryObjectSendStream[SRBatch | Failed],
    post: TaskGroup,
    name: str,
) -> None:
    """Run batches until the input ends or the worker retires."""
    # Held from an engine call's end until its batch is sent: one conversion per worker
    # overlaps the next call.
    pending = anyio.Semaphore(1)
    while (batch := await _next(meter, receive)) is not None:
        if isinstance(batch, Failed):
            await pass_failed(meter, send, batch)
            continue
        t_call = time.perf_counter()
        try:
            out = await slot.run(batch.data)
        except Exception as err:
            await _fail_batch(meter, send, batch, err, slot.where)
            if await slot.reopen(err):
                continue
            return
        call_s = time.perf_counter() - t_call
        t_wait = time.perf_counter()
        try:  # the previous batch's conversion and send are done
            pending.acquire_nowait()
        except anyio.WouldBlock:
            await pending.acquire()
        post.start_soon(_finish, send, batch, out, pending, call_s, name)
        meter.done(
            wait_post_s=time.perf_counter() - t_wait,
            batch_id=batch.batch_id,
            tiles=len(batch.slots),
            padded=batch.padded,
            shape=list(batch.data.shape),  # what the engine computed, for FLOP counts
            image_ids=sorted({s.plan.id for s in batch.slots}),
        )


async def _finish(
    send: MemoryObjectSendStream[SRBatch | Failed],
    batch: TileBatch,
    out: NDArray[np.float32],
    pending: anyio.Semaphore,
    call_s: float,
    name: str,
) -> None:
    """Convert one batch's output and send it on; runs beside the next engine call."""
    try:
        # Only tiles whose cores go straight into a uint8 image can be rounded here;
        # overlapping modes and Y-only mode need the float values.
        direct = all(is_direct(slot.plan) for slot in batch.slots)
        data = await anyio.to_thread.run_sync(batch_to_uint8, out) if direct else out
        await send.send(
            SRBatch(
                batch_id=batch.batch_id,
                data=freeze(data),
                slots=batch.slots,
                worker=name,
                engine_s=call_s,
            )
        )
    finally:
        pending.release()


async def _fail_batch(
    meter: Meter[TileBatch | Failed],
    send: MemoryObjectSendStream[SRBatch | Failed],
    batch: TileBatch,
    err: BaseException,
    where: str,
) -> None:
    """Every image with a tile in ``batch`` loses it: one error row each."""
    named = EngineError(f"{where}: {type(err).__name__}: {err}")
    named.__cause__ = err
    seen: set[int] = set()
    for slot in batch.slots:
        if slot.plan.id not in seen:
            seen.add(slot.plan.id)
            await meter.send(
                send,
                failed_from(
                    named, image_id=slot.plan.id, name=slot.plan.name, stage="infer", log=meter.log
                ),
            )
    meter.done(batch_id=batch.batch_id, failed=True, error=str(named))


async def _fail_the_rest(
    where: str,
    meter: Meter[TileBatch | Failed],
    receive: MemoryObjectReceiveStream[TileBatch | Failed],
    send: MemoryObjectSendStream[SRBatch | Failed],
) -> None:
    """The last worker has retired: nobody is left to compute, so every batch still to
    come becomes error rows (and the run still ends)."""
    gone = EngineError(f"no infer worker left ({where} was the last to fail)")
    while (batch := await meter.receive(receive)) is not None:
        if isinstance(batch, Failed):
            await pass_failed(meter, send, batch)
        else:
            await _fail_batch(meter, send, batch, gone, where)


async def _next(
    meter: Meter[TileBatch | Failed], receive: MemoryObjectReceiveStream[TileBatch | Failed]
) -> TileBatch | Failed | None:
    """The next batch; one already buffered is taken without yielding to the event loop,
    so the engine's next call starts at once (the device may otherwise go idle while
    other tasks run)."""
    try:
        return meter.receive_nowait(receive)
    except anyio.WouldBlock:
        return await meter.receive(receive)
    except anyio.EndOfStream:
        return None


def _infer(engine: Engine, data: NDArray[np.float32]) -> NDArray[np.float32]:
    out = engine.run(data)
    _check_output(out.shape, data.shape, engine.scale)
    return out


def _check_output(out: tuple[int, ...], inp: tuple[int, ...], scale: int) -> None:
    n, _, h, w = inp
    if len(out) != 4 or out[0] != n or out[2] != h * scale or out[3] != w * scale:
        raise ShapeMismatchError(
            f"engine returned {list(out)} for input {list(inp)}; expected "
            f"[{n}, C, {h * scale}, {w * scale}] at scale {scale}"
        )
