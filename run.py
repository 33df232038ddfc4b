"""batchsr command line.

    python run.py --model espcn --input DIR      upscale, score and report a folder
    python run.py SUBCOMMAND ...                 one of the SUBCOMMANDS below

Thin by design: parse arguments, configure logging, call the library, print. Every
error batchsr raises on purpose ends the program with a one-line message and exit
code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import anyio

from batchsr.allocator import configure_malloc
from batchsr.analysis import RunAnalysis, analyze_run, read_runs
from batchsr.config import Config, load_config
from batchsr.errors import BatchSRError, ConfigError
from batchsr.images import list_inputs, unread_subfolders
from batchsr.logging import configure_logging
from batchsr.manifest import file_sha256
from batchsr.metrics.folder import score_folder
from batchsr.pipeline.report import Progress, RunSummary, write_report
from batchsr.pipeline.run import RunResult, run_pipeline
from batchsr.pipeline.stop import StopRequest
from batchsr.resolve import resolve_model
from batchsr.resume import RunState, plan_resume
from batchsr.selfcheck import SelfCheckResult
from batchsr.tune import Trial, tune, write_toml
from batchsr.vocab import (
    BACKENDS,
    BORDER_MODES,
    DEVICES,
    EDGES,
    FILTER_NAMES,
    MULTI_WORKER_STAGES,
    OUTPUT_EXTS,
    STAGES,
    TILE_MODES,
)

if TYPE_CHECKING:  # Ray's side is imported only for --cluster
    from batchsr.cluster.driver import ClusterOptions, ClusterResult

T = TypeVar("T")


def _pairs(values: Sequence[str], known: Sequence[str], flag: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        key, sep, num = value.partition("=")
        if not sep or key not in known or not num.strip().isdigit():
            raise ConfigError(f"{flag} {value!r}: expected NAME=N with NAME one of {list(known)}")
        out[key] = int(num)
    return out


BACKEND_HELP = (
    "onnx (onnxruntime, default), torch, sail (a bmodel on a SOPHGO TPU), or cmodel (a "
    "bmodel on tpu-mlir's BM1684X emulator, needs `make tpu-env`: SLOW, seconds to minutes "
    "per tile batch; for checking a bmodel before a TPU host, not for serving)"
)


SUBCOMMAND_HELP = {
    "score": "NIQE of already-upscaled images as the contest scored them (DIR/niqe.json)",
    "analyze": "read run logs: per-stage busy time, the bottleneck, a timeline picture",
    "tune": "trial runs over queue sizes and workers; writes a TOML for --config",
    "selfcheck": "a bmodel on a TPU (or --emulate: tpu-mlir's emulator) vs its ONNX",
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: a bad flag prints what was wrong and where help
    is, not the whole usage block (the message is what the user needs to read)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="run.py",
        description="Upscale a folder x4 with a super-resolution model, score it with the "
        "contest's NIQE and write the contest report.",
        epilog="subcommands (run.py SUBCOMMAND --help for their flags):\n"
        + "\n".join(f"  {name:10} {line}" for name, line in SUBCOMMAND_HELP.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--input", "-i", type=Path, required=True, help="an image file, or a folder of images"
    )
    p.add_argument(
        "--recursive",
        "-r",
        action="store_true",
        help="also read the folder's subfolders; their tree is mirrored under --output",
    )
    p.add_argument(
        "--model", "-m", help="model name (models/NAME), model folder, or .onnx/.pt/.bmodel file"
    )
    p.add_argument("--backend", choices=BACKENDS, help=BACKEND_HELP)
    p.add_argument(
        "--device",
        choices=DEVICES,
        help="onnx/torch: where the model runs (cuda without a CUDA runtime is an error)",
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
    p.add_argument("--output", "-o", type=Path, help="output folder (default results/<model>/)")
    p.add_argument("--log", type=Path, help="JSON-lines log (default OUTPUT/run.jsonl)")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning"],
        help="run.jsonl detail: debug adds per-tile records (default info)",
    )
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
        help=f"tasks for one stage; STAGE is one of {', '.join(MULTI_WORKER_STAGES)}",
    )
    p.add_argument("--tile", type=int, help="tile size in input pixels (0 = whole image)")
    p.add_argument("--tile-pad", type=int, help="context margin cropped at stitching")
    p.add_argument("--batch", type=int, help="tiles per engine call (dynamic-batch models)")
    p.add_argument(
        "--tile-mode",
        choices=TILE_MODES,
        help="how tiles are cut and combined (default crop)",
    )
    p.add_argument(
        "--border",
        choices=BORDER_MODES,
        help="how the image is extended past its edges so border pixels have context "
        "(default replicate; zero is the network's own padding, a visible frame)",
    )
    p.add_argument(
        "--y-only", action="store_true", default=None, help="run the model on the Y channel only"
    )
    p.add_argument("--compress-level", type=int, help="PNG compression level 0-9")
    p.add_argument(
        "--filter",
        choices=FILTER_NAMES,
        help="PIL sharpening filter after stitching (outside the contest runtime)",
    )
    p.add_argument(
        "--suffix", help="appended to each output's name (a.png -> a_x4.png for _x4; default none)"
    )
    p.add_argument(
        "--ext",
        choices=OUTPUT_EXTS,
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
    p.add_argument(
        "--no-warmup",
        action="store_true",
        help="no engine call before timing starts (the first image then pays the engine's "
        "one-off costs)",
    )
    p.add_argument(
        "--in-flight",
        type=int,
        metavar="N",
        help="images between the start of tiling and their stitched image at once (the "
        "contest runtime's span): small keeps images from queueing behind each other; 0 = "
        "only the buffer sizes bound it",
    )
    p.add_argument(
        "--max-memory",
        type=int,
        metavar="MIB",
        help="keep the process's memory to about MIB: images in flight are bounded by their "
        "pixels (large ones take more of it), not only by buffer sizes (default: no limit)",
    )
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
    cluster = p.add_argument_group("cluster (Ray; pip install -r requirements-ray.txt)")
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
    return p


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted config keys set on the command line (None means 'not given')."""
    out: dict[str, Any] = {}
    if args.queue_size is not None:
        out.update({f"queues.{edge}": args.queue_size for edge in EDGES})
    out.update({f"queues.{k}": v for k, v in _pairs(args.queue, EDGES, "--queue").items()})
    workers = _pairs(args.workers, MULTI_WORKER_STAGES, "--workers")
    out.update({f"workers.{k}": v for k, v in workers.items()})
    flags = {
        "model.name": args.model,
        "model.backend": args.backend,
        "model.device": args.device,
        "model.threads": args.threads,
        "model.devices": args.devices,
        "model.engines_per_device": args.engines_per_device,
        "model.engine_timeout_s": args.engine_timeout,
        "model.warmup": False if args.no_warmup else None,
        "memory.max_mib": args.max_memory,
        "tiling.in_flight": args.in_flight,
        "output.suffix": args.suffix,
        "output.ext": args.ext,
        "output.quality": args.quality,
        "output.rgb": args.rgb,
        "tiling.tile": args.tile,
        "tiling.tile_pad": args.tile_pad,
        "tiling.batch": args.batch,
        "tiling.mode": args.tile_mode,
        "tiling.border": args.border,
        "tiling.y_only": args.y_only,
        "output.compress_level": args.compress_level,
        "output.dir": args.output,
        "output.filter": args.filter,
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


_MAX_LISTED = 20


def format_summary(
    s: RunSummary,
    report: Path,
    log: Path,
    rows: Sequence[dict[str, Any]] = (),
    *,
    score: bool = True,
) -> str:
    """The run's summary: counts, one line per image that failed or has no NIQE (file
    name and reason), the figures, and why any figure is n/a."""

    def num(v: float | None, spec: str, why: str) -> str:
        return f"n/a ({why})" if v is None else format(v, spec)

    left_out = f", {s.unscored} without NIQE" if s.unscored else ""
    resumed = f" ({s.resumed} carried over by --resume)" if s.resumed else ""
    lines = [f"{s.images} images: {s.ok} upscaled{resumed}, {s.failed} failed{left_out}"]
    bad = [r for r in rows if r.get("error")]
    for r in bad[:_MAX_LISTED]:
        what = "failed" if r.get("runtime") is None else "no NIQE"
        lines.append(f"  {what}: {r['img_name']}: {r['error']}")
    if len(bad) > _MAX_LISTED:
        lines.append(f"  ... and {len(bad) - _MAX_LISTED} more in {report}")
    no_runtime = "no image was upscaled"
    if not score:
        no_niqe = "NIQE off: --no-score"
    elif s.ok == 0:
        no_niqe = no_runtime
    else:
        no_niqe = "no output could be scored"
    if s.niqe_avg is None:
        no_score = "no niqe_avg"
    elif s.runtime_avg_s is None:
        no_score = "no runtime_avg"
    else:
        no_score = f"niqe_avg {s.niqe_avg:.4f} >= 7, where sqrt(7 - niqe_avg) is undefined"
    lines += [
        f"wall {s.wall_s:.2f} s, {s.images_per_s:.2f} images/s",
        f"runtime_avg {num(s.runtime_avg_s, '.4f', no_runtime)} s per image (contest: tiling "
        f"to stitched, queueing included), service {num(s.service_avg_s, '.4f', no_runtime)} s "
        "(its own work)",
        f"niqe_avg {num(s.niqe_avg, '.4f', no_niqe)} over {s.scored} scored images",
        f"score: contest {num(s.score_contest, '.1f', no_score)} (per-image runtime), "
        f"amortized {num(s.score_amortized, '.1f', no_score)} (wall / images)",
        f"report {report}",
        f"log    {log}",
    ]
    return "\n".join(lines)


def cmd_run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    config = load_config(args.config, overrides_from(args))
    if config.memory.mmap_threshold:  # before the pipeline's threads allocate
        configure_malloc(mmap_threshold=config.memory.mmap_threshold)
    cluster = _cluster_options(args) if args.cluster else None
    jobs = list_inputs(args.input, recursive=args.recursive)
    if not args.recursive and (skipped := unread_subfolders(args.input)):
        shown = ", ".join(d.name for d in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        print(
            f"note: {len(skipped)} subfolder(s) of {args.input} with images not read ({shown}); "
            "pass --recursive to include them",
            file=sys.stderr,
        )
    model = resolve_model(config.model.name, backend=config.model.backend)
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
    fresh = [p for p in (out_dir, log_path) if not p.exists()]
    sink = configure_logging(log_path, level=args.log_level, append=args.resume)
    state = RunState(out_dir, pixel_hash=pixel_hash, append=args.resume, settings=settings)
    bar = ProgressBar(enabled=not args.quiet and sys.stderr.isatty())
    result: RunResult | ClusterResult
    try:
        if cluster is not None:
            result = _run_on_cluster(args, cluster, config, model, out_dir, plan, state, sink, bar)
        else:
            result = anyio.run(
                _until_signalled,
                lambda stop: run_pipeline(
                    plan.todo,
                    config=config,
                    model=model,
                    out_dir=out_dir,
                    on_progress=bar,
                    stop=stop,
                    carried=plan.done,
                    state=state,
                ),
            )
    except BatchSRError:
        # Refused before any image ran (an engine that cannot open): leave behind
        # nothing this run created.
        state.close()
        sink.close()
        _remove_created(fresh)
        raise
    finally:
        state.close()
        sink.close()
    if result.interrupted is not None:
        print(
            f"\ninterrupted by {signal.Signals(result.interrupted).name}: "
            f"{result.summary.images} of {len(jobs)} images finished and reported",
            file=sys.stderr,
        )
    if not args.quiet:
        rows = json.loads(result.report_path.read_text(encoding="utf-8"))["A"][0]["images"]
        summary = format_summary(
            result.summary, result.report_path, log_path, rows, score=config.output.score
        )
        if config.output.ext != "png":
            summary += (
                f"\noutputs {config.output.ext.upper()} at quality {config.output.quality}: "
                "lossy, so NIQE scores the compressed pixels (the report says so)"
            )
        if cluster is not None:
            summary += "\n" + _cluster_line(result)  # type: ignore[arg-type]
        print(summary)
    code = 0 if result.interrupted is None else 128 + result.interrupted
    if result.engines_lost and code == 0:
        print(
            f"error: every engine failed ({result.summary.failed} images could not be "
            f"upscaled); the report {result.report_path} holds the rows, the log the causes",
            file=sys.stderr,
        )
        code = 1
    _exit_if_engine_calls_hang(code, result.abandoned_calls)
    return code


async def _until_signalled(run: Callable[[StopRequest], Awaitable[T]]) -> T:
    """``run(stop)`` beside :func:`stop_on_signals`, so the first SIGINT/SIGTERM stops
    it cleanly; what it raises comes out as itself, not inside an ExceptionGroup."""
    stop = StopRequest()
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signals, stop)
        try:
            result = await run(stop)
        except Exception as err:
            failure = err
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def stop_on_signals(stop: StopRequest) -> None:
    """The first SIGINT/SIGTERM requests ``stop`` (the run keeps every finished image);
    from then on a second one exits the process at once, with 128 + its number. Runs
    until cancelled, then puts the previous handlers back."""
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
    try:
        with anyio.open_signal_receiver(*_STOP_SIGNALS) as received:
            async for signum in received:
                stop.request(int(signum))
                break
        # From here on the user wants out now: no second graceful stop. A handler, not
        # the receiver: it acts even while the event loop is blocked.
        for sig in _STOP_SIGNALS:
            signal.signal(sig, _exit_now)
        await anyio.sleep_forever()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _exit_now(signum: int, _frame: object) -> None:
    os._exit(128 + signum)


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
    config: Config,
    model: Any,
    out_dir: Path,
    plan: Any,
    state: RunState,
    sink: Any,
    bar: ProgressBar,
) -> ClusterResult:
    from batchsr.cluster.driver import run_cluster

    # The driver blocks on Ray; it runs in a thread while the event loop watches the
    # signals, and reads the stop within a quarter second.
    def drive(stop: StopRequest) -> ClusterResult:
        return run_cluster(
            plan.todo,
            config=config,
            model=model,
            out_dir=out_dir,
            options=options,
            forward=sink.write_lines,
            carried=plan.done,
            state=state,
            on_progress=bar,
            stop=stop,
            log_level=args.log_level,
        )

    return anyio.run(_until_signalled, lambda stop: anyio.to_thread.run_sync(drive, stop))


