"""Measures of the artifacts a user sees in an upscaled image, each a number a test can bound.

- :func:`border_energy_ratio`: a bright/dark frame along the image edges (what zero
  padding at the border gives). High-frequency energy of the outer band over the band
  just inside it; a clean image is near 1.
- :func:`lattice_ratio`: a periodic grain at the pixel-shuffle period. Power at 1/period
  and 1/2 cycles per pixel, on both axes, over the median power of the neighbouring
  frequencies; a clean smooth region is near 1.
- :func:`seam_jump`: tile seams. How much more a tiled output changes across its worst
  column or row boundary than the whole-image output does there.

All work on the luma of uint8 images (HxW or HxWxC), the pixels a user looks at.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "border_energy_ratio",
    "flat_boxes",
    "lattice_ratio",
    "luma",
    "seam_jump",
    "textured_boxes",
]

_BT601 = np.array([0.299, 0.587, 0.114])


def luma(img: NDArray[np.uint8]) -> NDArray[np.float64]:
    """BT.601 luma in 0..255 of an HxW or HxWxC (RGB) uint8 image."""
    if img.ndim == 2:
        return img.astype(np.float64)
    return img[..., :3].astype(np.float64) @ _BT601


def _laplacian_sq(y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Squared 4-neighbour Laplacian at the interior pixels ((H-2)x(W-2)): a pixel on the
    image edge has no outer neighbour, so it is left out rather than padded."""
    lap = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return lap * lap


def border_energy_ratio(img: NDArray[np.uint8], band: int = 8) -> float:
    """Mean high-frequency energy of the ``band`` pixels along all four edges over that
    of the next ``band`` pixels inward.

    Energy is the squared Laplacian of luma. An image whose border was computed without
    context (zero padding) reads well above 1; photos without such a frame read near 1.
    """
    e = _laplacian_sq(luma(img))
    h, w = e.shape
    if min(h, w) < 4 * band:
        raise ValueError(f"image {img.shape[:2]} too small for two bands of {band} px per side")

    def ring(outer: int, inner: int) -> float:
        """Mean over the frame between ``outer`` and ``inner`` pixels from the edges."""
        mask = np.zeros_like(e, dtype=bool)
        mask[outer : h - outer, outer : w - outer] = True
        mask[inner : h - inner, inner : w - inner] = False
        return float(e[mask].mean())

    inner = ring(band, 2 * band)
    return ring(0, band) / inner if inner > 0 else float("inf")


def _axis_power(y: NDArray[np.float64], axis: int) -> NDArray[np.float64]:
    """Power against frequency along ``axis``, summed over the other axis (which sums the
    2-D spectrum over it, so diagonal lattices count too). Each line loses its mean and
    linear trend and is Hann-windowed, so a smooth gradient leaks no power upward."""
    lines = np.moveaxis(y, axis, -1)
    n = lines.shape[-1]
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2
    slope = (lines @ t) / float(t @ t)
    detrended = lines - lines.mean(axis=-1, keepdims=True) - slope[..., None] * t
    spectrum = np.fft.rfft(detrended * np.hanning(n), axis=-1)
    power: NDArray[np.float64] = (np.abs(spectrum) ** 2).reshape(-1, spectrum.shape[-1]).sum(0)
    return power


