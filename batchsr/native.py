"""batchsr's compiled kernels (``batchsr/csrc/*.c``), loaded with ctypes when built.

The hot loops that numpy could not bring near the hardware run in C where a C compiler
was there at install: NIQE's passes (``csrc/niqe.c``: Y, the MSCN filter, the second
scale's resize, the fit sums; the same bits as metrics/niqe.py's numpy path) and the
colour conversions of Y-only models (``csrc/color.c``: color.rgb_planes and
color.merge_y, the same values to a rounding tie). ``make setup`` and ``pip install``
build the library beside this module (setup.py). Where none was built (no C compiler, a
copy of the sources), the numpy paths run, more slowly; ``status()`` says which runs,
for the run log and the summary.

ctypes releases the GIL for each call, so the pipeline's threads run them in parallel.
"""

from __future__ import annotations

import ctypes
import os
import sysconfig
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["NativeKernels", "kernels", "status"]

# csrc/abi.c's number: a library built from older sources is refused, not called wrongly.
ABI_VERSION: Final = 6

# Set to 0 to run the numpy paths although the library is there (comparisons, debugging).
ENV_SWITCH: Final = "BATCHSR_NATIVE"

_HERE: Final = Path(__file__).resolve().parent
_NAME: Final = "_native"
_P = ctypes.c_void_p
_N = ctypes.c_ssize_t
_I64 = NDArray[np.int64]
_F64 = NDArray[np.float64]


def _library_path() -> Path | None:
    """The built library, named as setuptools names extensions for this interpreter."""
    mine = _HERE / f"{_NAME}{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"
    if mine.is_file():
        return mine
    # Built by another interpreter of the same platform: plain C, no Python ABI in it.
    others = sorted(_HERE.glob(f"{_NAME}.*.so"))
    return others[0] if others else None


# Each kernel's C signature: (return type, argument types); an int return is 0, or -1
# where the kernel could not allocate its row buffers.
_SIGNATURES: Final[dict[str, tuple[type | None, list[type]]]] = {
    "niqe_y": (None, [_P, _N, _N, _N, _P]),
    "niqe_mscn": (ctypes.c_int, [_P, _N, _N, _N, _P, _P]),
    "niqe_half": (ctypes.c_int, [_P, _N, _N, _P, _P]),
    "niqe_fit_sums": (ctypes.c_int, [_P, _N, _N, _P, _P, _P, _P]),
    "batchsr_ycbcr_planes": (None, [_P, _N, _N, _N, _P, _P, _P, _P]),
    "batchsr_merge_y": (
        ctypes.c_int,
        [_P, _N, _N, _N, _P, _N, _N, _P, _P, _P, _P, _N, _N, _P, _P, _N],
    ),
}


def _ptr(a: NDArray[np.generic]) -> int:
    return int(a.ctypes.data)


def _allocated(status: int, what: str) -> None:
    if status != 0:
        raise MemoryError(f"{what}: the kernel could not allocate its row buffers")


