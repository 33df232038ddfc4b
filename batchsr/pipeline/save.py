"""Save stage: each SR image to ``OUTPUT/<name>.png`` (or ``.jpg``/``.webp``), atomically.

A temporary file in the output folder is renamed over the final name, so an output on
disk is always whole, even if the run is killed mid-write.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from numpy.typing import NDArray
from PIL import Image

from batchsr.color import luma_u8
from batchsr.files import atomic_write, output_path
from batchsr.filters import apply_filter
from batchsr.pipeline.background import BackgroundThreads
from batchsr.pipeline.stage import Meter, failed_from
from batchsr.png import encode_png
from batchsr.records import Failed, Saved, Stitched, freeze

__all__ = ["run_save", "save_lossy", "save_png"]


def _write(path: Path, write: Callable[[Path], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # a recursive input's subfolder
    atomic_write(path, write)


def save_png(
    rgb: NDArray[np.uint8], path: Path, *, compress_level: int, icc_profile: bytes | None = None
) -> int:
    """Write ``rgb`` (HxWx3, or HxW grey, uint8) to ``path`` as PNG, atomically, with
    ``icc_profile`` embedded if given; return the byte size."""
    data = encode_png(rgb, level=compress_level, icc_profile=icc_profile)
    _write(path, lambda tmp: tmp.write_bytes(data))
    return path.stat().st_size


def profile_for(icc_profile: bytes | None, *, grey: bool) -> bytes | None:
    """The input's ICC profile if it fits the output's colour space, else None.

    A profile's header names its colour space (bytes 16-19): an RGB profile cannot
    describe a grey output (an input written grey) nor a grey one an RGB output
    (``--rgb``); such a profile is dropped rather than written wrong.
    """
    if not icc_profile or len(icc_profile) < 128:
        return None
    space = icc_profile[16:20]
    return icc_profile if space == (b"GRAY" if grey else b"RGB ") else None


_PIL_FORMATS = {"jpg": "JPEG", "webp": "WEBP"}


def save_lossy(
    rgb: NDArray[np.uint8],
    path: Path,
    *,
    ext: str,
    quality: int,
    icc_profile: bytes | None = None,
) -> NDArray[np.uint8]:
    """Write ``rgb`` as JPEG or WebP, atomically (``icc_profile`` embedded if given);
    return the pixels the file decodes to (what a viewer, or the contest's scorer,
    reads back; NIQE is scored on those)."""
    fmt = _PIL_FORMATS[ext]
    extra = {"icc_profile": icc_profile} if icc_profile else {}
    _write(path, lambda tmp: Image.fromarray(rgb).save(tmp, format=fmt, quality=quality, **extra))
    with Image.open(path) as im:
        return freeze(np.asarray(im.convert("RGB")))


def _postprocess_and_save(
    rgb: NDArray[np.uint8],
    path: Path,
    compress_level: int,
    filter_name: str | None,
    ext: str = "png",
    quality: int = 95,
    grey: bool = False,
    icc_profile: bytes | None = None,
) -> tuple[NDArray[np.uint8], int]:
    """Filter, write, and return ``(the written pixels as RGB, bytes)``: a grey output
    is scored as the contest's reader sees it, three equal channels."""
    if filter_name is not None:
        rgb = freeze(apply_filter(rgb, filter_name))
    image = luma_u8(rgb) if grey else rgb
    icc = profile_for(icc_profile, grey=grey)
    if ext == "png":
        size = save_png(image, path, compress_level=compress_level, icc_profile=icc)
        written = freeze(np.repeat(image[:, :, None], 3, axis=2)) if grey else rgb
        return written, size
    written = save_lossy(image, path, ext=ext, quality=quality, icc_profile=icc)
    return written, path.stat().st_size


async def run_save(
    receive: MemoryObjectReceiveStream[Stitched | Failed],
    send: MemoryObjectSendStream[Saved | Failed],
    *,
    out_dir: Path,
    compress_level: int,
    filter_name: str | None = None,
    suffix: str = "",
    ext: str = "png",
    quality: int = 95,
    keep_grey: bool = True,
    worker: int = 0,
    threads: BackgroundThreads | None = None,
) -> None:
    """Write each image in a worker thread, after the optional sharpening filter;
    closes ``send`` when ``receive`` is done."""
    meter: Meter[Stitched | Failed] = Meter("save", worker)
    async with receive, send:
        async for item in meter.work(receive, send):
            out: Saved | Failed
            size = 0
            try:
                path = output_path(out_dir, item.name, suffix, ext)
                rgb, size = await meter.in_thread(
                    _postprocess_and_save,
                    item.rgb,
                    path,
                    compress_level,
                    filter_name,
                    ext,
                    quality,
                    keep_grey and item.carried.grey,
                    item.carried.icc_profile,
                    threads=threads,
                )
                out = item.saved(rgb, path)
            except Exception as err:
                out = failed_from(
                    err, image_id=item.id, name=item.name, stage="save", log=meter.log
                )
            await meter.send(send, out)
            meter.done(image_id=item.id, bytes=size)
