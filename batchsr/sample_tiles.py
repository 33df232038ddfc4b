"""Real tiles cut exactly as the pipeline cuts them, for calibration and checks.

INT8 calibration (``compile``), the bmodel self-check and the quantisation figures all
need what an engine really sees at run time: images decoded by the pipeline's decoder
(16-bit, palette, CMYK and grey inputs converted as a run converts them), turned into
the model's input plane (RGB, or MATLAB Y for one-channel models) and windowed by the
pipeline's ``crop`` tiling (its default) with the model's margin.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from batchsr.config import OutputConfig
from batchsr.errors import ConfigError, DecodeError
from batchsr.images import decode_image
from batchsr.tiling import TileGeometry, plan_image, prepare_image
from batchsr.vocab import NCHW

__all__ = ["batches_of", "iter_tiles"]


def iter_tiles(
    images: Sequence[Path], shape: NCHW, *, pad: int, scale: int
) -> Iterator[NDArray[np.float32]]:
    """Yield CxHxW float32 [0, 1] windows of ``shape``'s size, image after image.

    Raises:
        ConfigError: an image cannot be decoded (the message names it).
    """
    _, c, h, w = shape
    geometry = TileGeometry(
        tile_h=h, tile_w=w, pad=pad, batch=shape[0], static_batch=True, scale=scale,
        y_only=c == 1,
    )  # fmt: skip
    max_pixels = OutputConfig().max_pixels
    for i, path in enumerate(images):
        try:
            rgb, _mode, _icc = decode_image(path, max_pixels=max_pixels)
        except DecodeError as err:
            raise ConfigError(f"image {path} cannot be used: {err}") from err
        plan = plan_image(i, path.name, rgb.shape[0], rgb.shape[1], geometry, t_start_ns=0)
        chw, _ = prepare_image(rgb, geometry)
        for tile in plan.tiles:
            yield np.ascontiguousarray(chw[:, tile.y : tile.y + tile.h, tile.x : tile.x + tile.w])


def batches_of(
    images: Sequence[Path], shape: NCHW, *, pad: int, scale: int, tiles: int
) -> tuple[list[NDArray[np.float32]], int]:
    """Up to ``tiles`` tiles as NCHW batches of ``shape``, and how many tiles were
    found; a last partial batch is filled by repeating its tiles (still real pixels).

    Raises:
        ConfigError: the images give no tile at all.
    """
    n = shape[0]
    found = []
    for tile in iter_tiles(images, shape, pad=pad, scale=scale):
        found.append(tile)
        if len(found) >= tiles:
            break
    if not found:
        raise ConfigError(f"the images give no tile of {'x'.join(map(str, shape))}")
    batches = []
    for start in range(0, len(found), n):
        group = found[start : start + n]
        group += [group[k % len(group)] for k in range(n - len(group))]
        batches.append(np.stack(group))
    return batches, len(found)
