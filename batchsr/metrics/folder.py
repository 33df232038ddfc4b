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
from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchsr.config import OutputConfig
from batchsr.errors import DecodeError, NIQEError
from batchsr.images import decode_image
from batchsr.metrics.niqe import niqe

__all__ = ["FolderScore", "decode_rgb8", "niqe_report", "score_file", "score_folder"]


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
    """Decode an image file to (H, W, 3) uint8 RGB exactly as the pipeline's decode stage
    does (grey replicated, alpha dropped, 16-bit scaled by bit depth).

    Raises:
        DecodeError: the file cannot be read as an image.
    """
    rgb, _mode, _icc = decode_image(path, max_pixels=OutputConfig().max_pixels)
    return rgb


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


def niqe_report(names: Sequence[str], rows: Sequence[FolderScore]) -> dict[str, Any]:
    """``niqe.json``: the average and one row per image in the contest report's row
    format (``img_name``, ``niqe`` as a 4-decimal string or null, ``error`` if any);
    the average is over the scored images only."""
    scored = [r.niqe for r in rows if r.niqe is not None]
    avg = sum(scored) / len(scored) if scored else None
    return {
        "niqe_avg": None if avg is None else f"{avg:.4f}",
        "images": [
            {"img_name": name, "niqe": None if r.niqe is None else f"{r.niqe:.4f}"}
            | ({"error": r.error} if r.error else {})
            for name, r in zip(names, rows, strict=True)
        ],
    }
