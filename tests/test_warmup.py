"""The warm-up before the clock starts: the contest-timed path at every shape the first
images will use, so the first image's runtime carries no one-off costs."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image

from batchsr.images import decode_image, probe_size
from batchsr.pipeline.run import WARM_WHOLE_MAX_S, warm_up, warmup_shapes
from batchsr.tiling import TileGeometry, whole_window
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


def test_a_model_of_free_shape_warms_up_at_the_tile_batch_and_the_first_images_window() -> None:
    geometry = _geometry(multiple=4)
    # 50 x 58 goes in whole as a frame of 58 x 66 (pad 4), extended to multiples of 4.
    assert warmup_shapes(geometry, (50, 58)) == [(2, 1, 32, 32), (1, 1, 60, 68)]
    assert whole_window(50, 58, geometry) == (60, 68)
    # Over whole_pixels, or unknown: only the tile batch.
    assert warmup_shapes(geometry, (70, 70)) == [(2, 1, 32, 32)]
    assert warmup_shapes(geometry) == [(2, 1, 32, 32)]


def test_no_whole_window_where_images_are_always_tiled() -> None:
    for geometry in (
        _geometry(whole_pixels=0),
        _geometry(mode="plain"),
        _geometry(dynamic_hw=False),
        _geometry(static_batch=True, batch=4, y_only=False),
    ):
        assert len(warmup_shapes(geometry, (20, 20))) == 1, geometry


def test_warm_up_runs_the_engine_at_each_shape(espcn_onnx_y: Path) -> None:
    engine = DelayedEngine(espcn_onnx_y)  # no delay: it records the calls
    geometry = _geometry(scale=engine.scale)
    try:
        assert warm_up(engine, geometry, (50, 58)) > 0
    finally:
        engine.close()
    assert engine.calls == warmup_shapes(geometry, (50, 58))
    assert len(engine.calls) == 2


def test_a_slow_model_skips_the_whole_window(espcn_onnx_y: Path) -> None:
    """A model whose tile batch takes 0.3 s would take seconds on the whole window: the
    warm-up stops at the tile batch rather than cost a heavy model most of a minute."""
    engine = DelayedEngine(espcn_onnx_y, delay_s=0.3)
    geometry = _geometry(scale=engine.scale)
    tiles, whole = warmup_shapes(geometry, (60, 60))
    assert 0.3 * math.prod(whole) / math.prod(tiles) > WARM_WHOLE_MAX_S
    try:
        warm_up(engine, geometry, (60, 60))
    finally:
        engine.close()
    assert engine.calls == [tiles]


def test_the_size_probe_reads_the_header_upright(tmp_path: Path) -> None:
    """An EXIF-rotated JPEG reports the size it decodes to; a non-image, None."""
    img = Image.new("RGB", (40, 24))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "turned.jpg", exif=exif)
    assert probe_size(tmp_path / "turned.jpg") == (40, 24)
    assert decode_image(tmp_path / "turned.jpg", max_pixels=10**6)[0].shape[:2] == (40, 24)
    (tmp_path / "notes.png").write_text("not an image")
    assert probe_size(tmp_path / "notes.png") is None
