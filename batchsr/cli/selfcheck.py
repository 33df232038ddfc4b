"""``run.py selfcheck MODEL``: a bmodel on a TPU (or tpu-mlir's emulator) against its
ONNX; exit 0 on pass, 1 on fail."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from batchsr.cli.flags import Parser
from batchsr.cli.render import render_selfcheck
from batchsr.images import list_inputs
from batchsr.paths import data_folder
from batchsr.selfcheck import MIN_PSNR_DB, check_model

__all__ = ["FLAGS", "HELP", "main"]

HELP = "a bmodel on a TPU (or --emulate: tpu-mlir's emulator) vs its ONNX"
FLAGS = {"samples": "--samples", "input": "--input"}


def _parser() -> Parser:
    thresholds = ", ".join(f"{q} {v:g}" for q, v in MIN_PSNR_DB.items())
    p = Parser(
        prog="run.py selfcheck",
        description="Run random and real tiles (cut by the pipeline's tiler) through a bmodel "
        "(sail on one TPU, or tpu-mlir's BM1684X emulator with --emulate) and an ONNX "
        "reference (onnxruntime, CPU); print per stage shape the max abs difference and "
        "PSNR, the latency, and pass/fail.",
    )
    p.add_argument("model", help="a .bmodel file, or a model folder whose manifest lists one")
    p.add_argument("--reference", type=Path, help="ONNX reference (default: the folder's .onnx)")
    p.add_argument(
        "--emulate",
        action="store_true",
        help="run the bmodel on tpu-mlir's BM1684X emulator (needs `make tpu-env`; slow: "
        "seconds to minutes per call) instead of a TPU",
    )
    p.add_argument("--device", type=int, default=0, help="TPU id (see bm-smi); not with --emulate")
    p.add_argument(
        "--input", type=Path, help="folder of real images to cut tiles from (default examples/)"
    )
    p.add_argument("--image", type=Path, action="append", default=[], help="a real image to tile")
    p.add_argument("--samples", type=int, default=8, help="real tiles per stage shape")
    p.add_argument(
        "--repeats", type=int, help="extra timed calls per shape (default 5; 0 with --emulate)"
    )
    p.add_argument(
        "--min-psnr",
        type=float,
        help=f"pass threshold in dB (default by the manifest's quantization: {thresholds}; "
        "35 if unknown)",
    )
    return p


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    folder = args.input
    if folder is None and not args.image:
        folder = data_folder("examples")
    images = [*args.image, *(j.path for j in list_inputs(folder))] if folder else args.image
    result = check_model(
        args.model,
        emulate=args.emulate,
        device=args.device,
        reference=args.reference,
        images=images,
        samples=args.samples,
        repeats=args.repeats,
        min_psnr_db=args.min_psnr,
    )
    print(render_selfcheck(result))
    return 0 if result.passed else 1
