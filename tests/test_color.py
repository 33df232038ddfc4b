"""MATLAB YCbCr conversions and the pipeline's Y + chroma merge."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from batchsr import color
from batchsr.color import (
    chroma_planes,
    merge_y,
    rgb_to_ycbcr,
    upscale_chroma,
    upscale_image,
    ycbcr_to_rgb,
)
from tests.helpers.native import compiled_kernels

_RGB = arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40), st.just(3)))


@settings(max_examples=30, deadline=None)
@given(_RGB)
def test_ycbcr_round_trip_is_exact_on_8_bit_rgb(rgb: np.ndarray) -> None:
    back = np.rint(ycbcr_to_rgb(rgb_to_ycbcr(rgb)) * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(back, rgb)


@contextmanager
def _merge_path(path: str) -> Iterator[None]:
    """color.py by its compiled kernels (batchsr.native) or by numpy, for the block."""
    saved = color.kernels
    if path == "numpy":
        color.kernels = lambda: None
    else:
        compiled_kernels()
    try:
        yield
    finally:
        color.kernels = saved


_PATHS = pytest.mark.parametrize("path", ["compiled", "numpy"])


@_PATHS
@settings(max_examples=30, deadline=None)
@given(rgb=_RGB)
def test_merge_y_at_scale_1_gives_the_image_back(path: str, rgb: np.ndarray) -> None:
    ycc = rgb_to_ycbcr(rgb)
    with _merge_path(path):
        np.testing.assert_array_equal(merge_y(ycc[:, :, 0], chroma_planes(ycc), 1), rgb)


def _reference(y: np.ndarray, cbcr: np.ndarray, scale: int) -> np.ndarray:
    """The plain float64 path: whole-plane chroma upscale, then ycbcr_to_rgb."""
    full = np.concatenate([y[:, :, None], upscale_chroma(cbcr, scale).transpose(1, 2, 0)], 2)
    return np.clip(np.rint(ycbcr_to_rgb(full) * 255.0), 0, 255).astype(np.uint8)


@_PATHS
@pytest.mark.parametrize(("h", "w", "scale"), [(60, 80, 4), (7, 900, 4), (33, 5, 3), (1, 1, 2)])
def test_merge_y_matches_the_float64_path_within_a_rounding_tie(
    h: int, w: int, scale: int, path: str
) -> None:
    """Bands of rows (many for a wide image, one for a tiny one) give the whole-image
    result; rounding half up (not to even) and the products' order may put a tie one
    level away, rarely."""
    rng = np.random.default_rng(h * w)
    ycc = rgb_to_ycbcr(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    # An SR-like Y: out of range in places, so clipping is exercised too.
    y = rng.uniform(-0.2, 1.2, (h * scale, w * scale)).astype(np.float32)
    expected = _reference(y, chroma_planes(ycc), scale)
    with _merge_path(path):
        got = merge_y(y, chroma_planes(ycc), scale)
    assert got.shape == expected.shape and got.dtype == np.uint8
    diff = np.abs(got.astype(int) - expected)
    assert diff.max() <= 1
    assert (diff > 0).mean() < 2e-3
    assert got.min() == 0 and got.max() == 255


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_chroma_of_a_region_is_that_region_of_the_whole_upscale(scale: int) -> None:
    """What lets the stitcher merge each tile core with its own chroma: PIL reads the
    bicubic support from around the box, so regions tile the whole upscale."""
    cbcr = np.random.default_rng(scale).random((2, 50, 70), dtype=np.float32)
    whole = upscale_chroma(cbcr, scale)
    for x0, y0, x1, y1 in [(0, 0, 20, 20), (13, 7, 41, 29), (55, 40, 70, 50), (3, 5, 4, 6)]:
        part = upscale_chroma(cbcr, scale, (x0, y0, x1, y1))
        region = whole[:, y0 * scale : y1 * scale, x0 * scale : x1 * scale]
        np.testing.assert_allclose(part, region, atol=1e-6)


def test_merge_in_chunks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The numpy path's horizontal pass runs per chunk of rows: the same pixels as one
    pass over the region, the region's own included."""
    monkeypatch.setattr(color, "kernels", lambda: None)
    rng = np.random.default_rng(5)
    ycc = rgb_to_ycbcr(rng.integers(0, 256, (300, 40, 3), dtype=np.uint8))
    y = rng.random((1200, 160), dtype=np.float32)
    one_pass = merge_y(y, chroma_planes(ycc), 4)
    monkeypatch.setattr(color, "_BAND_PIXELS", 160 * 4 * 8)  # bands of 8 rows
    monkeypatch.setattr(color, "_ACROSS_PIXELS", 160 * 8 * 3)  # chunks of 3 bands
    np.testing.assert_array_equal(merge_y(y, chroma_planes(ycc), 4), one_pass)
    np.testing.assert_array_equal(
        merge_y(y[200:1000], chroma_planes(ycc), 4, origin=(50, 0)), one_pass[200:1000]
    )


