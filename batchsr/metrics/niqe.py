"""NIQE exactly as the CCF BDCI 2023 contest scored it, fast and without torch or SciPy.

The contest ranked by BasicSR 1.4.2's ``calculate_niqe(img_bgr, 0, input_order='HWC',
convert_to='y')``. This module is an independent implementation of that definition (the
official code is not copied here; ``benchmarks/niqe_bench.py`` fetches it to compare).
It reproduces the official floating-point steps where they change the score:

* Y channel (BasicSR ``to_y_channel`` + ``round``): a float64 dot of ``float32(bgr) / 255``
  with MATLAB's BT.601 weights, stored as float32, times 255, rounded half to even.
* MSCN (BasicSR ``niqe``): ``scipy.ndimage.convolve(mode='nearest')`` sums in float64 and
  stores float32; variance, square root and division are float32.
* Second scale (BasicSR ``imresize(img / 255, 0.5)``): bicubic, antialiased, in float32 in
  the summation order torch's CPU ``mv`` (MKL) uses, height pass first.
* AGGD fits (BasicSR ``estimate_aggd_param``): float32 means, the shape looked up on the
  grid ``np.arange(0.2, 10.001, 0.001)`` by least squared distance, first index on ties,
  index 0 when a block has no negative or no positive coefficient (NaN statistic).
* Distance: NaN-aware mean of the block features, covariance of the complete rows,
  ``np.linalg.pinv`` of the averaged covariance.

Where the official code spends its time (a Python loop over blocks whose 5 fits per
block each rebuild the gamma tables: ~70% of its 1.7 s on a 2040x1632 image; then the
7x7 convolutions, the colour conversion and the torch resize), this one fits every block
of a scale at once from whole-array sums with tables built once per process, refitting
one by one only the ~1% of fits whose grid cell hinges on the last float32 bits; runs the
7x7 Gaussian as two banded float64 matrix products (BLAS); takes Y from a float32
estimate, redoing the official arithmetic only near rounding ties; and resizes with a
few float32 operations per strip of rows. Large arrays are processed in cache-sized
strips or chunks; besides the few refits, no Python loop runs over individual blocks.

Where batchsr's C kernels were built (``batchsr.native``, ``csrc/niqe.c``), the MSCN
filter, the second scale's resize, the fit sums and Y run there instead, one pass each with
the same bits (about 3x faster in all); the numpy functions here remain the definition
and the path of a machine without a C compiler.
"""

from __future__ import annotations

import math
from functools import cache
from importlib import resources
from typing import Final

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray

from batchsr.errors import NIQEError
from batchsr.native import kernels

__all__ = ["BLOCK_SIZE", "NIQE_FEATURES", "block_features", "niqe", "y_channel"]

BLOCK_SIZE: Final = 96
"""Side of the square blocks NIQE fits (the official recommended value, no overlap)."""

NIQE_FEATURES: Final = 36
"""Features per block: 18 per scale, two scales."""

_F32: Final = np.float32
_F64: Final = np.float64
F32Array = NDArray[np.float32]
F64Array = NDArray[np.float64]

# MATLAB's BT.601 luma weights in BasicSR's BGR order (``bgr2ycbcr(y_only=True)``).
_Y_WEIGHTS_BGR: Final = (24.966, 128.553, 65.481)

# BasicSR ``imresize(scale=0.5, antialiasing=True)`` kernel: the cubic kernel stretched by
# 2 and sampled at the 8 input pixels with non-zero weight. All taps are k / 256, so the
# float32 weights torch computes are exact.
_HALF_TAPS: Final = tuple(_F32(k / 256.0) for k in (-3, -9, 29, 111, 111, 29, -9, -3))

# Image rows per strip of the MSCN computation (a divisor of both block sizes): the
# float64 temporaries of a strip (~2.5 MB) stay in cache.
_MSCN_ROWS: Final = 24

# Rows per tile of the vertical product and columns per tile of the horizontal one. The
# band matrices hold tile + 6 taps per output, so small tiles waste fewest products;
# 4 and 8 were the fastest shapes for OpenBLAS here (tv = 4 divides 24 and both block
# sizes; th = 8 divides both block sizes, so tiles never straddle the image edge).
_TILE_V: Final = 4
_TILE_H: Final = 8

# Neighbour offsets of BasicSR ``compute_feature``: np.roll(block, shift, axis=(0, 1)).
_SHIFTS: Final = ((0, 1), (1, 0), (1, 1), (1, -1))

# A fit whose float32 statistic r lies within _RISK_ULPS * eps32 * r of a grid midpoint
# is refitted with the official float32 arithmetic (``_refit_exact``): ~1% of the fits.
# The vectorised statistic differs from the official one by at most 3.9 * eps32 * r over
# the ~18,000 fits of the test images, so the margin has a factor of 1.5 to spare.
_RISK_ULPS: Final = 6.0
_EPS32: Final = float(np.finfo(np.float32).eps)

