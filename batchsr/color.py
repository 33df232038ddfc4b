"""MATLAB's BT.601 YCbCr (``rgb2ycbcr``), the colour space Y-only SR models train in.

ESPCN-PyTorch and BasicSR compute Y as MATLAB does: studio swing, Y in [16, 235] and
Cb, Cr in [16, 240] for 8-bit input. Y-only mode feeds the model this Y (scaled to
[0, 1] by /255), upscales Cb and Cr bicubically, and converts back with the exact
inverse matrix.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

__all__ = ["rgb_to_ycbcr", "upscale_chroma", "ycbcr_to_rgb"]

# Rows give Y, Cb, Cr from R, G, B in [0, 1], in 0..255 units (MATLAB rgb2ycbcr).
_M = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]],
    dtype=np.float64,
)
_OFFSET = np.array([16.0, 128.0, 128.0])
_M_INV = np.linalg.inv(_M)


def rgb_to_ycbcr(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """HxWx3 uint8 RGB to HxWx3 float32 YCbCr in [0, 1] (value / 255)."""
    ycc = (rgb.astype(np.float64) / 255.0) @ _M.T + _OFFSET
    return (ycc / 255.0).astype(np.float32)


def ycbcr_to_rgb(ycc: NDArray[np.float32]) -> NDArray[np.float32]:
    """HxWx3 float YCbCr in [0, 1] to HxWx3 float32 RGB in [0, 1] (unclipped)."""
    rgb = (ycc.astype(np.float64) * 255.0 - _OFFSET) @ _M_INV.T
    return rgb.astype(np.float32)


def upscale_chroma(ycc: NDArray[np.float32], scale: int) -> NDArray[np.float32]:
    """Bicubic upscale of the Cb and Cr planes: HxWx3 YCbCr -> (H*s)x(W*s)x2."""
    h, w = ycc.shape[:2]
    planes = [
        np.asarray(
            Image.fromarray(ycc[:, :, c]).resize((w * scale, h * scale), Image.Resampling.BICUBIC)
        )
        for c in (1, 2)
    ]
    return np.stack(planes, axis=2).astype(np.float32)
