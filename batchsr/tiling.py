"""Tiling geometry and pixel conversions: how an image is cut into engine windows and
how SR windows come back as uint8 pixels.

Four tiling modes (``tiling.mode``), each a pure plan over the image:

- ``crop`` (default): Real-ESRGAN's ``tile_pad``. Every tile reads a window with
  ``pad`` pixels of context around its core and stitching keeps only the core. When
  ``pad`` covers the model's receptive field, the stitched image equals whole-image
  inference.
- ``plain``: the seed's tiling. Non-overlapping tiles over the image padded to a
  whole number of tiles, the padding split evenly on both sides. Cheapest, but tile
  borders show as seams because no tile sees its neighbours.

- ``average``: overlapping windows, with every output pixel the mean of the tiles
  that cover it with context: each window's rim of ``tiling.tile_pad`` pixels (default
  the model's margin) was computed without its full receptive field, so it gets no
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
image smaller than a tile is padded up to it. A model with free height and width takes
a whole image, or one smaller than a tile, as it is, extended only up to its
``size_multiple`` (``TileGeometry.multiple``). In Y-only mode the model sees MATLAB's Y
channel and Cb and Cr are kept for the stitcher to upscale bicubically.

The tile stage (``batchsr.pipeline.tile``) and calibration (``batchsr.sample_tiles``)
cut with these functions; the infer and stitch stages convert with them. Everything
here is pure and holds no per-image state, so it is safe to call from any thread.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from batchsr.border import DEFAULT_BORDER, extend
from batchsr.color import rgb_planes
from batchsr.records import ImagePlan, TileSpec
from batchsr.vocab import CORE_MODES, BorderMode, TileMode

__all__ = [
    "TileGeometry",
    "batch_to_uint8",
    "is_direct",
    "plan_axis",
    "plan_axis_plain",
    "plan_image",
    "prepare_image",
    "round_up",
    "tile_for",
    "to_uint8",
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
        multiple: what window heights and widths must be multiples of (the model's
            ``size_multiple``): a whole image, or a frame smaller than a tile for a
            model with free height and width, is extended up to the next multiple.
        whole_pixels: a model with free height and width takes an image of at most
            this many pixels whole, as one window (its frame: the image and its
            margin), instead of in tiles (see :func:`tile_for`); 0 always tiles.
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
    multiple: int = 1
    whole_pixels: int = 0

    @property
    def channels(self) -> int:
        """Channels of the tiles the engine sees."""
        return 1 if self.y_only else 3

    def padded_size(self, count: int) -> int:
        """Rows a static batch holding ``count`` tiles is padded to."""
        return min(n for n in (self.batch, *self.tail_batches) if n >= count)


def round_up(length: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is at least ``length``."""
    return -(-length // multiple) * multiple


def _window(frame: int, tile: int, geometry: TileGeometry) -> int:
    """The window length over an axis whose bordered frame is ``frame`` long: the tile;
    or the frame, extended to the model's size multiple, for a whole image or, with a
    model of free height and width, for a frame smaller than a tile."""
    whole = round_up(frame, geometry.multiple)
    if not tile:
        return whole
    return min(tile, whole) if geometry.dynamic_hw else tile


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


def _runs_whole(geometry: TileGeometry) -> bool:
    """Whether images of up to ``geometry.whole_pixels`` pixels go in whole (see
    :func:`tile_for`)."""
    # Not ``plain``: its seams are what it reproduces.
    # Nor a static batch above one: each whole image would go out padded to it.
    whole = geometry.dynamic_hw and geometry.tile_h > 0 and geometry.mode != "plain"
    whole = whole and (not geometry.static_batch or geometry.batch == 1)
    return whole and geometry.whole_pixels > 0


def tile_for(height: int, width: int, geometry: TileGeometry) -> TileGeometry:
    """The geometry to cut one image with.

    A model with free height and width takes an image of at most
    ``geometry.whole_pixels`` pixels whole: tiles of a fixed size overhang the image's far
    edges and overlap by twice the margin, so on a contest image (510x408) 128-pixel
    tiles compute 1.5 times the pixels one whole window does. Otherwise, of the
    engine's tile sizes, the one giving the fewest tiles (device calls), then the
    least window area (padding and overlap the device computes for nothing).
    """
    if _runs_whole(geometry) and height * width <= geometry.whole_pixels:
        return dataclasses.replace(geometry, tile_h=0, tile_w=0, alt_tiles=())
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
        win_h, win_w = _plain_tiles(height, width, geometry)
        off_y, rows = plan_axis_plain(height, win_h)
        off_x, cols = plan_axis_plain(width, win_w)
    else:
        off_y = off_x = geometry.pad
        rows = plan_axis(height, geometry.tile_h, geometry.pad)
        cols = plan_axis(width, geometry.tile_w, geometry.pad)
        # Windows are exactly the tile size (prepare_image extends a smaller frame up to
        # it), except that a model with free height and width takes a smaller frame as
        # it is (up to its size multiple).
        win_h = _window(height + 2 * geometry.pad, geometry.tile_h, geometry)
        win_w = _window(width + 2 * geometry.pad, geometry.tile_w, geometry)
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
        y, chroma = rgb_planes(rgb)
        chw = y[None]
    else:
        chw = rgb.transpose(2, 0, 1).astype(np.float32)
        chw *= np.float32(1.0 / 255.0)
    height, width = rgb.shape[:2]
    if geometry.mode == "plain":
        tile_h, tile_w = _plain_tiles(height, width, geometry)
        (oy, rows), (ox, cols) = plan_axis_plain(height, tile_h), plan_axis_plain(width, tile_w)
        full_h, full_w = len(rows) * tile_h, len(cols) * tile_w
        pads = ((oy, full_h - height - oy), (ox, full_w - width - ox))
    else:
        b = geometry.pad
        frame_h, frame_w = height + 2 * b, width + 2 * b
        extra_h = max(0, _window(frame_h, geometry.tile_h, geometry) - frame_h)
        extra_w = max(0, _window(frame_w, geometry.tile_w, geometry) - frame_w)
        pads = ((b, b + extra_h), (b, b + extra_w))
    return extend(chw, pads, geometry.border), chroma


def _plain_tiles(height: int, width: int, geometry: TileGeometry) -> tuple[int, int]:
    """``plain``'s tile size: a whole image is one tile, extended to the model's size
    multiple."""
    return (
        geometry.tile_h or round_up(height, geometry.multiple),
        geometry.tile_w or round_up(width, geometry.multiple),
    )


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


def is_direct(plan: ImagePlan) -> bool:
    """True if the image's tiles paste their cores straight into a uint8 image (no
    overlap to average, no chroma to merge), so tiles may be rounded to uint8 early."""
    return plan.mode in CORE_MODES and plan.chroma is None
