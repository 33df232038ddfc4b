"""The main job: ``run.py --model M --input DIR`` upscales, scores and reports a folder
(locally, or across a Ray cluster with ``--cluster``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio

from batchsr import vocab
from batchsr.allocator import configure_malloc
from batchsr.cli.flags import Parser, add_model_flags, overrides_from
from batchsr.cli.process import exit_if_engine_calls_hang, until_signalled
from batchsr.cli.render import (
    ProgressBar,
    cluster_line,
    engines_lost_line,
    format_summary,
    interrupted_line,
    subfolders_note,
)
from batchsr.config import Config, load_config
from batchsr.errors import BatchSRError, ConfigError
from batchsr.images import list_inputs, unread_subfolders
from batchsr.logging import LogSink, configure_logging
from batchsr.manifest import file_sha256
from batchsr.pipeline.run import RunResult, run_pipeline
from batchsr.pipeline.stop import StopRequest
from batchsr.records import Job
from batchsr.resolve import ResolvedModel, resolve_model
from batchsr.resume import ResumePlan, RunState, plan_resume

if TYPE_CHECKING:  # Ray's side is imported only for --cluster
    from batchsr.cluster.driver import ClusterOptions, ClusterResult

__all__ = ["build_parser", "main"]


def build_parser(subcommands: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The main job's flags, in groups; ``subcommands`` (name -> one line) are listed
    after them."""
    p = Parser(
        prog="run.py",
        description="Upscale a folder x4 with a super-resolution model, score it with the "
        "contest's NIQE and write the contest report.",
        epilog="subcommands (run.py SUBCOMMAND --help for their flags):\n"
        + "\n".join(f"  {name:10} {line}" for name, line in (subcommands or {}).items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _files(p)
    _model(p.add_argument_group("model and engines"))
    _pipeline(p.add_argument_group("pipeline (throughput and memory)"))
    _tiling(p.add_argument_group("tiling"))
    _outputs(p.add_argument_group("outputs"))
    _cluster(p.add_argument_group("cluster (Ray; pip install -r requirements-ray.txt)"))
    return p


def _files(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input", "-i", type=Path, required=True, help="an image file, or a folder of images"
    )
    p.add_argument(
        "--recursive",
        "-r",
        action="store_true",
        help="also read the folder's subfolders; their tree is mirrored under --output",
    )
    p.add_argument("--output", "-o", type=Path, help="output folder (default results/<model>/)")
    p.add_argument("--log", type=Path, help="JSON-lines log (default OUTPUT/run.jsonl)")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning"],
        help="run.jsonl detail: debug adds per-tile records (default info)",
    )
    p.add_argument("--config", type=Path, help="TOML config (default configs/default.toml)")
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="skip images an earlier run of this configuration finished in --output",
    )
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results --output holds, even of another configuration",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")


def _model(p: argparse._ArgumentGroup) -> None:
    add_model_flags(
        p, model_help="model name (models/NAME), model folder, or .onnx/.pt/.bmodel file"
    )
    p.add_argument("--threads", type=int, help="intra-op threads per engine (0 = default)")
    p.add_argument("--devices", metavar="IDS", help="sail: TPU ids, e.g. 0,1 (see bm-smi)")
    p.add_argument("--engines-per-device", type=int, metavar="K", help="sail: engines per TPU")
    p.add_argument(
        "--engine-timeout",
        type=float,
        metavar="S",
        help="fail an engine call after S s (0 = never; default 60, cmodel 1800)",
    )
    p.add_argument(
        "--no-warmup",
        action="store_true",
        help="no engine call before timing starts (the first image then pays the engine's "
        "one-off costs)",
    )


def _pipeline(p: argparse._ArgumentGroup) -> None:
    p.add_argument("--queue-size", type=int, metavar="N", help="buffer size of every stream")
    for flag, name, names, what in (
        ("--queue", "EDGE", vocab.EDGES, "buffer size of one stream"),
        ("--workers", "STAGE", vocab.MULTI_WORKER_STAGES, "tasks for one stage"),
    ):
        p.add_argument(
            flag,
            action="append",
            default=[],
            metavar=f"{name}=N",
            help=f"{what}; {name} is one of {', '.join(names)} (repeatable)",
        )
    p.add_argument(
        "--in-flight",
        type=int,
        metavar="N",
        help="images between the start of tiling and their stitched image at once (the "
        "contest runtime's span): small keeps images from queueing behind each other "
        "(default: one per infer worker, no limit for a static batch above one, which "
        "fills across images; 0 = only the buffer sizes bound it)",
    )
    p.add_argument(
        "--max-memory",
        type=int,
        metavar="MIB",
        help="keep the process's memory to about MIB: images in flight are bounded by their "
        "pixels (large ones take more of it), not only by buffer sizes (default: no limit)",
    )


