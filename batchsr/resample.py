"""Bicubic upscaling by an integer factor, as PIL's ``Image.resize(BICUBIC)`` computes it
on float ("F") images, in a fraction of its time.

The Y-only models' chroma is upscaled bicubically (``batchsr.color``), and PIL's resize
was a third of the stitch stage's CPU: it evaluates each output sample as a loop of
four products. Here each pass is a few banded matrix products (BLAS): a group of ``t``
input rows gives its ``scale * t`` output rows as one (scale*t, t+4) matrix times the
group's t + 4 input rows, every group of an image in one batched product. Four products
of the band's eight are non-zero, and BLAS still does them several times faster.

What is reproduced of PIL (``Resample.c``, ``precompute_coeffs`` and the 32-bit passes):
the Keys cubic with a = -0.5 and support 2; the taps of output sample ``i`` centred on
``(i + 0.5) / scale``; taps that fall outside the image dropped and the rest
renormalised (PIL does not extend the edges); the horizontal pass first, its sums in
float64 stored as float32; the vertical pass's sums in float64. Only the order of the
float64 sums differs, so results agree with PIL to a float32 rounding (checked in
tests/test_resample.py).

A region's upscale (``box``) is exactly that region of the whole upscale: the weights
are a function of the output sample's absolute position alone.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray

__all__ = ["bicubic_taps", "upscale_bicubic", "upscale_columns", "upscale_rows"]

F64Array = NDArray[np.float64]

_TAPS: Final = 4  # Keys cubic, support 2, upscaling: four input samples per output
# Input rows per group of the banded product. The band is (scale*t, t+4): larger groups
# waste more products on zeros, smaller ones more calls; 4 measured fastest here.
_GROUP: Final = 4


def _keys_cubic(x: F64Array) -> F64Array:
    """PIL's ``bicubic_filter`` (a = -0.5), elementwise."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def bicubic_taps(n_in: int, scale: int, out0: int, n_out: int) -> tuple[NDArray[np.intp], F64Array]:
    """The input samples and weights of output samples ``out0 .. out0 + n_out - 1`` of
    an axis of ``n_in`` samples upscaled by ``scale``.

    Returns:
        ``(first, weights)``: ``first[i]`` is the input index of output i's first tap
        (it may lie outside ``0 .. n_in - 1``), ``weights[i, k]`` the weight of input
        ``first[i] + k``: zero for an index outside the axis, the others summing to one.
    """
    return _taps_at(n_in, scale, np.arange(out0, out0 + n_out))


def _taps_at(n_in: int, scale: int, out: NDArray[np.intp]) -> tuple[NDArray[np.intp], F64Array]:
    """:func:`bicubic_taps` of the output samples ``out``."""
    q, phase = np.divmod(out, scale)
    frac = (phase + 0.5) / scale  # the centre's offset within input sample q
    # PIL's first tap is int(centre - 1.5): two samples back when the centre lies in
    # the first half of sample q, else one. Offsets from q, not absolute positions, so
    # the weights repeat exactly with the phase.
    back = np.where(frac < 0.5, 2, 1)
    first = q - back
    offset = np.arange(_TAPS) - back[:, None]  # tap index - q
    weights = _keys_cubic(offset + (0.5 - frac)[:, None])
    idx = first[:, None] + np.arange(_TAPS)
    weights[(idx < 0) | (idx >= n_in)] = 0.0
    total = weights.sum(axis=1, keepdims=True)
    # An output past the axis's end (the padding of a last group) has no taps left.
    np.divide(weights, total, out=weights, where=total > 0)
    return first.astype(np.intp), weights


def _group_bands(n_in: int, scale: int, in0: int, groups: NDArray[np.intp]) -> F64Array:
    """(len(groups), scale*t, t+4): the matrices of the given groups (see :func:`_band`)."""
    t = _GROUP
    rows = scale * t
    out = np.repeat(in0 + groups * t, rows) * scale + np.tile(np.arange(rows), len(groups))
    first, weights = _taps_at(n_in, scale, out)
    band = np.zeros((len(groups), rows, t + 4), np.float64)
    g, i = np.divmod(np.arange(len(out)), rows)
    local = first - (in0 + groups[g] * t - 2)  # up to t; the last tap at most t + 3
    for k in range(_TAPS):
        band[g, i, local + k] = weights[:, k]
    return band


@lru_cache(maxsize=8)
def _interior(scale: int) -> F64Array:
    """The matrix of every group whose taps stay inside the axis: the weights repeat
    with the phase, so only the groups at the edges differ."""
    return _group_bands(1 << 20, scale, 4, np.zeros(1, np.intp))[0]


def _band(n_in: int, scale: int, in0: int, groups: int) -> F64Array:
    """(groups, scale*t, t+4) matrices: group g's output rows from its t + 4 input rows,
    which start at input row ``in0 + g*t - 2``."""
    t = _GROUP
    band = np.empty((groups, scale * t, t + 4), np.float64)
    band[:] = _interior(scale)
    start = in0 + np.arange(groups) * t - 2
    edge = np.flatnonzero((start < 0) | (start + t + 4 > n_in))
    if edge.size:
        band[edge] = _group_bands(n_in, scale, in0, edge)
    return band


