"""batchsr command line.

    python run.py --model espcn --input DIR      upscale, score and report a folder
    python run.py SUBCOMMAND ...                 one of the SUBCOMMANDS below

Thin by design: parse arguments, configure logging, call the library, print. Every
error batchsr raises on purpose ends the program with a one-line message and exit
code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from batchsr.config import EDGES, WORKER_STAGES, load_config
from batchsr.errors import BatchSRError, ConfigError
from batchsr.logging import configure_logging
from batchsr.pipeline.decode import list_inputs
from batchsr.pipeline.report import Progress, RunSummary
from batchsr.pipeline.run import run_pipeline
from batchsr.resolve import resolve_model


def _pairs(values: Sequence[str], known: Sequence[str], flag: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        key, sep, num = value.partition("=")
        if not sep or key not in known or not num.strip().isdigit():
            raise ConfigError(f"{flag} {value!r}: expected NAME=N with NAME one of {list(known)}")
        out[key] = int(num)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.py",
        description="Upscale a folder x4 with a super-resolution model, score it with the "
        "contest's NIQE and write the contest report.",
    )
    p.add_argument("--input", "-i", type=Path, required=True, help="folder of input images")
    p.add_argument(
        "--model", "-m", help="model name (models/NAME), model folder, or .onnx/.pt/.bmodel file"
    )
    p.add_argument("--backend", choices=["onnx", "torch", "sail"])
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, help="intra-op threads per engine (0 = default)")
    p.add_argument("--devices", metavar="IDS", help="sail: TPU ids, e.g. 0,1 (see bm-smi)")
    p.add_argument("--engines-per-device", type=int, metavar="K", help="sail: engines per TPU")
    p.add_argument(
        "--engine-timeout",
        type=float,
        metavar="S",
        help="fail an engine call after S s (0 = never)",
    )
    p.add_argument("--output", "-o", type=Path, help="output folder (default results/<model>/)")
    p.add_argument("--log", type=Path, help="JSON-lines log (default OUTPUT/run.jsonl)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    p.add_argument("--config", type=Path, help="TOML config (default configs/default.toml)")
    p.add_argument("--queue-size", type=int, metavar="N", help="buffer size of every stream")
    p.add_argument(
        "--queue",
        action="append",
        default=[],
        metavar="EDGE=N",
        help=f"buffer size of one stream; EDGE is one of {', '.join(EDGES)}",
    )
    p.add_argument(
        "--workers",
        action="append",
        default=[],
        metavar="STAGE=N",
        help=f"tasks for one stage; STAGE is one of {', '.join(WORKER_STAGES)}",
    )
    p.add_argument("--tile", type=int, help="tile size in input pixels (0 = whole image)")
    p.add_argument("--tile-pad", type=int, help="context margin cropped at stitching")
    p.add_argument("--batch", type=int, help="tiles per engine call (dynamic-batch models)")
    p.add_argument("--compress-level", type=int, help="PNG compression level 0-9")
    p.add_argument("--no-score", action="store_true", help="skip NIQE")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    return p


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted config keys set on the command line (None means 'not given')."""
    out: dict[str, Any] = {}
    if args.queue_size is not None:
        out.update({f"queues.{edge}": args.queue_size for edge in EDGES})
    out.update({f"queues.{k}": v for k, v in _pairs(args.queue, EDGES, "--queue").items()})
    out.update(
        {f"workers.{k}": v for k, v in _pairs(args.workers, WORKER_STAGES, "--workers").items()}
    )
    flags = {
        "model.name": args.model,
        "model.backend": args.backend,
        "model.device": args.device,
        "model.threads": args.threads,
        "model.devices": args.devices,
        "model.engines_per_device": args.engines_per_device,
        "model.engine_timeout_s": args.engine_timeout,
        "tiling.tile": args.tile,
        "tiling.tile_pad": args.tile_pad,
        "tiling.batch": args.batch,
        "output.compress_level": args.compress_level,
        "output.dir": args.output,
    }
    out.update({k: v for k, v in flags.items() if v is not None})
    if args.no_score:
        out["output.score"] = False
    return out


