"""Calibration and test inputs for tpu-mlir, cut exactly as the pipeline cuts tiles.

tpu-mlir preprocesses *images* with the MLIR's mean/scale/pixel_format (default
0-255 BGR), but passes npz tensors through unchanged (reference 1.2, 1.3). So we hand
it npz files of what the engine really sees: float32 NCHW [0,1] RGB (or Y) tiles
from ``batchsr.sample_tiles`` (the pipeline's decoder and tiler), never raw images
(the seed's INT8 failure, ref. 1.6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchsr.errors import ConfigError, InputError
from batchsr.images import list_inputs
from batchsr.sample_tiles import iter_tiles
from batchsr.vocab import IMAGE_SUFFIXES, NCHW
from compile.onnx import INPUT_NAME

__all__ = [
    "calibration_images",
    "synthetic_input",
    "write_calibration",
    "write_test_input",
]


def _save_npz(path: Path, key: str, array: NDArray[np.float32]) -> None:
    """One array under the tensor name tpu-mlir looks up (numpy's stubs type savez's
    keyword arrays as its own flags, hence this one place with a dict)."""
    arrays: dict[str, Any] = {key: array}
    np.savez(path, **arrays)


def calibration_images(folder: Path) -> list[Path]:
    """The image files in ``folder`` (recursively), sorted.

    Raises:
        ConfigError: the folder is missing or holds no images.
    """
    if not folder.is_dir():
        raise ConfigError(f"calibration folder {folder} does not exist or is not a folder")
    try:
        return [job.path for job in list_inputs(folder, recursive=True)]
    except InputError as err:
        raise ConfigError(
            f"calibration folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
        ) from err


def write_calibration(
    images: list[Path], folder: Path, shape: NCHW, *, pad: int, scale: int, limit: int
) -> int:
    """Write up to ``limit`` npz samples of ``shape`` (key ``input``) into ``folder``.

    Tiles are grouped N at a time into one NCHW sample; a last partial group is dropped.

    Returns:
        The number of samples written.

    Raises:
        ConfigError: the images give not a single sample.
    """
    folder.mkdir(parents=True, exist_ok=True)
    n = shape[0]
    batch: list[NDArray[np.float32]] = []
    count = 0
    for tile in iter_tiles(images, shape, pad=pad, scale=scale):
        batch.append(tile)
        if len(batch) == n:
            _save_npz(folder / f"cali_{count:04d}.npz", INPUT_NAME, np.stack(batch))
            count += 1
            batch = []
            if count >= limit:
                break
    if count == 0:
        raise ConfigError(f"calibration images give no sample of shape {shape}")
    return count


def synthetic_input(shape: NCHW, *, seed: int = 0) -> NDArray[np.float32]:
    """A seeded NCHW float32 test input in [0,1]: smooth ramps plus mild noise.

    Used for validation when no calibration images are given.
    """
    n, c, h, w = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    base = np.stack([(yy * (k + 1) + xx * (c - k)) / (c + 1) for k in range(c)])
    x = base[None] + rng.normal(0.0, 0.05, size=(n, c, h, w))
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def write_test_input(x: NDArray[np.float32], inp: Path) -> None:
    """Save ``x`` as ``inp`` under the ONNX input's name, which is how tpu-mlir matches
    ``--test_input`` to the graph (the transform computes the references itself)."""
    inp.parent.mkdir(parents=True, exist_ok=True)
    _save_npz(inp, INPUT_NAME, x)
