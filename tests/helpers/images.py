"""Generated test images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def photo_like(height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image with some texture (HxWx3 uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [128 + 100 * np.sin(xx / 17.0 + c) * np.cos(yy / 23.0 - c) for c in range(3)], axis=2
    )
    noise = rng.normal(0, 12, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    Image.fromarray(rgb).save(path)
    return path


def photo_folder(folder: Path, count: int, height: int, width: int, *, name: str = "{i}") -> Path:
    """``folder`` made and filled with ``count`` seeded :func:`photo_like` PNGs, named
    by ``name`` formatted with their index (``"{i:03d}"`` for 000.png ...)."""
    folder.mkdir(parents=True)
    for i in range(count):
        write_png(folder / f"{name.format(i=i)}.png", photo_like(height, width, seed=i))
    return folder
