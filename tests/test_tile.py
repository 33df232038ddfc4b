"""Tile planning and stitching for every tiling mode: plans cover the image, stitching
a pixel-wise model is exact, ``crop`` with the receptive-field margin equals
whole-image inference, and only ``plain`` leaves seams on a smooth gradient."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsr.color import chroma_planes, rgb_to_ycbcr, upscale_chroma, ycbcr_to_rgb
from batchsr.engines.onnx import OnnxEngine
from batchsr.pipeline.stitch import Assembler
from batchsr.pipeline.tile import _Batcher
from batchsr.records import Slot, SRBatch, Stitched
from batchsr.tiling import (
    TileGeometry,
    plan_axis,
    plan_axis_plain,
    plan_image,
    prepare_image,
    to_uint8,
)
from batchsr.vocab import TILE_MODES, TileMode
from tests.helpers.images import photo_like


@settings(max_examples=300, deadline=None)
@given(length=st.integers(1, 2000), tile=st.integers(8, 300), pad=st.integers(0, 40))
def test_plan_axis_cores_partition_and_keep_context(length: int, tile: int, pad: int) -> None:
    if tile <= 2 * pad:
        return
    plan = plan_axis(length, tile, pad)
    assert plan[0][1] == 0 and plan[-1][2] == length
    for (_, _, end), (_, start, _) in itertools.pairwise(plan):
        assert end == start  # cores are contiguous and disjoint
    frame = length + 2 * pad  # the image extended by the margin on both sides
    for win, c0, c1 in plan:
        assert c0 < c1
        win_end = win + tile if tile else frame
        assert win >= 0 and (win_end <= frame or win == 0)
        # a full context margin on both sides of every core, the outermost included
        # (the core sits at c0 + pad in the frame)
        assert c0 + pad - win >= pad
        assert win_end - (c1 + pad) >= pad


def test_plan_axis_uses_fewest_windows_for_a_contest_width() -> None:
    # 510 px with 128-px tiles and a 4-px margin: 5 windows, as 4 cannot cover it
    # (a core is at most 128 - 2 x 4 = 120 px, so 4 reach only 480).
    assert len(plan_axis(510, 128, 4)) == 5


def test_plain_plan_centres_zero_padding_like_the_seed() -> None:
    offset, windows = plan_axis_plain(300, 128)  # 3 tiles = 384 px, 84 px of padding
    assert offset == 42
    assert windows == [(0, 0, 86), (128, 86, 214), (256, 214, 300)]


def _run_model(rgb: np.ndarray, geometry: TileGeometry, model) -> tuple[list[Stitched], list[int]]:
    """Tile, batch, run ``model`` on each batch and stitch, through the real stages'
    functions. Returns the stitched images and each batch's padded rows."""
    plan = plan_image(0, "x", *rgb.shape[:2], geometry, t_start_ns=0)
    chw, chroma = prepare_image(rgb, geometry)
    if chroma is not None:
        plan = type(plan)(**{**{f: getattr(plan, f) for f in plan.__slots__}, "chroma": chroma})
    batcher, assembler, done, padded = _Batcher(geometry), Assembler(), [], []
    batches = []
    for spec in plan.tiles:
        window = chw[:, spec.y : spec.y + spec.h, spec.x : spec.x + spec.w]
        assert window.shape == (geometry.channels, spec.h, spec.w)
        batches += batcher.add(window, Slot(plan=plan, tile=spec))
    if (final := batcher.flush()) is not None:
        batches.append(final)
    for b in batches:
        padded.append(b.padded)
        sr = model(b.data)
        done += assembler.add(SRBatch(batch_id=b.batch_id, data=sr, slots=b.slots, worker="w"))
    return done, padded


def _nearest2(batch: np.ndarray) -> np.ndarray:
    return batch.repeat(2, axis=2).repeat(2, axis=3)