class ProgressBar:
    """One self-rewriting stderr line; shown only on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        width = 30
        filled = width * p.done // max(p.total, 1)
        rate = p.done / p.elapsed_s if p.elapsed_s > 0 else 0.0
        line = (
            f"\r[{'#' * filled}{'.' * (width - filled)}] {p.done}/{p.total} images "
            f"{rate:.2f} img/s  {p.errors} errors"
        )
        print(line, end="" if p.done < p.total else "\n", file=sys.stderr, flush=True)


def format_summary(s: RunSummary, report: Path, log: Path) -> str:
    def num(v: float | None, spec: str) -> str:
        return "n/a" if v is None else format(v, spec)

    left_out = f", {s.unscored} without NIQE" if s.unscored else ""
    return "\n".join(
        [
            f"{s.images} images: {s.ok} upscaled, {s.failed} failed{left_out}",
            f"wall {s.wall_s:.2f} s, {s.images_per_s:.2f} images/s",
            f"runtime_avg {num(s.runtime_avg_s, '.4f')} s, niqe_avg {num(s.niqe_avg, '.4f')} "
            f"over {s.scored} scored images",
            f"score: contest {num(s.score_contest, '.1f')} (per-image runtime), "
            f"amortized {num(s.score_amortized, '.1f')} (wall / images)",
            f"report {report}",
            f"log    {log}",
        ]
    )


def cmd_run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    config = load_config(args.config, overrides_from(args))
    jobs = list_inputs(args.input)
    model = resolve_model(config.model.name, backend=config.model.backend)
    out_dir = config.output.dir or Path("results") / model.name
    log_path = args.log or out_dir / "run.jsonl"
    sink = configure_logging(log_path, level=args.log_level)
    bar = ProgressBar(enabled=not args.quiet and sys.stderr.isatty())
    try:
        result = anyio.run(
            lambda: run_pipeline(jobs, config=config, model=model, out_dir=out_dir, on_progress=bar)
        )
    finally:
        sink.close()
    if not args.quiet:
        print(format_summary(result.summary, result.report_path, log_path))
    _exit_if_engine_calls_hang()
    return 0


def _exit_if_engine_calls_hang() -> None:
    """A device call abandoned after --engine-timeout may never return, and Python waits
    for every thread at exit: the run is complete and written, so leave without them."""
    from batchsr.pipeline.infer import abandoned_calls

    if abandoned_calls():
        print(
            f"warning: {abandoned_calls()} engine call(s) timed out and are still running; "
            "exiting without waiting for them",
            file=sys.stderr,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def cmd_selfcheck(argv: Sequence[str]) -> int:
    """Compare a bmodel on a TPU with its ONNX reference; exit 0 on pass, 1 on fail."""
    from batchsr.engines import open_engine
    from batchsr.engines.onnx import OnnxEngine
    from batchsr.selfcheck import run_selfcheck

    p = argparse.ArgumentParser(
        prog="run.py selfcheck",
        description="Run random and real tiles through a bmodel (sail, one TPU) and an ONNX "
        "reference (onnxruntime, CPU); print max abs difference, PSNR, latency, pass/fail.",
    )
    p.add_argument("model", help="a .bmodel file, or a model folder whose manifest lists one")
    p.add_argument("--reference", type=Path, help="ONNX reference (default: the folder's .onnx)")
    p.add_argument("--device", type=int, default=0, help="TPU id (see bm-smi)")
    p.add_argument("--image", type=Path, action="append", default=[], help="real image to tile")
    p.add_argument("--repeats", type=int, default=5, help="extra timed calls per shape")
    p.add_argument("--min-psnr", type=float, default=35.0, help="pass threshold in dB")
    args = p.parse_args(argv)
    model = resolve_model(args.model, backend="sail")
    reference_path = args.reference
    if reference_path is None and model.manifest is not None:
        onnx = model.manifest.artifact("onnx")
        reference_path = model.path.parent / onnx.path if onnx else None
    config = load_config(None, {"model.devices": str(args.device)}).model
    engine = open_engine(model, config, device_id=args.device)
    reference = OnnxEngine(reference_path) if reference_path else None
    try:
        r = run_selfcheck(
            engine,
            bmodel=model.path,
            device_id=args.device,
            reference=reference,
            reference_path=reference_path,
            images=args.image,
            repeats=args.repeats,
            min_psnr_db=args.min_psnr,
        )
    finally:
        engine.close()
    print(f"bmodel    {r.bmodel} on TPU {r.device_id}, scale x{r.scale}")
    print(f"shapes    {[list(s) for s in r.input_shapes]}")
    print(f"reference {r.reference or 'none (accuracy not checked)'}")
    for c in r.cases:
        shape = "x".join(map(str, c.shape))
        if c.psnr_db is None:
            print(f"  {c.kind:6} {shape}: finite={c.finite}")
        else:
            print(
                f"  {c.kind:6} {shape}: max abs diff {c.max_abs_diff:.6f}, "
                f"PSNR {c.psnr_db:.2f} dB, finite={c.finite}"
            )
    print(
        f"latency   min {r.latency_min_s * 1e3:.2f} ms, median {r.latency_median_s * 1e3:.2f} ms "
        f"per call over {r.calls} calls"
    )
    print(f"{'PASS' if r.passed else 'FAIL'}: {r.reason}")
    return 0 if r.passed else 1


# Subcommands: name -> handler taking the remaining arguments and returning an exit code.
# The main job (no subcommand) is cmd_run.
SUBCOMMANDS: dict[str, Callable[[Sequence[str]], int]] = {"selfcheck": cmd_selfcheck}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    handler = cmd_run
    if argv and argv[0] in SUBCOMMANDS:
        handler = SUBCOMMANDS[argv.pop(0)]
    try:
        return handler(argv)
    except BatchSRError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted after {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
