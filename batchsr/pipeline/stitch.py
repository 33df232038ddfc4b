"""Stitch stage: SR tiles back into whole SR images.

``crop`` and ``plain`` tiles contribute only their cores, converted to uint8 as they
are pasted, so no float canvas of the whole image is held. ``average`` and ``blend``
tiles contribute their whole window (less a rim without context), weighted (1, or a
linear ramp over the overlap), into a float canvas normalised when the image
completes. In Y-only mode each SR Y core is merged with the bicubic upscale of the
chroma under it as it arrives (``crop``, ``plain``), or the whole Y canvas when the
image completes (overlapping modes). An image's contest runtime ends when it is
complete.
"""

from __future__ import annotations

import time

import numpy as np
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from numpy.typing import NDArray

from batchsr.color import merge_y
from batchsr.pipeline.budget import Budget
from batchsr.pipeline.stage import Meter, pass_failed
from batchsr.records import Failed, ImagePlan, SRBatch, Stitched, TileSpec, freeze
from batchsr.tiling import is_direct, to_uint8
from batchsr.vocab import CORE_MODES

__all__ = ["Assembler", "blend_weights", "paste_tile", "run_stitch"]


def _core_in_tile(spec: TileSpec, plan: ImagePlan) -> tuple[slice, slice, slice, slice]:
    """(canvas rows, canvas cols, tile rows, tile cols) of a tile's core, in SR pixels."""
    s = plan.scale
    ty = (spec.core_y0 + plan.offset_y - spec.y) * s
    tx = (spec.core_x0 + plan.offset_x - spec.x) * s
    h, w = (spec.core_y1 - spec.core_y0) * s, (spec.core_x1 - spec.core_x0) * s
    return (
        slice(spec.core_y0 * s, spec.core_y1 * s),
        slice(spec.core_x0 * s, spec.core_x1 * s),
        slice(ty, ty + h),
        slice(tx, tx + w),
    )


def paste_tile(
    canvas: NDArray[np.uint8],
    sr_tile: NDArray[np.uint8] | NDArray[np.float32],
    spec: TileSpec,
    plan: ImagePlan,
) -> None:
    """Write the core of one SR tile (HxWxC uint8 as the infer workers round it, or
    CxHxW float32) into ``canvas`` (HxWxC uint8)."""
    cy, cx, ty, tx = _core_in_tile(spec, plan)
    if sr_tile.dtype == np.uint8:
        canvas[cy, cx] = sr_tile[ty, tx]
    else:
        canvas[cy, cx] = to_uint8(sr_tile[:, ty, tx].astype(np.float32, copy=False))


def _ramp(n: int, rim: int, ramp: int) -> NDArray[np.float32]:
    """Weights along one window side of ``n`` SR pixels: 0 over the ``rim`` at both
    ends, then rising linearly over ``ramp`` pixels to 1 (1 after the rim when
    ``ramp`` is 0)."""
    pos = np.arange(n, dtype=np.float32) + np.float32(0.5)
    dist = np.minimum(pos, n - pos) - np.float32(rim)
    if ramp <= 0:
        return (dist > 0).astype(np.float32)
    return np.clip(dist / np.float32(ramp), 0.0, 1.0)


def blend_weights(
    spec: TileSpec, plan: ImagePlan
) -> tuple[slice, slice, slice, slice, NDArray[np.float32] | None]:
    """Where a whole window lands in the SR image and its weights.

    Returns:
        (canvas rows, canvas cols, tile rows, tile cols, weights HxW or None for 1).
        A window's rim (``plan.rim`` input pixels along every side) gets weight 0: its
        pixels were computed without their whole receptive field. ``blend`` then ramps
        linearly over the rest of the overlap with the neighbours (twice the context
        margin, less both rims), so tiles fade into each other; ``average`` weighs the
        rest 1. A single window (the whole image) needs no weights.
    """
    s = plan.scale
    y0 = max(spec.y - plan.offset_y, 0)
    y1 = min(spec.y + spec.h - plan.offset_y, plan.height)
    x0 = max(spec.x - plan.offset_x, 0)
    x1 = min(spec.x + spec.w - plan.offset_x, plan.width)
    ty, tx = (y0 + plan.offset_y - spec.y) * s, (x0 + plan.offset_x - spec.x) * s
    h, w = (y1 - y0) * s, (x1 - x0) * s
    weights = None
    if len(plan.tiles) > 1:
        rim = plan.rim * s
        ramp = 2 * (plan.pad - plan.rim) * s if plan.mode == "blend" else 0
        wy = _ramp(spec.h * s, rim, ramp)[ty : ty + h]
        wx = _ramp(spec.w * s, rim, ramp)[tx : tx + w]
        weights = wy[:, None] * wx[None, :]
    return (
        slice(y0 * s, y1 * s),
        slice(x0 * s, x1 * s),
        slice(ty, ty + h),
        slice(tx, tx + w),
        weights,
    )