@settings(max_examples=200, deadline=None)
@given(
    height=st.integers(1, 120),
    width=st.integers(1, 120),
    tile=st.integers(10, 64),
    pad=st.integers(0, 4),
    batch=st.integers(1, 5),
    mode=st.sampled_from(TILE_MODES),
    dynamic=st.booleans(),
    rim=st.booleans(),
)
def test_tiling_then_stitching_is_exact_for_a_pixelwise_model(
    height: int,
    width: int,
    tile: int,
    pad: int,
    batch: int,
    mode: TileMode,
    dynamic: bool,
    rim: bool,
) -> None:
    """With a pixel-wise model (nearest x2), every mode must reproduce it exactly, for
    static-shape models (small images padded up) and dynamic ones (taken as they are),
    with or without a rim of zero weight in the overlapping modes."""
    if tile <= 2 * pad:
        return
    geometry = TileGeometry(
        tile,
        tile,
        pad,
        batch,
        static_batch=not dynamic,
        scale=2,
        mode=mode,
        dynamic_hw=dynamic,
        rim=pad // 2 if rim else 0,
    )
    rgb = photo_like(height, width, seed=height * 131 + width)
    done, padded = _run_model(rgb, geometry, _nearest2)
    assert len(done) == 1 and all(p == 0 for p in padded[:-1])
    np.testing.assert_array_equal(done[0].rgb, rgb.repeat(2, axis=0).repeat(2, axis=1))


def _whole(engine: OnnxEngine, rgb: np.ndarray, border: int = 0) -> np.ndarray:
    """Whole-image inference of the image extended by ``border`` px, cropped back."""
    chw, _ = prepare_image(rgb, TileGeometry(0, 0, border, 1, False, 4))
    out = engine.run(chw[None])[0]
    c = 4 * border
    return out[:, c : out.shape[1] - c, c : out.shape[2] - c]


def _tiled_float(engine: OnnxEngine, rgb: np.ndarray, geometry: TileGeometry) -> np.ndarray:
    """Crop-mode tiled inference at float precision, through the real planner."""
    height, width = rgb.shape[:2]
    plan = plan_image(0, "x", height, width, geometry, t_start_ns=0)
    chw, _ = prepare_image(rgb, geometry)
    s = geometry.scale
    canvas = np.zeros((3, height * s, width * s), np.float32)
    for spec in plan.tiles:
        window = chw[None, :, spec.y : spec.y + spec.h, spec.x : spec.x + spec.w]
        out = engine.run(np.ascontiguousarray(window))[0]
        # the image sits at (pad, pad) in the frame the windows are cut from
        oy = (spec.core_y0 + geometry.pad - spec.y) * s
        ox = (spec.core_x0 + geometry.pad - spec.x) * s
        h, w = (spec.core_y1 - spec.core_y0) * s, (spec.core_x1 - spec.core_x0) * s
        canvas[:, spec.core_y0 * s : spec.core_y1 * s, spec.core_x0 * s : spec.core_x1 * s] = out[
            :, oy : oy + h, ox : ox + w
        ]
    return canvas


def test_crop_tiling_with_receptive_field_margin_equals_whole_image(espcn_onnx: Path) -> None:
    engine = OnnxEngine(espcn_onnx)
    rgb = photo_like(150, 173, seed=3)
    whole = _whole(engine, rgb, border=4)
    # ESPCN's receptive field: 5x5, 3x3, 3x3 convolutions -> 4 px of context.
    geometry = TileGeometry(tile_h=48, tile_w=48, pad=4, batch=1, static_batch=False, scale=4)
    tiled = _tiled_float(engine, rgb, geometry)
    assert np.abs(tiled - whole).max() <= 1e-5
    # and the uint8 stitcher agrees with rounding the whole-image result
    assert np.array_equal(to_uint8(tiled), to_uint8(whole))
    done, _ = _run_model(rgb, geometry, engine.run)
    assert np.array_equal(done[0].rgb, to_uint8(whole))


def test_too_small_margin_leaves_seams(espcn_onnx: Path) -> None:
    """The equality above is not vacuous: without context the tiles differ at seams."""
    engine = OnnxEngine(espcn_onnx)
    rgb = photo_like(150, 173, seed=3)
    geometry = TileGeometry(tile_h=48, tile_w=48, pad=0, batch=1, static_batch=False, scale=4)
    assert np.abs(_tiled_float(engine, rgb, geometry) - _whole(engine, rgb)).max() > 1e-3


