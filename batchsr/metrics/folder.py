"""Score a folder of already-upscaled images with the contest's NIQE, one process per core.

The library side of ``python run.py score DIR``: decode each file to RGB uint8, score it
with :func:`batchsr.metrics.niqe`, and return one row per file in input order. One bad
image (undecodable, or NIQE undefined for it) becomes an error row; it never stops the
others.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from batchsr.errors import DecodeError, NIQEError
from batchsr.metrics.niqe import niqe

__all__ = ["FolderScore", "decode_rgb8", "score_file", "score_folder"]

# Pillow modes holding 16-bit (or wider integer) grey samples.
_GREY16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


@dataclass(frozen=True)
class FolderScore:
    """One image's result: a NIQE value, or why there is none.

    Attributes:
        name: file name (no folder).
        niqe: the score, or None when ``error`` is set.
        error: what went wrong (decode failure or NIQE undefined), else None.
    """

    name: str
    niqe: float | None
    error: str | None = None


def decode_rgb8(path: Path) -> NDArray[np.uint8]:
    """Decode an image file to (H, W, 3) uint8 RGB the way the pipeline does.

    Grey is replicated to three channels and alpha dropped (``Image.convert("RGB")``);
    16-bit grey ('I;16*', 'I') is scaled to 8 bits with rounding, ``round(v * 255 /
    65535)``. Pillow itself reduces 16-bit RGB(A) PNGs to 8 bits when it opens them.

    Raises:
        DecodeError: the file cannot be read as an image.
    """
    try:
        with Image.open(path) as im:
            if im.mode in _GREY16_MODES:
                v = np.clip(np.asarray(im, dtype=np.int64), 0, 65535)
                grey = ((v * 255 + 32767) // 65535).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=-1)
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DecodeError(f"cannot decode {path.name}: {exc}") from exc


def score_file(path: Path) -> FolderScore:
    """Decode and score one file; errors become the row's ``error``."""
    try:
        return FolderScore(path.name, niqe(decode_rgb8(path)))
    except (DecodeError, NIQEError) as exc:
        return FolderScore(path.name, None, str(exc))


def score_folder(paths: Sequence[Path], *, workers: int) -> list[FolderScore]:
    """Score images across ``workers`` processes, one image per task.

    Args:
        paths: image files, scored and returned in this order.
        workers: processes to use (1 scores in this process).

    Returns:
        One :class:`FolderScore` per path, in input order.
    """
    if workers <= 1 or len(paths) <= 1:
        return [score_file(p) for p in paths]
    with ProcessPoolExecutor(max_workers=min(workers, len(paths))) as pool:
        return list(pool.map(score_file, paths))