def _cluster_line(result: ClusterResult) -> str:
    per_node = {p.name: 0 for p in result.plans}
    for node in result.nodes.values():
        per_node[node] = per_node.get(node, 0) + 1
    pipelines = sum(p.pipelines for p in result.plans)
    shares = ", ".join(f"{name} {count}" for name, count in per_node.items())
    line = (
        f"cluster: {len(result.plans)} node(s), {pipelines} pipeline(s); images per node: {shares}"
    )
    if result.requeued:
        line += f"; {result.requeued} chunk(s) run again after a pipeline was lost"
    return line


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


_SPARK_UTF8 = "▁▂▃▄▅▆▇█"
_SPARK_ASCII = "_.-:=+*#"


def _sparkline(values: Sequence[float], ramp: str) -> str:
    top = max(values, default=0.0)
    if top <= 0:
        return ramp[0] * len(values)
    return "".join(ramp[min(len(ramp) - 1, int(v / top * (len(ramp) - 1) + 0.5))] for v in values)


def _ramp() -> str:
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    return _SPARK_UTF8 if encoding.startswith("utf") else _SPARK_ASCII


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0%}"


def _secs(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def format_analysis(a: RunAnalysis, *, ramp: str = _SPARK_ASCII) -> str:
    """The human report of one analysed run."""
    head = f"== {a.label}"
    if a.interrupted is not None:
        head += f"  (interrupted by {a.interrupted})"
    elif not a.complete:
        head += "  (no end record: the run was killed or is still going)"
    lines = [head]
    if a.bad_lines:
        lines.append(f"skipped {a.bad_lines} unreadable line(s) (a truncated last line?)")
    model = a.model or {}
    geo = a.geometry or {}
    if model or geo:
        lines.append(
            f"model {model.get('name', '?')} ({model.get('format', '?')}), tile "
            f"{geo.get('tile_h', '?')}x{geo.get('tile_w', '?')} pad {geo.get('pad', '?')} "
            f"batch {geo.get('batch', '?')}"
        )
    wall = "n/a" if a.wall_s is None else f"{a.wall_s:.2f} s"
    rate = "n/a" if a.images_per_s is None else f"{a.images_per_s:.2f}"
    lines.append(
        f"{a.images} images ({a.ok} ok, {a.failed} failed); wall {wall}, stage span "
        f"{a.span_s:.2f} s, {rate} images/s; runtime_avg {_secs(a.runtime_avg_s)} s"
    )
    header = (
        f"{'stage':<7} {'wkrs':>4} {'items':>5} {'busy s':>7} {'util':>5} {'starved':>7} "
        f"{'blocked':>7} {'svc mean':>8} {'p50':>7} {'p95':>7} {'queue in':>12}  "
        f"throughput ({a.bin_s:.2f} s bins)"
    )
    lines += ["", header]
    for s in a.stages:
        q = s.queue
        queue = (
            f"{q.edge} {q.max if q.max is not None else '-'}/{q.capacity or '?'}" if q.edge else "-"
        )
        peak = max(s.throughput, default=0.0)
        lines.append(
            f"{s.stage:<7} {s.workers:>4} {s.items:>5} {s.busy_s:>7.2f} "
            f"{_pct(s.utilisation):>5} {_pct(s.starved):>7} {_pct(s.blocked):>7} "
            f"{_secs(s.service_s.mean):>8} {_secs(s.service_s.p50):>7} "
            f"{_secs(s.service_s.p95):>7} {queue:>12}  "
            f"{_sparkline(s.throughput, ramp)} peak {peak:.1f}/s"
        )
    lines.append(
        "util/starved/blocked: shares of workers x span busy, waiting for input, blocked "
        "sending; queue in: most items seen buffered / buffer size"
    )
    if a.concurrency is not None:
        lines.append(f"busy workers on average (all stages): {a.concurrency:.2f}")
    if a.cores is not None and a.cpu_busy is not None:
        lines.append(
            f"CPU: {a.cpu_busy:.2f} of {a.cores} cores busy on average "
            f"({a.cpu_busy / a.cores:.0%}; process CPU time / wall, all threads)"
        )
    for d in a.devices:
        lines.append(
            f"device {d.device}: {d.workers} worker(s), {d.batches} batches, "
            f"util {_pct(d.utilisation)}, {d.padded} padded of {d.tiles + d.padded} slots"
        )
    if a.padded_share is not None:
        lines.append(f"padded tile slots: {a.padded_share:.1%}")
    for n in a.nodes:
        per = "n/a" if n.per_pipeline is None else f"{n.per_pipeline:.2f}"
        lines.append(
            f"node {n.node}: {n.pipelines} pipeline(s), {n.images} images in "
            f"{n.span_s:.2f} s ({per} images/s per pipeline), infer busy "
            f"{_pct(n.infer_utilisation)}"
        )
    if a.slowest_node is not None:
        lines.append(f"slowest node: {a.slowest_node} (fewest images/s per pipeline)")
    lines += ["", f"bottleneck: {a.bottleneck or 'n/a'}", f"suggestion: {a.suggestion}"]
    lines += [f"buffers: {note}" for note in a.advice]
    return "\n".join(lines)


def format_comparison(runs: Sequence[RunAnalysis]) -> str:
    """One line per run, stage utilisations side by side."""
    stages = [s for s in STAGES if any(r.stage(s) for r in runs)]
    width = max(len(r.label) for r in runs)
    lines = [
        f"{'run':<{width}} {'images/s':>8} {'span s':>7} {'bottleneck':>10}  "
        + " ".join(f"{s:>6}" for s in stages)
    ]
    for r in runs:
        utils = []
        for name in stages:
            fig = r.stage(name)
            utils.append(f"{_pct(fig.utilisation if fig else None):>6}")
        rate = "n/a" if r.images_per_s is None else f"{r.images_per_s:.2f}"
        lines.append(
            f"{r.label:<{width}} {rate:>8} {r.span_s:>7.2f} {r.bottleneck or 'n/a':>10}  "
            + " ".join(utils)
        )
    return "\n".join(["== comparison (stage utilisation)", *lines])


def cmd_analyze(argv: Sequence[str]) -> int:
    p = _Parser(
        prog="run.py analyze",
        description="Per-stage figures, the bottleneck stage and a suggestion, from run logs.",
    )
    p.add_argument("logs", nargs="+", type=Path, help="run.jsonl files (several: compared)")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="write a timeline picture")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    runs = [run for path in args.logs for run in read_runs(path)]
    if len({r.label for r in runs}) < len(runs):
        # Same file names from different folders: use the paths given instead.
        runs = [
            dataclasses.replace(run, label=f"{path}{run.label[len(path.name) :]}")
            for path in args.logs
            for run in read_runs(path)
        ]
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
    ramp = _ramp()
    blocks = [format_analysis(a, ramp=ramp) for a in analyses]
    if len(analyses) > 1:
        blocks.append(format_comparison(analyses))
    if args.plot is not None:
        blocks.append(f"timeline written to {args.plot}")
    print("\n\n".join(blocks))
    return 0


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated integers") from err
    if not values:
        raise ConfigError(f"{flag} {text!r}: give at least one value")
    return values


