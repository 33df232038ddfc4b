"""The PNG writer is lossless at every level: PIL reads back exactly the pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from batchsr.png import encode_png


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    level=st.integers(0, 9),
    seed=st.integers(0, 2**32 - 1),
)
def test_pil_reads_back_exactly_the_written_pixels(
    height: int, width: int, level: int, seed: int
) -> None:
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(encode_png(rgb, level=level))) as img:
        assert img.mode == "RGB" and img.size == (width, height)
        assert np.array_equal(np.asarray(img), rgb)


def test_non_contiguous_input_and_smooth_images_compress(tmp_path) -> None:
    yy, xx = np.mgrid[0:300, 0:400]
    rgb = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=2).astype(np.uint8)[:, ::-1]
    data = encode_png(rgb, level=1)
    assert len(data) < rgb.size / 4  # the Up filter makes smooth rows cheap
    with Image.open(io.BytesIO(data)) as img:
        assert np.array_equal(np.asarray(img), rgb)


@pytest.mark.parametrize("level", [0, 1, 9])
def test_images_encoded_in_several_bands_read_back_exactly(level: int) -> None:
    """Wide images go to zlib in bands of rows; the Up filter must still see the row
    above each band's first row."""
    rng = np.random.default_rng(level)
    rgb = np.cumsum(rng.integers(0, 3, (301, 1500, 3)), axis=0).astype(np.uint8)
    with Image.open(io.BytesIO(encode_png(rgb, level=level))) as img:
        assert np.array_equal(np.asarray(img), rgb)


@pytest.mark.parametrize("level", [0, 1, 9])
def test_grey_images_read_back_exactly_as_one_channel(level: int) -> None:
    rng = np.random.default_rng(level)
    grey = np.cumsum(rng.integers(0, 3, (301, 900)), axis=0).astype(np.uint8)
    with Image.open(io.BytesIO(encode_png(grey, level=level))) as img:
        assert img.mode == "L" and np.array_equal(np.asarray(img), grey)


@pytest.mark.parametrize(
    ("array", "level"),
    [
        (np.zeros((4, 4, 4), np.uint8), 1),
        (np.zeros((4, 4, 3), np.uint16), 1),
        (np.zeros((4, 4, 3), np.uint8), 10),
    ],
)
def test_bad_arguments_raise(array: np.ndarray, level: int) -> None:
    with pytest.raises(ValueError):
        encode_png(array, level=level)


@pytest.mark.parametrize("fast", [True, False], ids=["isal", "zlib"])
def test_level_1_reads_back_exactly_with_and_without_isal(
    fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Level 1 deflates with ISA-L where ``isal`` is installed and with zlib's
    Huffman-only strategy where it is not: either way the same pixels come back."""
    import batchsr.png as png

    assert png._ISAL is not None, "isal is in requirements.txt"
    if not fast:
        monkeypatch.setattr(png, "_ISAL", None)
    rng = np.random.default_rng(7)
    rgb = np.cumsum(rng.integers(0, 4, (260, 700, 3)), axis=1).astype(np.uint8)
    with Image.open(io.BytesIO(encode_png(rgb, level=1))) as img:
        assert np.array_equal(np.asarray(img), rgb)
