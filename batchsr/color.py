"""MATLAB's BT.601 YCbCr (``rgb2ycbcr``), the colour space Y-only SR models train in.

ESPCN-PyTorch and BasicSR compute Y as MATLAB does: studio swing, Y in [16, 235] and
Cb, Cr in [16, 240] for 8-bit input. Y-only mode feeds the model this Y (scaled to
[0, 1] by /255), upscales Cb and Cr bicubically, and converts back with the exact
inverse matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np
from numpy.typing import NDArray

from batchsr.border import DEFAULT_BORDER, extend
from batchsr.native import NativeKernels, kernels
from batchsr.resample import bicubic_taps, upscale_bicubic, upscale_columns, upscale_rows
from batchsr.vocab import BorderMode

__all__ = [
    "GREY_MODES",
    "MATLAB_Y",
    "chroma_planes",
    "luma_u8",
    "merge_y",
    "rgb_planes",
    "rgb_to_ycbcr",
    "upscale_chroma",
    "upscale_image",
    "ycbcr_to_rgb",
]

# Y from R, G, B in [0, 1], in 0..255 units, plus 16 (MATLAB rgb2ycbcr, BasicSR bgr2ycbcr).
MATLAB_Y: Final = (65.481, 128.553, 24.966)
# Rows give Y, Cb, Cr from R, G, B in [0, 1], in 0..255 units (MATLAB rgb2ycbcr).
_M = np.array([MATLAB_Y, [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], dtype=np.float64)
_OFFSET = np.array([16.0, 128.0, 128.0])
_M_INV = np.linalg.inv(_M)
# ycbcr_to_rgb folded for merge_y: RGB in 0..255 units = _K64 @ (Y, Cb, Cr) in [0, 1] + _K064.
_K64 = 255.0 * _M_INV * 255.0
_K064 = -255.0 * _M_INV @ _OFFSET
assert (_K64[:, 0] == _K64[0, 0]).all(), "merge_y takes Y's weight to be one number"
_K_Y = float(_K64[0, 0])
_BAND_PIXELS = 1 << 17  # output pixels per band in merge_y (1 MiB per float64 plane)
# Output pixels per chunk of merge_y's horizontal pass (~9 MiB of planes): a whole large
# image's pass at once took 12-30 bytes per output pixel beyond the budget's estimate.
_ACROSS_PIXELS = 1 << 18


def rgb_to_ycbcr(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """HxWx3 uint8 RGB to HxWx3 float32 YCbCr in [0, 1] (value / 255)."""
    ycc = (rgb.astype(np.float64) / 255.0) @ _M.T + _OFFSET
    return (ycc / 255.0).astype(np.float32)


def rgb_planes(rgb: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """HxWx3 uint8 RGB to its Y plane (HxW) and Cb/Cr planes (2xHxW, :func:`chroma_planes`),
    float32 in [0, 1]: :func:`rgb_to_ycbcr`, planar, in one pass where the compiled
    kernel is built (its float64 sums in its own order, yet equal to it on every 8-bit
    colour: tests/test_color.py)."""
    native = kernels()
    if native is not None:
        return native.ycbcr_planes(rgb, _M, _OFFSET)
    ycc = rgb_to_ycbcr(rgb)
    return np.ascontiguousarray(ycc[:, :, 0]), chroma_planes(ycc)


def ycbcr_to_rgb(ycc: NDArray[np.float32]) -> NDArray[np.float32]:
    """HxWx3 float YCbCr in [0, 1] to HxWx3 float32 RGB in [0, 1] (unclipped)."""
    rgb = (ycc.astype(np.float64) * 255.0 - _OFFSET) @ _M_INV.T
    return rgb.astype(np.float32)


def chroma_planes(ycc: NDArray[np.float32]) -> NDArray[np.float32]:
    """The Cb and Cr planes of HxWx3 YCbCr as one contiguous 2xHxW array (the form
    :func:`merge_y` and :func:`upscale_chroma` read without copying)."""
    return np.ascontiguousarray(ycc.transpose(2, 0, 1)[1:])


def upscale_chroma(
    cbcr: NDArray[np.float32], scale: int, box: tuple[int, int, int, int] | None = None
) -> NDArray[np.float32]:
    """Bicubic upscale of Cb and Cr planes (2xHxW) -> 2x(H*s)x(W*s), as PIL's
    ``resize(BICUBIC)`` of float planes gives it (``batchsr.resample``).

    ``box=(x0, y0, x1, y1)`` upscales only that region of the input, giving exactly that
    region of the whole upscale: the filter reads its support from around the box.
    """
    return upscale_bicubic(cbcr, scale, box).astype(np.float32)


def _chroma_terms(cbcr: NDArray[np.float32]) -> NDArray[np.float64]:
    """(3, h, w) float64: each of R, G and B less its Y term, from Cb and Cr, plus 0.5.

    The bicubic upscale is linear and keeps constants, so it can be taken of these
    three low-resolution planes instead of the two chroma planes: the full-resolution
    work is then one sum per channel. The 0.5 makes truncation round to nearest.
    """
    terms = np.empty((3, *cbcr.shape[1:]), np.float64)
    for c in range(3):
        np.multiply(cbcr[0], _K64[c, 1], out=terms[c])
        terms[c] += cbcr[1] * _K64[c, 2]
        terms[c] += _K064[c] + 0.5
    return terms


def merge_y(
    y: NDArray[np.float32],
    cbcr: NDArray[np.float32],
    scale: int,
    origin: tuple[int, int] = (0, 0),
    out: NDArray[np.uint8] | None = None,
) -> NDArray[np.uint8]:
    """An SR Y region and the input's Cb/Cr planes to RGB uint8.

    Args:
        y: (h*s)x(w*s) float32 SR Y in [0, 1], for the input region of h x w pixels
            whose top-left corner is ``origin`` (row, column).
        cbcr: 2xHxW float32 Cb and Cr of the whole input (:func:`chroma_planes`).
        scale: the upscale factor s.
        out: where to write the result, (h*s)x(w*s)x3 uint8 with whole rows of pixels
            contiguous (a region of a larger canvas will do); a new array if None.

    Returns:
        (h*s)x(w*s)x3 uint8: the colours of ``ycbcr_to_rgb`` with Cb and Cr upscaled
        bicubically (as :func:`upscale_chroma`), clipped and rounded (half up). The
        pipeline merges every SR tile core this way as it arrives; a region's merge is
        that region of the whole image's, bit for bit.
    """
    hs, ws = y.shape
    if out is None:
        out = np.empty((hs, ws, 3), np.uint8)
    elif out.shape != (hs, ws, 3) or out.dtype != np.uint8 or out.strides[1:] != (3, 1):
        raise ValueError(f"merge_y writes (h, w, 3) uint8 rows of pixels, not {out.shape}")
    native = kernels()
    if native is not None and y.size:
        return _merge_native(native, y, cbcr, scale, origin, out)
    oy, ox = origin
    h, w = hs // scale, ws // scale
    big_h, big_w = cbcr.shape[1:]
    # The low-resolution rows and columns the bicubic taps reach (2 each way).
    r0, r1 = max(0, oy - 2), min(big_h, oy + h + 2)
    c0, c1 = max(0, ox - 2), min(big_w, ox + w + 2)
    # Bands of rows keep the float64 planes of the vertical pass in cache; chunks of
    # bands bound the horizontal pass's planes (each chunk also reads the 2 rows each
    # side its vertical taps reach, so chunks give the region's result bit for bit).
    band = max(4, _BAND_PIXELS // max(ws * scale, 1) // 4 * 4)  # input rows per band
    chunk = max(1, _ACROSS_PIXELS // max(ws * band, 1)) * band  # input rows per chunk
    yk = np.empty((min(h, band) * scale, ws), np.float64)
    for k0 in range(0, h, chunk):
        k1 = min(h, k0 + chunk)
        lo, hi = max(r0, oy + k0 - 2), min(r1, oy + k1 + 2)
        terms = _chroma_terms(cbcr[:, lo:hi, c0:c1])
        across = upscale_columns(terms, c0, big_w, scale, ox, ox + w)
        for b0 in range(k0, k1, band):
            b1 = min(k1, b0 + band)
            rows = slice(b0 * scale, b1 * scale)
            planes = upscale_rows(across, lo, big_h, scale, oy + b0, oy + b1)
            # Y weighs the same in R, G and B (the rows of _K64 agree): one product.
            ys = np.multiply(y[rows], _K_Y, out=yk[: (b1 - b0) * scale])
            for c in range(3):
                plane = planes[c]
                plane += ys
                np.clip(plane, 0.0, 255.0, out=plane)
                # Truncation rounds: the terms carry the 0.5.
                np.copyto(out[rows, :, c], plane, casting="unsafe")
        del terms, across, planes  # before the next chunk's, not beside them
    return out


# csrc/color.c's weights: per channel (R, G, B) those of Y, Cb and Cr, then the offsets
# with the 0.5 that makes truncation round.
_K_NATIVE: Final = np.concatenate([_K64.ravel(), _K064 + 0.5])


def _taps_clamped(
    n_in: int, scale: int, out0: int, n_out: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Each output sample's 4 input indices (clamped into the axis: the taps outside it
    weigh 0) and weights, as the bicubic upscale of ``batchsr.resample`` has them."""
    first, weights = bicubic_taps(n_in, scale, out0, n_out)
    idx = np.clip(first[:, None] + np.arange(4), 0, n_in - 1).astype(np.int64)
    return idx, weights


