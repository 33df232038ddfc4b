"""The immutable records that travel between pipeline stages.

Data moves one way: ``Job -> Decoded -> TileBatch -> SRBatch -> Stitched -> Saved ->
Scored``. A ``Failed`` record may replace an image's record at any stage; every later
stage passes it on unchanged, so a bad image costs one report row and nothing else.
Producers mark the arrays they hand on read-only, so an accidental in-place edit
downstream fails loudly instead of corrupting another stage's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from batchsr.vocab import TileMode

__all__ = [
    "Decoded",
    "Failed",
    "ImagePlan",
    "Job",
    "SRBatch",
    "Saved",
    "Scored",
    "Slot",
    "Stitched",
    "TileBatch",
    "TileSpec",
    "freeze",
]

_A = TypeVar("_A", bound=np.ndarray)


def freeze(array: _A) -> _A:
    """Mark ``array`` read-only and return it (records never carry writable arrays)."""
    array.flags.writeable = False
    return array


@dataclass(frozen=True, slots=True)
class Job:
    """One input file to process; ``id`` is its position in input order.

    Attributes:
        sha256: the file's content digest when known (for resume), else None.
    """

    id: int
    name: str
    path: Path
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Carried:
    """What an output keeps of its input's look, beyond the pixels.

    Attributes:
        grey: the input was a grey image: its output is written grey (one channel)
            unless RGB is asked for.
        icc_profile: the input's embedded ICC colour profile, written into the output
            so colour-managed viewers show it as they showed the input; None if none.
    """

    grey: bool = False
    icc_profile: bytes | None = None

    def __structlog__(self) -> str:
        icc = f"{len(self.icc_profile)} B" if self.icc_profile else None
        return f"Carried(grey={self.grey}, icc_profile={icc})"


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded input image.

    Attributes:
        rgb: HxWx3 uint8 RGB, read-only.
        mode: the file's PIL mode before conversion (``L``, ``RGBA``, ``I;16``, ...).
        icc_profile: the file's embedded ICC profile, or None.
    """

    id: int
    name: str
    rgb: NDArray[np.uint8]
    mode: str
    icc_profile: bytes | None = None

    def __structlog__(self) -> str:
        return f"Decoded(id={self.id}, name={self.name!r}, shape={self.rgb.shape})"


@dataclass(frozen=True, slots=True)
class TileSpec:
    """Where one tile reads its input and which part of its output is kept.

    Coordinates are input (low-resolution) pixels. The window ``[y, y + h) x [x, x + w)``
    is what the engine sees, in the padded frame (the image starts at the plan's
    ``offset_y, offset_x`` there); the core ``[core_y0, core_y1) x [core_x0, core_x1)``,
    in image coordinates, is the part of the image this tile alone decides, and the
    cores of an image's tiles partition it exactly.
    """

    index: int
    y: int
    x: int
    h: int
    w: int
    core_y0: int
    core_y1: int
    core_x0: int
    core_x1: int


@dataclass(frozen=True, slots=True)
class ImagePlan:
    """How one image was cut into tiles; shared by all its tiles.

    Attributes:
        height, width: the image's size in input pixels (before any padding).
        scale: the engine's upscale factor.
        tiles: the tiles, whose cores partition ``[0, height) x [0, width)``.
        t_start_ns: ``perf_counter_ns()`` when tiling began: the start of the image's
            contest runtime (the official harness times from tiling to the stitched image).
        offset_y, offset_x: where the image starts in the padded frame of the windows.
        mode: the tiling mode, which decides how the stitcher combines tiles.
        pad: the context margin (``blend`` ramps over the overlap of neighbours).
        rim: input pixels along each window's edge that ``average`` and ``blend``
            give no weight: computed without their full receptive field.
        carried: what the output keeps of the input's look (grey, colour profile).
        tile_s: seconds the tile stage spent preparing this image's input planes.
        chroma: in Y-only mode, the input's Cb/Cr planes, 2xHxW float32 in [0, 1],
            read-only; the stitcher upscales the part under each SR tile's core as it
            merges it (so an image in flight holds no upscaled chroma); None otherwise.
    """

    id: int
    name: str
    height: int
    width: int
    scale: int
    tiles: tuple[TileSpec, ...]
    t_start_ns: int
    offset_y: int = 0
    offset_x: int = 0
    mode: TileMode = "crop"
    pad: int = 0
    rim: int = 0
    chroma: NDArray[np.float32] | None = None
    carried: Carried = Carried()
    tile_s: float = 0.0

    def __structlog__(self) -> str:
        return f"ImagePlan(id={self.id}, name={self.name!r}, tiles={len(self.tiles)})"


