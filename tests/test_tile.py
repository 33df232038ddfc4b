"""Tile planning and stitching: cores partition the image, and with a margin that
covers the receptive field the stitched result equals whole-image inference."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsr.engines.onnx import OnnxEngine
from batchsr.pipeline.stitch import Assembler, to_uint8
from batchsr.pipeline.tile import TileGeometry, _Batcher, plan_axis, plan_image, prepare_image
from batchsr.records import Slot, SRBatch
from tests.conftest import photo_like


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(1, 2000),
    tile=st.integers(8, 300),
    pad=st.integers(0, 40),
)
def test_plan_axis_cores_partition_and_keep_context(length: int, tile: int, pad: int) -> None:
    if tile <= 2 * pad:
        return
    plan = plan_axis(length, tile, pad)
    assert plan[0][1] == 0 and plan[-1][2] == length
    for (_, _, end), (_, start, _) in itertools.pairwise(plan):
        assert end == start  # cores are contiguous and disjoint
    for win, c0, c1 in plan:
        assert c0 < c1
        win_end = win + min(tile, max(length, tile))
        assert win >= 0 and (win_end <= length or length <= tile)
        # context margin on each side, unless the window meets the image edge
        assert c0 - win >= pad or win == 0
        assert win_end - c1 >= pad or win_end >= length


def test_plan_axis_uses_fewest_windows_for_a_contest_width() -> None:
    # 510 px with 128-px tiles and a 4-px margin: 5 windows, as 4 cannot cover it
    # (two edge cores of 124 and two middle cores of 120 reach only 488).
    assert len(plan_axis(510, 128, 4)) == 5


@settings(max_examples=150, deadline=None)
@given(
    height=st.integers(1, 120),
    width=st.integers(1, 120),
    tile=st.integers(10, 64),
    pad=st.integers(0, 4),
    batch=st.integers(1, 5),
)
def test_tiling_then_stitching_is_exact_for_an_identity_model(
    height: int, width: int, tile: int, pad: int, batch: int
) -> None:
    """With a pixel-wise model (nearest x2), stitching must reproduce it exactly."""
    if tile <= 2 * pad:
        return
    geometry = TileGeometry(
        tile_h=tile, tile_w=tile, pad=pad, batch=batch, static_batch=True, scale=2
    )
    rgb = photo_like(height, width, seed=height * 131 + width)
    plan = plan_image(0, "x", height, width, geometry, t_start_ns=0)
    chw = prepare_image(rgb, geometry)
    batcher, assembler, done = _Batcher(geometry), Assembler(), []
    batches = []
    for spec in plan.tiles:
        window = chw[:, spec.y : spec.y + spec.h, spec.x : spec.x + spec.w]
        assert window.shape == (3, tile, tile)
        out = batcher.add(window, Slot(plan=plan, tile=spec))
        if out is not None:
            batches.append(out)
    final = batcher.flush()
    if final is not None:
        assert final.data.shape[0] == batch  # static batches are padded to size
        batches.append(final)
    for b in batches:
        sr = b.data.repeat(2, axis=2).repeat(2, axis=3)
        done += assembler.add(SRBatch(batch_id=b.batch_id, data=sr, slots=b.slots, worker="w"))
    assert len(done) == 1
    expected = rgb.repeat(2, axis=0).repeat(2, axis=1)
    np.testing.assert_array_equal(done[0].rgb, expected)


def _tiled_float(engine: OnnxEngine, rgb: np.ndarray, geometry: TileGeometry) -> np.ndarray:
    """Tiled inference at float precision, through the real planner and windows."""
    height, width = rgb.shape[:2]
    plan = plan_image(0, "x", height, width, geometry, t_start_ns=0)
    chw = prepare_image(rgb, geometry)
    s = geometry.scale
    canvas = np.zeros((3, height * s, width * s), np.float32)
    for spec in plan.tiles:
        window = chw[None, :, spec.y : spec.y + spec.h, spec.x : spec.x + spec.w]
        out = engine.run(np.ascontiguousarray(window))[0]
        oy, ox = (spec.core_y0 - spec.y) * s, (spec.core_x0 - spec.x) * s
        h, w = (spec.core_y1 - spec.core_y0) * s, (spec.core_x1 - spec.core_x0) * s
        canvas[:, spec.core_y0 * s : spec.core_y1 * s, spec.core_x0 * s : spec.core_x1 * s] = out[
            :, oy : oy + h, ox : ox + w
        ]
    return canvas


def test_crop_tiling_with_receptive_field_margin_equals_whole_image(espcn_onnx: Path) -> None:
    engine = OnnxEngine(espcn_onnx)
    rgb = photo_like(150, 173, seed=3)
    whole = engine.run(prepare_image(rgb, TileGeometry(0, 0, 0, 1, False, 4))[None])[0]
    # ESPCN's receptive field: 5x5, 3x3, 3x3 convolutions -> 4 px of context.
    geometry = TileGeometry(tile_h=48, tile_w=48, pad=4, batch=1, static_batch=False, scale=4)
    tiled = _tiled_float(engine, rgb, geometry)
    assert np.abs(tiled - whole).max() <= 1e-5
    # and the uint8 stitcher agrees with rounding the whole-image result
    assert np.array_equal(to_uint8(tiled), to_uint8(whole))


def test_too_small_margin_leaves_seams(espcn_onnx: Path) -> None:
    """The equality above is not vacuous: without context the tiles differ at seams."""
    engine = OnnxEngine(espcn_onnx)
    rgb = photo_like(150, 173, seed=3)
    whole = engine.run(prepare_image(rgb, TileGeometry(0, 0, 0, 1, False, 4))[None])[0]
    geometry = TileGeometry(tile_h=48, tile_w=48, pad=0, batch=1, static_batch=False, scale=4)
    assert np.abs(_tiled_float(engine, rgb, geometry) - whole).max() > 1e-3