@_PATHS
def test_merge_memory_beyond_the_output_does_not_grow_with_height(path: str) -> None:
    """Working memory is bounded by a chunk of rows, not the region: a whole large
    image's horizontal pass at once took 12-30 bytes per output pixel. The compiled
    kernel keeps 8 rows in C (not traced here) and, in Python, the taps: a few small
    arrays per output row and column."""
    rng = np.random.default_rng(6)
    ycc = rgb_to_ycbcr(rng.integers(0, 256, (1600, 160, 3), dtype=np.uint8))
    y = rng.random((6400, 640), dtype=np.float32)

    def working_bytes(rows: int) -> int:
        planes = chroma_planes(ycc[:rows])
        tracemalloc.start()
        try:
            with _merge_path(path):
                out = merge_y(y[: rows * 4], planes, 4)
            return tracemalloc.get_traced_memory()[1] - out.nbytes
        finally:
            tracemalloc.stop()

    if path == "numpy":
        assert working_bytes(1600) < 1.3 * working_bytes(480)
    else:
        assert working_bytes(1600) < 320 * (1600 * 4 + 640)  # measured: 245 per row


@_PATHS
def test_merge_of_a_region_equals_that_region_of_the_whole_merge(path: str) -> None:
    rng = np.random.default_rng(9)
    ycc = rgb_to_ycbcr(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    y = rng.random((160, 240), dtype=np.float32)
    with _merge_path(path):
        whole = merge_y(y, chroma_planes(ycc), 4)
        for r0, r1, c0, c1 in [(36, 100, 88, 200), (0, 8, 0, 4), (152, 160, 236, 240)]:
            part = merge_y(y[r0:r1, c0:c1], chroma_planes(ycc), 4, origin=(r0 // 4, c0 // 4))
            np.testing.assert_array_equal(part, whole[r0:r1, c0:c1])


@_PATHS
def test_rgb_planes_are_rgb_to_ycbcr_planar_on_all_24bit_colours(path: str) -> None:
    """Measured equal on every colour (the compiled kernel's float64 sums could differ
    from numpy's matmul at a rounding tie; none does)."""
    colours = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([colours & 255, (colours >> 8) & 255, colours >> 16], axis=-1)
    rgb = rgb.astype(np.uint8).reshape(4096, 4096, 3)
    with _merge_path(path):
        for rows in np.split(np.arange(4096), 16):
            part = rgb[rows]
            y, cbcr = color.rgb_planes(part)
            ycc = rgb_to_ycbcr(part)
            np.testing.assert_array_equal(y, ycc[:, :, 0])
            np.testing.assert_array_equal(cbcr, chroma_planes(ycc))
    view = rgb[:40, :60][:, ::-1]  # not contiguous
    np.testing.assert_array_equal(color.rgb_planes(view)[0], rgb_to_ycbcr(view)[:, :, 0])


@_PATHS
def test_merge_writes_into_a_region_of_a_canvas(path: str) -> None:
    rng = np.random.default_rng(11)
    ycc = rgb_to_ycbcr(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8))
    y = rng.random((120, 80), dtype=np.float32)
    canvas = np.zeros((130, 100, 3), np.uint8)
    with _merge_path(path):
        whole = merge_y(y, chroma_planes(ycc), 4)
        written = merge_y(y, chroma_planes(ycc), 4, out=canvas[5:125, 10:90])
        with pytest.raises(ValueError, match="rows of pixels"):
            merge_y(y, chroma_planes(ycc), 4, out=canvas[5:125, 10:90:2])
    assert written.base is canvas or written.base is canvas.base
    np.testing.assert_array_equal(canvas[5:125, 10:90], whole)
    assert not canvas[:5].any() and not canvas[:, :10].any() and not canvas[:, 90:].any()


def test_compiled_merge_equals_numpy_merge_but_for_rare_ties() -> None:
    rng = np.random.default_rng(10)
    ycc = rgb_to_ycbcr(rng.integers(0, 256, (120, 170, 3), dtype=np.uint8))
    y = rng.uniform(-0.1, 1.1, (480, 680)).astype(np.float32)
    with _merge_path("compiled"):
        got = merge_y(y, chroma_planes(ycc), 4)
    with _merge_path("numpy"):
        expect = merge_y(y, chroma_planes(ycc), 4)
    diff = np.abs(got.astype(int) - expect)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-4


def _nearest2(batch: np.ndarray) -> np.ndarray:
    return batch.repeat(2, axis=2).repeat(2, axis=3)


@pytest.mark.parametrize("channels", [1, 3])
def test_upscale_image_feeds_the_model_its_colour_space(channels: int) -> None:
    """RGB models see RGB in [0, 1]; one-channel models see MATLAB Y, and their output
    is merged with bicubic chroma, the scale read off the model's output."""
    rgb = np.random.default_rng(channels).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    seen: list[tuple[int, ...]] = []

    def model(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.shape)
        return _nearest2(batch)

    got = upscale_image(model, rgb, channels=channels)
    assert seen == [(1, channels, 9, 11)]
    if channels == 3:
        np.testing.assert_array_equal(got, rgb.repeat(2, axis=0).repeat(2, axis=1))
    else:
        ycc = rgb_to_ycbcr(rgb)
        y = ycc[:, :, 0].repeat(2, axis=0).repeat(2, axis=1)
        np.testing.assert_array_equal(got, merge_y(y, chroma_planes(ycc), 2))