# Images of at most this many blocks have every fit done the official way: the covariance
# of so few blocks is poorly conditioned and magnifies the last-bit differences of the
# vectorised standard deviations (1e-7) up to ~3e-5 in the score; the cost is small.
_EXACT_BLOCKS: Final = 24


class _Tables:
    """Per-process constants: the pristine model, filter taps, the AGGD shape grid."""

    def __init__(self) -> None:
        with resources.files(__package__).joinpath("niqe_pris_params.npz").open("rb") as f:
            params = np.load(f)
            self.mu_pris: F64Array = params["mu_pris_param"]  # (1, 36)
            self.cov_pris: F64Array = params["cov_pris_param"]  # (36, 36)
            window: F64Array = params["gaussian_window"]  # (7, 7)
        # The 7x7 window is an outer product g g^T (to 3e-17), so the 2-D filter is two
        # 1-D passes; the float32 results cannot tell the difference.
        g = window[3] / math.sqrt(window[3, 3])
        self.taps: F64Array = np.ascontiguousarray(g)
        self.half_taps: F32Array = np.array(_HALF_TAPS, dtype=_F32)  # for the C resize
        self.band_v: F64Array = _band(g, _TILE_V)  # (T, T + 6): rows of a tile from T + 6
        # Horizontal: a tile's 8 outputs take 8 inputs from its own columns (head) and 6
        # from the next tile's (tail), two products over all tiles of a strip at once.
        band_h_t = _band(g, _TILE_H).T  # (T + 6, T)
        self.band_h_head: F64Array = np.ascontiguousarray(band_h_t[:_TILE_H])
        self.band_h_tail: F64Array = np.ascontiguousarray(band_h_t[_TILE_H:])
        # BasicSR ``estimate_aggd_param``: gam = np.arange(0.2, 10.001, 0.001) and
        # r(gam) = G(2/gam)^2 / (G(1/gam) G(3/gam)), strictly increasing on the grid.
        gam = np.arange(0.2, 10.001, 0.001)
        inv = np.reciprocal(gam)
        gamma = np.vectorize(math.gamma, otypes=[_F64])
        g1, g2, g3 = gamma(inv), gamma(2.0 * inv), gamma(3.0 * inv)
        self.gam: F64Array = gam
        self.r_gam: F64Array = np.square(g2) / (g1 * g3)
        # Midpoints between neighbouring grid values: where the nearest entry changes.
        self.r_mid: F64Array = (self.r_gam[1:] + self.r_gam[:-1]) / 2
        # Per grid point: sqrt(G(1/a) / G(3/a)) (std -> beta) and G(2/a) / G(1/a) (Eq. 8).
        self.beta_of_std: F64Array = np.sqrt(g1 / g3)
        self.mean_factor: F64Array = g2 / g1
        # float32(v / 255) times each BGR weight, in float64 (the products np.dot forms);
        # blue and green summed for every (blue, green) pair, indexed green + 256 * blue.
        v255 = (np.arange(256, dtype=_F32) / _F32(255.0)).astype(_F64)
        lut_b, lut_g, lut_r = (v255 * w for w in _Y_WEIGHTS_BGR)
        self.y_lut_bg: F64Array = (lut_b[:, None] + lut_g[None, :]).ravel()
        self.y_lut_r: F64Array = lut_r


def _band(g: F64Array, t: int) -> F64Array:
    """(t, t + 6) matrix applying the 7-tap filter ``g`` to t + 6 samples, giving t."""
    band = np.zeros((t, t + 6), dtype=_F64)
    for i in range(t):
        band[i, i : i + 7] = g
    return band


@cache
def _tables() -> _Tables:
    return _Tables()


def _y_of_colours(red: NDArray[np.uint8], green_blue: NDArray[np.uint16]) -> F32Array:
    """Official Y of colours given as red and (green + 256 * blue), by the definition.

    BasicSR ``bgr2ycbcr(y_only=True)`` on ``float32(bgr) / 255``: the float64 dot with the
    BGR weights (blue, green, red summed in that order, as ``np.dot`` does here: checked
    on all 2**24 colours against the official code), plus 16, over 255, stored float32,
    times 255 in float32, then ``round`` (half to even).
    """
    t = _tables()
    s = t.y_lut_bg[green_blue]
    s += t.y_lut_r[red]
    s += 16.0
    s /= 255.0
    y = s.astype(_F32)
    y *= _F32(255.0)
    return np.rint(y, out=y)


# Luma weights for the fast float32 estimate of Y (MATLAB's, over 255, RGB order).
_Y_EST_WEIGHTS: Final = tuple(_F32(w / 255.0) for w in reversed(_Y_WEIGHTS_BGR))