def _merge_native(
    native: NativeKernels,
    y: NDArray[np.float32],
    cbcr: NDArray[np.float32],
    scale: int,
    origin: tuple[int, int],
    out: NDArray[np.uint8],
) -> NDArray[np.uint8]:
    """:func:`merge_y` by the compiled kernel (csrc/color.c), one pass over the rows."""
    hs, ws = y.shape
    oy, ox = origin
    big_h, big_w = cbcr.shape[1:]
    rows = _taps_clamped(big_h, scale, oy * scale, hs)
    col_idx, col_w = _taps_clamped(big_w, scale, ox * scale, ws)
    c0 = max(0, ox - 2)  # the first input column the taps reach
    return native.merge_y(y, cbcr, rows, (col_idx - c0, col_w), c0, _K_NATIVE, out)


def upscale_image(
    run: Callable[[NDArray[np.float32]], NDArray[np.float32]],
    rgb: NDArray[np.uint8],
    *,
    channels: int,
    border: int = 0,
    border_mode: BorderMode = DEFAULT_BORDER,
) -> NDArray[np.uint8]:
    """Upscale a whole HxWx3 uint8 RGB image with a model, coloured as the pipeline does.

    Args:
        run: the model: a float32 NCHW batch in [0, 1] to its SR batch.
        rgb: the image.
        channels: the model's input channels: 3 takes RGB; 1 takes MATLAB's Y and the
            image's Cb and Cr are upscaled bicubically (:func:`merge_y`).
        border: input pixels the model's input is extended by on every side (as
            ``border_mode`` says, see ``batchsr.border``) and cropped off its output;
            the pipeline uses the model's margin, 0 leaves the network's zero padding.

    Returns:
        The SR image, HxWx3 uint8, clipped and rounded to nearest.
    """
    pads = ((border, border), (border, border))
    if channels == 1:
        luma, chroma = rgb_planes(rgb)
        y_plane = extend(luma[None], pads, border_mode)
        y = run(y_plane[None])[0, 0]
        scale = y.shape[0] // y_plane.shape[1]
        c = border * scale
        y = y[c : y.shape[0] - c, c : y.shape[1] - c]
        return merge_y(np.ascontiguousarray(y), chroma, scale)
    x = extend((rgb.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1), pads, border_mode)
    sr = run(np.ascontiguousarray(x[None]))[0]
    c = border * (sr.shape[1] // x.shape[1])
    sr = sr[:, c : sr.shape[1] - c, c : sr.shape[2] - c].transpose(1, 2, 0)
    return np.rint(np.clip(sr, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)


# PIL modes of grey images (1-bit, 8-bit with or without alpha, 16/32-bit integer, float):
# their outputs are written grey, one channel, unless RGB is asked for.
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def luma_u8(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """HxW uint8 luma of HxWx3 RGB with PIL's ``convert("L")`` weights (ITU-R 601-2),
    for writing a grey input's output grey."""
    y = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)
