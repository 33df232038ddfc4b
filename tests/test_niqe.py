"""batchsr.metrics NIQE: equal to the contest's official scorer, and its parts to their definitions.

Official values come from tests/data/niqe_reference.json (recorded from BasicSR 1.4.2 by
benchmarks/make_niqe_refs.py); the images are rebuilt from the recipes there. Cases that
read ../shared/contest skip when it is absent.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from batchsr import native
from batchsr.errors import BatchSRError, DecodeError, NIQEError
from batchsr.metrics import niqe
from batchsr.metrics.folder import FolderScore, decode_rgb8, score_folder
from batchsr.metrics.niqe import (
    _HALF_TAPS,
    _fit_input,
    _fit_sums_numpy,
    _imresize_half,
    _mscn_blocks,
    _mscn_blocks_numpy,
    _nearest_grid,
    _refit_exact,
    _row_counts,
    _scale_features,
    _tables,
    block_features,
    y_channel,
)
from tests.helpers.native import compiled_kernels
from tests.helpers.niqe_cases import CONTEST_DIR, make_case, needs_contest

_niqe_module = importlib.import_module("batchsr.metrics.niqe")
REFERENCE = json.loads((Path(__file__).parent / "data" / "niqe_reference.json").read_text())
CASES: list[dict[str, Any]] = REFERENCE["cases"]
TOLERANCE = 1e-4

# The official values the contest README lists for its images (6 decimals).
README_VALUES = {
    "official_resrgan_sr_0002.png": 5.956366,
    "sample_0001.png": 5.312968,
    "sample_0002.png": 4.105865,
    "seed_0001.png": 2.650079,
    "seed_0005.png": 2.843691,
}


def _image(case: dict[str, Any]) -> NDArray[np.uint8]:
    recipe = case["recipe"]
    if needs_contest(recipe) and not CONTEST_DIR.is_dir():
        pytest.skip(f"contest images not available: {CONTEST_DIR} does not exist")
    return make_case(recipe)


def _texture(h: int, w: int, seed: int) -> NDArray[np.uint8]:
    return make_case({"kind": "texture", "h": h, "w": w, "seed": seed})


@pytest.fixture(params=["compiled", "numpy"])
def niqe_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test on each NIQE path: the C kernels (native.py) and the numpy one."""
    if request.param == "numpy":
        monkeypatch.setattr(_niqe_module, "kernels", lambda: None)
    else:
        compiled_kernels()
    return str(request.param)


@pytest.mark.parametrize(
    "case", [c for c in CASES if c["niqe"] is not None], ids=lambda c: c["name"]
)
def test_niqe_equals_official_value_within_1e4(case: dict[str, Any], niqe_path: str) -> None:
    rgb = _image(case)
    assert list(rgb.shape) == case["shape"]
    assert abs(niqe(rgb) - case["niqe"]) <= TOLERANCE


@pytest.mark.parametrize(
    "case", [c for c in CASES if c["raises"] is not None], ids=lambda c: c["name"]
)
def test_niqe_raises_niqe_error_where_official_code_fails(case: dict[str, Any]) -> None:
    with pytest.raises(NIQEError):
        niqe(_image(case))


@pytest.mark.parametrize("name", sorted(README_VALUES))
def test_niqe_of_contest_images_equals_readme_values(name: str, niqe_path: str) -> None:
    if not CONTEST_DIR.is_dir():
        pytest.skip(f"contest images not available: {CONTEST_DIR} does not exist")
    rgb = make_case({"kind": "contest", "file": name})
    assert abs(niqe(rgb) - README_VALUES[name]) <= TOLERANCE


def test_reference_file_covers_required_case_kinds() -> None:
    kinds = {c["recipe"]["kind"] for c in CASES}
    assert {"noise", "gradient", "gray", "gray16", "rgb16", "rgba", "flat"} <= kinds
    assert any(c["shape"][0] % 96 and c["shape"][1] % 96 for c in CASES)
    assert REFERENCE["basicsr"]["version"] == "1.4.2"
    assert "make_niqe_refs.py" in REFERENCE["command"]


