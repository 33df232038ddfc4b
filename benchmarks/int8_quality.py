"""Quality of a model folder's INT8 ONNX against its float ONNX, on held-out photos.

    python benchmarks/int8_quality.py [models/espcn]

The photos are those of ``bmodel_quality.py`` (matplotlib's grace_hopper.jpg and, when
../shared is checked out, the four contest inputs); none is a calibration image (those
come from examples/). Every tile the pipeline's decoder and tiler cut from each photo
at the default 4x128x128 batch runs through ``OnnxEngine`` as a run opens it, float and
INT8; per photo: PSNR and max abs difference of the outputs (clipped to [0, 1]). Goal:
38 dB (tests/test_int8.py holds the shipped model to it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from bmodel_quality import held_out  # noqa: E402

from batchsr.engines.onnx import OnnxEngine  # noqa: E402
from batchsr.manifest import load_manifest  # noqa: E402
from batchsr.sample_tiles import iter_tiles  # noqa: E402
from batchsr.selfcheck import compare  # noqa: E402

GOAL_DB = 38.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, nargs="?", default=ROOT / "models" / "espcn")
    args = p.parse_args()
    manifest = load_manifest(args.folder)
    onnx = [a for a in manifest.artifacts if a.format == "onnx"]
    floats = [a for a in onnx if a.quantize == "F32"]
    int8s = [a for a in onnx if a.quantize == "INT8"]
    if not floats or not int8s:
        print(f"{args.folder} lists no float and INT8 ONNX pair", file=sys.stderr)
        return 2
    reference = OnnxEngine(args.folder / floats[0].path, scale=manifest.scale)
    shape = (4, manifest.in_channels, 128, 128)
    print(f"{'artifact':20} {'photo':18} {'tiles':>5} {'PSNR dB':>8} {'max|d|':>8} {'goal':>5}")
    for art in int8s:
        engine = OnnxEngine(args.folder / art.path, scale=manifest.scale)
        for photo in held_out():
            tiles = list(iter_tiles([photo], shape, pad=manifest.margin, scale=manifest.scale))
            x = np.stack(tiles[: len(tiles) - len(tiles) % 4])
            batches = [np.ascontiguousarray(x[i : i + 4]) for i in range(0, len(x), 4)]
            got = np.concatenate([engine.run(b) for b in batches])
            want = np.concatenate([reference.run(b) for b in batches])
            diff, psnr = compare(got, want)
            flag = "" if psnr >= GOAL_DB else "  BELOW GOAL"
            print(
                f"{art.path:20} {photo.name:18} {len(x):5d} {psnr:8.2f} {diff:8.4f} "
                f"{GOAL_DB:5.0f}{flag}"
            )
        engine.close()
    reference.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