def _tiling(p: argparse._ArgumentGroup) -> None:
    p.add_argument("--tile", type=int, help="tile size in input pixels (0 = whole image)")
    p.add_argument("--tile-pad", type=int, help="context margin cropped at stitching")
    p.add_argument("--batch", type=int, help="tiles per engine call (dynamic-batch models)")
    p.add_argument(
        "--whole-pixels",
        type=int,
        metavar="N",
        help="run an image of at most N pixels whole, untiled (models of free height and "
        "width, and a batch of one if it is static; default 262144 = 512x512; 0 always "
        "tiles)",
    )
    p.add_argument(
        "--tile-mode",
        choices=vocab.TILE_MODES,
        help="how tiles are cut and combined (default crop)",
    )
    p.add_argument(
        "--border",
        choices=vocab.BORDER_MODES,
        help="how the image is extended past its edges so border pixels have context "
        "(default replicate; zero is the network's own padding, a visible frame)",
    )
    p.add_argument(
        "--y-only", action="store_true", default=None, help="run the model on the Y channel only"
    )


def _outputs(p: argparse._ArgumentGroup) -> None:
    p.add_argument("--compress-level", type=int, help="PNG compression level 0-9")
    p.add_argument(
        "--filter",
        choices=vocab.FILTER_NAMES,
        help="PIL sharpening filter after stitching (outside the contest runtime)",
    )
    p.add_argument(
        "--suffix", help="appended to each output's name (a.png -> a_x4.png for _x4; default none)"
    )
    p.add_argument(
        "--ext",
        choices=vocab.OUTPUT_EXTS,
        help="output format: png (lossless, default, the contest's), jpg or webp (lossy: "
        "NIQE scores the pixels written, and the report says so)",
    )
    p.add_argument("--quality", type=int, help="jpg/webp quality 1-100 (default 95)")
    p.add_argument(
        "--rgb",
        action="store_true",
        default=None,
        help="write grey inputs' outputs as RGB (by default grey stays grey: one channel)",
    )
    p.add_argument("--no-score", action="store_true", help="skip NIQE")


