"""``run.py score DIR``: NIQE of already-upscaled images, as the contest scored them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from batchsr.cli.flags import Parser
from batchsr.cli.render import score_lines
from batchsr.images import list_inputs
from batchsr.metrics.folder import niqe_report, score_folder
from batchsr.pipeline.report import write_report

__all__ = ["FLAGS", "HELP", "main"]

HELP = "NIQE of already-upscaled images as the contest scored them (DIR/niqe.json)"
#: score's one input is the positional folder.
FLAGS = {"input": "folder"}


def main(argv: Sequence[str]) -> int:
    p = Parser(
        prog="run.py score",
        description="Score a folder of SR images with the contest's NIQE (BasicSR 1.4.2).",
    )
    p.add_argument("folder", type=Path, help="folder of upscaled images")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    p.add_argument("--output", "-o", type=Path, help="report JSON (default DIR/niqe.json)")
    args = p.parse_args(argv)
    jobs = list_inputs(args.folder)
    rows = score_folder([j.path for j in jobs], workers=args.workers)
    report = niqe_report([j.name for j in jobs], rows)
    print(score_lines([j.name for j in jobs], rows, report))
    out = args.output or args.folder / "niqe.json"
    write_report(out, report)
    print(f"report {out}")
    return 0
