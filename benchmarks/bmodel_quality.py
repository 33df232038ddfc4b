"""Quantisation quality of a model folder's bmodels, run on the BM1684X emulator.

    python benchmarks/bmodel_quality.py models/espcn [--tiles 16]

Cuts tiles from held-out photos (matplotlib's grace_hopper.jpg and, when ../shared is
checked out, the four contest inputs: none of them is a calibration image, which come
from examples/) with the pipeline's decoder and tiler, runs each bmodel the folder
lists on tpu-mlir's emulator (``--backend cmodel``) and the folder's F32 ONNX on
onnxruntime, and prints per bmodel: PSNR and max abs difference of the outputs (both
clipped to [0, 1]) over all tiles, the emulator's wall time per call, and tpu-mlir's
cost-model estimate of one call on the chip (from the manifest). Goals: F16 >= 50 dB,
INT8 >= 38 dB against F32.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batchsr.engines.cmodel import CmodelEngine  # noqa: E402
from batchsr.engines.onnx import OnnxEngine  # noqa: E402
from batchsr.manifest import load_manifest  # noqa: E402
from batchsr.sample_tiles import iter_tiles  # noqa: E402
from batchsr.selfcheck import compare  # noqa: E402

CONTEST = ROOT.parent / "shared" / "contest"
CONTEST_INPUTS = ("sample_0001.png", "sample_0002.png", "seed_0001.png", "seed_0005.png")
GOALS = {"F16": 50.0, "BF16": 40.0, "INT8": 38.0, "F32": 60.0}


def held_out() -> list[Path]:
    spec = importlib.util.find_spec("matplotlib")
    photos = []
    if spec is not None and spec.origin is not None:
        grace = Path(spec.origin).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
        if grace.is_file():
            photos.append(grace)
    photos += [CONTEST / n for n in CONTEST_INPUTS if (CONTEST / n).is_file()]
    return photos


def tiles_for(
    photos: list[Path], shape: tuple[int, int, int, int], count: int, margin: int, scale: int
) -> np.ndarray:
    """``count`` tiles spread over the photos (the same number from each, in order)."""
    per = -(-count // len(photos))
    picked = []
    for photo in photos:
        tiles = list(iter_tiles([photo], shape, pad=margin, scale=scale))
        step = max(1, len(tiles) // per)
        picked += list(islice(tiles[::step], per))
    return np.stack(picked[:count])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--tiles", type=int, default=16, help="tiles per bmodel")
    args = p.parse_args()
    manifest = load_manifest(args.folder)
    onnx = manifest.artifact("onnx")
    assert onnx is not None, "the folder has no ONNX reference"
    reference = OnnxEngine(args.folder / onnx.path)
    photos = held_out()
    print(f"held-out photos: {[ph.name for ph in photos]}; {args.tiles} tiles per bmodel")
    print(f"{'bmodel':34} {'quant':5} {'stage':12} {'PSNR dB':>8} {'max|d|':>8} "
          f"{'goal':>5} {'emu s/call':>10} {'chip ms/call':>12}")  # fmt: skip
    for art in (a for a in manifest.artifacts if a.format == "bmodel"):
        engine = CmodelEngine(args.folder / art.path, shapes=art.shapes, scale=manifest.scale)
        try:
            shape = max(engine.input_shapes, key=lambda s: s[0] or 0)
            n, c, h, w = (int(d or 0) for d in shape)
            x = tiles_for(photos, (n, c, h, w), args.tiles, manifest.margin, manifest.scale)
            x = x[: len(x) - len(x) % n]
            outs, wall = [], []
            for i in range(0, len(x), n):
                t = time.perf_counter()
                outs.append(engine.run(np.ascontiguousarray(x[i : i + n])))
                wall.append(time.perf_counter() - t)
        finally:
            engine.close()
        want = np.concatenate(
            [reference.run(np.ascontiguousarray(x[i : i + n])) for i in range(0, len(x), n)]
        )
        diff, psnr = compare(np.concatenate(outs), want)
        chip = next((s.estimated_ms for s in art.stages if s.shape == (n, c, h, w)), None)
        goal = GOALS.get(art.quantize, 0.0)
        print(
            f"{art.path:34} {art.quantize:5} {'x'.join(map(str, (n, c, h, w))):12} {psnr:8.2f} "
            f"{diff:8.5f} {goal:5.0f} {np.median(wall):10.1f} "
            f"{chip if chip is not None else float('nan'):12.3f}"
            + ("" if psnr >= goal else "  BELOW GOAL")
        )
    reference.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
