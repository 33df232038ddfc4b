"""``run.py tune --input DIR``: trial runs over buffer sizes and worker counts; the best
config is written as TOML for ``--config``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from batchsr.cli.flags import MODEL_FLAGS, Parser, add_model_flags, ints
from batchsr.cli.process import exit_if_engine_calls_hang
from batchsr.cli.render import format_trial, trial_header, tune_summary
from batchsr.config import load_config
from batchsr.images import list_inputs
from batchsr.logging import configure_logging
from batchsr.resolve import resolve_model
from batchsr.tune import tune, write_toml

__all__ = ["FLAGS", "HELP", "main"]

HELP = "trial runs over queue sizes and workers; writes a TOML for --config"
#: tune's parameters as the library names them, and the flags that set them.
FLAGS = {
    **MODEL_FLAGS,
    "input": "--input",
    "sample": "--sample",
    "repeat": "--repeat",
    "queue_sizes": "--queue-sizes",
    "vary": "--vary",
}


def _parser() -> Parser:
    p = Parser(
        prog="run.py tune",
        description="Trial runs on a sample of the input over buffer sizes and worker "
        "counts; prints the best config and writes it as TOML for --config.",
    )
    p.add_argument("--input", "-i", type=Path, required=True, help="folder of input images")
    add_model_flags(p, model_help="as for a run (default: the config's model)")
    p.add_argument("--config", type=Path, help="base config (default configs/default.toml)")
    p.add_argument("--sample", type=int, default=4, help="images per trial (default 4)")
    p.add_argument("--queue-sizes", default="2,4,8", help="buffer sizes to try (default 2,4,8)")
    p.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="STAGE",
        help="stage whose worker count to vary (repeatable; default: the two busiest)",
    )
    p.add_argument("--repeat", type=int, default=1, help="runs per config; the median counts")
    p.add_argument("--no-score", action="store_true", help="trials skip NIQE")
    p.add_argument("--output", "-o", type=Path, default=Path("results/tune"), help="trial logs")
    p.add_argument("--write", type=Path, help="TOML to write (default OUTPUT/tuned.toml)")
    return p


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "model.name": args.model,
            "model.backend": args.backend,
            "model.device": args.device,
            "model.quantize": args.quantize,
        }.items()
        if v is not None
    }
    # --no-score applies to the trials only: the written config keeps the base's
    # output settings, so a tuned run still scores unless told otherwise.
    written = load_config(args.config, overrides)
    base = (
        load_config(args.config, {**overrides, "output.score": False}) if args.no_score else written
    )
    jobs = list_inputs(args.input)
    model = resolve_model(base.model.name, backend=base.model.backend, quantize=base.model.quantize)
    queue_sizes = ints(args.queue_sizes, "--queue-sizes")
    print(trial_header(args.repeat))
    result = anyio.run(
        lambda: tune(
            jobs,
            base=base,
            model=model,
            out_dir=args.output,
            open_log=lambda path: configure_logging(path, append=True),
            sample=args.sample,
            queue_sizes=queue_sizes,
            stages=args.vary or None,
            repeat=args.repeat,
            on_trial=lambda t: print(format_trial(t), flush=True),
        )
    )
    summary = tune_summary(result, no_score=args.no_score)
    path = args.write or args.output / "tuned.toml"
    write_toml(
        dataclasses.replace(result.best.config, output=written.output),
        path,
        comments=[
            "written by `python run.py tune`: the recommended config; use it with",
            f"  python run.py --config {path} --input DIR",
            *summary,
            "ranked by images/s over the stage span; within 5% of the fastest the config",
            "with the fewest workers and smallest buffers wins",
            "",
            trial_header(args.repeat),
            *(format_trial(t) for t in result.trials),
        ],
    )
    print("\n".join(["", *summary, f"wrote {path}; use: python run.py --config {path} ..."]))
    exit_if_engine_calls_hang(0, result.abandoned_calls)
    return 0