def _band_t(n_in: int, scale: int, in0: int, groups: int) -> F64Array:
    """:func:`_band` transposed, contiguous: for products from the right."""
    return np.ascontiguousarray(_band(n_in, scale, in0, groups).transpose(0, 2, 1))


def _windows(
    src: NDArray[np.floating], src0: int, n_in: int, in0: int, groups: int, axis: int
) -> F64Array:
    """The groups' t + 4 input samples along ``axis`` (1 or 2) of (C, R, W) ``src``, as a
    strided view of a float64 copy that holds zeros past the axis's ends: (C, groups,
    t + 4, W) for rows, (C, groups, R, t + 4) for columns."""
    t = _GROUP
    lo, hi = in0 - 2, in0 + groups * t + 2
    shape = list(src.shape)
    shape[axis] = hi - lo
    padded = np.zeros(shape, np.float64)
    a, b = max(lo, src0, 0), min(hi, src0 + src.shape[axis], n_in)
    into, take = [slice(None)] * 3, [slice(None)] * 3
    into[axis], take[axis] = slice(a - lo, b - lo), slice(a - src0, b - src0)
    padded[tuple(into)] = src[tuple(take)]
    s0, s1, s2 = padded.strides
    c, r, w = padded.shape
    if axis == 1:
        return as_strided(padded, (c, groups, t + 4, w), (s0, t * s1, s1, s2), writeable=False)
    return as_strided(padded, (c, groups, r, t + 4), (s0, t * s2, s1, s2), writeable=False)


def upscale_rows(
    src: NDArray[np.floating], src0: int, n_in: int, scale: int, in0: int, in1: int
) -> F64Array:
    """The vertical pass: rows ``in0*scale .. in1*scale - 1`` of the upscale along axis 1
    of (C, R, W) ``src``, which holds input rows ``src0 .. src0 + R - 1`` of an axis of
    ``n_in`` rows.

    ``src`` must hold every row the taps reach inside the axis: rows ``in0 - 2`` to
    ``in1 + 1``, clipped to ``0 .. n_in - 1``.

    Returns:
        (C, (in1 - in0) * scale, W) float64.
    """
    groups = -(-(in1 - in0) // _GROUP)
    c, _, w = src.shape
    windows = _windows(src, src0, n_in, in0, groups, axis=1)
    out = np.matmul(_band(n_in, scale, in0, groups), windows)  # (C, groups, scale*t, W)
    return out.reshape(c, -1, w)[:, : (in1 - in0) * scale]


def upscale_columns(
    src: NDArray[np.floating], src0: int, n_in: int, scale: int, in0: int, in1: int
) -> NDArray[np.float32]:
    """The horizontal pass: columns ``in0*scale .. in1*scale - 1`` of the upscale of
    every row of (C, R, W) ``src``, which holds input columns ``src0 .. src0 + W - 1``
    of an axis of ``n_in`` (with the reach :func:`upscale_rows` needs).

    Returns:
        (C, R, (in1 - in0) * scale) float32.
    """
    groups = -(-(in1 - in0) // _GROUP)
    c, r, _ = src.shape
    windows = _windows(src, src0, n_in, in0, groups, axis=2)
    # Each group's columns as a product from the right, (R, t+4) @ (t+4, scale*t),
    # written straight into row-major order: a transposing copy cost 5x the products.
    flat = np.empty((c, r, groups, scale * _GROUP), np.float64)
    np.matmul(windows, _band_t(n_in, scale, in0, groups), out=flat.transpose(0, 2, 1, 3))
    # Rounded to float32, as PIL rounds its horizontal pass.
    rounded = flat.reshape(c, r, -1).astype(np.float32)
    return rounded[:, :, : (in1 - in0) * scale]


def upscale_bicubic(
    planes: NDArray[np.floating], scale: int, box: tuple[int, int, int, int] | None = None
) -> F64Array:
    """Bicubic upscale of (C, H, W) planes by an integer ``scale``, PIL's way.

    Args:
        planes: the whole image's planes (any float dtype).
        scale: the factor, 1 or more.
        box: ``(x0, y0, x1, y1)``, the input region whose upscale is wanted (default:
            all of it); the taps read the image around it.

    Returns:
        (C, (y1-y0)*scale, (x1-x0)*scale) float64.
    """
    _, h, w = planes.shape
    x0, y0, x1, y1 = box or (0, 0, w, h)
    # The rows the vertical pass reads go through the horizontal pass first (PIL's order).
    r0, r1 = max(0, y0 - 2), min(h, y1 + 2)
    c0, c1 = max(0, x0 - 2), min(w, x1 + 2)
    across = upscale_columns(planes[:, r0:r1, c0:c1], c0, w, scale, x0, x1)
    return upscale_rows(across, r0, h, scale, y0, y1)