def _y_definition(rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """BasicSR to_y_channel + round, written out: BGR float32 / 255, float64 dot."""
    bgr = rgb[..., ::-1].astype(np.float32) / 255.0
    y = np.dot(bgr, [24.966, 128.553, 65.481]) + 16.0
    y = (y / 255.0).astype(np.float32) * 255.0
    return y.round()


def test_y_channel_equals_definition_on_all_24bit_colours(niqe_path: str) -> None:
    colours = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([colours & 255, (colours >> 8) & 255, colours >> 16], axis=-1)
    rgb = rgb.astype(np.uint8).reshape(4096, 4096, 3)
    for rows in np.split(np.arange(4096), 8):
        part = rgb[rows]
        assert np.array_equal(y_channel(part), _y_definition(part))


def test_y_channel_accepts_non_contiguous_input_and_leaves_it_unchanged(niqe_path: str) -> None:
    bgr = _texture(50, 70, 1)
    view = bgr[..., ::-1]
    before = view.copy()
    assert np.array_equal(y_channel(view), y_channel(np.ascontiguousarray(view)))
    assert np.array_equal(view, before)


def _gauss_definition(img: NDArray[np.float32]) -> NDArray[np.float32]:
    """scipy.ndimage.convolve(img, window, mode='nearest') in float64, stored float32."""
    window = np.outer(_tables().band_v[0, :7], _tables().band_v[0, :7])
    p = np.pad(img.astype(np.float64), 3, mode="edge")
    h, w = img.shape
    out = np.zeros((h, w))
    for i in range(7):
        for j in range(7):
            out += window[i, j] * p[i : i + h, j : j + w]
    return out.astype(np.float32)


@pytest.mark.parametrize("scale_noise", [False, True])
def test_mscn_blocks_equal_definition_with_2d_window(scale_noise: bool, niqe_path: str) -> None:
    rng = np.random.default_rng(3)
    img = _texture(192, 288, 2)[..., 1].astype(np.float32)
    if scale_noise:  # non-integer input, as at the second scale
        img = (img + rng.random(img.shape).astype(np.float32)) * np.float32(0.97)
    mu = _gauss_definition(img)
    var = _gauss_definition(np.square(img)) - np.square(mu)
    expect = (img - mu) / (np.sqrt(np.abs(var)) + np.float32(1))
    blocks = expect.reshape(2, 96, 3, 96).transpose(2, 0, 1, 3).reshape(6, 96 * 96)
    got = _mscn_blocks(img, 96)
    # Float32 results of float64 sums in another order: equal but for rare last bits.
    assert np.mean(got == blocks) > 0.999
    assert np.allclose(got, blocks, rtol=1e-5, atol=1e-5)


def _cubic(x: NDArray[np.float64]) -> NDArray[np.float64]:
    ax = np.abs(x)
    return np.where(
        ax <= 1,
        1.5 * ax**3 - 2.5 * ax**2 + 1,
        np.where(ax <= 2, -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2, 0.0),
    )


def _resize_half_definition(img: NDArray[np.float32]) -> NDArray[np.float64]:
    """MATLAB imresize(img, 0.5, 'bicubic') with antialiasing, in float64."""
    out = img.astype(np.float64)
    for axis in (0, 1):
        n = out.shape[axis]
        centre = 2 * np.arange(n // 2) + 0.5  # output i centred between inputs 2i, 2i+1
        taps = np.arange(-3, 5)
        src = (2 * np.arange(n // 2))[:, None] + taps[None, :]
        weights = 0.5 * _cubic((centre[:, None] - src) * 0.5)
        weights /= weights.sum(axis=1, keepdims=True)
        src = np.where(src < 0, -src - 1, np.where(src >= n, 2 * n - 1 - src, src))
        moved = np.moveaxis(out, axis, 0)
        res = np.einsum("ik,ik...->i...", weights, moved[src])
        out = np.moveaxis(res, 0, axis)
    return out


def test_imresize_half_equals_matlab_bicubic_definition() -> None:
    img = _texture(96, 192, 4)[..., 0].astype(np.float32) / np.float32(255)
    got = _imresize_half(img)
    assert got.shape == (48, 96) and got.dtype == np.float32
    assert np.allclose(got, _resize_half_definition(img), rtol=0, atol=3e-7)
    taps = np.array(_HALF_TAPS, dtype=np.float64)
    assert taps.sum() == 1.0


def test_row_counts_equal_count_nonzero() -> None:
    mask = np.random.default_rng(5).random((7, 2304)) < 0.3
    assert np.array_equal(_row_counts(mask), np.count_nonzero(mask, axis=1))


@pytest.mark.parametrize("bs", [96, 48])
def test_fit_input_equals_block_times_rolled_block(bs: int) -> None:
    blocks = np.random.default_rng(6).standard_normal((3, bs * bs)).astype(np.float32)
    b = blocks.reshape(3, bs, bs)
    assert np.array_equal(_fit_input(blocks, bs, 0), blocks)
    for fit, shift in enumerate([(0, 1), (1, 0), (1, 1), (1, -1)], start=1):
        expect = (b * np.roll(b, shift, axis=(1, 2))).reshape(3, bs * bs)
        assert np.array_equal(_fit_input(blocks, bs, fit), expect)


@pytest.mark.parametrize("bs", [96, 48])
def test_compiled_mscn_equals_numpy_mscn_bit_for_bit(bs: int) -> None:
    y = y_channel(_texture(2 * bs * 3, bs * 5, 11))
    y[:bs, :bs] = 77.0  # a flat block: sigma 0, the coefficients exactly 0
    noisy = y + np.random.default_rng(2).random(y.shape, dtype=np.float32)  # second-scale-like
    for img in (y, noisy):
        got = compiled_kernels().mscn(img, bs, _tables().taps)
        assert np.array_equal(got, _mscn_blocks_numpy(img, bs))


def test_compiled_second_scale_equals_numpy_resize_bit_for_bit() -> None:
    y = y_channel(_texture(192, 288, 12))
    taps = np.array(_HALF_TAPS, dtype=np.float32)
    for img in (y, y + np.random.default_rng(4).random(y.shape, dtype=np.float32), y[:8, :12]):
        expect = _imresize_half(img / np.float32(255)) * np.float32(255)
        assert np.array_equal(compiled_kernels().half(img, taps), expect)


@pytest.mark.parametrize("bs", [96, 48])
def test_compiled_fit_sums_equal_numpy_fit_sums(bs: int) -> None:
    rng = np.random.default_rng(9)
    blocks = rng.standard_normal((7, bs * bs)).astype(np.float32)
    blocks[1] = np.abs(blocks[1])  # no negative value
    blocks[2, ::3] = 0.0  # zeros: neither negative nor positive, nor their products
    blocks[3] = 0.0  # a flat block
    blocks[4] *= np.float32(1e-30)  # products that underflow to zero
    got = compiled_kernels().fit_sums(blocks, bs)
    expect = _fit_sums_numpy(blocks, bs)
    sum_sq, sum_abs, neg_sq, counts = got
    assert np.array_equal(sum_sq, expect[0]) and np.array_equal(sum_abs, expect[1])
    assert np.array_equal(counts, expect[3])
    # the float64 sum here, numpy's a float32 dot: a few float32 ulps apart
    assert np.allclose(neg_sq, expect[2], rtol=4e-7, atol=0)


def test_compiled_kernels_refuse_partial_blocks() -> None:
    with pytest.raises(ValueError, match="whole 96x96 blocks"):
        compiled_kernels().mscn(np.zeros((100, 96), dtype=np.float32), 96, _tables().taps)
    with pytest.raises(ValueError, match="multiples of 4"):
        compiled_kernels().half(np.zeros((96, 98), dtype=np.float32), np.ones(8, dtype=np.float32))
    with pytest.raises(ValueError, match="rows of 2304"):
        compiled_kernels().fit_sums(np.zeros((2, 96), dtype=np.float32), 48)


def test_numpy_path_says_why_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    native._loaded.cache_clear()
    try:
        assert native.kernels() is None
        why = f"switched off ({native.ENV_SWITCH}=0)"
        assert native.status() == f"numpy path: compiled kernels {why}"
    finally:
        monkeypatch.delenv(native.ENV_SWITCH)
        native._loaded.cache_clear()
    compiled_kernels()
    assert native.status().startswith("compiled kernels (_native")


def _features_one_by_one(blocks: NDArray[np.float32], bs: int) -> NDArray[np.float64]:
    """BasicSR compute_feature per block, with the official float32 arithmetic."""
    t = _tables()
    rows = []
    for i in range(len(blocks)):
        feat: list[float] = []
        for fit in range(5):
            x = _fit_input(blocks[i : i + 1], bs, fit)[0]
            rhatnorm, left, right = _refit_exact(x)
            k = _nearest_grid(np.array([rhatnorm], dtype=np.float64))[0]
            bl, br = float(left) * t.beta_of_std[k], float(right) * t.beta_of_std[k]
            if fit == 0:
                feat += [t.gam[k], (bl + br) / 2]
            else:
                feat += [t.gam[k], (br - bl) * t.mean_factor[k], bl, br]
        rows.append(feat)
    return np.array(rows)


@pytest.mark.parametrize("bs", [96, 48])
def test_vectorised_fits_equal_block_by_block_fits(
    bs: int, monkeypatch: pytest.MonkeyPatch, niqe_path: str
) -> None:
    # Force the vectorised path (small images otherwise refit every block exactly).
    monkeypatch.setattr(_niqe_module, "_EXACT_BLOCKS", 0)
    y = y_channel(_texture(288, 384, 8))
    if bs == 48:
        y = _imresize_half(y / np.float32(255)) * np.float32(255)
    blocks = _mscn_blocks(y, bs)
    got = _scale_features(blocks, bs)
    expect = _features_one_by_one(blocks, bs)
    alpha_cols = [0, 2, 6, 10, 14]
    assert np.array_equal(got[:, alpha_cols], expect[:, alpha_cols])
    assert np.allclose(got, expect, rtol=2e-6, atol=1e-9)


def test_fits_of_small_images_are_the_official_ones_exactly() -> None:
    y = y_channel(_texture(288, 384, 8))
    blocks = _mscn_blocks(y, 96)
    got = _scale_features(blocks, 96)
    expect = _features_one_by_one(blocks, 96)
    assert np.allclose(got, expect, rtol=1e-15, atol=0)


def test_block_features_have_nan_exactly_for_flat_blocks() -> None:
    rgb = make_case({"kind": "half_flat", "h": 192, "w": 384, "seed": 4})
    feats = block_features(rgb)
    assert feats.shape == (8, 36)
    nan_rows = np.isnan(feats).any(axis=1)
    # Blocks are ordered column of blocks first (2 per column). Columns 0-1 are textured;
    # column 3 is flat, its coefficients all zero; column 2 is flat but for the 3 pixels
    # the 7x7 window reaches into the texture.
    assert list(nan_rows[:4]) == [False] * 4
    assert list(nan_rows[6:]) == [True] * 2
    assert np.isnan(feats[6:, [1, 3, 4, 5]]).all()
    assert (feats[6:, [0, 2]] == 0.2).all()  # argmin over NaN: the first grid value


def test_niqe_error_for_small_image_says_why() -> None:
    with pytest.raises(NIQEError, match=r"image 120x80 is smaller than one 96x96 NIQE block"):
        niqe(np.zeros((80, 120, 3), dtype=np.uint8))


def test_niqe_error_for_single_block_says_why() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    with pytest.raises(NIQEError, match="single 96x96 block"):
        niqe(rgb)


def test_niqe_error_for_flat_image_says_why() -> None:
    with pytest.raises(NIQEError, match="flat image"):
        niqe(np.full((200, 300, 3), 7, dtype=np.uint8))


def test_niqe_error_is_a_batchsr_error() -> None:
    assert issubclass(NIQEError, BatchSRError)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (np.zeros((100, 100, 3), dtype=np.float32), TypeError),
        (np.zeros((100, 100), dtype=np.uint8), ValueError),
        (np.zeros((100, 100, 4), dtype=np.uint8), ValueError),
    ],
)
def test_niqe_rejects_arrays_that_are_not_rgb_uint8(bad: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        niqe(bad)


def test_niqe_is_deterministic_and_ignores_pixels_outside_whole_blocks() -> None:
    rgb = _texture(200, 300, 9)
    value = niqe(rgb)
    changed = rgb.copy()
    changed[192:, :] = 0
    changed[:, 288:] = 255
    assert niqe(rgb) == value
    assert niqe(changed) == value
    assert math.isfinite(value) and value > 0


def _write(path: Path, arr: NDArray[Any], mode: str | None = None) -> Path:
    Image.fromarray(arr, mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def test_decode_rgb8_converts_grey_alpha_and_16bit_like_the_pipeline(tmp_path: Path) -> None:
    rgb = _texture(20, 30, 1)
    grey = rgb[..., 0]
    assert np.array_equal(decode_rgb8(_write(tmp_path / "g.png", grey)), np.dstack([grey] * 3))
    rgba = np.dstack([rgb, np.full((20, 30), 9, np.uint8)])
    assert np.array_equal(decode_rgb8(_write(tmp_path / "a.png", rgba)), rgb)
    v16 = np.array([[0, 128, 129, 385, 65535]], dtype=np.uint16)
    got = decode_rgb8(_write(tmp_path / "s.png", v16))
    assert list(got[0, :, 0]) == [0, 0, 1, 1, 255]  # round(v * 255 / 65535)
    assert (got == got[..., :1]).all()


def test_decode_rgb8_raises_decode_error_for_non_images(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DecodeError, match=r"bad\.png"):
        decode_rgb8(bad)


def test_score_folder_keeps_input_order_and_turns_failures_into_rows(tmp_path: Path) -> None:
    good = [_write(tmp_path / f"img{i}.png", _texture(200, 300, 20 + i)) for i in range(3)]
    tiny = _write(tmp_path / "tiny.png", _texture(50, 60, 1))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG broken")
    paths = [good[2], tiny, good[0], bad, good[1]]
    rows = score_folder(paths, workers=2)
    assert [r.name for r in rows] == [p.name for p in paths]
    for row, path in zip(rows, paths, strict=True):
        if path in good:
            assert row.error is None and row.niqe == niqe(decode_rgb8(path))
        else:
            assert row.niqe is None and row.error
    assert "smaller than one 96x96" in (rows[1].error or "")
    assert "broken.png: not a recognised image format" in (rows[3].error or "")
    assert score_folder(paths, workers=1) == rows
    assert isinstance(rows[0], FolderScore)
