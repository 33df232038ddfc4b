"""Where a run's files go and how they are written so that none is ever half there.

Outputs and reports are written to a temporary file beside their final name and renamed
over it: a rename within one folder is atomic, so a reader (or a run resumed after a
kill) sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "output_path"]


def output_path(out_dir: Path, name: str, suffix: str = "", ext: str = "png") -> Path:
    """Where the image named ``name`` is written; never outside ``out_dir``.

    ``name`` is a file stem, or for a recursive input a ``/``-separated relative path
    (``sub/a``), which the output mirrors; ``suffix`` is appended to the file name.
    """
    # Refuse any part that would resolve elsewhere (``..``, empty, a separator of
    # another kind), so a crafted name cannot escape out_dir.
    parts = name.split("/")
    if any(
        not part or part in (".", "..") or os.sep in part or (os.altsep and os.altsep in part)
        for part in parts
    ):
        raise ValueError(f"image name {name!r} cannot be used as an output file name")
    return out_dir.joinpath(*parts[:-1], f"{parts[-1]}{suffix}.{ext}")


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it over ``path``;
    the temporary file is gone afterwards, whatever happened. ``path``'s folder must
    exist.

    Raises:
        OSError: the file could not be written or renamed (``path`` is untouched).
    """
    tmp = path.with_name(f".{path.name}.partial")  # hidden from a listing of outputs
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
