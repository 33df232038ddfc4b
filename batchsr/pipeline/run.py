"""Wiring: the only place that creates the streams and opens the task group.

``paths -> decode (xN) -> tile -> infer (xK) -> stitch -> save (xN) -> score (xN) ->
report``. Every arrow is a memory object stream whose buffer size comes from
``[queues]``; a stage with several workers gives each a clone of its streams, and a
stream closes downstream once all clones are closed, so the end of input flows through
the pipeline by itself. Images in flight are bounded by the buffers, never by the
number of inputs.
"""

from __future__ import annotations

import os
import platform
import signal
import time
import tracemalloc
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import structlog
from anyio.streams.memory import MemoryObjectSendStream

import batchsr
from batchsr.config import Config, TilingConfig
from batchsr.engines import Engine, open_engine
from batchsr.errors import ConfigError, EngineError
from batchsr.pipeline.budget import MIB, Budget, resident_bytes
from batchsr.pipeline.decode import run_decode
from batchsr.pipeline.infer import InferPool, call_engine, run_infer
from batchsr.pipeline.report import (
    Progress,
    Row,
    RunSummary,
    build_report,
    lossy_output,
    run_report,
    summarize,
    write_report,
)
from batchsr.pipeline.save import run_save
from batchsr.pipeline.score import Scorer, run_score
from batchsr.pipeline.stitch import run_stitch
from batchsr.pipeline.tile import run_tile
from batchsr.records import Job, Scored
from batchsr.resolve import ResolvedModel
from batchsr.resume import RunState
from batchsr.tiling import TileGeometry
from batchsr.vocab import CORE_MODES

__all__ = [
    "DEFAULT_TILE_PAD",
    "RunResult",
    "default_scorer",
    "geometry_for",
    "infer_placements",
    "run_pipeline",
]

# Context margin used when neither the config nor the model's manifest gives one
# (a bare .onnx file): wide enough for the small x4 models the contest used.
DEFAULT_TILE_PAD = 8


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a finished run produced."""

    summary: RunSummary
    rows: tuple[Row, ...]
    report_path: Path
    out_dir: Path
    geometry: TileGeometry
    interrupted: int | None = None
    engines_lost: bool = False


def default_scorer() -> Scorer:
    """The contest's NIQE (imported on first use: scoring is optional)."""
    from batchsr.metrics import niqe

    return niqe


# The emulator engine bounds its own calls and kills a hung worker (which a thread
# timeout could only abandon); the pipeline's limit then only backs it up, a little
# later, and keeps its calls abandonable when a signal stops the run.
# Longer than the engine's own start allowance (120 s), so a slow start is not abandoned.
_CMODEL_BACKSTOP_S = 180.0


def _pipeline_timeout(config: Config) -> float | None:
    limit = config.model.call_timeout_s
    if config.model.backend == "cmodel" and limit is not None:
        return limit + _CMODEL_BACKSTOP_S
    return limit


