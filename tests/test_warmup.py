"""The warm-up before the clock starts: the contest-timed path at every shape the first
images will use, so the first image's runtime carries no one-off costs."""

from __future__ import annotations

import math
from pathlib import Path

from batchsr.pipeline.run import warm_up, warmup_shapes
from batchsr.tiling import TileGeometry, round_up
from tests.helpers.delayed_engine import DelayedEngine


def _geometry(**changes: object) -> TileGeometry:
    base = {
        "tile_h": 32,
        "tile_w": 32,
        "pad": 4,
        "batch": 2,
        "static_batch": False,
        "scale": 2,
        "y_only": True,
        "dynamic_hw": True,
        "multiple": 1,
        "whole_pixels": 60 * 60,
    }
    return TileGeometry(**{**base, **changes})  # type: ignore[arg-type]


def test_a_model_of_free_shape_warms_up_at_the_tile_batch_and_the_largest_whole_window() -> None:
    geometry = _geometry(multiple=4)
    frame = round_up(math.isqrt(60 * 60) + 2 * 4, 4)
    assert warmup_shapes(geometry) == [(2, 1, 32, 32), (1, 1, frame, frame)]


def test_no_whole_window_where_images_are_always_tiled() -> None:
    for geometry in (
        _geometry(whole_pixels=0),
        _geometry(mode="plain"),
        _geometry(dynamic_hw=False),
        _geometry(static_batch=True, batch=4, y_only=False),
    ):
        assert len(warmup_shapes(geometry)) == 1, geometry


def test_warm_up_runs_the_engine_at_each_shape(espcn_onnx_y: Path) -> None:
    engine = DelayedEngine(espcn_onnx_y)  # no delay: it records the calls
    geometry = _geometry(scale=engine.scale)
    try:
        assert warm_up(engine, geometry) > 0
    finally:
        engine.close()
    assert engine.calls == warmup_shapes(geometry)
