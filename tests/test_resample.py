"""Bicubic upscaling by banded products: PIL's resize of float planes, region by region."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from batchsr.resample import bicubic_taps, upscale_bicubic


def _pil(
    planes: np.ndarray, scale: int, box: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    _, h, w = planes.shape
    x0, y0, x1, y1 = box or (0, 0, w, h)
    size = ((x1 - x0) * scale, (y1 - y0) * scale)
    return np.stack(
        [
            np.asarray(Image.fromarray(p).resize(size, Image.Resampling.BICUBIC, box=box))
            for p in planes
        ]
    )


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
@pytest.mark.parametrize(("h", "w"), [(1, 1), (2, 3), (5, 4), (7, 9), (13, 100), (61, 47)])
def test_upscale_is_pils_bicubic_to_a_float32_rounding(h: int, w: int, scale: int) -> None:
    """Edges included: PIL drops the taps past an edge and renormalises the rest."""
    planes = np.random.default_rng(h * w + scale).random((2, h, w), dtype=np.float32)
    got = upscale_bicubic(planes, scale)
    expected = _pil(planes, scale)
    assert got.shape == expected.shape == (2, h * scale, w * scale)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2.5e-7)


def test_a_region_is_that_region_of_the_whole_upscale_bit_for_bit() -> None:
    planes = np.random.default_rng(3).random((3, 50, 70), dtype=np.float32)
    whole = upscale_bicubic(planes, 4)
    for x0, y0, x1, y1 in [(0, 0, 20, 20), (13, 7, 41, 29), (55, 40, 70, 50), (3, 5, 4, 6)]:
        part = upscale_bicubic(planes, 4, (x0, y0, x1, y1))
        np.testing.assert_array_equal(part, whole[:, y0 * 4 : y1 * 4, x0 * 4 : x1 * 4])


def test_a_region_matches_pils_box() -> None:
    planes = np.random.default_rng(4).random((1, 30, 40), dtype=np.float32)
    box = (9, 4, 31, 17)
    np.testing.assert_allclose(upscale_bicubic(planes, 3, box), _pil(planes, 3, box), atol=2.5e-7)


def test_taps_sum_to_one_and_stay_inside_the_axis() -> None:
    first, weights = bicubic_taps(5, 4, 0, 20)
    idx = first[:, None] + np.arange(4)
    assert np.all(weights[(idx < 0) | (idx >= 5)] == 0)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    # Away from the edges the weights repeat with the phase.
    mid_first, mid = bicubic_taps(100, 4, 40, 8)
    np.testing.assert_array_equal(mid[:4], mid[4:])
    # Two samples back for the phases centred in the first half of a sample, else one.
    assert list(mid_first) == [8, 8, 9, 9, 9, 9, 10, 10]


def test_constant_planes_stay_constant() -> None:
    """The property merge_y leans on: the upscale keeps constants, so an offset can be
    added before it instead of after (to the float32 rounding of the first pass)."""
    got = upscale_bicubic(np.full((1, 6, 9), 0.37, np.float64), 4)
    np.testing.assert_allclose(got, np.float32(0.37), rtol=1e-15)
