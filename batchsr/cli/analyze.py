"""``run.py analyze LOG...``: per-stage figures, the bottleneck and a suggestion."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from batchsr.analysis import RunLog, analyze_run, read_runs
from batchsr.cli.flags import Parser
from batchsr.cli.render import format_analysis, format_comparison, ramp

__all__ = ["FLAGS", "HELP", "main"]

HELP = "read run logs: per-stage busy time, the bottleneck, a timeline picture"
FLAGS: dict[str, str] = {}


def _read(paths: Sequence[Path]) -> list[RunLog]:
    """Every run in ``paths``, labelled by file name, or by the path given when two
    files of the same name (from different folders) would read alike."""
    per_file = [(path, read_runs(path)) for path in paths]
    runs = [run for _, file_runs in per_file for run in file_runs]
    if len({r.label for r in runs}) == len(runs):
        return runs
    return [
        dataclasses.replace(run, label=f"{path}{run.label[len(path.name) :]}")
        for path, file_runs in per_file
        for run in file_runs
    ]


def main(argv: Sequence[str]) -> int:
    p = Parser(
        prog="run.py analyze",
        description="Per-stage figures, the bottleneck stage and a suggestion, from run logs.",
    )
    p.add_argument("logs", nargs="+", type=Path, help="run.jsonl files (several: compared)")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="write a timeline picture")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    runs = _read(args.logs)
    analyses = [analyze_run(run) for run in runs]
    if args.plot is not None:
        from batchsr.timeline import plot_timeline

        titles = [
            f"{a.label}: {a.ok} images, {a.images_per_s or 0:.2f} images/s, "
            f"bottleneck {a.bottleneck or 'n/a'}"
            for a in analyses
        ]
        plot_timeline(runs, args.plot, titles=titles)
    if args.json:
        print(json.dumps([dataclasses.asdict(a) for a in analyses], indent=2, allow_nan=False))
        return 0
    spark = ramp()
    blocks = [format_analysis(a, ramp=spark) for a in analyses]
    if len(analyses) > 1:
        blocks.append(format_comparison(analyses))
    if args.plot is not None:
        blocks.append(f"timeline written to {args.plot}")
    print("\n\n".join(blocks))
    return 0