def _max_jump_across_borders(img: np.ndarray, borders: list[int]) -> float:
    """Largest step across the given SR columns, beyond the image's own gradient."""
    grey = img.astype(np.float64).mean(axis=2)
    steps = np.abs(np.diff(grey, axis=1))
    typical = np.median(steps)
    return max(float(np.max(steps[:, b - 1]) - typical) for b in borders)


@pytest.mark.parametrize("mode", TILE_MODES)
def test_only_plain_leaves_a_jump_on_a_smooth_gradient(mode: TileMode) -> None:
    """A model with a wide footprint (a 9x9 box blur + nearest x4) on a smooth
    gradient: tiles that see no neighbours (plain) show the zero padding as a step."""
    yy, xx = np.mgrid[0:96, 0:200].astype(np.float64)
    rgb = np.repeat((40 + 160 * xx / 199 + 10 * yy / 95)[:, :, None], 3, axis=2).astype(np.uint8)

    def blur_up(batch: np.ndarray) -> np.ndarray:
        padded = np.pad(batch, ((0, 0), (0, 0), (4, 4), (4, 4)))  # zeros, like a conv
        out = np.zeros_like(batch)
        for dy, dx in itertools.product(range(9), range(9)):
            out += padded[:, :, dy : dy + batch.shape[2], dx : dx + batch.shape[3]]
        return (out / 81).repeat(4, axis=2).repeat(4, axis=3)

    geometry = TileGeometry(48, 48, pad=6, batch=2, static_batch=False, scale=4, mode=mode)
    done, _ = _run_model(rgb, geometry, blur_up)
    plan = plan_image(0, "x", 96, 200, geometry, t_start_ns=0)
    borders = sorted({t.core_x0 * 4 for t in plan.tiles if t.core_x0 > 0})
    # Away from the image's top/bottom rows, which every mode pads the same way.
    jump = _max_jump_across_borders(done[0].rgb[40:-40], borders)
    if mode == "plain":
        assert jump > 2
    else:
        assert jump <= 2


def test_y_only_mode_runs_the_model_on_y_and_keeps_bicubic_chroma() -> None:
    rgb = photo_like(50, 70, seed=5)
    geometry = TileGeometry(32, 32, 2, 3, static_batch=False, scale=2, y_only=True)
    seen: list[int] = []

    def y_model(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.shape[1])
        return _nearest2(batch)

    done, _ = _run_model(rgb, geometry, y_model)
    assert set(seen) == {1}
    ycc = rgb_to_ycbcr(rgb)
    expected_y = ycc[:, :, 0].repeat(2, axis=0).repeat(2, axis=1)
    chroma = upscale_chroma(chroma_planes(ycc), 2).transpose(1, 2, 0)
    expected = ycbcr_to_rgb(np.concatenate([expected_y[:, :, None], chroma], 2))
    # merge_y rounds half up where rint rounds half to even, and its banded products
    # sum in another order: a tie may land one level away.
    diff = np.abs(done[0].rgb.astype(int) - to_uint8(expected.transpose(2, 0, 1)))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_crop_tiling_equals_whole_image_for_fsrcnn(tmp_path: Path) -> None:
    """FSRCNN ends in a transposed convolution; its manifest margin must still make
    crop tiling equal whole-image inference."""
    import torch

    from batchsr.models import get_arch
    from compile.onnx import export_onnx

    torch.manual_seed(0)
    model = get_arch("fsrcnn").create(upscale=4, channels=3, d=16, s=8, m=2)
    for p in model.module.parameters():  # random weights large enough to matter
        p.data.normal_(0, 0.3)
    path = export_onnx(model.module, tmp_path / "fsrcnn.onnx", shape=(1, 3, 32, 32), dynamic=True)
    engine = OnnxEngine(path)
    rgb = photo_like(90, 110, seed=4)
    whole = _whole(engine, rgb, border=model.info.margin)
    geometry = TileGeometry(40, 40, model.info.margin, 1, False, 4)
    assert np.abs(_tiled_float(engine, rgb, geometry) - whole).max() <= 1e-5


