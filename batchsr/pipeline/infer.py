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
from dataclasses import dataclass
from typing import TypeVar

import anyio
import numpy as np
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from numpy.typing import NDArray

from batchsr.engines.base import Engine
from batchsr.errors import EngineError, ShapeMismatchError
from batchsr.pipeline.stage import Meter, failed_from
from batchsr.records import Failed, SRBatch, TileBatch, freeze
from batchsr.tiling import batch_to_uint8, is_direct

__all__ = ["InferPool", "abandoned_calls", "call_engine", "run_infer"]

T = TypeVar("T")


@dataclass(slots=True)
class InferPool:
    """What the infer workers of one run share: how many are still serving.

    Owned by the event loop (only touched between awaits), so it needs no lock.
    """

    alive: int


class _Abandoned(EngineError):
    """A call ran past its timeout; its thread still runs on the old engine."""


# Threads of abandoned calls that have not returned yet (a hung device call may never
# return: the CLI then exits without waiting for them, see abandoned_calls()).
_abandoned: set[threading.Event] = set()


def abandoned_calls() -> int:
    """How many timed-out engine calls are still running in their threads."""
    for done in [e for e in _abandoned if e.is_set()]:
        _abandoned.discard(done)
    return len(_abandoned)


async def call_engine(func: Callable[..., T], *args: object, timeout_s: float | None) -> T:
    """``func(*args)`` in a worker thread, abandoned (and raising) after ``timeout_s``."""
    return await _call(func, *args, timeout_s=timeout_s)


async def _call(func: Callable[..., T], *args: object, timeout_s: float | None) -> T:
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
    _abandoned.add(done)
    raise _Abandoned(f"no result after {timeout_s:g} s (--engine-timeout); call abandoned")


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
    where = f"{name} (TPU {device})" if device is not None else name
    pool = pool if pool is not None else InferPool(alive=1)
    eng: Engine | None = None

    async def fail_batch(batch: TileBatch, err: BaseException) -> None:
        # Every image with a tile in this batch loses it: one row each.
        named = EngineError(f"{where}: {type(err).__name__}: {err}")
        named.__cause__ = err
        seen: set[int] = set()
        for slot in batch.slots:
            if slot.plan.id not in seen:
                seen.add(slot.plan.id)
                await meter.send(
                    send,
                    failed_from(
                        named,
                        image_id=slot.plan.id,
                        name=slot.plan.name,
                        stage="infer",
                        log=meter.log,
                    ),
                )
        meter.done(batch_id=batch.batch_id, failed=True, error=str(named))

    async def finish(
        batch: TileBatch, out: NDArray[np.float32], pending: anyio.Semaphore, call_s: float
    ) -> None:
        # The uint8 conversion overlaps this worker's next engine call; ``pending``
        # (held until the batch is sent) bounds it to one batch per worker.
        try:
            # Only tiles whose cores go straight into a uint8 image can be rounded
            # here; overlapping modes and Y-only mode need the float values.
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

    async with receive, send, anyio.create_task_group() as post:
        pending = anyio.Semaphore(1)
        try:
            try:
                eng = (
                    engine
                    if isinstance(engine, Engine)
                    else await _call(engine, timeout_s=timeout_s)
                )
            except Exception as err:
                meter.log.error("engine_open_failed", where=where, error=str(err), exc_info=err)
            recovering = False  # the engine is a replacement that has not succeeded yet
            while eng is not None and (batch := await _next(meter, receive)) is not None:
                if isinstance(batch, Failed):
                    await meter.send(send, batch)
                    meter.done(image_id=batch.id, failed=True)
                    continue
                t_call = time.perf_counter()
                try:
                    out = await _call(_infer, eng, batch.data, timeout_s=timeout_s)
                except Exception as err:
                    await fail_batch(batch, err)
                    if not isinstance(err, _Abandoned):
                        await anyio.to_thread.run_sync(eng.close)
                    eng = None
                    if reopen is None or recovering:
                        meter.log.error("infer_worker_retired", where=where, error=str(err))
                        break
                    try:
                        eng = await _call(reopen, timeout_s=timeout_s)
                    except Exception as open_err:
                        meter.log.error(
                            "infer_worker_retired",
                            where=where,
                            error=str(open_err),
                            exc_info=open_err,
                        )
                        break
                    meter.log.warning("engine_recreated", where=where, after=str(err))
                    recovering = True
                    continue
                recovering = False
                call_s = time.perf_counter() - t_call
                t_wait = time.perf_counter()
                try:  # the previous batch's conversion and send are done
                    pending.acquire_nowait()
                except anyio.WouldBlock:
                    await pending.acquire()
                post.start_soon(finish, batch, out, pending, call_s)
                meter.done(
                    wait_post_s=time.perf_counter() - t_wait,
                    batch_id=batch.batch_id,
                    tiles=len(batch.slots),
                    padded=batch.padded,
                    image_ids=sorted({s.plan.id for s in batch.slots}),
                )
            if eng is None:
                pool.alive -= 1
                if pool.alive == 0:
                    # Nobody is left to compute: the rest of the run becomes error rows.
                    gone = EngineError(f"no infer worker left ({where} was the last to fail)")
                    while (batch := await meter.receive(receive)) is not None:
                        if isinstance(batch, Failed):
                            await meter.send(send, batch)
                            meter.done(image_id=batch.id, failed=True)
                        else:
                            await fail_batch(batch, gone)
        finally:
            if eng is not None:
                eng.close()


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