def lattice_ratio(img: NDArray[np.uint8], period: int = 4) -> float:
    """The strongest of the powers at 1/``period`` and 1/2 cycles per pixel, on either
    axis, over the median power of the frequencies around it.

    Meant for smooth content (a gradient, flat sky): there the neighbouring frequencies
    hold only noise (at least 8-bit rounding noise), so a periodic grain at the period
    stands out as a ratio well above 1. Textured content has power everywhere and says
    little. The image is cropped to a multiple of ``2 * period`` per axis so both
    frequencies fall on exact bins. Takes uint8 images or float planes in grey levels
    (a model's output before rounding: rounding itself leaves a faint period-4 trace
    wherever the output interpolates 8-bit input).
    """
    y = luma(img)
    step = 2 * period
    h, w = (y.shape[0] // step) * step, (y.shape[1] // step) * step
    if min(h, w) < 8 * period:
        raise ValueError(f"image {img.shape[:2]} too small to resolve period {period}")
    y = y[:h, :w]
    worst = 0.0
    for axis, n in ((0, h), (1, w)):
        power = _axis_power(y, axis)
        # 8-bit rounding alone leaves white noise of variance 1/12 per pixel: a region
        # flatter than that (a constant sky) compares against this floor, not zero.
        rounding = (1.0 / 12.0) * float(np.sum(np.hanning(n) ** 2)) * (y.size // n)
        half = max(3, n // 32)
        for k in sorted({n // period, n // 2}):
            # The bins next to k share its window leakage (Hann: 2 bins), so skip them.
            neighbours = [
                j for j in range(k - half, k + half + 1) if abs(j - k) > 1 and 0 < j <= n // 2
            ]
            floor = max(float(np.median(power[neighbours])), rounding)
            worst = max(worst, float(power[k]) / floor)
    return worst


def _box_spread(img: NDArray[np.uint8], size: int) -> list[tuple[float, int, int]]:
    """(luma standard deviation after removing a plane, top, left) of every whole
    non-overlapping ``size`` x ``size`` box of ``img``."""
    y = luma(img)
    h, w = y.shape
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    basis = np.stack([np.ones(size * size), yy.ravel(), xx.ravel()], axis=1)
    boxes = []
    for y0 in range(0, h - size + 1, size):
        for x0 in range(0, w - size + 1, size):
            block = y[y0 : y0 + size, x0 : x0 + size].ravel()
            coef, *_ = np.linalg.lstsq(basis, block, rcond=None)
            boxes.append((float(np.std(block - basis @ coef)), y0, x0))
    return boxes


def flat_boxes(
    img: NDArray[np.uint8], size: int, *, max_std: float = 2.0, limit: int = 8
) -> list[tuple[int, int]]:
    """Top-left corners of up to ``limit`` non-overlapping ``size`` x ``size`` boxes of
    ``img`` whose luma varies least (standard deviation after removing a plane, at most
    ``max_std`` grey levels): where flat regions of a photo are, e.g. sky."""
    found = sorted(b for b in _box_spread(img, size) if b[0] <= max_std)
    return [(y0, x0) for _, y0, x0 in found[:limit]]


def textured_boxes(
    img: NDArray[np.uint8], size: int, *, min_std: float = 12.0, limit: int = 8
) -> list[tuple[int, int]]:
    """Top-left corners of up to ``limit`` boxes (as :func:`flat_boxes`) whose luma
    varies most, at least ``min_std`` grey levels: texture (foliage, fur, wood grain),
    where a pixel-shuffle network's grain shows although flat regions are clean."""
    found = sorted((b for b in _box_spread(img, size) if b[0] >= min_std), reverse=True)
    return [(y0, x0) for _, y0, x0 in found[:limit]]


def seam_jump(tiled: NDArray[np.uint8], reference: NDArray[np.uint8]) -> float:
    """The worst seam line: the largest mean absolute excess step of ``tiled`` over
    ``reference`` along one whole column or row boundary, in grey levels.

    The step between columns ``c - 1`` and ``c`` is compared between the two images
    (``|step(tiled) - step(reference)|``) and averaged down the column; likewise rows.
    A tiling seam is a line of such excess steps; spread differences (a blend ramp)
    add little to any one line. 0 when ``tiled`` changes wherever and as much as the
    whole-image ``reference`` does.
    """
    a, b = luma(tiled), luma(reference)
    if a.shape != b.shape:
        raise ValueError(f"tiled {a.shape} and reference {b.shape} differ in size")
    by_col = np.abs(np.diff(a, axis=1) - np.diff(b, axis=1)).mean(axis=0)
    by_row = np.abs(np.diff(a, axis=0) - np.diff(b, axis=0)).mean(axis=1)
    return float(max(by_col.max(initial=0.0), by_row.max(initial=0.0)))