def _workers_line(config: Config) -> str:
    w = config.workers
    return f"decode={w.decode} infer={w.infer} save={w.save} score={w.score}"


def _queues_line(config: Config) -> str:
    return " ".join(f"{e}={getattr(config.queues, e)}" for e in EDGES)


def format_trial(t: Trial) -> str:
    rate = "n/a" if t.images_per_s is None else f"{t.images_per_s:.2f}"
    spread = "" if t.spread is None else f" {t.spread:>6.0%}"
    return (
        f"{t.index:>5} {t.queue_size:>6}  {_workers_line(t.config):<36} {rate:>8} "
        f"{t.wall_s:>7.2f} {t.bottleneck or 'n/a':>10}{spread}"
    )


def cmd_tune(argv: Sequence[str]) -> int:
    p = _Parser(
        prog="run.py tune",
        description="Trial runs on a sample of the input over buffer sizes and worker "
        "counts; prints the best config and writes it as TOML for --config.",
    )
    p.add_argument("--input", "-i", type=Path, required=True, help="folder of input images")
    p.add_argument("--model", "-m", help="as for a run (default: the config's model)")
    p.add_argument("--backend", choices=BACKENDS, help=BACKEND_HELP)
    p.add_argument(
        "--device",
        choices=DEVICES,
        help="onnx/torch: where the model runs (cuda without a CUDA runtime is an error)",
    )
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
    args = p.parse_args(argv)
    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "model.name": args.model,
            "model.backend": args.backend,
            "model.device": args.device,
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
    model = resolve_model(base.model.name, backend=base.model.backend)
    queue_sizes = _ints(args.queue_sizes, "--queue-sizes")
    print(
        f"{'trial':>5} {'queues':>6}  {'workers':<36} {'images/s':>8} {'wall s':>7} "
        f"{'bottleneck':>10}{' spread' if args.repeat > 1 else ''}"
    )
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
    best, baseline = result.best, result.baseline
    gain = (
        f" ({best.images_per_s / baseline.images_per_s - 1:+.0%} over the base config)"
        if best.images_per_s and baseline.images_per_s
        else ""
    )
    summary = [
        f"{len(result.trials)} trials on {len(result.sample)} images "
        f"({', '.join(result.sample)}); varied workers of {', '.join(result.stages) or 'none'}, "
        f"buffer sizes {', '.join(map(str, result.queue_sizes))}",
        f"base:  trial {baseline.index}: {_workers_line(baseline.config)}; "
        f"queues {_queues_line(baseline.config)}",
        f"best:  trial {best.index}: {_workers_line(best.config)}; "
        f"queues {_queues_line(best.config)}{gain}",
    ]
    path = args.write or args.output / "tuned.toml"
    if result.noise is not None:
        summary.append(
            f"run-to-run spread of one config: median {result.noise:.0%} of its images/s; "
            "smaller differences between trials are noise"
        )
    if args.no_score:
        summary.append("trials ran without NIQE (--no-score); the file keeps the base's [output]")
    write_toml(
        dataclasses.replace(best.config, output=written.output),
        path,
        comments=[
            "written by `python run.py tune`: the recommended config; use it with",
            f"  python run.py --config {path} --input DIR",
            *summary,
            "ranked by images/s over the stage span; within 5% of the fastest the config",
            "with the fewest workers and smallest buffers wins",
            "",
            f"{'trial':>5} {'queues':>6}  {'workers':<36} {'images/s':>8} {'wall s':>7} "
            f"{'bottleneck':>10}{' spread' if args.repeat > 1 else ''}",
            *(format_trial(t) for t in result.trials),
        ],
    )
    print("\n".join(["", *summary, f"wrote {path}; use: python run.py --config {path} ..."]))
    _exit_if_engine_calls_hang(0, result.abandoned_calls)
    return 0


