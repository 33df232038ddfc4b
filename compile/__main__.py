"""``python -m compile MODEL --shape 1x3x128x128 --quantize F16 --out models/NAME/``, or
``--target onnx-int8 --calibration DIR`` for an INT8 ONNX beside the float one."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from batchsr.errors import BatchSRError, CompileError, reworded
from batchsr.logging import configure_logging
from batchsr.tpumlir import find_tpu_mlir
from batchsr.vocab import COMPILE_TARGETS, FILTER_NAMES, QUANTIZE
from compile.build import compile_model, parse_shape, register_bmodel


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m compile",
        description="Export a zoo model or checkpoint to ONNX and BM1684X bmodels (tpu-mlir), "
        "or to an INT8 ONNX for onnxruntime on the CPU (--target onnx-int8).",
    )
    p.add_argument(
        "model", nargs="?", help="zoo name (models/NAME or architecture id) or checkpoint"
    )
    p.add_argument(
        "--shape",
        action="append",
        required=True,
        help="NxCxHxW, repeatable: a bmodel stage each; onnx-int8: the tile batches "
        "calibration cuts (the INT8 ONNX takes any size)",
    )
    p.add_argument(
        "--target",
        choices=COMPILE_TARGETS,
        default="bm1684x",
        help="bm1684x (bmodels with tpu-mlir, default) or onnx-int8 (NAME_int8.onnx, "
        "onnxruntime static QDQ quantization; run it with run.py --quantize INT8)",
    )
    p.add_argument(
        "--quantize",
        choices=QUANTIZE,
        type=str.upper,
        help="bm1684x: default F16; onnx-int8: INT8 (its only one)",
    )
    p.add_argument("--calibration", type=Path, help="image folder for INT8 calibration")
    p.add_argument("--filter", choices=FILTER_NAMES, help="embed a PIL sharpening filter")
    p.add_argument("--out", type=Path, required=True, help="model folder, e.g. models/NAME/")
    p.add_argument("--name", help="model/net name (default: the --out folder's name)")
    p.add_argument("--log", type=Path, help="JSON-lines log (default: OUT/compile.log)")
    p.add_argument("--input-num", type=int, default=100, help="calibration samples per shape")
    p.add_argument(
        "--tpu-mlir",
        type=Path,
        metavar="DIR",
        help=(
            "a Python 3.10 environment with tpu_mlir (default: $BATCHSR_TPU_MLIR, then "
            "the repo's .venv-tpu from `make tpu-env`, then tools on PATH; none: write "
            "build_bmodel.sh)"
        ),
    )
    p.add_argument(
        "--register",
        action="store_true",
        help="only add the bmodel that build_bmodel.sh built to the folder's manifest",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.model is None and not args.register:
        _parser().error("MODEL is required (unless --register)")
    if args.register and args.target != "bm1684x":
        _parser().error("--register adds a bmodel built by build_bmodel.sh; drop --target")
    fresh = not args.out.exists()
    log_path = args.log or args.out / "compile.log"
    sink = configure_logging(log_path)
    quantize = args.quantize or ("INT8" if args.target == "onnx-int8" else "F16")
    try:
        shapes = [parse_shape(s) for s in args.shape]
        # An INT8 ONNX needs onnxruntime alone: no tpu-mlir environment is looked for.
        tpu = find_tpu_mlir(args.tpu_mlir) if args.target == "bm1684x" else None
        if args.register:
            register_bmodel(args.out, quantize=quantize, shapes=shapes, tpu_mlir=tpu)
            sink.close()
            print(f"registered the bmodel in {args.out / 'manifest.json'}")
            return 0
        result = compile_model(
            args.model,
            args.out,
            shapes=shapes,
            quantize=quantize,
            calibration=args.calibration,
            filter_name=args.filter,
            name=args.name,
            input_num=args.input_num,
            use_tools=tpu is not None,
            tpu_mlir=tpu,
            target=args.target,
        )
    except BatchSRError as err:
        sink.close()
        # A tool's failure keeps its output in the log; anything else (bad input) was
        # refused before building, so the log holds nothing worth keeping.
        keep_log = isinstance(err, CompileError) and log_path.is_file()
        first, *_tail = reworded(str(err), _FLAGS).splitlines() or [""]
        where = f"; tool output in {log_path}" if keep_log else ""
        print(f"error: {first}{where}", file=sys.stderr)
        if fresh:
            _remove_all_but(args.out, log_path if keep_log else None)
        return 2
    finally:
        sink.close()  # idempotent
    if result.int8 is not None:
        int8 = result.int8
        print(
            f"built {int8.path}: {int8.psnr_db:.1f} dB against the float ONNX on "
            f"{int8.samples} calibration batches"
        )
    elif result.script is not None:
        print(
            f"no tpu-mlir environment found: ONNX and manifest done; run {result.script} "
            "in a tpu-mlir environment (`make tpu-env` builds one) to build the bmodel"
        )
    else:
        print(f"built {result.bmodel}")
    return 0


# The compile library's parameters, as its messages name them (batchsr.errors), and the
# flags that set them here.
_FLAGS = {
    "shapes": "--shape",
    "calibration": "--calibration",
    "input_num": "--input-num",
    "target": "--target",
    "quantize": "--quantize",
}


def _remove_all_but(folder: Path, keep: Path | None) -> None:
    """Leave nothing half-written in a folder this run created (but ``keep``)."""
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        if keep is not None and child == keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    if keep is None or not keep.exists():
        folder.rmdir()


if __name__ == "__main__":
    sys.exit(main())
