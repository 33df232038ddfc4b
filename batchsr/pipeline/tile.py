"""Tile stage: images to engine-sized tile batches.

Four tiling modes (``--tile-mode``), each a pure plan over the image:

- ``crop`` (default): Real-ESRGAN's ``tile_pad``. Every tile reads a window with
  ``pad`` pixels of context around its core and stitching keeps only the core. When
  ``pad`` covers the model's receptive field, the stitched image equals whole-image
  inference.
- ``plain``: the seed's tiling. Non-overlapping tiles over the image padded to a
  whole number of tiles, the padding split evenly on both sides. Cheapest, but tile
  borders show as seams because no tile sees its neighbours.

- ``average``: overlapping windows, with every output pixel the mean of the tiles
  that cover it with context: each window's rim of ``--tile-pad`` pixels (default the
  model's margin) was computed without its full receptive field, so it gets no
  weight, and windows overlap by twice as much again so that there is something to
  average.
- ``blend``: the same windows, with weights rising linearly from the rim over the
  rest of the overlap (the official demo blended overlaps), so tiles fade into each
  other. With a model whose receptive field fits in the margin, both equal
  whole-image inference; with a wider one, blending hides what differs.

Every mode extends the image past its edges (``border``, see ``batchsr.border``) so
border pixels are computed with context too: by the context margin (the image frame
that ``crop`` tiles and whole-image inference read), or to whole tiles (``plain``).

Windows are always the engine's tile size (static-shape models need exact shapes); an
image smaller than a tile is padded up to it. In Y-only mode the model sees MATLAB's
Y channel and the tile stage upscales Cb and Cr bicubically for the stitcher.

Tiles of consecutive images share batches: a static batch size is filled across image
boundaries and only the run's last batch is padded (to a smaller batch size when the
engine holds one, see ``TileGeometry.tail_batches``). Of several shapes with different
tile sizes, the tiler uses the engine's first (preferred) one for every tile. With a
dynamic batch axis a partial batch is sent as soon as no further image is waiting, so
the engine never idles on it.

The planning functions are pure and hold no per-image state, so they are safe to call
from any thread.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from numpy.typing import NDArray

from batchsr.border import DEFAULT_BORDER, extend
from batchsr.color import GREY_MODES, chroma_planes, rgb_to_ycbcr
from batchsr.pipeline.budget import Budget, image_cost
from batchsr.pipeline.stage import Meter, failed_from
from batchsr.records import Carried, Decoded, Failed, ImagePlan, Slot, TileBatch, TileSpec, freeze
from batchsr.vocab import BorderMode, TileMode

__all__ = [
    "TileGeometry",
    "plan_axis",
    "plan_axis_plain",
    "plan_image",
    "prepare_image",
    "run_tile",
    "tile_for",
]


@dataclass(frozen=True, slots=True)
class TileGeometry:
    """How the tiler cuts images for one engine.

    Attributes:
        tile_h, tile_w: window size in input pixels; 0 means the whole image.
        pad: context margin on each side of a core (input pixels); in ``average`` and
            ``blend`` modes neighbouring windows overlap by twice this. The image is
            extended by as much on every side (``border``), so its edge pixels get the
            same context.
        batch: tiles per engine call.
        static_batch: the batch size is fixed by the model: partial batches are padded
            with zeros, and only at the end of the run.
        scale: the engine's upscale factor.
        mode: the tiling mode (see the module docstring).
        y_only: feed the model MATLAB's Y channel only (one-channel models).
        dynamic_hw: the model takes any height and width, so an image (or axis)
            smaller than a tile goes in as it is instead of padded up to the tile.
        alt_tiles: other static (height, width) tile sizes the engine holds at the same
            batch size; each image is cut with the size that needs the fewest tiles,
            then the least window area (see :func:`tile_for`).
        tail_batches: smaller static batch sizes the engine also holds for the same
            tile (a combined bmodel, e.g. batch 4 and batch 1). The run's last, partial
            batch goes out in the smallest of these (or ``batch``) that fits it, so the
            device computes less padding. Full batches always use ``batch``.
        border: how the image is extended past its edges (``batchsr.border``);
            ``plain`` fills its padding to whole tiles the same way.
        rim: input pixels along each window's edge that ``average`` and ``blend``
            give no weight (at most ``pad // 2``, so every pixel keeps some weight).
    """

    tile_h: int
    tile_w: int
    pad: int
    batch: int
    static_batch: bool
    scale: int
    mode: TileMode = "crop"
    y_only: bool = False
    tail_batches: tuple[int, ...] = ()
    dynamic_hw: bool = False
    alt_tiles: tuple[tuple[int, int], ...] = ()
    border: BorderMode = DEFAULT_BORDER
    rim: int = 0

    @property
    def channels(self) -> int:
        """Channels of the tiles the engine sees."""
        return 1 if self.y_only else 3

    def padded_size(self, count: int) -> int:
        """Rows a static batch holding ``count`` tiles is padded to."""
        return min(n for n in (self.batch, *self.tail_batches) if n >= count)


def plan_axis(length: int, tile: int, pad: int) -> list[tuple[int, int, int]]:
    """Cut one axis into windows of ``tile`` whose cores partition ``[0, length)``.

    The axis is read in its bordered frame: the image extended by ``pad`` pixels on
    both sides (:func:`prepare_image` fills them from the image, see ``BorderMode``),
    so every core, the outermost included, has ``pad`` pixels of context on both sides.
    Uses the fewest windows that allow this.

    Returns:
        ``(window_start, core_start, core_end)`` per window, in order: window starts in
        the frame (the image starts at ``pad`` there), cores in image coordinates.
    """
    frame = length + 2 * pad
    if tile == 0 or frame <= tile:
        return [(0, 0, length)]
    step = tile - 2 * pad
    n = -(-length // step)
    bounds = [(length * i) // n for i in range(n + 1)]
    # A core starting at c sits at c + pad in the frame: its window starts at c, except
    # the last, which may not reach past the frame and so takes more context before.
    return [(min(c0, frame - tile), c0, c1) for c0, c1 in itertools.pairwise(bounds)]


def plan_axis_plain(length: int, tile: int) -> tuple[int, list[tuple[int, int, int]]]:
    """The seed's plain tiling of one axis: ``ceil(length / tile)`` abutting windows
    over the axis zero-padded to a whole number of tiles, padding split evenly.

    Returns:
        ``(offset, windows)``: the image starts at ``offset`` in the padded frame;
        windows are ``(window_start, core_start, core_end)`` with window starts in the
        padded frame and cores in image coordinates.
    """
    if tile == 0:
        return 0, [(0, 0, length)]
    n = -(-length // tile)
    offset = (n * tile - length) // 2
    return offset, [
        (i * tile, max(0, i * tile - offset), min(length, (i + 1) * tile - offset))
        for i in range(n)
    ]


def tile_for(height: int, width: int, geometry: TileGeometry) -> TileGeometry:
    """The geometry to cut one image with: of the engine's tile sizes, the one giving
    the fewest tiles (device calls), then the least window area (padding and overlap
    the device computes for nothing)."""
    if not geometry.alt_tiles:
        return geometry

    def cost(tile: tuple[int, int]) -> tuple[int, int]:
        th, tw = tile
        if geometry.mode == "plain":
            n = -(-height // th) * -(-width // tw)
        else:
            n = len(plan_axis(height, th, geometry.pad)) * len(plan_axis(width, tw, geometry.pad))
        return n, n * th * tw

    best = min([(geometry.tile_h, geometry.tile_w), *geometry.alt_tiles], key=cost)
    return dataclasses.replace(geometry, tile_h=best[0], tile_w=best[1], alt_tiles=())


def plan_image(
    image_id: int, name: str, height: int, width: int, geometry: TileGeometry, *, t_start_ns: int
) -> ImagePlan:
    """The tiles of one image, row by row."""
    geometry = tile_for(height, width, geometry)
    if geometry.mode == "plain":
        off_y, rows = plan_axis_plain(height, geometry.tile_h)
        off_x, cols = plan_axis_plain(width, geometry.tile_w)
        win_h, win_w = geometry.tile_h or height, geometry.tile_w or width
    else:
        off_y = off_x = geometry.pad
        rows = plan_axis(height, geometry.tile_h, geometry.pad)
        cols = plan_axis(width, geometry.tile_w, geometry.pad)
        frame_h, frame_w = height + 2 * geometry.pad, width + 2 * geometry.pad
        # Windows are exactly the tile size (prepare_image extends a smaller frame up to
        # it), except that a model with free height and width takes a smaller frame as
        # it is.
        win_h, win_w = geometry.tile_h or frame_h, geometry.tile_w or frame_w
        if geometry.dynamic_hw:
            win_h, win_w = min(win_h, frame_h), min(win_w, frame_w)
    tiles = tuple(
        TileSpec(
            index=r * len(cols) + c,
            y=y,
            x=x,
            h=win_h,
            w=win_w,
            core_y0=cy0,
            core_y1=cy1,
            core_x0=cx0,
            core_x1=cx1,
        )
        for r, (y, cy0, cy1) in enumerate(rows)
        for c, (x, cx0, cx1) in enumerate(cols)
    )
    return ImagePlan(
        id=image_id,
        name=name,
        height=height,
        width=width,
        scale=geometry.scale,
        tiles=tiles,
        t_start_ns=t_start_ns,
        offset_y=off_y,
        offset_x=off_x,
        mode=geometry.mode,
        pad=geometry.pad,
        rim=geometry.rim,
    )


def prepare_image(
    rgb: NDArray[np.uint8], geometry: TileGeometry
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
    """The model's input plane(s) for one image, padded to the tiling's frame.

    Returns:
        ``(chw, chroma)``: CxH'xW' float32 in [0, 1] (RGB, or Y in Y-only mode),
        extended past the image's edges as ``geometry.border`` says: to whole tiles,
        centred (``plain``), or by ``pad`` on every side and then, where that frame is
        smaller than a tile, up to one tile at the bottom and right (other modes); and
        in Y-only mode the input's Cb/Cr planes, 2xHxW, else None.
    """
    geometry = tile_for(rgb.shape[0], rgb.shape[1], geometry)
    chroma = None
    if geometry.y_only:
        ycc = rgb_to_ycbcr(rgb)
        chw = np.ascontiguousarray(ycc[None, :, :, 0])
        chroma = chroma_planes(ycc)
    else:
        chw = rgb.transpose(2, 0, 1).astype(np.float32)
        chw *= np.float32(1.0 / 255.0)
    height, width = rgb.shape[:2]
    if geometry.mode == "plain":
        (oy, rows), (ox, cols) = (
            plan_axis_plain(height, geometry.tile_h),
            plan_axis_plain(width, geometry.tile_w),
        )
        full_h = len(rows) * geometry.tile_h if geometry.tile_h else height
        full_w = len(cols) * geometry.tile_w if geometry.tile_w else width
        pads = ((oy, full_h - height - oy), (ox, full_w - width - ox))
    else:
        b = geometry.pad
        frame_h, frame_w = height + 2 * b, width + 2 * b
        extra_h = extra_w = 0
        if not geometry.dynamic_hw:
            extra_h = max(0, geometry.tile_h - frame_h) if geometry.tile_h else 0
            extra_w = max(0, geometry.tile_w - frame_w) if geometry.tile_w else 0
        pads = ((b, b + extra_h), (b, b + extra_w))
    return extend(chw, pads, geometry.border), chroma


class _Batcher:
    """Accumulates tiles into batches; private to the one tile task."""

    def __init__(self, geometry: TileGeometry) -> None:
        self._geometry = geometry
        self._arrays: list[NDArray[np.float32]] = []
        self._slots: list[Slot] = []
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._slots)

    def add(self, window: NDArray[np.float32], slot: Slot) -> list[TileBatch]:
        """Queue one tile; return the batches that are now complete (0, 1 or 2)."""
        ready = []
        if self._arrays and self._arrays[0].shape != window.shape:
            # Only same-shaped windows stack (dynamic models see whole small images).
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
        while True:
            item: Decoded | Failed | None
            try:
                item = meter.receive_nowait(receive)
            except anyio.WouldBlock:
                if len(batcher) and not geometry.static_batch:
                    # Nothing else is waiting: send what we have rather than idle the engine.
                    partial = batcher.flush()
                    assert partial is not None
                    await meter.send(send, partial)
                item = await meter.receive(receive)
            except anyio.EndOfStream:
                item = None
            if item is None:
                break
            if isinstance(item, Failed):
                await meter.send(send, item)
                meter.done(image_id=item.id, failed=True)
                continue
            gates = [] if window is None else [(window, 1)]
            if budget is not None:
                h, w = item.rgb.shape[:2]
                cost = image_cost(h, w, scale=geometry.scale, bytes_per_pixel=bytes_per_pixel)
                gates.append((budget, cost))
            for gate, share in gates:
                if not gate.fits(share) and (partial := batcher.flush()) is not None:
                    await meter.send(send, partial)
                await meter.hold(gate.acquire(item.id, share))
            t_start_ns = time.perf_counter_ns()  # contest runtime starts at tiling
            admitted: dict[str, Any] = (
                {} if budget is None and window is None else {"t_admitted": t_start_ns / 1e9}
            )
            try:
                chw, chroma = await anyio.to_thread.run_sync(prepare_image, item.rgb, geometry)
                height, width = item.rgb.shape[:2]
                plan = plan_image(
                    item.id, item.name, height, width, geometry, t_start_ns=t_start_ns
                )
                # The thread's wait for the event loop counts as the image's work: on
                # a busy loop it is part of what this stage costs the image.
                plan = dataclasses.replace(
                    plan,
                    tile_s=(time.perf_counter_ns() - t_start_ns) / 1e9,
                    chroma=None if chroma is None else freeze(chroma),
                    carried=Carried(grey=item.mode in GREY_MODES, icc_profile=item.icc_profile),
                )
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