# Pixels whose float32 estimate of Y lies this close to a half-integer are recomputed by
# the definition. The estimate and the official float path are both within 1e-4 of the
# exact value, so elsewhere both round the same way.
_Y_TIE_MARGIN: Final = _F32(1e-3)

# Image rows per strip of the Y computation: the strip's temporaries stay in cache.
_Y_ROWS: Final = 128


def _y_cropped(rgb: NDArray[np.uint8], h: int, w: int) -> F32Array:
    """Official Y of the top-left h x w of an (H, W, 3) uint8 RGB image.

    A float32 estimate ``16 + (65.481 R + 128.553 G + 24.966 B) / 255`` rounded to the
    nearest integer is the official value except near half-integers, where the official
    float32 roundings decide; the ~0.2% of pixels within ``_Y_TIE_MARGIN`` of one are
    recomputed with ``_y_of_colours``. Checked against the definition on all 2**24
    colours (tests/test_niqe.py). The compiled kernel, where built, computes the
    definition for every pixel instead.
    """
    native = kernels()
    if native is not None:
        return native.y(rgb[:h, :w])
    weights = np.array(_Y_EST_WEIGHTS, dtype=_F32)
    out = np.empty((h, w), dtype=_F32)
    rows = min(_Y_ROWS, h)
    est = np.empty((rows, w), dtype=_F32)
    for top in range(0, h, rows):
        n = min(rows, h - top)
        px = rgb[top : top + n, :w]
        e, y = est[:n], out[top : top + n]
        np.matmul(px.astype(_F32), weights, out=e)
        e += _F32(16.0)
        np.rint(e, out=y)
        e -= y
        np.abs(e, out=e)
        near = np.flatnonzero(e.reshape(-1) > _F32(0.5) - _Y_TIE_MARGIN)
        if near.size:
            r, c = np.divmod(near, w)
            p = px[r, c].astype(np.uint16)
            y[r, c] = _y_of_colours(p[:, 0].astype(np.uint8), p[:, 1] + 256 * p[:, 2])
    return out


def y_channel(rgb: NDArray[np.uint8]) -> F32Array:
    """MATLAB-style Y (16..235) of an RGB image, rounded as the official scorer rounds.

    Reproduces BasicSR ``to_y_channel`` on the BGR image followed by ``img.round()``;
    see ``_y_of_colours``.

    Args:
        rgb: (H, W, 3) uint8 RGB image.

    Returns:
        (H, W) float32 array of integers in [16, 235].
    """
    _check_rgb(rgb)
    h, w = rgb.shape[:2]
    return _y_cropped(rgb, h, w)


def _mscn_blocks(img: F32Array, bs: int) -> F32Array:
    """MSCN coefficients of an image in blocks: the compiled kernel, else numpy's."""
    native = kernels()
    if native is None:
        return _mscn_blocks_numpy(img, bs)
    return native.mscn(img, bs, _tables().taps)