def _cluster(cluster: argparse._ArgumentGroup) -> None:
    cluster.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run across a Ray cluster: ray (a Ray instance on this machine, loopback only), "
        "auto (the cluster this host belongs to), HOST:PORT (its GCS) or ray://HOST:PORT; "
        "--output must be storage every node reaches",
    )
    cluster.add_argument(
        "--workers-per-node",
        type=int,
        default=1,
        metavar="N",
        help="pipelines per node (default 1)",
    )
    cluster.add_argument(
        "--chunk", type=int, default=4, metavar="N", help="images per hand-out (default 4)"
    )
    cluster.add_argument(
        "--cluster-resource",
        action="append",
        default=[],
        metavar="NAME=AMOUNT",
        help="what each pipeline asks Ray for, instead of the default (the node's TPUs for "
        "a bmodel, else CPU=1); repeatable, e.g. CPU=2 or TPU=1",
    )


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What a run needs once the flags are read and nothing is written yet."""

    config: Config
    jobs: list[Job]
    model: ResolvedModel
    out_dir: Path
    plan: ResumePlan
    pixel_hash: str
    settings: dict[str, Any]
    log_path: Path
    cluster: ClusterOptions | None


def main(argv: Sequence[str], subcommands: Mapping[str, str] | None = None) -> int:
    """Upscale, score and report; the exit code: 0, 1 when every engine failed, 128 +
    signal when interrupted."""
    args = build_parser(subcommands).parse_args(argv)
    run = _prepare(args)
    result = _execute(args, run)
    return _conclude(args, run, result)


def _prepare(args: argparse.Namespace) -> _Prepared:
    config = load_config(args.config, overrides_from(args))
    if config.memory.mmap_threshold:  # before the pipeline's threads allocate
        configure_malloc(mmap_threshold=config.memory.mmap_threshold)
    cluster = _cluster_options(args) if args.cluster else None
    jobs = list_inputs(args.input, recursive=args.recursive)
    if not args.recursive and (skipped := unread_subfolders(args.input)):
        print(subfolders_note(args.input, skipped), file=sys.stderr)
    model = resolve_model(
        config.model.name, backend=config.model.backend, quantize=config.model.quantize
    )
    out_dir = config.output.dir or Path("results") / model.name
    if args.recursive and out_dir.resolve().is_relative_to(args.input.resolve()):
        raise ConfigError(
            f"--output {out_dir} is inside the --recursive input {args.input}: the next "
            "run would read its outputs as inputs; write the results outside that tree"
        )
    model_sha256 = file_sha256(model.path)
    pixel_hash = config.pixel_hash(model_sha256)
    settings = config.pixel_settings(model_sha256)
    plan = plan_resume(
        jobs,
        out_dir,
        pixel_hash=pixel_hash,
        resume=args.resume,
        overwrite=args.overwrite,
        settings=settings,
        suffix=config.output.suffix,
        ext=config.output.ext,
    )
    log_path = args.log or out_dir / "run.jsonl"
    return _Prepared(config, jobs, model, out_dir, plan, pixel_hash, settings, log_path, cluster)


def _execute(args: argparse.Namespace, run: _Prepared) -> RunResult | ClusterResult:
    """The run, locally or on the cluster; a run refused before any image ran leaves
    nothing behind that it created."""
    fresh = [p for p in (run.out_dir, run.log_path) if not p.exists()]
    sink = configure_logging(run.log_path, level=args.log_level, append=args.resume)
    state = RunState(
        run.out_dir, pixel_hash=run.pixel_hash, append=args.resume, settings=run.settings
    )
    # The arguments a local and a cluster run share.
    common: dict[str, Any] = {
        "config": run.config,
        "model": run.model,
        "out_dir": run.out_dir,
        "carried": run.plan.done,
        "state": state,
        "on_progress": ProgressBar(enabled=not args.quiet and sys.stderr.isatty()),
    }
    try:
        if run.cluster is not None:
            return _run_on_cluster(args, run.cluster, run.plan.todo, sink, common)
        return anyio.run(
            until_signalled, lambda stop: run_pipeline(run.plan.todo, stop=stop, **common)
        )
    except BatchSRError:
        state.close()
        sink.close()
        _remove_created(fresh)
        raise
    finally:
        state.close()
        sink.close()


def _conclude(args: argparse.Namespace, run: _Prepared, result: RunResult | ClusterResult) -> int:
    """What the user reads after the run, and the exit code."""
    if result.interrupted is not None:
        print(interrupted_line(result.interrupted, result.summary, len(run.jobs)), file=sys.stderr)
    if not args.quiet:
        print(_summary(run, result))
    code = 0 if result.interrupted is None else 128 + result.interrupted
    if result.engines_lost and code == 0:
        print(engines_lost_line(result.summary, result.report_path), file=sys.stderr)
        code = 1
    exit_if_engine_calls_hang(code, result.abandoned_calls)
    return code


def _summary(run: _Prepared, result: RunResult | ClusterResult) -> str:
    output = run.config.output
    rows = json.loads(result.report_path.read_text(encoding="utf-8"))["A"][0]["images"]
    summary = format_summary(result.summary, result.report_path, run.log_path, rows, output=output)
    if run.cluster is not None:
        summary += "\n" + cluster_line(cast("ClusterResult", result))
    return summary


def _cluster_options(args: argparse.Namespace) -> ClusterOptions:
    from batchsr.cluster.connect import parse_cluster
    from batchsr.cluster.driver import ClusterOptions

    for flag, value in (("--workers-per-node", args.workers_per_node), ("--chunk", args.chunk)):
        if value < 1:
            raise ConfigError(f"{flag} {value}: must be at least 1")
    resources: dict[str, float] = {}
    for item in args.cluster_resource:
        name, sep, amount = item.partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not sep or not name or value <= 0:
            raise ConfigError(
                f"--cluster-resource {item!r}: expected NAME=AMOUNT with AMOUNT > 0, e.g. TPU=1"
            )
        resources[name] = value
    return ClusterOptions(
        target=parse_cluster(args.cluster),
        workers_per_node=args.workers_per_node,
        chunk=args.chunk,
        resources=resources,
    )


def _run_on_cluster(
    args: argparse.Namespace,
    options: ClusterOptions,
    todo: Sequence[Job],
    sink: LogSink,
    common: Mapping[str, Any],
) -> ClusterResult:
    from batchsr.cluster.driver import run_cluster

    # The driver blocks on Ray; it runs in a thread while the event loop watches the
    # signals, and reads the stop within a quarter second.
    def drive(stop: StopRequest) -> ClusterResult:
        return run_cluster(
            todo,
            options=options,
            forward=sink.write_lines,
            stop=stop,
            log_level=args.log_level,
            **common,
        )

    return anyio.run(until_signalled, lambda stop: anyio.to_thread.run_sync(drive, stop))


def _remove_created(paths: Sequence[Path]) -> None:
    """Remove the files and folders a refused run created (folders only if emptied)."""
    for path in paths:
        if path.is_dir():
            for name in ("run.jsonl", "runstate.jsonl"):
                (path / name).unlink(missing_ok=True)
            if not any(path.iterdir()):
                path.rmdir()
        else:
            path.unlink(missing_ok=True)
