"""Tile stage: images to engine-sized tile batches.

Each image is planned and prepared with ``batchsr.tiling`` (modes, borders, windows),
in a worker thread; this task cuts the windows and batches them.

Tiles of consecutive images share batches: a static batch size is filled across image
boundaries and only the run's last batch is padded (to a smaller batch size when the
engine holds one, see ``TileGeometry.tail_batches``). Of several shapes with different
tile sizes, the tiler uses the engine's first (preferred) one for every tile. With a
dynamic batch axis a partial batch is sent as soon as no further image is waiting, so
the engine never idles on it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import anyio
import numpy as np
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from numpy.typing import NDArray

from batchsr.color import GREY_MODES
from batchsr.pipeline.budget import Budget, image_cost
from batchsr.pipeline.stage import Meter, failed_from, pass_failed
from batchsr.records import Carried, Decoded, Failed, ImagePlan, Slot, TileBatch, freeze
from batchsr.tiling import TileGeometry, plan_image, prepare_image

__all__ = ["run_tile"]


class _Batcher:
    """Accumulates tiles into batches; private to the one tile task."""

    def __init__(self, geometry: TileGeometry) -> None:
        self._geometry = geometry
        self._arrays: list[NDArray[np.float32]] = []
        self._slots: list[Slot] = []
        self._next_id = 0
        g = geometry
        # No cap with tile 0 (batch 1 there): only a batch of tiles sets one.
        self._batch_pixels = g.batch * g.tile_h * g.tile_w if g.tile_h else math.inf

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def static(self) -> bool:
        """The engine's batch size is fixed: a partial batch waits to be filled (only
        the run's last one is padded)."""
        return self._geometry.static_batch

    def add(self, window: NDArray[np.float32], slot: Slot) -> list[TileBatch]:
        """Queue one tile; return the batches that are now complete (0, 1 or 2)."""
        ready = []
        if self._arrays and (
            # Only same-shaped windows stack (dynamic models see whole small images),
            # and whole images only as many as fit the pixels of a batch of tiles.
            self._arrays[0].shape != window.shape
            or (len(self._arrays) + 1) * window[0].size > self._batch_pixels
        ):
            ready.append(self.flush())
        self._arrays.append(window)
        self._slots.append(slot)
        if len(self._slots) == self._geometry.batch:
            ready.append(self.flush())
        return [b for b in ready if b is not None]

    def flush(self) -> TileBatch | None:
        """The pending tiles as a batch, zero-padded to a static batch size."""
        if not self._slots:
            return None
        data = np.stack(self._arrays)
        missing = self._geometry.padded_size(len(self._slots)) - len(self._slots)
        if self._geometry.static_batch and missing:
            data = np.concatenate([data, np.zeros((missing, *data.shape[1:]), np.float32)])
        batch = TileBatch(batch_id=self._next_id, data=freeze(data), slots=tuple(self._slots))
        self._next_id += 1
        self._arrays, self._slots = [], []
        return batch


async def run_tile(
    receive: MemoryObjectReceiveStream[Decoded | Failed],
    send: MemoryObjectSendStream[TileBatch | Failed],
    *,
    geometry: TileGeometry,
    budget: Budget | None = None,
    bytes_per_pixel: float = 32.0,
    window: Budget | None = None,
) -> None:
    """Cut each image into tiles and send them in batches; closes ``send`` at the end.

    One task by design: it owns the partly filled batch. With a ``budget``, each
    image first takes its estimated share of it (waiting, blocked, while earlier
    images hold too much; their partly filled batch is sent first so they can finish).
    With a ``window``, each image also takes one of its places, given back when the
    image is stitched.
    """
    meter: Meter[Decoded | Failed] = Meter("tile")
    batcher = _Batcher(geometry)
    async with receive, send:
        while (item := await _next_image(meter, receive, send, batcher)) is not None:
            if isinstance(item, Failed):
                await pass_failed(meter, send, item)
                continue
            gates = _gates(item, geometry, budget, window, bytes_per_pixel)
            for gate, share in gates:
                # The images holding the gate may have tiles in the partly filled
                # batch: it goes first, so that they can finish and give it back.
                if not gate.fits(share) and (partial := batcher.flush()) is not None:
                    await meter.send(send, partial)
                await meter.hold(gate.acquire(item.id, share))
            t_start_ns = time.perf_counter_ns()  # contest runtime starts at tiling
            admitted: dict[str, Any] = {"t_admitted": t_start_ns / 1e9} if gates else {}
            try:
                chw, plan = await _prepare(meter, item, geometry, t_start_ns)
            except Exception as err:
                await meter.send(
                    send,
                    failed_from(err, image_id=item.id, name=item.name, stage="tile", log=meter.log),
                )
                meter.done(image_id=item.id, failed=True)
                continue
            sent = 0
            for spec in plan.tiles:
                cut = chw[:, spec.y : spec.y + spec.h, spec.x : spec.x + spec.w]
                for batch in batcher.add(cut, Slot(plan=plan, tile=spec)):
                    await meter.send(send, batch)
                    sent += 1
            meter.done(image_id=item.id, tiles=len(plan.tiles), batches_sent=sent, **admitted)
        final = batcher.flush()
        if final is not None:
            await meter.send(send, final)
            meter.done("batch_flushed", batch_id=final.batch_id, padded=final.padded)


async def _next_image(
    meter: Meter[Decoded | Failed],
    receive: MemoryObjectReceiveStream[Decoded | Failed],
    send: MemoryObjectSendStream[TileBatch | Failed],
    batcher: _Batcher,
) -> Decoded | Failed | None:
    """The next image, or None at the end of input."""
    try:
        return meter.receive_nowait(receive)
    except anyio.WouldBlock:
        if len(batcher) and not batcher.static:
            # Nothing else is waiting: send what we have rather than idle the engine.
            partial = batcher.flush()
            assert partial is not None
            await meter.send(send, partial)
        return await meter.receive(receive)
    except anyio.EndOfStream:
        return None


def _gates(
    item: Decoded,
    geometry: TileGeometry,
    budget: Budget | None,
    window: Budget | None,
    bytes_per_pixel: float,
) -> list[tuple[Budget, int]]:
    """What the image must take before it is cut: a place in the in-flight window and
    its estimated share of the memory budget."""
    gates = [] if window is None else [(window, 1)]
    if budget is not None:
        h, w = item.rgb.shape[:2]
        cost = image_cost(h, w, scale=geometry.scale, bytes_per_pixel=bytes_per_pixel)
        gates.append((budget, cost))
    return gates


async def _prepare(
    meter: Meter[Any], item: Decoded, geometry: TileGeometry, t_start_ns: int
) -> tuple[NDArray[np.float32], ImagePlan]:
    """The image's input plane(s), made in a worker thread, and its plan."""
    chw, chroma = await meter.in_thread(prepare_image, item.rgb, geometry)
    height, width = item.rgb.shape[:2]
    plan = plan_image(item.id, item.name, height, width, geometry, t_start_ns=t_start_ns)
    # The thread's wait for the event loop counts as the image's work: on a busy loop
    # it is part of what this stage costs the image.
    plan = dataclasses.replace(
        plan,
        tile_s=(time.perf_counter_ns() - t_start_ns) / 1e9,
        chroma=None if chroma is None else freeze(chroma),
        carried=Carried(grey=item.mode in GREY_MODES, icc_profile=item.icc_profile),
    )
    return chw, plan
