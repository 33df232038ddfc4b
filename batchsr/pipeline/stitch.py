"""Stitch stage: SR tiles back into whole SR images.

Each tile contributes only its core (its context margin is cropped away), converted
to uint8 as it is pasted, so no float canvas of the whole image is ever held. An
image's contest runtime ends when its last tile is pasted.
"""

from __future__ import annotations

import time

import anyio
import numpy as np
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from numpy.typing import NDArray

from batchsr.pipeline.stage import Meter
from batchsr.records import Failed, ImagePlan, SRBatch, Stitched, TileSpec, freeze

__all__ = ["Assembler", "batch_to_uint8", "paste_tile", "run_stitch", "to_uint8"]


def to_uint8(chw: NDArray[np.float32]) -> NDArray[np.uint8]:
    """float32 CxHxW in [0, 1] to HxWxC uint8, clipped and rounded to nearest."""
    scaled = np.multiply(chw, np.float32(255.0))
    np.clip(scaled, 0.0, 255.0, out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8).transpose(1, 2, 0)


def batch_to_uint8(nchw: NDArray[np.float32]) -> NDArray[np.uint8]:
    """float32 NxCxHxW in [0, 1] to NxHxWxC uint8, exactly as :func:`to_uint8` per tile."""
    scaled = np.multiply(nchw, np.float32(255.0))
    np.clip(scaled, 0.0, 255.0, out=scaled)
    np.rint(scaled, out=scaled)
    n, c, h, w = nchw.shape
    out = np.empty((n, h, w, c), np.uint8)
    # One pass casts and transposes (exact: the values are already whole, in 0..255).
    np.copyto(out, scaled.transpose(0, 2, 3, 1), casting="unsafe")
    return out


def paste_tile(
    canvas: NDArray[np.uint8],
    sr_tile: NDArray[np.uint8] | NDArray[np.float32],
    spec: TileSpec,
    scale: int,
) -> None:
    """Write the core of one SR tile (HxWxC uint8, or CxHxW float32) into ``canvas``
    (HxWxC uint8)."""
    oy, ox = (spec.core_y0 - spec.y) * scale, (spec.core_x0 - spec.x) * scale
    h, w = (spec.core_y1 - spec.core_y0) * scale, (spec.core_x1 - spec.core_x0) * scale
    core = (
        sr_tile[oy : oy + h, ox : ox + w]
        if sr_tile.dtype == np.uint8
        else to_uint8(sr_tile[:, oy : oy + h, ox : ox + w])
    )
    canvas[
        spec.core_y0 * scale : spec.core_y1 * scale, spec.core_x0 * scale : spec.core_x1 * scale
    ] = core


class Assembler:
    """Partly assembled images, keyed by image id; owned by the one stitch task."""

    def __init__(self) -> None:
        self._canvases: dict[int, NDArray[np.uint8]] = {}
        self._remaining: dict[int, int] = {}
        self._failed: set[int] = set()

    def add(self, batch: SRBatch) -> list[Stitched]:
        """Paste a batch's tiles; return the images this batch completed."""
        done: list[Stitched] = []
        for row, slot in enumerate(batch.slots):
            plan = slot.plan
            if plan.id in self._failed:
                continue
            canvas = self._canvases.get(plan.id)
            if canvas is None:
                axis = 3 if batch.data.dtype == np.uint8 else 1
                canvas = self._new_canvas(plan, int(batch.data.shape[axis]))
            paste_tile(canvas, batch.data[row], slot.tile, plan.scale)
            self._remaining[plan.id] -= 1
            if self._remaining[plan.id] == 0:
                del self._canvases[plan.id], self._remaining[plan.id]
                runtime_s = (time.perf_counter_ns() - plan.t_start_ns) / 1e9
                done.append(
                    Stitched(
                        id=plan.id,
                        name=plan.name,
                        rgb=freeze(canvas),
                        runtime_s=runtime_s,
                        tiles=len(plan.tiles),
                    )
                )
        return done

    def fail(self, image_id: int) -> bool:
        """Drop an image; True the first time (its Failed record should go on)."""
        self._canvases.pop(image_id, None)
        self._remaining.pop(image_id, None)
        if image_id in self._failed:
            return False
        self._failed.add(image_id)
        return True

    def _new_canvas(self, plan: ImagePlan, channels: int) -> NDArray[np.uint8]:
        canvas = np.empty((plan.height * plan.scale, plan.width * plan.scale, channels), np.uint8)
        self._canvases[plan.id] = canvas
        self._remaining[plan.id] = len(plan.tiles)
        return canvas

    @property
    def pending(self) -> int:
        return len(self._canvases)


async def run_stitch(
    receive: MemoryObjectReceiveStream[SRBatch | Failed],
    send: MemoryObjectSendStream[Stitched | Failed],
) -> None:
    """Assemble images from SR batches arriving in any order; closes ``send`` at the end.

    One task by design: it owns the partly assembled images. Pasting runs in a thread.
    """
    meter: Meter[SRBatch | Failed] = Meter("stitch")
    assembler = Assembler()
    async with receive, send:
        while (item := await meter.receive(receive)) is not None:
            if isinstance(item, Failed):
                if assembler.fail(item.id):
                    await meter.send(send, item)
                meter.done(image_id=item.id, failed=True)
                continue
            completed = await anyio.to_thread.run_sync(assembler.add, item)
            for image in completed:
                await meter.send(send, image)
            meter.done(
                batch_id=item.batch_id,
                completed=[s.id for s in completed],
                runtimes_s=[s.runtime_s for s in completed],
                pending_images=assembler.pending,
            )
