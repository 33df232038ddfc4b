"""The seed team's sequential loop, re-implemented as the baseline for throughput.

One image at a time, as their ``run_bmodel.py`` did: decode, cut 128x128 tiles, run
the engine tile by tile, stitch, optional PIL filter, save the PNG (PIL's default
compression), read it back with OpenCV and score it with the contest's own NIQE
(BasicSR 1.4.2, fetched by ``official_niqe.py``). It uses the same model artifact and
backend as batchsr's run, so the comparison measures the pipeline, not the model.

Needs requirements-bench.txt (scipy, opencv-python-headless) beside requirements.txt.

    python benchmarks/seed_loop.py --input DIR --output OUT [--model espcn] [--filter NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from official_niqe import load_official_niqe  # noqa: E402

from batchsr.color import upscale_image  # noqa: E402
from batchsr.config import ModelConfig  # noqa: E402
from batchsr.engines import open_engine  # noqa: E402
from batchsr.filters import apply_filter  # noqa: E402
from batchsr.resolve import resolve_model  # noqa: E402

TILE = 128


@dataclass(frozen=True, slots=True)
class SeedResult:
    """What the baseline produced: per-image rows and the wall time of the loop."""

    rows: tuple[dict[str, Any], ...]
    wall_s: float


def upscale(engine: Any, rgb: np.ndarray) -> np.ndarray:
    """The seed's tiling: abutting 128x128 tiles, edge tiles zero-padded, no overlap.

    A one-channel (Y) model gets MATLAB's Y and the chroma is upscaled bicubically, as
    the seed did for its Y-only ESPCN and as batchsr's Y mode does.
    """
    return upscale_image(lambda x: _tiled(engine, x), rgb, channels=engine.input_shapes[0][1])


def _tiled(engine: Any, img: np.ndarray) -> np.ndarray:
    """(1, C, H, W) through the engine one zero-padded 128x128 tile at a time."""
    _, c, h, w = img.shape
    scale = engine.scale
    out = np.zeros((1, c, h * scale, w * scale), np.float32)
    for y in range(0, h, TILE):
        for x in range(0, w, TILE):
            tile = np.zeros((1, c, TILE, TILE), np.float32)
            th, tw = min(TILE, h - y), min(TILE, w - x)
            tile[0, :, :th, :tw] = img[0, :, y : y + th, x : x + tw]
            sr = engine.run(tile)[0]
            out[0, :, y * scale : (y + th) * scale, x * scale : (x + tw) * scale] = sr[
                :, : th * scale, : tw * scale
            ]
    return out


def run_seed_loop(
    paths: list[Path],
    out_dir: Path,
    *,
    model: str = "espcn",
    filter_name: str | None = None,
    official_niqe: Callable[..., Any] | None = None,
) -> SeedResult:
    import cv2

    niqe = official_niqe or load_official_niqe()
    resolved = resolve_model(model, backend="onnx")
    engine = open_engine(resolved, ModelConfig())
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    t_all = time.perf_counter()
    for path in paths:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        t0 = time.perf_counter()
        sr = upscale(engine, rgb)
        runtime = time.perf_counter() - t0
        if filter_name:
            sr = apply_filter(sr, filter_name)
        target = out_dir / f"{path.stem}.png"
        Image.fromarray(sr).save(target)
        value = float(niqe(cv2.imread(str(target)), 0, input_order="HWC", convert_to="y"))
        rows.append({"img_name": path.stem, "runtime": runtime, "niqe": value})
    return SeedResult(rows=tuple(rows), wall_s=time.perf_counter() - t_all)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--model", default="espcn")
    p.add_argument("--filter")
    args = p.parse_args()
    paths = sorted(q for q in args.input.iterdir() if q.suffix.lower() == ".png")
    result = run_seed_loop(paths, args.output, model=args.model, filter_name=args.filter)
    print(json.dumps({"wall_s": result.wall_s, "images": list(result.rows)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