def _exit_if_engine_calls_hang(code: int, abandoned: int) -> None:
    """A device call abandoned after --engine-timeout may never return, and Python waits
    for every thread at exit: the run is complete and written, so leave without them."""
    if abandoned:
        print(
            f"warning: {abandoned} engine call(s) timed out and are still running; "
            "exiting without waiting for them",
            file=sys.stderr,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def cmd_score(argv: Sequence[str]) -> int:
    """``run.py score DIR``: NIQE of already-upscaled images, as the contest scored them."""
    p = _Parser(
        prog="run.py score",
        description="Score a folder of SR images with the contest's NIQE (BasicSR 1.4.2).",
    )
    p.add_argument("folder", type=Path, help="folder of upscaled images")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    p.add_argument("--output", "-o", type=Path, help="report JSON (default DIR/niqe.json)")
    args = p.parse_args(argv)
    jobs = list_inputs(args.folder)
    rows = score_folder([j.path for j in jobs], workers=args.workers)
    scored = [r.niqe for r in rows if r.niqe is not None]
    avg = sum(scored) / len(scored) if scored else None
    width = max(len(j.name) for j in jobs)
    for job, row in zip(jobs, rows, strict=True):
        value = f"{row.niqe:.4f}" if row.niqe is not None else f"error: {row.error}"
        print(f"{job.name:<{width}}  {value}")
    left_out = len(rows) - len(scored)
    print(
        f"niqe_avg {'n/a' if avg is None else f'{avg:.4f}'} over {len(scored)} images"
        + (f" ({left_out} left out: see the errors above)" if left_out else "")
    )
    report = {
        "niqe_avg": None if avg is None else f"{avg:.4f}",
        "images": [
            {"img_name": job.name, "niqe": None if r.niqe is None else f"{r.niqe:.4f}"}
            | ({"error": r.error} if r.error else {})
            for job, r in zip(jobs, rows, strict=True)
        ],
    }
    out = args.output or args.folder / "niqe.json"
    write_report(out, report)
    print(f"report {out}")
    return 0


EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


def render_selfcheck(r: SelfCheckResult) -> str:
    """The self-check report: one line per case and stage shape, then the verdict."""
    q = r.quantize or "quantization unknown"
    lines = [
        f"bmodel    {r.bmodel} on {r.where}, scale x{r.scale}, {q}",
        f"shapes    {[list(s) for s in r.input_shapes]}",
        f"reference {r.reference or 'none (accuracy not checked)'}",
    ]
    for c in r.cases:
        shape = "x".join(map(str, c.shape))
        verdict = (
            ("pass" if c.passed else "FAIL")
            if c.kind == "real"
            else ("finite" if c.finite else "FAIL")
        )
        bound = f" (>= {r.min_psnr_db:g})" if c.kind == "real" else " (noise: not judged)"
        if c.psnr_db is None:
            lines.append(f"  {c.kind:6} {shape} ({c.tiles} tiles): finite={c.finite}: {verdict}")
        else:
            lines.append(
                f"  {c.kind:6} {shape} ({c.tiles} tiles): max abs diff {c.max_abs_diff:.6f}, "
                f"PSNR {c.psnr_db:.2f} dB{bound}, finite={c.finite}: {verdict}"
            )
    lines.append(
        f"latency   min {r.latency_min_s * 1e3:.2f} ms, median {r.latency_median_s * 1e3:.2f} ms "
        f"per call over {r.calls} calls"
    )
    lines.append(f"{'PASS' if r.passed else 'FAIL'}: {r.reason}")
    return "\n".join(lines)


def cmd_selfcheck(argv: Sequence[str]) -> int:
    """Compare a bmodel (TPU or emulator) with its ONNX reference; exit 0 on pass, 1 on fail."""
    from batchsr.engines import open_engine
    from batchsr.engines.onnx import OnnxEngine
    from batchsr.selfcheck import MIN_PSNR_DB, run_selfcheck

    thresholds = ", ".join(f"{q} {v:g}" for q, v in MIN_PSNR_DB.items())
    p = _Parser(
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
    args = p.parse_args(argv)
    if args.samples < 1:
        p.error("--samples must be at least 1")
    backend = "cmodel" if args.emulate else "sail"
    model = resolve_model(args.model, backend=backend)
    reference_path = args.reference
    if reference_path is None and model.manifest is not None:
        onnx = model.manifest.artifact("onnx")
        reference_path = model.path.parent / onnx.path if onnx else None
    folder = args.input if args.input is not None else (None if args.image else EXAMPLES_DIR)
    images = [*args.image, *(j.path for j in list_inputs(folder))] if folder else args.image
    bmodel = model.artifact
    overrides = {"model.devices": str(args.device), "model.backend": backend}
    config = load_config(None, overrides).model
    engine = open_engine(model, config, device_id=args.device)
    reference = OnnxEngine(reference_path) if reference_path else None
    where = "BM1684X emulator" if args.emulate else f"TPU {args.device}"
    try:
        r = run_selfcheck(
            engine,
            bmodel=model.path,
            where=where,
            images=images,
            reference=reference,
            reference_path=reference_path,
            quantize=bmodel.quantize if bmodel else None,
            samples=args.samples,
            margin=model.margin or 0,
            repeats=args.repeats if args.repeats is not None else (0 if args.emulate else 5),
            min_psnr_db=args.min_psnr,
        )
    finally:
        engine.close()
    print(render_selfcheck(r))
    return 0 if r.passed else 1


# Subcommands: name -> handler taking the remaining arguments and returning an exit code.
# The main job (no subcommand) is cmd_run.
SUBCOMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "analyze": cmd_analyze,
    "tune": cmd_tune,
    "selfcheck": cmd_selfcheck,
    "score": cmd_score,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_malloc()
    t0 = time.perf_counter()
    handler: Callable[[Sequence[str]], int] = cmd_run
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