def _mscn_blocks_numpy(img: F32Array, bs: int) -> F32Array:
    """MSCN coefficients (Eq. 1 of the paper) of an image, cut into ``bs`` x ``bs`` blocks.

    BasicSR ``niqe``: ``mu = convolve(img, window, mode='nearest')``, the same of
    ``np.square(img)`` (squared in float32), then ``(img - mu) / (sqrt(|mu_sq - mu^2|)
    + 1)`` in float32. SciPy sums the 7x7 window in float64 and stores float32; here the
    window's two 1-D passes are banded matrix products (BLAS) in float64 with edge rows
    and columns replicated, rounded to float32 once, so the results agree bit for bit
    (up to float64 rounding, which float32 cannot see).

    The image is processed in strips of ``_MSCN_ROWS`` rows (with 3 rows of context above
    and below, carried over from the previous strip), so every temporary stays in cache.
    The vertical pass is one batched product per strip; the horizontal pass treats each
    padded row as tiles of 8 columns, so that it is two plain products over all tiles
    (a tile's own columns, and the first 6 of the next tile) and one contiguous sum.

    Args:
        img: (nh * bs, nw * bs) float32 image in [0, 255].
        bs: block side (96 at the first scale, 48 at the second).

    Returns:
        (nw * nh, bs * bs) float32: each row one block, flattened row by row, blocks in
        BasicSR's order (block column outer, block row inner).
    """
    t = _tables()
    h, w = img.shape
    nh, nw, tv, th = h // bs, w // bs, _TILE_V, _TILE_H
    out = np.empty((nw, nh, bs, bs), dtype=_F32)
    rs = min(bs, _MSCN_ROWS)  # rows per strip: a divisor of bs, a multiple of tv
    rw = w + th  # padded row: 3 replicated columns left, 5 right; whole tiles
    nt = rw // th  # tiles per padded row, the last one only read as a tail
    pad = np.empty((2, rs + 6, rw), dtype=_F64)  # image and its square
    s0, s1, s2 = pad.strides
    rows = as_strided(pad, (2, rs // tv, tv + 6, rw), (s0, tv * s1, s1, s2), writeable=False)
    vert = np.empty((2, rs // tv, tv, rw), dtype=_F64)
    tiles = vert.reshape(2, rs * nt, th)
    heads = np.empty((2, rs * nt, th), dtype=_F64)
    tails = np.empty((2, rs * nt - 1, th), dtype=_F64)
    filtered = heads.reshape(2, rs, nt, th)[:, :, : nt - 1]  # (2, rs, w / th, th)
    mu2 = np.empty((2, rs, w), dtype=_F32)
    square = np.empty((rs + 6, w), dtype=_F32)

    def fill(first: int, src: F32Array) -> None:
        # Rows first.. of the strip buffer from image rows, squared in float32 as SciPy's
        # input is, both widened to float64 with the edge columns replicated.
        dst = slice(first, first + len(src))
        pad[0, dst, 3 : w + 3] = src
        pad[1, dst, 3 : w + 3] = np.square(src, out=square[: len(src)])
        pad[:, dst, :3] = pad[:, dst, 3:4]
        pad[:, dst, w + 3 :] = pad[:, dst, w + 2 : w + 3]

    fill(0, img[np.clip(np.arange(-3, rs + 3), 0, h - 1)])
    for top in range(0, h, rs):
        if top:
            # The strip's first 6 rows are the previous strip's last 6.
            pad[:, :6] = pad[:, rs : rs + 6]
            lo, hi = top + 3, top + rs + 3
            fill(6, img[lo:hi] if hi <= h else img[np.clip(np.arange(lo, hi), 0, h - 1)])
        np.matmul(t.band_v, rows, out=vert)
        np.matmul(tiles[:, :-1], t.band_h_head, out=heads[:, :-1])
        np.matmul(tiles[:, 1:, :6], t.band_h_tail, out=tails)
        np.add(heads[:, :-1], tails, out=heads[:, :-1])
        np.copyto(mu2.reshape(2, rs, nt - 1, th), filtered, casting="same_kind")
        mu, mu_sq = mu2  # (rs, W) each: rows top .. top + rs - 1
        var = np.subtract(mu_sq, np.square(mu, out=square[:rs]), out=mu_sq)
        sigma = np.sqrt(np.abs(var, out=var), out=var)
        sigma += _F32(1.0)
        num = np.subtract(img[top : top + rs], mu, out=mu)
        # Divide straight into the block layout (block column, row in block, column).
        bh, r0 = divmod(top, bs)
        np.divide(
            num.reshape(rs, nw, bs).transpose(1, 0, 2),
            sigma.reshape(rs, nw, bs).transpose(1, 0, 2),
            out=out[:, bh, r0 : r0 + rs],
        )
    return out.reshape(nw * nh, bs * bs)


def _reflect(idx: NDArray[np.intp], n: int) -> NDArray[np.intp]:
    """Indices into a length-n axis with symmetric padding (edge sample repeated)."""
    idx = np.where(idx < 0, -idx - 1, idx)
    return np.where(idx >= n, 2 * n - 1 - idx, idx)


# Output rows per strip of the resize's column pass, and per sub-strip of its row pass:
# each pass's operands (~0.5 MB) stay in the 1 MB L2 cache of the machine measured.
_RESIZE_ROWS: Final = 128
_RESIZE_SUBROWS: Final = 16

# Column pass: output column 2m + s takes tap k from image column 4m + offset + k, offset
# -3 for even (s = 0) and -1 for odd output columns. With the row pass's output split by
# column phase (column 4m + j in phase j at padded index m + 1), tap k reads phase
# (offset + k) % 4 from padded index m + (offset + k) // 4 + 1: (phase, first index).
_EVEN_TAPS: Final = tuple(((k - 3) % 4, (k - 3) // 4 + 1) for k in range(8))
_ODD_TAPS: Final = tuple(((k - 1) % 4, (k - 1) // 4 + 1) for k in range(8))


def _imresize_half(img: F32Array) -> F32Array:
    """MATLAB ``imresize(img, 0.5)`` (bicubic, antialiased) exactly as BasicSR computes it.

    BasicSR's torch ``imresize`` pads 3 pixels symmetrically, then forms each output as
    a float32 ``mv`` of 8 inputs with the weights ``_HALF_TAPS``; rows first, rounded to
    float32, then columns. The products are rounded to float32 and summed in the order
    torch's CPU ``mv`` (MKL) sums them, which was determined by probing: for the row pass
    left to right; for the column pass, whose rows start at alternating alignment, two
    orders for even and odd output columns. The result is bit-identical.

    The row pass's last addition writes its sums split by column phase (column mod 4),
    so that every product of the column pass reads a contiguous row: the split costs one
    strided write of the half-height array instead of a gather and a transposing copy.

    Args:
        img: (H, W) float32 with H and W multiples of 4.

    Returns:
        (H / 2, W / 2) float32.
    """
    taps = _HALF_TAPS
    h, w = img.shape
    h2, q = h // 2, w // 4
    out = np.empty((h2, 2 * q), dtype=_F32)
    nc = min(_RESIZE_ROWS, h2)
    nr = min(_RESIZE_SUBROWS, nc)
    # Row pass sums by phase, one padded column each side for the symmetric edge.
    phases = np.empty((4, nc, q + 2), dtype=_F32)
    acc = np.empty((nr, w), dtype=_F32)
    prod = np.empty((nr, w), dtype=_F32)
    col_prod = np.empty((2, nc, q), dtype=_F32)
    col_sum = np.empty((2, nc, q), dtype=_F32)
    for i0 in range(0, h2, nc):
        n = min(nc, h2 - i0)
        for r0 in range(0, n, nr):
            m = min(nr, n - r0)
            # Output row i reads image rows 2i - 3 .. 2i + 4 (reflected at the edges).
            lo, hi = 2 * (i0 + r0) - 3, 2 * (i0 + r0 + m) + 3
            src = img[lo:hi] if lo >= 0 and hi <= h else img[_reflect(np.arange(lo, hi), h)]
            a, t = acc[:m], prod[:m]
            np.multiply(src[0 : 2 * m : 2], taps[0], out=a)
            for k in range(1, 7):
                np.multiply(src[k : k + 2 * m : 2], taps[k], out=t)
                a += t
            np.multiply(src[7 : 7 + 2 * m : 2], taps[7], out=t)
            np.add(
                a.reshape(m, q, 4).transpose(2, 0, 1),
                t.reshape(m, q, 4).transpose(2, 0, 1),
                out=phases[:, r0 : r0 + m, 1 : q + 1],
            )
        # Image column -1 - c is column c and W + c is W - 1 - c: phase p's pad before
        # index 0 is phase 3 - p's first entry, its pad after the last is 3 - p's last.
        phases[:, :n, 0] = phases[::-1, :n, 1]
        phases[:, :n, q + 1] = phases[::-1, :n, q]
        _resize_columns(phases[:, :n], col_prod[:, :n], col_sum[:, :n], out[i0 : i0 + n])
    return out


def _resize_columns(phases: F32Array, prod: F32Array, acc: F32Array, out: F32Array) -> None:
    """The column pass of ``_imresize_half`` on a strip of rows split by column phase.

    Args:
        phases: (4, n, q + 2) float32 row-pass sums, padded (see ``_imresize_half``).
        prod, acc: (2, n, q) float32 scratch.
        out: (n, 2q) float32, written.
    """
    taps = _HALF_TAPS
    q = prod.shape[2]
    even_odd = out.reshape(out.shape[0], q, 2)

    def p(k: int, table: tuple[tuple[int, int], ...], dst: F32Array) -> F32Array:
        phase, first = table[k]
        return np.multiply(phases[phase, :, first : first + q], taps[k], out=dst)

    # Even output columns: ((((((p0+p1)+p2)+p4)+(p3+p5))+p6)+p7).
    e, pe, pair = acc[0], prod[0], prod[1]
    p(0, _EVEN_TAPS, e)
    for k in (1, 2, 4):
        e += p(k, _EVEN_TAPS, pe)
    p(3, _EVEN_TAPS, pair)
    pair += p(5, _EVEN_TAPS, pe)
    e += pair
    e += p(6, _EVEN_TAPS, pe)
    np.add(e, p(7, _EVEN_TAPS, pe), out=even_odd[:, :, 0])
    # Odd output columns: ((((((p0+p1)+p2)+p3)+p4)+p6)+(p5+p7)).
    o, po = acc[1], prod[1]
    p(0, _ODD_TAPS, o)
    for k in (1, 2, 3, 4, 6):
        o += p(k, _ODD_TAPS, po)
    p(5, _ODD_TAPS, po)
    po += p(7, _ODD_TAPS, pe)
    np.add(o, po, out=even_odd[:, :, 1])


def _second_scale(y: F32Array) -> F32Array:
    """BasicSR's ``imresize(img / 255., scale=0.5, antialiasing=True) * 255.``, float32."""
    native = kernels()
    if native is not None:
        return native.half(y, _tables().half_taps)
    y2 = _imresize_half(y / _F32(255.0))
    y2 *= _F32(255.0)
    return y2


def _row_counts(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Number of True per row of a (N, n) bool array with n a multiple of 1152.

    Reads the bytes eight at a time as uint64 and adds 144 words at a time, so no byte
    lane exceeds 144 and none carries into its neighbour; ~10x faster than count_nonzero.
    """
    n_rows = mask.shape[0]
    words = mask.view(np.uint64).reshape(n_rows, -1, 144)
    partial = words.sum(axis=2, dtype=np.uint64)
    return partial.view(np.uint8).reshape(n_rows, -1).sum(axis=1, dtype=np.int64)


def _refit_exact(x: F32Array) -> tuple[np.float32, np.float32, np.float32]:
    """One fit's statistics with the official float32 arithmetic, step by step.

    Used for the few fits whose grid index hinges on the last bits: reproduces the
    compact-then-mean of BasicSR ``estimate_aggd_param`` and its float32 scalar powers.

    Args:
        x: (n,) float32, a flattened block or block product with negative and positive
            values.

    Returns:
        rhatnorm, left_std, right_std as float32 scalars.
    """
    # np.mean of a float32 array is float32(pairwise sum / count); np.add.reduce is the
    # same sum without np.mean's Python overhead.
    neg, pos = x[x < 0], x[x > 0]
    left_std = np.sqrt(np.add.reduce(neg * neg) / _F32(neg.size))
    right_std = np.sqrt(np.add.reduce(pos * pos) / _F32(pos.size))
    gammahat = left_std / right_std
    n = _F32(x.size)
    rhat = (np.add.reduce(np.abs(x)) / n) ** 2 / (np.add.reduce(x * x) / n)
    rhatnorm = (rhat * (gammahat**3 + 1) * (gammahat + 1)) / ((gammahat**2 + 1) ** 2)
    return rhatnorm, left_std, right_std


def _nearest_grid(r: F64Array) -> NDArray[np.intp]:
    """Index of argmin((r_gam - r)^2), first on ties, 0 where r is NaN (as np.argmin)."""
    r_gam = _tables().r_gam
    hi = np.clip(np.searchsorted(r_gam, r), 1, len(r_gam) - 1)
    lo = hi - 1
    with np.errstate(invalid="ignore"):
        idx = np.where(np.square(r_gam[lo] - r) <= np.square(r_gam[hi] - r), lo, hi)
    idx[np.isnan(r)] = 0
    return idx


def _fit_input(blocks: F32Array, bs: int, fit: int) -> F32Array:
    """The values fit ``fit`` of BasicSR ``compute_feature`` sees, for every block.

    Fit 0 is the block itself; fit k >= 1 is ``block * np.roll(block, _SHIFTS[k - 1],
    axis=(0, 1))``, the products of neighbouring coefficients (wrapping inside the block).

    Args:
        blocks: (N, bs * bs) float32, one flattened block per row.
        bs: block side.
        fit: 0 to 4.

    Returns:
        (N, bs * bs) float32.
    """
    if fit == 0:
        return blocks
    di, dj = _SHIFTS[fit - 1]
    n_rows = blocks.shape[0]
    x = np.empty_like(blocks)
    # Flattened, the neighbour sits a fixed offset back; only the wrapped column (and
    # first row) point elsewhere and are redone below.
    off = di * bs + dj
    np.multiply(blocks[:, off:], blocks[:, :-off], out=x[:, off:])
    b = blocks.reshape(n_rows, bs, bs)
    xb = x.reshape(n_rows, bs, bs)
    if dj:
        col = 0 if dj == 1 else bs - 1
        src = np.roll(b[:, :, (col - dj) % bs], di, axis=1)
        np.multiply(b[:, :, col], src, out=xb[:, :, col])
    if di:
        np.multiply(b[:, 0, :], np.roll(b[:, bs - 1, :], dj, axis=1), out=xb[:, 0, :])
    return x


# Blocks per chunk of the statistics pass: ~1.2 MB of float32 per temporary, so that the
# dozen whole-chunk passes run from cache rather than memory.
_CHUNK_VALUES: Final = 32 * BLOCK_SIZE * BLOCK_SIZE


def _fit_sums(blocks: F32Array, bs: int) -> tuple[F32Array, F32Array, F64Array, NDArray[np.int64]]:
    """Per fit and block, the sums the fits need: the compiled kernel, else numpy's."""
    native = kernels()
    if native is None:
        return _fit_sums_numpy(blocks, bs)
    return native.fit_sums(blocks, bs)


def _fit_sums_numpy(
    blocks: F32Array, bs: int
) -> tuple[F32Array, F32Array, F64Array, NDArray[np.int64]]:
    """Per fit and block: the sums and counts BasicSR ``estimate_aggd_param`` averages.

    Args:
        blocks: (N, bs * bs) float32 MSCN coefficients, one flattened block per row.
        bs: block side.

    Returns:
        sum_sq, sum_abs: (5, N) float32, the float32 pairwise sums np.mean forms over
        the whole block, bit for bit (numpy sums a contiguous row the same way).
        sum_neg_sq: (5, N) float64, the sum of squares of the negative values, to a few
        float32 ulps (a BLAS dot with the mask, not the official compacted pairwise sum).
        counts: (2, 5, N) int64, numbers of negative and of positive values.
    """
    nb, n = blocks.shape
    sum_sq = np.empty((5, nb), dtype=_F32)
    sum_abs = np.empty((5, nb), dtype=_F32)
    sum_neg_sq = np.empty((5, nb), dtype=_F64)
    counts = np.empty((2, 5, nb), dtype=np.int64)
    step = max(1, _CHUNK_VALUES // n)
    sq_buf = np.empty((min(step, nb), n), dtype=_F32)
    abs_buf, maskf_buf = np.empty_like(sq_buf), np.empty_like(sq_buf)
    mask_buf = np.empty(sq_buf.shape, dtype=np.bool_)
    for lo in range(0, nb, step):
        chunk = blocks[lo : lo + step]
        hi = lo + len(chunk)
        sq, ab, mask, maskf = (b[: len(chunk)] for b in (sq_buf, abs_buf, mask_buf, maskf_buf))
        may_zero = np.ones(len(chunk), dtype=np.bool_)
        for fit in range(5):
            x = _fit_input(chunk, bs, fit)
            sum_sq[fit, lo:hi] = np.add.reduce(np.square(x, out=sq), axis=1)
            sum_abs[fit, lo:hi] = np.add.reduce(np.abs(x, out=ab), axis=1)
            n_neg = _row_counts(np.less(x, 0, out=mask))
            np.copyto(maskf, mask)
            sum_neg_sq[fit, lo:hi] = np.vecdot(sq, maskf)
            counts[0, fit, lo:hi] = n_neg
            if fit == 0:
                counts[1, 0, lo:hi] = _row_counts(np.greater(x, 0, out=mask))
                # A block without a zero coefficient, and none below 2**-75 in size (a
                # product of two could round to 0), has no zero product either: its
                # positive products are the ones that are not negative.
                may_zero = counts[:, 0, lo:hi].sum(axis=0) < n
                may_zero |= ab.min(axis=1) <= 2.0**-75
                continue
            counts[1, fit, lo:hi] = n - n_neg
            if may_zero.any():
                rows = np.flatnonzero(may_zero)
                counts[1, fit, lo + rows] = _row_counts(x[rows] > 0)
    return sum_sq, sum_abs, sum_neg_sq, counts


def _scale_features(blocks: F32Array, bs: int) -> F64Array:
    """The 18 NIQE features of every block of one scale (BasicSR ``compute_feature``).

    The five AGGD fits per block (BasicSR ``estimate_aggd_param``) are evaluated for all
    blocks at once from their sums. The float32 statistic that picks the shape on the
    grid is reproduced to a few ulps; the few fits that land within ``_RISK_ULPS`` of a
    grid midpoint are redone one by one with the official arithmetic.

    Args:
        blocks: (N, bs * bs) float32 MSCN coefficients, one flattened block per row.
        bs: block side at this scale.

    Returns:
        (N, 18) float64. A fit without negative (positive) values has NaN beta_l
        (beta_r) and alpha 0.2, which is what the official argmin over NaN gives.
    """
    t = _tables()
    nf = _F32(blocks.shape[1])
    sum_sq, sum_abs, s_neg, (n_neg, n_pos) = _fit_sums(blocks, bs)
    s_all = sum_sq.astype(_F64)
    s_pos = s_all - s_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = np.sqrt((s_neg / n_neg).astype(_F32))
        right_std = np.sqrt((s_pos / n_pos).astype(_F32))
        left_std[n_neg == 0] = np.nan
        right_std[n_pos == 0] = np.nan
        gammahat = left_std / right_std
        rhat = np.square(sum_abs / nf) / (sum_sq / nf)
        g3 = (gammahat.astype(_F64) ** 3).astype(_F32)
        rhatnorm = rhat * (g3 + _F32(1.0)) * (gammahat + _F32(1.0))
        rhatnorm /= np.square(np.square(gammahat) + _F32(1.0))
        # s_pos = s_all - s_neg loses relative precision when the positive part is small;
        # the statistic feels gammahat at most 0.15 times (|d ln rhatnorm / d ln g| <= 0.15).
        margin = _EPS32 * (_RISK_ULPS + 1.2 * (s_all / s_pos))
    r = rhatnorm.astype(_F64)
    idx = _nearest_grid(r)
    # Refit exactly where the grid cell is decided within the error of the estimate.
    mid_lo = t.r_mid[np.maximum(idx - 1, 0)]
    mid_hi = t.r_mid[np.minimum(idx, len(t.r_mid) - 1)]
    margin *= r
    risky = (n_neg > 0) & (n_pos > 0)
    if blocks.shape[0] > _EXACT_BLOCKS:
        risky &= (np.abs(r - mid_lo) < margin) | (np.abs(r - mid_hi) < margin)
    for fit, block in zip(*np.nonzero(risky), strict=True):
        x = _fit_input(blocks[block : block + 1], bs, int(fit))[0]
        rn, left_std[fit, block], right_std[fit, block] = _refit_exact(x)
        idx[fit, block] = _nearest_grid(np.array([rn], dtype=_F64))[0]
    k = t.beta_of_std[idx]
    beta_l = left_std.astype(_F64) * k
    beta_r = right_std.astype(_F64) * k
    feats = np.empty((blocks.shape[0], 18), dtype=_F64)
    feats[:, 0] = t.gam[idx[0]]
    feats[:, 1] = (beta_l[0] + beta_r[0]) / 2
    for fit in range(1, 5):
        # Eq. 8 of the paper: the mean of the fitted distribution.
        mean = (beta_r[fit] - beta_l[fit]) * t.mean_factor[idx[fit]]
        feats[:, 4 * fit - 2 : 4 * fit + 2] = np.stack(
            [t.gam[idx[fit]], mean, beta_l[fit], beta_r[fit]], axis=1
        )
    return feats


def _check_rgb(rgb: NDArray[np.uint8]) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        got = rgb.dtype if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise TypeError(f"NIQE expects a uint8 numpy array, got {got}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"NIQE expects an (H, W, 3) RGB array, got shape {rgb.shape}")


def block_features(rgb: NDArray[np.uint8]) -> F64Array:
    """The NIQE feature matrix of an RGB image: one row per 96x96 block, both scales.

    Args:
        rgb: (H, W, 3) uint8 RGB image.

    Returns:
        (nw * nh, 36) float64, rows in BasicSR's block order; NaN where a block has no
        negative or no positive coefficient in a fit.

    Raises:
        NIQEError: the image is smaller than one 96x96 block.
        TypeError, ValueError: ``rgb`` is not an (H, W, 3) uint8 array.
    """
    _check_rgb(rgb)
    h, w = rgb.shape[:2]
    nh, nw = h // BLOCK_SIZE, w // BLOCK_SIZE
    if nh == 0 or nw == 0:
        raise NIQEError(f"image {w}x{h} is smaller than one {BLOCK_SIZE}x{BLOCK_SIZE} NIQE block")
    # BasicSR crops to whole blocks after the colour conversion; per pixel, the same.
    y = _y_cropped(rgb, nh * BLOCK_SIZE, nw * BLOCK_SIZE)
    f1 = _scale_features(_mscn_blocks(y, BLOCK_SIZE), BLOCK_SIZE)
    y2 = _second_scale(y)
    half = BLOCK_SIZE // 2
    f2 = _scale_features(_mscn_blocks(y2, half), half)
    return np.concatenate([f1, f2], axis=1)


def niqe(rgb: NDArray[np.uint8]) -> float:
    """NIQE of an RGB image, the contest's BasicSR 1.4.2 score to within 1e-4.

    Lower is better. Equivalent to BasicSR ``calculate_niqe(rgb[..., ::-1], 0,
    input_order='HWC', convert_to='y')``: Y channel, crop to whole 96x96 blocks, block
    features at two scales, distance to the pristine multivariate Gaussian model.

    Args:
        rgb: (H, W, 3) uint8 RGB image, at least 96x96.

    Returns:
        The NIQE score, a finite float >= 0.

    Raises:
        NIQEError: NIQE is undefined for the image: smaller than one 96x96 block, or
            fewer than two blocks with finite features (a single block, a flat image),
            where the official code fails with ``LinAlgError``.
        TypeError, ValueError: ``rgb`` is not an (H, W, 3) uint8 array.
    """
    feats = block_features(rgb)
    h, w = rgb.shape[:2]
    t = _tables()
    nan = np.isnan(feats)
    complete = feats[~nan.any(axis=1)]
    if len(complete) < 2:
        if len(feats) == 1:
            why = "it has a single 96x96 block"
        else:
            why = (
                f"only {len(complete)} of its {len(feats)} 96x96 blocks have values on both "
                "sides of the local mean in every fit (a flat image?)"
            )
        raise NIQEError(
            f"NIQE is undefined for image {w}x{h}: {why}; the covariance of the block "
            "features needs at least two such blocks"
        )
    # np.nanmean(feats, axis=0) without its warnings: every column has a finite value.
    mu = np.where(nan, 0.0, feats).sum(axis=0) / np.sum(~nan, axis=0, dtype=np.intp)
    cov = np.cov(complete, rowvar=False)
    try:
        invcov = np.linalg.pinv((t.cov_pris + cov) / 2)
    except np.linalg.LinAlgError as exc:  # pragma: no cover - finite input converges
        raise NIQEError(f"NIQE is undefined for image {w}x{h}: {exc}") from exc
    d = t.mu_pris - mu
    quality = float(np.squeeze(np.matmul(np.matmul(d, invcov), np.transpose(d))))
    if not (math.isfinite(quality) and quality >= 0.0):
        raise NIQEError(f"NIQE is undefined for image {w}x{h}: distance^2 is {quality}")
    return math.sqrt(quality)
