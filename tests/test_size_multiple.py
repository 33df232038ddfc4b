"""A model whose input height and width must be multiples of N (its manifest's
``size_multiple``, e.g. a pixel-unshuffle network) gets only such windows: tiles are
rounded up to a multiple, and a whole image, or one smaller than a tile, is extended to
the next multiple and cropped back after."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from batchsr.config import load_config
from batchsr.engines.base import Shape
from batchsr.errors import ModelError, ShapeMismatchError
from batchsr.images import list_inputs
from batchsr.manifest import Artifact, Manifest
from batchsr.pipeline.run import run_pipeline
from batchsr.resolve import ResolvedModel
from batchsr.tiling import TileGeometry, plan_image, prepare_image
from batchsr.vocab import TILE_MODES, TileMode

MULTIPLE = 4
SIZES = [(37, 53), (20, 18), (9, 70)]


class _MultipleOnlyEngine:
    """Nearest-neighbour x4 that refuses any height or width not a multiple of N, as
    a network with a stride-N stage does."""

    input_shapes: tuple[Shape, ...] = ((None, 3, None, None),)
    scale = 4

    def __init__(self) -> None:
        self.seen: set[tuple[int, int]] = set()

    def run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        h, w = batch.shape[2:]
        if h % MULTIPLE or w % MULTIPLE:
            raise ShapeMismatchError(f"{h}x{w} is not a multiple of {MULTIPLE}")
        self.seen.add((h, w))
        return batch.repeat(4, axis=2).repeat(4, axis=3)

    def close(self) -> None:
        pass


def _model(tmp_path: Path) -> ResolvedModel:
    path = tmp_path / "unshuffle.onnx"
    path.write_bytes(b"stands for a model")
    artifact = Artifact(path.name, "onnx", ((None, 3, None, None),), 18, "-")
    manifest = Manifest(
        "unshuffle", "rrdbnet", 4, 3, 3, (artifact,), margin=2, size_multiple=MULTIPLE
    )
    return ResolvedModel("unshuffle", path, "onnx", manifest=manifest)


def _image(h: int, w: int, seed: int) -> NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", TILE_MODES)
@pytest.mark.parametrize("tile", [0, 16, 24])
def test_every_window_is_a_multiple_and_lies_in_the_prepared_frame(
    mode: TileMode, tile: int
) -> None:
    geometry = TileGeometry(
        tile, tile, 2, 4, False, 4, mode=mode, dynamic_hw=True, multiple=MULTIPLE, rim=1
    )
    for i, (h, w) in enumerate(SIZES):
        plan = plan_image(i, "x", h, w, geometry, t_start_ns=0)
        chw, _ = prepare_image(_image(h, w, i), geometry)
        for spec in plan.tiles:
            assert spec.h % MULTIPLE == 0 and spec.w % MULTIPLE == 0, (h, w, spec)
            assert spec.y + spec.h <= chw.shape[1] and spec.x + spec.w <= chw.shape[2]


def test_the_model_reads_its_facts_through_its_manifest(tmp_path: Path) -> None:
    model = _model(tmp_path)
    assert (model.scale, model.margin, model.in_channels, model.size_multiple) == (4, 2, 3, 4)
    assert model.artifact is not None and model.artifact.path == model.path.name
    with pytest.raises(ModelError, match="contradicts its manifest"):
        ResolvedModel("x", model.path, "onnx", margin=7, manifest=model.manifest)
    bare = ResolvedModel("bare", model.path, "onnx", margin=3)
    assert (bare.margin, bare.scale, bare.size_multiple) == (3, None, 1)


@pytest.mark.asyncio
@pytest.mark.parametrize(("tile", "mode"), [(0, "crop"), (30, "crop"), (0, "plain"),
                                            (30, "plain"), (30, "blend")])  # fmt: skip
async def test_a_run_feeds_the_model_only_multiples_and_crops_back(
    tmp_path: Path, tile: int, mode: str
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    images = {f"img_{i}": _image(h, w, i) for i, (h, w) in enumerate(SIZES)}
    for name, rgb in images.items():
        Image.fromarray(rgb).save(folder / f"{name}.png")
    engine = _MultipleOnlyEngine()
    config = load_config(None, {"tiling.tile": tile, "tiling.mode": mode, "output.score": False})
    with anyio.fail_after(60):
        result = await run_pipeline(
            list_inputs(folder),
            config=config,
            model=_model(tmp_path),
            out_dir=tmp_path / "out",
            engine_factory=lambda: engine,
        )
    rows = json.loads(result.report_path.read_text())["A"][0]["images"]
    assert [r.get("error") for r in rows] == [None] * len(SIZES)
    assert result.geometry.multiple == MULTIPLE
    assert result.geometry.tile_h == (32 if tile else 0)  # 30 rounded up to a multiple
    assert engine.seen and all(h % MULTIPLE == 0 and w % MULTIPLE == 0 for h, w in engine.seen)
    for name, rgb in images.items():
        # A pixel-wise model: tiled or whole, the output is the nearest-neighbour x4.
        with Image.open(tmp_path / "out" / f"{name}.png") as out:
            assert np.array_equal(np.asarray(out), rgb.repeat(4, axis=0).repeat(4, axis=1))