def geometry_for(engine: Engine, tiling: TilingConfig, model: ResolvedModel) -> TileGeometry:
    """Tile geometry from the engine's shape; static model dimensions win over config.

    Raises:
        ConfigError: the settings cannot work with this engine.
        EngineError: the engine does not take RGB input.
    """
    n, c, h, w = engine.input_shapes[0]
    y_only = tiling.y_only or c == 1
    if c != (1 if y_only else 3):
        raise EngineError(
            f"{model.path} takes {c} input channels; the pipeline feeds RGB (3), or Y (1) "
            "with --y-only"
        )
    if tiling.tile == 0 and (h is not None or w is not None):
        raise ConfigError(
            f"--tile 0 (whole images) needs a model with dynamic height and width; "
            f"{model.path} is fixed at {h}x{w}"
        )
    tile_h = h if h is not None else tiling.tile
    tile_w = w if w is not None else tiling.tile
    margin = model.margin or DEFAULT_TILE_PAD
    context = tiling.tile_pad if tiling.tile_pad is not None else margin
    overlapping = tiling.mode not in CORE_MODES and bool(tile_h)
    pad, rim = context, 0
    if overlapping:
        # Averaging and blending give no weight to each window's rim of ``context``
        # pixels (computed without full context), so the windows overlap twice as far
        # beyond it to have something to average or blend; a small static tile without
        # room for that blends within the margin instead.
        pad, rim = (
            (2 * context, context) if min(tile_h, tile_w) > 4 * context else (context, context // 2)
        )
    if tile_h and min(tile_h, tile_w) <= 2 * pad:
        raise ConfigError(
            f"tile {tile_h}x{tile_w} leaves no core inside a margin of {pad} px; "
            "use a larger tile or a smaller --tile-pad"
        )
    batch = n if n is not None else (1 if tiling.tile == 0 else tiling.batch)
    # A combined bmodel may hold the same tile at smaller batch sizes: use them for the
    # last, partial batch.
    tails = sorted(
        {s[0] for s in engine.input_shapes if s[1:] == (c, h, w) and s[0] is not None} - {batch}
    )
    # Other static tile sizes at the same batch size (a combined bmodel, e.g. 128x128
    # and 192x256): each image is cut with whichever needs the fewest device calls.
    alt_tiles = tuple(
        sorted(
            {
                (sh, sw)
                for sn, sc, sh, sw in engine.input_shapes
                if sn == n
                and sc == c
                and sh is not None
                and sw is not None
                and (sh, sw) != (h, w)
                and min(sh, sw) > 2 * pad
            }
        )
    )
    return TileGeometry(
        tile_h=tile_h,
        tile_w=tile_w,
        alt_tiles=alt_tiles,
        pad=pad,
        rim=rim,
        batch=batch,
        static_batch=n is not None,
        dynamic_hw=h is None and w is None,
        scale=engine.scale,
        mode=tiling.mode,
        border=tiling.border,
        y_only=y_only,
        tail_batches=tuple(t for t in tails if t < batch) if n is not None else (),
    )


async def _feed(
    send: MemoryObjectSendStream[Job], jobs: Sequence[Job] | AsyncIterable[Job]
) -> None:
    async with send:
        if isinstance(jobs, AsyncIterable):
            async for job in jobs:
                await send.send(job)
        else:
            for job in jobs:
                await send.send(job)


async def run_pipeline(
    jobs: Sequence[Job] | AsyncIterable[Job],
    *,
    config: Config,
    model: ResolvedModel,
    out_dir: Path,
    scorer: Scorer | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    handle_signals: bool = False,
    carried: Sequence[Scored] = (),
    state: RunState | None = None,
    engine_factory: Callable[[], Engine] | None = None,
    report: bool = True,
    on_row: Callable[[Row], None] | None = None,
    engine: Engine | None = None,
) -> RunResult:
    """Upscale, save, score and report every job.

    Args:
        jobs: the inputs, in report order; or a stream of them that ends when the
            iterable does (a cluster worker feeds its chunks in as they arrive).
        model: the resolved artifact to run.
        out_dir: where outputs and ``report.json`` go (created).
        scorer: NIQE function; None uses :func:`default_scorer` when
            ``config.output.score`` is on.
        on_progress: called after each finished image, from the event loop.
        handle_signals: stop cleanly on SIGINT/SIGTERM (for the CLI): in-flight work is
            cancelled, the report keeps every finished image, the log ends with a
            ``run_interrupted`` record and ``RunResult.interrupted`` names the signal.
            A second signal exits the process at once.
        carried: rows of images finished by an earlier run (``--resume``); they go into
            the report as they are.
        state: where each finished image is recorded for a later ``--resume``.
        engine_factory: opens one engine per infer worker; None opens ``model`` with
            :func:`batchsr.engines.open_engine` (tests and tools pass their own).
        report: write ``report.json`` (a cluster worker leaves that to the driver,
            which owns the report of the whole run).
        on_row: called with each finished row as it is reported, from the event loop.
        engine: the first infer worker's engine, already open (a cluster worker opens
            it before it takes work, to refuse early); closed by the run.

    Raises:
        EngineError: the first engine cannot be opened (nothing has been written).
    """
    log = structlog.get_logger()
    # A stream of jobs (a cluster worker's) has no count, nor a table for the state.
    images = len(jobs) if isinstance(jobs, Sequence) else None
    placements = infer_placements(config, model)
    if engine is None:
        engine = await anyio.to_thread.run_sync(
            engine_factory or _opener(model, config, placements[0])
        )
    try:
        geometry = geometry_for(engine, config.tiling, model)
        # The first call of a fresh engine pays one-off costs (onnxruntime's arena and
        # kernel selection) that would otherwise land in the first image's runtime and
        # swing the headline score between reruns. Made before the clock starts and
        # logged on its own. Not for the emulator by default: one call is minutes.
        warmup_s = None
        if config.model.warmup and config.model.backend != "cmodel":
            try:
                warmup_s = await call_engine(
                    warm_up, engine, warmup_shape(geometry), timeout_s=config.model.call_timeout_s
                )
            except Exception as err:
                raise EngineError(f"the engine failed its warm-up call: {err}") from err
        budget = _budget(config)
    except Exception:
        engine.close()
        raise
    t0 = time.perf_counter()
    if scorer is None and config.output.score:
        scorer = default_scorer()
    await anyio.Path(out_dir).mkdir(parents=True, exist_ok=True)
    log.info(
        "run_started",
        config=config.to_dict(),
        versions=_versions(),
        model=model.log_record(),
        engine={
            "input_shapes": [list(s) for s in engine.input_shapes],
            "scale": engine.scale,
            "warmup_s": warmup_s,
        },
        geometry={
            "tile_h": geometry.tile_h,
            "tile_w": geometry.tile_w,
            "pad": geometry.pad,
            "batch": geometry.batch,
            "static_batch": geometry.static_batch,
            "mode": geometry.mode,
            "y_only": geometry.y_only,
            "tail_batches": list(geometry.tail_batches),
        },
        images=images,
        out_dir=str(out_dir),
        infer_devices=list(placements),
        memory=None
        if budget is None
        else {
            "max_mib": config.memory.max_mib,
            "images_mib": round(budget.capacity / MIB, 1),
            "bytes_per_pixel": config.memory.bytes_per_pixel,
        },
    )
    cpu_clock = _CpuClock()
    rows: list[Row] = list(carried)
    report_path = out_dir / "report.json"
    by_id = {job.id: job for job in jobs} if isinstance(jobs, Sequence) else {}

    def record_row(row: Row) -> None:
        if state is not None and isinstance(row, Scored):
            state.record(row, by_id[row.id])
        if on_row is not None:
            on_row(row)

    def checkpoint() -> RunSummary:
        summary = summarize(rows, wall_s=time.perf_counter() - t0, resumed=len(carried))
        if not report:
            return summary
        lossy = lossy_output(config.output.ext, config.output.quality)
        write_report(
            report_path,
            build_report(rows, summary, model_size=model.size_bytes, lossy_output=lossy),
        )
        return summary

    pool = InferPool(alive=1)  # replaced by the stages' pool once they run
    stop = _SignalStop()
    previous = stop.install() if handle_signals else None
    try:
        async with anyio.create_task_group() as outer:
            if handle_signals:
                outer.start_soon(stop.watch, outer.cancel_scope)
            pool = await _run_stages(
                jobs,
                config,
                model,
                out_dir,
                engine,
                geometry,
                scorer,
                rows,
                t0,
                on_progress,
                checkpoint,
                record_row,
                placements,
                engine_factory,
                budget,
            )
            outer.cancel_scope.cancel()  # stops the signal watcher
        summary = checkpoint()
    finally:
        if previous is not None:
            stop.restore(previous)
    if pool.alive == 0:
        log.error(
            "engines_lost",
            message="every infer worker failed; the images after that are error rows",
            failed=summary.failed,
        )
    if stop.signum is not None:
        log.warning(
            "run_interrupted",
            signal=signal.Signals(stop.signum).name,
            finished=len(rows),
            images=images,
            summary=summary.as_dict(),
            report=str(report_path),
            cpu=cpu_clock.read(),
        )
    else:
        log.info(
            "run_finished",
            summary=summary.as_dict(),
            report=str(report_path),
            cpu=cpu_clock.read(),
            memory=None if budget is None else budget.stats()._asdict(),
            heap=_heap(),
        )
    return RunResult(
        summary=summary,
        rows=tuple(sorted(rows, key=lambda r: r.id)),
        report_path=report_path,
        out_dir=out_dir,
        geometry=geometry,
        interrupted=stop.signum,
        engines_lost=pool.alive == 0,
    )


async def _run_stages(
    jobs: Sequence[Job] | AsyncIterable[Job],
    config: Config,
    model: ResolvedModel,
    out_dir: Path,
    engine: Engine,
    geometry: TileGeometry,
    scorer: Scorer | None,
    rows: list[Row],
    t0: float,
    on_progress: Callable[[Progress], None] | None,
    checkpoint: Callable[[], object],
    on_row: Callable[[Row], None],
    placements: tuple[int | None, ...],
    engine_factory: Callable[[], Engine] | None,
    budget: Budget | None,
) -> InferPool:
    q, workers = config.queues, config.workers
    window = Budget(config.tiling.in_flight) if config.tiling.in_flight else None
    paths_tx, paths_rx = anyio.create_memory_object_stream[Any](q.paths)
    dec_tx, dec_rx = anyio.create_memory_object_stream[Any](q.decoded)
    tiles_tx, tiles_rx = anyio.create_memory_object_stream[Any](q.tiles)
    inf_tx, inf_rx = anyio.create_memory_object_stream[Any](q.inferred)
    st_tx, st_rx = anyio.create_memory_object_stream[Any](q.stitched)
    sv_tx, sv_rx = anyio.create_memory_object_stream[Any](q.saved)
    sc_tx, sc_rx = anyio.create_memory_object_stream[Any](q.scored)
    score_limiter = anyio.CapacityLimiter(workers.score)

    async with anyio.create_task_group() as tg:
        tg.start_soon(_feed, paths_tx, jobs)
        for i in range(workers.decode):
            tg.start_soon(
                _named(
                    run_decode,
                    paths_rx.clone(),
                    dec_tx.clone(),
                    max_pixels=config.output.max_pixels,
                    worker=i,
                )
            )
        tg.start_soon(
            _named(
                run_tile,
                dec_rx,
                tiles_tx,
                geometry=geometry,
                budget=budget,
                bytes_per_pixel=config.memory.bytes_per_pixel,
                window=window,
            )
        )
        pool = InferPool(alive=len(placements))
        for i, device in enumerate(placements):
            opener = engine_factory or _opener(model, config, device)
            tg.start_soon(
                _named(
                    run_infer,
                    tiles_rx.clone(),
                    inf_tx.clone(),
                    engine=engine if i == 0 else opener,
                    worker=i,
                    device=device,
                    reopen=opener,
                    timeout_s=_pipeline_timeout(config),
                    pool=pool,
                )
            )
        tg.start_soon(_named(run_stitch, inf_rx, st_tx, window=window))
        for i in range(workers.save):
            tg.start_soon(
                _named(
                    run_save,
                    st_rx.clone(),
                    sv_tx.clone(),
                    out_dir=out_dir,
                    compress_level=config.output.compress_level,
                    filter_name=config.output.filter,
                    suffix=config.output.suffix,
                    ext=config.output.ext,
                    quality=config.output.quality,
                    keep_grey=not config.output.rgb,
                    worker=i,
                )
            )
        for i in range(workers.score):
            tg.start_soon(
                _named(
                    run_score,
                    sv_rx.clone(),
                    sc_tx.clone(),
                    scorer=scorer,
                    limiter=score_limiter,
                    worker=i,
                )
            )
        tg.start_soon(
            _named(
                run_report,
                sc_rx,
                rows,
                total=len(rows) + (len(jobs) if isinstance(jobs, Sequence) else 0),
                t0=t0,
                on_progress=on_progress,
                checkpoint=checkpoint,
                on_row=on_row,
                budget=budget,
            )
        )
        # The workers hold clones; closing the originals lets each stream end when
        # its last worker finishes.
        for stream in (paths_rx, dec_tx, tiles_rx, inf_tx, st_rx, sv_tx, sv_rx, sc_tx):
            stream.close()
    return pool


class _SignalStop:
    """SIGINT/SIGTERM -> cancel the run once; a second signal exits immediately."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None

    def install(self) -> dict[int, Any]:
        return {s: signal.getsignal(s) for s in self.SIGNALS}

    async def watch(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(*self.SIGNALS) as signals:
            async for signum in signals:
                self.signum = int(signum)
                break
        # From here on the user wants out now: no second graceful stop.
        for s in self.SIGNALS:
            signal.signal(s, _exit_now)
        scope.cancel()

    @staticmethod
    def restore(previous: dict[int, Any]) -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _exit_now(signum: int, _frame: object) -> None:
    os._exit(128 + signum)


def infer_placements(config: Config, model: ResolvedModel) -> tuple[int | None, ...]:
    """The device of each infer worker: for a bmodel, ``engines_per_device`` workers on
    every TPU of ``devices`` (interleaved, so the first batches reach every TPU);
    otherwise ``workers.infer`` workers with no device."""
    if model.format == "bmodel":
        per = config.model.engines_per_device
        return tuple(d for _ in range(per) for d in config.model.device_ids)
    return (None,) * config.workers.infer


def _heap() -> dict[str, float] | None:
    """Python's heap (numpy's arrays included) when tracemalloc traces it
    (``PYTHONTRACEMALLOC=1``): its current size and peak over the run, in MiB."""
    if not tracemalloc.is_tracing():
        return None
    current, peak = tracemalloc.get_traced_memory()
    return {"current_mib": round(current / MIB, 1), "peak_mib": round(peak / MIB, 1)}


def _budget(config: Config) -> Budget | None:
    """The images' share of ``memory.max_mib``: what is left of it after what the
    process holds now (interpreter, libraries, the opened and warmed engine).

    Raises:
        ConfigError: the process already holds more than the limit.
    """
    if not config.memory.max_mib:
        return None
    base = resident_bytes()
    limit = config.memory.max_mib * MIB
    if base >= limit:
        raise ConfigError(
            f"memory.max_mib = {config.memory.max_mib}: the process holds "
            f"{base / MIB:.0f} MiB before the first image (interpreter, libraries, engine); "
            "give more than that"
        )
    return Budget(limit - base)


def _opener(model: ResolvedModel, config: Config, device: int | None) -> Callable[[], Engine]:
    return lambda: open_engine(model, config.model, device_id=device)


def warmup_shape(geometry: TileGeometry) -> tuple[int, int, int, int]:
    """The batch shape the run's engine calls use (a small one for whole images)."""
    h = geometry.tile_h or 2 * geometry.pad + 16
    w = geometry.tile_w or 2 * geometry.pad + 16
    return (geometry.batch, geometry.channels, h, w)


