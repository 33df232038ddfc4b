"""The warm-up before the clock starts: the contest-timed path once at the run's batch
shape (the engine call, and the chroma merge in Y mode), so the first image's runtime
carries fewer one-off costs."""

from __future__ import annotations

from pathlib import Path

from batchsr.pipeline.run import warm_up, warmup_shape
from batchsr.tiling import TileGeometry
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


def test_the_warm_up_shape_is_the_tile_batch_or_a_small_window() -> None:
    assert warmup_shape(_geometry()) == (2, 1, 32, 32)
    # Every image whole (no tile size): a window of the margin and 16 pixels, to the
    # model's size multiple.
    assert warmup_shape(_geometry(tile_h=0, tile_w=0, multiple=8)) == (2, 1, 24, 24)


def test_warm_up_runs_the_engine_once_at_that_shape(espcn_onnx_y: Path) -> None:
    engine = DelayedEngine(espcn_onnx_y)  # no delay: it records the calls
    geometry = _geometry(scale=engine.scale)
    try:
        assert warm_up(engine, geometry) > 0
    finally:
        engine.close()
    assert engine.calls == [warmup_shape(geometry)]
