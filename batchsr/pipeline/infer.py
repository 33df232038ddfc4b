"""Infer stage: K engine workers, each owning its own engine.

Workers share one input stream, so batches fan out to whichever engine is free and
results reach the stitcher in any order. The engine call runs in a worker thread, so
the event loop and the other stages go on while an engine computes.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from batchsr.engines.base import Engine
from batchsr.errors import ShapeMismatchError
from batchsr.pipeline.stage import Meter, failed_from
from batchsr.records import Failed, SRBatch, TileBatch, freeze

__all__ = ["run_infer"]


async def run_infer(
    receive: MemoryObjectReceiveStream[TileBatch | Failed],
    send: MemoryObjectSendStream[SRBatch | Failed],
    *,
    engine: Engine | Callable[[], Engine],
    worker: int = 0,
) -> None:
    """Run every batch through this worker's engine; closes ``send`` and the engine at
    the end.

    Args:
        engine: an engine already open (worker 0 reuses the one the run probed), or a
            factory this worker calls, in a thread, to open its own.
    """
    meter: Meter[TileBatch | Failed] = Meter("infer", worker)
    name = f"infer-{worker}"
    async with receive, send:
        eng = engine if isinstance(engine, Engine) else await anyio.to_thread.run_sync(engine)
        try:
            while (batch := await meter.receive(receive)) is not None:
                if isinstance(batch, Failed):
                    await meter.send(send, batch)
                    meter.done(image_id=batch.id, failed=True)
                    continue
                try:
                    out = await anyio.to_thread.run_sync(eng.run, batch.data)
                    _check_output(out.shape, batch.data.shape, eng.scale)
                except Exception as err:
                    # Every image with a tile in this batch loses it: one row each.
                    seen: set[int] = set()
                    for slot in batch.slots:
                        if slot.plan.id not in seen:
                            seen.add(slot.plan.id)
                            await meter.send(
                                send,
                                failed_from(
                                    err,
                                    image_id=slot.plan.id,
                                    name=slot.plan.name,
                                    stage="infer",
                                    log=meter.log,
                                ),
                            )
                    meter.done(batch_id=batch.batch_id, failed=True)
                    continue
                await meter.send(
                    send,
                    SRBatch(
                        batch_id=batch.batch_id, data=freeze(out), slots=batch.slots, worker=name
                    ),
                )
                meter.done(
                    batch_id=batch.batch_id,
                    tiles=len(batch.slots),
                    padded=batch.padded,
                    image_ids=sorted({s.plan.id for s in batch.slots}),
                )
        finally:
            eng.close()


def _check_output(out: tuple[int, ...], inp: tuple[int, ...], scale: int) -> None:
    n, _, h, w = inp
    if len(out) != 4 or out[0] != n or out[2] != h * scale or out[3] != w * scale:
        raise ShapeMismatchError(
            f"engine returned {list(out)} for input {list(inp)}; expected "
            f"[{n}, C, {h * scale}, {w * scale}] at scale {scale}"
        )