class _Image:
    """One partly assembled image."""

    def __init__(self, plan: ImagePlan, channels: int) -> None:
        self.plan = plan
        self.remaining = len(plan.tiles)
        self.service_s = plan.tile_s
        hs, ws = plan.height * plan.scale, plan.width * plan.scale
        # uint8 cores are enough unless tiles overlap (average/blend); Y-only cores are
        # merged with their chroma on arrival.
        self.direct = is_direct(plan)
        self.merge_cores = plan.chroma is not None and plan.mode in CORE_MODES
        if self.direct or self.merge_cores:
            self.canvas_u8 = np.empty((hs, ws, 3 if self.merge_cores else channels), np.uint8)
        else:
            self.acc = np.zeros((channels, hs, ws), np.float32)
            self.wsum = np.zeros((hs, ws), np.float32)

    def add(self, sr_tile: NDArray[np.float32], spec: TileSpec) -> None:
        chroma = self.plan.chroma
        if self.direct:
            paste_tile(self.canvas_u8, sr_tile, spec, self.plan)
        elif self.merge_cores and chroma is not None:
            cy, cx, ty, tx = _core_in_tile(spec, self.plan)
            origin = (spec.core_y0, spec.core_x0)
            merge_y(sr_tile[0, ty, tx], chroma, self.plan.scale, origin, out=self.canvas_u8[cy, cx])
        elif self.plan.mode in CORE_MODES:
            cy, cx, ty, tx = _core_in_tile(spec, self.plan)
            self.acc[:, cy, cx] = sr_tile[:, ty, tx]
            self.wsum[cy, cx] = 1.0
        else:
            cy, cx, ty, tx, weights = blend_weights(spec, self.plan)
            if weights is None:
                self.acc[:, cy, cx] += sr_tile[:, ty, tx]
                self.wsum[cy, cx] += 1.0
            else:
                self.acc[:, cy, cx] += sr_tile[:, ty, tx] * weights
                self.wsum[cy, cx] += weights
        self.remaining -= 1

    def finish(self) -> NDArray[np.uint8]:
        if self.direct or self.merge_cores:
            return self.canvas_u8
        chroma = self.plan.chroma
        if chroma is not None:
            return merge_y(self.acc[0] / self.wsum, chroma, self.plan.scale)
        return to_uint8(self.acc / self.wsum)


class Assembler:
    """Partly assembled images, keyed by image id; owned by the one stitch task."""

    def __init__(self) -> None:
        self._images: dict[int, _Image] = {}
        self._failed: set[int] = set()

    def add(self, batch: SRBatch) -> list[Stitched]:
        """Add a batch's tiles; return the images this batch completed."""
        done: list[Stitched] = []
        for row, slot in enumerate(batch.slots):
            plan = slot.plan
            if plan.id in self._failed:
                continue
            image = self._images.get(plan.id)
            if image is None:
                axis = 3 if batch.data.dtype == np.uint8 else 1  # NHWC uint8 or NCHW float
                image = self._images[plan.id] = _Image(plan, int(batch.data.shape[axis]))
            t0 = time.perf_counter()
            image.add(batch.data[row], slot.tile)
            # The image's share of the engine call: one tile's worth of it.
            image.service_s += batch.engine_s / len(batch.slots) + time.perf_counter() - t0
            if image.remaining == 0:
                del self._images[plan.id]
                t1 = time.perf_counter()
                rgb = image.finish()
                image.service_s += time.perf_counter() - t1
                runtime_s = (time.perf_counter_ns() - plan.t_start_ns) / 1e9
                done.append(
                    Stitched(
                        id=plan.id,
                        name=plan.name,
                        rgb=freeze(rgb),
                        runtime_s=runtime_s,
                        tiles=len(plan.tiles),
                        carried=plan.carried,
                        service_s=image.service_s,
                    )
                )
        return done

    def fail(self, image_id: int) -> bool:
        """Drop an image; True the first time (its Failed record should go on)."""
        self._images.pop(image_id, None)
        if image_id in self._failed:
            return False
        self._failed.add(image_id)
        return True

    @property
    def pending(self) -> int:
        return len(self._images)


async def run_stitch(
    receive: MemoryObjectReceiveStream[SRBatch | Failed],
    send: MemoryObjectSendStream[Stitched | Failed],
    *,
    window: Budget | None = None,
) -> None:
    """Assemble images from SR batches arriving in any order; closes ``send`` at the end.

    One task by design: it owns the partly assembled images. Pasting runs in a thread.
    Each finished (or failed) image gives its place in the in-flight ``window`` back.
    """
    meter: Meter[SRBatch | Failed] = Meter("stitch")
    assembler = Assembler()
    async with receive, send:
        while (item := await meter.receive(receive)) is not None:
            if isinstance(item, Failed):
                # An image with tiles in several batches can fail in each of them:
                # its first record goes on, as one row.
                if assembler.fail(item.id):
                    if window is not None:
                        window.release(item.id)
                    await pass_failed(meter, send, item)
                else:
                    meter.done(image_id=item.id, failed=True)
                continue
            completed = await meter.in_thread(assembler.add, item)
            for image in completed:
                if window is not None:
                    window.release(image.id)
                await meter.send(send, image)
            meter.done(
                batch_id=item.batch_id,
                completed=[s.id for s in completed],
                runtimes_s=[s.runtime_s for s in completed],
                pending_images=assembler.pending,
            )