def warm_up(engine: Engine, shape: tuple[int, int, int, int]) -> float:
    """One call on zeros of ``shape``; returns its wall time in seconds."""
    t = time.perf_counter()
    engine.run(np.zeros(shape, dtype=np.float32))
    return time.perf_counter() - t


def _named(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[], Any]:
    """Bind arguments for ``start_soon`` (which takes positional arguments only)."""

    async def call() -> None:
        await func(*args, **kwargs)

    call.__name__ = call.__qualname__ = func.__name__
    return call


class _CpuClock:
    """The process's CPU time (every thread: stages, engine threads, zlib) against wall
    time, so an analysis can tell a full CPU from idle cores."""

    def __init__(self) -> None:
        self._cpu, self._wall = time.process_time(), time.perf_counter()

    def read(self) -> dict[str, float | int]:
        """``cores`` usable by this process, ``cpu_s`` and ``wall_s`` since creation."""
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        return {
            "cores": cores,
            "cpu_s": round(time.process_time() - self._cpu, 4),
            "wall_s": round(time.perf_counter() - self._wall, 4),
        }


def _versions() -> dict[str, str]:
    versions = {
        "batchsr": batchsr.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "anyio": anyio.__version__ if hasattr(anyio, "__version__") else "",
    }
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return versions
