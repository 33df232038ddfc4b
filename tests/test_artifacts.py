"""What a user sees in the outputs: no frame along the borders, no lattice grain on
smooth content, no seams between tiles. The measures (batchsr.metrics.artifacts) are
checked on constructed cases first, so that a passing figure below means something."""

from __future__ import annotations

import itertools
from pathlib import Path

import anyio
import numpy as np
import pytest
from PIL import Image

from batchsr.config import load_config
from batchsr.images import list_inputs
from batchsr.metrics.artifacts import (
    border_energy_ratio,
    flat_boxes,
    lattice_ratio,
    seam_jump,
    textured_boxes,
)
from batchsr.pipeline.run import run_pipeline
from batchsr.resolve import resolve_model
from tests.helpers.images import photo_like
from tests.helpers.models import export_traced

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.png"))


def _gradient(h: int, w: int, *, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    g = 40 + 1.37 * xx * 64 / w + 0.91 * yy * 64 / h
    g += np.random.default_rng(seed).normal(0, noise, g.shape)
    return np.clip(np.rint(g), 0, 255).astype(np.uint8)


# The measures themselves.


def test_border_ratio_reads_a_frame_and_not_a_photo() -> None:
    rgb = photo_like(200, 240, seed=1)
    assert border_energy_ratio(rgb) == pytest.approx(1.0, abs=0.1)
    framed = rgb.copy()
    rng = np.random.default_rng(0)
    for band in (np.s_[:8], np.s_[-8:]):
        framed[band] = rng.integers(0, 256, framed[band].shape)
        framed[:, band] = rng.integers(0, 256, framed[:, band].shape)
    assert border_energy_ratio(framed) > 3


def test_lattice_ratio_reads_a_faint_period_4_grain_on_a_gradient() -> None:
    smooth = np.asarray(
        Image.fromarray(_gradient(64, 64).astype(np.float32)).resize((256, 256), Image.BICUBIC)
    ).astype(np.float64)
    assert lattice_ratio(smooth) < 2
    # a 4x4 pattern of +-0.3 grey levels: below one 8-bit step, and still found
    cell = np.random.default_rng(0).choice([-0.3, 0.3], size=(4, 4))
    assert lattice_ratio(smooth + np.tile(cell, (64, 64))) > 10


def test_flat_boxes_finds_the_flat_part() -> None:
    img = photo_like(64, 128, seed=2)
    img[:, 64:] = 90
    assert sorted(flat_boxes(img, 32, max_std=1.0)) == [(0, 64), (0, 96), (32, 64), (32, 96)]


def test_textured_boxes_find_the_busy_part_most_varied_first() -> None:
    img = np.full((64, 128, 3), 90, np.uint8)
    rng = np.random.default_rng(4)
    img[:32, :32] = rng.integers(0, 256, (32, 32, 3))  # noise: the most varied
    img[32:, 96:] = rng.integers(30, 200, (32, 32, 3))  # milder noise
    assert textured_boxes(img, 32) == [(0, 0), (32, 96)]
    assert textured_boxes(img, 32, limit=1) == [(0, 0)]


def test_seam_jump_is_zero_for_the_same_image_and_the_step_for_a_shifted_half() -> None:
    ref = photo_like(64, 64, seed=3)
    assert seam_jump(ref, ref) == 0.0
    shifted = ref.astype(np.int16)
    shifted[:, 32:] += 5
    assert seam_jump(np.clip(shifted, 0, 255).astype(np.uint8), ref) > 4


# The default model through the pipeline.


def _crops(tmp_path: Path, size: tuple[int, int] = (120, 160)) -> Path:
    """Central crops of the bundled example photos (real photos, small enough to be quick)."""
    folder = tmp_path / "in"
    folder.mkdir()
    h, w = size
    for path in EXAMPLES:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
        y0, x0 = (rgb.shape[0] - h) // 2, (rgb.shape[1] - w) // 2
        Image.fromarray(rgb[y0 : y0 + h, x0 : x0 + w]).save(folder / path.name)
    return folder


def _upscale(
    folder: Path, out: Path, model: str = "espcn", **overrides: object
) -> list[np.ndarray]:
    """``model`` (default: the default model, models/espcn) on every image in
    ``folder`` through the pipeline, unscored; the outputs in name order."""
    config = load_config(
        None, {"output.score": False, "model.warmup": False, "model.name": model, **overrides}
    )

    async def go() -> None:
        with anyio.fail_after(120):
            await run_pipeline(
                list_inputs(folder),
                config=config,
                model=resolve_model(model, backend="onnx"),
                out_dir=out,
            )

    anyio.run(go)
    images = []
    for path in sorted(out.glob("*.png")):
        with Image.open(path) as img:
            images.append(np.asarray(img.convert("RGB")))
    return images


@pytest.mark.parametrize(
    "settings",
    [
        {"tiling.mode": "crop"},
        {"tiling.tile": 0},
        {"tiling.mode": "plain"},
        {"tiling.mode": "average"},
        {"tiling.mode": "blend"},
    ],
    ids=["crop", "whole", "plain", "average", "blend"],
)
def test_no_frame_along_the_borders_of_real_photos(
    tmp_path: Path, settings: dict[str, object]
) -> None:
    """High-frequency energy of the outer 8 output pixels over the next 8, on real
    photos: the network's own zero padding reads 2-10x; the default border reads ~1."""
    folder = _crops(tmp_path)
    ratios = [border_energy_ratio(sr) for sr in _upscale(folder, tmp_path / "out", **settings)]
    assert len(ratios) == len(EXAMPLES)
    assert max(ratios) <= 1.2, ratios


def test_zero_border_leaves_the_frame_the_test_above_looks_for(tmp_path: Path) -> None:
    folder = _crops(tmp_path)
    ratios = [
        border_energy_ratio(sr)
        for sr in _upscale(folder, tmp_path / "out", **{"tiling.border": "zero"})
    ]
    assert np.mean(ratios) > 1.5, ratios


def _smooth_folder(tmp_path: Path) -> Path:
    """A smooth colour gradient with a little noise, as sky looks in a photo."""
    folder = tmp_path / "in"
    folder.mkdir()
    g = _gradient(150, 200, noise=1.0)
    rgb = np.stack([g, np.flipud(g), 255 - g], axis=2)
    Image.fromarray(rgb).save(folder / "gradient.png")
    return folder


@pytest.mark.parametrize(("mode", "bound"), [("blend", 2), ("average", 4)])
def test_average_and_blend_leave_no_seam_at_tile_64(tmp_path: Path, mode: str, bound: int) -> None:
    folder = _smooth_folder(tmp_path)
    (whole,) = _upscale(folder, tmp_path / "whole", **{"tiling.tile": 0})
    (tiled,) = _upscale(folder, tmp_path / "tiled", **{"tiling.tile": 64, "tiling.mode": mode})
    assert np.abs(tiled.astype(int) - whole).max() <= bound


def test_plain_tiles_do_leave_seams_on_the_same_gradient(tmp_path: Path) -> None:
    """The comparison above is not vacuous: tiles without context differ visibly."""
    folder = _smooth_folder(tmp_path)
    (whole,) = _upscale(folder, tmp_path / "whole", **{"tiling.tile": 0})
    (tiled,) = _upscale(folder, tmp_path / "tiled", **{"tiling.tile": 64, "tiling.mode": "plain"})
    assert np.abs(tiled.astype(int) - whole).max() > 4


def test_blend_beats_plain_and_crop_for_a_model_wider_than_the_margin(tmp_path: Path) -> None:
    """RRDBNet (Real-ESRGAN's network, random weights, 2 blocks) reads about 3 input
    pixels far enough to move an output by a grey level; at a 1-px margin, blending
    the overlaps hides seams better than cutting them (crop) or abutting tiles
    without context (plain). Measured away from the image's edges, where the
    frame each setting reads differs."""
    import torch

    from batchsr.models import get_arch

    torch.manual_seed(0)
    model = get_arch("rrdbnet").create(num_feat=16, num_block=2, num_grow_ch=8)
    with torch.no_grad():  # outputs around mid-grey with structure, not clipped to black
        model.module.conv_last.weight *= 20
        model.module.conv_last.bias.fill_(0.5)
    # Traced, not torch.export-ed (compile.onnx, tested in test_export): the same graph
    # in a tenth of the time.
    path = export_traced(model.module, tmp_path / "rrdb.onnx", shape=(1, 3, 32, 32))
    folder = tmp_path / "in"
    folder.mkdir()
    rgb = photo_like(96, 200, seed=7)
    Image.fromarray(rgb).save(folder / "p.png")

    def run(out: str, **settings: object) -> np.ndarray:
        (sr,) = _upscale(folder, tmp_path / out, str(path), **settings)
        return sr

    inner = np.s_[64:-64, 64:-64]
    whole = run("whole", **{"tiling.tile": 0})[inner]
    jumps = {}
    for mode in ("plain", "crop", "blend"):
        tiled = run(mode, **{"tiling.tile": 48, "tiling.tile_pad": 1, "tiling.mode": mode})
        jumps[mode] = seam_jump(tiled[inner], whole)
    assert jumps["blend"] < jumps["crop"] and jumps["blend"] < jumps["plain"], jumps


def test_lattice_measure_on_flat_regions_of_the_example_photos() -> None:
    """There are flat regions to measure in the bundled photos (sky, backgrounds)."""
    found = list(
        itertools.chain.from_iterable(
            flat_boxes(np.asarray(Image.open(p).convert("RGB")), 16, max_std=2.0) for p in EXAMPLES
        )
    )
    assert len(found) >= 8