@dataclass(frozen=True)
class NativeKernels:
    """The loaded library, with numpy-facing wrappers that check layouts first."""

    lib: ctypes.CDLL
    path: Path

    def mscn(
        self, img: NDArray[np.float32], bs: int, taps: NDArray[np.float64]
    ) -> NDArray[np.float32]:
        """``niqe._mscn_blocks`` of ``img`` with the separable Gaussian ``taps`` (7,)."""
        img = np.ascontiguousarray(img, dtype=np.float32)
        taps = np.ascontiguousarray(taps, dtype=np.float64)
        h, w = img.shape
        if h % bs or w % bs or taps.shape != (7,):
            raise ValueError(f"mscn needs whole {bs}x{bs} blocks and 7 taps: {img.shape}")
        out = np.empty(((h // bs) * (w // bs), bs * bs), dtype=np.float32)
        _allocated(self.lib.niqe_mscn(_ptr(img), h, w, bs, _ptr(taps), _ptr(out)), f"MSCN {w}x{h}")
        return out

    def y(self, rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
        """``niqe.y_channel`` of (h, w, 3) uint8 RGB (any row stride)."""
        if rgb.strides[1:] != (3, 1):
            rgb = np.ascontiguousarray(rgb)
        h, w = rgb.shape[:2]
        out = np.empty((h, w), dtype=np.float32)
        self.lib.niqe_y(_ptr(rgb), h, w, rgb.strides[0], _ptr(out))
        return out

    def half(self, img: NDArray[np.float32], taps: NDArray[np.float32]) -> NDArray[np.float32]:
        """``niqe._imresize_half(img / 255) * 255`` with the 8 float32 ``taps``."""
        img = np.ascontiguousarray(img, dtype=np.float32)
        taps = np.ascontiguousarray(taps, dtype=np.float32)
        h, w = img.shape
        if h % 4 or w % 4 or taps.shape != (8,):
            raise ValueError(f"half needs sides that are multiples of 4 and 8 taps: {img.shape}")
        out = np.empty((h // 2, w // 2), dtype=np.float32)
        _allocated(self.lib.niqe_half(_ptr(img), h, w, _ptr(taps), _ptr(out)), f"resize {w}x{h}")
        return out

    def ycbcr_planes(
        self, rgb: NDArray[np.uint8], m: _F64, offset: _F64
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """``color.rgb_planes``: (h, w, 3) uint8 RGB to Y (h, w) and Cb/Cr (2, h, w)
        float32 in [0, 1], with the 3 x 3 matrix ``m`` and ``offset`` (0..255 units)."""
        if rgb.strides[1:] != (3, 1):
            rgb = np.ascontiguousarray(rgb)
        h, w = rgb.shape[:2]
        y = np.empty((h, w), dtype=np.float32)
        cbcr = np.empty((2, h, w), dtype=np.float32)
        m, offset = np.ascontiguousarray(m, np.float64), np.ascontiguousarray(offset, np.float64)
        if m.shape != (3, 3) or offset.shape != (3,):
            raise ValueError(f"ycbcr_planes needs a 3x3 matrix and 3 offsets: {m.shape}")
        self.lib.batchsr_ycbcr_planes(
            _ptr(rgb), h, w, rgb.strides[0], _ptr(m), _ptr(offset), _ptr(y), _ptr(cbcr)
        )
        return y, cbcr

    def merge_y(
        self,
        y: NDArray[np.float32],
        cbcr: NDArray[np.float32],
        rows: tuple[_I64, _F64],
        cols: tuple[_I64, _F64],
        first_col: int,
        k: _F64,
        out: NDArray[np.uint8],
    ) -> NDArray[np.uint8]:
        """``color.merge_y`` of ``y`` (hs, ws) with the whole input's ``cbcr`` (2, H, W).

        ``rows`` and ``cols``: each output row's (column's) 4 input rows (columns,
        counted from ``first_col``), clamped into the image, and their weights. ``k``:
        (12,) the 3 x 3 weights of (Y, Cb, Cr) per channel, then the 3 offsets. ``out``:
        (hs, ws, 3) uint8 with contiguous rows of pixels, written and returned.
        """
        if y.strides[1] != y.itemsize or y.dtype != np.float32:
            y = np.ascontiguousarray(y, dtype=np.float32)
        cbcr = np.ascontiguousarray(cbcr, dtype=np.float32)
        hs, ws = y.shape
        (row_idx, row_w), (col_idx, col_w) = rows, cols
        n_cols = int(col_idx.max()) + 1 if ws else 0
        if row_idx.shape != (hs, 4) or col_idx.shape != (ws, 4) or k.shape != (12,):
            raise ValueError(f"merge_y needs 4 taps per output row and column: {y.shape}")
        if out.shape != (hs, ws, 3) or out.strides[1:] != (3, 1):
            raise ValueError(f"merge_y writes (hs, ws, 3) rows of pixels, not {out.shape}")
        arrays = [np.ascontiguousarray(a) for a in (row_idx, row_w, col_idx, col_w, k)]
        _, big_h, big_w = cbcr.shape
        status = self.lib.batchsr_merge_y(
            _ptr(y), hs, ws, y.strides[0] // y.itemsize, _ptr(cbcr), big_h, big_w,
            *(_ptr(a) for a in arrays[:4]), first_col, n_cols, _ptr(arrays[4]), _ptr(out),
            out.strides[0],
        )  # fmt: skip
        _allocated(status, f"merge_y {ws}x{hs}")
        return out

    def fit_sums(
        self, blocks: NDArray[np.float32], bs: int
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float64], NDArray[np.int64]]:
        """``niqe._fit_sums`` of ``blocks`` (N, bs * bs): same arrays, same bits."""
        blocks = np.ascontiguousarray(blocks, dtype=np.float32)
        nb = blocks.shape[0]
        if blocks.shape[1] != bs * bs:
            raise ValueError(f"fit_sums needs rows of {bs * bs} values: {blocks.shape}")
        sum_sq = np.empty((5, nb), dtype=np.float32)
        sum_abs = np.empty((5, nb), dtype=np.float32)
        neg_sq = np.empty((5, nb), dtype=np.float64)
        counts = np.empty((2, 5, nb), dtype=np.int64)
        ptrs = (_ptr(sum_sq), _ptr(sum_abs), _ptr(neg_sq), _ptr(counts))
        _allocated(self.lib.niqe_fit_sums(_ptr(blocks), nb, bs, *ptrs), f"fit sums of {nb} blocks")
        return sum_sq, sum_abs, neg_sq, counts


def _load(path: Path) -> ctypes.CDLL | str:
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        return f"{path.name} does not load ({exc})"
    try:
        version = lib.batchsr_native_abi
    except AttributeError:
        return f"{path.name} is from an older source (no ABI version): rebuild with make setup"
    version.restype, version.argtypes = ctypes.c_int, []
    if version() != ABI_VERSION:
        return f"{path.name} has ABI {version()}, this code needs {ABI_VERSION}: make setup"
    for name, (restype, argtypes) in _SIGNATURES.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


@cache
def _loaded() -> NativeKernels | str:
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return f"switched off ({ENV_SWITCH}=0)"
    path = _library_path()
    if path is None:
        return f"not built (no {_NAME}*.so in {_HERE}): make setup builds them (needs cc)"
    lib = _load(path)
    return NativeKernels(lib, path) if isinstance(lib, ctypes.CDLL) else lib


def kernels() -> NativeKernels | None:
    """The compiled kernels, or None where the numpy paths run."""
    loaded = _loaded()
    return loaded if isinstance(loaded, NativeKernels) else None


def status() -> str:
    """One line for a user: whether the compiled kernels run, and why not if not."""
    loaded = _loaded()
    if isinstance(loaded, NativeKernels):
        return f"compiled kernels ({loaded.path.name})"
    return f"numpy path: compiled kernels {loaded}"