def test_planner_picks_the_held_tile_size_with_fewest_calls() -> None:
    """A combined model holding 128x128 and 192x256 tiles: a contest-size image needs
    20 tiles of the first and 9 of the second; a 100x120 image fits one small tile."""
    from batchsr.tiling import tile_for

    geometry = TileGeometry(128, 128, 4, 1, True, 4, alt_tiles=((192, 256),))
    big = plan_image(0, "x", 408, 510, geometry, t_start_ns=0)
    assert len(big.tiles) == 9 and (big.tiles[0].h, big.tiles[0].w) == (192, 256)
    small = tile_for(100, 120, geometry)
    assert (small.tile_h, small.tile_w) == (128, 128)
    # and the windows the tiler cuts match the plan it made
    rgb = photo_like(408, 510)
    chw, _ = prepare_image(rgb, geometry)
    for spec in big.tiles:
        assert chw[:, spec.y : spec.y + spec.h, spec.x : spec.x + spec.w].shape == (3, 192, 256)
    done, _ = _run_model(rgb, geometry, lambda b: b.repeat(4, axis=2).repeat(4, axis=3))
    np.testing.assert_array_equal(done[0].rgb, rgb.repeat(4, axis=0).repeat(4, axis=1))


def test_a_free_size_model_takes_an_image_within_the_pixel_limit_whole() -> None:
    """A contest-size image (510x408) in 128-pixel tiles is 20 windows of 128x128,
    1.5 times the pixels of its one whole window; past the limit, or in ``plain`` mode,
    or with the limit off, it is tiled as before; a static model is never whole."""
    from batchsr.tiling import tile_for

    free = TileGeometry(128, 128, 4, 4, False, 4, dynamic_hw=True, whole_pixels=408 * 510)
    whole = plan_image(0, "x", 408, 510, free, t_start_ns=0)
    assert [(t.h, t.w) for t in whole.tiles] == [(416, 518)]
    tiled = plan_image(0, "x", 408, 510, dataclasses.replace(free, whole_pixels=0), t_start_ns=0)
    assert len(tiled.tiles) == 20
    assert len(tiled.tiles) * 128 * 128 > 1.5 * 416 * 518
    assert tile_for(409, 510, free).tile_h == 128  # one row past the limit
    assert tile_for(408, 510, dataclasses.replace(free, mode="plain")).tile_h == 128
    static = dataclasses.replace(free, dynamic_hw=False)
    assert tile_for(408, 510, static).tile_h == 128


def test_whole_images_stack_only_as_far_as_a_batch_of_tiles_reaches() -> None:
    """Batch 4 of 32x32 tiles: 4096 pixels a call. Whole 24x24 windows stack four to a
    call (the batch size); 40x40 ones two (3 x 1600 > 4096); 72x72 ones go alone."""
    geometry = TileGeometry(32, 32, 4, 4, False, 4, dynamic_hw=True, whole_pixels=64 * 64)

    def calls(side: int, images: int) -> list[int]:
        batcher, sizes = _Batcher(geometry), []
        for i in range(images):
            window = np.zeros((3, side, side), np.float32)
            plan = plan_image(i, f"{i}", side - 8, side - 8, geometry, t_start_ns=0)
            sizes += [len(b.slots) for b in batcher.add(window, Slot(plan, plan.tiles[0]))]
        last = batcher.flush()
        return sizes + ([len(last.slots)] if last else [])

    assert calls(24, 9) == [4, 4, 1]  # the batch size still caps small windows
    assert calls(40, 3) == [2, 1]
    assert calls(72, 3) == [1, 1, 1]


def test_a_static_batch_above_one_keeps_tiling_whole_images_would_go_out_padded() -> None:
    """Free height and width but four images a call, fixed: a whole image would fill one
    slot of four with zeros beside it, so it is tiled; with a static batch of one it
    runs whole."""
    from batchsr.tiling import tile_for

    four = TileGeometry(128, 128, 4, 4, True, 4, dynamic_hw=True, whole_pixels=408 * 510)
    assert tile_for(408, 510, four).tile_h == 128
    assert tile_for(408, 510, dataclasses.replace(four, batch=1)).tile_h == 0