@dataclass(frozen=True, slots=True)
class Slot:
    """One filled position of a batch: which tile of which image it holds."""

    plan: ImagePlan
    tile: TileSpec


@dataclass(frozen=True, slots=True)
class TileBatch:
    """A batch ready for an engine.

    Attributes:
        batch_id: sequence number of the batch in the run.
        data: float32 NCHW in the model's input range, read-only. Rows past
            ``len(slots)`` are padding to fill a static batch size.
        slots: what the filled rows hold, in row order.
    """

    batch_id: int
    data: NDArray[np.float32]
    slots: tuple[Slot, ...]

    @property
    def padded(self) -> int:
        """Rows of ``data`` that are padding, not tiles."""
        return int(self.data.shape[0]) - len(self.slots)

    def __structlog__(self) -> str:
        return f"TileBatch(batch_id={self.batch_id}, shape={self.data.shape})"


@dataclass(frozen=True, slots=True)
class SRBatch:
    """An engine's output for one ``TileBatch``.

    Attributes:
        data: ``scale`` times the input's height and width, read-only: uint8 NHWC
            (the infer workers convert in their threads, in parallel, so the one
            stitch task only copies pixels), or float32 NCHW in [0, 1].
        worker: the engine worker that produced it.
        engine_s: seconds of the engine call that computed the batch (shared by its
            tiles in each image's service time). The uint8 conversion after it runs
            while the engine computes the next batch, so it is not counted.
    """

    batch_id: int
    data: NDArray[np.uint8] | NDArray[np.float32]
    slots: tuple[Slot, ...]
    worker: str
    engine_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Stitched:
    """An assembled SR image.

    Attributes:
        rgb: (H*scale)x(W*scale)x3 uint8 RGB, read-only.
        runtime_s: contest runtime: from the start of tiling to this image. In a
            pipeline it includes waiting behind other images' tiles.
        service_s: the work done for this image alone between those points: its tile
            preparation, its share of each engine call its tiles were in, and its
            stitching; no waiting.
        carried: what the output keeps of the input's look (see :class:`Carried`).
    """

    id: int
    name: str
    rgb: NDArray[np.uint8]
    runtime_s: float
    tiles: int
    carried: Carried = Carried()
    service_s: float = 0.0

    def saved(self, rgb: NDArray[np.uint8], path: Path) -> Saved:
        """This image once written: ``rgb`` as saved (filtered, grey kept) at ``path``."""
        return Saved(self.id, self.name, rgb, path, self.runtime_s, self.service_s)


@dataclass(frozen=True, slots=True)
class Saved:
    """An SR image written to disk; ``rgb`` is exactly the saved pixels."""

    id: int
    name: str
    rgb: NDArray[np.uint8]
    path: Path
    runtime_s: float
    service_s: float | None = None

    def scored(self, niqe: float | None, niqe_error: str | None) -> Scored:
        """This image with its NIQE, or why there is none."""
        return Scored(
            self.id, self.name, self.path, self.runtime_s, niqe, niqe_error, self.service_s
        )


@dataclass(frozen=True, slots=True)
class Scored:
    """A finished image: its output, runtime and NIQE (or why NIQE is undefined), and
    its service time (see :class:`Stitched`; None when a resumed run did not record it)."""

    id: int
    name: str
    path: Path
    runtime_s: float
    niqe: float | None
    niqe_error: str | None = None
    service_s: float | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """An image that could not be produced; it becomes an error row in the report."""

    id: int
    name: str
    stage: str
    error_type: str
    message: str
